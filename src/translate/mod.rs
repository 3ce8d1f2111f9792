//! Anthropic Messages API → OpenAI Chat Completions translation.
//!
//! - [`tokens`]: a local input-token estimate for `POST /v1/messages/count_tokens`, which
//!   OpenAI-compatible backends do not offer.

pub mod tokens;

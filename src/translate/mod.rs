//! Anthropic Messages API → OpenAI Chat Completions translation (docs being written).

pub mod models;

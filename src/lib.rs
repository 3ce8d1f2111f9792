//! Composable [tower] layers that let any Anthropic Messages API client talk to any OpenAI
//! Chat Completions compatible backend, with a response cache in front.
//!
//! - [`translate`]: `AnthropicToOpenAiLayer` turns `POST /v1/messages` (JSON and SSE streaming,
//!   tools, images, thinking, stop sequences, usage, errors) into `POST /v1/chat/completions`
//!   and the answer back.
//! - [`cache`]: `ResponseCacheLayer` answers repeated requests from a cache keyed by SHA-256 of
//!   a canonical form of the request, scoped per backend and caller.
//! - [`sse`]: the sans-IO Server-Sent Events decoder and encoder both layers build on.
//!
//! [tower]: https://docs.rs/tower
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod error;
mod ids;
pub mod parsed;

#[cfg(feature = "cache")]
pub mod cache;
#[cfg(feature = "translate")]
pub mod sse;
#[cfg(feature = "translate")]
pub mod translate;

/// The boxed error type bodies and services in this crate convert into.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

//! Composable [tower] layers that let any Anthropic Messages API client (the official SDKs,
//! Claude Code, Cursor, Cline) talk to any OpenAI Chat Completions compatible backend (OpenAI,
//! vLLM, llama.cpp, Ollama, DeepSeek, OpenRouter…), with a response cache in front.
//!
//! | module | what it gives you |
//! |---|---|
//! | [`translate`] | `AnthropicToOpenAiLayer`: `POST /v1/messages` (JSON and SSE streaming, tools, images, thinking, stop sequences, usage, errors) served from `POST /v1/chat/completions`; `AnthropicToResponsesLayer`: the same from OpenAI's `POST /v1/responses`, reasoning carried across turns |
//! | [`cache`] | `ResponseCacheLayer`: answers repeated requests, JSON or streamed, from a cache keyed by SHA-256 of a canonical form of the request, scoped per backend and caller; concurrent identical streams share one upstream call; `MemoryCache` (moka), `RedisCache`, `TieredCache` |
//! | [`metrics`] | `MetricsLayer`: requests, latency, time to first token, tokens, cache results and backend calls through the `metrics` facade |
//! | [`sse`] | the sans-IO Server-Sent Events decoder and encoder the stream translation is built on |
//! | [`origin`] | `OriginGuardLayer`: an `Origin` allow-list, a `Host` check against DNS rebinding, CORS preflights for allowed origins |
//! | [`parsed`] | the request body, parsed once and shared between layers |
//! | [`passthrough`] | `AnthropicPassthroughLayer`: an Anthropic-speaking backend behind the same stack, only the model swapped (JSON and SSE) |
//! | [`route`] | `Route`: model → ordered backends, fallback before the first byte, cool-down |
//! | [`report`] | what inner layers tell outer ones (token usage, backends tried) through extensions |
//! | [`error`] | Anthropic- and OpenAI-shaped error responses |
//!
//! Each layer is useful alone and generic over the inner service and its body types; none
//! owns an HTTP client. `examples/proxy/` assembles them into a complete proxy.
//!
//! # A full stack
//!
//! The cache goes outermost (its key is the client's own request, and a hit skips
//! translation), then the translation, then your OpenAI-speaking client:
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Either, Full};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_llm_bridge::cache::{MemoryCache, ResponseCacheLayer};
//! use tower_llm_bridge::translate::{AnthropicToOpenAiLayer, ModelMap};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Stands in for an HTTP client to an OpenAI-compatible backend.
//! let openai = tower::service_fn(|req: Request<Either<Full<Bytes>, Either<Full<Bytes>, Full<Bytes>>>>| async move {
//!     let body = req.into_body().collect().await.unwrap().to_bytes();
//!     let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
//!     assert_eq!(request["model"], "gpt-4o");
//!     let completion = r#"{"choices":[{"message":{"content":"Bonjour"},"finish_reason":"stop"}],
//!                         "usage":{"prompt_tokens":12,"completion_tokens":3}}"#;
//!     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(completion))))
//! });
//!
//! let stack = ServiceBuilder::new()
//!     .layer(ResponseCacheLayer::new(MemoryCache::new(10_000)).default_ttl_secs(300))
//!     .layer(AnthropicToOpenAiLayer::new().model_map(ModelMap::big_small("gpt-4o", "gpt-4o-mini")))
//!     .service(openai);
//!
//! let ask = || {
//!     Request::post("/v1/messages")
//!         .header("x-api-key", "caller-key")
//!         .body(Full::new(Bytes::from_static(
//!             br#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"Hello in French"}]}"#,
//!         )))
//!         .unwrap()
//! };
//! let first = stack.clone().oneshot(ask()).await.unwrap();
//! assert_eq!(first.headers()["x-cache"], "MISS");
//! let message = first.into_body().collect().await.unwrap().to_bytes();
//! let message: serde_json::Value = serde_json::from_slice(&message).unwrap();
//! assert_eq!(message["content"][0]["text"], "Bonjour");
//! assert_eq!(message["model"], "claude-sonnet-4-5");
//!
//! let second = stack.oneshot(ask()).await.unwrap();
//! assert_eq!(second.headers()["x-cache"], "HIT");
//! # }
//! ```
//!
//! [tower]: https://docs.rs/tower
#![cfg_attr(not(test), warn(clippy::unwrap_used))]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod error;
mod ids;
pub mod origin;
pub mod parsed;
pub mod report;
pub mod route;

#[cfg(feature = "cache")]
pub mod cache;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "translate")]
pub mod passthrough;
// The cache records and replays event streams with the same sans-IO decoder/encoder.
#[cfg(any(feature = "translate", feature = "cache"))]
pub mod sse;
#[cfg(feature = "translate")]
pub mod translate;

/// The boxed error type bodies and services in this crate convert into.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

//! Put an Anthropic-speaking upstream (Anthropic itself, or a gateway that speaks its wire)
//! behind the same stack as the translated backends: only the model changes.
//!
//! [`AnthropicPassthroughLayer`] wraps a service that speaks Anthropic's `POST /v1/messages`
//! (usually an HTTP client that sends `/v1/<rest>` to `{base_url}/<rest>` and adds the
//! backend's key as `x-api-key`). For `POST /v1/messages` the service it makes:
//!
//! 1. takes the [`ParsedBody`](crate::parsed::ParsedBody) from the extensions or reads and
//!    parses the body (`400` for a body that is not a JSON object with a `model`, and the
//!    upstream is not called);
//! 2. sends the request untranslated, except: `model` becomes the [`ModelMap`]'s choice,
//!    `cache_ttl_secs` (the cache's setting) is removed, the client's credentials
//!    (`x-api-key`, `authorization`) are removed, `anthropic-version` is kept or
//!    [`DEFAULT_ANTHROPIC_VERSION`] added, `anthropic-beta` is kept;
//! 3. sends the answer back unchanged except `model`, which is the client's again: in a JSON
//!    message, or in the `message_start` event of a stream ([`ModelRewriter`], which holds
//!    bytes only until that first event is complete and passes the rest frame by frame).
//!    Error answers go back as they came (they are Anthropic's shape already).
//!
//! A stream that fails halfway ends with an Anthropic `event: error`. Every other request
//! passes through untouched.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Either, Full};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_llm_bridge::passthrough::AnthropicPassthroughLayer;
//! use tower_llm_bridge::translate::ModelMap;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Stands in for an HTTP client to Anthropic.
//! let anthropic = tower::service_fn(|req: Request<Either<Full<Bytes>, Full<Bytes>>>| async move {
//!     assert_eq!(req.headers()["anthropic-version"], "2023-06-01");
//!     assert!(req.headers().get("x-api-key").is_none(), "the client's key never goes upstream");
//!     let body = req.into_body().collect().await.unwrap().to_bytes();
//!     let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
//!     assert_eq!(request["model"], "claude-haiku-4-5");
//!     let message = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5",
//!                      "content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn",
//!                      "stop_sequence":null,"usage":{"input_tokens":5,"output_tokens":1}}"#;
//!     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(message))))
//! });
//!
//! let service = ServiceBuilder::new()
//!     .layer(AnthropicPassthroughLayer::new().model_map(ModelMap::new().default_model("claude-haiku-4-5")))
//!     .service(anthropic);
//! let request = Request::post("/v1/messages")
//!     .header("x-api-key", "the-client-s-key")
//!     .body(Full::new(Bytes::from(
//!         r#"{"model":"cheap","max_tokens":64,"messages":[{"role":"user","content":"Hello"}]}"#,
//!     )))
//!     .unwrap();
//! let response = service.oneshot(request).await.unwrap();
//! let body = response.into_body().collect().await.unwrap().to_bytes();
//! let message: serde_json::Value = serde_json::from_slice(&body).unwrap();
//! assert_eq!(message["model"], "cheap");
//! assert_eq!(message["content"][0]["text"], "Hi");
//! # }
//! ```
//!
//! # Customised
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_bridge::passthrough::AnthropicPassthroughLayer;
//! use tower_llm_bridge::translate::ModelMap;
//!
//! let layer = AnthropicPassthroughLayer::new()
//!     .model_map(ModelMap::new().contains("haiku", "claude-3-5-haiku-latest"))
//!     .body_limit(8 << 20)
//!     .response_limit(16 << 20)
//!     .stream_idle_timeout(Duration::from_secs(120));
//! # let _ = layer;
//! ```
//!
//! [`ModelMap`]: crate::translate::ModelMap

mod body;
mod future;
mod layer;
mod rewrite;
mod service;

pub use body::PassthroughBody;
pub use future::ResponseFuture;
pub use layer::{
    AnthropicPassthroughLayer, DEFAULT_ANTHROPIC_VERSION, DEFAULT_BODY_LIMIT,
    DEFAULT_RESPONSE_LIMIT,
};
pub use rewrite::{MAX_HELD_BYTES, ModelRewriter};
pub use service::AnthropicPassthrough;

//! Serve the Anthropic Messages API from any OpenAI Chat Completions backend, or from
//! OpenAI's Responses API.
//!
//! One folder per upstream wire holds its sans-IO translation: [`chat`] (Chat Completions,
//! also reachable as [`request`], [`response`], [`stream`] and [`models`]) and [`responses`]
//! (the Responses API, with its mapping table). What both share sits here: the validation of
//! the Anthropic request, [`Degradations`], the [`anthropic`] response types, model mapping
//! and the other [`TranslateOptions`], upstream error mapping, stop sequences enforced on the
//! answer, [`tokens`], and the layer plumbing. [`AnthropicToResponsesLayer`] is the Responses
//! wire's layer; it works as described below for the chat wire.
//!
//! [`AnthropicToOpenAiLayer`] wraps a service that speaks OpenAI's `POST /v1/chat/completions`
//! (usually an HTTP client pointed at OpenAI, vLLM, llama.cpp, Ollama, DeepSeek, OpenRouter…).
//! For `POST /v1/messages` the service it makes:
//!
//! 1. reads the body under a limit (`413 request_too_large` past it) and parses it once — or
//!    takes the [`ParsedBody`](crate::parsed::ParsedBody) a layer further out left in the
//!    request extensions;
//! 2. validates and translates it ([`translate_request`]): a malformed request gets a `400
//!    invalid_request_error` naming the field, and the inner service is never called;
//! 3. maps the model, rewrites method, path and headers (the client's `x-api-key`,
//!    `authorization` and `anthropic-*` headers are removed) and calls the inner service;
//! 4. translates the answer back: a JSON completion into a `message`
//!    ([`response::translate_response`]), an SSE stream into Anthropic stream events frame by
//!    frame ([`stream`]), an error status into the matching Anthropic error
//!    ([`response::translate_error`]).
//!
//! Every other request passes through untouched. What cannot be carried over faithfully is
//! listed in the `x-llm-bridge-degraded` response header.
//!
//! The inner service receives `Request<Either<Full<Bytes>, ReqBody>>`: the translated body on
//! the left, untouched bodies of passed-through requests on the right.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Either, Full};
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_llm_bridge::translate::{AnthropicToOpenAiLayer, ModelMap};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Stands in for an HTTP client to an OpenAI-compatible backend.
//! let openai = tower::service_fn(|req: Request<Either<Full<Bytes>, Full<Bytes>>>| async move {
//!     assert_eq!(req.uri().path(), "/v1/chat/completions");
//!     let body = req.into_body().collect().await.unwrap().to_bytes();
//!     let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
//!     assert_eq!(request["model"], "gpt-4o-mini");
//!     let completion = r#"{"choices":[{"message":{"content":"Hi!"},"finish_reason":"stop"}],
//!                         "usage":{"prompt_tokens":9,"completion_tokens":2}}"#;
//!     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(completion))))
//! });
//!
//! let service = ServiceBuilder::new()
//!     .layer(AnthropicToOpenAiLayer::new().model_map(ModelMap::big_small("gpt-4o", "gpt-4o-mini")))
//!     .service(openai);
//!
//! let request = Request::post("/v1/messages").body(Full::new(Bytes::from(
//!     r#"{"model":"claude-haiku-4-5","max_tokens":64,"messages":[{"role":"user","content":"Hello"}]}"#,
//! ))).unwrap();
//! let response = service.oneshot(request).await.unwrap();
//! assert_eq!(response.status(), 200);
//! let body = response.into_body().collect().await.unwrap().to_bytes();
//! let message: serde_json::Value = serde_json::from_slice(&body).unwrap();
//! assert_eq!(message["model"], "claude-haiku-4-5");
//! assert_eq!(message["content"][0]["text"], "Hi!");
//! assert_eq!(message["usage"]["output_tokens"], 2);
//! # }
//! ```
//!
//! # Customised
//!
//! ```
//! use std::time::Duration;
//! use tower_llm_bridge::translate::{AnthropicToOpenAiLayer, MaxTokensCaps, ModelMap, ReasoningModels};
//!
//! let layer = AnthropicToOpenAiLayer::new()
//!     .model_map(ModelMap::new().contains("haiku", "qwen3:8b").default_model("qwen3:32b"))
//!     .reasoning_models(ReasoningModels::none())
//!     .max_tokens_caps(MaxTokensCaps::new().cap("qwen3", 32_768))
//!     .stream_usage(false)
//!     .forward_thinking(true)
//!     .body_limit(8 * 1024 * 1024)
//!     .stream_idle_timeout(Duration::from_secs(120))
//!     .upstream_path("/api/v1/chat/completions")
//!     .expect("an absolute path");
//! # let _ = layer;
//! ```

pub mod anthropic;
pub mod body;
pub mod chat;
mod config;
mod degraded;
mod future;
mod layer;
mod lenient;
pub mod responses;
mod service;
mod stop;
pub mod tokens;
mod tool_args;
mod upstream_error;
mod validate;
mod view;

// The chat wire's modules at their historical paths.
pub use chat::{models, request, response, stream};

pub use body::TranslateBody;
pub use config::{MaxTokensCaps, ModelMap, ReasoningModels, TranslateOptions};
pub use degraded::Degradations;
pub use future::ResponseFuture;
pub use layer::{
    AnthropicToOpenAiLayer, AnthropicToResponsesLayer, DEFAULT_BODY_LIMIT, DEFAULT_RESPONSE_LIMIT,
    InvalidUpstreamPath,
};
pub use request::{TranslatedRequest, translate_parsed, translate_request};
pub use service::{
    AnthropicToOpenAi, AnthropicToResponses, DEGRADED_HEADER, remove_client_credentials,
};
pub use stream::{StreamConfig, StreamStatus, StreamTranslator};

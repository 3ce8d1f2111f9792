//! Anthropic Messages API → OpenAI Chat Completions translation (docs being written).

pub mod body;
mod config;
mod future;
mod layer;
pub mod models;
pub mod request;
pub mod response;
mod service;

pub use body::TranslateBody;
pub use config::{MaxTokensCaps, ModelMap, ReasoningModels, TranslateOptions};
pub use future::ResponseFuture;
pub use layer::{
    AnthropicToOpenAiLayer, DEFAULT_BODY_LIMIT, DEFAULT_RESPONSE_LIMIT, InvalidUpstreamPath,
};
pub use request::{Degradations, TranslatedRequest, translate_request};
pub use service::{AnthropicToOpenAi, DEGRADED_HEADER};

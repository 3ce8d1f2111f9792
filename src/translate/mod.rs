//! Anthropic Messages API → OpenAI Chat Completions translation (docs being written).

pub mod body;
pub mod models;
pub mod stream;

pub use body::TranslateBody;
pub use stream::{StreamConfig, StreamStatus, StreamTranslator};

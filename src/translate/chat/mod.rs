//! The OpenAI Chat Completions wire (`POST /v1/chat/completions`): Anthropic Messages requests
//! translated into chat completions, and chat completions (JSON or SSE) translated back.
//!
//! Each part is sans-IO and usable alone; [`AnthropicToOpenAiLayer`](super::AnthropicToOpenAiLayer)
//! puts them together. The same modules are reachable at their historical paths
//! (`translate::request`, `translate::response`, `translate::stream`, `translate::models`).
//!
//! ```
//! use serde_json::json;
//! use tower_llm_bridge::translate::chat::request::translate_request;
//! use tower_llm_bridge::translate::TranslateOptions;
//!
//! let anthropic = json!({"model": "gpt-4o", "max_tokens": 16,
//!                        "messages": [{"role": "user", "content": "Hi"}]});
//! let translated = translate_request(&anthropic, &TranslateOptions::default()).unwrap();
//! let chat: serde_json::Value = serde_json::from_slice(&translated.body).unwrap();
//! assert_eq!(chat["messages"][0], json!({"role": "user", "content": "Hi"}));
//! ```

pub mod models;
pub mod request;
pub mod response;
pub mod stream;

//! Server-Sent Events: a sans-IO decoder and an encoder.
//!
//! [`SseDecoder`] turns `text/event-stream` bytes into events as they arrive, whatever the
//! split points (inside a line, a `\r\n` pair or a UTF-8 character), following the WHATWG
//! parsing rules: `\n`, `\r\n` and `\r` line endings, a leading byte order mark, comments,
//! `event:`/`data:`/`id:`/`retry:` fields with or without the space, multi-line data, and a
//! configurable size limit per event. [`encode_event`] and [`encode_json_event`] write events
//! in the `event: <type>\ndata: <json>\n\n` form Anthropic clients read.
//!
//! There is no I/O and no runtime here: the streaming body of the translation layer feeds
//! the decoder with each frame it receives from the upstream.
//!
//! # Default use
//!
//! ```
//! use tower_llm_bridge::sse::SseDecoder;
//!
//! let mut decoder = SseDecoder::new();
//! let mut data = Vec::new();
//! // An OpenAI stream, split badly by the network.
//! for piece in [&b"data: {\"a\""[..], b":1}\n", b"\ndata: [DONE]\n\n"] {
//!     decoder.push(piece, |event| data.push(event.unwrap().data.to_owned()));
//! }
//! decoder.finish(|_| unreachable!());
//! assert_eq!(data, [r#"{"a":1}"#, "[DONE]"]);
//! ```
//!
//! # Custom limit, and encoding
//!
//! ```
//! use bytes::BytesMut;
//! use tower_llm_bridge::sse::{encode_json_event, SseDecoder, SseError};
//!
//! let mut out = BytesMut::new();
//! encode_json_event(&mut out, "ping", &serde_json::json!({"type": "ping"})).unwrap();
//! encode_json_event(&mut out, "big", &"x".repeat(100)).unwrap();
//! assert!(out.starts_with(b"event: ping\ndata: {\"type\":\"ping\"}\n\n"));
//!
//! let mut decoder = SseDecoder::new().with_max_event_size(64);
//! let mut seen = Vec::new();
//! decoder.push(&out, |event| seen.push(event.map(|event| event.event.to_owned())));
//! assert_eq!(seen, [Ok("ping".to_owned()), Err(SseError::EventTooLarge { limit: 64 })]);
//! ```

mod decoder;
mod encoder;

pub use decoder::{DEFAULT_MAX_EVENT_SIZE, SseDecoder, SseError, SseEvent};
pub use encoder::{encode_event, encode_json_event};

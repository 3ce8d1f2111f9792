//! Stream codecs: streamed answers ↔ JSON answers, per API (docs on [`StreamCodec`]).

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::Value;

use crate::parsed::ParsedBody;

mod anthropic;
mod openai;

pub use anthropic::AnthropicMessages;
pub use openai::OpenAiChat;

/// One API's two answer forms, a streamed answer and its JSON equivalent: what lets one
/// cache entry serve both modes. Implementations are sans-IO: they see bytes and return bytes.
///
/// The cache stores every answer in its JSON form (the message a non-streaming request
/// gets). A streamed answer is accumulated into that form as it passes; a streaming request
/// that hits an entry gets it rendered back as an event stream. A [`StreamCodec`] knows one
/// API's two wire forms; the layer knows nothing else about the API (and never imports the
/// translation module). [`AnthropicMessages`] and [`OpenAiChat`] are provided; supply your
/// own with [`ResponseCacheLayer::stream_codec`](super::ResponseCacheLayer::stream_codec).
///
/// Equivalence is what the official SDKs' stream accumulation yields: the accumulated
/// message equals the JSON answer in content blocks (text, tool input, thinking and
/// signatures), stop reason, stop sequence and usage, and a rendered stream accumulates back
/// to the stored message. Delta boundaries and keep-alive events are not kept.
///
/// # Example
///
/// ```
/// use serde_json::{json, Value};
/// use tower_llm_bridge::cache::{AnthropicMessages, StreamCodec};
/// use tower_llm_bridge::parsed::ParsedBody;
///
/// let codec = AnthropicMessages;
/// let message = json!({
///     "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
///     "content": [{"type": "text", "text": "Hello"}],
///     "stop_reason": "end_turn", "stop_sequence": null,
///     "usage": {"input_tokens": 5, "output_tokens": 1}
/// });
/// let request = ParsedBody::from_json(json!({"stream": true}));
/// let stream = codec.render_stream(message.to_string().as_bytes(), &request).unwrap();
/// assert!(stream.starts_with(b"event: message_start\n"));
///
/// // Accumulating the rendered stream gives the message back.
/// let mut acc = codec.accumulator();
/// acc.push(&stream).unwrap();
/// let back: Value = serde_json::from_slice(&acc.finish().unwrap()).unwrap();
/// assert_eq!(back, message);
/// ```
///
/// # A codec of your own
///
/// For an API that streams newline-delimited JSON objects and ends with `{"done": true}`:
///
/// ```
/// use bytes::Bytes;
/// use serde_json::Value;
/// use tower_llm_bridge::cache::{CodecError, StreamAccumulator, StreamCodec};
/// use tower_llm_bridge::parsed::ParsedBody;
///
/// struct Ndjson;
///
/// #[derive(Default)]
/// struct Lines { buf: Vec<u8>, text: String, done: bool }
///
/// impl StreamAccumulator for Lines {
///     fn push(&mut self, bytes: &[u8]) -> Result<(), CodecError> {
///         self.buf.extend_from_slice(bytes);
///         while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
///             let line: Vec<u8> = self.buf.drain(..=end).collect();
///             let v: Value = serde_json::from_slice(&line)
///                 .map_err(|e| CodecError::Malformed(e.to_string()))?;
///             self.text.push_str(v["text"].as_str().unwrap_or_default());
///             self.done |= v["done"] == true;
///         }
///         Ok(())
///     }
///     fn finish(self: Box<Self>) -> Result<Bytes, CodecError> {
///         if !self.done {
///             return Err(CodecError::Incomplete);
///         }
///         Ok(Bytes::from(serde_json::json!({"text": self.text}).to_string()))
///     }
/// }
///
/// impl StreamCodec for Ndjson {
///     fn accumulator(&self) -> Box<dyn StreamAccumulator> {
///         Box::new(Lines::default())
///     }
///     fn render_stream(&self, answer: &[u8], _request: &ParsedBody) -> Result<Bytes, CodecError> {
///         let v: Value = serde_json::from_slice(answer)
///             .map_err(|e| CodecError::Malformed(e.to_string()))?;
///         let text = v["text"].as_str().unwrap_or_default();
///         let line = serde_json::json!({"text": text, "done": true});
///         Ok(Bytes::from(format!("{line}\n")))
///     }
///     fn error_event(&self, message: &str) -> Bytes {
///         Bytes::from(format!("{}\n", serde_json::json!({"error": message})))
///     }
///     fn content_type(&self) -> &'static str {
///         "application/x-ndjson"
///     }
/// }
///
/// let mut acc = Ndjson.accumulator();
/// acc.push(b"{\"text\":\"Hel\"}\n{\"text\":\"lo\",\"do").unwrap();
/// acc.push(b"ne\":true}\n").unwrap();
/// assert_eq!(acc.finish().unwrap(), r#"{"text":"Hello"}"#);
/// ```
pub trait StreamCodec: Send + Sync + 'static {
    /// A fresh accumulator for one streamed answer.
    fn accumulator(&self) -> Box<dyn StreamAccumulator>;

    /// The stream equivalent to the stored JSON `answer`, for a streaming `request` (the
    /// client's request body; some APIs stream optional parts only on request).
    ///
    /// # Errors
    /// [`CodecError::Unsuitable`] when the entry lacks something this request needs (the
    /// layer then treats the lookup as a miss); any other error when `answer` is not an
    /// answer of this API.
    fn render_stream(&self, answer: &[u8], request: &ParsedBody) -> Result<Bytes, CodecError>;

    /// The bytes of an error event that ends a stream the layer has to cut (a follower that
    /// fell too far behind, or whose shared upstream stream failed).
    fn error_event(&self, message: &str) -> Bytes;

    /// The `content-type` of a rendered stream.
    fn content_type(&self) -> &'static str {
        "text/event-stream"
    }
}

/// Accumulates one streamed answer into its JSON form, fed the raw bytes as they pass.
///
/// [`push`](Self::push) fails as soon as the stream cannot be stored (an error event, an
/// event it cannot understand); [`finish`](Self::finish) fails unless the stream ended
/// cleanly (the API's own end marker seen).
pub trait StreamAccumulator: Send {
    /// Feeds the next bytes of the stream, split anywhere.
    ///
    /// # Errors
    /// When the stream can no longer be stored; the layer then stops recording it.
    fn push(&mut self, bytes: &[u8]) -> Result<(), CodecError>;

    /// The JSON answer of a stream that ended after the bytes pushed so far.
    ///
    /// # Errors
    /// [`CodecError::Incomplete`] when the stream did not reach its clean end.
    fn finish(self: Box<Self>) -> Result<Bytes, CodecError>;
}

/// Why a codec could not accumulate or render an answer.
///
/// ```
/// use tower_llm_bridge::cache::{AnthropicMessages, CodecError, StreamCodec};
///
/// let mut acc = AnthropicMessages.accumulator();
/// let error = b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n";
/// assert_eq!(acc.push(error), Err(CodecError::Upstream));
/// assert_eq!(CodecError::Incomplete.to_string(), "the stream did not reach its end");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// Not a well-formed answer of the API.
    Malformed(String),
    /// The stream reported an error (`event: error`, an error chunk).
    Upstream,
    /// The stream has not reached its clean end.
    Incomplete,
    /// A part the codec does not know how to accumulate faithfully.
    Unsupported(String),
    /// The entry cannot serve this request (it lacks a part the request asks for).
    Unsuitable(String),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(what) => write!(f, "malformed answer: {what}"),
            Self::Upstream => f.write_str("the stream reported an error"),
            Self::Incomplete => f.write_str("the stream did not reach its end"),
            Self::Unsupported(what) => write!(f, "cannot accumulate {what}"),
            Self::Unsuitable(what) => write!(f, "the entry cannot serve this request: {what}"),
        }
    }
}

impl std::error::Error for CodecError {}

fn malformed(what: impl fmt::Display) -> CodecError {
    CodecError::Malformed(what.to_string())
}

/// Appends `data: <json>\n\n` (an event without a name, as OpenAI streams are written).
fn put_data_event(out: &mut BytesMut, value: &Value) {
    out.put_slice(b"data: ");
    // Serializing a `Value` into memory cannot fail; compact JSON has no raw line break.
    let _ = serde_json::to_writer((&mut *out).writer(), value);
    out.put_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn codecs() -> [&'static dyn StreamCodec; 2] {
        [&AnthropicMessages, &OpenAiChat]
    }

    proptest! {
        /// Upstream bytes are untrusted: accumulation never panics, whatever they are and
        /// however they are split.
        #[test]
        fn accumulating_arbitrary_bytes_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            split in any::<usize>(),
        ) {
            for codec in codecs() {
                let mut acc = codec.accumulator();
                let at = split % (bytes.len() + 1);
                let _ = acc.push(&bytes[..at]);
                let _ = acc.push(&bytes[at..]);
                let _ = acc.finish();
            }
        }

        /// Stored answers may come from another release or a shared Redis: rendering never
        /// panics on any JSON.
        #[test]
        fn rendering_arbitrary_json_never_panics(text in "[\\[\\]{}\",:a-z0-9 ]{0,200}") {
            for codec in codecs() {
                let _ = codec.render_stream(text.as_bytes(), &ParsedBody::from_json(Value::Null));
            }
        }

        /// A real stream with one byte changed: an error or an answer, never a panic.
        #[test]
        fn mutated_streams_never_panic(pos in any::<usize>(), byte in any::<u8>()) {
            let message = serde_json::json!({"type": "message", "content": [
                {"type": "text", "text": "hi"},
                {"type": "tool_use", "id": "t", "name": "f", "input": {"a": [1, 2]}}],
                "stop_reason": "tool_use", "usage": {"output_tokens": 3}});
            let mut stream = AnthropicMessages
                .render_stream(message.to_string().as_bytes(), &ParsedBody::from_json(Value::Null))
                .expect("render")
                .to_vec();
            let at = pos % stream.len();
            stream[at] = byte;
            let mut acc = AnthropicMessages.accumulator();
            let _ = acc.push(&stream);
            let _ = acc.finish();
        }
    }
}

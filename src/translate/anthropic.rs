//! The Anthropic Messages side of every wire: the response types written to clients.
//!
//! Whatever the upstream speaks, a client gets these shapes back, so each wire's response
//! and stream translation builds them.
//!
//! ```
//! use tower_llm_bridge::translate::anthropic::{AnthropicUsage, ContentBlock, MessageResponse, StopReason};
//!
//! let message = MessageResponse {
//!     id: "msg_1".into(),
//!     r#type: "message",
//!     role: "assistant",
//!     model: "claude-sonnet-4-5",
//!     content: vec![ContentBlock::Text { text: "Hi".into() }],
//!     stop_reason: Some(StopReason::EndTurn),
//!     stop_sequence: None,
//!     usage: AnthropicUsage { input_tokens: 3, output_tokens: 1, ..Default::default() },
//! };
//! let json = serde_json::to_value(&message).unwrap();
//! assert_eq!(json["content"][0]["text"], "Hi");
//! assert_eq!(json["stop_reason"], "end_turn");
//! ```

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::sse;

/// An Anthropic `message` response. Its content borrows from the upstream answer it was
/// translated from.
#[derive(Debug, Serialize)]
pub struct MessageResponse<'a> {
    /// `msg_…`.
    pub id: String,
    /// Always `"message"`.
    pub r#type: &'static str,
    /// Always `"assistant"`.
    pub role: &'static str,
    /// The model name the client asked for.
    pub model: &'a str,
    /// The content blocks.
    pub content: Vec<ContentBlock<'a>>,
    /// Why generation stopped.
    pub stop_reason: Option<StopReason>,
    /// The stop sequence that matched, when `stop_reason` is `stop_sequence`.
    pub stop_sequence: Option<String>,
    /// Token usage.
    pub usage: AnthropicUsage,
}

impl MessageResponse<'_> {
    /// The message as JSON, written into a buffer sized for it up front (`size_hint`: the
    /// upstream answer's length) rather than grown step by step.
    pub(crate) fn to_bytes(&self, size_hint: usize) -> Bytes {
        let mut out = Vec::with_capacity(size_hint.saturating_add(256));
        match serde_json::to_writer(&mut out, self) {
            Ok(()) => Bytes::from(out),
            // Unreachable in practice: strings, numbers and checked raw JSON.
            Err(_) => Bytes::new(),
        }
    }
}

/// An Anthropic response content block; its text borrows from the upstream answer where it
/// can.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock<'a> {
    /// Model reasoning.
    Thinking {
        /// The reasoning text.
        thinking: Cow<'a, str>,
        /// Anthropic signs thinking; chat backends cannot (`""`), the Responses wire carries its
        /// encrypted reasoning here.
        signature: Cow<'a, str>,
    },
    /// Text.
    Text {
        /// The text.
        text: Cow<'a, str>,
    },
    /// A tool call.
    ToolUse {
        /// `toolu_…` or the upstream call id.
        id: Cow<'a, str>,
        /// The tool name.
        name: Cow<'a, str>,
        /// The arguments object.
        input: ToolInput<'a>,
    },
}

/// The `input` object of a `tool_use` block: the upstream's arguments written out as they
/// came (a JSON object, checked, never rebuilt), or an object made here.
///
/// ```
/// use tower_llm_bridge::translate::anthropic::ToolInput;
///
/// let made: ToolInput<'_> = serde_json::json!({"a": 1}).into();
/// let raw: &serde_json::value::RawValue = serde_json::from_str(r#"{"a": 1}"#).unwrap();
/// assert_eq!(made, ToolInput::Raw(raw));
/// assert_eq!(serde_json::to_string(&ToolInput::Raw(raw)).unwrap(), r#"{"a": 1}"#);
/// ```
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum ToolInput<'a> {
    /// The upstream's arguments, verbatim.
    Raw(&'a RawValue),
    /// An object built here (`{}` for empty arguments, or the kept raw text).
    Value(Value),
}

impl From<Value> for ToolInput<'_> {
    fn from(value: Value) -> Self {
        Self::Value(value)
    }
}

impl ToolInput<'_> {
    /// The input as a JSON value.
    ///
    /// ```
    /// # use tower_llm_bridge::translate::anthropic::ToolInput;
    /// let input: ToolInput<'_> = serde_json::json!({"a": 1}).into();
    /// assert_eq!(input.to_value()["a"], 1);
    /// ```
    pub fn to_value(&self) -> Value {
        match self {
            // Checked when it was read: it is one JSON object.
            Self::Raw(raw) => serde_json::from_str(raw.get()).unwrap_or(Value::Null),
            Self::Value(value) => value.clone(),
        }
    }
}

/// Equal when they are the same JSON value, whichever way each is held.
impl PartialEq for ToolInput<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Raw(a), Self::Raw(b)) if a.get() == b.get() => true,
            (Self::Value(a), Self::Value(b)) => a == b,
            _ => self.to_value() == other.to_value(),
        }
    }
}

/// Anthropic usage.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AnthropicUsage {
    /// Prompt tokens not read from the prompt cache.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Always 0: OpenAI backends do not report cache writes.
    pub cache_creation_input_tokens: u64,
    /// Prompt tokens read from the backend's prompt cache.
    pub cache_read_input_tokens: u64,
}

impl From<AnthropicUsage> for crate::report::Usage {
    fn from(usage: AnthropicUsage) -> Self {
        Self {
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cache_read_input_tokens: usage.cache_read_input_tokens,
            cache_creation_input_tokens: usage.cache_creation_input_tokens,
        }
    }
}

/// Anthropic `stop_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model finished its turn.
    EndTurn,
    /// `max_tokens` was reached.
    MaxTokens,
    /// A requested stop sequence matched.
    StopSequence,
    /// The model called a tool.
    ToolUse,
    /// The backend's content filter stopped generation.
    Refusal,
}

impl StopReason {
    /// The wire name.
    ///
    /// ```
    /// # use tower_llm_bridge::translate::models::StopReason;
    /// assert_eq!(StopReason::ToolUse.as_str(), "tool_use");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EndTurn => "end_turn",
            Self::MaxTokens => "max_tokens",
            Self::StopSequence => "stop_sequence",
            Self::ToolUse => "tool_use",
            Self::Refusal => "refusal",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Anthropic stream events (borrowed, serialized straight into the output buffer)
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Event<'a> {
    MessageStart {
        message: StartMessage<'a>,
    },
    Ping,
    ContentBlockStart {
        index: u32,
        content_block: BlockStart<'a>,
    },
    ContentBlockDelta {
        index: u32,
        delta: BlockDelta<'a>,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: MessageDelta<'a>,
        usage: AnthropicUsage,
    },
    MessageStop,
}

impl Event<'_> {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::MessageStart { .. } => "message_start",
            Self::Ping => "ping",
            Self::ContentBlockStart { .. } => "content_block_start",
            Self::ContentBlockDelta { .. } => "content_block_delta",
            Self::ContentBlockStop { .. } => "content_block_stop",
            Self::MessageDelta { .. } => "message_delta",
            Self::MessageStop => "message_stop",
        }
    }
}

#[derive(Serialize)]
pub(crate) struct StartMessage<'a> {
    pub(crate) id: &'a str,
    pub(crate) r#type: &'static str,
    pub(crate) role: &'static str,
    pub(crate) model: &'a str,
    pub(crate) content: &'static [()],
    pub(crate) stop_reason: Option<StopReason>,
    pub(crate) stop_sequence: Option<&'a str>,
    pub(crate) usage: AnthropicUsage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum BlockStart<'a> {
    Thinking {
        thinking: &'static str,
        signature: &'static str,
    },
    Text {
        text: &'static str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Empty,
    },
}

/// Serializes as `{}`.
#[derive(Serialize)]
pub(crate) struct Empty {}

// The variant names are the wire names (`text_delta`, …).
#[allow(clippy::enum_variant_names)]
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum BlockDelta<'a> {
    TextDelta { text: &'a str },
    ThinkingDelta { thinking: &'a str },
    SignatureDelta { signature: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
pub(crate) struct MessageDelta<'a> {
    pub(crate) stop_reason: StopReason,
    pub(crate) stop_sequence: Option<&'a str>,
}

pub(crate) fn emit(out: &mut BytesMut, event: &Event<'_>) {
    if let Event::ContentBlockDelta { index, delta } = event {
        // Most events of a stream: written directly, the same bytes serde writes.
        let (prefix, text) = match delta {
            BlockDelta::TextDelta { text } => (&br#"{"type":"text_delta","text":"#[..], text),
            BlockDelta::ThinkingDelta { thinking } => {
                (&br#"{"type":"thinking_delta","thinking":"#[..], thinking)
            }
            BlockDelta::InputJsonDelta { partial_json } => (
                &br#"{"type":"input_json_delta","partial_json":"#[..],
                partial_json,
            ),
            BlockDelta::SignatureDelta { signature } => {
                (&br#"{"type":"signature_delta","signature":"#[..], signature)
            }
        };
        write_delta(out, *index, prefix, text);
        return;
    }
    if let Err(err) = sse::encode_json_event(out, event.name(), event) {
        // Unreachable in practice: these are plain structs of strings and numbers.
        tracing::error!(%err, "failed to serialize a stream event");
    }
}

/// `event: content_block_delta` with `delta` being `prefix` (`{"type":…,"<field>":`) then
/// `text` as a JSON string.
fn write_delta(out: &mut BytesMut, index: u32, prefix: &[u8], text: &str) {
    out.reserve(96 + text.len());
    out.put_slice(
        b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":",
    );
    out.put_slice(itoa::Buffer::new().format(index).as_bytes());
    out.put_slice(b",\"delta\":");
    out.put_slice(prefix);
    // A string always serializes; serde_json escapes line breaks, so the frame stays intact.
    let mut writer = out.writer();
    if let Err(err) = serde_json::to_writer(&mut writer, text) {
        tracing::error!(%err, "failed to serialize a stream event");
    }
    writer.into_inner().put_slice(b"}}\n\n");
}

/// Every content block type the Anthropic Messages API accepts in `messages[].content`, GA
/// and beta (from anthropic-sdk-python's `ContentBlockParam` and `BetaContentBlockParam`).
/// A block of any other type is a `400` naming it, as Anthropic answers; a known type that a
/// backend cannot take is degraded instead (see [`Degradations`](super::Degradations)).
///
/// ```
/// use tower_llm_bridge::translate::anthropic::{MESSAGE_BLOCK_TYPES, TOOL_RESULT_BLOCK_TYPES};
///
/// assert!(MESSAGE_BLOCK_TYPES.contains(&"web_search_tool_result"));
/// assert!(!MESSAGE_BLOCK_TYPES.contains(&"bogus"));
/// assert!(TOOL_RESULT_BLOCK_TYPES.contains(&"tool_reference"));
/// ```
pub const MESSAGE_BLOCK_TYPES: &[&str] = &[
    "text",
    "image",
    "document",
    "search_result",
    "thinking",
    "redacted_thinking",
    "tool_use",
    "tool_result",
    "server_tool_use",
    "web_search_tool_result",
    "web_fetch_tool_result",
    "advisor_tool_result",
    "code_execution_tool_result",
    "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result",
    "tool_search_tool_result",
    "mcp_tool_use",
    "mcp_tool_result",
    "container_upload",
    "compaction",
    "mid_conv_system",
    "fallback",
];

/// The block types Anthropic accepts inside a `tool_result`'s `content`.
pub const TOOL_RESULT_BLOCK_TYPES: &[&str] = &[
    "text",
    "image",
    "search_result",
    "document",
    "tool_reference",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_are_written_as_serde_writes_them() {
        let texts = [
            "",
            "plain",
            "line\nbreak \"quoted\" \\ \u{1}",
            "é ✓ \u{2028}",
        ];
        for index in [0, 7, 10, 4_294_967_295] {
            for text in texts {
                for delta in [
                    BlockDelta::TextDelta { text },
                    BlockDelta::ThinkingDelta { thinking: text },
                    BlockDelta::InputJsonDelta { partial_json: text },
                    BlockDelta::SignatureDelta { signature: text },
                ] {
                    let event = Event::ContentBlockDelta { index, delta };
                    let mut direct = BytesMut::new();
                    emit(&mut direct, &event);
                    let mut serde = BytesMut::new();
                    sse::encode_json_event(&mut serde, event.name(), &event).expect("serializes");
                    assert_eq!(direct, serde);
                }
            }
        }
    }
}

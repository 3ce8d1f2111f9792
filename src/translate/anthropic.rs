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

use bytes::BytesMut;
use serde::Serialize;
use serde_json::Value;

use crate::sse;

/// An Anthropic `message` response.
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
    pub content: Vec<ContentBlock>,
    /// Why generation stopped.
    pub stop_reason: Option<StopReason>,
    /// The stop sequence that matched, when `stop_reason` is `stop_sequence`.
    pub stop_sequence: Option<String>,
    /// Token usage.
    pub usage: AnthropicUsage,
}

/// An Anthropic response content block.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    /// Model reasoning.
    Thinking {
        /// The reasoning text.
        thinking: String,
        /// Anthropic signs thinking; chat backends cannot (`""`), the Responses wire carries its
        /// encrypted reasoning here.
        signature: String,
    },
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// A tool call.
    ToolUse {
        /// `toolu_…` or the upstream call id.
        id: String,
        /// The tool name.
        name: String,
        /// The parsed arguments object.
        input: Value,
    },
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
    if let Err(err) = sse::encode_json_event(out, event.name(), event) {
        // Unreachable in practice: these are plain structs of strings and numbers.
        tracing::error!(%err, "failed to serialize a stream event");
    }
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

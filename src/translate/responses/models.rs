//! Wire types for the parts of OpenAI's Responses API this crate reads.
//!
//! The shapes follow the API reference (openai-python `types/responses/`), read **leniently**
//! as the chat wire's are: every field is optional or defaulted, token counts may be `null`,
//! strings or floats, unknown fields are ignored and unknown output item or content types are
//! kept as [`OutputItem::Other`] / [`OutputContent::Other`], so a compatible server that leaves
//! things out (or adds its own item types) still parses.
//!
//! ```
//! use tower_llm_bridge::translate::responses::models::{OutputItem, Response};
//!
//! let response: Response = serde_json::from_str(r#"{
//!     "id": "resp_1", "object": "response", "status": "completed",
//!     "output": [{"type": "message", "id": "msg_1", "role": "assistant",
//!                 "content": [{"type": "output_text", "text": "Hi", "annotations": []}]}],
//!     "usage": {"input_tokens": 20, "input_tokens_details": {"cached_tokens": 8},
//!               "output_tokens": 2, "output_tokens_details": {"reasoning_tokens": 0},
//!               "total_tokens": 22}
//! }"#).unwrap();
//! assert!(matches!(response.output[0], OutputItem::Message { .. }));
//! let usage = response.usage.unwrap_or_default().to_anthropic();
//! assert_eq!((usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens), (12, 8, 2));
//! ```

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use crate::translate::anthropic::AnthropicUsage;
use crate::translate::lenient::{arguments_text, borrowed, lenient_u64, null_as_default};

/// A `response` object: the body of a non-streamed answer, and the `response` field of the
/// `response.created` / `completed` / `incomplete` / `failed` stream events. Its strings
/// borrow from the bytes it was read from (copied only where the upstream escaped something);
/// fields never read (`id`, `model`, `created_at`, the echoed request settings) are skipped.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Response<'a> {
    /// `completed`, `incomplete`, `failed`, `in_progress`, …
    #[serde(borrow, deserialize_with = "borrowed")]
    pub status: Option<Cow<'a, str>>,
    /// The output items, in order.
    #[serde(borrow, deserialize_with = "null_as_default")]
    pub output: Vec<OutputItem<'a>>,
    /// Why the response is incomplete.
    #[serde(borrow)]
    pub incomplete_details: Option<IncompleteDetails<'a>>,
    /// The error of a failed response.
    pub error: Option<Value>,
    /// Token usage (absent while in progress).
    pub usage: Option<ResponseUsage>,
}

/// `incomplete_details`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct IncompleteDetails<'a> {
    /// `max_output_tokens` or `content_filter`.
    #[serde(borrow, deserialize_with = "borrowed")]
    pub reason: Option<Cow<'a, str>>,
}

/// One output item.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem<'a> {
    /// An assistant message: text and refusal parts.
    Message {
        /// `msg_…`.
        #[serde(default, borrow, deserialize_with = "borrowed")]
        id: Option<Cow<'a, str>>,
        /// The parts.
        #[serde(default, borrow, deserialize_with = "null_as_default")]
        content: Vec<OutputContent<'a>>,
    },
    /// A call of a function tool.
    FunctionCall {
        /// The item id (`fc_…`), distinct from the call id.
        #[serde(default, borrow, deserialize_with = "borrowed")]
        id: Option<Cow<'a, str>>,
        /// The call id (`call_…`) the tool result must name.
        #[serde(default, borrow, deserialize_with = "borrowed")]
        call_id: Option<Cow<'a, str>>,
        /// The function name.
        #[serde(default, borrow, deserialize_with = "borrowed")]
        name: Option<Cow<'a, str>>,
        /// The arguments as JSON text (an object from some servers, re-serialized).
        #[serde(default, borrow, deserialize_with = "arguments_text")]
        arguments: Option<Cow<'a, str>>,
    },
    /// The model's reasoning: a summary and, with `include: ["reasoning.encrypted_content"]`,
    /// the encrypted chain of thought to hand back next turn.
    Reasoning {
        /// `rs_…`.
        #[serde(default, borrow, deserialize_with = "borrowed")]
        id: Option<Cow<'a, str>>,
        /// Summary parts.
        #[serde(default, borrow, deserialize_with = "null_as_default")]
        summary: Vec<TextPart<'a>>,
        /// Raw reasoning text (some servers, e.g. open-weight models behind vLLM).
        #[serde(default, borrow, deserialize_with = "null_as_default")]
        content: Vec<TextPart<'a>>,
        /// The encrypted reasoning.
        #[serde(default, borrow, deserialize_with = "borrowed")]
        encrypted_content: Option<Cow<'a, str>>,
    },
    /// Any other item (web search calls, MCP calls, …), which has no Anthropic equivalent.
    #[serde(other)]
    Other,
}

impl OutputItem<'_> {
    /// The reasoning text of a reasoning item: its summary parts joined by blank lines, or
    /// its raw reasoning text when it has no summary (borrowed when there is one part).
    pub fn reasoning_text(&self) -> Cow<'_, str> {
        match self {
            Self::Reasoning {
                summary, content, ..
            } => {
                let parts = if summary.is_empty() { content } else { summary };
                match parts.as_slice() {
                    [] => Cow::Borrowed(""),
                    [part] => Cow::Borrowed(&part.text),
                    parts => {
                        let texts: Vec<&str> = parts.iter().map(|part| &*part.text).collect();
                        Cow::Owned(texts.join("\n\n"))
                    }
                }
            }
            _ => Cow::Borrowed(""),
        }
    }
}

/// A part of a message item.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputContent<'a> {
    /// Text.
    OutputText {
        /// The text.
        #[serde(default, borrow, deserialize_with = "borrowed_or_empty")]
        text: Cow<'a, str>,
    },
    /// A refusal.
    Refusal {
        /// Why the model refused.
        #[serde(default, borrow, deserialize_with = "borrowed_or_empty")]
        refusal: Cow<'a, str>,
    },
    /// Any other part.
    #[serde(other)]
    Other,
}

/// A `{type, text}` part (`summary_text`, `reasoning_text`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TextPart<'a> {
    /// The text.
    #[serde(borrow, deserialize_with = "borrowed_or_empty")]
    pub text: Cow<'a, str>,
}

/// A string field that must be a string (as `String` was), borrowed when unescaped.
fn borrowed_or_empty<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Cow<'de, str>, D::Error> {
    #[derive(Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Borrowed::deserialize(deserializer)?.0)
}

/// Token usage as the Responses API reports it.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct ResponseUsage {
    /// Input tokens, cached ones included.
    #[serde(deserialize_with = "lenient_u64")]
    pub input_tokens: u64,
    /// Output tokens, reasoning tokens included.
    #[serde(deserialize_with = "lenient_u64")]
    pub output_tokens: u64,
    /// Details of the input tokens.
    pub input_tokens_details: Option<InputTokensDetails>,
}

/// `input_tokens_details`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct InputTokensDetails {
    /// Input tokens read from the prompt cache.
    #[serde(deserialize_with = "lenient_u64")]
    pub cached_tokens: u64,
}

impl ResponseUsage {
    /// Anthropic usage: `input_tokens` excludes the cached tokens, reported as
    /// `cache_read_input_tokens`.
    ///
    /// ```
    /// # use tower_llm_bridge::translate::responses::models::ResponseUsage;
    /// let usage: ResponseUsage = serde_json::from_str(
    ///     r#"{"input_tokens":100,"output_tokens":7,"input_tokens_details":{"cached_tokens":60}}"#,
    /// ).unwrap();
    /// let usage = usage.to_anthropic();
    /// assert_eq!((usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens), (40, 60, 7));
    /// ```
    pub fn to_anthropic(&self) -> AnthropicUsage {
        let cached = self
            .input_tokens_details
            .as_ref()
            .map_or(0, |details| details.cached_tokens)
            .min(self.input_tokens);
        AnthropicUsage {
            input_tokens: self.input_tokens - cached,
            output_tokens: self.output_tokens,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: cached,
        }
    }
}

/// One event of a Responses stream, read flat: which fields are set depends on `type`
/// (`response.created`, `response.output_item.added`, `response.output_text.delta`, …).
/// Borrowed from the event's data; fields never read (`sequence_number`, `logprobs`,
/// `obfuscation`, the whole `text` of `*.done` events) are skipped.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StreamEvent<'a> {
    /// The event type; when absent, the SSE `event:` name is used.
    #[serde(borrow, deserialize_with = "borrowed")]
    pub r#type: Option<Cow<'a, str>>,
    /// `response.created` / `in_progress` / `completed` / `incomplete` / `failed` (boxed, as
    /// the item: most events have neither, and the event is moved around whole).
    #[serde(borrow)]
    pub response: Option<Box<Response<'a>>>,
    /// `response.output_item.added` / `done`.
    #[serde(borrow)]
    pub item: Option<Box<OutputItem<'a>>>,
    /// The output item an event is about.
    pub output_index: Option<u64>,
    /// The id of the output item an event is about.
    #[serde(borrow, deserialize_with = "borrowed")]
    pub item_id: Option<Cow<'a, str>>,
    /// A text, refusal, summary or arguments fragment.
    #[serde(borrow, deserialize_with = "borrowed")]
    pub delta: Option<Cow<'a, str>>,
    /// Which summary part of a reasoning item a summary fragment belongs to.
    pub summary_index: Option<u64>,
    /// `error` events: the message.
    #[serde(borrow, deserialize_with = "borrowed")]
    pub message: Option<Cow<'a, str>>,
    /// `error` events: the code.
    pub code: Option<Value>,
    /// An error object some servers nest instead.
    pub error: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_items_and_parts_are_kept_as_other() {
        let response: Response = serde_json::from_str(
            r#"{"output":[{"type":"web_search_call","id":"ws_1","status":"completed"},
                {"type":"message","content":[{"type":"output_audio"},{"type":"refusal","refusal":"no"}]},
                {"type":"function_call","call_id":"call_1","name":"f","arguments":{"a":1}}],
               "usage":{"input_tokens":"12","output_tokens":3.0,"input_tokens_details":null}}"#,
        )
        .expect("lenient");
        assert!(matches!(response.output[0], OutputItem::Other));
        let OutputItem::Message { content, .. } = &response.output[1] else {
            panic!("message");
        };
        assert!(matches!(content[0], OutputContent::Other));
        assert!(matches!(&content[1], OutputContent::Refusal { refusal } if refusal == "no"));
        let OutputItem::FunctionCall { arguments, .. } = &response.output[2] else {
            panic!("call");
        };
        assert_eq!(arguments.as_deref(), Some(r#"{"a":1}"#));
        let usage = response.usage.expect("usage").to_anthropic();
        assert_eq!((usage.input_tokens, usage.output_tokens), (12, 3));
    }

    #[test]
    fn reasoning_text_prefers_the_summary() {
        let item: OutputItem = serde_json::from_str(
            r#"{"type":"reasoning","id":"rs_1","summary":[{"type":"summary_text","text":"a"},
                {"type":"summary_text","text":"b"}],"content":[{"type":"reasoning_text","text":"raw"}]}"#,
        )
        .expect("item");
        assert_eq!(item.reasoning_text(), "a\n\nb");
        let item: OutputItem = serde_json::from_str(
            r#"{"type":"reasoning","summary":[],"content":[{"type":"reasoning_text","text":"raw"}]}"#,
        )
        .expect("item");
        assert_eq!(item.reasoning_text(), "raw");
    }

    #[test]
    fn cached_tokens_never_exceed_input() {
        let usage: ResponseUsage = serde_json::from_str(
            r#"{"input_tokens":5,"output_tokens":1,"input_tokens_details":{"cached_tokens":9}}"#,
        )
        .expect("usage");
        let usage = usage.to_anthropic();
        assert_eq!((usage.input_tokens, usage.cache_read_input_tokens), (0, 5));
    }
}

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

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::translate::anthropic::AnthropicUsage;

/// A `response` object: the body of a non-streamed answer, and the `response` field of the
/// `response.created` / `completed` / `incomplete` / `failed` stream events.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Response {
    /// `resp_…`.
    pub id: Option<String>,
    /// The upstream model.
    pub model: Option<String>,
    /// `completed`, `incomplete`, `failed`, `in_progress`, …
    pub status: Option<String>,
    /// The output items, in order.
    #[serde(deserialize_with = "null_as_default")]
    pub output: Vec<OutputItem>,
    /// Why the response is incomplete.
    pub incomplete_details: Option<IncompleteDetails>,
    /// The error of a failed response.
    pub error: Option<Value>,
    /// Token usage (absent while in progress).
    pub usage: Option<ResponseUsage>,
}

/// `incomplete_details`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct IncompleteDetails {
    /// `max_output_tokens` or `content_filter`.
    pub reason: Option<String>,
}

/// One output item.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    /// An assistant message: text and refusal parts.
    Message {
        /// `msg_…`.
        #[serde(default)]
        id: Option<String>,
        /// The parts.
        #[serde(default, deserialize_with = "null_as_default")]
        content: Vec<OutputContent>,
    },
    /// A call of a function tool.
    FunctionCall {
        /// The item id (`fc_…`), distinct from the call id.
        #[serde(default)]
        id: Option<String>,
        /// The call id (`call_…`) the tool result must name.
        #[serde(default)]
        call_id: Option<String>,
        /// The function name.
        #[serde(default)]
        name: Option<String>,
        /// The arguments as JSON text (an object from some servers, re-serialized).
        #[serde(default, deserialize_with = "arguments_text")]
        arguments: Option<String>,
    },
    /// The model's reasoning: a summary and, with `include: ["reasoning.encrypted_content"]`,
    /// the encrypted chain of thought to hand back next turn.
    Reasoning {
        /// `rs_…`.
        #[serde(default)]
        id: Option<String>,
        /// Summary parts.
        #[serde(default, deserialize_with = "null_as_default")]
        summary: Vec<TextPart>,
        /// Raw reasoning text (some servers, e.g. open-weight models behind vLLM).
        #[serde(default, deserialize_with = "null_as_default")]
        content: Vec<TextPart>,
        /// The encrypted reasoning.
        #[serde(default)]
        encrypted_content: Option<String>,
    },
    /// Any other item (web search calls, MCP calls, …), which has no Anthropic equivalent.
    #[serde(other)]
    Other,
}

impl OutputItem {
    /// The reasoning text of a reasoning item: its summary parts joined by blank lines, or
    /// its raw reasoning text when it has no summary.
    pub fn reasoning_text(&self) -> String {
        match self {
            Self::Reasoning {
                summary, content, ..
            } => {
                let parts = if summary.is_empty() { content } else { summary };
                let texts: Vec<&str> = parts.iter().map(|part| part.text.as_str()).collect();
                texts.join("\n\n")
            }
            _ => String::new(),
        }
    }
}

/// A part of a message item.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputContent {
    /// Text.
    OutputText {
        /// The text.
        #[serde(default)]
        text: String,
    },
    /// A refusal.
    Refusal {
        /// Why the model refused.
        #[serde(default)]
        refusal: String,
    },
    /// Any other part.
    #[serde(other)]
    Other,
}

/// A `{type, text}` part (`summary_text`, `reasoning_text`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TextPart {
    /// The text.
    pub text: String,
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
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StreamEvent {
    /// The event type; when absent, the SSE `event:` name is used.
    pub r#type: Option<String>,
    /// `response.created` / `in_progress` / `completed` / `incomplete` / `failed`.
    pub response: Option<Response>,
    /// `response.output_item.added` / `done`.
    pub item: Option<OutputItem>,
    /// The output item an event is about.
    pub output_index: Option<u64>,
    /// The id of the output item an event is about.
    pub item_id: Option<String>,
    /// A text, refusal, summary or arguments fragment.
    pub delta: Option<String>,
    /// Which summary part of a reasoning item a summary fragment belongs to.
    pub summary_index: Option<u64>,
    /// `response.function_call_arguments.done`: the whole arguments.
    pub arguments: Option<String>,
    /// `error` events: the message.
    pub message: Option<String>,
    /// `error` events: the code.
    pub code: Option<Value>,
    /// An error object some servers nest instead.
    pub error: Option<Value>,
}

fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Accepts integers, floats, numeric strings and null (as 0) for token counts.
fn lenient_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .unwrap_or(0),
        Value::String(s) => s.trim().parse().unwrap_or(0),
        _ => 0,
    })
}

/// Accepts `arguments` as JSON text (the standard) or as an object.
fn arguments_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    })
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

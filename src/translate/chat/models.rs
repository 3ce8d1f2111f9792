//! Wire types for the parts of both APIs this crate reads or writes.
//!
//! OpenAI-side types are **lenient** (SPEC §20): every field is optional or defaulted, numbers
//! may be `null`, `arguments` may be a string or an object, and unknown fields are ignored, so
//! a backend that leaves out `object`, `created` or `total_tokens`, or sends an integer
//! `error.code`, still parses. Anthropic-side types are exact: they are what clients validate.
//!
//! ```
//! use tower_llm_bridge::translate::models::ChatCompletion;
//!
//! let completion: ChatCompletion = serde_json::from_str(
//!     r#"{"choices":[{"message":{"content":"hi"},"finish_reason":"stop"}],
//!         "usage":{"prompt_tokens":10,"completion_tokens":null}}"#,
//! ).unwrap();
//! assert_eq!(completion.choices[0].message.content.as_deref(), Some("hi"));
//! let usage = completion.usage.unwrap_or_default().to_anthropic();
//! assert_eq!((usage.input_tokens, usage.output_tokens), (10, 0));
//! ```

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use crate::translate::lenient::{arguments_text, borrowed, lenient_u64, null_as_default};

// ---------------------------------------------------------------------------------------------
// OpenAI responses (read, borrowing from the upstream bytes)
// ---------------------------------------------------------------------------------------------

/// A non-streaming `chat.completion` response. Its strings borrow from the body they were
/// read from (copied only when the upstream escaped something in them); the upstream's `id`,
/// `model`, `created` and the like are never read, so they are skipped.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ChatCompletion<'a> {
    /// The choices; only the first is used.
    #[serde(borrow, deserialize_with = "null_as_default")]
    pub choices: Vec<Choice<'a>>,
    /// Token usage, when the backend reports it.
    pub usage: Option<Usage>,
}

/// One choice of a non-streaming completion.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Choice<'a> {
    /// The assistant message.
    #[serde(borrow, deserialize_with = "null_as_default")]
    pub message: AssistantMessage<'a>,
    /// Why generation stopped (`stop`, `length`, `tool_calls`, `content_filter`, …).
    #[serde(borrow, deserialize_with = "borrowed")]
    pub finish_reason: Option<Cow<'a, str>>,
    /// vLLM: the stop string that matched (a string) or the stop token id (a number).
    pub stop_reason: Option<Value>,
    /// SGLang: the stop string or token that matched.
    pub matched_stop: Option<Value>,
}

impl Choice<'_> {
    /// The stop string the upstream says matched, if it says so as a string.
    pub fn matched_stop_sequence(&self) -> Option<&str> {
        matched_stop(self.stop_reason.as_ref(), self.matched_stop.as_ref())
    }
}

/// The assistant message of a completion.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct AssistantMessage<'a> {
    /// The text.
    #[serde(borrow, deserialize_with = "borrowed")]
    pub content: Option<Cow<'a, str>>,
    /// Reasoning text (DeepSeek, vLLM, SGLang).
    #[serde(borrow, deserialize_with = "borrowed")]
    pub reasoning_content: Option<Cow<'a, str>>,
    /// Reasoning text (OpenRouter, Ollama).
    #[serde(borrow, deserialize_with = "borrowed")]
    pub reasoning: Option<Cow<'a, str>>,
    /// A refusal message.
    #[serde(borrow, deserialize_with = "borrowed")]
    pub refusal: Option<Cow<'a, str>>,
    /// Tool calls.
    #[serde(borrow, deserialize_with = "null_as_default")]
    pub tool_calls: Vec<ToolCall<'a>>,
    /// The legacy single function call.
    #[serde(borrow)]
    pub function_call: Option<FunctionCall<'a>>,
}

impl AssistantMessage<'_> {
    /// The reasoning text under either of its names.
    pub fn reasoning_text(&self) -> Option<&str> {
        self.reasoning_content
            .as_deref()
            .or(self.reasoning.as_deref())
            .filter(|text| !text.is_empty())
    }
}

/// A tool call, whole (in a completion) or a fragment (in a chunk).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ToolCall<'a> {
    /// Position among the parallel calls (streaming uses it to join fragments).
    pub index: Option<u32>,
    /// The call id (`call_…`); may be absent or `""` on continuation fragments.
    #[serde(borrow, deserialize_with = "borrowed")]
    pub id: Option<Cow<'a, str>>,
    /// The function name and arguments.
    #[serde(borrow, deserialize_with = "null_as_default")]
    pub function: FunctionCall<'a>,
}

/// A function name and its JSON arguments (as text).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct FunctionCall<'a> {
    /// The function name.
    #[serde(borrow, deserialize_with = "borrowed")]
    pub name: Option<Cow<'a, str>>,
    /// The arguments as JSON text; a backend that sends an object gets it re-serialized.
    #[serde(borrow, deserialize_with = "arguments_text")]
    pub arguments: Option<Cow<'a, str>>,
}

/// Token usage as OpenAI-compatible backends report it.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct Usage {
    /// Prompt tokens, cached ones included.
    #[serde(deserialize_with = "lenient_u64")]
    pub prompt_tokens: u64,
    /// Generated tokens.
    #[serde(deserialize_with = "lenient_u64")]
    pub completion_tokens: u64,
    /// Details of the prompt tokens (OpenAI: `cached_tokens`).
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    /// DeepSeek's name for cached prompt tokens.
    #[serde(deserialize_with = "lenient_u64")]
    pub prompt_cache_hit_tokens: u64,
}

/// The `prompt_tokens_details` object.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct PromptTokensDetails {
    /// Prompt tokens served from the backend's prompt cache.
    #[serde(deserialize_with = "lenient_u64")]
    pub cached_tokens: u64,
}

impl Usage {
    /// Anthropic usage (SPEC §20): `input_tokens` excludes cached tokens, which are reported
    /// as `cache_read_input_tokens`, so no token is counted twice.
    ///
    /// ```
    /// # use tower_llm_bridge::translate::models::Usage;
    /// let usage: Usage = serde_json::from_str(
    ///     r#"{"prompt_tokens":100,"completion_tokens":7,"prompt_tokens_details":{"cached_tokens":60}}"#,
    /// ).unwrap();
    /// let usage = usage.to_anthropic();
    /// assert_eq!((usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens), (40, 60, 7));
    /// ```
    pub fn to_anthropic(&self) -> AnthropicUsage {
        let cached = self
            .prompt_tokens_details
            .as_ref()
            .map_or(0, |details| details.cached_tokens)
            .max(self.prompt_cache_hit_tokens)
            .min(self.prompt_tokens);
        AnthropicUsage {
            input_tokens: self.prompt_tokens - cached,
            output_tokens: self.completion_tokens,
            cache_creation_input_tokens: 0,
            cache_read_input_tokens: cached,
        }
    }
}

/// One `chat.completion.chunk` of a stream, borrowing from the event's data; the chunk's
/// `id`, `model`, `created`, `logprobs` and the like are never read, so they are skipped.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ChatCompletionChunk<'a> {
    /// The choices; empty on the final usage chunk.
    #[serde(borrow, deserialize_with = "null_as_default")]
    pub choices: Vec<ChunkChoice<'a>>,
    /// Usage: on the last chunk with `stream_options.include_usage`, `null` before.
    pub usage: Option<Usage>,
    /// An error some servers send mid-stream as `data: {"error": {...}}`.
    pub error: Option<Value>,
}

/// One choice of a chunk.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ChunkChoice<'a> {
    /// The choice index (only 0 is used).
    pub index: Option<u32>,
    /// What this chunk adds.
    #[serde(borrow, deserialize_with = "null_as_default")]
    pub delta: Delta<'a>,
    /// Set on the chunk that finishes the choice.
    #[serde(borrow, deserialize_with = "borrowed")]
    pub finish_reason: Option<Cow<'a, str>>,
    /// vLLM: the stop string that matched.
    pub stop_reason: Option<Value>,
    /// SGLang: the stop string that matched.
    pub matched_stop: Option<Value>,
}

impl ChunkChoice<'_> {
    /// The stop string the upstream says matched, if it says so as a string.
    pub fn matched_stop_sequence(&self) -> Option<&str> {
        matched_stop(self.stop_reason.as_ref(), self.matched_stop.as_ref())
    }
}

/// The delta of a chunk choice.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Delta<'a> {
    /// Text fragment.
    #[serde(borrow, deserialize_with = "borrowed")]
    pub content: Option<Cow<'a, str>>,
    /// Reasoning fragment (DeepSeek, vLLM, SGLang).
    #[serde(borrow, deserialize_with = "borrowed")]
    pub reasoning_content: Option<Cow<'a, str>>,
    /// Reasoning fragment (OpenRouter, Ollama).
    #[serde(borrow, deserialize_with = "borrowed")]
    pub reasoning: Option<Cow<'a, str>>,
    /// Refusal fragment.
    #[serde(borrow, deserialize_with = "borrowed")]
    pub refusal: Option<Cow<'a, str>>,
    /// Tool call fragments.
    #[serde(borrow, deserialize_with = "null_as_default")]
    pub tool_calls: Vec<ToolCall<'a>>,
}

impl Delta<'_> {
    /// The reasoning fragment under either of its names.
    pub fn reasoning_text(&self) -> Option<&str> {
        self.reasoning_content
            .as_deref()
            .or(self.reasoning.as_deref())
    }
}

fn matched_stop<'a>(stop_reason: Option<&'a Value>, matched: Option<&'a Value>) -> Option<&'a str> {
    stop_reason
        .and_then(Value::as_str)
        .or_else(|| matched.and_then(Value::as_str))
}

// ---------------------------------------------------------------------------------------------
// Anthropic responses (written): shared with the other wires
// ---------------------------------------------------------------------------------------------

pub use crate::translate::anthropic::{AnthropicUsage, ContentBlock, MessageResponse, StopReason};
pub use crate::translate::upstream_error::OpenAiErrorBody;

impl StopReason {
    /// Maps an OpenAI `finish_reason` (SPEC §19). `stop` becomes `stop_sequence` when the
    /// upstream names a matched string that the client requested, or when the generated
    /// text ends with one of them; the matched sequence is returned alongside.
    ///
    /// ```
    /// # use tower_llm_bridge::translate::models::StopReason;
    /// let requested = ["END".to_string()];
    /// assert_eq!(StopReason::from_finish(Some("stop"), Some("END"), "", &requested),
    ///            (StopReason::StopSequence, Some("END".to_string())));
    /// assert_eq!(StopReason::from_finish(Some("stop"), None, "done", &requested),
    ///            (StopReason::EndTurn, None));
    /// assert_eq!(StopReason::from_finish(Some("length"), None, "", &[]).0, StopReason::MaxTokens);
    /// ```
    pub fn from_finish(
        finish_reason: Option<&str>,
        matched: Option<&str>,
        text_tail: &str,
        requested: &[String],
    ) -> (Self, Option<String>) {
        match finish_reason {
            Some("length") => (Self::MaxTokens, None),
            Some("tool_calls" | "function_call") => (Self::ToolUse, None),
            Some("content_filter") => (Self::Refusal, None),
            Some("stop") => {
                let reported = matched.and_then(|m| requested.iter().find(|r| r.as_str() == m));
                let trailing = || {
                    requested
                        .iter()
                        .filter(|r| !r.is_empty() && text_tail.ends_with(r.as_str()))
                        .max_by_key(|r| r.len())
                };
                match reported.or_else(trailing) {
                    Some(sequence) => (Self::StopSequence, Some(sequence.clone())),
                    None => (Self::EndTurn, None),
                }
            }
            _ => (Self::EndTurn, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_parser_accepts_sparse_and_odd_responses() {
        let completion: ChatCompletion = serde_json::from_str(
            r#"{"choices":[{"message":{"content":null,"tool_calls":[
                {"id":"c1","function":{"name":"f","arguments":{"a":1}}}]},
              "finish_reason":"tool_calls"}],
              "usage":{"prompt_tokens":"12","completion_tokens":3.0,"total_tokens":null},
              "error":{"code":500}}"#,
        )
        .expect("lenient");
        let call = &completion.choices[0].message.tool_calls[0];
        assert_eq!(call.function.arguments.as_deref(), Some(r#"{"a":1}"#));
        let usage = completion.usage.expect("usage");
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (12, 3));
    }

    #[test]
    fn null_collections_are_empty() {
        let chunk: ChatCompletionChunk =
            serde_json::from_str(r#"{"id":"","choices":null,"usage":null}"#).expect("chunk");
        assert!(chunk.choices.is_empty());
        let chunk: ChatCompletionChunk = serde_json::from_str(
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[]},"finish_reason":null}]}"#,
        )
        .expect("chunk");
        assert!(chunk.choices[0].delta.tool_calls.is_empty());
    }

    #[test]
    fn cached_tokens_are_not_counted_twice() {
        let usage: Usage = serde_json::from_str(
            r#"{"prompt_tokens":50,"completion_tokens":5,"prompt_cache_hit_tokens":20}"#,
        )
        .expect("usage");
        let usage = usage.to_anthropic();
        assert_eq!(usage.input_tokens + usage.cache_read_input_tokens, 50);
        assert_eq!(usage.cache_read_input_tokens, 20);
    }

    #[test]
    fn matched_stop_comes_from_vllm_or_sglang_fields() {
        let choice: Choice =
            serde_json::from_str(r#"{"finish_reason":"stop","stop_reason":"@@@"}"#).expect("c");
        assert_eq!(choice.matched_stop_sequence(), Some("@@@"));
        let choice: Choice = serde_json::from_str(
            r#"{"finish_reason":"stop","stop_reason":128001,"matched_stop":"END"}"#,
        )
        .expect("c");
        assert_eq!(choice.matched_stop_sequence(), Some("END"));
    }

    #[test]
    fn unrequested_matches_are_end_turn() {
        let requested = ["STOP".to_string()];
        assert_eq!(
            StopReason::from_finish(Some("stop"), Some("<|im_end|>"), "", &requested).0,
            StopReason::EndTurn
        );
        assert_eq!(
            StopReason::from_finish(Some("stop"), None, "answer STOP", &requested),
            (StopReason::StopSequence, Some("STOP".into()))
        );
        assert_eq!(
            StopReason::from_finish(Some("content_filter"), None, "", &[]).0,
            StopReason::Refusal
        );
        assert_eq!(
            StopReason::from_finish(Some("function_call"), None, "", &[]).0,
            StopReason::ToolUse
        );
        assert_eq!(
            StopReason::from_finish(Some("weird"), None, "", &[]).0,
            StopReason::EndTurn
        );
        assert_eq!(
            StopReason::from_finish(None, None, "", &[]).0,
            StopReason::EndTurn
        );
    }
}

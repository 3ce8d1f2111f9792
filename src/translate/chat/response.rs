//! OpenAI Chat Completions response → Anthropic Messages response (SPEC §2, §4), sans IO.
//!
//! ```
//! use tower_llm_bridge::translate::response::{translate_response, ResponseContext};
//!
//! let openai = br#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o",
//!     "choices":[{"index":0,"message":{"role":"assistant","content":"Hi!"},"finish_reason":"stop"}],
//!     "usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#;
//! let context = ResponseContext { client_model: "claude-sonnet-4-5", stop_sequences: &[] };
//! let translated = translate_response(openai, &context).unwrap();
//! let message: serde_json::Value = serde_json::from_slice(&translated.body).unwrap();
//! assert_eq!(message["type"], "message");
//! assert_eq!(message["model"], "claude-sonnet-4-5");
//! assert_eq!(message["content"][0], serde_json::json!({"type": "text", "text": "Hi!"}));
//! assert_eq!(message["stop_reason"], "end_turn");
//! assert_eq!(message["usage"]["input_tokens"], 12);
//! assert_eq!(message["usage"]["output_tokens"], 3);
//! ```

use std::borrow::Cow;

use bytes::Bytes;

use super::models::{AssistantMessage, ChatCompletion, ContentBlock, MessageResponse, StopReason};
use super::request::Degradations;
use crate::error::ApiError;
use crate::ids::new_id;
use crate::translate::lenient::from_slice_bounded;
use crate::translate::stop::cut_blocks;
use crate::translate::tool_args::tool_input;
pub use crate::translate::tool_args::{RAW_ARGUMENTS_KEY, parse_tool_arguments};
pub use crate::translate::upstream_error::translate_error;

/// What the response translation needs to know about the request.
#[derive(Clone, Copy, Debug)]
pub struct ResponseContext<'a> {
    /// The model name the client asked for, echoed back.
    pub client_model: &'a str,
    /// The stop sequences the client asked for.
    pub stop_sequences: &'a [String],
}

/// A translated response body and what could not be carried over.
#[derive(Debug)]
pub struct TranslatedResponse {
    /// The Anthropic `message` JSON.
    pub body: Bytes,
    /// What could not be carried over faithfully.
    pub degraded: Degradations,
    /// The answer's usage (as in the body), for an outer metrics layer.
    pub usage: crate::report::Usage,
}

/// Translates a successful OpenAI `chat.completion` body into an Anthropic `message`.
///
/// # Errors
/// `502 api_error` when the upstream sent something that is not a completion (not JSON,
/// truncated JSON, no choices).
pub fn translate_response(
    body: &[u8],
    context: &ResponseContext<'_>,
) -> Result<TranslatedResponse, ApiError> {
    // Borrowed from `body`: the answer's text goes out without being copied into owned types
    // first. Deep JSON is bounded like a request body (see `parsed`).
    let completion: ChatCompletion<'_> = from_slice_bounded(body).map_err(|err| {
        ApiError::bad_gateway(format!("upstream returned an invalid completion: {err}"))
    })?;
    let mut degraded = Degradations::default();
    let usage = completion.usage.unwrap_or_default().to_anthropic();
    let Some(choice) = completion.choices.first() else {
        return Err(ApiError::bad_gateway("upstream completion has no choices"));
    };
    let (stop_reason, stop_sequence) = StopReason::from_finish(
        choice.finish_reason.as_deref(),
        choice.matched_stop_sequence(),
        choice.message.content.as_deref().unwrap_or(""),
        context.stop_sequences,
    );
    let mut content = content_blocks(&choice.message, &mut degraded);
    // Stop sequences are enforced here too: the upstream took at most four of them, and some
    // servers leave the matched sequence in the text.
    let (mut stop_reason, stop_sequence) = match cut_blocks(&mut content, context.stop_sequences) {
        Some(sequence) => (StopReason::StopSequence, Some(sequence)),
        None => (stop_reason, stop_sequence),
    };
    let has_tool_use = content
        .iter()
        .any(|block| matches!(block, ContentBlock::ToolUse { .. }));
    // Some backends (Ollama, older vLLM) report `stop` when the turn ends in tool calls.
    if has_tool_use && matches!(stop_reason, StopReason::EndTurn) {
        stop_reason = StopReason::ToolUse;
    }
    let message = MessageResponse {
        id: new_id("msg_"),
        r#type: "message",
        role: "assistant",
        model: context.client_model,
        content,
        stop_reason: Some(stop_reason),
        stop_sequence: stop_sequence.filter(|_| stop_reason == StopReason::StopSequence),
        usage,
    };
    Ok(TranslatedResponse {
        body: message.to_bytes(body.len()),
        degraded,
        usage: usage.into(),
    })
}

/// The answer's blocks, borrowing their text (and tool inputs) from the parsed message.
fn content_blocks<'a>(
    message: &'a AssistantMessage<'_>,
    degraded: &mut Degradations,
) -> Vec<ContentBlock<'a>> {
    let mut blocks = Vec::new();
    if let Some(thinking) = message.reasoning_text() {
        blocks.push(ContentBlock::Thinking {
            thinking: Cow::Borrowed(thinking),
            signature: Cow::Borrowed(""),
        });
    }
    let texts = [&message.content, &message.refusal];
    for text in texts.into_iter().flatten().filter(|text| !text.is_empty()) {
        blocks.push(ContentBlock::Text {
            text: Cow::Borrowed(text),
        });
    }
    for function in message
        .tool_calls
        .iter()
        .map(|call| (call.id.as_deref(), &call.function))
        .chain(
            message
                .function_call
                .iter()
                .map(|function| (None, function)),
        )
    {
        let (id, function) = function;
        let Some(name) = function.name.as_deref().filter(|name| !name.is_empty()) else {
            degraded.add("tool_call_without_name");
            continue;
        };
        let (input, faithful) = tool_input(function.arguments.as_deref());
        if !faithful {
            degraded.add("tool_arguments");
        }
        blocks.push(ContentBlock::ToolUse {
            id: id
                .filter(|id| !id.is_empty())
                .map_or_else(|| Cow::Owned(new_id("toolu_")), Cow::Borrowed),
            name: Cow::Borrowed(name),
            input,
        });
    }
    blocks
}

#[cfg(test)]
mod tests;

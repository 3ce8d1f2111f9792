//! OpenAI Responses answer → Anthropic Messages answer, sans IO.
//!
//! ```
//! use tower_llm_bridge::translate::response::ResponseContext;
//! use tower_llm_bridge::translate::responses::response::translate_response;
//!
//! let answer = br#"{"id":"resp_1","object":"response","status":"completed","output":[
//!     {"type":"reasoning","id":"rs_1","summary":[{"type":"summary_text","text":"Think."}],
//!      "encrypted_content":"gAAA"},
//!     {"type":"function_call","id":"fc_1","call_id":"call_1","name":"ls","arguments":"{\"dir\":\"/\"}"}],
//!     "usage":{"input_tokens":50,"input_tokens_details":{"cached_tokens":20},"output_tokens":9}}"#;
//! let context = ResponseContext { client_model: "claude-sonnet-4-5", stop_sequences: &[] };
//! let translated = translate_response(answer, &context).unwrap();
//! let message: serde_json::Value = serde_json::from_slice(&translated.body).unwrap();
//! assert_eq!(message["content"][0]["type"], "thinking");
//! assert_eq!(message["content"][0]["thinking"], "Think.");
//! assert_eq!(message["content"][0]["signature"], "llm-bridge.responses.v1:rs_1:gAAA");
//! assert_eq!(message["content"][1]["id"], "call_1");
//! assert_eq!(message["content"][1]["input"]["dir"], "/");
//! assert_eq!(message["stop_reason"], "tool_use");
//! assert_eq!(message["usage"]["input_tokens"], 30);
//! assert_eq!(message["usage"]["cache_read_input_tokens"], 20);
//! ```

use std::borrow::Cow;

use serde_json::Value;

use super::encode_reasoning_signature;
use super::models::{OutputContent, OutputItem, Response};
use crate::error::ApiError;
use crate::ids::new_id;
use crate::translate::anthropic::{ContentBlock, MessageResponse, StopReason};
use crate::translate::chat::response::{ResponseContext, TranslatedResponse};
use crate::translate::degraded::Degradations;
use crate::translate::lenient::from_slice_bounded;
use crate::translate::stop::cut_blocks;
use crate::translate::tool_args::tool_input;
use crate::translate::upstream_error::upstream_error;

/// Translates a successful Responses answer into an Anthropic `message`.
///
/// # Errors
/// `502 api_error` when the upstream sent something that is not a response (not JSON,
/// truncated JSON) or a response whose `status` is `failed` (with the upstream's message;
/// an overloaded upstream is `529 overloaded_error`).
pub fn translate_response(
    body: &[u8],
    context: &ResponseContext<'_>,
) -> Result<TranslatedResponse, ApiError> {
    // serde would also read a struct from a JSON array.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::bad_gateway(
            "upstream returned an invalid response: not a JSON object",
        ));
    }
    // Borrowed from `body`; deep JSON is bounded like a request body (see `parsed`).
    let response: Response<'_> = from_slice_bounded(body).map_err(|err| {
        ApiError::bad_gateway(format!("upstream returned an invalid response: {err}"))
    })?;
    if let Some(err) = failure(response.status.as_deref(), response.error.as_ref()) {
        return Err(err);
    }
    let mut degraded = Degradations::default();
    let usage = response
        .usage
        .as_ref()
        .map(|u| u.to_anthropic())
        .unwrap_or_default();
    let mut refused = false;
    let mut content = Vec::with_capacity(response.output.len());
    for item in &response.output {
        item_blocks(item, &mut content, &mut refused, &mut degraded);
    }
    let stopped = cut_blocks(&mut content, context.stop_sequences);
    let stop_reason = if stopped.is_some() {
        StopReason::StopSequence
    } else {
        stop_reason(
            response.status.as_deref(),
            response
                .incomplete_details
                .as_ref()
                .and_then(|details| details.reason.as_deref()),
            refused,
            content
                .iter()
                .any(|block| matches!(block, ContentBlock::ToolUse { .. })),
        )
    };
    let message = MessageResponse {
        id: new_id("msg_"),
        r#type: "message",
        role: "assistant",
        model: context.client_model,
        content,
        stop_reason: Some(stop_reason),
        stop_sequence: stopped,
        usage,
    };
    Ok(TranslatedResponse {
        body: message.to_bytes(body.len()),
        degraded,
        usage: usage.into(),
    })
}

/// The error of a response that failed (`status: failed` or an `error` object), if it did.
pub(crate) fn failure(status: Option<&str>, error: Option<&Value>) -> Option<ApiError> {
    let error = error.filter(|error| !error.is_null());
    if status != Some("failed") && error.is_none() {
        return None;
    }
    Some(match error {
        Some(error) => upstream_error(error),
        None => ApiError::bad_gateway("the upstream response failed"),
    })
}

/// The stop reason of a finished response.
pub(crate) fn stop_reason(
    status: Option<&str>,
    incomplete_reason: Option<&str>,
    refused: bool,
    called_tools: bool,
) -> StopReason {
    match (status, incomplete_reason) {
        (Some("incomplete"), Some("max_output_tokens")) => StopReason::MaxTokens,
        (Some("incomplete"), Some("content_filter")) => StopReason::Refusal,
        _ if refused => StopReason::Refusal,
        _ if called_tools => StopReason::ToolUse,
        (Some("incomplete"), _) => StopReason::MaxTokens,
        _ => StopReason::EndTurn,
    }
}

/// The blocks of one output item, borrowing their text from it.
fn item_blocks<'a>(
    item: &'a OutputItem<'_>,
    blocks: &mut Vec<ContentBlock<'a>>,
    refused: &mut bool,
    degraded: &mut Degradations,
) {
    match item {
        OutputItem::Message { content, .. } => {
            for part in content {
                match part {
                    OutputContent::OutputText { text } if !text.is_empty() => {
                        blocks.push(ContentBlock::Text {
                            text: Cow::Borrowed(text),
                        });
                    }
                    OutputContent::Refusal { refusal } => {
                        *refused = true;
                        if !refusal.is_empty() {
                            blocks.push(ContentBlock::Text {
                                text: Cow::Borrowed(refusal),
                            });
                        }
                    }
                    OutputContent::OutputText { .. } => {}
                    OutputContent::Other => degraded.add("unknown_output"),
                }
            }
        }
        OutputItem::FunctionCall {
            call_id,
            id,
            name,
            arguments,
        } => {
            let Some(name) = name.as_deref().filter(|name| !name.is_empty()) else {
                degraded.add("tool_call_without_name");
                return;
            };
            let (input, faithful) = tool_input(arguments.as_deref());
            if !faithful {
                degraded.add("tool_arguments");
            }
            blocks.push(ContentBlock::ToolUse {
                id: call_id
                    .as_deref()
                    .or(id.as_deref())
                    .filter(|id| !id.is_empty())
                    .map_or_else(|| Cow::Owned(new_id("toolu_")), Cow::Borrowed),
                name: Cow::Borrowed(name),
                input,
            });
        }
        OutputItem::Reasoning {
            id,
            encrypted_content,
            ..
        } => {
            let thinking = item.reasoning_text();
            let signature = reasoning_signature(id.as_deref(), encrypted_content.as_deref());
            if thinking.is_empty() && signature.is_empty() {
                return;
            }
            blocks.push(ContentBlock::Thinking {
                thinking,
                signature: Cow::Owned(signature),
            });
        }
        OutputItem::Other => degraded.add("unknown_output"),
    }
}

/// Our signature for a reasoning item, or `""` when it carries nothing to hand back.
pub(crate) fn reasoning_signature(id: Option<&str>, encrypted_content: Option<&str>) -> String {
    match (id, encrypted_content) {
        (Some(id), Some(encrypted)) if !id.is_empty() && !encrypted.is_empty() => {
            encode_reasoning_signature(id, encrypted)
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests;

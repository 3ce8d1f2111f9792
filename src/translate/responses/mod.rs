//! The OpenAI Responses wire (`POST /v1/responses`): Anthropic Messages requests translated
//! into Responses requests, and Responses answers (JSON or SSE) translated back, with the
//! model's encrypted reasoning carried across turns.
//!
//! [`AnthropicToResponsesLayer`](super::AnthropicToResponsesLayer) puts the sans-IO parts
//! together: [`request`], [`response`], [`stream`] over the wire types of [`models`].
//!
//! # Reasoning across turns
//!
//! Reasoning models do best when the reasoning of earlier turns comes back with the next
//! request, so the chain of thought survives a tool loop. Requests are sent with `store:
//! false` and `include: ["reasoning.encrypted_content"]`; every reasoning item of an answer
//! becomes a `thinking` block whose text is the reasoning summary and whose `signature` is
//! [`REASONING_SIGNATURE_PREFIX`] followed by the item id and its encrypted content. Clients
//! keep thinking blocks verbatim in their history, so on the next request such a block turns
//! back into the same `reasoning` item. A thinking block from anywhere else (Anthropic's own,
//! a chat backend's) cannot be handed to this model: it is dropped and the response says so
//! in `x-llm-bridge-degraded: foreign_thinking`.
//!
//! # Mapping
//!
//! | Anthropic request | Responses request |
//! |---|---|
//! | `model` | the [`ModelMap`](super::ModelMap)'s model |
//! | `system` (string or text blocks) | `instructions` |
//! | `messages[]` (user, assistant) | `input[]` items, in order |
//! | user `text` / assistant `text` | `{role, content: [{type: input_text / output_text, text}]}` |
//! | `image` (base64 or url) | `{type: input_image, image_url: data: or https URL, detail: auto}`; other sources: a text placeholder, degrade `image_source` |
//! | `tool_use {id, name, input}` | `{type: function_call, call_id: id, name, arguments: JSON text}` |
//! | `tool_result {tool_use_id, content, is_error}` | `{type: function_call_output, call_id, output: text}` (`Error: ` prefix when `is_error`); its images lead the next user message, degrade `tool_result_image` |
//! | `thinking` with our signature | `{type: reasoning, id, summary: [{type: summary_text, text}], encrypted_content}` |
//! | other `thinking`, `redacted_thinking` | dropped, degrade `foreign_thinking` |
//! | `document` | a text placeholder, degrade `document` |
//! | `system` messages in the history | `{role: developer (reasoning models) or system, content}` |
//! | `tools[]` (client tools) | `{type: function, name, description, parameters, strict: false}`; server tools dropped, degrade `server_tool` |
//! | `tool_choice` auto / any / tool / none | `auto` / `required` / `{type: function, name}` / `none` (left out without tools) |
//! | `tool_choice.disable_parallel_tool_use` | `parallel_tool_calls: false` |
//! | `max_tokens` | `max_output_tokens`, capped per model, at least 16 |
//! | `thinking` / `output_config.effort` | `reasoning: {effort, summary: auto}` on reasoning models; otherwise dropped, degrade `thinking` |
//! | `temperature`, `top_p` | kept; dropped on reasoning models, degrade `temperature` / `top_p` |
//! | `top_k` | dropped, degrade `top_k` |
//! | `stop_sequences` | not sent: enforced by the proxy on the answer |
//! | `metadata.user_id` | `user` |
//! | `stream` | `stream` |
//! | `cache_control`, `citations` and other Anthropic-only fields | never sent |
//! | (always) | `store: false`, `include: ["reasoning.encrypted_content"]` |
//!
//! | Responses answer | Anthropic answer |
//! |---|---|
//! | `message` item: `output_text` / `refusal` parts | `text` blocks, in order |
//! | `function_call {call_id, name, arguments}` | `tool_use {id: call_id, name, input}` (arguments that are not a JSON object are kept under `_raw_arguments`, degrade `tool_arguments`) |
//! | `reasoning {id, summary, encrypted_content}` | `thinking {thinking: summary text, signature: ours}` |
//! | other items (web search calls, …) | dropped, degrade `unknown_output` |
//! | `status: completed` | `stop_reason: end_turn`, or `tool_use` after a function call |
//! | `status: incomplete`, `max_output_tokens` | `max_tokens` |
//! | `status: incomplete`, `content_filter`; a refusal part | `refusal` |
//! | a stop sequence in the text | the text cut before it, `stop_sequence` and the sequence |
//! | `usage {input_tokens, input_tokens_details.cached_tokens, output_tokens}` | `{input_tokens: input − cached, cache_read_input_tokens: cached, output_tokens}` |
//! | `status: failed`, `error` | the mapped Anthropic error |
//!
//! | Responses stream event | Anthropic stream events |
//! |---|---|
//! | `response.created` | `message_start`, `ping` |
//! | `response.output_item.added` | `content_block_start` (a message or reasoning item opens its block at its first text) |
//! | `response.output_text.delta`, `response.refusal.delta` | `text_delta` |
//! | `response.function_call_arguments.delta` | `input_json_delta` |
//! | `response.reasoning_summary_text.delta` (and `reasoning_text.delta`) | `thinking_delta` |
//! | `response.output_item.done` | `content_block_stop`; for a reasoning item first `signature_delta` with our signature |
//! | `response.completed` / `response.incomplete` | `message_delta` (stop reason, usage), `message_stop` |
//! | `response.failed`, `error`, a cut, an idle stall | `event: error`, never a `message_stop` |
//!
//! Blocks keep the order of their output items even when a server interleaves events of
//! several items: a later item's fragments wait until the items before it are done.
//!
//! ```
//! use tower_llm_bridge::translate::responses::{decode_reasoning_signature, encode_reasoning_signature};
//!
//! let signature = encode_reasoning_signature("rs_123", "gAAAAB...");
//! assert_eq!(decode_reasoning_signature(&signature), Some(("rs_123", "gAAAAB...")));
//! // Anthropic's own signatures are not ours.
//! assert_eq!(decode_reasoning_signature("EqQBCkgIARABGAIiQ..."), None);
//! ```

pub mod models;
pub mod request;
pub mod response;
pub mod stream;

/// The start of every `thinking` signature that carries a Responses reasoning item.
pub const REASONING_SIGNATURE_PREFIX: &str = "llm-bridge.responses.v1:";

/// The `signature` of a thinking block carrying reasoning item `id` and its encrypted content.
///
/// ```
/// use tower_llm_bridge::translate::responses::{encode_reasoning_signature, REASONING_SIGNATURE_PREFIX};
/// let signature = encode_reasoning_signature("rs_1", "enc");
/// assert_eq!(signature, format!("{REASONING_SIGNATURE_PREFIX}rs_1:enc"));
/// ```
pub fn encode_reasoning_signature(id: &str, encrypted_content: &str) -> String {
    let mut signature = String::with_capacity(
        REASONING_SIGNATURE_PREFIX.len() + id.len() + 1 + encrypted_content.len(),
    );
    signature.push_str(REASONING_SIGNATURE_PREFIX);
    signature.push_str(id);
    signature.push(':');
    signature.push_str(encrypted_content);
    signature
}

/// The reasoning item id and encrypted content a signature of ours carries; `None` for any
/// other signature (or one of ours without content).
///
/// ```
/// use tower_llm_bridge::translate::responses::decode_reasoning_signature;
/// assert_eq!(decode_reasoning_signature("llm-bridge.responses.v1:rs_9:abc"), Some(("rs_9", "abc")));
/// assert_eq!(decode_reasoning_signature("llm-bridge.responses.v1:rs_9:"), None);
/// assert_eq!(decode_reasoning_signature(""), None);
/// ```
pub fn decode_reasoning_signature(signature: &str) -> Option<(&str, &str)> {
    let (id, encrypted) = signature
        .strip_prefix(REASONING_SIGNATURE_PREFIX)?
        .split_once(':')?;
    (!id.is_empty() && !encrypted.is_empty()).then_some((id, encrypted))
}

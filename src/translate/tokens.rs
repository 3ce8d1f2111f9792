//! A local estimate of a request's input tokens, for `POST /v1/messages/count_tokens`.
//!
//! OpenAI-compatible backends have no count-tokens endpoint and the real tokenizer of the
//! mapped model is unknown here, so the estimate is a heuristic that needs no I/O and no
//! tokenizer tables: about four ASCII characters per token, one token per non-ASCII character
//! (CJK text is close to one token per character), a fixed overhead per message and per tool,
//! and a fixed cost per image or binary document. Clients use the number to decide when to
//! compact their context, so it errs on the high side rather than the low one.
//!
//! The request is validated like the real endpoint: `model` and `messages` are required,
//! `max_tokens` is **not** (clients call this endpoint with the body they are about to send,
//! minus `max_tokens`). Bad input is a `400 invalid_request_error` naming the field.
//!
//! ```
//! use serde_json::json;
//! use tower_llm_bridge::translate::tokens::estimate_input_tokens;
//!
//! let short = json!({"model": "claude-sonnet-4-5",
//!                    "messages": [{"role": "user", "content": "Hello"}]});
//! let long = json!({"model": "claude-sonnet-4-5",
//!                   "system": "You are terse.",
//!                   "messages": [{"role": "user", "content": "Hello ".repeat(100)}]});
//! let short = estimate_input_tokens(&short).unwrap();
//! let long = estimate_input_tokens(&long).unwrap();
//! assert!(short > 0 && long > short + 100);
//!
//! let err = estimate_input_tokens(&json!({"model": "m"})).unwrap_err();
//! assert_eq!(err.status(), 400);
//! assert_eq!(err.message(), "messages: field required");
//! ```

use serde_json::{Map, Value};

use super::anthropic::{MESSAGE_BLOCK_TYPES, TOOL_RESULT_BLOCK_TYPES};
use super::validate::check_block_type;
use crate::error::ApiError;

/// Tokens added for every message (role marker and turn separators).
pub const MESSAGE_OVERHEAD_TOKENS: u64 = 4;

/// Tokens added once per request (the prompt's framing).
pub const REQUEST_OVERHEAD_TOKENS: u64 = 3;

/// The fixed cost of one image. Anthropic bills about `width * height / 750` tokens and
/// downsizes images to about 1.15 megapixels, so a full-size image costs about 1,600 tokens.
pub const IMAGE_TOKENS: u64 = 1_600;

/// The fixed cost of one PDF (or other binary) document, whose pages are unknown here.
pub const DOCUMENT_TOKENS: u64 = 3_000;

/// Tokens added once when a request declares tools (the tool-use preamble the model receives).
pub const TOOLS_PREAMBLE_TOKENS: u64 = 300;

/// Tokens added for every tool definition, besides its name, description and schema.
pub const TOOL_OVERHEAD_TOKENS: u64 = 8;

/// Estimates the input tokens of an Anthropic Messages request body.
///
/// Counts `system` (string or text blocks), every message's content (text, images, documents,
/// `tool_use` names and inputs, `tool_result` contents, unknown blocks by their JSON size) and
/// `tools` (name, description, input schema). `thinking` blocks in the history are not counted:
/// they are not sent back to the model.
///
/// # Errors
/// A `400 invalid_request_error` naming the offending field when the body is not an object,
/// `model` or `messages` is missing or of the wrong type, `messages` is empty, or a message,
/// content block, `system` or `tools` entry has the wrong shape.
pub fn estimate_input_tokens(body: &Value) -> Result<u64, ApiError> {
    let Some(body) = body.as_object() else {
        return Err(ApiError::invalid_request(
            "request body must be a JSON object",
        ));
    };
    match body.get("model") {
        None | Some(Value::Null) => return Err(invalid("model: field required")),
        Some(Value::String(model)) if model.is_empty() => {
            return Err(invalid("model: must not be empty"));
        }
        Some(Value::String(_)) => {}
        Some(_) => return Err(invalid("model: must be a string")),
    }
    let messages = match body.get("messages") {
        None | Some(Value::Null) => return Err(invalid("messages: field required")),
        Some(Value::Array(messages)) => messages,
        Some(_) => return Err(invalid("messages: must be an array")),
    };
    if messages.is_empty() {
        return Err(invalid("messages: at least one message is required"));
    }

    let mut count = Count::default();
    count.tokens += REQUEST_OVERHEAD_TOKENS;
    match body.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => count.text(text),
        Some(Value::Array(blocks)) => {
            for (i, block) in blocks.iter().enumerate() {
                count.block(block, &["text"], &|| format!("system.{i}"))?;
            }
        }
        Some(_) => return Err(invalid("system: must be a string or an array of blocks")),
    }
    for (i, message) in messages.iter().enumerate() {
        count.message(message, i)?;
    }
    match body.get("tools") {
        None | Some(Value::Null) => {}
        Some(Value::Array(tools)) => {
            if !tools.is_empty() {
                count.tokens += TOOLS_PREAMBLE_TOKENS;
            }
            for (i, tool) in tools.iter().enumerate() {
                count.tool(tool, i)?;
            }
        }
        Some(_) => return Err(invalid("tools: must be an array")),
    }
    Ok(count.total())
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::invalid_request(message)
}

/// A running total: whole tokens plus text weight in quarter tokens (one per ASCII character,
/// four per other character), rounded up once at the end.
#[derive(Default)]
struct Count {
    tokens: u64,
    quarters: u64,
}

impl Count {
    fn total(&self) -> u64 {
        self.tokens.saturating_add(self.quarters.div_ceil(4))
    }

    fn text(&mut self, text: &str) {
        let mut quarters = 0u64;
        for &byte in text.as_bytes() {
            if byte.is_ascii() {
                quarters += 1;
            } else if byte & 0xC0 != 0x80 {
                // The first byte of a multi-byte character; continuation bytes add nothing.
                quarters += 4;
            }
        }
        self.quarters = self.quarters.saturating_add(quarters);
    }

    /// Weighs a JSON value by the length of its compact serialization, without serializing.
    fn json(&mut self, value: &Value) {
        match value {
            Value::Null => self.quarters += 4,
            Value::Bool(b) => self.quarters += if *b { 4 } else { 5 },
            Value::Number(n) => self.quarters += number_len(n),
            Value::String(s) => {
                self.quarters += 2;
                self.text(s);
            }
            Value::Array(items) => {
                self.quarters += 2 + items.len().saturating_sub(1) as u64;
                for item in items {
                    self.json(item);
                }
            }
            Value::Object(map) => self.object(map),
        }
    }

    fn object(&mut self, map: &Map<String, Value>) {
        self.quarters += 2 + map.len().saturating_sub(1) as u64;
        for (key, value) in map {
            self.quarters += 3;
            self.text(key);
            self.json(value);
        }
    }

    fn message(&mut self, message: &Value, i: usize) -> Result<(), ApiError> {
        let Some(message) = message.as_object() else {
            return Err(invalid(format!("messages.{i}: must be an object")));
        };
        match message.get("role") {
            Some(Value::String(role))
                if matches!(role.as_str(), "user" | "assistant" | "system") => {}
            None | Some(Value::Null) => {
                return Err(invalid(format!("messages.{i}.role: field required")));
            }
            Some(_) => {
                return Err(invalid(format!(
                    "messages.{i}.role: must be one of \"user\", \"assistant\""
                )));
            }
        }
        self.tokens += MESSAGE_OVERHEAD_TOKENS;
        match message.get("content") {
            None | Some(Value::Null) => {
                Err(invalid(format!("messages.{i}.content: field required")))
            }
            Some(Value::String(text)) => {
                self.text(text);
                Ok(())
            }
            Some(Value::Array(blocks)) => {
                for (j, block) in blocks.iter().enumerate() {
                    self.block(block, MESSAGE_BLOCK_TYPES, &|| {
                        format!("messages.{i}.content.{j}")
                    })?;
                }
                Ok(())
            }
            Some(_) => Err(invalid(format!(
                "messages.{i}.content: must be a string or an array of blocks"
            ))),
        }
    }

    /// Counts one content block; `at` names it in errors (built only on the error path).
    fn block(
        &mut self,
        block: &Value,
        known: &[&str],
        at: &dyn Fn() -> String,
    ) -> Result<(), ApiError> {
        let Some(block) = block.as_object() else {
            return Err(invalid(format!("{}: must be an object", at())));
        };
        let kind = match block.get("type") {
            Some(Value::String(kind)) => kind.as_str(),
            None | Some(Value::Null) => {
                return Err(invalid(format!("{}.type: field required", at())));
            }
            Some(_) => return Err(invalid(format!("{}.type: must be a string", at()))),
        };
        // A type Anthropic does not know is a 400 there too (count_tokens validates as
        // messages does).
        if let Err(problem) = check_block_type(kind, known) {
            return Err(invalid(format!("{}.type: {problem}", at())));
        }
        match kind {
            "text" => match block.get("text") {
                Some(Value::String(text)) => self.text(text),
                None | Some(Value::Null) => {
                    return Err(invalid(format!("{}.text: field required", at())));
                }
                Some(_) => return Err(invalid(format!("{}.text: must be a string", at()))),
            },
            "image" => self.tokens += IMAGE_TOKENS,
            "document" => self.document(block),
            "tool_use" | "server_tool_use" => {
                if let Some(Value::String(name)) = block.get("name") {
                    self.text(name);
                }
                if let Some(input) = block.get("input") {
                    self.json(input);
                }
            }
            "tool_result" => match block.get("content") {
                None | Some(Value::Null) => {}
                Some(Value::String(text)) => self.text(text),
                Some(Value::Array(parts)) => {
                    for (k, part) in parts.iter().enumerate() {
                        self.block(part, TOOL_RESULT_BLOCK_TYPES, &|| {
                            format!("{}.content.{k}", at())
                        })?;
                    }
                }
                Some(_) => {
                    return Err(invalid(format!(
                        "{}.content: must be a string or an array of blocks",
                        at()
                    )));
                }
            },
            // Not sent back to the model (dropped from the history by the translation).
            "thinking" | "redacted_thinking" => {}
            // Server tool results, search results and block types this code does not know:
            // weigh them by their JSON size, minus bookkeeping that is not model input.
            _ => {
                for (key, value) in block {
                    if key != "type" && key != "cache_control" && key != "citations" {
                        self.text(key);
                        self.json(value);
                    }
                }
            }
        }
        Ok(())
    }

    fn document(&mut self, block: &Map<String, Value>) {
        for key in ["title", "context"] {
            if let Some(Value::String(text)) = block.get(key) {
                self.text(text);
            }
        }
        let source = block.get("source").and_then(Value::as_object);
        match source.and_then(|s| s.get("type")).and_then(Value::as_str) {
            Some("text") => {
                if let Some(Value::String(data)) = source.and_then(|s| s.get("data")) {
                    self.text(data);
                }
            }
            Some("content") => match source.and_then(|s| s.get("content")) {
                Some(Value::String(text)) => self.text(text),
                Some(Value::Array(parts)) => {
                    for part in parts {
                        match part.get("type").and_then(Value::as_str) {
                            Some("image") => self.tokens += IMAGE_TOKENS,
                            _ => {
                                if let Some(Value::String(text)) = part.get("text") {
                                    self.text(text);
                                }
                            }
                        }
                    }
                }
                _ => {}
            },
            _ => self.tokens += DOCUMENT_TOKENS,
        }
    }

    fn tool(&mut self, tool: &Value, i: usize) -> Result<(), ApiError> {
        let Some(tool) = tool.as_object() else {
            return Err(invalid(format!("tools.{i}: must be an object")));
        };
        match tool.get("name") {
            Some(Value::String(name)) => self.text(name),
            None | Some(Value::Null) => {
                return Err(invalid(format!("tools.{i}.name: field required")));
            }
            Some(_) => return Err(invalid(format!("tools.{i}.name: must be a string"))),
        }
        self.tokens += TOOL_OVERHEAD_TOKENS;
        if let Some(Value::String(description)) = tool.get("description") {
            self.text(description);
        }
        if let Some(schema) = tool.get("input_schema") {
            self.json(schema);
        }
        Ok(())
    }
}

/// The length of a number's JSON text, without formatting it.
fn number_len(n: &serde_json::Number) -> u64 {
    fn digits(mut v: u64) -> u64 {
        let mut len = 1;
        while v >= 10 {
            v /= 10;
            len += 1;
        }
        len
    }
    if let Some(v) = n.as_u64() {
        digits(v)
    } else if let Some(v) = n.as_i64() {
        1 + digits(v.unsigned_abs())
    } else {
        // Floats: a typical short decimal such as 0.25 or 1e-6.
        6
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn count(body: Value) -> u64 {
        estimate_input_tokens(&body).expect("valid request")
    }

    fn error(body: Value) -> String {
        let err = estimate_input_tokens(&body).expect_err("invalid request");
        assert_eq!(err.status(), 400);
        assert_eq!(err.error_type(), "invalid_request_error");
        err.message().to_owned()
    }

    fn user(content: Value) -> Value {
        json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": content}]})
    }

    #[test]
    fn plain_text_is_about_four_characters_per_token() {
        let base = count(user(json!("")));
        assert_eq!(
            base,
            REQUEST_OVERHEAD_TOKENS + MESSAGE_OVERHEAD_TOKENS,
            "an empty message costs only the overheads"
        );
        assert_eq!(count(user(json!("a".repeat(400)))), base + 100);
        assert_eq!(count(user(json!("abcde"))), base + 2, "rounds up");
    }

    #[test]
    fn non_ascii_characters_weigh_a_token_each() {
        let base = count(user(json!("")));
        // Thirteen CJK characters (three UTF-8 bytes each).
        assert_eq!(count(user(json!("日本語のテキストです。はい"))), base + 13);
        assert_eq!(count(user(json!("é"))), base + 1);
    }

    #[test]
    fn does_not_need_max_tokens_and_ignores_it() {
        let mut with = user(json!("hi there"));
        with["max_tokens"] = json!(1024);
        assert_eq!(count(with), count(user(json!("hi there"))));
    }

    #[test]
    fn system_string_and_blocks_count_alike() {
        let mut string = user(json!("hi"));
        string["system"] = json!("x".repeat(80));
        let mut blocks = user(json!("hi"));
        blocks["system"] = json!([
            {"type": "text", "text": "x".repeat(40), "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "x".repeat(40)}
        ]);
        let base = count(user(json!("hi")));
        assert_eq!(count(string), base + 20);
        assert_eq!(count(blocks), base + 20);
    }

    #[test]
    fn every_message_adds_its_overhead() {
        let one = count(user(json!("hi")));
        let three = count(json!({"model": "m", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": ""}
        ]}));
        assert_eq!(three, one + 2 * MESSAGE_OVERHEAD_TOKENS);
    }

    #[test]
    fn images_and_documents_have_fixed_costs() {
        let base = count(user(json!([])));
        let image = json!({"type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "A".repeat(100_000)}});
        assert_eq!(
            count(user(json!([image.clone(), image]))),
            base + 2 * IMAGE_TOKENS
        );
        let pdf = json!({"type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}});
        assert_eq!(count(user(json!([pdf]))), base + DOCUMENT_TOKENS);
        let text_doc = json!({"type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "y".repeat(40)}});
        assert_eq!(count(user(json!([text_doc]))), base + 10);
    }

    #[test]
    fn tool_use_input_and_tool_results_are_counted() {
        let base = count(json!({"model": "m", "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": ""}]}
        ]}));
        let full = count(json!({"model": "m", "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                 "input": {"city": "z".repeat(400)}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1",
                 "content": [{"type": "text", "text": "w".repeat(400)},
                             {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}]}]}
        ]}));
        // 400 characters of input (plus JSON punctuation), 400 of result text, one image.
        assert!(full >= base + 100 + 100 + IMAGE_TOKENS, "{full} vs {base}");
        assert!(
            full <= base + 100 + 100 + IMAGE_TOKENS + 5,
            "{full} vs {base}"
        );
    }

    #[test]
    fn tools_count_name_description_and_schema() {
        let base = count(user(json!("hi")));
        let mut with_tools = user(json!("hi"));
        with_tools["tools"] = json!([{
            "name": "n".repeat(8),
            "description": "d".repeat(400),
            "input_schema": {"type": "object", "properties": {"p": {"type": "string",
                "description": "s".repeat(400)}}}
        }]);
        let got = count(with_tools);
        let floor = base + TOOLS_PREAMBLE_TOKENS + TOOL_OVERHEAD_TOKENS + 2 + 100 + 100;
        assert!(got >= floor && got <= floor + 20, "{got} vs {floor}");
        let mut empty = user(json!("hi"));
        empty["tools"] = json!([]);
        assert_eq!(count(empty), base, "no preamble without tools");
    }

    #[test]
    fn history_thinking_is_not_counted() {
        let plain = count(json!({"model": "m", "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": [{"type": "text", "text": "a"}]}]}));
        let thinking = count(json!({"model": "m", "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "t".repeat(4000), "signature": "sig"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "a"}]}]}));
        assert_eq!(plain, thinking);
    }

    #[test]
    fn block_types_anthropic_does_not_know_are_a_400() {
        let message = error(user(
            json!([{"type": "text", "text": "a"}, {"type": "bogus"}]),
        ));
        assert!(
            message.starts_with("messages.0.content.1.type: Input tag 'bogus' found using 'type'"),
            "{message}"
        );
        let message = error(user(json!([{"type": "tool_result", "tool_use_id": "t",
            "content": [{"type": "thinking", "thinking": "no"}]}])));
        assert!(
            message.starts_with("messages.0.content.0.content.0.type: Input tag 'thinking'"),
            "{message}"
        );
        let message = error(json!({"model": "m", "system": [{"type": "image"}],
            "messages": [{"role": "user", "content": "x"}]}));
        assert!(
            message.starts_with("system.0.type: Input tag 'image'"),
            "{message}"
        );
    }

    #[test]
    fn unknown_blocks_are_weighed_by_their_json() {
        let base = count(user(json!([])));
        let got = count(user(json!([{"type": "web_search_tool_result",
            "tool_use_id": "srvtoolu_1", "content": [{"title": "t".repeat(400)}]}])));
        assert!(got > base + 100, "{got} vs {base}");
    }

    #[test]
    fn accepts_what_claude_code_sends() {
        let body = json!({
            "model": "claude-sonnet-4-5-20250929",
            "system": [{"type": "text", "text": "You are Claude Code.",
                        "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "system", "content": "extra system"},
                {"role": "user", "content": [{"type": "text", "text": "hi",
                    "cache_control": {"type": "ephemeral"}}]}
            ],
            "tools": [{"name": "Bash", "description": "run", "input_schema": {"type": "object"}},
                      {"type": "web_search_20250305", "name": "web_search", "max_uses": 5}],
            "thinking": {"type": "adaptive"},
            "context_management": {"edits": []},
            "output_config": {"effort": "high"}
        });
        assert!(count(body) > TOOLS_PREAMBLE_TOKENS);
    }

    #[test]
    fn bad_input_names_the_field() {
        assert_eq!(error(json!([1])), "request body must be a JSON object");
        assert_eq!(error(json!({"messages": []})), "model: field required");
        assert_eq!(
            error(json!({"model": 7, "messages": []})),
            "model: must be a string"
        );
        assert_eq!(error(json!({"model": "m"})), "messages: field required");
        assert_eq!(
            error(json!({"model": "m", "messages": {}})),
            "messages: must be an array"
        );
        assert_eq!(
            error(json!({"model": "m", "messages": []})),
            "messages: at least one message is required"
        );
        assert_eq!(
            error(json!({"model": "m", "messages": ["hi"]})),
            "messages.0: must be an object"
        );
        assert_eq!(
            error(json!({"model": "m", "messages": [{"content": "x"}]})),
            "messages.0.role: field required"
        );
        assert_eq!(
            error(json!({"model": "m", "messages": [{"role": "bot", "content": "x"}]})),
            "messages.0.role: must be one of \"user\", \"assistant\""
        );
        assert_eq!(
            error(json!({"model": "m", "messages": [{"role": "user"}]})),
            "messages.0.content: field required"
        );
        assert_eq!(
            error(json!({"model": "m", "messages": [{"role": "user", "content": 5}]})),
            "messages.0.content: must be a string or an array of blocks"
        );
        assert_eq!(
            error(json!({"model": "m", "messages": [
                {"role": "user", "content": "ok"},
                {"role": "user", "content": [{"type": "text", "text": "ok"}, {"text": "x"}]}]})),
            "messages.1.content.1.type: field required"
        );
        assert_eq!(
            error(
                json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text"}]}]}]})
            ),
            "messages.0.content.0.content.0.text: field required"
        );
        let mut bad_system = user(json!("x"));
        bad_system["system"] = json!(3);
        assert_eq!(
            error(bad_system),
            "system: must be a string or an array of blocks"
        );
        let mut bad_tool = user(json!("x"));
        bad_tool["tools"] = json!([{"description": "no name"}]);
        assert_eq!(error(bad_tool), "tools.0.name: field required");
    }

    #[test]
    fn number_lengths_match_serialization() {
        for v in [
            json!(0),
            json!(9),
            json!(10),
            json!(12345),
            json!(-7),
            json!(-1000),
        ] {
            let n = v.as_number().expect("number");
            assert_eq!(number_len(n), v.to_string().len() as u64, "{v}");
        }
    }

    #[test]
    fn json_weight_matches_compact_serialization_for_ascii() {
        let value = json!({"a": [1, true, null, "xy"], "bcd": {"e": false}, "f": []});
        let mut count = Count::default();
        count.json(&value);
        assert_eq!(count.quarters, value.to_string().len() as u64);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_arbitrary_shapes(
            role in proptest::prop_oneof![
                proptest::strategy::Just(json!("user")), proptest::strategy::Just(json!(1))],
            text in ".{0,40}",
            kind in "[a-z_]{0,12}",
            nest in 0usize..3,
        ) {
            let mut block = json!({"type": kind, "text": text.clone(), "content": text.clone()});
            for _ in 0..nest {
                block = json!({"type": "tool_result", "content": [block]});
            }
            let body = json!({"model": "m", "messages": [{"role": role, "content": [block]}],
                              "system": [{"type": "text", "text": text}]});
            let _ = estimate_input_tokens(&body);
        }
    }
}

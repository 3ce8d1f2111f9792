//! Tool-call arguments: parsing the text an upstream sent into the object Anthropic's `input`
//! must be, and tracking whether streamed argument text is complete.

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::translate::anthropic::ToolInput;

/// The key under which a tool call's arguments are kept when they are not a JSON object.
pub const RAW_ARGUMENTS_KEY: &str = "_raw_arguments";

/// Parses tool-call arguments into the object Anthropic's `input` must be (SPEC §18).
///
/// Empty (or `null`) arguments are `{}`; arguments wrapped in a markdown code fence are
/// unwrapped; anything that is still not a JSON object is kept as text under
/// [`RAW_ARGUMENTS_KEY`], and the second value is `false`.
///
/// ```
/// use serde_json::json;
/// use tower_llm_bridge::translate::response::parse_tool_arguments;
///
/// assert_eq!(parse_tool_arguments(Some("")), (json!({}), true));
/// assert_eq!(parse_tool_arguments(Some("```json\n{\"a\":1}\n```")), (json!({"a": 1}), true));
/// assert_eq!(parse_tool_arguments(Some("{\"a\":")), (json!({"_raw_arguments": "{\"a\":"}), false));
/// ```
pub fn parse_tool_arguments(arguments: Option<&str>) -> (Value, bool) {
    let (input, faithful) = tool_input(arguments);
    (input.to_value(), faithful)
}

/// [`parse_tool_arguments`] without building the object: arguments that are a JSON object are
/// checked and kept as the upstream's text, to be written out verbatim.
pub(crate) fn tool_input(arguments: Option<&str>) -> (ToolInput<'_>, bool) {
    let raw = arguments.unwrap_or("");
    let trimmed = strip_code_fence(raw.trim());
    if trimmed.is_empty() || trimmed == "null" {
        return (ToolInput::Value(Value::Object(Map::new())), true);
    }
    // Arguments for a deep schema are as deep: bounded like a request body, not at 128.
    match crate::parsed::from_slice_max_depth::<&RawValue>(
        trimmed.as_bytes(),
        crate::parsed::DEFAULT_MAX_JSON_DEPTH,
    ) {
        Ok(object) if object.get().starts_with('{') => (ToolInput::Raw(object), true),
        _ => {
            let mut kept = Map::new();
            kept.insert(RAW_ARGUMENTS_KEY.to_owned(), Value::String(raw.to_owned()));
            (ToolInput::Value(Value::Object(kept)), false)
        }
    }
}

fn strip_code_fence(text: &str) -> &str {
    let Some(rest) = text.strip_prefix("```") else {
        return text;
    };
    let Some(rest) = rest.strip_suffix("```") else {
        return text;
    };
    // Drop the info string (`json`) on the opening line.
    match rest.split_once('\n') {
        Some((info, body)) if !info.contains('{') && !info.contains('[') => body.trim(),
        _ => rest.trim(),
    }
}

/// Tracks whether streamed JSON text has formed one complete object or array, without
/// storing it: nesting depth outside strings, and string/escape state.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct JsonScan {
    depth: u32,
    in_string: bool,
    escaped: bool,
    closed: bool,
}

impl JsonScan {
    pub(crate) fn feed(&mut self, text: &str) {
        for &byte in text.as_bytes() {
            if self.in_string {
                match byte {
                    _ if self.escaped => self.escaped = false,
                    b'\\' => self.escaped = true,
                    b'"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match byte {
                b'"' => self.in_string = true,
                b'{' | b'[' => {
                    self.depth += 1;
                    self.closed = false;
                }
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    self.closed = self.depth == 0;
                }
                _ => {}
            }
        }
    }

    pub(crate) fn is_complete(&self) -> bool {
        self.closed && self.depth == 0 && !self.in_string
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_scan_tracks_completeness() {
        let cases = [
            (r#"{"a":1}"#, true),
            (r#"{"a":"}"}"#, true),
            (r#"{"a":"\"}"#, false),
            (r#"{"a":"\\"}"#, true),
            (r#"{"a":[1,{"b":2}]"#, false),
            (r#"{"a":[1,{"b":2}]}"#, true),
            ("", false),
            ("  ", false),
            ("[]", true),
            (r#"{"a":1}{"#, false),
        ];
        for (text, complete) in cases {
            let mut whole = JsonScan::default();
            whole.feed(text);
            assert_eq!(whole.is_complete(), complete, "{text}");
            let mut bytewise = JsonScan::default();
            for piece in text.split_inclusive(|_| true) {
                bytewise.feed(piece);
            }
            assert_eq!(bytewise.is_complete(), complete, "{text} piecewise");
        }
    }
}

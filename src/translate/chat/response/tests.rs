//! One test (or more) per SPEC §2 and §4 item.

use http::StatusCode;
use serde_json::{Value, json};

use super::*;

fn translate(completion: Value, stop_sequences: &[String]) -> (Value, Degradations) {
    let bytes = serde_json::to_vec(&completion).expect("encodes");
    let context = ResponseContext {
        client_model: "claude-haiku-4-5",
        stop_sequences,
    };
    let translated = translate_response(&bytes, &context).expect("translates");
    (
        serde_json::from_slice(&translated.body).expect("json"),
        translated.degraded,
    )
}

fn completion(message: Value, finish_reason: &str) -> Value {
    json!({
        "id": "chatcmpl-123", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}
    })
}

#[test]
fn spec_16_exact_anthropic_shape() {
    let (message, _) = translate(
        completion(json!({"role": "assistant", "content": "Hello"}), "stop"),
        &[],
    );
    let keys: Vec<&str> = message
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "content",
            "id",
            "model",
            "role",
            "stop_reason",
            "stop_sequence",
            "type",
            "usage"
        ]
    );
    assert!(
        message["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("msg_"))
    );
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["model"], "claude-haiku-4-5");
    assert_eq!(message["stop_sequence"], Value::Null);
    assert_eq!(
        message["usage"],
        json!({"input_tokens": 20, "output_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
    );
}

#[test]
fn spec_17_reasoning_refusal_and_empty_content() {
    let (message, _) = translate(
        completion(
            json!({"role": "assistant", "reasoning_content": "hmm", "content": "42"}),
            "stop",
        ),
        &[],
    );
    assert_eq!(
        message["content"],
        json!([{"type": "thinking", "thinking": "hmm", "signature": ""}, {"type": "text", "text": "42"}])
    );
    let (message, _) = translate(
        completion(
            json!({"role": "assistant", "reasoning": "via openrouter", "content": ""}),
            "stop",
        ),
        &[],
    );
    assert_eq!(
        message["content"],
        json!([{"type": "thinking", "thinking": "via openrouter", "signature": ""}])
    );

    let (message, _) = translate(
        completion(
            json!({"role": "assistant", "content": null, "refusal": "I can't help with that."}),
            "stop",
        ),
        &[],
    );
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": "I can't help with that."}])
    );
    let (message, _) = translate(
        completion(json!({"role": "assistant", "content": ""}), "stop"),
        &[],
    );
    assert_eq!(message["content"], json!([]));
}

#[test]
fn spec_18_tool_calls_become_tool_use_with_parsed_input() {
    let (message, degraded) = translate(
        completion(
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "a", "arguments": "{\"x\":[1,2]}"}},
                {"id": "call_2", "type": "function", "function": {"name": "b", "arguments": ""}},
                {"type": "function", "function": {"name": "c", "arguments": "```json\n{\"y\":true}\n```"}},
                {"id": "call_4", "type": "function", "function": {"name": "d", "arguments": "{\"broken\":"}},
                {"id": "call_5", "type": "function", "function": {"name": "e", "arguments": "[1]"}},
                {"id": "call_6", "type": "function", "function": {"arguments": "{}"}}
            ]}),
            "tool_calls",
        ),
        &[],
    );
    let content = message["content"].as_array().expect("content");
    assert_eq!(content.len(), 5, "the nameless call is skipped");
    assert_eq!(
        content[0],
        json!({"type": "tool_use", "id": "call_1", "name": "a", "input": {"x": [1, 2]}})
    );
    assert_eq!(content[1]["input"], json!({}));
    assert!(
        content[2]["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("toolu_"))
    );
    assert_eq!(content[2]["input"], json!({"y": true}));
    assert_eq!(
        content[3]["input"],
        json!({"_raw_arguments": "{\"broken\":"})
    );
    assert_eq!(content[4]["input"], json!({"_raw_arguments": "[1]"}));
    assert_eq!(message["stop_reason"], "tool_use");
    assert_eq!(
        degraded.tags(),
        ["tool_arguments", "tool_call_without_name"]
    );
}

#[test]
fn spec_18_legacy_function_call() {
    let (message, _) = translate(
        completion(
            json!({"role": "assistant", "function_call": {"name": "f", "arguments": "{\"a\":1}"}}),
            "function_call",
        ),
        &[],
    );
    assert_eq!(message["content"][0]["name"], "f");
    assert_eq!(message["content"][0]["input"], json!({"a": 1}));
    assert_eq!(message["stop_reason"], "tool_use");
}

#[test]
fn spec_19_finish_reasons() {
    let stops = vec!["###".to_string(), "END".to_string()];
    let cases = [
        (
            json!({"finish_reason": "stop"}),
            "plain",
            "end_turn",
            Value::Null,
        ),
        (
            json!({"finish_reason": "length"}),
            "cut",
            "max_tokens",
            Value::Null,
        ),
        (
            json!({"finish_reason": "content_filter"}),
            "x",
            "refusal",
            Value::Null,
        ),
        (
            json!({"finish_reason": "something_else"}),
            "x",
            "end_turn",
            Value::Null,
        ),
        (json!({"finish_reason": null}), "x", "end_turn", Value::Null),
        (
            json!({"finish_reason": "stop", "stop_reason": "END"}),
            "x",
            "stop_sequence",
            json!("END"),
        ),
        (
            json!({"finish_reason": "stop", "matched_stop": "###"}),
            "x",
            "stop_sequence",
            json!("###"),
        ),
        (
            json!({"finish_reason": "stop", "stop_reason": 128009}),
            "x",
            "end_turn",
            Value::Null,
        ),
        (
            json!({"finish_reason": "stop"}),
            "text then END",
            "stop_sequence",
            json!("END"),
        ),
    ];
    for (choice_fields, text, reason, sequence) in cases {
        let mut choice = json!({"index": 0, "message": {"role": "assistant", "content": text}});
        for (k, v) in choice_fields.as_object().expect("object") {
            choice[k] = v.clone();
        }
        let (message, _) = translate(json!({"choices": [choice]}), &stops);
        assert_eq!(message["stop_reason"], reason, "{choice_fields}");
        assert_eq!(message["stop_sequence"], sequence, "{choice_fields}");
    }
    // Ollama says "stop" when the turn ends in tool calls.
    let (message, _) = translate(
        completion(
            json!({"tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}]}),
            "stop",
        ),
        &[],
    );
    assert_eq!(message["stop_reason"], "tool_use");
}

#[test]
fn spec_20_usage_cached_tokens_and_lenient_fields() {
    let (message, _) = translate(
        json!({"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 1000, "completion_tokens": 10,
                         "prompt_tokens_details": {"cached_tokens": 800}}}),
        &[],
    );
    assert_eq!(message["usage"]["input_tokens"], 200);
    assert_eq!(message["usage"]["cache_read_input_tokens"], 800);
    assert_eq!(message["usage"]["output_tokens"], 10);

    // No usage, no object/created/total_tokens, integer error code: still fine, zeros.
    let (message, _) = translate(
        json!({"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}], "error": {"code": 0}}),
        &[],
    );
    assert_eq!(message["usage"]["input_tokens"], 0);
    assert_eq!(message["usage"]["output_tokens"], 0);
}

#[test]
fn garbage_and_empty_completions_are_bad_gateway() {
    let context = ResponseContext {
        client_model: "m",
        stop_sequences: &[],
    };
    for body in [
        &b"<html>oops</html>"[..],
        b"{\"choices\":[{\"message\":",
        b"",
        b"{\"choices\":[]}",
    ] {
        let err = translate_response(body, &context).expect_err("not a completion");
        assert_eq!(err.status(), 502);
        assert_eq!(err.error_type(), "api_error");
    }
}

#[test]
fn spec_29_upstream_errors_keep_message_and_retry_after() {
    let err = translate_error(
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        br#"{"error":{"message":"The server is overloaded","type":"server_error","param":null,"code":null}}"#,
    );
    assert_eq!(
        (err.status().as_u16(), err.error_type()),
        (529, "overloaded_error")
    );
    assert_eq!(err.message(), "The server is overloaded");

    let err = translate_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        None,
        b"<html>Internal</html>",
    );
    assert_eq!(
        (err.status().as_u16(), err.error_type()),
        (500, "api_error")
    );
    assert_eq!(err.message(), "upstream returned HTTP 500");

    let err = translate_error(
        StatusCode::BAD_REQUEST,
        None,
        br#"{"detail":"context too long"}"#,
    );
    assert_eq!(err.message(), "context too long");
    let err = translate_error(
        StatusCode::NOT_FOUND,
        None,
        br#"{"error":"model not found"}"#,
    );
    assert_eq!(
        (err.status().as_u16(), err.error_type(), err.message()),
        (404, "not_found_error", "model not found")
    );

    let retry = http::HeaderValue::from_static("30");
    let res: http::Response<bytes::Bytes> =
        translate_error(StatusCode::TOO_MANY_REQUESTS, Some(&retry), b"{}")
            .into_anthropic_response();
    assert_eq!(res.headers()["retry-after"], "30");
    let body: Value = serde_json::from_slice(res.body()).expect("json");
    assert_eq!(
        body,
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "upstream returned HTTP 429"}})
    );
}

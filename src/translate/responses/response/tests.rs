//! One test (or more) per answer mapping rule of the Responses wire.

use serde_json::{Value, json};

use super::*;
use crate::translate::responses::decode_reasoning_signature;

fn translate_with(answer: Value, stop_sequences: &[String]) -> (Value, TranslatedResponse) {
    let context = ResponseContext {
        client_model: "claude-sonnet-4-5",
        stop_sequences,
    };
    let bytes = serde_json::to_vec(&answer).expect("json");
    let translated = translate_response(&bytes, &context).expect("answer translates");
    let message = serde_json::from_slice(&translated.body).expect("message JSON");
    (message, translated)
}

fn translate(answer: Value) -> Value {
    translate_with(answer, &[]).0
}

fn answer(output: Value) -> Value {
    json!({"id": "resp_1", "object": "response", "status": "completed", "model": "gpt-5",
           "output": output,
           "usage": {"input_tokens": 100, "input_tokens_details": {"cached_tokens": 60},
                     "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 12},
                     "total_tokens": 120}})
}

fn message_item(parts: Value) -> Value {
    json!({"type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": parts})
}

fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": []})
}

#[test]
fn message_text_becomes_text_blocks_in_order() {
    let message = translate(answer(json!([message_item(json!([
        output_text("Hello"),
        output_text("again")
    ])),])));
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["model"], "claude-sonnet-4-5");
    assert!(
        message["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("msg_"))
    );
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": "Hello"}, {"type": "text", "text": "again"}])
    );
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(message["stop_sequence"], Value::Null);
}

#[test]
fn function_calls_become_tool_use_with_the_call_id() {
    let message = translate(answer(json!([
        message_item(json!([output_text("Let me look.")])),
        {"type": "function_call", "id": "fc_1", "call_id": "call_A", "name": "ls", "arguments": "{\"dir\":\"/\"}", "status": "completed"},
        {"type": "function_call", "id": "fc_2", "call_id": "call_B", "name": "pwd", "arguments": ""},
    ])));
    assert_eq!(
        message["content"],
        json!([
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "call_A", "name": "ls", "input": {"dir": "/"}},
            {"type": "tool_use", "id": "call_B", "name": "pwd", "input": {}},
        ])
    );
    assert_eq!(message["stop_reason"], "tool_use");
}

#[test]
fn broken_arguments_are_kept_and_reported() {
    let (message, translated) = translate_with(
        answer(
            json!([{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{\"a\":"}]),
        ),
        &[],
    );
    assert_eq!(
        message["content"][0]["input"],
        json!({"_raw_arguments": "{\"a\":"})
    );
    assert_eq!(translated.degraded.tags(), ["tool_arguments"]);
}

#[test]
fn reasoning_becomes_signed_thinking() {
    let message = translate(answer(json!([
        {"type": "reasoning", "id": "rs_1", "encrypted_content": "gAAAAsecret",
         "summary": [{"type": "summary_text", "text": "First."}, {"type": "summary_text", "text": "Second."}]},
        {"type": "reasoning", "id": "rs_2", "encrypted_content": "gAAAAquiet", "summary": []},
        {"type": "reasoning", "id": "rs_3", "summary": []},
        message_item(json!([output_text("Answer")])),
    ])));
    let content = message["content"].as_array().expect("content");
    assert_eq!(
        content.len(),
        3,
        "an item with neither summary nor content is dropped"
    );
    assert_eq!(content[0]["type"], "thinking");
    assert_eq!(content[0]["thinking"], "First.\n\nSecond.");
    let signature = content[0]["signature"].as_str().expect("signature");
    assert_eq!(
        decode_reasoning_signature(signature),
        Some(("rs_1", "gAAAAsecret"))
    );
    assert_eq!(content[1]["thinking"], "");
    assert_eq!(
        decode_reasoning_signature(content[1]["signature"].as_str().expect("signature")),
        Some(("rs_2", "gAAAAquiet"))
    );
    assert_eq!(content[2], json!({"type": "text", "text": "Answer"}));
}

#[test]
fn incomplete_for_max_output_tokens_is_max_tokens() {
    let mut body = answer(json!([message_item(json!([output_text("Half")]))]));
    body["status"] = json!("incomplete");
    body["incomplete_details"] = json!({"reason": "max_output_tokens"});
    assert_eq!(translate(body.clone())["stop_reason"], "max_tokens");
    body["incomplete_details"] = json!({"reason": "content_filter"});
    assert_eq!(translate(body)["stop_reason"], "refusal");
}

#[test]
fn refusal_is_text_with_stop_reason_refusal() {
    let message = translate(answer(json!([message_item(
        json!([{"type": "refusal", "refusal": "I can't help with that."}])
    ),])));
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": "I can't help with that."}])
    );
    assert_eq!(message["stop_reason"], "refusal");
}

#[test]
fn usage_input_excludes_cached_tokens() {
    let (message, translated) = translate_with(
        answer(json!([message_item(json!([output_text("x")]))])),
        &[],
    );
    assert_eq!(
        message["usage"],
        json!({"input_tokens": 40, "output_tokens": 20,
               "cache_creation_input_tokens": 0, "cache_read_input_tokens": 60})
    );
    assert_eq!(translated.usage.input_tokens, 40);
    assert_eq!(translated.usage.cache_read_input_tokens, 60);
    let mut body = answer(json!([]));
    body["usage"] = Value::Null;
    assert_eq!(translate(body)["usage"]["input_tokens"], 0);
}

#[test]
fn other_items_are_dropped_and_reported() {
    let (message, translated) = translate_with(
        answer(json!([
            {"type": "web_search_call", "id": "ws_1", "status": "completed"},
            message_item(json!([output_text("Found it.")])),
        ])),
        &[],
    );
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": "Found it."}])
    );
    assert_eq!(translated.degraded.tags(), ["unknown_output"]);
}

#[test]
fn stop_sequences_cut_the_text_and_what_follows() {
    let stops = ["</done>".to_owned(), "STOP".to_owned()];
    let (message, _) = translate_with(
        answer(json!([
            message_item(json!([output_text("Result: 42 </done> and more")])),
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        ])),
        &stops,
    );
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": "Result: 42 "}])
    );
    assert_eq!(message["stop_reason"], "stop_sequence");
    assert_eq!(message["stop_sequence"], "</done>");

    // At the very start: nothing is left of the text.
    let (message, _) = translate_with(
        answer(json!([message_item(json!([output_text("STOP now")]))])),
        &stops,
    );
    assert_eq!(message["content"], json!([]));
    assert_eq!(message["stop_sequence"], "STOP");

    // None matching: untouched.
    let (message, _) = translate_with(
        answer(json!([message_item(json!([output_text("fine")]))])),
        &stops,
    );
    assert_eq!(message["content"][0]["text"], "fine");
    assert_eq!(message["stop_reason"], "end_turn");
}

#[test]
fn failed_and_malformed_answers_are_errors() {
    let context = ResponseContext {
        client_model: "m",
        stop_sequences: &[],
    };
    let failed = json!({"status": "failed", "output": [],
                        "error": {"code": "server_error", "message": "The model crashed"}});
    let err = translate_response(failed.to_string().as_bytes(), &context).expect_err("failed");
    assert_eq!(
        (err.status().as_u16(), err.message()),
        (502, "The model crashed")
    );
    let overloaded =
        json!({"status": "failed", "error": {"code": "server_error", "message": "Overloaded"}});
    let err = translate_response(overloaded.to_string().as_bytes(), &context).expect_err("failed");
    assert_eq!(err.error_type(), "overloaded_error");
    for body in [&b"not json"[..], b"{\"output\":[", b"[]"] {
        let err = translate_response(body, &context).expect_err("malformed");
        assert_eq!(err.status(), 502);
    }
}

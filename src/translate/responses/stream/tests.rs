//! Unit tests of the Responses stream translator's corners; the golden transcripts and the
//! property test are in `tests/responses_stream_*.rs`.

use serde_json::{Value, json};

use super::*;

fn run(events: &[Value], stops: &[&str]) -> (Vec<Value>, ResponsesStreamTranslator) {
    let mut translator = ResponsesStreamTranslator::new(StreamConfig {
        message_id: "msg_t".into(),
        stop_sequences: stops.iter().map(|s| (*s).to_owned()).collect(),
        ..StreamConfig::new("claude-t")
    });
    let mut out = BytesMut::new();
    for event in events {
        translator.push(format!("data: {event}\n\n").as_bytes(), &mut out);
    }
    translator.finish(&mut out);
    let mut decoded = Vec::new();
    SseDecoder::new().push(&out, |event| {
        let event = event.expect("SSE");
        decoded.push(serde_json::from_str(event.data).expect("JSON"));
    });
    (decoded, translator)
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["type"].as_str()).collect()
}

fn completed() -> Value {
    json!({"type": "response.completed", "response": {"status": "completed", "output": [],
           "usage": {"input_tokens": 7, "output_tokens": 3}}})
}

#[test]
fn output_only_in_the_completed_response_is_still_translated() {
    let (events, translator) = run(
        &[
            json!({"type": "response.created", "response": {"status": "in_progress"}}),
            json!({"type": "response.completed", "response": {"status": "completed",
                "output": [
                    {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hm"}],
                     "encrypted_content": "enc"},
                    {"type": "message", "content": [{"type": "output_text", "text": "Hi"}]}],
                "usage": {"input_tokens": 7, "output_tokens": 3}}}),
        ],
        &[],
    );
    assert_eq!(
        events[3]["delta"],
        json!({"type": "thinking_delta", "thinking": "hm"})
    );
    assert_eq!(
        events[4]["delta"],
        json!({"type": "signature_delta", "signature": "llm-bridge.responses.v1:rs_1:enc"})
    );
    assert_eq!(
        events[7]["delta"],
        json!({"type": "text_delta", "text": "Hi"})
    );
    assert_eq!(
        translator
            .usage()
            .map(|u| (u.input_tokens, u.output_tokens)),
        Some((7, 3))
    );
}

#[test]
fn an_empty_message_and_unknown_items_show_no_block() {
    let (events, _) = run(
        &[
            json!({"type": "response.created", "response": {}}),
            json!({"type": "response.output_item.added", "output_index": 0,
                   "item": {"type": "web_search_call", "id": "ws_1", "status": "in_progress"}}),
            json!({"type": "response.output_item.added", "output_index": 1,
                   "item": {"type": "message", "id": "m", "content": []}}),
            json!({"type": "response.output_item.done", "output_index": 1,
                   "item": {"type": "message", "id": "m", "content": []}}),
            completed(),
        ],
        &[],
    );
    assert_eq!(
        kinds(&events),
        ["message_start", "ping", "message_delta", "message_stop"]
    );
}

#[test]
fn a_repeated_announcement_and_late_fragments_are_ignored() {
    let added = json!({"type": "response.output_item.added", "output_index": 0,
                       "item": {"type": "message", "id": "m", "content": []}});
    let (events, _) = run(
        &[
            added.clone(),
            added,
            json!({"type": "response.output_text.delta", "output_index": 0, "delta": "a"}),
            json!({"type": "response.output_item.done", "output_index": 0,
                   "item": {"type": "message", "id": "m", "content": [{"type": "output_text", "text": "a"}]}}),
            json!({"type": "response.output_text.delta", "output_index": 0, "delta": "late"}),
            completed(),
        ],
        &[],
    );
    let texts: Vec<&str> = events
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(texts, ["a"]);
}

#[test]
fn a_call_that_never_gets_a_name_is_dropped() {
    let (events, _) = run(
        &[
            json!({"type": "response.function_call_arguments.delta", "output_index": 0, "delta": "{}"}),
            completed(),
        ],
        &[],
    );
    assert_eq!(
        kinds(&events),
        ["message_start", "ping", "message_delta", "message_stop"]
    );
}

#[test]
fn thinking_is_not_searched_for_stop_sequences() {
    let (events, _) = run(
        &[
            json!({"type": "response.output_item.added", "output_index": 0,
                   "item": {"type": "reasoning", "id": "rs", "summary": []}}),
            json!({"type": "response.reasoning_summary_text.delta", "output_index": 0,
                   "summary_index": 0, "delta": "say STOP"}),
            json!({"type": "response.output_item.done", "output_index": 0,
                   "item": {"type": "reasoning", "id": "rs", "summary": []}}),
            completed(),
        ],
        &["STOP"],
    );
    assert_eq!(events[3]["delta"]["thinking"], "say STOP");
    assert_eq!(events[4]["delta"]["signature"], "");
    assert_eq!(events[6]["delta"]["stop_reason"], "end_turn");
}

#[test]
fn events_after_the_end_are_ignored() {
    let mut translator = ResponsesStreamTranslator::new(StreamConfig::new("m"));
    let mut out = BytesMut::new();
    translator.push(format!("data: {}\n\n", completed()).as_bytes(), &mut out);
    assert_eq!(translator.status(), StreamStatus::Completed);
    let len = out.len();
    translator.push(format!("data: {}\n\n", completed()).as_bytes(), &mut out);
    translator.fail(&ApiError::bad_gateway("late"), &mut out);
    translator.finish(&mut out);
    assert_eq!(out.len(), len);
    assert!(translator.message_id().starts_with("msg_"));
}

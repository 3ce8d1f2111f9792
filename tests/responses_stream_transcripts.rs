//! Golden transcripts of the Responses wire: OpenAI Responses SSE streams in (event names and
//! shapes as the API sends them), the exact Anthropic event sequence out. Every transcript is
//! translated whole, split at every byte offset and one byte at a time, and must give the same
//! events each time; every output also passes the grammar check.

mod stream_support;

use bytes::BytesMut;
use serde_json::{Value, json};
use stream_support::*;
use tower_llm_bridge::translate::responses::decode_reasoning_signature;
use tower_llm_bridge::translate::responses::stream::ResponsesStreamTranslator;
use tower_llm_bridge::translate::stream::{StreamConfig, StreamStatus};

// --- Responses events, as OpenAI sends them --------------------------------------------------

/// `event: <type>\ndata: <json>\n\n` for each event, numbered in order.
fn stream(events: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, event) in events.iter().enumerate() {
        let mut event = event.clone();
        event["sequence_number"] = json!(n);
        let kind = event["type"].as_str().expect("type").to_owned();
        out.extend_from_slice(format!("event: {kind}\ndata: {event}\n\n").as_bytes());
    }
    out
}

fn response(status: &str, usage: Option<Value>) -> Value {
    json!({"id": "resp_1", "object": "response", "created_at": 1_700_000_000, "model": "gpt-5",
           "status": status, "output": [], "parallel_tool_calls": true, "tool_choice": "auto",
           "tools": [], "store": false, "usage": usage})
}

fn created() -> Value {
    json!({"type": "response.created", "response": response("in_progress", None)})
}
fn in_progress() -> Value {
    json!({"type": "response.in_progress", "response": response("in_progress", None)})
}
fn usage(input: u64, cached: u64, output: u64) -> Value {
    json!({"input_tokens": input, "input_tokens_details": {"cached_tokens": cached},
           "output_tokens": output, "output_tokens_details": {"reasoning_tokens": 0},
           "total_tokens": input + output})
}
fn completed(usage: Value) -> Value {
    json!({"type": "response.completed", "response": response("completed", Some(usage))})
}
fn message_item(id: &str, text: Option<&str>) -> Value {
    let content = match text {
        Some(text) => json!([{"type": "output_text", "text": text, "annotations": []}]),
        None => json!([]),
    };
    json!({"type": "message", "id": id, "role": "assistant",
           "status": if text.is_some() { "completed" } else { "in_progress" }, "content": content})
}
fn call_item(id: &str, call_id: &str, name: &str, arguments: &str) -> Value {
    json!({"type": "function_call", "id": id, "call_id": call_id, "name": name,
           "arguments": arguments, "status": "in_progress"})
}
fn reasoning_item(id: &str, summary: &[&str], encrypted: Option<&str>) -> Value {
    let summary: Vec<Value> = summary
        .iter()
        .map(|text| json!({"type": "summary_text", "text": text}))
        .collect();
    json!({"type": "reasoning", "id": id, "summary": summary, "encrypted_content": encrypted})
}
fn added(output_index: u64, item: Value) -> Value {
    json!({"type": "response.output_item.added", "output_index": output_index, "item": item})
}
fn done(output_index: u64, item: Value) -> Value {
    json!({"type": "response.output_item.done", "output_index": output_index, "item": item})
}
fn part_added(output_index: u64, item_id: &str) -> Value {
    json!({"type": "response.content_part.added", "output_index": output_index, "item_id": item_id,
           "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}})
}
fn text_delta(output_index: u64, item_id: &str, delta: &str) -> Value {
    json!({"type": "response.output_text.delta", "output_index": output_index, "item_id": item_id,
           "content_index": 0, "delta": delta, "logprobs": []})
}
fn text_done(output_index: u64, item_id: &str, text: &str) -> Value {
    json!({"type": "response.output_text.done", "output_index": output_index, "item_id": item_id,
           "content_index": 0, "text": text, "logprobs": []})
}
fn args_delta(output_index: u64, item_id: &str, delta: &str) -> Value {
    json!({"type": "response.function_call_arguments.delta", "output_index": output_index,
           "item_id": item_id, "delta": delta})
}
fn args_done(output_index: u64, item_id: &str, name: &str, arguments: &str) -> Value {
    json!({"type": "response.function_call_arguments.done", "output_index": output_index,
           "item_id": item_id, "name": name, "arguments": arguments})
}
fn summary_delta(output_index: u64, item_id: &str, summary_index: u64, delta: &str) -> Value {
    json!({"type": "response.reasoning_summary_text.delta", "output_index": output_index,
           "item_id": item_id, "summary_index": summary_index, "delta": delta})
}
fn summary_part_added(output_index: u64, item_id: &str, summary_index: u64) -> Value {
    json!({"type": "response.reasoning_summary_part.added", "output_index": output_index,
           "item_id": item_id, "summary_index": summary_index,
           "part": {"type": "summary_text", "text": ""}})
}

// --- expected Anthropic events ---------------------------------------------------------------

fn usage_json(input: u64, output: u64, cache_read: u64) -> Value {
    json!({"input_tokens": input, "output_tokens": output,
           "cache_creation_input_tokens": 0, "cache_read_input_tokens": cache_read})
}
fn message_start() -> Value {
    json!({"type": "message_start", "message": {
        "id": MESSAGE_ID, "type": "message", "role": "assistant", "model": MODEL,
        "content": [], "stop_reason": null, "stop_sequence": null, "usage": usage_json(0, 0, 0)}})
}
fn ping() -> Value {
    json!({"type": "ping"})
}
fn start_text(index: u32) -> Value {
    json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})
}
fn start_thinking(index: u32) -> Value {
    json!({"type": "content_block_start", "index": index,
           "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
}
fn start_tool(index: u32, id: &str, name: &str) -> Value {
    json!({"type": "content_block_start", "index": index,
           "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}})
}
fn delta(index: u32, delta: Value) -> Value {
    json!({"type": "content_block_delta", "index": index, "delta": delta})
}
fn text(index: u32, text: &str) -> Value {
    delta(index, json!({"type": "text_delta", "text": text}))
}
fn thinking(index: u32, thinking: &str) -> Value {
    delta(
        index,
        json!({"type": "thinking_delta", "thinking": thinking}),
    )
}
fn signature(index: u32, signature: &str) -> Value {
    delta(
        index,
        json!({"type": "signature_delta", "signature": signature}),
    )
}
fn partial_json(index: u32, partial: &str) -> Value {
    delta(
        index,
        json!({"type": "input_json_delta", "partial_json": partial}),
    )
}
fn stop(index: u32) -> Value {
    json!({"type": "content_block_stop", "index": index})
}
fn message_delta(stop_reason: &str, stop_sequence: Option<&str>, usage: Value) -> Value {
    json!({"type": "message_delta",
           "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
           "usage": usage})
}
fn message_stop() -> Value {
    json!({"type": "message_stop"})
}
fn error(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

fn config_with_stops(stops: &[&str]) -> StreamConfig {
    StreamConfig {
        stop_sequences: stops.iter().map(|s| (*s).to_owned()).collect(),
        ..config()
    }
}

fn golden_with(make: impl Fn() -> StreamConfig, input: &[u8], expected: &[Value]) -> Reconstructed {
    let events =
        translate_all_ways_with(|pieces| translate_responses_pieces(make(), pieces), input);
    assert_eq!(
        events,
        expected,
        "\n got: {}\nwant: {}",
        serde_json::to_string_pretty(&events).unwrap_or_default(),
        serde_json::to_string_pretty(expected).unwrap_or_default()
    );
    check_grammar(&events)
}

fn golden(input: &[u8], expected: &[Value]) -> Reconstructed {
    golden_with(config, input, expected)
}

// --- transcripts -----------------------------------------------------------------------------

#[test]
fn text_answer() {
    let input = stream(&[
        created(),
        in_progress(),
        added(0, message_item("msg_a", None)),
        part_added(0, "msg_a"),
        text_delta(0, "msg_a", "Hello"),
        text_delta(0, "msg_a", ", wörld 🦀"),
        text_done(0, "msg_a", "Hello, wörld 🦀"),
        done(0, message_item("msg_a", Some("Hello, wörld 🦀"))),
        completed(usage(30, 10, 4)),
    ]);
    let message = golden(
        &input,
        &[
            message_start(),
            ping(),
            start_text(0),
            text(0, "Hello"),
            text(0, ", wörld 🦀"),
            stop(0),
            message_delta("end_turn", None, usage_json(20, 4, 10)),
            message_stop(),
        ],
    );
    assert_eq!(message.blocks, [Block::Text("Hello, wörld 🦀".into())]);
}

#[test]
fn many_deltas() {
    let words: Vec<String> = (0..15).map(|i| format!("w{i} ")).collect();
    let mut events = vec![created(), added(0, message_item("msg_a", None))];
    events.extend(words.iter().map(|w| text_delta(0, "msg_a", w)));
    events.push(done(0, message_item("msg_a", Some(&words.concat()))));
    events.push(completed(usage(5, 0, 15)));
    let mut expected = vec![message_start(), ping(), start_text(0)];
    expected.extend(words.iter().map(|w| text(0, w)));
    expected.extend([
        stop(0),
        message_delta("end_turn", None, usage_json(5, 15, 0)),
        message_stop(),
    ]);
    let events = translate_all_ways_with(
        |pieces| translate_responses_pieces(config(), pieces),
        &stream(&events)[..],
    );
    assert_eq!(events, expected);
    let message = check_grammar(&events);
    assert_eq!(message.blocks, [Block::Text(words.concat())]);
}

#[test]
fn two_function_calls_with_interleaved_argument_fragments() {
    let input = stream(&[
        created(),
        added(0, call_item("fc_1", "call_A", "read", "")),
        added(1, call_item("fc_2", "call_B", "grep", "")),
        args_delta(0, "fc_1", "{\"path\":"),
        args_delta(1, "fc_2", "{\"pattern\":"),
        args_delta(1, "fc_2", "\"TODO\"}"),
        args_delta(0, "fc_1", "\"src/lib.rs\"}"),
        args_done(0, "fc_1", "read", "{\"path\":\"src/lib.rs\"}"),
        done(
            0,
            call_item("fc_1", "call_A", "read", "{\"path\":\"src/lib.rs\"}"),
        ),
        args_done(1, "fc_2", "grep", "{\"pattern\":\"TODO\"}"),
        done(
            1,
            call_item("fc_2", "call_B", "grep", "{\"pattern\":\"TODO\"}"),
        ),
        completed(usage(100, 0, 30)),
    ]);
    let message = golden(
        &input,
        &[
            message_start(),
            ping(),
            start_tool(0, "call_A", "read"),
            partial_json(0, "{\"path\":"),
            partial_json(0, "\"src/lib.rs\"}"),
            stop(0),
            start_tool(1, "call_B", "grep"),
            // The second call's fragments waited for the first call to be done.
            partial_json(1, "{\"pattern\":\"TODO\"}"),
            stop(1),
            message_delta("tool_use", None, usage_json(100, 30, 0)),
            message_stop(),
        ],
    );
    assert_eq!(
        message.blocks,
        [
            Block::Tool {
                id: "call_A".into(),
                name: "read".into(),
                json: "{\"path\":\"src/lib.rs\"}".into()
            },
            Block::Tool {
                id: "call_B".into(),
                name: "grep".into(),
                json: "{\"pattern\":\"TODO\"}".into()
            },
        ]
    );
}

#[test]
fn reasoning_then_text() {
    let input = stream(&[
        created(),
        added(0, reasoning_item("rs_1", &[], None)),
        summary_part_added(0, "rs_1", 0),
        summary_delta(0, "rs_1", 0, "**Plan**"),
        summary_delta(0, "rs_1", 0, " look first."),
        summary_part_added(0, "rs_1", 1),
        summary_delta(0, "rs_1", 1, "Then answer."),
        done(
            0,
            reasoning_item(
                "rs_1",
                &["**Plan** look first.", "Then answer."],
                Some("gAAAAB-enc"),
            ),
        ),
        added(1, message_item("msg_a", None)),
        text_delta(1, "msg_a", "Answer."),
        done(1, message_item("msg_a", Some("Answer."))),
        completed(usage(50, 0, 80)),
    ]);
    let ours = "llm-bridge.responses.v1:rs_1:gAAAAB-enc";
    let message = golden(
        &input,
        &[
            message_start(),
            ping(),
            start_thinking(0),
            thinking(0, "**Plan**"),
            thinking(0, " look first."),
            thinking(0, "\n\nThen answer."),
            signature(0, ours),
            stop(0),
            start_text(1),
            text(1, "Answer."),
            stop(1),
            message_delta("end_turn", None, usage_json(50, 80, 0)),
            message_stop(),
        ],
    );
    assert_eq!(message.signatures, [ours]);
    assert_eq!(
        decode_reasoning_signature(ours),
        Some(("rs_1", "gAAAAB-enc"))
    );
}

#[test]
fn reasoning_without_summary_still_carries_its_signature() {
    let input = stream(&[
        created(),
        added(0, reasoning_item("rs_9", &[], None)),
        done(0, reasoning_item("rs_9", &[], Some("gAAAAquiet"))),
        added(1, call_item("fc_1", "call_1", "ls", "")),
        args_delta(1, "fc_1", "{}"),
        done(1, call_item("fc_1", "call_1", "ls", "{}")),
        completed(usage(10, 0, 20)),
    ]);
    golden(
        &input,
        &[
            message_start(),
            ping(),
            start_thinking(0),
            signature(0, "llm-bridge.responses.v1:rs_9:gAAAAquiet"),
            stop(0),
            start_tool(1, "call_1", "ls"),
            partial_json(1, "{}"),
            stop(1),
            message_delta("tool_use", None, usage_json(10, 20, 0)),
            message_stop(),
        ],
    );
}

#[test]
fn incomplete() {
    let input = stream(&[
        created(),
        added(0, message_item("msg_a", None)),
        text_delta(0, "msg_a", "The answer is"),
        json!({"type": "response.incomplete", "response": {
            "id": "resp_1", "status": "incomplete", "output": [],
            "incomplete_details": {"reason": "max_output_tokens"}, "usage": usage(9, 0, 16)}}),
    ]);
    golden(
        &input,
        &[
            message_start(),
            ping(),
            start_text(0),
            text(0, "The answer is"),
            stop(0),
            message_delta("max_tokens", None, usage_json(9, 16, 0)),
            message_stop(),
        ],
    );
}

#[test]
fn failed() {
    let input = stream(&[
        created(),
        added(0, message_item("msg_a", None)),
        text_delta(0, "msg_a", "Par"),
        json!({"type": "response.failed", "response": {
            "id": "resp_1", "status": "failed", "output": [],
            "error": {"code": "server_error", "message": "The server had an error"}}}),
    ]);
    let message = golden(
        &input,
        &[
            message_start(),
            ping(),
            start_text(0),
            text(0, "Par"),
            error("api_error", "The server had an error"),
        ],
    );
    assert!(message.stop_reason.is_none());
}

#[test]
fn error_event() {
    let input = stream(&[
        created(),
        json!({"type": "error", "code": "rate_limit_exceeded", "message": "Slow down", "param": null}),
        completed(usage(1, 0, 1)),
    ]);
    golden(
        &input,
        &[message_start(), ping(), error("api_error", "Slow down")],
    );
    let overloaded =
        stream(&[json!({"type": "error", "code": "server_overloaded", "message": "busy"})]);
    golden(&overloaded, &[error("overloaded_error", "busy")]);
}

#[test]
fn cut() {
    let input = stream(&[
        created(),
        added(0, call_item("fc_1", "call_1", "ls", "")),
        args_delta(0, "fc_1", "{\"dir\":"),
    ]);
    let message = golden(
        &input,
        &[
            message_start(),
            ping(),
            start_tool(0, "call_1", "ls"),
            partial_json(0, "{\"dir\":"),
            error(
                "api_error",
                "the upstream stream ended before the response was complete",
            ),
        ],
    );
    assert!(message.error.is_some());
    // Nothing at all is an error too.
    golden(
        b"",
        &[error(
            "api_error",
            "the upstream stream ended before the response was complete",
        )],
    );
}

#[test]
fn malformed_event_is_an_error() {
    let mut input = stream(&[created()]);
    input.extend_from_slice(b"event: response.output_text.delta\ndata: {\"type\":\n\n");
    golden(
        &input,
        &[
            message_start(),
            ping(),
            error(
                "api_error",
                "the upstream sent a malformed stream event: EOF while parsing a value at line 1 column 8",
            ),
        ],
    );
}

#[test]
fn a_server_that_skips_added_events_and_event_lines() {
    // Minimal compatible servers: no `event:` lines, no output_item.added, text only in
    // the finished item.
    let mut input = Vec::new();
    for event in [
        created(),
        text_delta(0, "m1", "Hi"),
        done(0, message_item("m1", Some("Hi"))),
        done(1, call_item("f1", "call_9", "ls", "{\"a\":1}")),
        completed(usage(3, 0, 2)),
    ] {
        input.extend_from_slice(format!("data: {event}\n\n").as_bytes());
    }
    golden(
        &input,
        &[
            message_start(),
            ping(),
            start_text(0),
            text(0, "Hi"),
            stop(0),
            start_tool(1, "call_9", "ls"),
            partial_json(1, "{\"a\":1}"),
            stop(1),
            message_delta("tool_use", None, usage_json(3, 2, 0)),
            message_stop(),
        ],
    );
}

#[test]
fn refusal_delta_is_text_with_stop_reason_refusal() {
    let input = stream(&[
        created(),
        added(0, message_item("msg_a", None)),
        json!({"type": "response.refusal.delta", "output_index": 0, "item_id": "msg_a",
               "content_index": 0, "delta": "I can't."}),
        done(
            0,
            json!({"type": "message", "id": "msg_a", "content": [{"type": "refusal", "refusal": "I can't."}]}),
        ),
        completed(usage(3, 0, 2)),
    ]);
    golden(
        &input,
        &[
            message_start(),
            ping(),
            start_text(0),
            text(0, "I can't."),
            stop(0),
            message_delta("refusal", None, usage_json(3, 2, 0)),
            message_stop(),
        ],
    );
}

// --- stop sequences --------------------------------------------------------------------------

fn text_stream(deltas: &[&str]) -> Vec<u8> {
    let mut events = vec![created(), added(0, message_item("msg_a", None))];
    events.extend(deltas.iter().map(|d| text_delta(0, "msg_a", d)));
    events.push(done(0, message_item("msg_a", Some(&deltas.concat()))));
    events.push(added(1, call_item("fc_1", "call_1", "ls", "")));
    events.push(args_delta(1, "fc_1", "{}"));
    events.push(done(1, call_item("fc_1", "call_1", "ls", "{}")));
    events.push(completed(usage(10, 0, 40)));
    stream(&events)
}

#[test]
fn stop_sequence_split_across_deltas() {
    let input = text_stream(&["The end is </", "ans", "wer> and then", " more"]);
    let message = golden_with(
        || config_with_stops(&["</answer>"]),
        &input,
        &[
            message_start(),
            ping(),
            start_text(0),
            text(0, "The end is "),
            stop(0),
            // No usage from the upstream yet: an estimate, about four bytes a token.
            message_delta("stop_sequence", Some("</answer>"), usage_json(0, 3, 0)),
            message_stop(),
        ],
    );
    // Nothing after the stop reaches the client: not the rest of the text, not the call.
    assert_eq!(message.blocks, [Block::Text("The end is ".into())]);
}

#[test]
fn stop_sequence_at_the_very_start() {
    let input = text_stream(&["STOP", " everything"]);
    let message = golden_with(
        || config_with_stops(&["STOP"]),
        &input,
        &[
            message_start(),
            ping(),
            message_delta("stop_sequence", Some("STOP"), usage_json(0, 0, 0)),
            message_stop(),
        ],
    );
    assert!(message.blocks.is_empty());
}

#[test]
fn several_stop_sequences_first_completed_wins() {
    let input = text_stream(&["alpha be", "ta gamma"]);
    golden_with(
        || config_with_stops(&["gamma", "beta", "ta g"]),
        &input,
        &[
            message_start(),
            ping(),
            start_text(0),
            text(0, "alpha "),
            stop(0),
            message_delta("stop_sequence", Some("beta"), usage_json(0, 2, 0)),
            message_stop(),
        ],
    );
}

#[test]
fn stop_sequences_none_matching_hold_back_only_possible_starts() {
    let input = text_stream(&["a <", "b> c"]);
    let message = golden_with(
        || config_with_stops(&["<stop>", "zzz"]),
        &input,
        &[
            message_start(),
            ping(),
            start_text(0),
            text(0, "a "),
            text(0, "<b> c"),
            stop(0),
            start_tool(1, "call_1", "ls"),
            partial_json(1, "{}"),
            stop(1),
            message_delta("tool_use", None, usage_json(10, 40, 0)),
            message_stop(),
        ],
    );
    assert_eq!(message.blocks[0], Block::Text("a <b> c".into()));
}

#[test]
fn held_text_goes_out_when_its_block_ends() {
    let input = text_stream(&["ends with <st"]);
    golden_with(
        || config_with_stops(&["<stop>"]),
        &input,
        &[
            message_start(),
            ping(),
            start_text(0),
            text(0, "ends with "),
            text(0, "<st"),
            stop(0),
            start_tool(1, "call_1", "ls"),
            partial_json(1, "{}"),
            stop(1),
            message_delta("tool_use", None, usage_json(10, 40, 0)),
            message_stop(),
        ],
    );
}

#[test]
fn a_stop_ends_the_translator_and_ignores_the_rest() {
    let input = text_stream(&["x STOP y"]);
    let mut translator = ResponsesStreamTranslator::new(config_with_stops(&["STOP"]));
    let mut out = BytesMut::new();
    translator.push(&input, &mut out);
    assert_eq!(translator.status(), StreamStatus::Completed);
    assert_eq!(translator.usage().map(|u| u.output_tokens), Some(1));
    let len = out.len();
    translator.push(&input, &mut out);
    translator.finish(&mut out);
    assert_eq!(out.len(), len, "nothing after the stop");
}

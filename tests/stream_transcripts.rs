//! Golden transcripts: OpenAI SSE streams in, the exact Anthropic event sequence out. Every
//! transcript is translated whole, split at every byte offset and one byte at a time, and
//! must give the same events each time; every output also passes the grammar check.

mod stream_support;

use bytes::BytesMut;
use serde_json::{Value, json};
use stream_support::*;
use tower_llm_bridge::translate::stream::{StreamConfig, StreamTranslator};

// --- expected events ---------------------------------------------------------------------

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
fn signature(index: u32) -> Value {
    delta(index, json!({"type": "signature_delta", "signature": ""}))
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

fn tool_call(index: u32, id: Option<&str>, name: Option<&str>, arguments: &str) -> Value {
    let mut function = json!({"arguments": arguments});
    if let Some(name) = name {
        function["name"] = json!(name);
    }
    let mut call = json!({"index": index, "function": function});
    if let Some(id) = id {
        call["id"] = json!(id);
        call["type"] = json!("function");
    }
    call
}

/// Runs a transcript every way, checks the grammar, compares with `expected`.
fn golden(input: &[u8], expected: &[Value]) -> Reconstructed {
    golden_with(config, input, expected)
}

fn golden_with(make: impl Fn() -> StreamConfig, input: &[u8], expected: &[Value]) -> Reconstructed {
    let events = translate_all_ways(make, input);
    assert_eq!(
        events,
        expected,
        "\n got: {}\nwant: {}",
        serde_json::to_string_pretty(&events).unwrap_or_default(),
        serde_json::to_string_pretty(expected).unwrap_or_default()
    );
    check_grammar(&events)
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

// --- transcripts -------------------------------------------------------------------------

#[test]
fn text_with_crlf_comments_and_role_chunk() {
    // CRLF line endings and a keep-alive comment, as OpenRouter sends them.
    let body = String::from_utf8(sse(&[
        chunk(json!({"role": "assistant", "content": ""})),
        chunk(json!({"content": "Hel"})),
        chunk(json!({"content": "lo, wörld 🦀"})),
        finish("stop"),
        usage(12, 4, 0),
    ]))
    .expect("utf-8")
    .replace('\n', "\r\n");
    let input = cat(&[
        b": OPENROUTER PROCESSING\r\n\r\n",
        body.as_bytes(),
        b"data: [DONE]\r\n\r\n",
    ]);
    let message = golden(
        &input,
        &[
            message_start(),
            ping(),
            start_text(0),
            text(0, "Hel"),
            text(0, "lo, wörld 🦀"),
            stop(0),
            message_delta("end_turn", None, usage_json(12, 4, 0)),
            message_stop(),
        ],
    );
    assert_eq!(message.blocks, [Block::Text("Hello, wörld 🦀".into())]);
}

#[test]
fn thinking_then_text() {
    let input = cat(&[
        &sse(&[
            chunk(json!({"role": "assistant", "content": null, "reasoning_content": ""})),
            chunk(json!({"reasoning_content": "Let me "})),
            chunk(json!({"reasoning_content": "think."})),
            chunk(json!({"content": "Answer", "reasoning_content": null})),
            chunk(json!({"content": "."})),
            finish("stop"),
            usage(20, 30, 5),
        ]),
        DONE,
    ]);
    golden(
        &input,
        &[
            message_start(),
            ping(),
            start_thinking(0),
            thinking(0, "Let me "),
            thinking(0, "think."),
            signature(0),
            stop(0),
            start_text(1),
            text(1, "Answer"),
            text(1, "."),
            stop(1),
            message_delta("end_turn", None, usage_json(15, 30, 5)),
            message_stop(),
        ],
    );
}

#[test]
fn reasoning_field_name_is_also_thinking() {
    // OpenRouter and Ollama call it `reasoning`.
    let input = cat(&[
        &sse(&[
            chunk(json!({"reasoning": "hmm"})),
            chunk(json!({"content": "ok"})),
            finish("stop"),
        ]),
        DONE,
    ]);
    golden(
        &input,
        &[
            message_start(),
            ping(),
            start_thinking(0),
            thinking(0, "hmm"),
            signature(0),
            stop(0),
            start_text(1),
            text(1, "ok"),
            stop(1),
            message_delta("end_turn", None, usage_json(0, 0, 0)),
            message_stop(),
        ],
    );
}

#[test]
fn single_tool_call() {
    let input = cat(&[
        &sse(&[
            chunk(json!({"role": "assistant", "content": null,
                         "tool_calls": [tool_call(0, Some("call_1"), Some("get_weather"), "")]})),
            chunk(json!({"tool_calls": [tool_call(0, None, None, "{\"city\"")]})),
            chunk(json!({"tool_calls": [tool_call(0, None, None, ": \"Paris\"}")]})),
            finish("tool_calls"),
            usage(50, 9, 0),
        ]),
        DONE,
    ]);
    let message = golden(
        &input,
        &[
            message_start(),
            ping(),
            start_tool(0, "call_1", "get_weather"),
            partial_json(0, "{\"city\""),
            partial_json(0, ": \"Paris\"}"),
            stop(0),
            message_delta("tool_use", None, usage_json(50, 9, 0)),
            message_stop(),
        ],
    );
    assert_eq!(
        message.blocks,
        [Block::Tool {
            id: "call_1".into(),
            name: "get_weather".into(),
            json: "{\"city\": \"Paris\"}".into()
        }]
    );
}

#[test]
fn three_parallel_tools_with_interleaved_fragments() {
    let input = cat(&[
        &sse(&[
            chunk(json!({"tool_calls": [tool_call(0, Some("call_a"), Some("read"), "")]})),
            chunk(json!({"tool_calls": [tool_call(1, Some("call_b"), Some("grep"), "")]})),
            chunk(json!({"tool_calls": [tool_call(2, Some("call_c"), Some("ls"), "")]})),
            // Two calls' fragments in one chunk.
            chunk(
                json!({"tool_calls": [tool_call(0, None, None, "{\"path\":"),
                                        tool_call(1, None, None, "{\"pattern\"")]}),
            ),
            // The third call completes while the first is still open: buffered.
            chunk(json!({"tool_calls": [tool_call(2, None, None, "{\"dir\":\"/tmp\"}")]})),
            // The first completes: it closes and the second opens with its buffered part.
            chunk(json!({"tool_calls": [tool_call(0, None, None, "\"a.rs\"}")]})),
            // The second completes: it closes and the third opens, flushed whole.
            chunk(json!({"tool_calls": [tool_call(1, None, None, ":\"fn \\\"main\\\"\"}")]})),
            finish("tool_calls"),
            usage(10, 40, 0),
        ]),
        DONE,
    ]);
    let message = golden(
        &input,
        &[
            message_start(),
            ping(),
            start_tool(0, "call_a", "read"),
            partial_json(0, "{\"path\":"),
            partial_json(0, "\"a.rs\"}"),
            stop(0),
            start_tool(1, "call_b", "grep"),
            partial_json(1, "{\"pattern\""),
            partial_json(1, ":\"fn \\\"main\\\"\"}"),
            stop(1),
            start_tool(2, "call_c", "ls"),
            partial_json(2, "{\"dir\":\"/tmp\"}"),
            stop(2),
            message_delta("tool_use", None, usage_json(10, 40, 0)),
            message_stop(),
        ],
    );
    let inputs: Vec<Value> = message
        .blocks
        .iter()
        .map(|block| match block {
            Block::Tool { json, .. } => serde_json::from_str(json).expect("valid JSON"),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        inputs,
        [
            json!({"path": "a.rs"}),
            json!({"pattern": "fn \"main\""}),
            json!({"dir": "/tmp"})
        ]
    );
}

#[test]
fn text_then_tool() {
    let input = cat(&[
        &sse(&[
            chunk(json!({"content": "Let me check."})),
            chunk(
                json!({"content": null, "tool_calls": [tool_call(0, Some("call_1"), Some("search"), "{\"q\":")]}),
            ),
            chunk(json!({"tool_calls": [tool_call(0, None, None, "\"rust\"}")]})),
            finish("tool_calls"),
        ]),
        DONE,
    ]);
    golden(
        &input,
        &[
            message_start(),
            ping(),
            start_text(0),
            text(0, "Let me check."),
            stop(0),
            start_tool(1, "call_1", "search"),
            partial_json(1, "{\"q\":"),
            partial_json(1, "\"rust\"}"),
            stop(1),
            message_delta("tool_use", None, usage_json(0, 0, 0)),
            message_stop(),
        ],
    );
}

#[test]
fn tool_then_text_with_stop_finish_reports_tool_use() {
    // Some local servers finish a tool-calling turn with "stop"; clients only run tools on
    // `tool_use`.
    let input = cat(&[
        &sse(&[
            chunk(json!({"tool_calls": [tool_call(0, Some("call_1"), Some("ls"), "{}")]})),
            chunk(json!({"content": "Listing now."})),
            finish("stop"),
        ]),
        DONE,
    ]);
    golden(
        &input,
        &[
            message_start(),
            ping(),
            start_tool(0, "call_1", "ls"),
            partial_json(0, "{}"),
            stop(0),
            start_text(1),
            text(1, "Listing now."),
            stop(1),
            message_delta("tool_use", None, usage_json(0, 0, 0)),
            message_stop(),
        ],
    );
}

#[test]
fn text_arriving_while_a_tool_is_incomplete_waits_for_it() {
    let input = cat(&[
        &sse(&[
            chunk(json!({"tool_calls": [tool_call(0, Some("call_1"), Some("f"), "{\"a\":")]})),
            chunk(json!({"content": "note"})),
            chunk(json!({"tool_calls": [tool_call(0, None, None, "1}")]})),
            chunk(json!({"content": " more"})),
            finish("tool_calls"),
        ]),
        DONE,
    ]);
    golden(
        &input,
        &[
            message_start(),
            ping(),
            start_tool(0, "call_1", "f"),
            partial_json(0, "{\"a\":"),
            partial_json(0, "1}"),
            stop(0),
            start_text(1),
            text(1, "note"),
            text(1, " more"),
            stop(1),
            message_delta("tool_use", None, usage_json(0, 0, 0)),
            message_stop(),
        ],
    );
}

#[test]
fn usage_chunk_after_finish_holds_message_delta() {
    let finish_part = sse(&[chunk(json!({"content": "hi"})), finish("stop")]);
    let usage_part = sse(&[usage(100, 7, 60)]);
    let mut translator = StreamTranslator::new(config());
    let mut out = BytesMut::new();
    translator.push(&finish_part, &mut out);
    let so_far = decode(&out);
    assert_eq!(
        so_far.last(),
        Some(&stop(0)),
        "blocks close at finish_reason"
    );
    assert!(
        !so_far.iter().any(|e| e["type"] == "message_delta"),
        "message_delta waits for usage"
    );
    translator.push(&usage_part, &mut out);
    let events = decode(&out);
    assert_eq!(
        &events[events.len() - 2..],
        [
            message_delta("end_turn", None, usage_json(40, 7, 60)),
            message_stop()
        ]
    );
    // `[DONE]` and the end after message_stop add nothing.
    let len = out.len();
    translator.push(DONE, &mut out);
    translator.finish(&mut out);
    assert_eq!(out.len(), len);

    // And every split gives the same.
    let input = cat(&[&finish_part, &usage_part, DONE]);
    golden(
        &input,
        &[
            message_start(),
            ping(),
            start_text(0),
            text(0, "hi"),
            stop(0),
            message_delta("end_turn", None, usage_json(40, 7, 60)),
            message_stop(),
        ],
    );
}

#[test]
fn no_done_after_finish_closes_normally() {
    let with_usage = sse(&[
        chunk(json!({"content": "x"})),
        finish("length"),
        usage(3, 1, 0),
    ]);
    golden(
        &with_usage,
        &[
            message_start(),
            ping(),
            start_text(0),
            text(0, "x"),
            stop(0),
            message_delta("max_tokens", None, usage_json(3, 1, 0)),
            message_stop(),
        ],
    );
    // No usage at all either: the clean end releases message_delta.
    let without_usage = sse(&[chunk(json!({"content": "x"})), finish("stop")]);
    golden(
        &without_usage,
        &[
            message_start(),
            ping(),
            start_text(0),
            text(0, "x"),
            stop(0),
            message_delta("end_turn", None, usage_json(0, 0, 0)),
            message_stop(),
        ],
    );
}

#[test]
fn mid_stream_cut_is_an_error_not_a_message_stop() {
    let input = sse(&[chunk(json!({"content": "The answer is"}))]);
    let message = golden(
        &input,
        &[
            message_start(),
            ping(),
            start_text(0),
            text(0, "The answer is"),
            error(
                "api_error",
                "the upstream stream ended before the response was complete",
            ),
        ],
    );
    assert!(message.error.is_some() && message.stop_reason.is_none());
    // A cut in the middle of a line, too (the partial line is dropped, never parsed).
    let cut = cat(&[&input, b"data: {\"choices\":[{\"delta\":{\"content\":\" 4"]);
    golden(
        &cut,
        &[
            message_start(),
            ping(),
            start_text(0),
            text(0, "The answer is"),
            error(
                "api_error",
                "the upstream stream ended before the response was complete",
            ),
        ],
    );
    // An empty body is a cut before anything.
    golden(
        b"",
        &[error(
            "api_error",
            "the upstream stream ended before the response was complete",
        )],
    );
}

#[test]
fn garbage_line_is_an_error_and_the_end() {
    let input = cat(&[
        &sse(&[chunk(json!({"content": "ok"}))]),
        b"data: {not json\n\n",
        &sse(&[chunk(json!({"content": "never shown"})), finish("stop")]),
        DONE,
    ]);
    let events = translate_all_ways(config, &input);
    assert_eq!(
        &events[..4],
        [message_start(), ping(), start_text(0), text(0, "ok")]
    );
    assert_eq!(events.len(), 5);
    assert_eq!(events[4]["error"]["type"], "api_error");
    let message = events[4]["error"]["message"].as_str().expect("message");
    assert!(
        message.starts_with("the upstream sent a malformed stream chunk"),
        "{message}"
    );
    check_grammar(&events);
}

#[test]
fn empty_first_content_opens_no_block() {
    let input = cat(&[
        &sse(&[
            chunk(json!({"role": "assistant", "content": ""})),
            chunk(json!({"content": ""})),
            finish("stop"),
            usage(5, 0, 0),
        ]),
        DONE,
    ]);
    golden(
        &input,
        &[
            message_start(),
            ping(),
            message_delta("end_turn", None, usage_json(5, 0, 0)),
            message_stop(),
        ],
    );
}

#[test]
fn empty_ids_and_empty_tool_call_lists_on_every_chunk() {
    // As some vLLM and llama.cpp builds send them; a tool id of "" means "none": generated.
    let frame = |delta: Value| json!({"id": "", "choices": [{"index": 0, "delta": delta}]});
    let input = cat(&[
        &sse(&[
            frame(json!({"role": "assistant", "content": "", "tool_calls": []})),
            frame(json!({"content": "Hi", "tool_calls": []})),
            frame(json!({"content": null, "tool_calls": [
                {"id": "", "index": 0, "type": "function", "function": {"name": "f", "arguments": ""}}]})),
            frame(json!({"content": null, "tool_calls": [
                {"id": "", "index": 0, "type": "function", "function": {"name": "", "arguments": "{\"x\":1}"}}]})),
            frame(json!({"content": "", "tool_calls": []})),
            json!({"id": "", "choices": [{"index": 0, "delta": {"tool_calls": []}, "finish_reason": "tool_calls"}]}),
        ]),
        DONE,
    ]);
    golden(
        &input,
        &[
            message_start(),
            ping(),
            start_text(0),
            text(0, "Hi"),
            stop(0),
            start_tool(1, "toolu_0", "f"),
            partial_json(1, "{\"x\":1}"),
            stop(1),
            message_delta("tool_use", None, usage_json(0, 0, 0)),
            message_stop(),
        ],
    );
}

#[test]
fn tool_call_name_arriving_after_its_id_waits() {
    let input = cat(&[
        &sse(&[
            chunk(json!({"tool_calls": [tool_call(0, Some("call_1"), None, "")]})),
            chunk(json!({"tool_calls": [tool_call(0, None, None, "{\"k\":")]})),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"name": "lookup"}}]})),
            chunk(json!({"tool_calls": [tool_call(0, None, None, "true}")]})),
            finish("tool_calls"),
        ]),
        DONE,
    ]);
    golden(
        &input,
        &[
            message_start(),
            ping(),
            start_tool(0, "call_1", "lookup"),
            partial_json(0, "{\"k\":"),
            partial_json(0, "true}"),
            stop(0),
            message_delta("tool_use", None, usage_json(0, 0, 0)),
            message_stop(),
        ],
    );
}

#[test]
fn tool_call_that_never_gets_a_name_is_dropped() {
    let input = cat(&[
        &sse(&[
            chunk(json!({"tool_calls": [tool_call(0, Some("call_1"), None, "{}")]})),
            chunk(json!({"tool_calls": [tool_call(1, Some("call_2"), Some("ok"), "{}")]})),
            finish("tool_calls"),
        ]),
        DONE,
    ]);
    golden(
        &input,
        &[
            message_start(),
            ping(),
            start_tool(0, "call_2", "ok"),
            partial_json(0, "{}"),
            stop(0),
            message_delta("tool_use", None, usage_json(0, 0, 0)),
            message_stop(),
        ],
    );
}

#[test]
fn reused_index_with_new_id_is_a_new_call_and_missing_index_continues_by_id() {
    let input = cat(&[
        &sse(&[
            // Every call numbered 0 (some Ollama builds).
            chunk(json!({"tool_calls": [tool_call(0, Some("call_1"), Some("a"), "{}")]})),
            chunk(json!({"tool_calls": [tool_call(0, Some("call_2"), Some("b"), "{\"q\"")]})),
            chunk(json!({"tool_calls": [tool_call(0, None, None, ":1}")]})),
            // No index at all (some Gemini-compatible servers): by id, else the last call.
            chunk(
                json!({"tool_calls": [{"id": "call_3", "function": {"name": "c", "arguments": "[1,"}}]}),
            ),
            chunk(json!({"tool_calls": [{"function": {"arguments": "2]"}}]})),
            finish("tool_calls"),
        ]),
        DONE,
    ]);
    let message = golden(
        &input,
        &[
            message_start(),
            ping(),
            start_tool(0, "call_1", "a"),
            partial_json(0, "{}"),
            stop(0),
            start_tool(1, "call_2", "b"),
            partial_json(1, "{\"q\""),
            partial_json(1, ":1}"),
            stop(1),
            start_tool(2, "call_3", "c"),
            partial_json(2, "[1,"),
            partial_json(2, "2]"),
            stop(2),
            message_delta("tool_use", None, usage_json(0, 0, 0)),
            message_stop(),
        ],
    );
    assert_eq!(message.blocks.len(), 3);
}

#[test]
fn upstream_error_chunk_mid_stream() {
    let input = cat(&[
        &sse(&[
            chunk(json!({"content": "partial"})),
            json!({"error": {"message": "The server is overloaded, try later", "type": "server_error", "code": 503}}),
            chunk(json!({"content": "never"})),
        ]),
        DONE,
    ]);
    golden(
        &input,
        &[
            message_start(),
            ping(),
            start_text(0),
            text(0, "partial"),
            error("overloaded_error", "The server is overloaded, try later"),
        ],
    );
    // Any other upstream error is an api_error with the upstream's message; an `event: error`
    // SSE event counts too.
    let input = cat(&[
        &sse(&[chunk(json!({"content": "a"}))]),
        b"event: error\ndata: {\"error\":{\"message\":\"context length exceeded\"}}\n\n",
    ]);
    golden(
        &input,
        &[
            message_start(),
            ping(),
            start_text(0),
            text(0, "a"),
            error("api_error", "context length exceeded"),
        ],
    );
}

#[test]
fn matched_stop_sequence_from_vllm_field_and_from_text() {
    let make = || StreamConfig {
        stop_sequences: vec!["###".into(), "END".into()],
        ..config()
    };
    let vllm = cat(&[
        &sse(&[
            chunk(json!({"content": "a"})),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": "###"}]}),
        ]),
        DONE,
    ]);
    golden_with(
        make,
        &vllm,
        &[
            message_start(),
            ping(),
            start_text(0),
            text(0, "a"),
            stop(0),
            message_delta("stop_sequence", Some("###"), usage_json(0, 0, 0)),
            message_stop(),
        ],
    );
    // A server that includes the stop string in the output (or never saw it: the proxy
    // enforces every sequence): the text ends before it, held back only while "E" could
    // still begin "END"; the usage is an estimate (the upstream never reported it).
    let in_text = cat(&[
        &sse(&[
            chunk(json!({"content": "done E"})),
            chunk(json!({"content": "ND"})),
            finish("stop"),
        ]),
        DONE,
    ]);
    let message = golden_with(
        make,
        &in_text,
        &[
            message_start(),
            ping(),
            start_text(0),
            text(0, "done "),
            stop(0),
            message_delta("stop_sequence", Some("END"), usage_json(0, 2, 0)),
            message_stop(),
        ],
    );
    assert_eq!(message.stop_sequence.as_deref(), Some("END"));
}

#[test]
fn refusal_is_text_and_content_filter_is_refusal() {
    let input = cat(&[
        &sse(&[
            chunk(json!({"refusal": "I can't help"})),
            chunk(json!({"refusal": " with that."})),
            finish("content_filter"),
        ]),
        DONE,
    ]);
    golden(
        &input,
        &[
            message_start(),
            ping(),
            start_text(0),
            text(0, "I can't help"),
            text(0, " with that."),
            stop(0),
            message_delta("refusal", None, usage_json(0, 0, 0)),
            message_stop(),
        ],
    );
}

#[test]
fn done_without_finish_reason_completes_and_usage_on_first_chunk_reaches_message_start() {
    let first = json!({"choices": [{"index": 0, "delta": {"content": "x"}}],
                       "usage": {"prompt_tokens": 8, "completion_tokens": 0}});
    let input = cat(&[&sse(&[first]), DONE]);
    let mut start = message_start();
    start["message"]["usage"] = usage_json(8, 0, 0);
    golden(
        &input,
        &[
            start,
            ping(),
            start_text(0),
            text(0, "x"),
            stop(0),
            message_delta("end_turn", None, usage_json(8, 0, 0)),
            message_stop(),
        ],
    );
}

#[test]
fn oversized_upstream_event_is_an_error() {
    let make = || StreamConfig {
        max_event_size: 200,
        ..config()
    };
    let big = "y".repeat(300);
    let input = cat(&[
        &sse(&[
            chunk(json!({"content": "small"})),
            chunk(json!({"content": big})),
        ]),
        DONE,
    ]);
    golden_with(
        make,
        &input,
        &[
            message_start(),
            ping(),
            start_text(0),
            text(0, "small"),
            error(
                "api_error",
                "the upstream stream is unreadable: server-sent event larger than 200 bytes",
            ),
        ],
    );
}

#[test]
fn unknown_event_types_and_empty_data_are_ignored() {
    let input = cat(&[
        b"event: keepalive\ndata: ping\n\ndata:\n\nretry: 100\n\n",
        &sse(&[chunk(json!({"content": "z"})), finish("stop")]),
        DONE,
    ]);
    golden(
        &input,
        &[
            message_start(),
            ping(),
            start_text(0),
            text(0, "z"),
            stop(0),
            message_delta("end_turn", None, usage_json(0, 0, 0)),
            message_stop(),
        ],
    );
}

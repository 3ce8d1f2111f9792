//! The bodies of the fuzz targets, shared by the cargo-fuzz binaries (`fuzz_targets/*.rs`)
//! and the stable corpus replay test (`tests/fuzz_corpus_replay.rs`), which includes this file
//! with `#[path]`. Each function takes the raw fuzz input, runs the code under test and
//! asserts the invariants that must hold for *every* input; a panic is a finding.
#![allow(dead_code)] // Each includer uses only some of the targets.

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use serde_json::Value;
use tower_llm_bridge::cache::{
    AnthropicMessages, CacheNamespace, CacheScope, CodecError, OpenAiChat, StreamCodec,
    cache_key_for_body, cache_key_for_body_unchecked, cache_key_for_request,
};
use tower_llm_bridge::error::ApiError;
use tower_llm_bridge::parsed::ParsedBody;
use tower_llm_bridge::report::{Usage, UsageSlot};
use tower_llm_bridge::sse::{SseDecoder, SseError};
use tower_llm_bridge::translate::response::{
    RAW_ARGUMENTS_KEY, ResponseContext, parse_tool_arguments, translate_error, translate_response,
};
use tower_llm_bridge::translate::responses::stream::ResponsesStreamTranslator;
use tower_llm_bridge::translate::stream::{StreamConfig, StreamStatus, StreamTranslator};
use tower_llm_bridge::translate::tokens::estimate_input_tokens;
use tower_llm_bridge::translate::{
    MaxTokensCaps, ModelMap, ReasoningModels, TranslateOptions, translate_parsed,
};

/// A fuzz target's body: takes the raw input, panics on a broken invariant.
pub type Target = fn(&[u8]);

/// Every target by name, for the replay test: `(name, body)`.
pub const TARGETS: &[(&str, Target)] = &[
    ("request", request),
    ("stream", stream),
    ("response", response),
    ("cache_key", cache_key),
    ("responses_stream", responses_stream),
    ("stream_codec", stream_codec),
    ("config_file", config_file),
];

// ---------------------------------------------------------------------------------------------
// (a) Anthropic request: parse once, translate with two option sets, estimate tokens
// ---------------------------------------------------------------------------------------------

/// Keys the translated OpenAI request may have (SPEC §1.14: an allow-list).
const OPENAI_KEYS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "user",
    "reasoning_effort",
];

fn option_sets() -> [TranslateOptions; 2] {
    let plain = TranslateOptions::default();
    let mut custom = TranslateOptions::default().model_map(
        ModelMap::new()
            .contains("haiku", "o3-mini")
            .default_model("gpt-4o"),
    );
    custom.reasoning_models = ReasoningModels::new(["o3", "gpt-5"]);
    custom.max_tokens_caps = MaxTokensCaps::new().cap("gpt-4o", 16_384);
    custom.stream_usage = false;
    custom.forward_thinking = true;
    [plain, custom]
}

/// `ParsedBody::parse` then `translate_parsed` (two option sets) and `estimate_input_tokens`.
pub fn request(data: &[u8]) {
    let Ok(parsed) = ParsedBody::parse(Bytes::copy_from_slice(data)) else {
        return; // Not JSON: the service answers 400 before translating (tested elsewhere).
    };
    let json = &parsed.to_value();
    for options in option_sets() {
        match translate_parsed(&parsed, &options) {
            Ok(translated) => check_translated(json, &translated),
            Err(err) => check_client_error(&err, StatusCode::BAD_REQUEST),
        }
    }
    match estimate_input_tokens(json) {
        Ok(_) => {}
        Err(err) => check_client_error(&err, StatusCode::BAD_REQUEST),
    }
}

fn check_translated(input: &Value, translated: &tower_llm_bridge::translate::TranslatedRequest) {
    let body: Value = serde_json::from_slice(&translated.body).expect("translation is JSON");
    let fields = body.as_object().expect("translation is an object");
    for key in fields.keys() {
        assert!(OPENAI_KEYS.contains(&key.as_str()), "{key} sent upstream");
    }
    assert_eq!(
        input["model"].as_str(),
        Some(translated.client_model.as_str())
    );
    assert_eq!(
        fields["model"].as_str(),
        Some(translated.upstream_model.as_str())
    );
    let max = match (
        fields.get("max_tokens"),
        fields.get("max_completion_tokens"),
    ) {
        (Some(max), None) | (None, Some(max)) => max.as_u64().expect("an integer"),
        other => panic!("exactly one of max_tokens/max_completion_tokens: {other:?}"),
    };
    assert!((1..=1_000_000).contains(&max), "max_tokens {max}");
    assert_eq!(
        fields
            .get("stream")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        translated.stream
    );
    if let Some(stop) = fields.get("stop") {
        let stop = stop.as_array().expect("stop is an array");
        assert!(!stop.is_empty() && stop.len() <= 4);
    }
    for message in fields["messages"].as_array().expect("messages") {
        let role = message["role"].as_str().expect("role");
        assert!(
            ["system", "developer", "user", "assistant", "tool"].contains(&role),
            "{role}"
        );
        if role == "tool" {
            assert!(message["tool_call_id"].is_string());
        }
        for call in message
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let arguments = call["function"]["arguments"].as_str().expect("arguments");
            let arguments: Value = serde_json::from_str(arguments).expect("arguments are JSON");
            assert!(arguments.is_object());
        }
    }
}

/// The error is the expected status and renders as Anthropic's error shape.
fn check_client_error(err: &ApiError, status: StatusCode) {
    assert_eq!(err.status(), status, "{err}");
    check_error_shape(err);
}

fn check_error_shape(err: &ApiError) {
    assert!(!err.message().is_empty());
    let body: Value = serde_json::from_slice(&err.anthropic_body()).expect("error is JSON");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], err.error_type());
    assert_eq!(body["error"]["message"], err.message());
    assert_eq!(body.as_object().map(|o| o.len()), Some(2));
}

// ---------------------------------------------------------------------------------------------
// (b) SSE decoder and stream translator, fed the same bytes whole and split
// ---------------------------------------------------------------------------------------------

const MESSAGE_ID: &str = "msg_fuzz";
const MODEL: &str = "claude-fuzz";

/// A stream input split up: `[flags, n, (u16 LE offset) × n, bytes…]`. `flags` picks the
/// configuration; the offsets (modulo the length) are where the bytes are split.
struct SplitInput<'a> {
    flags: u8,
    whole: &'a [u8],
    pieces: Vec<&'a [u8]>,
}

fn split_input(data: &[u8]) -> Option<SplitInput<'_>> {
    let (&flags, rest) = data.split_first()?;
    let (&count, mut rest) = rest.split_first()?;
    let mut offsets = Vec::new();
    for _ in 0..(count % 16) {
        let [lo, hi, tail @ ..] = rest else { break };
        offsets.push(u16::from_le_bytes([*lo, *hi]) as usize);
        rest = tail;
    }
    let whole = rest;
    let mut cuts: Vec<usize> = offsets.iter().map(|o| o % (whole.len() + 1)).collect();
    cuts.sort_unstable();
    let mut pieces = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for cut in cuts {
        pieces.push(&whole[start..cut]);
        start = cut;
    }
    pieces.push(&whole[start..]);
    Some(SplitInput {
        flags,
        whole,
        pieces,
    })
}

/// The stop sequences of stream configurations with `flags & 1`.
const STOP_SEQUENCES: [&str; 3] = ["\n\nHuman:", "END", "é"];

/// The stream configuration `flags` picks: bit 0 stop sequences, bit 1 a small event limit.
fn stream_config(flags: u8) -> StreamConfig {
    let mut config = StreamConfig::new(MODEL);
    config.message_id = MESSAGE_ID.to_owned();
    config.max_event_size = max_event_size(flags);
    if flags & 1 != 0 {
        config.stop_sequences = STOP_SEQUENCES.map(str::to_owned).to_vec();
    }
    config
}

fn max_event_size(flags: u8) -> usize {
    if flags & 2 != 0 { 256 } else { 8 * 1024 * 1024 }
}

/// Input layout: see [`SplitInput`]; bit 2 of `flags` ends the stream with an upstream
/// failure instead of a clean end.
pub fn stream(data: &[u8]) {
    let Some(SplitInput {
        flags,
        whole: input,
        pieces,
    }) = split_input(data)
    else {
        return;
    };
    let max_event_size = max_event_size(flags);
    let config = || stream_config(flags);

    // The decoder alone: the same events whatever the split.
    let whole = decode_all(&[input], max_event_size);
    let split = decode_all(&pieces, max_event_size);
    assert_eq!(whole, split, "the SSE decoder depends on the split points");

    // The translators of both wires: a valid Anthropic stream with exactly one terminal
    // event, the same whatever the split.
    let whole = translate_all(
        &mut StreamTranslator::new(config()),
        &[input],
        flags & 4 != 0,
    );
    let split = translate_all(
        &mut StreamTranslator::new(config()),
        &pieces,
        flags & 4 != 0,
    );
    assert_eq!(
        whole, split,
        "the stream translator depends on the split points"
    );
    let whole = translate_all(
        &mut ResponsesStreamTranslator::new(config()),
        &[input],
        flags & 4 != 0,
    );
    let split = translate_all(
        &mut ResponsesStreamTranslator::new(config()),
        &pieces,
        flags & 4 != 0,
    );
    assert_eq!(
        whole, split,
        "the Responses stream translator depends on the split points"
    );
}

/// What `translate_all` needs of a stream translator (both wires' have the same methods).
trait Translate {
    fn push(&mut self, upstream: &[u8], out: &mut BytesMut);
    fn finish(&mut self, out: &mut BytesMut);
    fn fail(&mut self, err: &ApiError, out: &mut BytesMut);
    fn status(&self) -> StreamStatus;
}

macro_rules! translate_impl {
    ($ty:ty) => {
        impl Translate for $ty {
            fn push(&mut self, upstream: &[u8], out: &mut BytesMut) {
                <$ty>::push(self, upstream, out)
            }
            fn finish(&mut self, out: &mut BytesMut) {
                <$ty>::finish(self, out)
            }
            fn fail(&mut self, err: &ApiError, out: &mut BytesMut) {
                <$ty>::fail(self, err, out)
            }
            fn status(&self) -> StreamStatus {
                <$ty>::status(self)
            }
        }
    };
}
translate_impl!(StreamTranslator);
translate_impl!(ResponsesStreamTranslator);

type Decoded = Vec<Result<(String, String, String), SseError>>;

fn decode_all(pieces: &[&[u8]], max_event_size: usize) -> Decoded {
    let mut decoder = SseDecoder::new().with_max_event_size(max_event_size);
    let mut events = Vec::new();
    let mut on_event = |event: Result<tower_llm_bridge::sse::SseEvent<'_>, SseError>| {
        events.push(event.map(|e| (e.event.to_owned(), e.data.to_owned(), e.id.to_owned())));
    };
    for piece in pieces {
        decoder.push(piece, &mut on_event);
    }
    decoder.finish(&mut on_event);
    events
}

/// Runs the translator over `pieces`, then ends it (cleanly, or with an upstream failure when
/// `fail`), checks the output and returns its events with generated tool ids normalised.
fn translate_all(translator: &mut impl Translate, pieces: &[&[u8]], fail: bool) -> Vec<Value> {
    let mut out = BytesMut::new();
    for piece in pieces {
        translator.push(piece, &mut out);
        let status = translator.status();
        let events = check_events(&out, status.is_done());
        match status {
            StreamStatus::Streaming => {}
            StreamStatus::Completed => assert_eq!(last_type(&events), "message_stop"),
            StreamStatus::Failed => assert_eq!(last_type(&events), "error"),
        }
    }
    if fail {
        translator.fail(&ApiError::bad_gateway("fuzz: upstream cut"), &mut out);
    } else {
        translator.finish(&mut out);
    }
    let status = translator.status();
    assert!(status.is_done(), "ended streams are done");
    let before = out.len();
    translator.finish(&mut out);
    translator.fail(&ApiError::bad_gateway("again"), &mut out);
    translator.push(b"data: {\"choices\":[]}\n\n", &mut out);
    assert_eq!(out.len(), before, "nothing is written after the end");

    let events = check_events(&out, true);
    match status {
        StreamStatus::Completed => assert_eq!(last_type(&events), "message_stop"),
        StreamStatus::Failed => assert_eq!(last_type(&events), "error"),
        StreamStatus::Streaming => unreachable!(),
    }
    normalise(events)
}

fn last_type(events: &[Value]) -> &str {
    events
        .last()
        .and_then(|e| e["type"].as_str())
        .unwrap_or_default()
}

/// Checks the framing and grammar of Anthropic SSE output; `ended` says the stream is over
/// (so it must end with exactly one terminal event).
fn check_events(out: &[u8], ended: bool) -> Vec<Value> {
    let text = std::str::from_utf8(out).expect("output is UTF-8");
    assert!(
        text.is_empty() || text.ends_with("\n\n"),
        "whole events only"
    );
    let mut events = Vec::new();
    for frame in text.split_terminator("\n\n") {
        let (event_line, data_line) = frame.split_once('\n').expect("two lines");
        let name = event_line.strip_prefix("event: ").expect("event line");
        let data = data_line.strip_prefix("data: ").expect("data line");
        assert!(!data.contains('\n'), "one data line");
        let json: Value = serde_json::from_str(data).expect("data is JSON");
        assert_eq!(json["type"], name, "the event line names the JSON type");
        events.push(json);
    }
    let terminals = events
        .iter()
        .filter(|e| matches!(e["type"].as_str(), Some("message_stop" | "error")))
        .count();
    if ended {
        assert_eq!(terminals, 1, "exactly one terminal event");
        assert!(matches!(last_type(&events), "message_stop" | "error"));
    } else {
        assert_eq!(terminals, 0, "no terminal event while streaming");
    }
    check_grammar(&events);
    events
}

fn check_grammar(events: &[Value]) {
    let mut open: Option<(u64, String)> = None;
    let mut next_index = 0;
    let mut signed = false;
    let mut delta_seen = false;
    for (i, event) in events.iter().enumerate() {
        let kind = event["type"].as_str().expect("type");
        if kind == "error" {
            assert_eq!(i, events.len() - 1, "nothing after an error");
            assert!(event["error"]["type"].is_string());
            assert!(event["error"]["message"].is_string());
            continue;
        }
        match (i, kind) {
            (0, "message_start") => {
                let message = &event["message"];
                assert_eq!(message["id"], MESSAGE_ID);
                assert_eq!(message["model"], MODEL);
                assert_eq!(message["role"], "assistant");
                check_usage(&message["usage"]);
            }
            (0, other) => panic!("first event {other}"),
            (1, "ping") => {}
            (1, other) => panic!("second event {other}"),
            (_, "content_block_start") => {
                assert!(!delta_seen && open.is_none(), "one open block at a time");
                assert_eq!(event["index"], next_index, "indices 0, 1, 2, …");
                next_index += 1;
                let block = &event["content_block"];
                let block_type = block["type"].as_str().expect("block type").to_owned();
                if block_type == "tool_use" {
                    assert!(block["id"].as_str().is_some_and(|id| !id.is_empty()));
                    assert!(block["name"].as_str().is_some_and(|n| !n.is_empty()));
                }
                assert!(["thinking", "text", "tool_use"].contains(&block_type.as_str()));
                open = Some((event["index"].as_u64().expect("index"), block_type));
                signed = false;
            }
            (_, "content_block_delta") => {
                let (index, block_type) = open.as_ref().expect("delta inside a block");
                assert_eq!(event["index"], *index);
                assert!(!signed, "nothing after the signature");
                let delta_type = event["delta"]["type"].as_str().expect("delta type");
                match (block_type.as_str(), delta_type) {
                    ("thinking", "thinking_delta")
                    | ("text", "text_delta")
                    | ("tool_use", "input_json_delta") => {}
                    ("thinking", "signature_delta") => signed = true,
                    other => panic!("delta {other:?}"),
                }
            }
            (_, "content_block_stop") => {
                let (index, block_type) = open.take().expect("stop of an open block");
                assert_eq!(event["index"], index);
                assert!(block_type != "thinking" || signed, "thinking is signed");
            }
            (_, "message_delta") => {
                assert!(
                    open.is_none() && !delta_seen,
                    "one message_delta, blocks closed"
                );
                delta_seen = true;
                assert!(event["delta"]["stop_reason"].is_string());
                check_usage(&event["usage"]);
            }
            (_, "message_stop") => {
                assert!(delta_seen, "message_delta before message_stop");
                assert_eq!(i, events.len() - 1, "message_stop is last");
            }
            (_, other) => panic!("unexpected event {other}"),
        }
    }
}

fn check_usage(usage: &Value) {
    for field in ["input_tokens", "output_tokens"] {
        assert!(usage[field].is_u64(), "usage.{field}: {usage}");
    }
}

/// Tool ids the translator generates (`toolu_…`) are random: number them in order.
fn normalise(mut events: Vec<Value>) -> Vec<Value> {
    let mut n = 0;
    for event in &mut events {
        if let Some(id) = event.pointer_mut("/content_block/id")
            && id.as_str().is_some_and(|id| id.starts_with("toolu_"))
        {
            *id = Value::String(format!("toolu_{n}"));
            n += 1;
        }
    }
    events
}

// ---------------------------------------------------------------------------------------------
// (b2) The Responses stream translator on its own
// ---------------------------------------------------------------------------------------------

/// The Responses wire's stream translator alone (the `stream` target runs it too, next to
/// the chat translator, whose inputs dominate that corpus). Input layout: see
/// [`SplitInput`]; `flags` bit 3 shrinks the buffer for out-of-order items to 512 bytes.
/// Besides the grammar and the split-independence of `stream`: the usage the translator
/// reports (`usage()`, the metrics layer's [`UsageSlot`]) is the final `message_delta`'s, and
/// no text block shows a configured stop sequence.
pub fn responses_stream(data: &[u8]) {
    let Some(SplitInput {
        flags,
        whole,
        pieces,
    }) = split_input(data)
    else {
        return;
    };
    let run = |pieces: &[&[u8]]| {
        let slot = UsageSlot::new();
        let mut config = stream_config(flags);
        config.usage_slot = Some(slot.clone());
        if flags & 8 != 0 {
            config.max_buffered = 512;
        }
        let mut translator = ResponsesStreamTranslator::new(config);
        let events = translate_all(&mut translator, pieces, flags & 4 != 0);
        check_reported_usage(&events, translator.usage().map(Usage::from), slot.get());
        check_stop_sequences(&events, flags & 1 != 0);
        events
    };
    assert_eq!(
        run(&[whole]),
        run(&pieces),
        "the Responses stream translator depends on the split points"
    );
}

/// A completed stream reports the usage of its `message_delta`; a failed one reports none.
fn check_reported_usage(events: &[Value], reported: Option<Usage>, slot: Option<Usage>) {
    let Some(delta) = events.iter().find(|e| e["type"] == "message_delta") else {
        assert_eq!(reported, None, "usage without a message_delta");
        return;
    };
    let field = |name: &str| delta["usage"][name].as_u64().unwrap_or_default();
    let expected = Usage {
        input_tokens: field("input_tokens"),
        output_tokens: field("output_tokens"),
        cache_read_input_tokens: field("cache_read_input_tokens"),
        cache_creation_input_tokens: field("cache_creation_input_tokens"),
    };
    assert_eq!(
        reported,
        Some(expected),
        "usage() is not the message_delta's"
    );
    assert_eq!(
        slot,
        Some(expected),
        "the usage slot is not the message_delta's"
    );
}

/// With stop sequences on, no text block contains one, and a `stop_sequence` stop names
/// one of them; without, no stream stops at a sequence.
fn check_stop_sequences(events: &[Value], configured: bool) {
    let mut texts: Vec<String> = Vec::new();
    for event in events {
        match event["type"].as_str() {
            Some("content_block_start") => texts.push(String::new()),
            Some("content_block_delta") if event["delta"]["type"] == "text_delta" => {
                if let (Some(text), Some(open)) =
                    (event["delta"]["text"].as_str(), texts.last_mut())
                {
                    open.push_str(text);
                }
            }
            Some("message_delta") => {
                let sequence = &event["delta"]["stop_sequence"];
                let reason = &event["delta"]["stop_reason"];
                match sequence.as_str() {
                    None => assert!(sequence.is_null() && reason != "stop_sequence"),
                    Some(sequence) => {
                        assert!(
                            configured && STOP_SEQUENCES.contains(&sequence),
                            "{sequence:?}"
                        );
                        assert_eq!(reason, "stop_sequence");
                    }
                }
            }
            _ => {}
        }
    }
    if configured {
        for text in texts {
            for sequence in STOP_SEQUENCES {
                assert!(!text.contains(sequence), "{sequence:?} sent in {text:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (c) OpenAI response and error bodies
// ---------------------------------------------------------------------------------------------

/// `translate_response` (both wires), `translate_error` (several statuses) and
/// `parse_tool_arguments` on the raw bytes of an upstream body.
pub fn response(data: &[u8]) {
    let stop_sequences = ["END".to_owned(), "\n\nHuman:".to_owned()];
    let context = ResponseContext {
        client_model: MODEL,
        stop_sequences: &stop_sequences,
    };
    match translate_response(data, &context) {
        Ok(translated) => check_message(&translated.body, &stop_sequences, false),
        Err(err) => {
            assert_eq!(err.status(), StatusCode::BAD_GATEWAY, "{err}");
            assert_eq!(err.error_type(), "api_error");
            check_error_shape(&err);
        }
    }
    // The same bytes as an answer of the Responses wire: a message, or an error (a failed
    // response carries the upstream's error, whose status may be a client one).
    match tower_llm_bridge::translate::responses::response::translate_response(data, &context) {
        Ok(translated) => check_message(&translated.body, &stop_sequences, true),
        Err(err) => {
            assert!(
                err.status().is_client_error() || err.status().is_server_error(),
                "{err}"
            );
            check_error_shape(&err);
        }
    }
    for status in [400, 401, 404, 413, 418, 429, 500, 502, 503, 504, 529] {
        let status = StatusCode::from_u16(status).expect("status");
        let retry_after = http::HeaderValue::from_static("3");
        let err = translate_error(status, Some(&retry_after), data);
        assert!(
            err.status().is_client_error() || err.status().is_server_error(),
            "{err}"
        );
        check_error_shape(&err);
        let res: http::Response<Bytes> = err.into_anthropic_response();
        assert_eq!(res.headers()["retry-after"], "3");
    }
    let arguments = String::from_utf8_lossy(data);
    let (input, faithful) = parse_tool_arguments(Some(&arguments));
    assert!(input.is_object());
    if !faithful {
        assert_eq!(input[RAW_ARGUMENTS_KEY], *arguments);
    }
}

/// An Anthropic message; `signed` says thinking blocks carry a signature (the Responses
/// wire signs reasoning items), else it is empty.
fn check_message(body: &[u8], stop_sequences: &[String], signed: bool) {
    let message: Value = serde_json::from_slice(body).expect("message is JSON");
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["model"], MODEL);
    assert!(
        message["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("msg_"))
    );
    for block in message["content"].as_array().expect("content") {
        match block["type"].as_str() {
            Some("text") => assert!(block["text"].as_str().is_some_and(|t| !t.is_empty())),
            Some("thinking") => {
                assert!(block["thinking"].is_string());
                let signature = block["signature"].as_str().expect("signature");
                assert_eq!(signature.is_empty(), !signed, "{block}");
            }
            Some("tool_use") => {
                assert!(block["id"].as_str().is_some_and(|id| !id.is_empty()));
                assert!(block["name"].as_str().is_some_and(|n| !n.is_empty()));
                assert!(block["input"].is_object());
            }
            other => panic!("block type {other:?}"),
        }
    }
    let stop_reason = message["stop_reason"].as_str().expect("stop_reason");
    assert!(
        [
            "end_turn",
            "max_tokens",
            "stop_sequence",
            "tool_use",
            "refusal"
        ]
        .contains(&stop_reason),
        "{stop_reason}"
    );
    match message["stop_sequence"].as_str() {
        None => assert!(message["stop_sequence"].is_null()),
        Some(sequence) => {
            assert_eq!(stop_reason, "stop_sequence");
            assert!(stop_sequences.iter().any(|s| s == sequence), "{sequence}");
        }
    }
    let usage = &message["usage"];
    for field in [
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
    ] {
        assert!(usage[field].is_u64(), "usage.{field}");
    }
}

// ---------------------------------------------------------------------------------------------
// (d) The cache key
// ---------------------------------------------------------------------------------------------

/// Top-level fields the key leaves out (they do not change the answer).
const KEY_EXCLUDED: [&str; 4] = ["stream", "stream_options", "metadata", "user"];

/// `cache_key_for_request` on arbitrary JSON: the format (`anth:`/`oai:` + 64 hex digits),
/// determinism, canonical form (the same key whatever the key order at any depth and
/// whatever the formatting of the bytes), scope and namespace separation, and the
/// exclude-list (only `stream`, `stream_options`, `metadata`, `user` are ignored).
///
/// And the one-pass key on the raw bytes (`cache_key_for_body`, what the cache layer uses) is
/// that same key whenever serde_json parses the bytes into a `Value`, and refuses them, with
/// serde_json's error, whenever it does not.
pub fn cache_key(data: &[u8]) {
    let scope = CacheScope {
        backend_name: "http://127.0.0.1:1/v1",
        auth_identity: "tenant-a",
    };
    let one_pass = cache_key_for_body_unchecked(
        data,
        CacheNamespace::Anthropic,
        &scope,
        tower_llm_bridge::parsed::DEFAULT_MAX_JSON_DEPTH,
    );
    let parsed: Result<Value, _> = tower_llm_bridge::parsed::from_slice_max_depth(
        data,
        tower_llm_bridge::parsed::DEFAULT_MAX_JSON_DEPTH,
    );
    let value = match parsed {
        Ok(value) => value,
        Err(err) => {
            assert_eq!(
                one_pass, None,
                "the one-pass key accepted what serde_json refuses"
            );
            let ours =
                cache_key_for_body(data, CacheNamespace::Anthropic, &scope).expect_err("refused");
            assert_eq!(ours.to_string(), err.to_string());
            return;
        }
    };
    let key = cache_key_for_request(&value, CacheNamespace::Anthropic, &scope);
    assert_eq!(
        one_pass.as_deref(),
        Some(key.as_str()),
        "the one-pass key differs from the tree's"
    );
    let hex = key.strip_prefix("anth:").expect("anth: prefix");
    assert_eq!(hex.len(), 64, "{key}");
    assert!(
        hex.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{key}"
    );
    assert_eq!(
        key,
        cache_key_for_request(&value, CacheNamespace::Anthropic, &scope)
    );

    let openai = cache_key_for_request(&value, CacheNamespace::OpenAI, &scope);
    assert!(
        openai.starts_with("oai:") && openai[4..] != *hex,
        "namespaces never share"
    );
    for other in [
        CacheScope {
            auth_identity: "tenant-b",
            ..scope
        },
        CacheScope {
            backend_name: "http://127.0.0.1:2/v1",
            ..scope
        },
        CacheScope {
            auth_identity: "",
            backend_name: "http://127.0.0.1:1/v1tenant-a",
        },
    ] {
        assert_ne!(
            key,
            cache_key_for_request(&value, CacheNamespace::Anthropic, &other)
        );
    }

    // Canonical: key order at every depth and the byte formatting do not matter.
    let reversed = reverse_keys(&value);
    assert_eq!(
        key,
        cache_key_for_request(&reversed, CacheNamespace::Anthropic, &scope)
    );
    let pretty = serde_json::to_vec_pretty(&value).expect("serializes");
    let reparsed: Value = tower_llm_bridge::parsed::from_slice_max_depth(
        &pretty,
        tower_llm_bridge::parsed::DEFAULT_MAX_JSON_DEPTH,
    )
    .expect("round trip");
    // serde_json's default float parser may land one ULP off on a re-parse (`1E-305`): the
    // key follows the value, so only an exact round trip must give the same key.
    if reparsed == value {
        assert_eq!(
            key,
            cache_key_for_request(&reparsed, CacheNamespace::Anthropic, &scope)
        );
    }

    let Value::Object(map) = &value else {
        return;
    };
    // The exclude-list, and only it, is ignored at the top level.
    let mut changed = map.clone();
    for field in KEY_EXCLUDED {
        changed.insert(field.to_owned(), Value::from("fuzz-ignored"));
    }
    assert_eq!(
        key,
        cache_key_for_request(&Value::Object(changed), CacheNamespace::Anthropic, &scope),
        "excluded fields change the key"
    );
    if map.contains_key("fuzz_extra") {
        return;
    }
    let mut changed = map.clone();
    changed.insert("fuzz_extra".to_owned(), Value::from(1));
    assert_ne!(
        key,
        cache_key_for_request(&Value::Object(changed), CacheNamespace::Anthropic, &scope),
        "an unknown field must change the key (exclude-list, not allow-list)"
    );
}

/// The same JSON with every object's keys inserted in reverse order (visible only with
/// serde_json's `preserve_order`, which the replay test's feature set switches on).
fn reverse_keys(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .rev()
                .map(|(k, v)| (k.clone(), reverse_keys(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(reverse_keys).collect()),
        other => other.clone(),
    }
}

// ---------------------------------------------------------------------------------------------
// (e) The cache's stream codecs: recording streams, replaying stored answers
// ---------------------------------------------------------------------------------------------

/// Both stream codecs of the response cache on one input (layout: see [`SplitInput`];
/// `flags` bit 0: the replaying request asks for usage, `stream_options.include_usage`):
///
/// - **recording**: the bytes as a streamed answer passing through the cache. Accumulation
///   is the same whatever the split, an accumulator that refused a piece never yields an
///   answer, and an answer it yields has the API's shape;
/// - **replaying**: the recorded answer, and the bytes as a stored answer (a stored value may
///   come from another release or a shared Redis). A rendered stream is accumulated back
///   into an answer, and one more round gives that answer again (a fixpoint);
/// - **cutting**: the error event that ends a cut stream is never recorded.
pub fn stream_codec(data: &[u8]) {
    let Some(SplitInput {
        flags,
        whole,
        pieces,
    }) = split_input(data)
    else {
        return;
    };
    let request = if flags & 1 != 0 {
        serde_json::json!({"stream": true, "stream_options": {"include_usage": true}})
    } else {
        serde_json::json!({"stream": true})
    };
    let codecs: [(&str, &dyn StreamCodec); 2] =
        [("anthropic", &AnthropicMessages), ("openai", &OpenAiChat)];
    for (name, codec) in codecs {
        let recorded = accumulate(codec, &[whole]);
        assert_eq!(
            recorded,
            accumulate(codec, &pieces),
            "{name}: accumulation depends on the split points"
        );
        if let Ok(answer) = &recorded {
            check_recorded(name, answer);
            replay(name, codec, answer, &request, true);
        }
        replay(name, codec, whole, &request, false);

        let message = String::from_utf8_lossy(&whole[..whole.len().min(64)]);
        let cut = codec.error_event(&message);
        assert_eq!(
            accumulate(codec, &[&cut]),
            Err(CodecError::Upstream),
            "{name}: the error event of a cut stream is recorded"
        );
    }
}

/// Feeds `pieces` to a fresh accumulator, as the cache's recorder does, and finishes it.
fn accumulate(codec: &dyn StreamCodec, pieces: &[&[u8]]) -> Result<Bytes, CodecError> {
    let mut accumulator = codec.accumulator();
    let mut refused = None;
    for piece in pieces {
        if let Err(err) = accumulator.push(piece) {
            refused.get_or_insert(err);
        }
    }
    let finished = accumulator.finish();
    if let Some(err) = refused {
        assert!(finished.is_err(), "an answer after a refused piece ({err})");
    }
    finished
}

/// A recorded answer has the shape of the API's JSON answer.
fn check_recorded(name: &str, answer: &[u8]) {
    let answer: Value = serde_json::from_slice(answer).expect("a recorded answer is JSON");
    if name == "anthropic" {
        let content = answer["content"].as_array().expect("content is a list");
        assert!(content.iter().all(Value::is_object), "{answer}");
    } else {
        assert_eq!(answer["object"], "chat.completion");
        let choices = answer["choices"].as_array().expect("choices is a list");
        assert!(!choices.is_empty());
        for choice in choices {
            assert!(
                choice["index"].is_u64() && choice["message"].is_object(),
                "{choice}"
            );
            assert!(!choice["finish_reason"].is_null(), "{choice}");
        }
    }
}

/// Renders `answer` as the stream a cache hit serves: well-formed SSE whose events are JSON.
/// A rendered *recorded* answer (`recorded`) records back; whenever a rendering records,
/// the answer renders and records to itself again (a fixpoint). (A stored answer that lacks
/// what a clean end needs, such as a finish reason, renders faithfully without it, so its
/// stream is not recorded again.)
fn replay(name: &str, codec: &dyn StreamCodec, answer: &[u8], request: &Value, recorded: bool) {
    let parsed = ParsedBody::from_json(request.clone());
    let stream = match codec.render_stream(answer, &parsed) {
        Ok(stream) => stream,
        Err(CodecError::Malformed(_)) => return,
        Err(CodecError::Unsuitable(why)) => {
            assert!(
                request.pointer("/stream_options/include_usage").is_some(),
                "{name}: unsuitable for a request that asks nothing ({why})"
            );
            return;
        }
        Err(err) => panic!("{name}: rendering fails with {err:?}"),
    };
    for event in decode_all(&[&stream], usize::MAX) {
        let (_, data, _) = event.unwrap_or_else(|err| panic!("{name}: rendered SSE: {err}"));
        if data != "[DONE]" {
            serde_json::from_str::<Value>(&data)
                .unwrap_or_else(|err| panic!("{name}: a rendered event is not JSON ({err})"));
        }
    }
    let once = match accumulate(codec, &[&stream]) {
        Ok(once) => once,
        Err(err) if recorded => {
            panic!("{name}: a recorded answer's rendering does not record ({err})")
        }
        Err(_) => return,
    };
    let again = codec
        .render_stream(&once, &parsed)
        .unwrap_or_else(|err| panic!("{name}: a recorded rendering does not render ({err})"));
    let twice = accumulate(codec, &[&again])
        .unwrap_or_else(|err| panic!("{name}: a second rendering does not record ({err})"));
    let json = |bytes: &[u8]| serde_json::from_slice::<Value>(bytes).expect("answer is JSON");
    assert_eq!(
        json(&once),
        json(&twice),
        "{name}: replay is not a fixpoint"
    );
}

// ---------------------------------------------------------------------------------------------
// (f) The example proxy's configuration file
// ---------------------------------------------------------------------------------------------

#[path = "../../examples/proxy/config.rs"]
mod config;
#[path = "../../examples/proxy/config_file.rs"]
mod config_file;

/// Where the configuration target's file is "read" from (no file system is involved).
const CONFIG_PATH: &str = "fuzz.toml";
/// The value of every variable a backend's `api_key_env` may name that starts with `FUZZ`;
/// variables starting with `BAD` hold it with a line break (not a header value).
const CONFIG_SECRET: &str = "sk-fuzz-Zq9xTopSecret";

fn config_env(name: &str) -> Option<String> {
    if name.starts_with("FUZZ") {
        Some(CONFIG_SECRET.to_owned())
    } else if name.starts_with("BAD") {
        Some(format!("{CONFIG_SECRET}\nx"))
    } else {
        None
    }
}

/// The proxy's whole configuration path (`Config::from_sources` with `--config`) on the
/// bytes as the file's content: parsing, the validation of each setting as if it were a flag,
/// the backends and routes. Any input gives a configuration or an error that names the file
/// and, when it has one, a line of the file; no error and no `Debug` output shows a key.
pub fn config_file(data: &[u8]) {
    let args = ["--config".to_owned(), CONFIG_PATH.to_owned()];
    let read = |path: &str| {
        assert_eq!(path, CONFIG_PATH);
        String::from_utf8(data.to_vec())
            .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidData, err))
    };
    let outcome = config::Config::from_sources_reading(args, config_env, read);
    // The fuzzer may write the key itself; only a key it did not write must never show.
    let may_show_key = data
        .windows(CONFIG_SECRET.len())
        .any(|w| w == CONFIG_SECRET.as_bytes());
    match outcome {
        Err(err) => {
            let message = err.to_string();
            check_config_error(data, &message);
            assert!(
                may_show_key || !message.contains(CONFIG_SECRET),
                "the error shows a key: {message}"
            );
        }
        Ok(config::Command::Help(_)) => panic!("help without --help"),
        Ok(config::Command::Run(config)) => {
            assert!(
                may_show_key || !format!("{config:?}").contains(CONFIG_SECRET),
                "Debug shows a key"
            );
            if let Some(routing) = &config.routing {
                assert!(!routing.backends.is_empty() && !routing.routes.is_empty());
                for (i, backend) in routing.backends.iter().enumerate() {
                    assert!(!backend.name.is_empty());
                    assert!(routing.backends[..i].iter().all(|b| b.name != backend.name));
                    assert!(backend.headers.iter().all(|(_, v)| v.is_sensitive()));
                    assert!(!backend.base_url.to_string().contains('@'));
                }
                for route in &routing.routes {
                    assert!(!route.pattern.is_empty() && !route.targets.is_empty());
                    for (backend, model) in &route.targets {
                        assert!(*backend < routing.backends.len());
                        assert!(!model.is_empty());
                    }
                }
            }
            for model in ["claude-sonnet-4-5", "claude-3-5-haiku", "gpt-4o", ""] {
                let _ = config.map_model(model);
            }
        }
    }
}

/// A configuration error names the file, and a line of it when it names one:
/// `fuzz.toml:LINE: field: why`, or `fuzz.toml: why` for the file as a whole.
fn check_config_error(data: &[u8], message: &str) {
    let rest = message
        .strip_prefix(CONFIG_PATH)
        .and_then(|rest| rest.strip_prefix(':'))
        .unwrap_or_else(|| panic!("the error does not name the file: {message}"));
    if let Some((line, _)) = rest.split_once(": ")
        && let Ok(line) = line.parse::<usize>()
    {
        let lines = data.iter().filter(|&&b| b == b'\n').count() + 1;
        assert!(
            (1..=lines).contains(&line),
            "line {line} of {lines}: {message}"
        );
    } else {
        assert!(rest.starts_with(' '), "{message}");
    }
}

// --- Self-checks for the replay test: the checks above catch what they are for. ---------------

/// [`check_stop_sequences`] on `events` (a JSON array).
pub fn check_stop_sequences_for_test(events: &Value, configured: bool) {
    check_stop_sequences(events.as_array().expect("an array"), configured);
}

/// [`check_reported_usage`] with `reported` output tokens against a `message_delta` with
/// `in_delta`.
pub fn check_reported_usage_for_test(reported: u64, in_delta: u64) {
    let events = [serde_json::json!({"type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": null},
        "usage": {"input_tokens": 0, "output_tokens": in_delta}})];
    let usage = Usage {
        output_tokens: reported,
        ..Usage::default()
    };
    check_reported_usage(&events, Some(usage), Some(usage));
}

/// Whether the Anthropic codec records `stream` as an answer.
pub fn records_for_test(stream: &[u8]) -> bool {
    accumulate(&AnthropicMessages, &[stream]).is_ok()
}

/// [`check_config_error`].
pub fn check_config_error_for_test(data: &[u8], message: &str) {
    check_config_error(data, message);
}

/// [`check_events`] on a finished stream, for the replay test's self-check.
pub fn check_events_for_test(out: &[u8]) {
    check_events(out, true);
}

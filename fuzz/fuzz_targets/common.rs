//! The bodies of the fuzz targets, shared by the cargo-fuzz binaries (`fuzz_targets/*.rs`)
//! and the stable corpus replay test (`tests/fuzz_corpus_replay.rs`), which includes this file
//! with `#[path]`. Each function takes the raw fuzz input, runs the code under test and
//! asserts the invariants that must hold for *every* input; a panic is a finding.
#![allow(dead_code)] // Each includer uses only some of the targets.

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use serde_json::Value;
use tower_llm_bridge::cache::{CacheNamespace, CacheScope, cache_key_for_request};
use tower_llm_bridge::error::ApiError;
use tower_llm_bridge::parsed::ParsedBody;
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

/// Input layout: `[flags, n, (u16 LE offset) × n, sse bytes…]`. `flags` picks the stream
/// configuration; the offsets (modulo the length) are where the SSE bytes are split.
pub fn stream(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((&count, mut rest)) = rest.split_first() else {
        return;
    };
    let mut offsets = Vec::new();
    for _ in 0..(count % 16) {
        let [lo, hi, tail @ ..] = rest else { break };
        offsets.push(u16::from_le_bytes([*lo, *hi]) as usize);
        rest = tail;
    }
    let input = rest;
    let mut cuts: Vec<usize> = offsets.iter().map(|o| o % (input.len() + 1)).collect();
    cuts.sort_unstable();
    let mut pieces = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for cut in cuts {
        pieces.push(&input[start..cut]);
        start = cut;
    }
    pieces.push(&input[start..]);

    let max_event_size = if flags & 2 != 0 { 256 } else { 8 * 1024 * 1024 };
    let config = || {
        let mut config = StreamConfig::new(MODEL);
        config.message_id = MESSAGE_ID.to_owned();
        config.max_event_size = max_event_size;
        if flags & 1 != 0 {
            config.stop_sequences = vec!["\n\nHuman:".to_owned(), "END".to_owned(), "é".to_owned()];
        }
        config
    };

    // The decoder alone: the same events whatever the split.
    let whole = decode_all(&[input], max_event_size);
    let split = decode_all(&pieces, max_event_size);
    assert_eq!(whole, split, "the SSE decoder depends on the split points");

    // The translators of both wires: a valid Anthropic stream with exactly one terminal
    // event, the same whatever the split.
    let whole = translate_all(StreamTranslator::new(config()), &[input], flags & 4 != 0);
    let split = translate_all(StreamTranslator::new(config()), &pieces, flags & 4 != 0);
    assert_eq!(
        whole, split,
        "the stream translator depends on the split points"
    );
    let whole = translate_all(
        ResponsesStreamTranslator::new(config()),
        &[input],
        flags & 4 != 0,
    );
    let split = translate_all(
        ResponsesStreamTranslator::new(config()),
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
fn translate_all(mut translator: impl Translate, pieces: &[&[u8]], fail: bool) -> Vec<Value> {
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
// (c) OpenAI response and error bodies
// ---------------------------------------------------------------------------------------------

/// `translate_response`, `translate_error` (several statuses) and `parse_tool_arguments` on
/// the raw bytes of an upstream body.
pub fn response(data: &[u8]) {
    let stop_sequences = ["END".to_owned(), "\n\nHuman:".to_owned()];
    let context = ResponseContext {
        client_model: MODEL,
        stop_sequences: &stop_sequences,
    };
    match translate_response(data, &context) {
        Ok(translated) => check_message(&translated.body, &stop_sequences),
        Err(err) => {
            assert_eq!(err.status(), StatusCode::BAD_GATEWAY, "{err}");
            assert_eq!(err.error_type(), "api_error");
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

fn check_message(body: &[u8], stop_sequences: &[String]) {
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
                assert_eq!(block["signature"], "");
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
pub fn cache_key(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let scope = CacheScope {
        backend_name: "http://127.0.0.1:1/v1",
        auth_identity: "tenant-a",
    };
    let key = cache_key_for_request(&value, CacheNamespace::Anthropic, &scope);
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
    let reparsed: Value = serde_json::from_slice(&pretty).expect("round trip");
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

/// [`check_events`] on a finished stream, for the replay test's self-check.
pub fn check_events_for_test(out: &[u8]) {
    check_events(out, true);
}

//! Shared helpers for the streaming tests: build OpenAI streams, run the translator over them
//! split in many ways, decode the Anthropic events and check their grammar.
#![allow(dead_code)]

use bytes::BytesMut;
use serde_json::{Value, json};
use tower_llm_bridge::sse::SseDecoder;
use tower_llm_bridge::translate::responses::stream::ResponsesStreamTranslator;
use tower_llm_bridge::translate::stream::{StreamConfig, StreamTranslator};

pub const MODEL: &str = "claude-sonnet-4-5";
pub const MESSAGE_ID: &str = "msg_fixed";

pub fn config() -> StreamConfig {
    StreamConfig {
        message_id: MESSAGE_ID.into(),
        ..StreamConfig::new(MODEL)
    }
}

/// `data: <json>\n\n` for each chunk, in order.
pub fn sse(chunks: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(chunk.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }
    out
}

/// A chunk as OpenAI sends it, around a delta.
pub fn chunk(delta: Value) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}]
    })
}

pub fn finish(reason: &str) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": reason}]
    })
}

pub fn usage(prompt: u64, completion: u64, cached: u64) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
        "choices": [],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion,
                  "prompt_tokens_details": {"cached_tokens": cached}}
    })
}

pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// Runs the translator over `pieces` then `finish`, returning the raw output.
pub fn translate_pieces(config: StreamConfig, pieces: &[&[u8]]) -> Vec<u8> {
    let mut translator = StreamTranslator::new(config);
    let mut out = BytesMut::new();
    for piece in pieces {
        translator.push(piece, &mut out);
    }
    translator.finish(&mut out);
    out.to_vec()
}

/// Decodes Anthropic SSE output into `(event, json)` pairs, checking the framing: every event
/// has an `event:` line equal to its JSON `type`, and data is one line of JSON.
pub fn decode(bytes: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(bytes).expect("output is UTF-8");
    for frame in text.split_terminator("\n\n") {
        let lines: Vec<&str> = frame.split('\n').collect();
        assert_eq!(lines.len(), 2, "event line + one data line: {frame:?}");
        assert!(lines[0].starts_with("event: ") && lines[1].starts_with("data: "));
    }
    assert!(text.is_empty() || text.ends_with("\n\n"));
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    decoder.push(bytes, |event| {
        let event = event.expect("valid SSE");
        let json: Value = serde_json::from_str(event.data).expect("data is JSON");
        assert_eq!(json["type"], event.event, "event line names the JSON type");
        events.push(json);
    });
    decoder.finish(|_| panic!("output ends with a blank line"));
    events
}

/// Replaces generated `toolu_…` ids (random) with `toolu_<n>` in order of appearance.
pub fn normalise(mut events: Vec<Value>) -> Vec<Value> {
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

/// Runs the Responses translator over `pieces` then `finish`, returning the raw output.
pub fn translate_responses_pieces(config: StreamConfig, pieces: &[&[u8]]) -> Vec<u8> {
    let mut translator = ResponsesStreamTranslator::new(config);
    let mut out = BytesMut::new();
    for piece in pieces {
        translator.push(piece, &mut out);
    }
    translator.finish(&mut out);
    out.to_vec()
}

/// Translates `input` whole, split at every byte offset, and one byte at a time; asserts the
/// decoded event sequences are identical and returns them.
pub fn translate_all_ways(make_config: impl Fn() -> StreamConfig, input: &[u8]) -> Vec<Value> {
    translate_all_ways_with(|pieces| translate_pieces(make_config(), pieces), input)
}

/// [`translate_all_ways`] for any translator: `run` translates the pieces in order.
pub fn translate_all_ways_with(run: impl Fn(&[&[u8]]) -> Vec<u8>, input: &[u8]) -> Vec<Value> {
    let whole = normalise(decode(&run(&[input])));
    for at in 0..=input.len() {
        let (a, b) = input.split_at(at);
        let split = normalise(decode(&run(&[a, b])));
        assert_eq!(split, whole, "split at byte {at}");
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    let bytewise = normalise(decode(&run(&bytes)));
    assert_eq!(bytewise, whole, "one byte at a time");
    whole
}

/// What the client reconstructs from a stream.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconstructed {
    pub blocks: Vec<Block>,
    pub stop_reason: Option<String>,
    pub stop_sequence: Option<String>,
    pub usage: Option<Value>,
    /// The error object, when the stream ended with `event: error`.
    pub error: Option<Value>,
    /// The signature of each thinking block, in order (`""` from chat backends).
    pub signatures: Vec<String>,
}

#[derive(Debug, PartialEq, Eq, Clone)]
pub enum Block {
    Thinking(String),
    Text(String),
    Tool {
        id: String,
        name: String,
        json: String,
    },
}

/// Checks the Anthropic event grammar and rebuilds the message the way a client does:
/// `message_start` then `ping` first; blocks opened with consecutive indices from 0, one at a
/// time; every delta inside its block and of the block's kind; thinking closed by a
/// `signature_delta`; exactly one stop per start; then one `message_delta` and
/// `message_stop` last — or an `error` event last, with nothing after it.
pub fn check_grammar(events: &[Value]) -> Reconstructed {
    let mut result = Reconstructed::default();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    let error_at = kinds.iter().position(|k| *k == "error");
    if let Some(at) = error_at {
        assert_eq!(at, kinds.len() - 1, "nothing after an error: {kinds:?}");
        let error = &events[at];
        assert!(error["error"]["type"].is_string() && error["error"]["message"].is_string());
        result.error = Some(error["error"].clone());
        assert!(
            !kinds.contains(&"message_stop"),
            "no message_stop with an error"
        );
    }
    let body = &events[..error_at.unwrap_or(events.len())];
    if body.is_empty() {
        assert!(error_at.is_some(), "an empty stream must be an error");
        return result;
    }
    assert_eq!(kinds[0], "message_start", "{kinds:?}");
    let message = &events[0]["message"];
    assert_eq!(message["id"], MESSAGE_ID);
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["model"], MODEL);
    assert_eq!(message["content"], json!([]));
    assert!(message["stop_reason"].is_null());
    assert!(message["usage"]["input_tokens"].is_u64());
    if body.len() > 1 {
        assert_eq!(kinds[1], "ping", "{kinds:?}");
    }
    let mut open: Option<(u64, usize)> = None; // (index, position in blocks)
    let mut next_index = 0;
    let mut signed = false;
    let mut finished = false;
    for (i, event) in body.iter().enumerate().skip(2) {
        assert!(
            !finished || kinds[i] == "message_stop",
            "only message_stop after message_delta"
        );
        match kinds[i] {
            "content_block_start" => {
                assert!(open.is_none(), "one open block at a time: {kinds:?}");
                let index = event["index"].as_u64().expect("index");
                assert_eq!(index, next_index, "indices 0, 1, 2, …");
                next_index += 1;
                let block = &event["content_block"];
                result.blocks.push(match block["type"].as_str() {
                    Some("thinking") => {
                        assert_eq!(block["thinking"], "");
                        assert_eq!(block["signature"], "");
                        Block::Thinking(String::new())
                    }
                    Some("text") => {
                        assert_eq!(block["text"], "");
                        Block::Text(String::new())
                    }
                    Some("tool_use") => {
                        assert_eq!(block["input"], json!({}));
                        let id = block["id"].as_str().expect("id");
                        assert!(!id.is_empty());
                        let name = block["name"].as_str().expect("name");
                        assert!(!name.is_empty());
                        Block::Tool {
                            id: id.into(),
                            name: name.into(),
                            json: String::new(),
                        }
                    }
                    other => panic!("unknown block type {other:?}"),
                });
                open = Some((index, result.blocks.len() - 1));
                signed = false;
            }
            "content_block_delta" => {
                let (index, position) = open.expect("delta inside an open block");
                assert_eq!(event["index"], index, "delta for the open block");
                let delta = &event["delta"];
                assert!(!signed, "nothing after the signature");
                match (&mut result.blocks[position], delta["type"].as_str()) {
                    (Block::Thinking(text), Some("thinking_delta")) => {
                        text.push_str(delta["thinking"].as_str().expect("thinking"))
                    }
                    (Block::Thinking(_), Some("signature_delta")) => {
                        let signature = delta["signature"].as_str().expect("signature");
                        result.signatures.push(signature.to_owned());
                        signed = true;
                    }
                    (Block::Text(text), Some("text_delta")) => {
                        text.push_str(delta["text"].as_str().expect("text"))
                    }
                    (Block::Tool { json, .. }, Some("input_json_delta")) => {
                        json.push_str(delta["partial_json"].as_str().expect("partial_json"))
                    }
                    (block, kind) => panic!("{kind:?} delta in {block:?}"),
                }
            }
            "content_block_stop" => {
                let (index, position) = open.take().expect("stop of an open block");
                assert_eq!(event["index"], index);
                if matches!(result.blocks[position], Block::Thinking(_)) {
                    assert!(signed, "thinking closes with a signature_delta");
                }
            }
            "message_delta" => {
                assert!(open.is_none(), "all blocks stopped before message_delta");
                assert!(result.stop_reason.is_none(), "one message_delta");
                result.stop_reason = Some(
                    event["delta"]["stop_reason"]
                        .as_str()
                        .expect("stop_reason")
                        .into(),
                );
                result.stop_sequence = event["delta"]["stop_sequence"].as_str().map(Into::into);
                let usage = &event["usage"];
                for field in [
                    "input_tokens",
                    "output_tokens",
                    "cache_read_input_tokens",
                    "cache_creation_input_tokens",
                ] {
                    assert!(usage[field].is_u64(), "usage.{field}");
                }
                result.usage = Some(usage.clone());
                finished = true;
            }
            "message_stop" => {
                assert!(finished, "message_stop after message_delta");
                assert_eq!(i, events.len() - 1, "message_stop is last");
            }
            other => panic!("unexpected event {other}"),
        }
    }
    if error_at.is_none() {
        assert_eq!(kinds.last(), Some(&"message_stop"), "{kinds:?}");
    }
    result
}

//! The Anthropic Messages codec: `message_start` … `message_stop` ↔ a `message` object.

use bytes::{Bytes, BytesMut};
use serde_json::{Map, Value, json};

use super::{CodecError, StreamAccumulator, StreamCodec, malformed};
use crate::parsed::ParsedBody;
use crate::sse::{SseDecoder, SseError, SseEvent, encode_json_event};

/// [`StreamCodec`] for Anthropic's `POST /v1/messages`.
///
/// Accumulates as the official SDKs do: `text_delta`, `input_json_delta` (parsed at
/// `content_block_stop`), `thinking_delta`, `signature_delta` and `citations_delta`; the
/// fields of `message_delta` (stop reason, stop sequence, usage) overwrite the message's.
/// `ping` and unknown event types are skipped; an `error` event or an unknown delta type
/// means the stream is not stored. A clean end is a `message_stop` after a `message_delta`.
///
/// Rendering writes one delta per block part (the whole text, the whole tool input), with
/// the full usage in both `message_start` and `message_delta`.
///
/// ```
/// use tower_llm_bridge::cache::{AnthropicMessages, CodecError, StreamCodec};
///
/// let mut acc = AnthropicMessages.accumulator();
/// acc.push(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"content\":[]}}\n\n")
///     .unwrap();
/// // No message_stop: not a clean end.
/// assert_eq!(acc.finish().unwrap_err(), CodecError::Incomplete);
///
/// let error = AnthropicMessages.error_event("cut");
/// assert!(error.starts_with(b"event: error\ndata: {\"type\":\"error\""));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct AnthropicMessages;

impl StreamCodec for AnthropicMessages {
    fn accumulator(&self) -> Box<dyn StreamAccumulator> {
        Box::new(Accumulator {
            decoder: SseDecoder::new(),
            state: State::default(),
        })
    }

    fn render_stream(&self, answer: &[u8], _request: &ParsedBody) -> Result<Bytes, CodecError> {
        render(answer)
    }

    fn error_event(&self, message: &str) -> Bytes {
        let mut out = BytesMut::new();
        let error = json!({"type": "error", "error": {"type": "api_error", "message": message}});
        // Serializing a `Value` cannot fail.
        let _ = encode_json_event(&mut out, "error", &error);
        out.freeze()
    }
}

struct Accumulator {
    decoder: SseDecoder,
    state: State,
}

#[derive(Default)]
struct State {
    message: Option<Map<String, Value>>,
    blocks: Vec<Block>,
    delta_seen: bool,
    stopped: bool,
    failed: Option<CodecError>,
}

struct Block {
    block: Map<String, Value>,
    /// `input_json_delta` fragments, parsed at the block's stop.
    partial_json: Option<String>,
    open: bool,
}

impl StreamAccumulator for Accumulator {
    fn push(&mut self, bytes: &[u8]) -> Result<(), CodecError> {
        let Self { decoder, state } = self;
        decoder.push(bytes, |event| state.on_event(event));
        match &state.failed {
            Some(err) => Err(err.clone()),
            None => Ok(()),
        }
    }

    fn finish(mut self: Box<Self>) -> Result<Bytes, CodecError> {
        let Self { decoder, state } = &mut *self;
        decoder.finish(|event| state.on_event(event));
        let state = std::mem::take(&mut self.state);
        if let Some(err) = state.failed {
            return Err(err);
        }
        let (Some(mut message), true) = (state.message, state.stopped) else {
            return Err(CodecError::Incomplete);
        };
        let mut content = Vec::with_capacity(state.blocks.len());
        for block in state.blocks {
            if block.open {
                return Err(CodecError::Incomplete);
            }
            content.push(Value::Object(block.block));
        }
        message.insert("content".into(), Value::Array(content));
        serde_json::to_vec(&message)
            .map(Bytes::from)
            .map_err(malformed)
    }
}

impl State {
    fn on_event(&mut self, event: Result<SseEvent<'_>, SseError>) {
        if self.failed.is_some() || self.stopped {
            return;
        }
        if let Err(err) = self.apply(event) {
            self.failed = Some(err);
        }
    }

    fn apply(&mut self, event: Result<SseEvent<'_>, SseError>) -> Result<(), CodecError> {
        let event = event.map_err(malformed)?;
        if event.event == "error" {
            return Err(CodecError::Upstream);
        }
        let data: Value = serde_json::from_str(event.data).map_err(malformed)?;
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(event.event);
        match kind {
            "message_start" => {
                let Some(Value::Object(message)) = data.get("message") else {
                    return Err(malformed("message_start without a message"));
                };
                if self.message.is_some() {
                    return Err(malformed("a second message_start"));
                }
                self.message = Some(message.clone());
            }
            "content_block_start" => {
                self.started()?;
                let index = index_of(&data)?;
                let Some(Value::Object(block)) = data.get("content_block") else {
                    return Err(malformed("content_block_start without a block"));
                };
                if index != self.blocks.len() {
                    return Err(malformed("content blocks out of order"));
                }
                self.blocks.push(Block {
                    block: block.clone(),
                    partial_json: None,
                    open: true,
                });
            }
            "content_block_delta" => {
                let block = self.open_block(&data)?;
                let Some(Value::Object(delta)) = data.get("delta") else {
                    return Err(malformed("content_block_delta without a delta"));
                };
                apply_delta(block, delta)?;
            }
            "content_block_stop" => {
                let block = self.open_block(&data)?;
                if let Some(json) = block.partial_json.take() {
                    let input = if json.trim().is_empty() {
                        Value::Object(Map::new())
                    } else {
                        serde_json::from_str(&json).map_err(malformed)?
                    };
                    block.block.insert("input".into(), input);
                }
                block.open = false;
            }
            "message_delta" => {
                let message = self.started()?;
                if let Some(Value::Object(delta)) = data.get("delta") {
                    for (key, value) in delta {
                        message.insert(key.clone(), value.clone());
                    }
                }
                if let Some(Value::Object(usage)) = data.get("usage") {
                    let entry = message
                        .entry("usage")
                        .or_insert_with(|| Value::Object(Map::new()));
                    if !entry.is_object() {
                        *entry = Value::Object(Map::new());
                    }
                    if let Value::Object(total) = entry {
                        for (key, value) in usage {
                            // A null says "unknown", not "zero": keep what message_start said.
                            if !value.is_null() {
                                total.insert(key.clone(), value.clone());
                            }
                        }
                    }
                }
                self.delta_seen = true;
            }
            "message_stop" => {
                self.started()?;
                if !self.delta_seen {
                    return Err(malformed("message_stop before message_delta"));
                }
                self.stopped = true;
            }
            // Keep-alives and event types added after this codec was written.
            _ => {}
        }
        Ok(())
    }

    fn started(&mut self) -> Result<&mut Map<String, Value>, CodecError> {
        self.message
            .as_mut()
            .ok_or_else(|| malformed("event before message_start"))
    }

    fn open_block(&mut self, data: &Value) -> Result<&mut Block, CodecError> {
        let index = index_of(data)?;
        match self.blocks.get_mut(index) {
            Some(block) if block.open => Ok(block),
            _ => Err(malformed("delta for a block that is not open")),
        }
    }
}

fn index_of(data: &Value) -> Result<usize, CodecError> {
    data.get("index")
        .and_then(Value::as_u64)
        .and_then(|i| usize::try_from(i).ok())
        .ok_or_else(|| malformed("event without an index"))
}

fn apply_delta(block: &mut Block, delta: &Map<String, Value>) -> Result<(), CodecError> {
    let text = |key: &str| {
        delta
            .get(key)
            .and_then(Value::as_str)
            .ok_or_else(|| malformed(format!("delta without {key}")))
    };
    match delta
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
    {
        "text_delta" => append(&mut block.block, "text", text("text")?),
        "thinking_delta" => append(&mut block.block, "thinking", text("thinking")?),
        "signature_delta" => {
            block
                .block
                .insert("signature".into(), Value::String(text("signature")?.into()));
        }
        "input_json_delta" => block
            .partial_json
            .get_or_insert_with(String::new)
            .push_str(text("partial_json")?),
        "citations_delta" => {
            let citation = delta
                .get("citation")
                .cloned()
                .ok_or_else(|| malformed("citations_delta without a citation"))?;
            let list = block
                .block
                .entry("citations")
                .or_insert_with(|| Value::Array(Vec::new()));
            if !list.is_array() {
                *list = Value::Array(Vec::new());
            }
            if let Value::Array(list) = list {
                list.push(citation);
            }
        }
        other => return Err(CodecError::Unsupported(format!("delta type {other:?}"))),
    }
    Ok(())
}

fn append(block: &mut Map<String, Value>, key: &str, text: &str) {
    match block.get_mut(key) {
        Some(Value::String(s)) => s.push_str(text),
        _ => {
            block.insert(key.into(), Value::String(text.into()));
        }
    }
}

fn render(answer: &[u8]) -> Result<Bytes, CodecError> {
    let Value::Object(mut message) = serde_json::from_slice(answer).map_err(malformed)? else {
        return Err(malformed("the answer is not a JSON object"));
    };
    if message.get("type").is_some_and(|t| t != "message") {
        return Err(malformed("the answer is not a message"));
    }
    let content = match message.insert("content".into(), Value::Array(Vec::new())) {
        Some(Value::Array(content)) => content,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => return Err(malformed("content is not an array")),
    };
    let stop_reason = message
        .insert("stop_reason".into(), Value::Null)
        .unwrap_or(Value::Null);
    let stop_sequence = message
        .insert("stop_sequence".into(), Value::Null)
        .unwrap_or(Value::Null);
    let usage = message
        .get("usage")
        .cloned()
        .unwrap_or_else(|| json!({"output_tokens": 0}));

    let mut out = BytesMut::with_capacity(answer.len() * 2 + 512);
    let mut emit = |name: &str, value: &Value| {
        // Serializing a `Value` cannot fail.
        let _ = encode_json_event(&mut out, name, value);
    };
    emit(
        "message_start",
        &json!({"type": "message_start", "message": message}),
    );
    for (index, block) in content.into_iter().enumerate() {
        let Value::Object(mut block) = block else {
            return Err(malformed("a content block is not an object"));
        };
        let kind = block
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let mut deltas = Vec::new();
        let delta = |kind: &str, key: &str, value: Value| json!({"type": kind, key: value});
        if kind == "text" {
            let text = block.insert("text".into(), Value::String(String::new()));
            if let Some(Value::Array(citations)) = block.get_mut("citations") {
                for citation in std::mem::take(citations) {
                    deltas.push(delta("citations_delta", "citation", citation));
                }
            }
            if let Some(Value::String(text)) = text
                && !text.is_empty()
            {
                deltas.insert(0, delta("text_delta", "text", Value::String(text)));
            }
        } else if kind == "thinking" {
            let thinking = block.insert("thinking".into(), Value::String(String::new()));
            let signature = block.insert("signature".into(), Value::String(String::new()));
            if let Some(Value::String(thinking)) = thinking
                && !thinking.is_empty()
            {
                deltas.push(delta("thinking_delta", "thinking", Value::String(thinking)));
            }
            if let Some(Value::String(signature)) = signature
                && !signature.is_empty()
            {
                deltas.push(delta(
                    "signature_delta",
                    "signature",
                    Value::String(signature),
                ));
            }
        } else if let Some(input) = block.get_mut("input") {
            // Tool calls stream their input as JSON text, parsed back at the block's stop.
            let input = std::mem::replace(input, Value::Object(Map::new()));
            if input.as_object().is_none_or(|o| !o.is_empty()) {
                let json = serde_json::to_string(&input).map_err(malformed)?;
                deltas.push(delta(
                    "input_json_delta",
                    "partial_json",
                    Value::String(json),
                ));
            }
        }
        emit(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        for d in deltas {
            emit(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": d}),
            );
        }
        emit(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        );
    }
    emit(
        "message_delta",
        &json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
            "usage": usage,
        }),
    );
    emit("message_stop", &json!({"type": "message_stop"}));
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accumulate(stream: &[u8]) -> Result<Value, CodecError> {
        let mut acc = AnthropicMessages.accumulator();
        acc.push(stream)?;
        let bytes = acc.finish()?;
        Ok(serde_json::from_slice(&bytes).expect("json"))
    }

    fn message() -> Value {
        json!({
            "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [
                {"type": "thinking", "thinking": "Let me think.\nYes.", "signature": "sig=="},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "Héllo \"world\"\n", "citations": [{"type": "char_location", "cited_text": "x"}]},
                {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {"city": "Paris", "n": [1, 2.5, null]}},
                {"type": "tool_use", "id": "toolu_2", "name": "noargs", "input": {}},
                {"type": "text", "text": ""}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 34, "cache_read_input_tokens": 5}
        })
    }

    #[test]
    fn render_then_accumulate_is_the_identity_at_every_split() {
        let message = message();
        let stream = render(message.to_string().as_bytes()).expect("render");
        assert_eq!(accumulate(&stream).expect("accumulate"), message);
        for split in (0..stream.len()).step_by(7) {
            let mut acc = AnthropicMessages.accumulator();
            acc.push(&stream[..split]).expect("first half");
            acc.push(&stream[split..]).expect("second half");
            let back: Value = serde_json::from_slice(&acc.finish().expect("finish")).expect("json");
            assert_eq!(back, message, "split at {split}");
        }
    }

    #[test]
    fn a_real_shaped_stream_accumulates_like_the_sdk() {
        let stream = concat!(
            "event: message_start\n",
            r#"data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"m","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":7,"output_tokens":1}}}"#,
            "\n\nevent: ping\ndata: {\"type\":\"ping\"}\n\n",
            "event: content_block_start\n",
            r#"data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            "\n\nevent: content_block_delta\n",
            r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            "\n\nevent: content_block_delta\n",
            r#"data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" there"}}"#,
            "\n\nevent: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
            "event: content_block_start\n",
            r#"data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t1","name":"f","input":{}}}"#,
            "\n\nevent: content_block_delta\n",
            r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}"#,
            "\n\nevent: content_block_delta\n",
            r#"data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"1}"}}"#,
            "\n\nevent: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
            "event: message_delta\n",
            r#"data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":9,"input_tokens":null}}"#,
            "\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
        );
        let message = accumulate(stream.as_bytes()).expect("clean");
        assert_eq!(
            message["content"][0],
            json!({"type": "text", "text": "Hi there"})
        );
        assert_eq!(message["content"][1]["input"], json!({"a": 1}));
        assert_eq!(message["stop_reason"], "tool_use");
        assert_eq!(
            message["usage"],
            json!({"input_tokens": 7, "output_tokens": 9})
        );

        // Every unclean ending is refused.
        let cut = &stream[..stream.find("event: message_stop").expect("stop")];
        assert_eq!(accumulate(cut.as_bytes()), Err(CodecError::Incomplete));
        let without_delta = stream
            .replace("event: message_delta", "event: x")
            .replace(r#"{"type":"message_delta""#, r#"{"type":"x""#);
        assert!(matches!(
            accumulate(without_delta.as_bytes()),
            Err(CodecError::Malformed(_))
        ));
        let with_error = format!(
            "{}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"o\"}}}}\n\n",
            &stream[..stream.find("event: message_delta").expect("delta")]
        );
        assert_eq!(accumulate(with_error.as_bytes()), Err(CodecError::Upstream));
        let unknown_delta = stream.replace("text_delta", "sparkle_delta");
        assert!(matches!(
            accumulate(unknown_delta.as_bytes()),
            Err(CodecError::Unsupported(_))
        ));
    }

    #[test]
    fn render_accepts_minimal_messages_and_refuses_others() {
        let stream = render(br#"{"id":"m","type":"message"}"#).expect("minimal");
        let back = accumulate(&stream).expect("accumulates");
        assert_eq!(back["content"], json!([]));
        assert!(render(b"[1]").is_err());
        assert!(render(br#"{"type":"error"}"#).is_err());
        assert!(render(b"not json").is_err());
    }
}

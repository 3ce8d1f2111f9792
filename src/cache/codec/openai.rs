//! The OpenAI Chat Completions codec: `chat.completion.chunk`s ↔ a `chat.completion`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::{CodecError, StreamAccumulator, StreamCodec, malformed, put_data_event};
use crate::parsed::{ParsedBody, from_slice_max_depth};
use crate::sse::{SseDecoder, SseError, SseEvent};

/// [`StreamCodec`] for OpenAI's `POST /v1/chat/completions`.
///
/// Accumulates as the official SDK does (each choice's `delta` merged into its message:
/// strings concatenated, objects merged, `tool_calls` merged by `index`), keeps the last
/// `usage` and the top-level fields. A chunk carrying an `error` means the stream is not
/// stored. A clean end is a `finish_reason` on every choice, then `data: [DONE]`.
///
/// A stream that carried no usage (no `stream_options.include_usage`) is stored with
/// `"usage": null`; a streaming request that asks for usage does not hit such an entry (the
/// layer goes upstream and replaces it). Rendering writes the usage chunk only when the
/// request asks for it, as OpenAI does.
///
/// ```
/// use serde_json::json;
/// use tower_llm_bridge::cache::{CodecError, OpenAiChat, StreamCodec};
/// use tower_llm_bridge::parsed::ParsedBody;
///
/// let completion = json!({"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
///     "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
///                  "finish_reason": "stop", "logprobs": null}],
///     "usage": null});
/// let plain = ParsedBody::from_json(json!({"stream": true}));
/// let stream = OpenAiChat.render_stream(completion.to_string().as_bytes(), &plain).unwrap();
/// assert!(stream.ends_with(b"data: [DONE]\n\n"));
/// // No usage to give a request that asks for it.
/// let wants_usage = ParsedBody::from_json(json!({"stream_options": {"include_usage": true}}));
/// assert!(matches!(
///     OpenAiChat.render_stream(completion.to_string().as_bytes(), &wants_usage),
///     Err(CodecError::Unsuitable(_))
/// ));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenAiChat;

impl StreamCodec for OpenAiChat {
    fn accumulator(&self) -> Box<dyn StreamAccumulator> {
        Box::new(Accumulator {
            decoder: SseDecoder::new(),
            state: State::default(),
        })
    }

    fn render_stream(&self, answer: &[u8], request: &ParsedBody) -> Result<Bytes, CodecError> {
        render(answer, request)
    }

    fn error_event(&self, message: &str) -> Bytes {
        let mut out = BytesMut::new();
        put_data_event(
            &mut out,
            &json!({"error": {"message": message, "type": "server_error", "param": null, "code": null}}),
        );
        out.freeze()
    }
}

struct Accumulator {
    decoder: SseDecoder,
    state: State,
}

#[derive(Default)]
struct State {
    top: Map<String, Value>,
    usage: Option<Value>,
    choices: BTreeMap<u64, Choice>,
    done: bool,
    failed: Option<CodecError>,
}

#[derive(Default)]
struct Choice {
    message: Map<String, Value>,
    finish_reason: Option<Value>,
    logprobs: Option<Value>,
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
        let finished = state.choices.values().all(|c| c.finish_reason.is_some());
        if !state.done || state.choices.is_empty() || !finished {
            return Err(CodecError::Incomplete);
        }
        let mut completion = state.top;
        completion.insert("object".into(), Value::from("chat.completion"));
        let choices = state
            .choices
            .into_iter()
            .map(|(index, choice)| {
                let mut message = choice.message;
                message
                    .entry("role")
                    .or_insert_with(|| Value::from("assistant"));
                message.entry("content").or_insert(Value::Null);
                // `index` orders tool calls in a stream; a completion's list has none.
                if let Some(Value::Array(calls)) = message.get_mut("tool_calls") {
                    for call in calls.iter_mut().filter_map(Value::as_object_mut) {
                        call.remove("index");
                    }
                }
                json!({
                    "index": index,
                    "message": message,
                    "logprobs": choice.logprobs.unwrap_or(Value::Null),
                    "finish_reason": choice.finish_reason.unwrap_or(Value::Null),
                })
            })
            .collect();
        completion.insert("choices".into(), Value::Array(choices));
        completion.insert("usage".into(), state.usage.unwrap_or(Value::Null));
        serde_json::to_vec(&completion)
            .map(Bytes::from)
            .map_err(malformed)
    }
}

impl State {
    fn on_event(&mut self, event: Result<SseEvent<'_>, SseError>) {
        if self.failed.is_some() || self.done {
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
        if event.data.trim() == "[DONE]" {
            self.done = true;
            return Ok(());
        }
        let Value::Object(chunk) = serde_json::from_str(event.data).map_err(malformed)? else {
            return Err(malformed("a chunk is not a JSON object"));
        };
        if chunk.get("error").is_some_and(|e| !e.is_null()) {
            return Err(CodecError::Upstream);
        }
        for (key, value) in chunk {
            match key.as_str() {
                "choices" => {
                    let Value::Array(choices) = value else {
                        return Err(malformed("choices is not an array"));
                    };
                    for choice in choices {
                        self.apply_choice(choice)?;
                    }
                }
                "usage" => {
                    if !value.is_null() {
                        self.usage = Some(value);
                    }
                }
                "object" => {}
                _ => {
                    if !value.is_null() {
                        self.top.insert(key, value);
                    }
                }
            }
        }
        Ok(())
    }

    fn apply_choice(&mut self, choice: Value) -> Result<(), CodecError> {
        let Value::Object(mut choice) = choice else {
            return Err(malformed("a choice is not an object"));
        };
        let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
        let state = self.choices.entry(index).or_default();
        if let Some(Value::Object(delta)) = choice.remove("delta") {
            merge(&mut state.message, delta)?;
        }
        match choice.remove("finish_reason") {
            None | Some(Value::Null) => {}
            Some(reason) => state.finish_reason = Some(reason),
        }
        match (choice.remove("logprobs"), &mut state.logprobs) {
            (None | Some(Value::Null), _) => {}
            (Some(new), None) => state.logprobs = Some(new),
            (Some(Value::Object(new)), Some(Value::Object(acc))) => merge(acc, new)?,
            (Some(new), Some(acc)) => *acc = new,
        }
        Ok(())
    }
}

/// Merges a delta into what was accumulated, as openai-python's `_accumulate_delta` does.
fn merge(acc: &mut Map<String, Value>, delta: Map<String, Value>) -> Result<(), CodecError> {
    for (key, new) in delta {
        let Some(old) = acc.get_mut(&key) else {
            acc.insert(key, new);
            continue;
        };
        if old.is_null() || key == "index" || key == "type" {
            *old = new;
            continue;
        }
        match (old, new) {
            (Value::String(old), Value::String(new)) => old.push_str(&new),
            (Value::Object(old), Value::Object(new)) => merge(old, new)?,
            (Value::Array(old), Value::Array(new)) => {
                if old.iter().all(|v| !v.is_object()) {
                    old.extend(new);
                    continue;
                }
                for entry in new {
                    let Value::Object(entry) = entry else {
                        return Err(malformed("a list entry is not an object"));
                    };
                    let index = entry
                        .get("index")
                        .and_then(Value::as_u64)
                        .and_then(|i| usize::try_from(i).ok())
                        .ok_or_else(|| malformed("a list entry without an index"))?;
                    let position = old
                        .iter()
                        .position(|v| v.get("index").and_then(Value::as_u64) == Some(index as u64));
                    match position {
                        Some(at) => match &mut old[at] {
                            Value::Object(existing) => merge(existing, entry)?,
                            _ => return Err(malformed("a list entry is not an object")),
                        },
                        None => old.push(Value::Object(entry)),
                    }
                }
            }
            (old, new) => *old = new,
        }
    }
    Ok(())
}

/// Whether the request asks for the usage chunk (`stream_options.include_usage: true`), read
/// from the one field without building the request's tree.
fn wants_usage(request: &ParsedBody) -> bool {
    // A map, not a derived struct: serde would also take `[true]` as the struct's fields.
    type Options<'a> = BTreeMap<Cow<'a, str>, &'a RawValue>;
    request
        .field("stream_options")
        .and_then(|raw| from_slice_max_depth::<Options<'_>>(raw, request.max_depth()).ok())
        .and_then(|options| {
            options
                .get("include_usage")
                .map(|value| value.get() == "true")
        })
        == Some(true)
}

fn render(answer: &[u8], request: &ParsedBody) -> Result<Bytes, CodecError> {
    let Value::Object(mut completion) = serde_json::from_slice(answer).map_err(malformed)? else {
        return Err(malformed("the answer is not a JSON object"));
    };
    if completion
        .get("object")
        .is_some_and(|o| o != "chat.completion")
    {
        return Err(malformed("the answer is not a chat.completion"));
    }
    let wants_usage = wants_usage(request);
    let usage = completion.remove("usage").filter(|u| !u.is_null());
    if wants_usage && usage.is_none() {
        return Err(CodecError::Unsuitable(
            "the stored answer has no usage".into(),
        ));
    }
    let choices = match completion.remove("choices") {
        Some(Value::Array(choices)) if !choices.is_empty() => choices,
        _ => return Err(malformed("no choices")),
    };
    completion.insert("object".into(), Value::from("chat.completion.chunk"));
    let mut out = BytesMut::with_capacity(answer.len() * 2 + 256);
    let mut chunk = |choices: Value, usage: Option<&Value>| {
        let mut chunk = completion.clone();
        chunk.insert("choices".into(), choices);
        if let Some(usage) = usage {
            chunk.insert("usage".into(), usage.clone());
        }
        put_data_event(&mut out, &Value::Object(chunk));
    };
    for (position, choice) in choices.into_iter().enumerate() {
        let Value::Object(mut choice) = choice else {
            return Err(malformed("a choice is not an object"));
        };
        let index = choice
            .get("index")
            .cloned()
            .unwrap_or_else(|| Value::from(position));
        let mut message = match choice.remove("message") {
            Some(Value::Object(message)) => message,
            _ => return Err(malformed("a choice without a message")),
        };
        let tool_calls = message.remove("tool_calls");
        // A null part is no part: deltas only carry what the message has.
        message.retain(|key, value| !value.is_null() || key == "role");
        let logprobs = choice.remove("logprobs").unwrap_or(Value::Null);
        chunk(
            json!([{"index": index, "delta": message, "logprobs": logprobs, "finish_reason": null}]),
            None,
        );
        if let Some(Value::Array(calls)) = tool_calls {
            for (i, call) in calls.into_iter().enumerate() {
                let Value::Object(mut call) = call else {
                    return Err(malformed("a tool call is not an object"));
                };
                call.insert("index".into(), Value::from(i));
                chunk(
                    json!([{"index": index, "delta": {"tool_calls": [call]}, "finish_reason": null}]),
                    None,
                );
            }
        }
        let finish_reason = choice.remove("finish_reason").unwrap_or(Value::Null);
        chunk(
            json!([{"index": index, "delta": {}, "finish_reason": finish_reason}]),
            None,
        );
    }
    if wants_usage {
        chunk(json!([]), usage.as_ref());
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accumulate(stream: &[u8]) -> Result<Value, CodecError> {
        let mut acc = OpenAiChat.accumulator();
        acc.push(stream)?;
        Ok(serde_json::from_slice(&acc.finish()?).expect("json"))
    }

    fn completion() -> Value {
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000,
            "model": "gpt-4o", "system_fingerprint": "fp_1",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Hé \"there\"\n",
                  "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get", "arguments": "{\"a\":1}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "put", "arguments": "{}"}}
                  ]}, "logprobs": null, "finish_reason": "tool_calls"},
                {"index": 1, "message": {"role": "assistant", "content": null, "refusal": "no"},
                 "logprobs": null, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
        })
    }

    #[test]
    fn only_a_literal_true_include_usage_asks_for_usage() {
        let asks = |body: &str| {
            wants_usage(&ParsedBody::parse(body.as_bytes().to_vec().into()).expect("json"))
        };
        assert!(asks(r#"{"stream_options":{"include_usage":true}}"#));
        assert!(asks(r#"{"stream_options":{"x":[1],"include_usage":true}}"#));
        // Nesting past serde_json's own 128 levels, within the request's limit.
        let deep = format!(
            r#"{{"stream_options":{{"x":{}1{},"include_usage":true}}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(asks(&deep));
        for body in [
            r#"{}"#,
            r#"{"stream_options":null}"#,
            r#"{"stream_options":{}}"#,
            r#"{"stream_options":{"include_usage":false}}"#,
            r#"{"stream_options":{"include_usage":null}}"#,
            r#"{"stream_options":{"include_usage":"true"}}"#,
            r#"{"stream_options":"include_usage"}"#,
            r#"{"stream_options":[true]}"#,
        ] {
            assert!(!asks(body), "{body}");
        }
    }

    #[test]
    fn render_then_accumulate_is_the_identity_at_every_split() {
        let completion = completion();
        let request = ParsedBody::from_json(json!({"stream_options": {"include_usage": true}}));
        let stream = render(completion.to_string().as_bytes(), &request).expect("render");
        assert_eq!(accumulate(&stream).expect("accumulate"), completion);
        for split in (0..stream.len()).step_by(5) {
            let mut acc = OpenAiChat.accumulator();
            acc.push(&stream[..split]).expect("first");
            acc.push(&stream[split..]).expect("second");
            let back: Value = serde_json::from_slice(&acc.finish().expect("finish")).expect("json");
            assert_eq!(back, completion, "split at {split}");
        }
        // Without include_usage no usage chunk is sent, and the accumulated answer says so.
        let plain = ParsedBody::from_json(json!({}));
        let stream = render(completion.to_string().as_bytes(), &plain).expect("render");
        assert_eq!(
            accumulate(&stream).expect("accumulate")["usage"],
            Value::Null
        );
    }

    #[test]
    fn fragmented_tool_calls_and_clean_end_rules() {
        let chunks = [
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]},"finish_reason":null}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"x\":"}}]},"finish_reason":null}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"2}"}}]},"finish_reason":null}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#,
        ];
        let mut stream = String::new();
        for c in chunks {
            stream.push_str(&format!("data: {c}\n\n"));
        }
        let without_done = stream.clone();
        stream.push_str("data: [DONE]\n\n");
        let done = accumulate(stream.as_bytes()).expect("clean");
        let call = &done["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["arguments"], "{\"x\":2}");
        assert_eq!(call["id"], "call_1");
        assert!(call.get("index").is_none());
        assert_eq!(done["choices"][0]["message"]["content"], "");
        assert_eq!(done["usage"]["total_tokens"], 3);

        assert_eq!(
            accumulate(without_done.as_bytes()),
            Err(CodecError::Incomplete)
        );
        let no_finish =
            stream.replace(r#""finish_reason":"tool_calls""#, r#""finish_reason":null"#);
        assert_eq!(
            accumulate(no_finish.as_bytes()),
            Err(CodecError::Incomplete)
        );
        let error = format!(
            "{}data: {{\"error\":{{\"message\":\"boom\"}}}}\n\ndata: [DONE]\n\n",
            &without_done
        );
        assert_eq!(accumulate(error.as_bytes()), Err(CodecError::Upstream));
        assert!(accumulate(b"data: {not json}\n\ndata: [DONE]\n\n").is_err());
    }
}

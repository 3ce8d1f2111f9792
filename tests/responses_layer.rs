//! `AnthropicToResponsesLayer` in front of a `service_fn` mock of OpenAI's Responses API that
//! asserts what it receives: JSON and streamed answers, the reasoning round trip across two
//! turns, stop sequences closing the upstream stream early, usage into the `UsageSlot`, error
//! mapping, and requests that must never reach the upstream.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Either, Full, StreamBody};
use serde_json::{Value, json};
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_bridge::report::UsageSlot;
use tower_llm_bridge::translate::responses::{
    REASONING_SIGNATURE_PREFIX, decode_reasoning_signature,
};
use tower_llm_bridge::translate::{AnthropicToResponsesLayer, ModelMap};

type UpstreamBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;
type Reply = Arc<dyn Fn(&Value) -> Response<UpstreamBody> + Send + Sync>;

struct Seen {
    method: String,
    path: String,
    headers: HeaderMap,
    body: Value,
}

/// A scripted Responses upstream: records each request and answers with `reply(request)`.
#[derive(Clone)]
struct Upstream {
    seen: Arc<Mutex<Vec<Seen>>>,
    reply: Reply,
}

fn full(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<UpstreamBody> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(
            Full::new(body.into())
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .expect("response")
}

impl Upstream {
    fn new(reply: impl Fn(&Value) -> Response<UpstreamBody> + Send + Sync + 'static) -> Self {
        Self {
            seen: Arc::default(),
            reply: Arc::new(reply),
        }
    }

    fn json(body: Value) -> Self {
        Self::new(move |_| full(200, "application/json", body.to_string()))
    }

    fn calls(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }

    fn body(&self, n: usize) -> Value {
        self.seen.lock().expect("lock")[n].body.clone()
    }

    async fn send(
        &self,
        layer: AnthropicToResponsesLayer,
        request: Request<Full<Bytes>>,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let upstream = self.clone();
        let service = ServiceBuilder::new().layer(layer).service_fn(
            move |req: Request<Either<Full<Bytes>, Full<Bytes>>>| {
                let upstream = upstream.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let bytes = body.collect().await.expect("body").to_bytes();
                    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                    let reply = (upstream.reply)(&body);
                    upstream.seen.lock().expect("lock").push(Seen {
                        method: parts.method.to_string(),
                        path: parts.uri.to_string(),
                        headers: parts.headers,
                        body,
                    });
                    Ok::<_, Infallible>(reply)
                }
            },
        );
        let response = service.oneshot(request).await.expect("infallible");
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        (parts.status, parts.headers, bytes)
    }
}

fn layer() -> AnthropicToResponsesLayer {
    AnthropicToResponsesLayer::new().model_map(ModelMap::big_small("gpt-5", "gpt-5-mini"))
}

fn post(body: Value) -> Request<Full<Bytes>> {
    Request::post("/v1/messages")
        .header("x-api-key", "sk-ant-client-secret")
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request")
}

fn json_of(bytes: &Bytes) -> Value {
    serde_json::from_slice(bytes).expect("JSON")
}

fn sse(events: &[Value]) -> String {
    events
        .iter()
        .map(|event| {
            format!(
                "event: {}\ndata: {event}\n\n",
                event["type"].as_str().unwrap_or("")
            )
        })
        .collect()
}

fn events_of(bytes: &Bytes) -> Vec<Value> {
    std::str::from_utf8(bytes)
        .expect("utf-8")
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).expect("event JSON"))
        .collect()
}

fn answer(output: Value) -> Value {
    json!({"id": "resp_1", "object": "response", "status": "completed", "model": "gpt-5",
           "output": output,
           "usage": {"input_tokens": 120, "input_tokens_details": {"cached_tokens": 100},
                     "output_tokens": 15, "output_tokens_details": {"reasoning_tokens": 8},
                     "total_tokens": 135}})
}

#[tokio::test]
async fn json_answer_and_the_request_the_upstream_sees() {
    let upstream = Upstream::json(answer(json!([
        {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "Bonjour", "annotations": []}]}
    ])));
    let (status, headers, body) = upstream
        .send(
            layer(),
            post(
                json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "system": "Translate.",
                        "messages": [{"role": "user", "content": "Hello"}],
                        "metadata": {"user_id": "u1"}}),
            ),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers.get("x-llm-bridge-degraded").is_none());
    let message = json_of(&body);
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": "Bonjour"}])
    );
    assert_eq!(message["model"], "claude-sonnet-4-5");
    assert_eq!(message["usage"]["input_tokens"], 20);
    assert_eq!(message["usage"]["cache_read_input_tokens"], 100);

    let seen = upstream.seen.lock().expect("lock");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/v1/responses");
    assert!(
        seen[0].headers.get("x-api-key").is_none(),
        "client credentials never go upstream"
    );
    assert!(seen[0].headers.get("anthropic-version").is_none());
    assert_eq!(seen[0].headers["accept"], "application/json");
    assert_eq!(
        seen[0].body,
        json!({"model": "gpt-5", "instructions": "Translate.",
               "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hello"}]}],
               "max_output_tokens": 1024, "user": "u1", "store": false,
               "include": ["reasoning.encrypted_content"]})
    );
}

#[tokio::test]
async fn streamed_answer_frame_by_frame() {
    let stream = sse(&[
        json!({"type": "response.created", "response": {"id": "resp_1", "status": "in_progress", "output": []}}),
        json!({"type": "response.output_item.added", "output_index": 0,
               "item": {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "ls", "arguments": ""}}),
        json!({"type": "response.function_call_arguments.delta", "output_index": 0, "item_id": "fc_1", "delta": "{\"dir\":\"/\"}"}),
        json!({"type": "response.output_item.done", "output_index": 0,
               "item": {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "ls", "arguments": "{\"dir\":\"/\"}"}}),
        json!({"type": "response.completed", "response": {"status": "completed", "output": [],
               "usage": {"input_tokens": 10, "output_tokens": 5}}}),
    ]);
    let upstream = Upstream::new(move |request| {
        assert_eq!(request["stream"], true);
        full(200, "text/event-stream", stream.clone())
    });
    let slot = UsageSlot::new();
    let mut request = post(
        json!({"model": "claude-haiku-4-5", "max_tokens": 5, "stream": true,
        "tools": [{"name": "ls", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "ls"}]}),
    );
    request.extensions_mut().insert(slot.clone());
    let (status, headers, body) = upstream.send(layer(), request).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(upstream.body(0)["model"], "gpt-5-mini");
    assert_eq!(
        upstream.body(0)["max_output_tokens"],
        16,
        "raised to the API's minimum"
    );
    assert_eq!(upstream.body(0)["tools"][0]["strict"], false);
    let events = events_of(&body);
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        kinds,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(events[2]["content_block"]["id"], "call_1");
    assert_eq!(events[5]["delta"]["stop_reason"], "tool_use");
    let usage = slot.get().expect("usage reported");
    assert_eq!((usage.input_tokens, usage.output_tokens), (10, 5));
}

#[tokio::test]
async fn json_usage_fills_the_slot() {
    let upstream = Upstream::json(answer(json!([])));
    let slot = UsageSlot::new();
    let mut request = post(
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
    );
    request.extensions_mut().insert(slot.clone());
    let (status, _, _) = upstream.send(layer(), request).await;
    assert_eq!(status, 200);
    let usage = slot.get().expect("usage");
    assert_eq!(
        (
            usage.input_tokens,
            usage.cache_read_input_tokens,
            usage.output_tokens
        ),
        (20, 100, 15)
    );
}

/// The reasoning of one answer comes back, encrypted content equal, on the next request.
#[tokio::test]
async fn reasoning_round_trip_across_a_tool_loop() {
    let encrypted = "gAAAAABoZ3-opaque-reasoning-blob_with-every=char/+";
    let first_answer = answer(json!([
        {"type": "reasoning", "id": "rs_abc", "encrypted_content": encrypted,
         "summary": [{"type": "summary_text", "text": "I should list the files."}]},
        {"type": "function_call", "id": "fc_1", "call_id": "call_ls", "name": "ls", "arguments": "{}"}
    ]));
    let upstream = Upstream::json(first_answer);
    let turn_one = json!([{"role": "user", "content": "What is here?"}]);
    let request = |messages: &Value| {
        post(json!({"model": "claude-opus-4-1", "max_tokens": 2048,
                    "thinking": {"type": "enabled", "budget_tokens": 8000},
                    "tools": [{"name": "ls", "input_schema": {"type": "object"}}],
                    "messages": messages}))
    };
    let (status, _, body) = upstream.send(layer(), request(&turn_one)).await;
    assert_eq!(status, 200);
    let message = json_of(&body);
    assert_eq!(
        upstream.body(0)["reasoning"],
        json!({"effort": "medium", "summary": "auto"})
    );
    let thinking = &message["content"][0];
    assert_eq!(thinking["type"], "thinking");
    assert_eq!(thinking["thinking"], "I should list the files.");
    let signature = thinking["signature"].as_str().expect("signature");
    assert!(signature.starts_with(REASONING_SIGNATURE_PREFIX));

    // The client keeps the assistant turn verbatim and adds the tool result.
    let turn_two = json!([
        {"role": "user", "content": "What is here?"},
        {"role": "assistant", "content": message["content"].clone()},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_ls", "content": "a.txt"}]}
    ]);
    let (status, headers, _) = upstream.send(layer(), request(&turn_two)).await;
    assert_eq!(status, 200);
    assert!(headers.get("x-llm-bridge-degraded").is_none());
    let input = upstream.body(1)["input"].clone();
    assert_eq!(
        input[1],
        json!({"type": "reasoning", "id": "rs_abc",
               "summary": [{"type": "summary_text", "text": "I should list the files."}],
               "encrypted_content": encrypted})
    );
    assert_eq!(
        input[2],
        json!({"type": "function_call", "call_id": "call_ls", "name": "ls", "arguments": "{}"})
    );
    assert_eq!(
        input[3],
        json!({"type": "function_call_output", "call_id": "call_ls", "output": "a.txt"})
    );
    assert_eq!(
        decode_reasoning_signature(signature),
        Some(("rs_abc", encrypted))
    );
}

#[tokio::test]
async fn foreign_thinking_is_dropped_with_the_degrade_header() {
    let upstream = Upstream::json(answer(json!([])));
    let (status, headers, _) = upstream
        .send(
            layer(),
            post(json!({"model": "m", "max_tokens": 5, "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "Claude's own", "signature": "EqQBCkgIARAB"},
                    {"type": "text", "text": "Hello"}]},
                {"role": "user", "content": "again"}]})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-llm-bridge-degraded"], "foreign_thinking");
    assert_eq!(upstream.body(0)["input"].as_array().map(Vec::len), Some(3));
    assert!(!upstream.body(0).to_string().contains("Claude's own"));
}

/// An upstream body that counts its polls and notices being dropped.
struct Endless {
    sent: Vec<Bytes>,
    polls: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
}

impl http_body::Body for Endless {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let n = self.polls.fetch_add(1, Ordering::SeqCst);
        assert!(n < 1_000, "the upstream is read long after the stop");
        let frame = if self.sent.is_empty() {
            // Text forever after the scripted part.
            Bytes::from(format!(
                "event: response.output_text.delta\ndata: {}\n\n",
                json!({"type": "response.output_text.delta", "output_index": 0, "item_id": "m", "delta": " more"})
            ))
        } else {
            self.sent.remove(0)
        };
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }
}

impl Drop for Endless {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_stop_sequence_ends_the_stream_and_closes_the_upstream() {
    let polls = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let (p, d) = (polls.clone(), dropped.clone());
    let upstream = Upstream::new(move |request| {
        assert!(
            request.get("stop").is_none(),
            "the Responses API has no stop"
        );
        let scripted = sse(&[
            json!({"type": "response.created", "response": {"status": "in_progress", "output": []}}),
            json!({"type": "response.output_item.added", "output_index": 0, "item": {"type": "message", "id": "m", "content": []}}),
            json!({"type": "response.output_text.delta", "output_index": 0, "item_id": "m", "delta": "1, 2, 3, fo"}),
            json!({"type": "response.output_text.delta", "output_index": 0, "item_id": "m", "delta": "ur, 5"}),
        ]);
        let body = Endless {
            sent: vec![Bytes::from(scripted)],
            polls: p.clone(),
            dropped: d.clone(),
        };
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(body.boxed_unsync())
            .expect("response")
    });
    let slot = UsageSlot::new();
    let mut request = post(json!({"model": "m", "max_tokens": 50, "stream": true,
        "stop_sequences": ["four", "a", "b", "c", "d"],
        "messages": [{"role": "user", "content": "count"}]}));
    request.extensions_mut().insert(slot.clone());
    let (status, headers, body) = upstream.send(layer(), request).await;
    assert_eq!(status, 200);
    assert!(
        headers.get("x-llm-bridge-degraded").is_none(),
        "five stop sequences lose nothing"
    );
    let events = events_of(&body);
    let text: String = events
        .iter()
        .filter_map(|e| e["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "1, 2, 3, ");
    let last_two: Vec<&str> = events[events.len() - 2..]
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(last_two, ["message_delta", "message_stop"]);
    assert_eq!(
        events[events.len() - 2]["delta"]["stop_reason"],
        "stop_sequence"
    );
    assert_eq!(events[events.len() - 2]["delta"]["stop_sequence"], "four");
    assert!(
        dropped.load(Ordering::SeqCst),
        "the upstream stream is closed at the stop"
    );
    assert!(polls.load(Ordering::SeqCst) <= 2, "not read past the stop");
    assert!(slot.get().is_some_and(|usage| usage.output_tokens > 0));
}

#[tokio::test]
async fn stop_sequences_in_json_answers() {
    let upstream = Upstream::json(answer(json!([
        {"type": "message", "content": [{"type": "output_text", "text": "alpha STOP beta"}]},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}
    ])));
    let (status, _, body) = upstream
        .send(
            layer(),
            post(
                json!({"model": "m", "max_tokens": 5, "stop_sequences": ["STOP"],
                        "messages": [{"role": "user", "content": "x"}]}),
            ),
        )
        .await;
    assert_eq!(status, 200);
    let message = json_of(&body);
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": "alpha "}])
    );
    assert_eq!(message["stop_reason"], "stop_sequence");
    assert_eq!(message["stop_sequence"], "STOP");
}

#[tokio::test]
async fn upstream_errors_become_anthropic_errors() {
    for (status, body, want_status, want_type) in [
        (
            429,
            json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}),
            429,
            "rate_limit_error",
        ),
        (
            400,
            json!({"error": {"message": "Invalid 'input[2].encrypted_content'", "type": "invalid_request_error", "param": "input"}}),
            400,
            "invalid_request_error",
        ),
        (500, json!({"error": {"message": "boom"}}), 500, "api_error"),
        (
            200,
            json!({"status": "failed", "output": [], "error": {"code": "server_error", "message": "The model crashed"}}),
            502,
            "api_error",
        ),
    ] {
        let upstream = Upstream::new(move |_| full(status, "application/json", body.to_string()));
        let (got, _, bytes) = upstream
            .send(layer(), post(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})))
            .await;
        let error = json_of(&bytes);
        assert_eq!(
            (got.as_u16(), error["error"]["type"].as_str()),
            (want_status, Some(want_type)),
            "{error}"
        );
        assert_eq!(error["type"], "error");
    }
}

#[tokio::test]
async fn malformed_requests_never_reach_the_upstream() {
    let upstream = Upstream::json(answer(json!([])));
    for body in [
        json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "tool_result"}]}]}),
        json!({"model": "m", "max_tokens": 5, "messages": [{"role": "assistant", "content": [{"type": "thinking", "thinking": 1, "signature": 2}, {"type": "tool_use", "id": "a"}]}]}),
    ] {
        let (status, _, bytes) = upstream.send(layer(), post(body)).await;
        assert_eq!(status, 400);
        assert_eq!(json_of(&bytes)["error"]["type"], "invalid_request_error");
    }
    assert_eq!(upstream.calls(), 0);
}

#[tokio::test]
async fn other_requests_pass_through_and_the_path_is_configurable() {
    let upstream = Upstream::new(|_| full(200, "application/json", "{\"data\":[]}"));
    let request = Request::get("/v1/models")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (status, _, body) = upstream.send(layer(), request).await;
    assert_eq!((status.as_u16(), &body[..]), (200, &b"{\"data\":[]}"[..]));
    assert_eq!(upstream.seen.lock().expect("lock")[0].path, "/v1/models");

    let upstream = Upstream::json(answer(json!([])));
    let layer = layer()
        .upstream_path("/openai/v1/responses?api-version=preview")
        .expect("path");
    upstream
        .send(layer, post(json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})))
        .await;
    assert_eq!(
        upstream.seen.lock().expect("lock")[0].path,
        "/openai/v1/responses?api-version=preview"
    );
}

#[tokio::test]
async fn a_cut_stream_is_an_error_event_not_a_message_stop() {
    let stream = sse(&[
        json!({"type": "response.created", "response": {"status": "in_progress", "output": []}}),
        json!({"type": "response.output_item.added", "output_index": 0, "item": {"type": "message", "id": "m", "content": []}}),
        json!({"type": "response.output_text.delta", "output_index": 0, "item_id": "m", "delta": "Half"}),
    ]);
    let upstream = Upstream::new(move |_| {
        let frames = vec![
            Ok(Frame::data(Bytes::from(stream.clone()))),
            Err(std::io::Error::other("connection reset")),
        ];
        Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync())
    });
    let (status, _, body) = upstream
        .send(layer(), post(json!({"model": "m", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "x"}]})))
        .await;
    assert_eq!(status, 200);
    let events = events_of(&body);
    let last = events.last().expect("events");
    assert_eq!(last["type"], "error");
    assert!(!events.iter().any(|e| e["type"] == "message_stop"));
}

//! The Anthropic passthrough layer in front of a `service_fn` mock Anthropic upstream that
//! speaks the real wire format (Messages JSON, the SSE event sequence, error bodies): what the
//! upstream receives (headers, model, no `cache_ttl_secs`) and what the client gets back.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Either, Full, StreamBody};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_bridge::BoxError;
use tower_llm_bridge::passthrough::AnthropicPassthroughLayer;
use tower_llm_bridge::translate::ModelMap;

type Body = UnsyncBoxBody<Bytes, BoxError>;
type UpstreamRequest = Request<Either<Full<Bytes>, Full<Bytes>>>;

#[derive(Debug)]
struct Seen {
    path: String,
    headers: HeaderMap,
    body: Value,
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A message as Anthropic returns it (anthropic-sdk-python `types/message.py`).
fn message(model: &str) -> Value {
    json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": "Hello!"}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": {"input_tokens": 12, "output_tokens": 6,
                  "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    })
}

/// A stream as Anthropic sends it, one event per entry.
fn stream_events(model: &str) -> Vec<String> {
    let events = [
        (
            "message_start",
            json!({"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": model,
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 25, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
        ("ping", json!({"type": "ping"})),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": "Hello"}}),
        ),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": "!"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": 15}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ];
    events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect()
}

fn request(body: Value, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::post("/v1/messages");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request")
}

type Shared = Arc<Mutex<Vec<Seen>>>;
type Reply = Arc<dyn Fn() -> Response<Body> + Send + Sync>;

fn upstream(
    seen: &Shared,
    reply: Reply,
) -> BoxCloneService<UpstreamRequest, Response<Body>, Infallible> {
    let seen = Arc::clone(seen);
    BoxCloneService::new(tower::service_fn(move |req: UpstreamRequest| {
        let (seen, reply) = (Arc::clone(&seen), Arc::clone(&reply));
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await.expect("body").to_bytes();
            seen.lock().expect("lock").push(Seen {
                path: parts.uri.path().to_owned(),
                headers: parts.headers,
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            });
            Ok::<_, Infallible>(reply())
        }
    }))
}

fn layer() -> AnthropicPassthroughLayer {
    AnthropicPassthroughLayer::new().model_map(ModelMap::new().default_model("claude-haiku-4-5"))
}

#[tokio::test]
async fn json_goes_through_with_the_model_swapped_and_back_with_the_client_s() {
    let seen: Shared = Arc::default();
    let reply: Reply = Arc::new(|| {
        Response::builder()
            .header("content-type", "application/json")
            .header("request-id", "req_upstream_1")
            .header("content-length", "999")
            .body(full(message("claude-haiku-4-5-20251001").to_string()))
            .expect("response")
    });
    let service = ServiceBuilder::new()
        .layer(layer())
        .service(upstream(&seen, reply));
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "cache_ttl_secs": 60,
                      "system": "Be brief.", "metadata": {"user_id": "u1"},
                      "messages": [{"role": "user", "content": "Hello"}]});
    let res = service
        .oneshot(request(
            body.clone(),
            &[
                ("x-api-key", "sk-ant-client-secret"),
                ("authorization", "Bearer client-token"),
                ("anthropic-beta", "prompt-caching-2024-07-31"),
                ("content-type", "application/json"),
            ],
        ))
        .await
        .expect("infallible");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["request-id"], "req_upstream_1");
    assert!(
        res.headers().get("content-length").is_none(),
        "the length changed"
    );
    let got: Value =
        serde_json::from_slice(&res.into_body().collect().await.expect("b").to_bytes())
            .expect("json");
    let expected = message("claude-sonnet-4-5");
    assert_eq!(got, expected);

    let seen = seen.lock().expect("lock");
    let seen = &seen[0];
    assert_eq!(seen.path, "/v1/messages");
    assert!(
        seen.headers.get("x-api-key").is_none(),
        "client key never forwarded"
    );
    assert!(seen.headers.get("authorization").is_none());
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01", "added");
    assert_eq!(
        seen.headers["anthropic-beta"], "prompt-caching-2024-07-31",
        "kept"
    );
    let mut sent = body;
    sent["model"] = json!("claude-haiku-4-5");
    sent.as_object_mut()
        .expect("object")
        .remove("cache_ttl_secs");
    assert_eq!(
        seen.body, sent,
        "only the model changed; cache_ttl_secs never goes upstream"
    );
    assert_eq!(
        seen.headers["content-length"],
        seen.body.to_string().len().to_string()
    );
}

#[tokio::test]
async fn the_client_s_anthropic_version_is_kept() {
    let seen: Shared = Arc::default();
    let reply: Reply = Arc::new(|| Response::new(full(message("m").to_string())));
    let service = ServiceBuilder::new()
        .layer(layer())
        .service(upstream(&seen, reply));
    let body = json!({"model": "m", "max_tokens": 1, "messages": []});
    let _ = service
        .oneshot(request(body, &[("anthropic-version", "2023-01-01")]))
        .await
        .expect("infallible");
    assert_eq!(
        seen.lock().expect("lock")[0].headers["anthropic-version"],
        "2023-01-01"
    );
}

#[tokio::test]
async fn a_stream_goes_back_frame_by_frame_with_the_client_s_model_in_message_start() {
    let seen: Shared = Arc::default();
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(16);
    let rx = Arc::new(Mutex::new(Some(rx)));
    let reply: Reply = Arc::new(move || {
        let rx = rx.lock().expect("lock").take().expect("one stream");
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Response::builder()
            .header("content-type", "text/event-stream; charset=utf-8")
            .body(StreamBody::new(stream).boxed_unsync())
            .expect("response")
    });
    let service = ServiceBuilder::new()
        .layer(layer())
        .service(upstream(&seen, reply));
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": true,
                      "messages": [{"role": "user", "content": "Hello"}]});
    let res = service
        .oneshot(request(body, &[]))
        .await
        .expect("infallible");
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    let mut body = Box::pin(res.into_body());

    let events = stream_events("claude-haiku-4-5-20251001");
    // message_start split in two frames: nothing goes out until it is complete.
    let (head, tail) = events[0].split_at(40);
    tx.send(Ok(Frame::data(Bytes::from(head.to_owned()))))
        .await
        .expect("send");
    tx.send(Ok(Frame::data(Bytes::from(tail.to_owned()))))
        .await
        .expect("send");
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("message_start before the rest of the stream was sent")
        .expect("frame")
        .expect("ok")
        .into_data()
        .expect("data");
    let first = String::from_utf8_lossy(&first).into_owned();
    assert_eq!(first, stream_events("claude-sonnet-4-5")[0]);

    // Each later event goes out as its own frame, byte for byte, as soon as it arrives.
    for event in &events[1..] {
        tx.send(Ok(Frame::data(Bytes::from(event.clone()))))
            .await
            .expect("send");
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("not buffered")
            .expect("frame")
            .expect("ok")
            .into_data()
            .expect("data");
        assert_eq!(String::from_utf8_lossy(&frame), *event);
    }
    drop(tx);
    assert!(body.frame().await.is_none(), "a clean end");
}

#[tokio::test]
async fn a_stream_cut_halfway_ends_with_an_error_event() {
    let seen: Shared = Arc::default();
    let reply: Reply = Arc::new(|| {
        let events = stream_events("up");
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from(events[0].clone()))),
            Ok(Frame::data(Bytes::from(events[1].clone()))),
            Err("connection reset by peer".into()),
        ];
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync())
            .expect("response")
    });
    let service = ServiceBuilder::new()
        .layer(layer())
        .service(upstream(&seen, reply));
    let body = json!({"model": "mine", "max_tokens": 64, "stream": true, "messages": []});
    let res = service
        .oneshot(request(body, &[]))
        .await
        .expect("infallible");
    let text = String::from_utf8(
        res.into_body()
            .collect()
            .await
            .expect("ends cleanly")
            .to_bytes()
            .to_vec(),
    )
    .expect("utf-8");
    assert!(text.contains("\"model\":\"mine\""), "{text}");
    let (_, error) = text.rsplit_once("event: error\ndata: ").expect(&text);
    let error: Value = serde_json::from_str(error.trim()).expect("json");
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "api_error");
}

#[tokio::test]
async fn upstream_errors_go_back_as_they_came() {
    let seen: Shared = Arc::default();
    let error =
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}});
    let error_text = error.to_string();
    let reply: Reply = Arc::new(move || {
        Response::builder()
            .status(529)
            .header("content-type", "application/json")
            .header("retry-after", "12")
            .body(full(error_text.clone()))
            .expect("response")
    });
    let service = ServiceBuilder::new()
        .layer(layer())
        .service(upstream(&seen, reply));
    let res = service
        .oneshot(request(
            json!({"model": "m", "max_tokens": 1, "messages": []}),
            &[],
        ))
        .await
        .expect("infallible");
    assert_eq!(res.status(), 529);
    assert_eq!(res.headers()["retry-after"], "12");
    let got: Value =
        serde_json::from_slice(&res.into_body().collect().await.expect("b").to_bytes())
            .expect("json");
    assert_eq!(got, error);
}

#[tokio::test]
async fn malformed_bodies_never_reach_the_upstream_and_other_routes_pass() {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let reply: Reply = Arc::new(|| Response::new(full("{}")));
    let service = ServiceBuilder::new()
        .layer(layer())
        .service(upstream(&seen, reply));
    for body in [
        &b"{"[..],
        b"",
        b"[1]",
        br#"{"max_tokens":1}"#,
        br#"{"model":null}"#,
        // The cache's setting is checked without a cache too.
        br#"{"model":"claude-sonnet-4-5","max_tokens":1,"messages":[],"cache_ttl_secs":-1}"#,
        br#"{"model":"claude-sonnet-4-5","max_tokens":1,"messages":[],"cache_ttl_secs":"60"}"#,
    ] {
        let req = Request::post("/v1/messages")
            .body(Full::new(Bytes::from_static(body)))
            .expect("request");
        let res = service.clone().oneshot(req).await.expect("infallible");
        assert_eq!(res.status(), 400, "{}", String::from_utf8_lossy(body));
        let json: Value =
            serde_json::from_slice(&res.into_body().collect().await.expect("b").to_bytes())
                .expect("json");
        assert_eq!(json["error"]["type"], "invalid_request_error");
    }
    assert!(seen.lock().expect("lock").is_empty());
    let req = Request::get("/v1/models")
        .body(Full::default())
        .expect("request");
    let res = service.oneshot(req).await.expect("infallible");
    assert_eq!(res.status(), 200);
    let seen = seen.lock().expect("lock");
    assert_eq!(seen[0].path, "/v1/models");
}

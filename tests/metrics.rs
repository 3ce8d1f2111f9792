//! The metrics layer around `service_fn` backends, with a `DebuggingRecorder` of its own per
//! test (snapshots return deltas): exact counts for JSON and streamed answers, usage reported
//! by a layer further in or read from the answer, cache results, errors, cut and dropped
//! bodies, in-flight counts and fallbacks.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_llm_bridge::BoxError;
use tower_llm_bridge::metrics::{End, MetricsLayer, ModelLabels};
use tower_llm_bridge::report::{
    AttemptOutcome, BACKEND_HEADER, ModelSlot, UpstreamAttempts, Usage, UsageSlot,
};

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Series and values of one snapshot, keyed `name{k=v,...}` (labels in recording order).
fn snapshot(snapshotter: &Snapshotter) -> BTreeMap<String, DebugValue> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            (format!("{}{{{}}}", key.name(), labels.join(",")), value)
        })
        .filter(|(_, value)| match value {
            // Untouched since the last snapshot.
            DebugValue::Counter(0) => false,
            DebugValue::Histogram(values) => !values.is_empty(),
            _ => true,
        })
        .collect()
}

fn gauge(v: f64) -> DebugValue {
    DebugValue::Gauge(v.into())
}

fn histogram_len(map: &BTreeMap<String, DebugValue>, key: &str) -> usize {
    match map.get(key) {
        Some(DebugValue::Histogram(values)) => values.len(),
        other => panic!("{key}: {other:?}"),
    }
}

fn counters(map: &BTreeMap<String, DebugValue>) -> BTreeMap<String, u64> {
    map.iter()
        .filter_map(|(k, v)| match v {
            DebugValue::Counter(n) => Some((k.clone(), *n)),
            _ => None,
        })
        .collect()
}

fn new_layer() -> (MetricsLayer, Snapshotter) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let layer = MetricsLayer::new()
        .recorder(Arc::new(recorder))
        .backend("primary")
        .model_labels(ModelLabels::empty().names(["claude-sonnet-4-5", "gpt-4o"]));
    (layer, snapshotter)
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body of `parts`, one frame each, `delay` apart.
fn frames(parts: Vec<&'static str>, delay: Duration) -> Body {
    let stream = futures_util::stream::iter(parts).then(move |part| async move {
        tokio::time::sleep(delay).await;
        Ok::<_, BoxError>(Frame::data(Bytes::from_static(part.as_bytes())))
    });
    StreamBody::new(stream).boxed_unsync()
}

fn post(path: &str) -> Request<Full<Bytes>> {
    Request::post(path)
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("request")
}

/// What the translation layer does: names the client's model, reports the usage.
fn report(req: &Request<Full<Bytes>>, model: &str, usage: Option<Usage>) {
    ModelSlot::note_request(req.extensions(), &serde_json::json!({ "model": model }));
    if let (Some(slot), Some(usage)) = (req.extensions().get::<UsageSlot>(), usage) {
        slot.set(usage);
    }
}

fn usage(input: u64, output: u64, cache_read: u64) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        cache_read_input_tokens: cache_read,
        cache_creation_input_tokens: 0,
    }
}

const ANTHROPIC_JSON: &str = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":11,"cache_creation_input_tokens":0,"cache_read_input_tokens":4,"output_tokens":6}}"#;

const ANTHROPIC_STREAM: [&str; 6] = [
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"usage\":{\"input_tokens\":20,\"cache_read_input_tokens\":2,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\nevent: message_del",
    "ta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":9}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
];

fn sse(body: Body) -> Response<Body> {
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(body)
        .expect("response")
}

#[tokio::test]
async fn json_answer_with_reported_usage() {
    let (layer, snap) = new_layer();
    let svc =
        ServiceBuilder::new()
            .layer(layer)
            .service_fn(|req: Request<Full<Bytes>>| async move {
                report(&req, "claude-sonnet-4-5-20250929", Some(usage(12, 3, 5)));
                // The reported usage wins over whatever the body says.
                Ok::<_, Infallible>(Response::new(full(ANTHROPIC_JSON)))
            });
    let res = svc.oneshot(post("/v1/messages")).await.expect("response");
    assert_eq!(snap.snapshot().into_vec().len(), 1, "only in flight so far");
    res.into_body().collect().await.expect("body");
    let got = snapshot(&snap);
    assert_eq!(
        counters(&got),
        BTreeMap::from([
            (
                "llm_bridge_requests_total{route=messages,status=200,model=claude-sonnet-4-5}"
                    .to_owned(),
                1
            ),
            (
                "llm_bridge_tokens_total{type=input,model=claude-sonnet-4-5,backend=primary}"
                    .to_owned(),
                12
            ),
            (
                "llm_bridge_tokens_total{type=output,model=claude-sonnet-4-5,backend=primary}"
                    .to_owned(),
                3
            ),
            (
                "llm_bridge_tokens_total{type=cache_read,model=claude-sonnet-4-5,backend=primary}"
                    .to_owned(),
                5
            ),
            (
                "llm_bridge_upstream_requests_total{backend=primary,outcome=ok}".to_owned(),
                1
            ),
        ])
    );
    assert_eq!(
        histogram_len(&got, "llm_bridge_request_duration_seconds{route=messages}"),
        1
    );
    // +1 then -1 since the first snapshot took the +1.
    assert_eq!(got["llm_bridge_in_flight_requests{}"], gauge(-1.0));
    assert!(!got.keys().any(|k| k.contains("time_to_first_token")));
}

#[tokio::test]
async fn json_answer_usage_read_from_the_body_in_any_framing() {
    for parts in [
        vec![ANTHROPIC_JSON],
        vec![
            &ANTHROPIC_JSON[..50],
            &ANTHROPIC_JSON[50..260],
            &ANTHROPIC_JSON[260..],
        ],
    ] {
        let (layer, snap) = new_layer();
        let parts = Arc::new(parts);
        let svc = ServiceBuilder::new().layer(layer).service_fn(move |req| {
            let parts = Arc::clone(&parts);
            async move {
                // An Anthropic backend passed through: nobody reports the usage.
                report(&req, "claude-sonnet-4-5", None);
                Ok::<_, Infallible>(Response::new(frames(parts.to_vec(), Duration::ZERO)))
            }
        });
        let res = svc.oneshot(post("/v1/messages")).await.expect("response");
        let body = res.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(body, ANTHROPIC_JSON.as_bytes(), "passed on unchanged");
        let got = counters(&snapshot(&snap));
        let tokens = |kind: &str| {
            got[&format!(
                "llm_bridge_tokens_total{{type={kind},model=claude-sonnet-4-5,backend=primary}}"
            )]
        };
        assert_eq!(
            (tokens("input"), tokens("output"), tokens("cache_read")),
            (11, 6, 4)
        );
    }
}

#[tokio::test(start_paused = true)]
async fn streamed_answer_time_to_first_token_and_usage_from_events() {
    let (layer, snap) = new_layer();
    let svc =
        ServiceBuilder::new()
            .layer(layer)
            .service_fn(|req: Request<Full<Bytes>>| async move {
                report(&req, "gpt-4o", None);
                Ok::<_, Infallible>(sse(frames(
                    ANTHROPIC_STREAM.to_vec(),
                    Duration::from_millis(100),
                )))
            });
    let res = svc.oneshot(post("/v1/messages")).await.expect("response");
    let body = res.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(body, ANTHROPIC_STREAM.concat().as_bytes());
    let got = snapshot(&snap);
    // The third frame holds the first content_block_delta: 300 ms in (paused clock).
    assert_eq!(
        got["llm_bridge_time_to_first_token_seconds{backend=primary}"],
        DebugValue::Histogram(vec![0.3.into()])
    );
    assert_eq!(
        got["llm_bridge_request_duration_seconds{route=messages}"],
        DebugValue::Histogram(vec![0.6.into()])
    );
    let c = counters(&got);
    assert_eq!(
        c["llm_bridge_tokens_total{type=input,model=gpt-4o,backend=primary}"],
        20
    );
    assert_eq!(
        c["llm_bridge_tokens_total{type=output,model=gpt-4o,backend=primary}"],
        9
    );
    assert_eq!(
        c["llm_bridge_tokens_total{type=cache_read,model=gpt-4o,backend=primary}"],
        2
    );
    assert_eq!(
        c["llm_bridge_requests_total{route=messages,status=200,model=gpt-4o}"],
        1
    );
}

#[tokio::test]
async fn a_stream_whose_usage_a_translator_reports_at_its_end() {
    let (layer, snap) = new_layer();
    let svc =
        ServiceBuilder::new()
            .layer(layer)
            .service_fn(|req: Request<Full<Bytes>>| async move {
                report(&req, "gpt-4o", None);
                let slot = req.extensions().get::<UsageSlot>().cloned().expect("slot");
                // The translator fills the slot when its stream ends (before the body's end).
                let body = frames(ANTHROPIC_STREAM.to_vec(), Duration::ZERO)
                    .map_frame(move |frame| {
                        if frame
                            .data_ref()
                            .is_some_and(|d| d.starts_with(b"event: message_stop"))
                        {
                            slot.set(usage(100, 50, 0));
                        }
                        frame
                    })
                    .boxed_unsync();
                Ok::<_, Infallible>(sse(body))
            });
    let res = svc.oneshot(post("/v1/messages")).await.expect("response");
    res.into_body().collect().await.expect("body");
    let c = counters(&snapshot(&snap));
    assert_eq!(
        c["llm_bridge_tokens_total{type=input,model=gpt-4o,backend=primary}"],
        100
    );
    assert_eq!(
        c["llm_bridge_tokens_total{type=output,model=gpt-4o,backend=primary}"],
        50
    );
}

#[tokio::test]
async fn cache_results_and_hits_count_tokens_for_the_cache() {
    let (layer, snap) = new_layer();
    let svc =
        ServiceBuilder::new()
            .layer(layer)
            .service_fn(|req: Request<Full<Bytes>>| async move {
                let result = req.headers()["test-cache"].to_str().unwrap().to_owned();
                report(&req, "claude-sonnet-4-5", None);
                let res = Response::builder()
                    .header("x-cache", result)
                    .body(full(ANTHROPIC_JSON))
                    .unwrap();
                Ok::<_, Infallible>(res)
            });
    for (path, result) in [
        ("/v1/messages", "MISS"),
        ("/v1/messages", "HIT"),
        ("/v1/messages", "HIT"),
        ("/v1/chat/completions", "BYPASS"),
        ("/v1/chat/completions", "HIT"),
    ] {
        let mut req = post(path);
        req.headers_mut()
            .insert("test-cache", result.parse().unwrap());
        let res = svc.clone().oneshot(req).await.expect("response");
        res.into_body().collect().await.expect("body");
    }
    let c = counters(&snapshot(&snap));
    assert_eq!(
        c["llm_bridge_cache_requests_total{namespace=anth,result=miss}"],
        1
    );
    assert_eq!(
        c["llm_bridge_cache_requests_total{namespace=anth,result=hit}"],
        2
    );
    assert_eq!(
        c["llm_bridge_cache_requests_total{namespace=oai,result=bypass}"],
        1
    );
    assert_eq!(
        c["llm_bridge_cache_requests_total{namespace=oai,result=hit}"],
        1
    );
    // Hits count their tokens for the cache and call no backend.
    assert_eq!(
        c["llm_bridge_tokens_total{type=output,model=claude-sonnet-4-5,backend=cache}"],
        18
    );
    assert_eq!(
        c["llm_bridge_tokens_total{type=output,model=claude-sonnet-4-5,backend=primary}"],
        12
    );
    assert_eq!(
        c["llm_bridge_upstream_requests_total{backend=primary,outcome=ok}"],
        2
    );
    assert_eq!(c.keys().filter(|k| k.contains("upstream")).count(), 1);
}

#[tokio::test]
async fn fallback_attempts_from_the_routing_layer() {
    let (layer, snap) = new_layer();
    let svc =
        ServiceBuilder::new()
            .layer(layer)
            .service_fn(|req: Request<Full<Bytes>>| async move {
                report(&req, "claude-sonnet-4-5", Some(usage(1, 2, 0)));
                let mut attempts = UpstreamAttempts::default();
                attempts.push("local", AttemptOutcome::Fallback);
                attempts.push("azure", AttemptOutcome::Fallback);
                attempts.push("openai", AttemptOutcome::Ok);
                let mut res = sse(frames(ANTHROPIC_STREAM.to_vec(), Duration::ZERO));
                res.extensions_mut().insert(attempts);
                // The extension wins over the header.
                res.headers_mut()
                    .insert(BACKEND_HEADER, "ignored".parse().unwrap());
                Ok::<_, Infallible>(res)
            });
    let res = svc.oneshot(post("/v1/messages")).await.expect("response");
    res.into_body().collect().await.expect("body");
    let got = snapshot(&snap);
    let c = counters(&got);
    assert_eq!(
        c["llm_bridge_upstream_requests_total{backend=local,outcome=fallback}"],
        1
    );
    assert_eq!(
        c["llm_bridge_upstream_requests_total{backend=azure,outcome=fallback}"],
        1
    );
    assert_eq!(
        c["llm_bridge_upstream_requests_total{backend=openai,outcome=ok}"],
        1
    );
    assert_eq!(c.keys().filter(|k| k.contains("upstream")).count(), 3);
    assert_eq!(
        c["llm_bridge_tokens_total{type=output,model=claude-sonnet-4-5,backend=openai}"],
        2
    );
    assert_eq!(
        histogram_len(
            &got,
            "llm_bridge_time_to_first_token_seconds{backend=openai}"
        ),
        1
    );

    // The header alone names the backend too.
    let (layer, snap) = new_layer();
    let svc =
        ServiceBuilder::new()
            .layer(layer)
            .service_fn(|req: Request<Full<Bytes>>| async move {
                report(&req, "gpt-4o", Some(usage(1, 2, 0)));
                let mut res = Response::new(full("{}"));
                res.headers_mut()
                    .insert(BACKEND_HEADER, "vllm".parse().unwrap());
                Ok::<_, Infallible>(res)
            });
    svc.oneshot(post("/v1/chat/completions"))
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    let c = counters(&snapshot(&snap));
    assert_eq!(
        c["llm_bridge_tokens_total{type=input,model=gpt-4o,backend=vllm}"],
        1
    );
    assert_eq!(
        c["llm_bridge_upstream_requests_total{backend=primary,outcome=ok}"],
        1
    );
}

#[tokio::test]
async fn errors_refusals_and_local_routes() {
    let (layer, snap) = new_layer();
    let svc =
        ServiceBuilder::new()
            .layer(layer)
            .service_fn(|req: Request<Full<Bytes>>| async move {
                let status: u16 = req.headers()["test-status"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                if req.uri().path().starts_with("/v1/messages") {
                    report(&req, "mystery-model", None);
                }
                let res = Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(full(
                        r#"{"type":"error","error":{"type":"x","message":"y"}}"#,
                    ))
                    .unwrap();
                Ok::<_, Infallible>(res)
            });
    for (method, path, status) in [
        ("POST", "/v1/messages", 429),
        ("POST", "/v1/messages", 401),
        ("POST", "/v1/messages", 413),
        ("POST", "/v1/messages/count_tokens", 200),
        ("GET", "/v1/models", 200),
        ("GET", "/v1/models/claude-x", 404),
        ("GET", "/health", 200),
        ("GET", "/wp-admin/secret-token-in-path", 404),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("test-status", status.to_string())
            .body(Full::new(Bytes::new()))
            .unwrap();
        svc.clone()
            .oneshot(req)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap();
    }
    let c = counters(&snapshot(&snap));
    assert_eq!(
        c,
        BTreeMap::from([
            (
                "llm_bridge_requests_total{route=messages,status=429,model=other}".to_owned(),
                1
            ),
            (
                "llm_bridge_requests_total{route=messages,status=401,model=other}".to_owned(),
                1
            ),
            (
                "llm_bridge_requests_total{route=messages,status=413,model=other}".to_owned(),
                1
            ),
            (
                "llm_bridge_requests_total{route=count_tokens,status=200,model=other}".to_owned(),
                1
            ),
            (
                "llm_bridge_requests_total{route=models,status=200,model=}".to_owned(),
                1
            ),
            (
                "llm_bridge_requests_total{route=models,status=404,model=}".to_owned(),
                1
            ),
            (
                "llm_bridge_requests_total{route=health,status=200,model=}".to_owned(),
                1
            ),
            (
                "llm_bridge_requests_total{route=other,status=404,model=}".to_owned(),
                1
            ),
            // The upstream's 429 is an upstream error; the proxy's own refusals are not.
            (
                "llm_bridge_upstream_requests_total{backend=primary,outcome=error}".to_owned(),
                1
            ),
        ])
    );
}

#[tokio::test(start_paused = true)]
async fn in_flight_cut_bodies_dropped_requests_and_service_errors() {
    let (layer, snap) = new_layer();
    let mut svc = ServiceBuilder::new().layer(layer.clone()).service_fn(
        |req: Request<Full<Bytes>>| async move {
            report(&req, "gpt-4o", None);
            match req.uri().path() {
                "/v1/messages" => {
                    // Two events, then the upstream connection breaks.
                    let parts = ANTHROPIC_STREAM[..3]
                        .iter()
                        .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))));
                    let failing = futures_util::stream::iter(parts.collect::<Vec<_>>()).chain(
                        futures_util::stream::once(async {
                            Err::<Frame<Bytes>, BoxError>("reset".into())
                        }),
                    );
                    Ok(sse(StreamBody::new(failing).boxed_unsync()))
                }
                "/slow" => {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    Ok(Response::new(full("late")))
                }
                _ => Err::<Response<Body>, BoxError>("inner failure".into()),
            }
        },
    );

    // Three requests open at once: in flight 3.
    let a = svc
        .ready()
        .await
        .unwrap()
        .call(post("/v1/messages"))
        .await
        .unwrap();
    let b = svc
        .ready()
        .await
        .unwrap()
        .call(post("/v1/messages"))
        .await
        .unwrap();
    // Never polled: dropped before the inner service even saw it.
    let slow = svc.ready().await.unwrap().call(post("/slow"));
    assert_eq!(
        snapshot(&snap)["llm_bridge_in_flight_requests{}"],
        gauge(3.0)
    );

    // a: read until the body fails; b: dropped after its head; slow: dropped before its head.
    let err = a.into_body().collect().await.expect_err("cut");
    assert_eq!(err.to_string(), "reset");
    drop(b);
    drop(slow);
    let failed = svc.ready().await.unwrap().call(post("/boom")).await;
    assert!(failed.is_err());

    let got = snapshot(&snap);
    // Since the last snapshot: +1 (the failing call), then four requests over.
    assert_eq!(got["llm_bridge_in_flight_requests{}"], gauge(-3.0));
    let c = counters(&got);
    assert_eq!(
        c["llm_bridge_requests_total{route=messages,status=200,model=gpt-4o}"],
        2
    );
    assert_eq!(
        c["llm_bridge_requests_total{route=other,status=499,model=}"],
        1
    );
    // Both heads were 200 (b's body was never read, a's failed midway).
    assert_eq!(
        c["llm_bridge_upstream_requests_total{backend=primary,outcome=ok}"],
        2
    );
    assert_eq!(
        c["llm_bridge_requests_total{route=other,status=error,model=gpt-4o}"],
        1
    );
    // The cut stream had shown its message_start: its input tokens were spent.
    assert_eq!(
        c["llm_bridge_tokens_total{type=input,model=gpt-4o,backend=primary}"],
        20
    );
    assert_eq!(
        histogram_len(
            &got,
            "llm_bridge_time_to_first_token_seconds{backend=primary}"
        ),
        1
    );
    assert_eq!(
        histogram_len(&got, "llm_bridge_request_duration_seconds{route=messages}"),
        2
    );
}

#[tokio::test]
async fn the_completion_hook_sees_one_summary_per_request() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let (metrics, _snap) = new_layer();
    let layer = metrics.on_complete(move |done| {
        sink.lock().unwrap().push((
            done.method.to_string(),
            done.path.to_owned(),
            done.status.map(|s| s.as_u16()),
            done.model.map(str::to_owned),
            done.model_label.to_owned(),
            done.served_model.map(str::to_owned),
            done.backend.map(str::to_owned),
            done.cache,
            done.usage,
            done.time_to_first_token.is_some(),
            done.end,
        ));
    });
    let svc =
        ServiceBuilder::new()
            .layer(layer)
            .service_fn(|req: Request<Full<Bytes>>| async move {
                if req.uri().path() == "/v1/messages" {
                    report(&req, "claude-sonnet-4-5-20250929", Some(usage(3, 4, 0)));
                    req.extensions()
                        .get::<ModelSlot>()
                        .unwrap()
                        .set_served("gpt-4o");
                    let mut res = sse(frames(ANTHROPIC_STREAM.to_vec(), Duration::ZERO));
                    res.headers_mut()
                        .insert("x-cache", "BYPASS".parse().unwrap());
                    return Ok::<_, Infallible>(res);
                }
                Ok(Response::builder()
                    .status(StatusCode::NOT_FOUND)
                    .body(full(""))
                    .unwrap())
            });
    let res = svc
        .clone()
        .oneshot(post("/v1/messages?beta=true"))
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    svc.oneshot(Request::get("/nope").body(Full::default()).unwrap())
        .await
        .unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(
        *seen,
        [
            (
                "POST".to_owned(),
                "/v1/messages".to_owned(),
                Some(200),
                Some("claude-sonnet-4-5-20250929".to_owned()),
                "claude-sonnet-4-5".to_owned(),
                Some("gpt-4o".to_owned()),
                Some("primary".to_owned()),
                Some("bypass"),
                Some(usage(3, 4, 0)),
                true,
                End::Complete,
            ),
            (
                "GET".to_owned(),
                "/nope".to_owned(),
                Some(404),
                None,
                String::new(),
                None,
                None,
                None,
                None,
                false,
                End::Complete,
            ),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// With the translation and cache layers: who reports what
// ---------------------------------------------------------------------------------------------

mod common;

use http_body_util::Either;
use tower_llm_bridge::cache::{MemoryCache, ResponseCacheLayer};
use tower_llm_bridge::translate::{AnthropicToOpenAiLayer, ModelMap};

type UpstreamReq = Request<Either<Full<Bytes>, Either<Full<Bytes>, Full<Bytes>>>>;

/// An OpenAI backend: JSON completions, or a stream when asked.
async fn openai(req: UpstreamReq) -> Result<Response<Body>, Infallible> {
    let body = req.into_body().collect().await.expect("body").to_bytes();
    let request: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(request["model"], "gpt-4o");
    if request["stream"] == true {
        let events: String = common::text_stream(&["Bon", "jour"], "stop", (30, 7))
            .iter()
            .map(|chunk| format!("data: {chunk}\n\n"))
            .chain(["data: [DONE]\n\n".to_owned()])
            .collect();
        return Ok(sse(full(events)));
    }
    let completion =
        common::chat_completion_json("Bonjour", "stop", common::usage_with_cache(100, 20, 60));
    Ok(Response::new(full(completion.to_string())))
}

fn anthropic(content: &str, stream: bool) -> Request<Full<Bytes>> {
    let body = serde_json::json!({
        "model": "claude-sonnet-4-5-20250929", "max_tokens": 64, "stream": stream,
        "messages": [{"role": "user", "content": content}],
    });
    Request::post("/v1/messages")
        .header("x-api-key", "caller")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request")
}

#[tokio::test]
async fn the_translation_layer_fills_the_slots() {
    let svc = ServiceBuilder::new()
        .layer(
            AnthropicToOpenAiLayer::new().model_map(ModelMap::big_small("gpt-4o", "gpt-4o-mini")),
        )
        .service_fn(
            |req: Request<Either<Full<Bytes>, Full<Bytes>>>| async move {
                openai(req.map(|b| match b {
                    Either::Left(l) => Either::Left(l),
                    Either::Right(r) => Either::Right(Either::Left(r)),
                }))
                .await
            },
        );
    for stream in [false, true] {
        let (slot, models) = (UsageSlot::new(), ModelSlot::new());
        let mut req = anthropic("hello", stream);
        req.extensions_mut().insert(slot.clone());
        req.extensions_mut().insert(models.clone());
        let res = svc.clone().oneshot(req).await.expect("response");
        // OpenAI's prompt_tokens include the cached ones; Anthropic's input_tokens do not.
        let expected = if stream {
            usage(30, 7, 0)
        } else {
            usage(40, 20, 60)
        };
        if stream {
            // A stream's usage is known at its end.
            assert_eq!(slot.get(), None);
        } else {
            assert_eq!(slot.get(), Some(expected), "set before the body is read");
        }
        res.into_body().collect().await.expect("body");
        assert_eq!(slot.get(), Some(expected), "stream: {stream}");
        assert_eq!(
            models.requested().as_deref(),
            Some("claude-sonnet-4-5-20250929")
        );
        assert_eq!(models.served().as_deref(), Some("gpt-4o"));
    }
}

#[tokio::test]
async fn a_whole_stack_miss_then_hit_and_a_stream() {
    let (layer, snap) = new_layer();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .layer(ResponseCacheLayer::new(MemoryCache::new(100)))
        .layer(
            AnthropicToOpenAiLayer::new().model_map(ModelMap::big_small("gpt-4o", "gpt-4o-mini")),
        )
        .service_fn(openai);
    for _ in 0..2 {
        let res = svc
            .clone()
            .oneshot(anthropic("same", false))
            .await
            .expect("response");
        res.into_body().collect().await.expect("body");
    }
    // A stream is cached too: a miss, then a hit rendered from the stored answer.
    for _ in 0..2 {
        let res = svc
            .clone()
            .oneshot(anthropic("streamed", true))
            .await
            .expect("response");
        res.into_body().collect().await.expect("body");
    }

    let got = snapshot(&snap);
    let c = counters(&got);
    let model = "claude-sonnet-4-5";
    assert_eq!(
        c[&format!("llm_bridge_requests_total{{route=messages,status=200,model={model}}}")],
        4
    );
    assert_eq!(
        c["llm_bridge_cache_requests_total{namespace=anth,result=miss}"],
        2
    );
    assert_eq!(
        c["llm_bridge_cache_requests_total{namespace=anth,result=hit}"],
        2
    );
    assert!(!c.contains_key("llm_bridge_cache_requests_total{namespace=anth,result=bypass}"));
    // The two misses went upstream; the hits did not.
    assert_eq!(
        c["llm_bridge_upstream_requests_total{backend=primary,outcome=ok}"],
        2
    );
    let tokens = |kind: &str, backend: &str| {
        c[&format!("llm_bridge_tokens_total{{type={kind},model={model},backend={backend}}}")]
    };
    assert_eq!(tokens("input", "primary"), 40 + 30);
    assert_eq!(tokens("output", "primary"), 20 + 7);
    assert_eq!(tokens("cache_read", "primary"), 60);
    // The hits' tokens, read from the cached answers (JSON, and the rendered stream).
    assert_eq!(
        (
            tokens("input", "cache"),
            tokens("output", "cache"),
            tokens("cache_read", "cache")
        ),
        (40 + 30, 20 + 7, 60)
    );
    assert_eq!(
        histogram_len(
            &got,
            "llm_bridge_time_to_first_token_seconds{backend=primary}"
        ),
        1
    );
}

#[tokio::test]
async fn with_the_routing_layer_fallbacks_backends_and_no_route() {
    use tower_llm_bridge::route::{Route as RouteLayer, Target};
    let backend = |status: u16| {
        tower::service_fn(move |req: Request<Full<Bytes>>| async move {
            let answer = if status == 200 { ANTHROPIC_JSON } else { "{}" };
            let mut res = Response::new(full(answer));
            *res.status_mut() = StatusCode::from_u16(status).expect("status");
            drop(req);
            Ok::<_, Infallible>(res)
        })
    };
    let (layer, snap) = new_layer();
    let svc = ServiceBuilder::new().layer(layer).service(
        RouteLayer::builder()
            .route(
                "sonnet",
                [
                    Target::new("local", backend(503)),
                    Target::new("cloud", backend(200)),
                ],
            )
            .build(),
    );
    let body = |model: &str| {
        Request::post("/v1/messages")
            .body(Full::new(Bytes::from(format!(
                r#"{{"model":"{model}","max_tokens":8,"messages":[]}}"#
            ))))
            .expect("request")
    };
    let res = svc
        .clone()
        .oneshot(body("claude-sonnet-4-5"))
        .await
        .expect("response");
    res.into_body().collect().await.expect("body");
    let res = svc.oneshot(body("gpt-4o")).await.expect("response");
    assert_eq!(res.status(), 404);
    res.into_body().collect().await.expect("body");

    let c = counters(&snapshot(&snap));
    assert_eq!(
        c,
        BTreeMap::from([
            (
                "llm_bridge_requests_total{route=messages,status=200,model=claude-sonnet-4-5}"
                    .to_owned(),
                1
            ),
            (
                "llm_bridge_requests_total{route=messages,status=404,model=gpt-4o}".to_owned(),
                1
            ),
            (
                "llm_bridge_upstream_requests_total{backend=local,outcome=fallback}".to_owned(),
                1
            ),
            (
                "llm_bridge_upstream_requests_total{backend=cloud,outcome=ok}".to_owned(),
                1
            ),
            // Read from the passed-through Anthropic answer.
            (
                "llm_bridge_tokens_total{type=input,model=claude-sonnet-4-5,backend=cloud}"
                    .to_owned(),
                11
            ),
            (
                "llm_bridge_tokens_total{type=output,model=claude-sonnet-4-5,backend=cloud}"
                    .to_owned(),
                6
            ),
            (
                "llm_bridge_tokens_total{type=cache_read,model=claude-sonnet-4-5,backend=cloud}"
                    .to_owned(),
                4
            ),
        ])
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_request_span_gets_the_gen_ai_attributes() {
    use tracing::field::{Field, Visit};
    use tracing_subscriber::layer::{Context, SubscriberExt};

    #[derive(Clone, Default)]
    struct Fields(Arc<Mutex<BTreeMap<String, String>>>);
    struct Visitor<'a>(&'a mut BTreeMap<String, String>);
    impl Visit for Visitor<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.insert(field.name().to_owned(), format!("{value:?}"));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().to_owned(), value.to_owned());
        }
    }
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Fields {
        fn on_record(
            &self,
            _: &tracing::span::Id,
            values: &tracing::span::Record<'_>,
            _: Context<'_, S>,
        ) {
            values.record(&mut Visitor(&mut self.0.lock().unwrap()));
        }
    }
    let fields = Fields::default();
    let subscriber = tracing_subscriber::registry().with(fields.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let (layer, _snap) = new_layer();
    let mut svc =
        ServiceBuilder::new()
            .layer(layer)
            .service_fn(|req: Request<Full<Bytes>>| async move {
                report(&req, "claude-sonnet-4-5", Some(usage(12, 3, 0)));
                req.extensions()
                    .get::<ModelSlot>()
                    .unwrap()
                    .set_served("gpt-4o");
                let mut res = sse(frames(ANTHROPIC_STREAM.to_vec(), Duration::ZERO));
                res.headers_mut()
                    .insert("x-cache", "BYPASS".parse().unwrap());
                Ok::<_, Infallible>(res)
            });
    let span = tracing::info_span!(
        "request",
        gen_ai.operation.name = tracing::field::Empty,
        gen_ai.request.model = tracing::field::Empty,
        gen_ai.response.model = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        llm_bridge.backend = tracing::field::Empty,
        llm_bridge.cache = tracing::field::Empty,
        llm_bridge.time_to_first_token_ms = tracing::field::Empty,
    );
    // As tower-http's TraceLayer does: the span is current while the inner service is called.
    let ready = svc.ready().await.unwrap();
    let future = span.in_scope(|| ready.call(post("/v1/messages")));
    future.await.unwrap().into_body().collect().await.unwrap();

    let got = fields.0.lock().unwrap().clone();
    let expected: BTreeMap<String, String> = [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.request.model", "claude-sonnet-4-5"),
        ("gen_ai.response.model", "gpt-4o"),
        ("gen_ai.usage.input_tokens", "12"),
        ("gen_ai.usage.output_tokens", "3"),
        ("llm_bridge.backend", "primary"),
        ("llm_bridge.cache", "bypass"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .chain(
        got.get("llm_bridge.time_to_first_token_ms")
            .map(|v| ("llm_bridge.time_to_first_token_ms".to_owned(), v.clone())),
    )
    .collect();
    assert_eq!(got, expected);
    assert!(
        got.contains_key("llm_bridge.time_to_first_token_ms"),
        "{got:?}"
    );
}

#[tokio::test]
async fn refusals_of_the_layers_themselves_count_no_upstream_call() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower_llm_bridge::route::{Route as RouteLayer, Target};
    // A block type Anthropic does not know: the translation layer answers 400 itself.
    let bogus = || {
        Request::post("/v1/messages")
            .body(Full::new(Bytes::from_static(
                br#"{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user","content":[{"type":"bogus"}]}]}"#,
            )))
            .expect("request")
    };
    let calls = Arc::new(AtomicUsize::new(0));
    let translated = |name: &'static str| {
        let calls = Arc::clone(&calls);
        ServiceBuilder::new()
            .layer(AnthropicToOpenAiLayer::new().model_map(ModelMap::new().default_model("gpt-4o")))
            .service_fn(move |req: Request<Either<Full<Bytes>, Full<Bytes>>>| {
                calls.fetch_add(1, Ordering::SeqCst);
                let _ = name;
                openai(req.map(|b| match b {
                    Either::Left(l) => Either::Left(l),
                    Either::Right(r) => Either::Right(Either::Left(r)),
                }))
            })
    };

    // No routing layer: the translation layer's refusal is no call to the configured backend.
    let (layer, snap) = new_layer();
    let res = ServiceBuilder::new()
        .layer(layer)
        .service(translated("primary"))
        .oneshot(bogus())
        .await
        .expect("response");
    assert_eq!(res.status(), 400);
    res.into_body().collect().await.expect("body");
    assert_only_a_400_counted(&counters(&snapshot(&snap)));

    // Behind a route: the target refused it, so no attempt is recorded and the next target,
    // which would refuse it too, is not tried.
    let (layer, snap) = new_layer();
    let res = ServiceBuilder::new()
        .layer(layer)
        .service(
            RouteLayer::builder()
                .route(
                    "*",
                    [
                        Target::new("local", translated("local")),
                        Target::new("cloud", translated("cloud")),
                    ],
                )
                .build(),
        )
        .oneshot(bogus())
        .await
        .expect("response");
    assert_eq!(res.status(), 400);
    assert!(UpstreamAttempts::is_marked_none(&res));
    res.into_body().collect().await.expect("body");
    assert_only_a_400_counted(&counters(&snapshot(&snap)));
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no backend was called");
}

/// One request answered 400, and no upstream call of any outcome.
fn assert_only_a_400_counted(c: &BTreeMap<String, u64>) {
    let requests: Vec<_> = c
        .iter()
        .filter(|(k, _)| k.starts_with("llm_bridge_requests_total{route=messages,status=400,"))
        .collect();
    assert_eq!(requests.len(), 1, "{c:?}");
    assert_eq!(*requests[0].1, 1, "{c:?}");
    assert!(
        !c.keys()
            .any(|k| k.starts_with("llm_bridge_upstream_requests_total")),
        "{c:?}"
    );
}

/// A request a layer refuses after reading its body (validation, `cache_ttl_secs`) still
/// counts under the model it named, folded by the same rule as any other: the slot is filled
/// as soon as the body is parsed, before the checks.
#[tokio::test]
async fn refused_requests_keep_the_model_they_named() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tower_llm_bridge::passthrough::AnthropicPassthroughLayer;

    let calls = Arc::new(AtomicUsize::new(0));
    let request = |body: &str| {
        Request::post("/v1/messages")
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("request")
    };
    let refused = [
        // An unknown block type: the translator's validation.
        (
            r#"{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user","content":[{"type":"bogus"}]}]}"#,
            "claude-sonnet-4-5",
        ),
        // No max_tokens, a dated snapshot of a known name: folded to it.
        (
            r#"{"model":"claude-sonnet-4-5-20250929","messages":[{"role":"user","content":"hi"}]}"#,
            "claude-sonnet-4-5",
        ),
        // An invalid cache_ttl_secs and a name nobody configured: "other".
        (
            r#"{"model":"my-private-finetune","max_tokens":8,"cache_ttl_secs":-1,"messages":[{"role":"user","content":"hi"}]}"#,
            "other",
        ),
        // No model at all: "".
        (
            r#"{"max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#,
            "",
        ),
    ];

    // The chat translation alone (no cache in front to read the model first).
    for (body, label) in refused {
        let (layer, snap) = new_layer();
        let counter = Arc::clone(&calls);
        let res = ServiceBuilder::new()
            .layer(layer)
            .layer(AnthropicToOpenAiLayer::new().model_map(ModelMap::new().default_model("gpt-4o")))
            .service_fn(move |req: Request<Either<Full<Bytes>, Full<Bytes>>>| {
                counter.fetch_add(1, Ordering::SeqCst);
                openai(req.map(|b| match b {
                    Either::Left(l) => Either::Left(l),
                    Either::Right(r) => Either::Right(Either::Left(r)),
                }))
            })
            .oneshot(request(body))
            .await
            .expect("response");
        assert_eq!(res.status(), 400, "{body}");
        res.into_body().collect().await.expect("body");
        let c = counters(&snapshot(&snap));
        assert_eq!(
            c.get(&format!(
                "llm_bridge_requests_total{{route=messages,status=400,model={label}}}"
            )),
            Some(&1),
            "{body}: {c:?}"
        );
    }

    // The Anthropic passthrough: its cache_ttl_secs check comes after the model is read.
    let (layer, snap) = new_layer();
    let counter = Arc::clone(&calls);
    let res = ServiceBuilder::new()
        .layer(layer)
        .layer(AnthropicPassthroughLayer::new())
        .service_fn(move |_req: Request<Either<Full<Bytes>, Full<Bytes>>>| {
            counter.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(full(ANTHROPIC_JSON))) }
        })
        .oneshot(request(
            r#"{"model":"claude-sonnet-4-5","max_tokens":8,"cache_ttl_secs":"soon","messages":[]}"#,
        ))
        .await
        .expect("response");
    assert_eq!(res.status(), 400);
    res.into_body().collect().await.expect("body");
    let c = counters(&snapshot(&snap));
    assert_eq!(
        c.get("llm_bridge_requests_total{route=messages,status=400,model=claude-sonnet-4-5}"),
        Some(&1),
        "{c:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0, "no backend was called");
}

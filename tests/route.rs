//! The route service in front of `service_fn` backends: fallback on every fallback status,
//! on errors and timeouts; no fallback on client errors; all targets failing; cool-down skip
//! and expiry; a stream failing halfway is not retried; misses never call a backend.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Either, Full, StreamBody};
use serde_json::{Value, json};
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_bridge::BoxError;
use tower_llm_bridge::report::{BACKEND_HEADER, UpstreamAttempts};
use tower_llm_bridge::route::{Route, Target};
use tower_llm_bridge::translate::{AnthropicToOpenAiLayer, ModelMap};

type Body = UnsyncBoxBody<Bytes, BoxError>;
type Backend<E = Infallible> = BoxCloneService<Request<Full<Bytes>>, Response<Body>, E>;

fn body(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A backend that answers `status` with a small JSON body and counts its calls, recording the
/// request bodies it saw.
#[derive(Clone, Default)]
struct Mock {
    calls: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Mock {
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn answering(&self, status: u16) -> Backend {
        self.answering_with(move || {
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(body(format!(r#"{{"status":{status}}}"#)))
                .expect("response")
        })
    }

    fn answering_with(
        &self,
        reply: impl Fn() -> Response<Body> + Clone + Send + Sync + 'static,
    ) -> Backend {
        let (calls, seen) = (Arc::clone(&self.calls), Arc::clone(&self.seen));
        BoxCloneService::new(tower::service_fn(move |req: Request<Full<Bytes>>| {
            let (calls, seen, reply) = (Arc::clone(&calls), Arc::clone(&seen), reply.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let bytes = req.into_body().collect().await.expect("body").to_bytes();
                seen.lock()
                    .expect("lock")
                    .push(serde_json::from_slice(&bytes).unwrap_or(Value::Null));
                Ok::<_, Infallible>(reply())
            }
        }))
    }

    /// Never answers.
    fn hanging(&self) -> Backend {
        let calls = Arc::clone(&self.calls);
        BoxCloneService::new(tower::service_fn(move |_req: Request<Full<Bytes>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<Result<Response<Body>, Infallible>>()
        }))
    }
}

fn messages(model: &str) -> Request<Full<Bytes>> {
    let body = json!({"model": model, "max_tokens": 16,
                      "messages": [{"role": "user", "content": "Hello"}]});
    Request::post("/v1/messages")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request")
}

fn attempts<B>(res: &Response<B>) -> Vec<(String, &'static str)> {
    res.extensions()
        .get::<UpstreamAttempts>()
        .expect("attempts")
        .iter()
        .map(|(backend, outcome)| (backend.to_owned(), outcome.as_str()))
        .collect()
}

fn tried(list: &[(&str, &'static str)]) -> Vec<(String, &'static str)> {
    list.iter().map(|(b, o)| ((*b).to_owned(), *o)).collect()
}

async fn text<B>(res: Response<B>) -> String
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn two(first: Backend, second: Backend) -> Route<Backend> {
    Route::builder()
        .route(
            "*",
            [Target::new("first", first), Target::new("second", second)],
        )
        .build()
}

#[tokio::test]
async fn every_fallback_status_moves_to_the_next_target() {
    for status in [408, 429, 500, 502, 503, 504, 529] {
        let (a, b) = (Mock::default(), Mock::default());
        let route = two(a.answering(status), b.answering(200));
        let res = route
            .oneshot(messages("claude-sonnet-4-5"))
            .await
            .expect("infallible");
        assert_eq!(res.status(), 200, "{status}");
        assert_eq!(res.headers()[BACKEND_HEADER], "second", "{status}");
        assert_eq!(
            attempts(&res),
            tried(&[("first", "fallback"), ("second", "ok")]),
            "{status}"
        );
        assert_eq!((a.calls(), b.calls()), (1, 1), "{status}");
        // The client got the second backend's answer, not a mix.
        assert_eq!(text(res).await, r#"{"status":200}"#);
    }
}

#[tokio::test]
async fn client_errors_go_back_at_once() {
    for status in [400, 401, 403, 404, 413, 422] {
        let (a, b) = (Mock::default(), Mock::default());
        let route = two(a.answering(status), b.answering(200));
        let res = route
            .oneshot(messages("claude-sonnet-4-5"))
            .await
            .expect("infallible");
        assert_eq!(res.status().as_u16(), status);
        assert_eq!(res.headers()[BACKEND_HEADER], "first");
        assert_eq!(attempts(&res), tried(&[("first", "error")]));
        assert_eq!(b.calls(), 0, "{status}: the next target is never called");
    }
}

#[tokio::test]
async fn a_refused_connection_falls_back_and_the_last_error_is_returned() {
    let refused = || {
        BoxCloneService::new(tower::service_fn(|_req: Request<Full<Bytes>>| async {
            Err::<Response<Body>, BoxError>(Box::new(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            )))
        }))
    };
    let b = Mock::default();
    let ok: BoxCloneService<Request<Full<Bytes>>, Response<Body>, BoxError> = BoxCloneService::new(
        b.answering(200)
            .map_err(|never: Infallible| -> BoxError { match never {} }),
    );
    let route = Route::builder()
        .route(
            "*",
            [Target::new("dead", refused()), Target::new("alive", ok)],
        )
        .build();
    let res = route.oneshot(messages("m")).await.expect("fell back");
    assert_eq!(res.status(), 200);
    assert_eq!(
        attempts(&res),
        tried(&[("dead", "fallback"), ("alive", "ok")])
    );

    // The only target refuses: its error is the answer (the caller maps it, as without routing).
    let route = Route::builder()
        .route("*", [Target::new("dead", refused())])
        .build();
    let err = route
        .oneshot(messages("m"))
        .await
        .expect_err("the target's error");
    assert!(err.to_string().contains("refused"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_target_without_a_response_head_in_time_falls_back() {
    let (a, b) = (Mock::default(), Mock::default());
    let route = Route::builder()
        .route(
            "*",
            [
                Target::new("slow", a.hanging()).timeout(Duration::from_secs(5)),
                Target::new("fast", b.answering(200)),
            ],
        )
        .build();
    let started = tokio::time::Instant::now();
    let res = route.oneshot(messages("m")).await.expect("infallible");
    assert_eq!(res.status(), 200);
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(
        attempts(&res),
        tried(&[("slow", "fallback"), ("fast", "ok")])
    );

    // The last target timing out: 504 timeout_error, still naming the backend.
    let route = Route::builder()
        .route(
            "*",
            [Target::new("slow", a.hanging()).timeout(Duration::from_secs(2))],
        )
        .build();
    let res = route.oneshot(messages("m")).await.expect("infallible");
    assert_eq!(res.status(), 504);
    assert_eq!(res.headers()[BACKEND_HEADER], "slow");
    assert_eq!(attempts(&res), tried(&[("slow", "error")]));
    let body: Value = serde_json::from_str(&text(res).await).expect("json");
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "timeout_error");
}

#[tokio::test]
async fn when_every_target_fails_the_last_answer_goes_back() {
    let (a, b) = (Mock::default(), Mock::default());
    let route = two(
        a.answering(503),
        b.answering_with(|| {
            Response::builder()
                .status(429)
                .header("retry-after", "7")
                .body(body(r#"{"last":true}"#))
                .expect("response")
        }),
    );
    let res = route
        .clone()
        .oneshot(messages("m"))
        .await
        .expect("infallible");
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "7");
    assert_eq!(res.headers()[BACKEND_HEADER], "second");
    assert_eq!(
        attempts(&res),
        tried(&[("first", "fallback"), ("second", "error")])
    );
    assert_eq!(text(res).await, r#"{"last":true}"#);
    // Both failed, so both cool down; they are still tried, in order.
    assert!(route.targets().all(Target::is_cooling_down));
    let res = route.oneshot(messages("m")).await.expect("infallible");
    assert_eq!(res.status(), 429);
    assert_eq!((a.calls(), b.calls()), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_the_route_skips_past_is_not_slept_on() {
    let (a, b) = (Mock::default(), Mock::default());
    let route = two(
        a.answering_with(|| {
            Response::builder()
                .status(429)
                .header("retry-after", "30")
                .body(body("{}"))
                .expect("response")
        }),
        b.answering(200),
    );
    let started = tokio::time::Instant::now();
    let res = route.oneshot(messages("m")).await.expect("infallible");
    assert_eq!(res.status(), 200);
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert!(res.headers().get("retry-after").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_failed_target_is_skipped_for_the_cool_down_then_tried_again() {
    let (a, b) = (Mock::default(), Mock::default());
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = Arc::clone(&failing);
    let route = Route::builder()
        .cool_down(Duration::from_secs(30))
        .route(
            "*",
            [
                Target::new(
                    "first",
                    a.answering_with(move || {
                        let status = if flag.load(Ordering::SeqCst) {
                            503
                        } else {
                            200
                        };
                        Response::builder()
                            .status(status)
                            .body(body("{}"))
                            .expect("response")
                    }),
                ),
                Target::new("second", b.answering(200)),
            ],
        )
        .build();
    let res = route
        .clone()
        .oneshot(messages("m"))
        .await
        .expect("infallible");
    assert_eq!(
        attempts(&res),
        tried(&[("first", "fallback"), ("second", "ok")])
    );
    assert_eq!(route.plan("m"), ["second", "first"]);

    // Within the cool-down the failed target is skipped.
    tokio::time::advance(Duration::from_secs(29)).await;
    let res = route
        .clone()
        .oneshot(messages("m"))
        .await
        .expect("infallible");
    assert_eq!(attempts(&res), tried(&[("second", "ok")]));
    assert_eq!((a.calls(), b.calls()), (1, 2));

    // After it, the target is first again; a success keeps it there.
    failing.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(2)).await;
    let res = route
        .clone()
        .oneshot(messages("m"))
        .await
        .expect("infallible");
    assert_eq!(attempts(&res), tried(&[("first", "ok")]));
    assert_eq!(route.plan("m"), ["first", "second"]);
    assert_eq!((a.calls(), b.calls()), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn when_all_targets_cool_down_they_are_tried_anyway_and_a_success_ends_it() {
    let (a, b) = (Mock::default(), Mock::default());
    let ok = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = Arc::clone(&ok);
    let route = two(
        a.answering_with(move || {
            let status = if flag.load(Ordering::SeqCst) {
                200
            } else {
                500
            };
            Response::builder()
                .status(status)
                .body(body("{}"))
                .expect("response")
        }),
        b.answering(502),
    );
    let res = route
        .clone()
        .oneshot(messages("m"))
        .await
        .expect("infallible");
    assert_eq!(res.status(), 502, "the last target's error");
    assert!(route.targets().all(Target::is_cooling_down));
    // Never a refusal made up by the route: both are called again, in route order.
    ok.store(true, Ordering::SeqCst);
    let res = route
        .clone()
        .oneshot(messages("m"))
        .await
        .expect("infallible");
    assert_eq!(res.status(), 200);
    assert_eq!(attempts(&res), tried(&[("first", "ok")]));
    assert!(!route.targets().next().expect("first").is_cooling_down());
}

#[tokio::test]
async fn routes_match_in_order_by_case_insensitive_substring_and_a_miss_calls_nothing() {
    let (small, big, any) = (Mock::default(), Mock::default(), Mock::default());
    let route = Route::builder()
        .route("HAIKU", [Target::new("small", small.answering(200))])
        .route("claude", [Target::new("big", big.answering(200))])
        .build();
    let res = route
        .clone()
        .oneshot(messages("claude-3-5-haiku-latest"))
        .await
        .expect("ok");
    assert_eq!(res.headers()[BACKEND_HEADER], "small", "first match wins");
    let res = route
        .clone()
        .oneshot(messages("Claude-Opus-4-1"))
        .await
        .expect("ok");
    assert_eq!(res.headers()[BACKEND_HEADER], "big");

    let res = route.clone().oneshot(messages("gpt-4o")).await.expect("ok");
    assert_eq!(res.status(), 404);
    assert!(res.headers().get(BACKEND_HEADER).is_none());
    let body: Value = serde_json::from_str(&text(res).await).expect("json");
    assert_eq!(body["error"]["type"], "not_found_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("gpt-4o"),
        "{body}"
    );
    assert_eq!((small.calls(), big.calls()), (1, 1), "a miss calls nothing");

    let route = Route::builder()
        .route("*", [Target::new("any", any.answering(200))])
        .build();
    let res = route.oneshot(messages("whatever:7b")).await.expect("ok");
    assert_eq!(res.headers()[BACKEND_HEADER], "any");
}

#[tokio::test]
async fn bodies_without_a_model_are_refused_without_calling_a_backend() {
    let a = Mock::default();
    let route = Route::builder()
        .route("*", [Target::new("a", a.answering(200))])
        .build();
    for body in [
        &b"not json"[..],
        b"",
        br#"{"max_tokens":1}"#,
        br#"{"model":7}"#,
    ] {
        let req = Request::post("/v1/messages")
            .body(Full::new(Bytes::from_static(body)))
            .expect("request");
        let res = route.clone().oneshot(req).await.expect("infallible");
        assert_eq!(res.status(), 400, "{:?}", String::from_utf8_lossy(body));
        let json: Value = serde_json::from_str(&text(res).await).expect("json");
        assert_eq!(json["error"]["type"], "invalid_request_error");
    }
    let big = Request::post("/v1/messages")
        .body(Full::new(Bytes::from(vec![b' '; 2048])))
        .expect("request");
    let route = Route::builder()
        .body_limit(1024)
        .route("*", [Target::new("a", a.answering(200))])
        .build();
    assert_eq!(route.oneshot(big).await.expect("infallible").status(), 413);
    assert_eq!(a.calls(), 0);
}

// ---------------------------------------------------------------------------------------------
// With real translation layers as the targets' stacks.
// ---------------------------------------------------------------------------------------------

type Upstream =
    BoxCloneService<Request<Either<Full<Bytes>, Full<Bytes>>>, Response<Body>, Infallible>;

/// An OpenAI-speaking backend (a `service_fn`) that records the model it was asked for.
fn openai(
    calls: &Arc<AtomicUsize>,
    models: &Arc<Mutex<Vec<String>>>,
    reply: impl Fn() -> Response<Body> + Clone + Send + Sync + 'static,
) -> Upstream {
    let (calls, models) = (Arc::clone(calls), Arc::clone(models));
    BoxCloneService::new(tower::service_fn(
        move |req: Request<Either<Full<Bytes>, Full<Bytes>>>| {
            let (calls, models, reply) = (Arc::clone(&calls), Arc::clone(&models), reply.clone());
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let bytes = req.into_body().collect().await.expect("body").to_bytes();
                let json: Value = serde_json::from_slice(&bytes).expect("json");
                models
                    .lock()
                    .expect("lock")
                    .push(json["model"].as_str().unwrap_or_default().to_owned());
                Ok::<_, Infallible>(reply())
            }
        },
    ))
}

/// The per-target stack: the chat translation with every name mapped to `model`.
fn chat_target(backend: &str, model: &str, upstream: Upstream) -> Target<Backend> {
    let stack = ServiceBuilder::new()
        .map_response(|res: Response<_>| {
            res.map(|b: _| BodyExt::boxed_unsync(BodyExt::map_err(b, Into::<BoxError>::into)))
        })
        .layer(AnthropicToOpenAiLayer::new().model_map(ModelMap::new().default_model(model)))
        .service(upstream);
    Target::new(backend, BoxCloneService::new(stack))
}

fn completion() -> Response<Body> {
    Response::builder()
        .header("content-type", "application/json")
        .body(body(
            json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "upstream",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"},
                                "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}})
            .to_string(),
        ))
        .expect("response")
}

#[tokio::test]
async fn each_target_sends_its_own_model_and_the_client_sees_its_own() {
    let (calls, models) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let overloaded = || {
        Response::builder()
            .status(503)
            .body(body(
                r#"{"error":{"message":"busy","type":"server_error"}}"#,
            ))
            .expect("response")
    };
    let route = Route::builder()
        .route(
            "haiku",
            [
                chat_target("local", "qwen3:8b", openai(&calls, &models, overloaded)),
                chat_target(
                    "primary",
                    "gpt-4o-mini",
                    openai(&calls, &models, completion),
                ),
            ],
        )
        .build();
    let res = route
        .oneshot(messages("claude-haiku-4-5"))
        .await
        .expect("infallible");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()[BACKEND_HEADER], "primary");
    let message: Value = serde_json::from_str(&text(res).await).expect("json");
    assert_eq!(message["model"], "claude-haiku-4-5");
    assert_eq!(message["content"][0]["text"], "Hi");
    assert_eq!(*models.lock().expect("lock"), ["qwen3:8b", "gpt-4o-mini"]);
}

#[tokio::test]
async fn a_stream_failing_halfway_is_not_retried() {
    let (calls, models) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let (second_calls, second_models) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let cut = || {
        let first = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n";
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(first.as_bytes()))),
            Err("connection reset by peer".into()),
        ];
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync())
            .expect("response")
    };
    let route = Route::builder()
        .route(
            "*",
            [
                chat_target("first", "a", openai(&calls, &models, cut)),
                chat_target(
                    "second",
                    "b",
                    openai(&second_calls, &second_models, completion),
                ),
            ],
        )
        .build();
    let mut req = messages("claude-sonnet-4-5");
    *req.body_mut() = Full::new(Bytes::from(
        json!({"model": "claude-sonnet-4-5", "max_tokens": 16, "stream": true,
               "messages": [{"role": "user", "content": "Hello"}]})
        .to_string(),
    ));
    let res = route.oneshot(req).await.expect("infallible");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()[BACKEND_HEADER], "first");
    let events = text(res).await;
    assert!(events.contains("event: message_start"), "{events}");
    assert!(events.contains("Hel"), "{events}");
    assert!(events.contains("event: error"), "{events}");
    assert_eq!(second_calls.load(Ordering::SeqCst), 0, "never called");
}

//! ResponseCacheLayer against a counting `service_fn` upstream.
#![cfg(feature = "cache")]

use std::convert::Infallible;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Either, Full, StreamBody};
use serde_json::{Value, json};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_llm_bridge::cache::{
    CacheBackend, CacheEntry, CacheNamespace, CacheScope, CallerIdentity, MemoryCache,
    ResponseCacheLayer, cache_key_for_request,
};
use tower_llm_bridge::parsed::ParsedBody;

type In = Request<Either<Full<Bytes>, Full<Bytes>>>;
type MockBody = UnsyncBoxBody<Bytes, io::Error>;
type Reply = Arc<dyn Fn(usize) -> io::Result<Response<MockBody>> + Send + Sync>;

/// What the upstream saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    bytes: Bytes,
    parsed: Option<ParsedBody>,
    buffered: bool,
    headers: HeaderMap,
}

/// A mock LLM upstream that counts its calls and records what it received.
#[derive(Clone)]
struct Upstream {
    calls: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    reply: Reply,
    delay: Arc<dyn Fn(usize) -> Duration + Send + Sync>,
}

impl Upstream {
    fn new(
        reply: impl Fn(usize) -> io::Result<Response<MockBody>> + Send + Sync + 'static,
    ) -> Self {
        Self {
            calls: Arc::default(),
            seen: Arc::default(),
            reply: Arc::new(reply),
            delay: Arc::new(|_| Duration::ZERO),
        }
    }

    fn ok() -> Self {
        Self::new(|n| Ok(json_reply(n)))
    }

    fn with_delay(mut self, delay: impl Fn(usize) -> Duration + Send + Sync + 'static) -> Self {
        self.delay = Arc::new(delay);
        self
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn last_seen(&self) -> Seen {
        self.seen
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .expect("a request")
    }

    fn service(
        &self,
    ) -> impl Service<In, Response = Response<MockBody>, Error = io::Error, Future: Send>
    + Clone
    + Send
    + 'static {
        let this = self.clone();
        service_fn(move |req: In| {
            let this = this.clone();
            async move {
                let n = this.calls.fetch_add(1, Ordering::SeqCst) + 1;
                let (parts, body) = req.into_parts();
                let buffered = matches!(body, Either::Left(_));
                let bytes = body.collect().await.expect("request body").to_bytes();
                this.seen.lock().expect("lock").push(Seen {
                    bytes,
                    parsed: parts.extensions.get::<ParsedBody>().cloned(),
                    buffered,
                    headers: parts.headers,
                });
                let delay = (this.delay)(n);
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                (this.reply)(n)
            }
        })
    }
}

fn full(bytes: impl Into<Bytes>) -> MockBody {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// A 200 JSON answer numbered by the call that produced it.
fn json_reply(n: usize) -> Response<MockBody> {
    Response::builder()
        .header("content-type", "application/json")
        .header("x-llm-bridge-degraded", "top_k")
        .header("x-upstream-call", n.to_string())
        .body(full(format!(r#"{{"id":"msg_{n}","type":"message"}}"#)))
        .expect("response")
}

fn status_reply(status: u16) -> Response<MockBody> {
    Response::builder()
        .status(status)
        .body(full(r#"{"error":{"message":"no"}}"#))
        .expect("response")
}

fn frames_body(frames: Vec<io::Result<Frame<Bytes>>>, then_pending: bool) -> MockBody {
    let head = stream::iter(frames);
    if then_pending {
        StreamBody::new(futures_util::StreamExt::chain(head, stream::pending())).boxed_unsync()
    } else {
        StreamBody::new(head).boxed_unsync()
    }
}

const MESSAGES: &str =
    r#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}"#;
const CHAT: &str = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#;

fn post(uri: &str, key: Option<&str>, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    let mut req = Request::post(uri).header("content-type", "application/json");
    if let Some(key) = key {
        req = req.header("x-api-key", key);
    }
    req.body(Full::new(body.into())).expect("request")
}

fn messages(body: &str) -> Request<Full<Bytes>> {
    post("/v1/messages", Some("sk-1"), body.to_owned())
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn x_cache(&self) -> &str {
        self.headers
            .get("x-cache")
            .map_or("", |v| v.to_str().expect("ascii"))
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

async fn send<S, B>(svc: &S, req: Request<Full<Bytes>>) -> Answer
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: Body,
    B::Error: std::fmt::Debug,
{
    let res = svc.clone().oneshot(req).await.expect("service");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

fn cache() -> ResponseCacheLayer<MemoryCache> {
    ResponseCacheLayer::new(MemoryCache::new(1_000))
}

#[tokio::test]
async fn miss_then_hit_calls_the_upstream_once() {
    let up = Upstream::ok();
    let svc = ServiceBuilder::new().layer(cache()).service(up.service());

    let first = send(&svc, messages(MESSAGES)).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.x_cache(), "MISS");
    assert!(first.headers.get("age").is_none());
    assert_eq!(first.headers["x-upstream-call"], "1");

    let second = send(&svc, messages(MESSAGES)).await;
    assert_eq!(second.x_cache(), "HIT");
    assert_eq!(second.status, 200);
    assert_eq!(second.body, first.body);
    assert_eq!(second.headers["age"], "0");
    // Replayed: content-type and the degradation record; not the rest of the exchange.
    assert_eq!(second.headers["content-type"], "application/json");
    assert_eq!(second.headers["x-llm-bridge-degraded"], "top_k");
    assert!(second.headers.get("x-upstream-call").is_none());
    assert_eq!(up.calls(), 1);
}

#[tokio::test]
async fn chat_completions_are_cached_too_and_query_strings_do_not_matter() {
    let up = Upstream::ok();
    let svc = ServiceBuilder::new().layer(cache()).service(up.service());
    let a = send(&svc, post("/v1/chat/completions", Some("k"), CHAT)).await;
    let b = send(
        &svc,
        post("/v1/chat/completions?beta=true", Some("k"), CHAT),
    )
    .await;
    assert_eq!((a.x_cache(), b.x_cache()), ("MISS", "HIT"));
    let c = send(&svc, post("/v1/messages?beta=true", Some("k"), MESSAGES)).await;
    let d = send(&svc, post("/v1/messages", Some("k"), MESSAGES)).await;
    assert_eq!((c.x_cache(), d.x_cache()), ("MISS", "HIT"));
    assert_eq!(up.calls(), 2);
}

#[tokio::test]
async fn namespaces_are_isolated() {
    let up = Upstream::ok();
    let svc = ServiceBuilder::new().layer(cache()).service(up.service());
    // The same bytes on both endpoints are two different requests.
    let a = send(&svc, post("/v1/messages", Some("k"), CHAT)).await;
    let b = send(&svc, post("/v1/chat/completions", Some("k"), CHAT)).await;
    assert_eq!((a.x_cache(), b.x_cache()), ("MISS", "MISS"));
    assert_eq!(up.calls(), 2);
}

#[tokio::test]
async fn callers_are_isolated_by_credential() {
    let up = Upstream::ok();
    let svc = ServiceBuilder::new().layer(cache()).service(up.service());
    let with = |key: &str| post("/v1/messages", Some(key), MESSAGES);

    assert_eq!(send(&svc, with("sk-alice")).await.x_cache(), "MISS");
    assert_eq!(send(&svc, with("sk-bob")).await.x_cache(), "MISS");
    assert_eq!(send(&svc, with("sk-alice")).await.x_cache(), "HIT");
    assert_eq!(send(&svc, with("sk-bob")).await.x_cache(), "HIT");

    // `authorization` is a credential too; no credential at all is its own tenant.
    let bearer = |token: &str| {
        Request::post("/v1/messages")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::from_static(MESSAGES.as_bytes())))
            .expect("request")
    };
    assert_eq!(send(&svc, bearer("t1")).await.x_cache(), "MISS");
    assert_eq!(send(&svc, bearer("t1")).await.x_cache(), "HIT");
    assert_eq!(send(&svc, bearer("t2")).await.x_cache(), "MISS");
    assert_eq!(
        send(&svc, post("/v1/messages", None, MESSAGES))
            .await
            .x_cache(),
        "MISS"
    );
    assert_eq!(
        send(&svc, post("/v1/messages", None, MESSAGES))
            .await
            .x_cache(),
        "HIT"
    );
    assert_eq!(up.calls(), 5);
}

#[tokio::test]
async fn caller_identity_extension_wins_over_headers() {
    let up = Upstream::ok();
    let svc = ServiceBuilder::new().layer(cache()).service(up.service());
    let as_tenant = |tenant: &str, key: &str| {
        let mut req = post("/v1/messages", Some(key), MESSAGES);
        req.extensions_mut()
            .insert(CallerIdentity::from_credential(tenant));
        req
    };
    assert_eq!(
        send(&svc, as_tenant("team-a", "sk-1")).await.x_cache(),
        "MISS"
    );
    // Same tenant through another upstream key: same identity, so a hit.
    assert_eq!(
        send(&svc, as_tenant("team-a", "sk-2")).await.x_cache(),
        "HIT"
    );
    assert_eq!(
        send(&svc, as_tenant("team-b", "sk-1")).await.x_cache(),
        "MISS"
    );
    assert_eq!(up.calls(), 2);
}

#[tokio::test]
async fn backend_name_scopes_a_shared_backend() {
    let backend = Arc::new(MemoryCache::new(100));
    let up = Upstream::ok();
    let openai = ServiceBuilder::new()
        .layer(ResponseCacheLayer::with_shared_backend(Arc::clone(&backend)).backend_name("openai"))
        .service(up.service());
    let vllm = ServiceBuilder::new()
        .layer(ResponseCacheLayer::with_shared_backend(backend).backend_name("vllm"))
        .service(up.service());
    assert_eq!(send(&openai, messages(MESSAGES)).await.x_cache(), "MISS");
    assert_eq!(send(&vllm, messages(MESSAGES)).await.x_cache(), "MISS");
    assert_eq!(send(&openai, messages(MESSAGES)).await.x_cache(), "HIT");
    assert_eq!(send(&vllm, messages(MESSAGES)).await.x_cache(), "HIT");
    assert_eq!(up.calls(), 2);
}

#[tokio::test]
async fn other_requests_pass_through_untouched() {
    let up = Upstream::ok();
    let svc = ServiceBuilder::new().layer(cache()).service(up.service());
    for req in [
        post("/v1/messages/count_tokens", Some("k"), MESSAGES),
        post("/v1/embeddings", Some("k"), "not json at all"),
        Request::get("/v1/models")
            .body(Full::new(Bytes::new()))
            .expect("request"),
        Request::put("/v1/messages")
            .body(Full::new(Bytes::from_static(b"x")))
            .expect("request"),
    ] {
        let uri = req.uri().clone();
        let sent = req.body().clone().collect().await.expect("body").to_bytes();
        let first = send(&svc, req).await;
        assert!(first.headers.get("x-cache").is_none(), "{uri}");
        let seen = up.last_seen();
        assert!(!seen.buffered, "{uri}: the original body goes through");
        assert!(seen.parsed.is_none(), "{uri}");
        assert_eq!(seen.bytes, sent, "{uri}");
    }
    // Never cached: the same passthrough request reaches the upstream again.
    send(&svc, post("/v1/messages/count_tokens", Some("k"), MESSAGES)).await;
    assert_eq!(up.calls(), 5);
}

#[tokio::test]
async fn the_inner_service_gets_the_parsed_body_and_a_consistent_request() {
    let up = Upstream::ok();
    let svc = ServiceBuilder::new().layer(cache()).service(up.service());
    let req = Request::post("/v1/messages")
        .header("x-api-key", "k")
        .header("transfer-encoding", "chunked")
        .header("anthropic-version", "2023-06-01")
        .body(Full::new(Bytes::from_static(MESSAGES.as_bytes())))
        .expect("request");
    send(&svc, req).await;
    let seen = up.last_seen();
    assert!(seen.buffered);
    let parsed = seen.parsed.expect("ParsedBody extension");
    // Unchanged bytes when there is nothing to strip: no re-serialization.
    assert_eq!(&seen.bytes[..], MESSAGES.as_bytes());
    assert_eq!(parsed.bytes(), &seen.bytes);
    assert_eq!(
        parsed.str_field("model").as_deref(),
        Some("claude-sonnet-4-5")
    );
    assert_eq!(seen.headers["content-length"], MESSAGES.len().to_string());
    assert!(seen.headers.get("transfer-encoding").is_none());
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
}

#[tokio::test]
async fn cache_ttl_secs_is_never_forwarded() {
    let up = Upstream::ok();
    let svc = ServiceBuilder::new().layer(cache()).service(up.service());
    for (uri, body) in [
        (
            "/v1/messages",
            r#"{"model":"m","cache_ttl_secs":60,"max_tokens":5,"messages":[{"role":"user","content":"x","cache_ttl_secs":1}]}"#,
        ),
        (
            "/v1/chat/completions",
            r#"{"cache_ttl_secs":null,"model":"m","messages":[]}"#,
        ),
        // Bypassed requests are cleaned too.
        (
            "/v1/messages",
            r#"{"model":"m","stream":true,"cache_ttl_secs":30,"messages":[]}"#,
        ),
        (
            "/v1/messages",
            r#"{"model":"m","cache_ttl_secs":0,"messages":[]}"#,
        ),
    ] {
        send(&svc, post(uri, Some("k"), body.to_owned())).await;
        let seen = up.last_seen();
        let forwarded: Value = serde_json::from_slice(&seen.bytes).expect("json");
        assert!(forwarded.get("cache_ttl_secs").is_none(), "{body}");
        assert!(!String::from_utf8_lossy(&seen.bytes).starts_with(r#"{"cache_ttl_secs""#));
        let parsed = seen.parsed.expect("extension");
        assert!(parsed.field("cache_ttl_secs").is_none());
        assert_eq!(parsed.bytes(), &seen.bytes);
        assert_eq!(seen.headers["content-length"], seen.bytes.len().to_string());
        // Everything else is still there, nested fields named the same included.
        let original: Value = serde_json::from_str(body).expect("json");
        assert_eq!(forwarded["model"], original["model"]);
        assert_eq!(forwarded["messages"], original["messages"]);
    }
}

#[tokio::test]
async fn per_request_ttl_expires() {
    let up = Upstream::ok();
    let svc = ServiceBuilder::new().layer(cache()).service(up.service());
    let body = r#"{"model":"m","cache_ttl_secs":1,"messages":[]}"#;
    assert_eq!(send(&svc, messages(body)).await.x_cache(), "MISS");
    assert_eq!(send(&svc, messages(body)).await.x_cache(), "HIT");
    // A 1 s entry must be gone within 5 s; poll rather than sleep a fixed time.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let answer = send(&svc, messages(body)).await;
        if answer.x_cache() == "MISS" {
            break;
        }
        assert!(Instant::now() < deadline, "entry outlived its 1 s TTL");
    }
    // Meanwhile the default TTL (300 s) applies to requests without the field.
    assert_eq!(send(&svc, messages(MESSAGES)).await.x_cache(), "MISS");
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert_eq!(send(&svc, messages(MESSAGES)).await.x_cache(), "HIT");
}

#[tokio::test]
async fn layer_default_ttl_expires() {
    let up = Upstream::ok();
    let svc = ServiceBuilder::new()
        .layer(cache().default_ttl_secs(1))
        .service(up.service());
    assert_eq!(send(&svc, messages(MESSAGES)).await.x_cache(), "MISS");
    assert_eq!(send(&svc, messages(MESSAGES)).await.x_cache(), "HIT");
    let deadline = Instant::now() + Duration::from_secs(5);
    while send(&svc, messages(MESSAGES)).await.x_cache() == "HIT" {
        assert!(
            Instant::now() < deadline,
            "entry outlived the 1 s default TTL"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn default_ttl_zero_stores_only_requests_that_ask() {
    let up = Upstream::ok();
    let svc = ServiceBuilder::new()
        .layer(cache().default_ttl_secs(0))
        .service(up.service());
    assert_eq!(send(&svc, messages(MESSAGES)).await.x_cache(), "MISS");
    assert_eq!(send(&svc, messages(MESSAGES)).await.x_cache(), "MISS");
    let asking = r#"{"model":"m","cache_ttl_secs":60,"messages":[]}"#;
    assert_eq!(send(&svc, messages(asking)).await.x_cache(), "MISS");
    assert_eq!(send(&svc, messages(asking)).await.x_cache(), "HIT");
}

#[tokio::test]
async fn error_statuses_are_never_stored() {
    for status in [400, 401, 404, 429, 500, 503, 529] {
        let up = Upstream::new(move |_| Ok(status_reply(status)));
        let svc = ServiceBuilder::new().layer(cache()).service(up.service());
        let a = send(&svc, messages(MESSAGES)).await;
        let b = send(&svc, messages(MESSAGES)).await;
        assert_eq!(a.status.as_u16(), status);
        assert_eq!((a.x_cache(), b.x_cache()), ("MISS", "MISS"), "{status}");
        assert_eq!(up.calls(), 2, "{status}");
    }
}

#[tokio::test]
async fn non_200_successes_other_than_partial_content_are_replayed() {
    let up = Upstream::new(|_| {
        Ok(Response::builder()
            .status(203)
            .body(full("{}"))
            .expect("response"))
    });
    let svc = ServiceBuilder::new().layer(cache()).service(up.service());
    send(&svc, messages(MESSAGES)).await;
    let hit = send(&svc, messages(MESSAGES)).await;
    assert_eq!((hit.status.as_u16(), hit.x_cache()), (203, "HIT"));

    let up = Upstream::new(|_| {
        Ok(Response::builder()
            .status(206)
            .body(full("{"))
            .expect("response"))
    });
    let svc = ServiceBuilder::new().layer(cache()).service(up.service());
    send(&svc, messages(MESSAGES)).await;
    assert_eq!(send(&svc, messages(MESSAGES)).await.x_cache(), "MISS");
}

#[tokio::test]
async fn empty_success_bodies_are_stored_without_being_polled() {
    let up = Upstream::new(|_| {
        Ok(Response::builder()
            .status(204)
            .body(full(""))
            .expect("response"))
    });
    let svc = ServiceBuilder::new().layer(cache()).service(up.service());
    // Drop the first body unread: it is complete by construction.
    let res = svc
        .clone()
        .oneshot(messages(MESSAGES))
        .await
        .expect("service");
    assert!(res.body().is_end_stream());
    drop(res);
    let hit = send(&svc, messages(MESSAGES)).await;
    assert_eq!((hit.status.as_u16(), hit.x_cache()), (204, "HIT"));
    assert_eq!(up.calls(), 1);
}

#[tokio::test]
async fn encoded_bodies_are_not_stored() {
    let up = Upstream::new(|_| {
        Ok(Response::builder()
            .header("content-encoding", "gzip")
            .body(full(&b"\x1f\x8b"[..]))
            .expect("response"))
    });
    let svc = ServiceBuilder::new().layer(cache()).service(up.service());
    send(&svc, messages(MESSAGES)).await;
    assert_eq!(send(&svc, messages(MESSAGES)).await.x_cache(), "MISS");
}

#[tokio::test]
async fn inner_errors_propagate_and_store_nothing() {
    let up = Upstream::new(|n| {
        if n == 1 {
            Err(io::Error::other("connection reset"))
        } else {
            Ok(json_reply(n))
        }
    });
    let svc = ServiceBuilder::new().layer(cache()).service(up.service());
    let err = svc
        .clone()
        .oneshot(messages(MESSAGES))
        .await
        .expect_err("the inner error is the service error");
    assert_eq!(err.to_string(), "connection reset");
    assert_eq!(send(&svc, messages(MESSAGES)).await.x_cache(), "MISS");
    assert_eq!(send(&svc, messages(MESSAGES)).await.x_cache(), "HIT");
    assert_eq!(up.calls(), 2);
}

#[tokio::test]
async fn a_body_failing_midway_is_not_stored() {
    let up = Upstream::new(|n| {
        let body = if n == 1 {
            frames_body(
                vec![
                    Ok(Frame::data(Bytes::from_static(br#"{"id":"#))),
                    Err(io::Error::other("upstream cut")),
                ],
                false,
            )
        } else {
            full(r#"{"id":"whole"}"#)
        };
        Ok(Response::new(body))
    });
    let svc = ServiceBuilder::new().layer(cache()).service(up.service());
    let res = svc
        .clone()
        .oneshot(messages(MESSAGES))
        .await
        .expect("service");
    assert_eq!(res.headers()["x-cache"], "MISS");
    let err = res
        .into_body()
        .collect()
        .await
        .expect_err("the cut reaches the client");
    assert_eq!(err.to_string(), "upstream cut");

    let second = send(&svc, messages(MESSAGES)).await;
    assert_eq!(second.x_cache(), "MISS");
    assert_eq!(second.body, r#"{"id":"whole"}"#);
    assert_eq!(
        send(&svc, messages(MESSAGES)).await.body,
        r#"{"id":"whole"}"#
    );
    assert_eq!(up.calls(), 2);
}

#[tokio::test]
async fn a_response_dropped_before_its_end_is_not_stored() {
    let up = Upstream::new(|n| {
        let body = if n == 1 {
            frames_body(vec![Ok(Frame::data(Bytes::from_static(b"{\"id\":")))], true)
        } else {
            full(r#"{"id":"whole"}"#)
        };
        Ok(Response::new(body))
    });
    let svc = ServiceBuilder::new().layer(cache()).service(up.service());
    let res = svc
        .clone()
        .oneshot(messages(MESSAGES))
        .await
        .expect("service");
    let mut body = res.into_body();
    let frame = body.frame().await.expect("a frame").expect("ok");
    assert_eq!(frame.into_data().expect("data"), "{\"id\":");
    // The client goes away mid-answer.
    drop(body);

    let second = send(&svc, messages(MESSAGES)).await;
    assert_eq!(
        (second.x_cache(), &second.body[..]),
        ("MISS", &br#"{"id":"whole"}"#[..])
    );
    assert_eq!(up.calls(), 2);
}

#[tokio::test]
async fn end_of_stream_right_after_the_last_frame_commits() {
    // A hyper server stops polling once `is_end_stream()` says so after the last data frame:
    // the entry must be stored then, without a final poll returning `None`.
    let up = Upstream::ok();
    let svc = ServiceBuilder::new().layer(cache()).service(up.service());
    let res = svc
        .clone()
        .oneshot(messages(MESSAGES))
        .await
        .expect("service");
    let mut body = res.into_body();
    assert!(body.frame().await.expect("frame").expect("ok").is_data());
    assert!(body.is_end_stream());
    drop(body);
    assert_eq!(send(&svc, messages(MESSAGES)).await.x_cache(), "HIT");
    assert_eq!(up.calls(), 1);
}

#[tokio::test]
async fn many_frames_are_stored_whole() {
    let up = Upstream::new(|_| {
        let frames = (0..50)
            .map(|i| Ok(Frame::data(Bytes::from(format!("{i:03},")))))
            .collect();
        Ok(Response::new(frames_body(frames, false)))
    });
    let svc = ServiceBuilder::new().layer(cache()).service(up.service());
    let first = send(&svc, messages(MESSAGES)).await;
    let hit = send(&svc, messages(MESSAGES)).await;
    assert_eq!(hit.x_cache(), "HIT");
    assert_eq!(hit.body, first.body);
    assert_eq!(hit.body.len(), 200);
}

#[tokio::test]
async fn bodies_over_the_entry_limit_pass_but_are_not_stored() {
    let big = "x".repeat(5_000);
    let known = big.clone();
    // Known length over the limit, and a streamed body that crosses it midway.
    let up = Upstream::new(move |n| {
        Ok(Response::new(if n % 2 == 1 {
            full(known.clone())
        } else {
            let frames = (0..10)
                .map(|_| Ok(Frame::data(Bytes::from(vec![b'y'; 500]))))
                .collect();
            frames_body(frames, false)
        }))
    });
    let svc = ServiceBuilder::new()
        .layer(cache().max_entry_bytes(1_000))
        .service(up.service());
    let a = send(&svc, messages(MESSAGES)).await;
    assert_eq!(a.body.len(), 5_000);
    let b = send(&svc, messages(MESSAGES)).await;
    assert_eq!((b.x_cache(), b.body.len()), ("MISS", 5_000));
    let c = send(&svc, messages(MESSAGES)).await;
    assert_eq!(c.x_cache(), "MISS");
    assert_eq!(up.calls(), 3);
}

#[tokio::test]
async fn no_store_and_no_cache() {
    let up = Upstream::ok();
    let svc = ServiceBuilder::new().layer(cache()).service(up.service());
    let with_cc = |value: &str| {
        let mut req = messages(MESSAGES);
        req.headers_mut()
            .insert("cache-control", value.parse().expect("header"));
        req
    };
    // no-store: bypassed and never stored.
    assert_eq!(send(&svc, with_cc("no-store")).await.x_cache(), "BYPASS");
    assert_eq!(send(&svc, with_cc("no-store")).await.x_cache(), "BYPASS");
    let first = send(&svc, messages(MESSAGES)).await;
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(first.json()["id"], "msg_3");
    assert_eq!(send(&svc, messages(MESSAGES)).await.json()["id"], "msg_3");

    // no-cache: goes upstream despite the entry, and its fresh answer replaces the entry.
    let fresh = send(&svc, with_cc("max-age=0, no-cache")).await;
    assert_eq!(fresh.x_cache(), "MISS");
    assert_eq!(fresh.json()["id"], "msg_4");
    let hit = send(&svc, messages(MESSAGES)).await;
    assert_eq!(
        (hit.x_cache(), hit.json()["id"].clone()),
        ("HIT", json!("msg_4"))
    );
    assert_eq!(up.calls(), 4);
}

#[tokio::test]
async fn zero_ttl_bypasses_and_streams_bypass_when_stream_caching_is_off() {
    let up = Upstream::ok();
    let svc = ServiceBuilder::new().layer(cache()).service(up.service());
    let zero = r#"{"model":"m","cache_ttl_secs":0,"messages":[]}"#;
    assert_eq!(send(&svc, messages(zero)).await.x_cache(), "BYPASS");
    assert_eq!(send(&svc, messages(zero)).await.x_cache(), "BYPASS");
    // A streaming request answered with something that is not a stream: passed on, not
    // stored (tests/cache_stream.rs covers real streams).
    let stream = r#"{"model":"m","stream":true,"messages":[]}"#;
    assert_eq!(send(&svc, messages(stream)).await.x_cache(), "MISS");
    assert_eq!(send(&svc, messages(stream)).await.x_cache(), "MISS");
    // `"stream": false` is an ordinary request.
    let body = r#"{"model":"m","stream":false,"messages":[]}"#;
    assert_eq!(send(&svc, messages(body)).await.x_cache(), "MISS");
    assert_eq!(send(&svc, messages(body)).await.x_cache(), "HIT");
    assert_eq!(up.calls(), 5);

    // With stream caching off, streaming requests bypass the cache as they used to.
    let off = ServiceBuilder::new()
        .layer(cache().cache_streams(false))
        .service(up.service());
    assert_eq!(send(&off, messages(stream)).await.x_cache(), "BYPASS");
    assert_eq!(send(&off, messages(stream)).await.x_cache(), "BYPASS");
    assert_eq!(up.calls(), 7);
}

#[tokio::test]
async fn invalid_input_is_a_400_in_the_endpoint_shape_and_the_upstream_is_not_called() {
    let up = Upstream::ok();
    let svc = ServiceBuilder::new().layer(cache()).service(up.service());
    let cases = [
        (r#"{"model":"m","cache_ttl_secs":-1}"#, "cache_ttl_secs"),
        (r#"{"model":"m","cache_ttl_secs":86401}"#, "cache_ttl_secs"),
        (r#"{"model":"m","cache_ttl_secs":-0.5}"#, "cache_ttl_secs"),
        (r#"{"model":"m","cache_ttl_secs":1e12}"#, "cache_ttl_secs"),
        (r#"{"model":"m","cache_ttl_secs":"60"}"#, "cache_ttl_secs"),
        (r#"{"model":"m","cache_ttl_secs":true}"#, "cache_ttl_secs"),
        (r#"{"model":"m","cache_ttl_secs":[1]}"#, "cache_ttl_secs"),
        (r#"{"model":"m","cache_ttl_secs":{}}"#, "cache_ttl_secs"),
        // Invalid on a streamed request too: validation comes before bypass.
        (
            r#"{"model":"m","stream":true,"cache_ttl_secs":-5}"#,
            "cache_ttl_secs",
        ),
        (r#"{"model":"m","#, "JSON"),
        (r#"[{"model":"m"}]"#, "object"),
        ("", "JSON"),
    ];
    for (body, mentions) in cases {
        let anth = send(&svc, post("/v1/messages", Some("k"), body.to_owned())).await;
        assert_eq!(anth.status, 400, "{body}");
        assert_eq!(anth.headers["content-type"], "application/json");
        let json = anth.json();
        assert_eq!(json["type"], "error", "{body}");
        assert_eq!(json["error"]["type"], "invalid_request_error");
        let message = json["error"]["message"].as_str().expect("message");
        assert!(message.contains(mentions), "{body}: {message}");

        let oai = send(
            &svc,
            post("/v1/chat/completions", Some("k"), body.to_owned()),
        )
        .await;
        assert_eq!(oai.status, 400, "{body}");
        let json = oai.json();
        assert!(
            json.get("type").is_none(),
            "OpenAI shape has no top-level type"
        );
        assert_eq!(json["error"]["type"], "invalid_request_error");
        assert!(
            json["error"]["message"]
                .as_str()
                .expect("message")
                .contains(mentions)
        );
    }
    assert_eq!(up.calls(), 0);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let up = Upstream::ok();
    let svc = ServiceBuilder::new()
        .layer(cache().body_limit(1_024))
        .service(up.service());
    let big = format!(r#"{{"model":"m","pad":"{}"}}"#, "x".repeat(2_000));
    let res = send(&svc, post("/v1/messages", Some("k"), big.clone())).await;
    assert_eq!(res.status, 413);
    assert_eq!(res.json()["error"]["type"], "request_too_large");
    // Streamed in small frames with no length: caught while reading.
    let frames: Vec<Result<Frame<Bytes>, Infallible>> = big
        .as_bytes()
        .chunks(100)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let streamed = ServiceBuilder::new()
        .layer(cache().body_limit(1_024))
        .service(service_fn(|_req: Request<Either<Full<Bytes>, _>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        }));
    let req = Request::post("/v1/chat/completions")
        .body(StreamBody::new(stream::iter(frames)))
        .expect("request");
    let res = streamed.oneshot(req).await.expect("service");
    assert_eq!(res.status(), 413);
    let body = res.into_body().collect().await.expect("body").to_bytes();
    let json: Value = serde_json::from_slice(&body).expect("json");
    assert!(
        json["error"]["message"]
            .as_str()
            .expect("message")
            .contains("1024")
    );
    assert_eq!(up.calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_identical_misses_make_one_upstream_call() {
    let up = Upstream::ok().with_delay(|_| Duration::from_millis(200));
    let svc = ServiceBuilder::new().layer(cache()).service(up.service());
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { send(&svc, messages(MESSAGES)).await })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        let answer = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("bounded")
            .expect("task");
        answers.push(answer);
    }
    assert_eq!(up.calls(), 1);
    assert!(
        answers
            .iter()
            .all(|a| a.status == 200 && a.json()["id"] == "msg_1")
    );
    let misses = answers.iter().filter(|a| a.x_cache() == "MISS").count();
    let hits = answers.iter().filter(|a| a.x_cache() == "HIT").count();
    assert_eq!((misses, hits), (1, 49));
    assert!(
        answers
            .iter()
            .all(|a| a.headers["content-type"] == "application/json")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_coalescing_concurrent_misses_all_go_upstream() {
    let up = Upstream::ok().with_delay(|_| Duration::from_millis(200));
    let svc = ServiceBuilder::new()
        .layer(cache().coalesce(false))
        .service(up.service());
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { send(&svc, messages(MESSAGES)).await })
        })
        .collect();
    for task in tasks {
        let answer = task.await.expect("task");
        assert_eq!(answer.x_cache(), "MISS");
    }
    assert_eq!(up.calls(), 10);
    // And what they stored is served afterwards.
    assert_eq!(send(&svc, messages(MESSAGES)).await.x_cache(), "HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_fails_followers_fetch_for_themselves() {
    let up = Upstream::new(|n| {
        Ok(if n == 1 {
            status_reply(500)
        } else {
            json_reply(n)
        })
    })
    .with_delay(|n| Duration::from_millis(if n == 1 { 300 } else { 50 }));
    let svc = ServiceBuilder::new().layer(cache()).service(up.service());
    let leader = {
        let svc = svc.clone();
        tokio::spawn(async move { send(&svc, messages(MESSAGES)).await })
    };
    // Let the leader register before the others arrive.
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.calls() == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let followers: Vec<_> = (0..10)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { send(&svc, messages(MESSAGES)).await })
        })
        .collect();
    assert_eq!(leader.await.expect("task").status, 500);
    for follower in followers {
        let answer = tokio::time::timeout(Duration::from_secs(10), follower)
            .await
            .expect("released, not stuck")
            .expect("task");
        assert_eq!(answer.status, 200);
        assert_eq!(answer.x_cache(), "MISS");
    }
    assert_eq!(up.calls(), 11);
    assert_eq!(send(&svc, messages(MESSAGES)).await.x_cache(), "HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_stop_waiting_after_the_bound() {
    let up = Upstream::ok().with_delay(|n| Duration::from_secs(if n == 1 { 30 } else { 0 }));
    let svc = ServiceBuilder::new()
        .layer(cache().coalesce_wait(Duration::from_millis(100)))
        .service(up.service());
    let slow_leader = {
        let svc = svc.clone();
        tokio::spawn(async move { send(&svc, messages(MESSAGES)).await })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.calls() == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let follower = tokio::time::timeout(Duration::from_secs(5), send(&svc, messages(MESSAGES)))
        .await
        .expect("the wait is bounded");
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(follower.x_cache(), "MISS");
    assert_eq!(follower.json()["id"], "msg_2");
    assert_eq!(up.calls(), 2);
    slow_leader.abort();
}

#[tokio::test]
async fn a_cancelled_leader_releases_its_followers() {
    let up = Upstream::ok().with_delay(|n| Duration::from_secs(if n == 1 { 30 } else { 0 }));
    let svc = ServiceBuilder::new().layer(cache()).service(up.service());
    let leader = {
        let svc = svc.clone();
        tokio::spawn(async move { send(&svc, messages(MESSAGES)).await })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.calls() == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let follower = {
        let svc = svc.clone();
        tokio::spawn(async move { send(&svc, messages(MESSAGES)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    leader.abort();
    let answer = tokio::time::timeout(Duration::from_secs(5), follower)
        .await
        .expect("released by the cancellation, well before the 60 s wait")
        .expect("task");
    assert_eq!(answer.json()["id"], "msg_2");
}

#[tokio::test]
async fn memory_is_bounded_in_bytes_through_the_layer() {
    let backend = Arc::new(
        MemoryCache::builder()
            .max_entries(1_000)
            .max_bytes(20_000)
            .build(),
    );
    let up = Upstream::new(|n| Ok(Response::new(full(format!("{n:>5000}")))));
    let svc = ServiceBuilder::new()
        .layer(ResponseCacheLayer::with_shared_backend(Arc::clone(
            &backend,
        )))
        .service(up.service());
    for i in 0..12 {
        let body = format!(r#"{{"model":"m","messages":[],"n":{i}}}"#);
        assert_eq!(send(&svc, messages(&body)).await.x_cache(), "MISS");
        backend.run_pending_tasks().await;
    }
    backend.run_pending_tasks().await;
    assert!(
        backend.weighted_size() <= 20_000,
        "{}",
        backend.weighted_size()
    );
    assert!(backend.entry_count() < 12);
    assert!(backend.entry_count() >= 1);
    let mut hits = 0;
    for i in 0..12 {
        let body = format!(r#"{{"model":"m","messages":[],"n":{i}}}"#);
        if send(&svc, messages(&body)).await.x_cache() == "HIT" {
            hits += 1;
        }
        // Re-fetches may replace entries: keep the bound checked all along.
        backend.run_pending_tasks().await;
        assert!(backend.weighted_size() <= 20_000);
    }
    assert!(hits < 12);
}

/// A backend that is always down: it must never break a request.
struct Down {
    gets: AtomicUsize,
    puts: AtomicUsize,
}

impl CacheBackend for Down {
    async fn get(&self, _key: &str) -> Option<CacheEntry> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        None
    }

    async fn put(&self, _key: &str, _entry: CacheEntry, _ttl_secs: u64) {
        self.puts.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn a_failing_backend_fails_open() {
    let backend = Arc::new(Down {
        gets: AtomicUsize::new(0),
        puts: AtomicUsize::new(0),
    });
    let up = Upstream::ok();
    let svc = ServiceBuilder::new()
        .layer(ResponseCacheLayer::with_shared_backend(Arc::clone(
            &backend,
        )))
        .service(up.service());
    for n in 1..=3 {
        let answer = send(&svc, messages(MESSAGES)).await;
        assert_eq!((answer.status.as_u16(), answer.x_cache()), (200, "MISS"));
        assert_eq!(answer.json()["id"], format!("msg_{n}"));
    }
    assert_eq!(up.calls(), 3);
    assert_eq!(backend.gets.load(Ordering::SeqCst), 3);
    assert_eq!(backend.puts.load(Ordering::SeqCst), 3);
}

/// A backend whose writes take a while: storing must not hold up the response body.
struct SlowWrites {
    inner: MemoryCache,
    delay: Duration,
}

impl CacheBackend for SlowWrites {
    async fn get(&self, key: &str) -> Option<CacheEntry> {
        self.inner.get(key).await
    }

    async fn put(&self, key: &str, entry: CacheEntry, ttl_secs: u64) {
        tokio::time::sleep(self.delay).await;
        self.inner.put(key, entry, ttl_secs).await;
    }
}

#[tokio::test]
async fn slow_writes_finish_in_the_background_and_coalescing_covers_the_gap() {
    let backend = Arc::new(SlowWrites {
        inner: MemoryCache::new(10),
        delay: Duration::from_millis(1_000),
    });
    let up = Upstream::ok();
    let svc = ServiceBuilder::new()
        .layer(ResponseCacheLayer::with_shared_backend(Arc::clone(
            &backend,
        )))
        .service(up.service());
    let started = Instant::now();
    assert_eq!(send(&svc, messages(MESSAGES)).await.x_cache(), "MISS");
    assert!(
        started.elapsed() < Duration::from_millis(1_000),
        "the body waited for the write"
    );
    // The write is still running: the request is served from the finished flight.
    assert_eq!(send(&svc, messages(MESSAGES)).await.x_cache(), "HIT");
    // Once the write lands, the backend itself has the entry.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        backend.inner.run_pending_tasks().await;
        if backend.inner.entry_count() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the background write never landed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(send(&svc, messages(MESSAGES)).await.x_cache(), "HIT");
    assert_eq!(up.calls(), 1);
}

// ---- keys ----------------------------------------------------------------------------------

fn key(body: &Value) -> String {
    cache_key_for_request(
        body,
        CacheNamespace::Anthropic,
        &CacheScope {
            backend_name: "b",
            auth_identity: "i",
        },
    )
}

#[test]
fn keys_ignore_key_order_at_every_level() {
    // Parsed from text so the maps hold the order as written (this suite runs with
    // serde_json's preserve_order on).
    let a: Value = serde_json::from_str(
        r#"{"model":"m","max_tokens":5,
            "thinking":{"type":"enabled","budget_tokens":1024},
            "messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"f",
                "input":{"path":"a","opts":{"deep":true,"depth":2}}}]}],
            "tools":[{"name":"f","input_schema":{"type":"object","properties":{"path":{"type":"string"},"opts":{"type":"object"}},"required":["path"]}}]}"#,
    )
    .expect("json");
    let b: Value = serde_json::from_str(
        r#"{"tools":[{"input_schema":{"required":["path"],"properties":{"opts":{"type":"object"},"path":{"type":"string"}},"type":"object"},"name":"f"}],
            "messages":[{"content":[{"input":{"opts":{"depth":2,"deep":true},"path":"a"},"name":"f","id":"t1","type":"tool_use"}],"role":"assistant"}],
            "thinking":{"budget_tokens":1024,"type":"enabled"},
            "max_tokens":5,"model":"m"}"#,
    )
    .expect("json");
    assert_eq!(key(&a), key(&b));
    // Array order is meaningful.
    let mut c = b.clone();
    c["tools"][0]["input_schema"]["required"] = json!(["path", "opts"]);
    assert_ne!(key(&a), key(&c));
}

#[test]
fn every_response_affecting_field_changes_the_key() {
    let base = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [{"role": "user", "content": "hi"}]
    });
    let variants = [
        ("model", json!("claude-opus-4-1")),
        ("max_tokens", json!(1025)),
        ("messages", json!([{"role": "user", "content": "hi!"}])),
        ("system", json!("be brief")),
        ("temperature", json!(0.2)),
        ("top_p", json!(0.9)),
        ("top_k", json!(40)),
        ("stop_sequences", json!(["END"])),
        ("stop", json!(["END"])),
        (
            "thinking",
            json!({"type": "enabled", "budget_tokens": 2048}),
        ),
        (
            "tools",
            json!([{"name": "f", "input_schema": {"type": "object"}}]),
        ),
        ("tool_choice", json!({"type": "any"})),
        ("response_format", json!({"type": "json_object"})),
        ("seed", json!(7)),
        ("max_completion_tokens", json!(512)),
        ("n", json!(2)),
        ("presence_penalty", json!(0.5)),
        ("frequency_penalty", json!(0.5)),
        ("logit_bias", json!({"50256": -100})),
        ("reasoning_effort", json!("high")),
        ("output_config", json!({"effort": "low"})),
        ("parallel_tool_calls", json!(false)),
        ("some_future_field", json!(true)),
    ];
    let base_key = key(&base);
    let mut seen = std::collections::HashSet::new();
    for (field, value) in variants {
        let mut changed = base.clone();
        changed[field] = value;
        let k = key(&changed);
        assert_ne!(k, base_key, "{field} must be part of the key");
        assert!(seen.insert(k), "{field} collides with another variant");
    }
    // A nested change inside a tool schema counts too.
    let mut a = base.clone();
    a["tools"] = json!([{"name": "f", "input_schema": {"type": "object", "properties": {"x": {"type": "string"}}}}]);
    let mut b = a.clone();
    b["tools"][0]["input_schema"]["properties"]["x"]["type"] = json!("integer");
    assert_ne!(key(&a), key(&b));
}

#[test]
fn only_stream_options_metadata_and_user_are_left_out() {
    let base = json!({"model": "m", "messages": []});
    for (field, value) in [
        ("stream", json!(true)),
        ("stream_options", json!({"include_usage": true})),
        ("metadata", json!({"user_id": "u-123"})),
        ("user", json!("u-123")),
        ("temperature", Value::Null),
    ] {
        let mut with = base.clone();
        with[field] = value;
        assert_eq!(key(&with), key(&base), "{field}");
    }
}

#[tokio::test]
async fn reordered_requests_share_an_entry_through_the_layer() {
    let up = Upstream::ok();
    let svc = ServiceBuilder::new().layer(cache()).service(up.service());
    let a = r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],"metadata":{"user_id":"a"}}"#;
    let b = r#"{"messages":[{"content":[{"text":"hi","type":"text"}],"role":"user"}],"metadata":{"user_id":"b"},"max_tokens":5,"model":"m"}"#;
    assert_eq!(send(&svc, messages(a)).await.x_cache(), "MISS");
    assert_eq!(send(&svc, messages(b)).await.x_cache(), "HIT");
    let c = r#"{"messages":[{"content":[{"text":"hi","type":"text"}],"role":"user"}],"max_tokens":5,"model":"m","top_k":3}"#;
    assert_eq!(send(&svc, messages(c)).await.x_cache(), "MISS");
}

// ---- properties ------------------------------------------------------------------------------

mod properties {
    use super::key;
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e6f64..1e6).prop_map(Value::from),
            "[a-c]{0,3}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(("[a-f]{0,3}", inner), 0..14)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    /// The same value with every object's keys inserted in reverse order (which changes the
    /// iteration order when serde_json's preserve_order is on, as in this test suite).
    fn reversed(v: &Value) -> Value {
        match v {
            Value::Array(items) => Value::Array(items.iter().map(reversed).collect()),
            Value::Object(map) => {
                let mut out = Map::new();
                for (k, v) in map.iter().rev() {
                    out.insert(k.clone(), reversed(v));
                }
                Value::Object(out)
            }
            other => other.clone(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn key_order_never_matters(v in json()) {
            let a = serde_json::json!({"model": "m", "x": v});
            let b = reversed(&a);
            prop_assert_eq!(key(&a), key(&b));
        }

        #[test]
        fn different_values_get_different_keys(v in json(), w in json()) {
            prop_assume!(v != w);
            let a = serde_json::json!({"x": v});
            let b = serde_json::json!({"x": w});
            prop_assert_ne!(key(&a), key(&b));
        }
    }
}

// ---- over a real socket ----------------------------------------------------------------------

#[tokio::test]
async fn a_hyper_server_stores_what_it_sends() {
    use hyper::body::Incoming;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;

    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let svc = ServiceBuilder::new().layer(cache()).service(service_fn(
        move |req: Request<Either<Full<Bytes>, Incoming>>| {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                let chunked = req.uri().path() == "/v1/chat/completions";
                let body = if chunked {
                    // No length: hyper sends it chunked and polls until the end.
                    let frames = ["{\"id\":", &format!("\"chat_{n}\"}}")]
                        .map(|s| Ok(Frame::data(Bytes::from(s.to_owned()))));
                    frames_body(frames.into(), false)
                } else {
                    full(format!(r#"{{"id":"msg_{n}"}}"#))
                };
                Ok::<_, io::Error>(Response::new(body))
            }
        },
    ));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            stream.set_nodelay(true).expect("nodelay");
            let svc = TowerToHyperService::new(svc.clone());
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });

    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let call = |path: &str, body: &'static str| {
        let req = Request::post(format!("http://{addr}{path}"))
            .header("x-api-key", "k")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("request");
        let client = client.clone();
        async move {
            let res = tokio::time::timeout(Duration::from_secs(10), client.request(req))
                .await
                .expect("bounded")
                .expect("response");
            let x_cache = res.headers()["x-cache"].to_str().expect("ascii").to_owned();
            let body = res.into_body().collect().await.expect("body").to_bytes();
            (x_cache, body)
        }
    };
    assert_eq!(
        call("/v1/messages", MESSAGES).await,
        ("MISS".into(), Bytes::from_static(br#"{"id":"msg_1"}"#))
    );
    assert_eq!(
        call("/v1/messages", MESSAGES).await,
        ("HIT".into(), Bytes::from_static(br#"{"id":"msg_1"}"#))
    );
    assert_eq!(
        call("/v1/chat/completions", CHAT).await,
        ("MISS".into(), Bytes::from_static(br#"{"id":"chat_2"}"#))
    );
    assert_eq!(
        call("/v1/chat/completions", CHAT).await,
        ("HIT".into(), Bytes::from_static(br#"{"id":"chat_2"}"#))
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    server.abort();
}

#[tokio::test]
async fn a_stuck_write_does_not_pin_the_flight() {
    let backend = Arc::new(SlowWrites {
        inner: MemoryCache::new(10),
        delay: Duration::from_secs(3),
    });
    let up = Upstream::ok();
    let svc = ServiceBuilder::new()
        .layer(
            ResponseCacheLayer::with_shared_backend(Arc::clone(&backend))
                .coalesce_wait(Duration::from_millis(200)),
        )
        .service(up.service());
    assert_eq!(send(&svc, messages(MESSAGES)).await.x_cache(), "MISS");
    assert_eq!(send(&svc, messages(MESSAGES)).await.x_cache(), "HIT");
    // Past the hold the slot is gone while the write still hangs: a new flight goes upstream.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = send(&svc, messages(MESSAGES)).await;
    assert_eq!(
        (again.x_cache(), again.json()["id"].clone()),
        ("MISS", json!("msg_2"))
    );
    assert_eq!(up.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_to_store_means_nothing_to_wait_for() {
    // With a zero default TTL, identical requests cannot share an answer: they must not queue
    // behind each other either.
    let active = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (a, p) = (Arc::clone(&active), Arc::clone(&peak));
    let svc = ServiceBuilder::new()
        .layer(cache().default_ttl_secs(0))
        .service(service_fn(move |_req: In| {
            let (active, peak) = (Arc::clone(&a), Arc::clone(&p));
            async move {
                let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                active.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, io::Error>(json_reply(0))
            }
        }));
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move { send(&svc, messages(MESSAGES)).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task").x_cache(), "MISS");
    }
    assert_eq!(peak.load(Ordering::SeqCst), 5);
}

#[test]
fn works_without_a_tokio_runtime() {
    use std::future::Future;
    use std::task::{Context, Poll, Wake, Waker};

    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    /// A minimal executor: no Tokio runtime, no timer.
    fn block_on<F: Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
                return out;
            }
            assert!(Instant::now() < deadline, "stuck");
            std::thread::park_timeout(Duration::from_millis(10));
        }
    }

    let up = Upstream::ok();
    let svc = ServiceBuilder::new().layer(cache()).service(up.service());
    let first = block_on(send(&svc, messages(MESSAGES)));
    let second = block_on(send(&svc, messages(MESSAGES)));
    assert_eq!((first.x_cache(), second.x_cache()), ("MISS", "HIT"));
    assert_eq!(up.calls(), 1);
}

// ---- hits skip the flight; a miss racing the end of a flight still coalesces ------------------

/// Memory behind a gate: the armed lookup misses, then waits until released before it
/// answers (a lookup that started before a flight stored its answer, and returns after).
struct GatedLookups {
    inner: MemoryCache,
    armed: std::sync::atomic::AtomicBool,
    parked: tokio::sync::Notify,
    release: tokio::sync::Notify,
    gets: AtomicUsize,
}

impl CacheBackend for GatedLookups {
    async fn get(&self, key: &str) -> Option<CacheEntry> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        let found = self.inner.get(key).await;
        if found.is_none() && self.armed.swap(false, Ordering::SeqCst) {
            self.parked.notify_one();
            self.release.notified().await;
        }
        found
    }

    async fn put(&self, key: &str, entry: CacheEntry, ttl_secs: u64) {
        self.inner.put(key, entry, ttl_secs).await;
    }
}

#[tokio::test]
async fn a_miss_that_overlaps_the_end_of_a_flight_is_served_by_it() {
    let backend = Arc::new(GatedLookups {
        inner: MemoryCache::new(10),
        armed: false.into(),
        parked: tokio::sync::Notify::new(),
        release: tokio::sync::Notify::new(),
        gets: AtomicUsize::new(0),
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let answer_now = Arc::new(tokio::sync::Notify::new());
    let svc = {
        let (calls, answer_now) = (Arc::clone(&calls), Arc::clone(&answer_now));
        ServiceBuilder::new()
            .layer(ResponseCacheLayer::with_shared_backend(Arc::clone(
                &backend,
            )))
            .service(service_fn(move |_req: In| {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                let answer_now = Arc::clone(&answer_now);
                async move {
                    answer_now.notified().await;
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(format!(
                        r#"{{"id":"msg_{n}"}}"#
                    )))))
                }
            }))
    };
    let bounded = Duration::from_secs(10);
    // A leads a flight and waits for the upstream.
    let a = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, messages(MESSAGES)).await }
    });
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // B looks the entry up (a miss) while A is still in flight; its lookup returns late.
    backend.armed.store(true, Ordering::SeqCst);
    let b = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, messages(MESSAGES)).await }
    });
    tokio::time::timeout(bounded, backend.parked.notified())
        .await
        .expect("B's lookup parked");
    // A's answer is stored and its flight ends; then B's stale miss comes back.
    answer_now.notify_one();
    let a = tokio::time::timeout(bounded, a)
        .await
        .expect("A ends")
        .expect("A");
    assert_eq!(
        (a.x_cache(), &a.body[..]),
        ("MISS", &br#"{"id":"msg_1"}"#[..])
    );
    backend.release.notify_one();
    let b = tokio::time::timeout(bounded, b)
        .await
        .expect("B ends")
        .expect("B");
    // B found no flight to join, but one had ended since its lookup: it looked again.
    assert_eq!(
        (b.x_cache(), &b.body[..]),
        ("HIT", &br#"{"id":"msg_1"}"#[..])
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // A plain hit is one lookup; it joins no flight (so it never waits on one).
    let before = backend.gets.load(Ordering::SeqCst);
    assert_eq!(send(&svc, messages(MESSAGES)).await.x_cache(), "HIT");
    assert_eq!(backend.gets.load(Ordering::SeqCst), before + 1);
}

#[tokio::test]
async fn a_number_serde_json_refuses_is_a_400_from_the_key_and_never_goes_upstream() {
    let up = Upstream::ok();
    let svc = ServiceBuilder::new().layer(cache()).service(up.service());
    let body = r#"{"model":"m","max_tokens":5,"messages":[],"temperature":1e309}"#;
    let answer = send(&svc, messages(body)).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let json: Value = serde_json::from_slice(&answer.body).expect("json error");
    assert_eq!(json["error"]["type"], "invalid_request_error");
    let message = json["error"]["message"].as_str().expect("message");
    assert!(
        message.starts_with("request body is not valid JSON: number out of range"),
        "{message}"
    );
    assert_eq!(up.calls(), 0);
}

//! Streamed answers in ResponseCacheLayer: recorded, replayed in both modes, and shared live
//! by concurrent identical requests, against a `service_fn` upstream that streams slowly.
#![cfg(feature = "cache")]

use std::convert::Infallible;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Either, Full, StreamBody};
use serde_json::{Value, json};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_llm_bridge::cache::{
    AnthropicMessages, CacheBackend, CacheEntry, CacheNamespace, CacheScope, CallerIdentity,
    MemoryCache, OpenAiChat, ResponseCacheLayer, StreamCodec, cache_key_for_request,
};

type In = Request<Either<Full<Bytes>, Full<Bytes>>>;
type MockBody = UnsyncBoxBody<Bytes, io::Error>;

// ---------------------------------------------------------------------------------------------
// The answers: one Anthropic message and one OpenAI completion, as JSON and as a stream
// ---------------------------------------------------------------------------------------------

const THINKING: &str = "The user greets me.\nI should answer briefly.";
const SIGNATURE: &str = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pk";
const TEXT: &str = "Hello! Here is a longer answer, streamed in many small pieces: ünïcødé, \"quotes\", new\nlines.";
const TOOL_INPUT: &str = r#"{"city":"Paris","days":[1,2,3],"units":{"temp":"C"}}"#;

fn anthropic_message() -> Value {
    json!({
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [
            {"type": "thinking", "thinking": THINKING, "signature": SIGNATURE},
            {"type": "text", "text": TEXT},
            {"type": "tool_use", "id": "toolu_01", "name": "weather", "input": serde_json::from_str::<Value>(TOOL_INPUT).unwrap()}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 25, "output_tokens": 61, "cache_read_input_tokens": 3}
    })
}

fn sse(event: &str, data: Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// About 50 events, the way Anthropic streams them: text and tool input in small pieces.
fn anthropic_events() -> Vec<Bytes> {
    let mut out = vec![sse(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_01", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5", "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 3}}}),
    )];
    out.push(sse("ping", json!({"type": "ping"})));
    let block = |i: usize, b: Value| {
        sse(
            "content_block_start",
            json!({"type": "content_block_start", "index": i, "content_block": b}),
        )
    };
    let delta = |i: usize, d: Value| {
        sse(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": i, "delta": d}),
        )
    };
    let stop = |i: usize| {
        sse(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": i}),
        )
    };
    out.push(block(
        0,
        json!({"type": "thinking", "thinking": "", "signature": ""}),
    ));
    for piece in chunks(THINKING, 8) {
        out.push(delta(
            0,
            json!({"type": "thinking_delta", "thinking": piece}),
        ));
    }
    out.push(delta(
        0,
        json!({"type": "signature_delta", "signature": SIGNATURE}),
    ));
    out.push(stop(0));
    out.push(block(1, json!({"type": "text", "text": ""})));
    for piece in chunks(TEXT, 4) {
        out.push(delta(1, json!({"type": "text_delta", "text": piece})));
    }
    out.push(stop(1));
    out.push(block(
        2,
        json!({"type": "tool_use", "id": "toolu_01", "name": "weather", "input": {}}),
    ));
    for piece in chunks(TOOL_INPUT, 7) {
        out.push(delta(
            2,
            json!({"type": "input_json_delta", "partial_json": piece}),
        ));
    }
    out.push(stop(2));
    out.push(sse(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
               "usage": {"output_tokens": 61}}),
    ));
    out.push(sse("message_stop", json!({"type": "message_stop"})));
    out
}

/// `text` in pieces of about `n` characters (never splitting a character).
fn chunks(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars.chunks(n).map(|c| c.iter().collect()).collect()
}

fn openai_completion() -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000, "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": TEXT,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": TOOL_INPUT}}]},
            "logprobs": null, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 30, "total_tokens": 50}
    })
}

fn openai_events() -> Vec<Bytes> {
    let chunk = |choices: Value, usage: Option<Value>| {
        let mut c = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
                           "model": "gpt-4o", "choices": choices});
        if let Some(u) = usage {
            c["usage"] = u;
        }
        Bytes::from(format!("data: {c}\n\n"))
    };
    let mut out = vec![chunk(
        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
        None,
    )];
    for piece in chunks(TEXT, 6) {
        out.push(chunk(
            json!([{"index": 0, "delta": {"content": piece}, "finish_reason": null}]),
            None,
        ));
    }
    out.push(chunk(json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
        "function": {"name": "weather", "arguments": ""}}]}, "finish_reason": null}]), None));
    for piece in chunks(TOOL_INPUT, 10) {
        out.push(chunk(json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]},
            "finish_reason": null}]), None));
    }
    out.push(chunk(
        json!([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
        None,
    ));
    out.push(chunk(
        json!([]),
        Some(json!({"prompt_tokens": 20, "completion_tokens": 30, "total_tokens": 50})),
    ));
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}

// ---------------------------------------------------------------------------------------------
// The mock upstream
// ---------------------------------------------------------------------------------------------

/// How the upstream's stream ends.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Ending {
    Clean,
    /// The body fails (a transport error) after this many events.
    CutAfter(usize),
    /// Only the first this many events, then a clean end of body.
    TruncatedAfter(usize),
    /// An `event: error` (or an OpenAI error chunk) after this many events.
    ErrorEventAfter(usize),
}

#[derive(Clone)]
struct Upstream {
    calls: Arc<AtomicUsize>,
    /// Set when a streamed body is dropped before its end (the upstream request cancelled).
    cancelled: Arc<AtomicBool>,
    /// Events the upstream produced, over all calls.
    produced: Arc<AtomicUsize>,
    pace: Duration,
    ending: Arc<Mutex<Ending>>,
    /// Stream events larger than usual (to cross a small entry size limit).
    padding: usize,
}

impl Upstream {
    fn new(pace: Duration) -> Self {
        Self {
            calls: Arc::default(),
            cancelled: Arc::default(),
            produced: Arc::default(),
            pace,
            ending: Arc::new(Mutex::new(Ending::Clean)),
            padding: 0,
        }
    }

    fn ending(self, ending: Ending) -> Self {
        *self.ending.lock().unwrap() = ending;
        self
    }

    fn set_ending(&self, ending: Ending) {
        *self.ending.lock().unwrap() = ending;
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
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
                this.calls.fetch_add(1, Ordering::SeqCst);
                let openai = req.uri().path() == "/v1/chat/completions";
                let body = req.into_body().collect().await.expect("body").to_bytes();
                let request: Value = serde_json::from_slice(&body).expect("json request");
                if request["stream"] != true {
                    let answer = if openai {
                        openai_completion()
                    } else {
                        anthropic_message()
                    };
                    return Ok(Response::builder()
                        .header("content-type", "application/json")
                        .body(full(answer.to_string()))
                        .expect("response"));
                }
                let mut events = if openai {
                    openai_events()
                } else {
                    anthropic_events()
                };
                if this.padding > 0 {
                    // Comments are ignored by every SSE reader: bigger events, same answer.
                    let pad = format!(": {}\n", "p".repeat(this.padding));
                    events = events
                        .into_iter()
                        .map(|e| Bytes::from([pad.as_bytes(), &e].concat()))
                        .collect();
                }
                let ending = *this.ending.lock().unwrap();
                let error_event = if openai {
                    Bytes::from_static(b"data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n")
                } else {
                    sse(
                        "error",
                        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
                    )
                };
                let mut items: Vec<io::Result<Bytes>> = Vec::new();
                match ending {
                    Ending::Clean => items.extend(events.into_iter().map(Ok)),
                    Ending::CutAfter(n) => {
                        items.extend(events.into_iter().take(n).map(Ok));
                        items.push(Err(io::Error::other("upstream connection reset")));
                    }
                    Ending::TruncatedAfter(n) => items.extend(events.into_iter().take(n).map(Ok)),
                    Ending::ErrorEventAfter(n) => {
                        items.extend(events.into_iter().take(n).map(Ok));
                        items.push(Ok(error_event));
                    }
                }
                let guard = CancelFlag {
                    flag: Arc::clone(&this.cancelled),
                    armed: true,
                };
                let produced = Arc::clone(&this.produced);
                let pace = this.pace;
                let stream = futures_util::stream::unfold(
                    (items.into_iter(), guard),
                    move |(mut items, mut guard)| {
                        let produced = Arc::clone(&produced);
                        async move {
                            if !pace.is_zero() {
                                tokio::time::sleep(pace).await;
                            }
                            match items.next() {
                                Some(item) => {
                                    produced.fetch_add(1, Ordering::SeqCst);
                                    Some((item.map(Frame::data), (items, guard)))
                                }
                                None => {
                                    guard.armed = false;
                                    drop(guard);
                                    None
                                }
                            }
                        }
                    },
                );
                Ok(Response::builder()
                    .header("content-type", "text/event-stream")
                    .header("x-llm-bridge-degraded", "top_k")
                    .header("request-id", "req_upstream")
                    .body(StreamBody::new(stream).boxed_unsync())
                    .expect("response"))
            }
        })
    }
}

/// Records that the upstream body was dropped before its end.
struct CancelFlag {
    flag: Arc<AtomicBool>,
    armed: bool,
}

impl Drop for CancelFlag {
    fn drop(&mut self) {
        if self.armed {
            self.flag.store(true, Ordering::SeqCst);
        }
    }
}

fn full(bytes: impl Into<Bytes>) -> MockBody {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

// ---------------------------------------------------------------------------------------------
// Requests and answers
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Api {
    Anthropic,
    OpenAi,
}

fn request(api: Api, stream: bool, nonce: &str) -> Request<Full<Bytes>> {
    let (path, mut body) = match api {
        Api::Anthropic => (
            "/v1/messages",
            json!({"model": "claude-sonnet-4-5", "max_tokens": 256,
                   "messages": [{"role": "user", "content": format!("weather? {nonce}")}]}),
        ),
        Api::OpenAi => (
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": format!("weather? {nonce}")}]}),
        ),
    };
    if stream {
        body["stream"] = json!(true);
        if api == Api::OpenAi {
            body["stream_options"] = json!({"include_usage": true});
        }
    }
    Request::post(path)
        .header("x-api-key", "sk-test")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request")
}

struct Answer {
    x_cache: String,
    content_type: String,
    age: Option<String>,
    body: Bytes,
}

async fn send<S, B>(svc: &S, req: Request<Full<Bytes>>) -> Answer
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: Body,
    B::Error: std::fmt::Debug,
{
    let res = svc.clone().oneshot(req).await.expect("service");
    let header = |name: &str| {
        res.headers()
            .get(name)
            .map(|v| v.to_str().expect("ascii").to_owned())
    };
    let (x_cache, content_type, age) = (
        header("x-cache").unwrap_or_default(),
        header("content-type").unwrap_or_default(),
        header("age"),
    );
    let body = tokio::time::timeout(Duration::from_secs(20), res.into_body().collect())
        .await
        .expect("body within 20 s")
        .expect("body")
        .to_bytes();
    Answer {
        x_cache,
        content_type,
        age,
        body,
    }
}

/// The JSON answer a client ends up with: the body itself, or the accumulated stream.
fn final_answer(api: Api, answer: &Answer) -> Value {
    let json = if answer.content_type.starts_with("text/event-stream") {
        let codec: &dyn StreamCodec = match api {
            Api::Anthropic => &AnthropicMessages,
            Api::OpenAi => &OpenAiChat,
        };
        let mut acc = codec.accumulator();
        acc.push(&answer.body).expect("a valid stream");
        acc.finish().expect("a complete stream")
    } else {
        answer.body.clone()
    };
    serde_json::from_slice(&json).expect("json")
}

/// What must be identical between two answers: content blocks, stop reason and sequence,
/// usage (ids may differ).
fn assert_equivalent(api: Api, a: &Value, b: &Value) {
    match api {
        Api::Anthropic => {
            for field in [
                "content",
                "stop_reason",
                "stop_sequence",
                "usage",
                "model",
                "role",
            ] {
                assert_eq!(a[field], b[field], "{field}");
            }
            assert_eq!(a["content"][0]["thinking"], THINKING);
            assert_eq!(a["content"][0]["signature"], SIGNATURE);
            assert_eq!(a["content"][1]["text"], TEXT);
            assert_eq!(
                a["content"][2]["input"],
                serde_json::from_str::<Value>(TOOL_INPUT).unwrap()
            );
            assert_eq!(a["usage"]["output_tokens"], 61);
        }
        Api::OpenAi => {
            assert_eq!(a["choices"], b["choices"]);
            assert_eq!(a["usage"], b["usage"]);
            assert_eq!(a["choices"][0]["message"]["content"], TEXT);
            assert_eq!(
                a["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
                TOOL_INPUT
            );
            assert_eq!(a["usage"]["total_tokens"], 50);
        }
    }
}

fn layer() -> ResponseCacheLayer<MemoryCache> {
    ResponseCacheLayer::new(MemoryCache::new(1_000))
}

fn nonce() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

// ---------------------------------------------------------------------------------------------
// Record and replay
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn miss_then_hit_in_every_mode_pairing_for_both_apis() {
    for api in [Api::Anthropic, Api::OpenAi] {
        for (first_streams, second_streams) in
            [(true, true), (true, false), (false, true), (false, false)]
        {
            let up = Upstream::new(Duration::from_millis(1));
            let svc = ServiceBuilder::new().layer(layer()).service(up.service());
            let n = nonce();
            let what = format!("{api:?} stream={first_streams} then stream={second_streams}");
            let first = send(&svc, request(api, first_streams, &n)).await;
            assert_eq!(first.x_cache, "MISS", "{what}");
            let second = send(&svc, request(api, second_streams, &n)).await;
            assert_eq!(second.x_cache, "HIT", "{what}");
            assert!(second.age.is_some(), "{what}: age on a hit");
            assert_eq!(up.calls(), 1, "{what}: one upstream call");
            let expected_type = if second_streams {
                "text/event-stream"
            } else {
                "application/json"
            };
            assert_eq!(second.content_type, expected_type, "{what}");
            assert_equivalent(api, &final_answer(api, &second), &final_answer(api, &first));
            if first_streams && second_streams {
                // A replay is a valid stream of the API, ending with its own end marker.
                let end: &[u8] = match api {
                    Api::Anthropic => b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
                    Api::OpenAi => b"data: [DONE]\n\n",
                };
                assert!(second.body.ends_with(end), "{what}");
            }
        }
    }
}

#[tokio::test]
async fn a_stream_hit_is_served_as_fast_as_it_is_read_not_re_paced() {
    // ~50 events at 20 ms each: a second to produce, a hit must not take that long.
    let up = Upstream::new(Duration::from_millis(20));
    let svc = ServiceBuilder::new().layer(layer()).service(up.service());
    let n = nonce();
    let started = Instant::now();
    let first = send(&svc, request(Api::Anthropic, true, &n)).await;
    let produced_in = started.elapsed();
    assert!(anthropic_events().len() >= 45);
    assert!(produced_in >= Duration::from_millis(800), "{produced_in:?}");
    let started = Instant::now();
    let hit = send(&svc, request(Api::Anthropic, true, &n)).await;
    assert_eq!(
        (first.x_cache.as_str(), hit.x_cache.as_str()),
        ("MISS", "HIT")
    );
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_recording_passes_every_frame_on_as_it_comes() {
    // The first frame reaches the client while the upstream is still producing the rest.
    let up = Upstream::new(Duration::from_millis(30));
    let svc = ServiceBuilder::new().layer(layer()).service(up.service());
    let res = svc
        .clone()
        .oneshot(request(Api::Anthropic, true, &nonce()))
        .await
        .expect("service");
    assert_eq!(res.headers()["x-cache"], "MISS");
    let mut body = res.into_body();
    let first = body.frame().await.expect("a frame").expect("ok");
    let first = first.into_data().expect("data");
    assert!(first.starts_with(b"event: message_start"));
    assert!(up.produced.load(Ordering::SeqCst) < 5, "not buffered");
    // The bytes are exactly the upstream's.
    let rest = body.collect().await.expect("rest").to_bytes();
    let all = [first.as_ref(), rest.as_ref()].concat();
    assert_eq!(all, anthropic_events().concat());
}

#[tokio::test]
async fn unclean_streams_are_never_stored() {
    for api in [Api::Anthropic, Api::OpenAi] {
        let events = match api {
            Api::Anthropic => anthropic_events().len(),
            Api::OpenAi => openai_events().len(),
        };
        for ending in [
            Ending::CutAfter(10),
            Ending::ErrorEventAfter(10),
            // Without its end marker (message_stop / [DONE]).
            Ending::TruncatedAfter(events - 1),
            // Without message_delta and message_stop / without the usage chunk... and [DONE].
            Ending::TruncatedAfter(events - 2),
        ] {
            let up = Upstream::new(Duration::ZERO).ending(ending);
            let svc = ServiceBuilder::new().layer(layer()).service(up.service());
            let n = nonce();
            let res = svc
                .clone()
                .oneshot(request(api, true, &n))
                .await
                .expect("service");
            assert_eq!(res.headers()["x-cache"], "MISS");
            let collected = res.into_body().collect().await;
            assert_eq!(
                collected.is_err(),
                matches!(ending, Ending::CutAfter(_)),
                "{api:?} {ending:?}"
            );
            up.set_ending(Ending::Clean);
            let again = send(&svc, request(api, false, &n)).await;
            assert_eq!(
                again.x_cache, "MISS",
                "{api:?} {ending:?}: nothing was stored"
            );
            assert_eq!(up.calls(), 2);
        }
    }
}

#[tokio::test]
async fn upstream_errors_and_other_content_types_are_not_stored() {
    let svc = ServiceBuilder::new()
        .layer(layer())
        .service(service_fn(|_req: In| async {
            Ok::<_, Infallible>(
                Response::builder()
                    .status(529)
                    .header("content-type", "text/event-stream")
                    .body(full("event: message_stop\ndata: {}\n\n"))
                    .expect("response"),
            )
        }));
    let n = nonce();
    for _ in 0..2 {
        let a = send(&svc, request(Api::Anthropic, true, &n)).await;
        assert_eq!(a.x_cache, "MISS");
    }
}

#[tokio::test]
async fn a_client_that_leaves_early_cancels_the_upstream_and_stores_nothing() {
    let up = Upstream::new(Duration::from_millis(10));
    let svc = ServiceBuilder::new().layer(layer()).service(up.service());
    let n = nonce();
    let res = svc
        .clone()
        .oneshot(request(Api::Anthropic, true, &n))
        .await
        .expect("service");
    let mut body = res.into_body();
    for _ in 0..3 {
        body.frame().await.expect("frame").expect("ok");
    }
    drop(body);
    // Nobody reads any more: the upstream stream is dropped at once, not read to the end.
    assert!(up.cancelled.load(Ordering::SeqCst), "upstream cancelled");
    let produced = up.produced.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        up.produced.load(Ordering::SeqCst),
        produced,
        "nothing read after the drop"
    );
    let again = send(&svc, request(Api::Anthropic, true, &n)).await;
    assert_eq!(again.x_cache, "MISS");
    assert_eq!(up.calls(), 2);
}

#[tokio::test]
async fn streams_over_the_entry_limit_pass_whole_but_are_not_stored() {
    let up = Upstream::new(Duration::ZERO);
    let limit = 2_000;
    assert!(anthropic_events().concat().len() > limit);
    let svc = ServiceBuilder::new()
        .layer(layer().max_entry_bytes(limit))
        .service(up.service());
    let n = nonce();
    let first = send(&svc, request(Api::Anthropic, true, &n)).await;
    assert_eq!(
        first.body,
        anthropic_events().concat(),
        "the client still gets all of it"
    );
    let again = send(&svc, request(Api::Anthropic, true, &n)).await;
    assert_eq!(again.x_cache, "MISS");
}

#[tokio::test]
async fn a_streaming_request_needing_usage_does_not_hit_an_entry_without_it() {
    // An OpenAI stream recorded without `include_usage` has no usage to give: a streaming
    // request that asks for usage goes upstream, and its answer replaces the entry.
    let memory = MemoryCache::new(100);
    let up = Upstream::new(Duration::ZERO);
    let svc = ServiceBuilder::new()
        .layer(ResponseCacheLayer::new(memory.clone()))
        .service(up.service());
    let n = nonce();
    let req = request(Api::OpenAi, true, &n);
    let body: Value =
        serde_json::from_slice(&req.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let identity = CallerIdentity::from_credential("sk-test");
    let scope = CacheScope {
        backend_name: "default",
        auth_identity: identity.as_str(),
    };
    let key = cache_key_for_request(&body, CacheNamespace::OpenAI, &scope);
    let mut without_usage = openai_completion();
    without_usage["usage"] = Value::Null;
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    let entry = CacheEntry::new(
        http::StatusCode::OK,
        headers,
        Bytes::from(without_usage.to_string()),
    );
    memory.put(&key, entry, 60).await;

    // Without include_usage the entry serves the stream.
    let mut plain = request(Api::OpenAi, true, &n);
    let mut plain_body = body.clone();
    plain_body.as_object_mut().unwrap().remove("stream_options");
    *plain.body_mut() = Full::new(Bytes::from(plain_body.to_string()));
    let hit = send(&svc, plain).await;
    assert_eq!(hit.x_cache, "HIT");
    assert!(!String::from_utf8_lossy(&hit.body).contains("\"usage\""));
    assert_eq!(up.calls(), 0);

    // With it: a miss, and the fresh answer (with usage) replaces the entry.
    let miss = send(&svc, request(Api::OpenAi, true, &n)).await;
    assert_eq!(miss.x_cache, "MISS");
    assert_eq!(up.calls(), 1);
    let hit = send(&svc, request(Api::OpenAi, true, &n)).await;
    assert_eq!(hit.x_cache, "HIT");
    assert_eq!(final_answer(Api::OpenAi, &hit)["usage"]["total_tokens"], 50);
    assert_eq!(up.calls(), 1);
}

// ---------------------------------------------------------------------------------------------
// Live fan-out
// ---------------------------------------------------------------------------------------------

/// A client reading a stream, noting when each frame arrived.
struct Timed {
    x_cache: String,
    bytes: Vec<u8>,
    first_frame: Instant,
    ended: Instant,
    error: bool,
}

async fn read_timed<S, B>(svc: S, req: Request<Full<Bytes>>) -> Timed
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let res = svc.oneshot(req).await.expect("service");
    let x_cache = res.headers()["x-cache"].to_str().expect("ascii").to_owned();
    let mut body = res.into_body();
    let mut bytes = Vec::new();
    let mut first_frame = None;
    let mut error = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some(frame) = tokio::time::timeout_at(deadline.into(), body.frame())
        .await
        .expect("stream ends within 30 s")
    {
        match frame {
            Ok(frame) => {
                first_frame.get_or_insert_with(Instant::now);
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            Err(_) => {
                error = true;
                break;
            }
        }
    }
    let ended = Instant::now();
    Timed {
        x_cache,
        bytes,
        first_frame: first_frame.unwrap_or(ended),
        ended,
        error,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_identical_streams_share_one_upstream_call() {
    let up = Upstream::new(Duration::from_millis(20));
    let svc = ServiceBuilder::new().layer(layer()).service(up.service());
    let n = nonce();
    let leader = tokio::spawn(read_timed(svc.clone(), request(Api::Anthropic, true, &n)));
    // Followers arrive while the leader's stream is being produced.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let followers: Vec<_> = (0..50)
        .map(|_| tokio::spawn(read_timed(svc.clone(), request(Api::Anthropic, true, &n))))
        .collect();
    let leader = leader.await.expect("leader");
    let expected = anthropic_events().concat();
    assert_eq!(leader.x_cache, "MISS");
    assert_eq!(leader.bytes, expected);
    for follower in followers {
        let follower = follower.await.expect("follower");
        assert_eq!(follower.x_cache, "HIT");
        assert!(!follower.error);
        assert_eq!(follower.bytes, expected, "identical bytes");
        assert!(
            follower.first_frame < leader.ended,
            "a follower's first event came before the leader's stream ended"
        );
    }
    assert_eq!(up.calls(), 1, "one upstream call for 51 streams");
    // And the answer was stored: both modes now hit.
    let json = send(&svc, request(Api::Anthropic, false, &n)).await;
    assert_eq!(json.x_cache, "HIT");
    assert_equivalent(
        Api::Anthropic,
        &final_answer(Api::Anthropic, &json),
        &final_answer(
            Api::Anthropic,
            &Answer {
                x_cache: String::new(),
                content_type: "text/event-stream".into(),
                age: None,
                body: Bytes::from(expected),
            },
        ),
    );
    assert_eq!(up.calls(), 1);
}

#[tokio::test]
async fn a_json_request_during_a_live_stream_waits_for_its_answer() {
    let up = Upstream::new(Duration::from_millis(10));
    let svc = ServiceBuilder::new().layer(layer()).service(up.service());
    let n = nonce();
    let stream = tokio::spawn(read_timed(svc.clone(), request(Api::Anthropic, true, &n)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let json = send(&svc, request(Api::Anthropic, false, &n)).await;
    assert_eq!(json.x_cache, "HIT");
    assert_eq!(json.content_type, "application/json");
    let stream = stream.await.expect("stream");
    assert_eq!(stream.x_cache, "MISS");
    assert_eq!(
        final_answer(Api::Anthropic, &json)["content"],
        anthropic_message()["content"]
    );
    assert_eq!(up.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_failure_ends_every_follower_with_the_same_error() {
    for (ending, transport_error) in [
        (Ending::ErrorEventAfter(20), false),
        (Ending::CutAfter(20), true),
    ] {
        let up = Upstream::new(Duration::from_millis(15)).ending(ending);
        let svc = ServiceBuilder::new().layer(layer()).service(up.service());
        let n = nonce();
        let leader = tokio::spawn(read_timed(svc.clone(), request(Api::Anthropic, true, &n)));
        tokio::time::sleep(Duration::from_millis(60)).await;
        let followers: Vec<_> = (0..5)
            .map(|_| tokio::spawn(read_timed(svc.clone(), request(Api::Anthropic, true, &n))))
            .collect();
        let leader = leader.await.expect("leader");
        let mut readers = vec![leader];
        for follower in followers {
            let follower = follower.await.expect("follower");
            assert_eq!(follower.x_cache, "HIT");
            readers.push(follower);
        }
        let upstream_part = anthropic_events()[..20].concat();
        // Whoever was reading the upstream when it failed gets the transport error; every
        // other reader the same bytes, then an error event.
        let errors = readers.iter().filter(|r| r.error).count();
        assert_eq!(errors, usize::from(transport_error), "{ending:?}");
        let ended: Vec<_> = readers.iter().filter(|r| !r.error).collect();
        for reader in &readers {
            assert!(reader.bytes.starts_with(&upstream_part), "{ending:?}");
        }
        for reader in &ended {
            let tail = String::from_utf8_lossy(&reader.bytes[upstream_part.len()..]).into_owned();
            assert!(tail.starts_with("event: error\n"), "{tail}");
            if !transport_error {
                // The upstream's own error event, the same bytes for everyone.
                assert_eq!(reader.bytes, ended[0].bytes);
                assert!(tail.contains("overloaded_error"));
            }
        }
        assert_eq!(up.calls(), 1);
        up.set_ending(Ending::Clean);
        let again = send(&svc, request(Api::Anthropic, true, &n)).await;
        assert_eq!(again.x_cache, "MISS", "{ending:?}: nothing stored");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_goes_on_for_followers_when_the_leader_leaves() {
    let up = Upstream::new(Duration::from_millis(10));
    let svc = ServiceBuilder::new().layer(layer()).service(up.service());
    let n = nonce();
    let res = svc
        .clone()
        .oneshot(request(Api::Anthropic, true, &n))
        .await
        .expect("service");
    let mut leader = res.into_body();
    leader.frame().await.expect("frame").expect("ok");
    let followers: Vec<_> = (0..3)
        .map(|_| tokio::spawn(read_timed(svc.clone(), request(Api::Anthropic, true, &n))))
        .collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    drop(leader);
    for follower in followers {
        let follower = follower.await.expect("follower");
        assert_eq!(follower.x_cache, "HIT");
        assert_eq!(
            follower.bytes,
            anthropic_events().concat(),
            "complete, uncut"
        );
    }
    assert!(
        !up.cancelled.load(Ordering::SeqCst),
        "the upstream stream was read to its end"
    );
    assert_eq!(up.calls(), 1);
    // Read to a clean end by the followers: stored.
    let hit = send(&svc, request(Api::Anthropic, true, &n)).await;
    assert_eq!(hit.x_cache, "HIT");
    assert_eq!(up.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_reader_leaves_the_shared_stream_is_cancelled() {
    let up = Upstream::new(Duration::from_millis(10));
    let svc = ServiceBuilder::new().layer(layer()).service(up.service());
    let n = nonce();
    let leader = svc
        .clone()
        .oneshot(request(Api::Anthropic, true, &n))
        .await
        .expect("service");
    let follower = svc
        .clone()
        .oneshot(request(Api::Anthropic, true, &n))
        .await
        .expect("service");
    assert_eq!(follower.headers()["x-cache"], "HIT");
    let (mut a, mut b) = (leader.into_body(), follower.into_body());
    a.frame().await.expect("frame").expect("ok");
    b.frame().await.expect("frame").expect("ok");
    drop(a);
    assert!(!up.cancelled.load(Ordering::SeqCst), "one reader left");
    drop(b);
    assert!(
        up.cancelled.load(Ordering::SeqCst),
        "nobody left: cancelled at once"
    );
    assert_eq!(up.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_follower_is_cut_and_never_holds_the_others_back() {
    // Events of ~1 KB and an 8 KB limit: the stream (~50 KB) is too big to keep whole, so a
    // follower more than 8 KB behind is cut.
    let mut up = Upstream::new(Duration::from_millis(2));
    up.padding = 1_000;
    let limit = 8 << 10;
    let svc = ServiceBuilder::new()
        .layer(layer().max_entry_bytes(limit))
        .service(up.service());
    let n = nonce();
    let leader = svc
        .clone()
        .oneshot(request(Api::Anthropic, true, &n))
        .await
        .expect("service");
    let slow = svc
        .clone()
        .oneshot(request(Api::Anthropic, true, &n))
        .await
        .expect("service");
    assert_eq!(slow.headers()["x-cache"], "HIT");
    let fast = tokio::spawn(read_timed(svc.clone(), request(Api::Anthropic, true, &n)));
    let mut slow = slow.into_body();
    let first = slow
        .frame()
        .await
        .expect("frame")
        .expect("ok")
        .into_data()
        .expect("data");
    // The leader and the fast follower finish while the slow one does not read at all.
    let leader = tokio::time::timeout(Duration::from_secs(10), leader.into_body().collect())
        .await
        .expect("the leader is not held back")
        .expect("ok")
        .to_bytes();
    let fast = fast.await.expect("fast");
    assert_eq!(leader.len(), fast.bytes.len());
    assert!(leader.len() > 40_000);
    assert_eq!(&leader[..], &fast.bytes[..]);
    // The slow one now reads: what it missed is gone, so it gets an error event and its end.
    let rest = slow.collect().await.expect("ok").to_bytes();
    let seen = [first.as_ref(), rest.as_ref()].concat();
    assert!(seen.len() < leader.len());
    let text = String::from_utf8_lossy(&seen);
    assert!(
        text.ends_with("\n\n") && text.contains("event: error\n"),
        "{text}"
    );
    assert!(text.contains("fell too far behind"));
    assert_eq!(up.calls(), 1);
    // Too big to store: the next request goes upstream.
    let again = send(&svc, request(Api::Anthropic, true, &n)).await;
    assert_eq!(again.x_cache, "MISS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_past_the_limit_can_no_longer_be_joined() {
    // Once a stream outgrew the limit its start is gone: a new identical request cannot get
    // the backlog, so it makes its own upstream call instead of getting half a stream.
    let mut up = Upstream::new(Duration::from_millis(5));
    up.padding = 1_000;
    let svc = ServiceBuilder::new()
        .layer(layer().max_entry_bytes(4 << 10))
        .service(up.service());
    let n = nonce();
    let leader = tokio::spawn(read_timed(svc.clone(), request(Api::Anthropic, true, &n)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let late = read_timed(svc.clone(), request(Api::Anthropic, true, &n)).await;
    let leader = leader.await.expect("leader");
    assert_eq!(late.x_cache, "MISS");
    assert_eq!(late.bytes, leader.bytes, "a complete stream of its own");
    assert_eq!(up.calls(), 2);
}

#[tokio::test]
async fn request_directives_and_switches_apply_to_streams() {
    let up = Upstream::new(Duration::ZERO);
    let svc = ServiceBuilder::new().layer(layer()).service(up.service());
    let n = nonce();
    let with = |header: Option<&'static str>, ttl: Option<u64>| {
        let mut req = request(Api::Anthropic, true, &n);
        if let Some(value) = header {
            req.headers_mut()
                .insert("cache-control", http::HeaderValue::from_static(value));
        }
        if let Some(ttl) = ttl {
            let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 256, "stream": true,
                "cache_ttl_secs": ttl,
                "messages": [{"role": "user", "content": format!("weather? {n}")}]});
            *req.body_mut() = Full::new(Bytes::from(body.to_string()));
        }
        req
    };
    // no-store and a zero TTL bypass: not looked up, not stored.
    assert_eq!(
        send(&svc, with(Some("no-store"), None)).await.x_cache,
        "BYPASS"
    );
    assert_eq!(send(&svc, with(None, Some(0))).await.x_cache, "BYPASS");
    assert_eq!(send(&svc, with(None, None)).await.x_cache, "MISS");
    assert_eq!(up.calls(), 3);
    // no-cache skips the lookup but stores the fresh stream.
    assert_eq!(
        send(&svc, with(Some("no-cache"), None)).await.x_cache,
        "MISS"
    );
    assert_eq!(send(&svc, with(None, None)).await.x_cache, "HIT");
    assert_eq!(up.calls(), 4);

    // Without coalescing, concurrent streams each go upstream, and are still stored.
    let up = Upstream::new(Duration::from_millis(5));
    let svc = ServiceBuilder::new()
        .layer(layer().coalesce(false))
        .service(up.service());
    let n = nonce();
    let a = tokio::spawn(read_timed(svc.clone(), request(Api::Anthropic, true, &n)));
    let b = tokio::spawn(read_timed(svc.clone(), request(Api::Anthropic, true, &n)));
    let (a, b) = (a.await.expect("a"), b.await.expect("b"));
    assert_eq!((a.x_cache.as_str(), b.x_cache.as_str()), ("MISS", "MISS"));
    assert_eq!(up.calls(), 2);
    assert_eq!(
        send(&svc, request(Api::Anthropic, true, &n)).await.x_cache,
        "HIT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_followers_share_streams_and_are_cut_with_an_openai_error_chunk() {
    let mut up = Upstream::new(Duration::from_millis(2));
    up.padding = 1_000;
    let svc = ServiceBuilder::new()
        .layer(layer().max_entry_bytes(8 << 10))
        .service(up.service());
    let n = nonce();
    let leader = svc
        .clone()
        .oneshot(request(Api::OpenAi, true, &n))
        .await
        .expect("service");
    let slow = svc
        .clone()
        .oneshot(request(Api::OpenAi, true, &n))
        .await
        .expect("service");
    assert_eq!(slow.headers()["x-cache"], "HIT");
    let mut slow = slow.into_body();
    slow.frame().await.expect("frame").expect("ok");
    let all = leader.into_body().collect().await.expect("ok").to_bytes();
    assert!(all.ends_with(b"data: [DONE]\n\n"));
    let rest = slow.collect().await.expect("ok").to_bytes();
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.ends_with("\n\n") && text.contains("data: {\"error\":{"),
        "{text}"
    );
    assert_eq!(up.calls(), 1);
}

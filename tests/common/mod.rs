//! Test support shared by every integration test: a mock OpenAI upstream on a real socket,
//! OpenAI wire-format builders, and a small HTTP client with bounded waits.
//!
//! ```ignore
//! let mock = MockUpstream::start().await;
//! mock.push(Reply::json(chat_completion_json("Hi!", "stop", usage(10, 2))));
//! // point the code under test at mock.base_url() ("http://127.0.0.1:<port>/v1") …
//! let seen = mock.requests();
//! assert_eq!(seen[0].path, "/v1/chat/completions");
//! ```
#![allow(dead_code)] // Not every test file uses every helper.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The error type of bodies built here.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The upper bound on any single wait in the tests.
pub const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------------

/// What the mock answers to one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A JSON body with a status and extra headers.
    Json {
        /// Response status.
        status: u16,
        /// Response body.
        body: Value,
        /// Extra response headers.
        headers: Vec<(String, String)>,
    },
    /// A `text/event-stream` answer.
    Sse(SseReply),
    /// Any bytes with any status and headers.
    Raw {
        /// Response status.
        status: u16,
        /// Response headers (include `content-type` yourself).
        headers: Vec<(String, String)>,
        /// Response body.
        body: Bytes,
    },
    /// Never answers (until the client goes away).
    Hang,
}

/// An SSE answer: `data:` events, each after its own delay.
#[derive(Clone, Debug)]
pub struct SseReply {
    /// Response status (200 unless testing odd upstreams).
    pub status: u16,
    /// The events' `data:` payloads and the delay before each is sent.
    pub events: Vec<SseEvent>,
    /// Whether `data: [DONE]` follows the events.
    pub done: bool,
    /// Cut the connection (abort the body) after this many events instead of ending cleanly.
    pub cut_after: Option<usize>,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
}

/// One SSE event.
#[derive(Clone, Debug)]
pub struct SseEvent {
    /// The `data:` payload (one line).
    pub data: String,
    /// How long to wait before sending it.
    pub delay: Duration,
}

impl Reply {
    /// `200` with a JSON body.
    pub fn json(body: Value) -> Self {
        Self::Json {
            status: 200,
            body,
            headers: Vec::new(),
        }
    }

    /// A JSON body with the given status.
    pub fn json_status(status: u16, body: Value) -> Self {
        Self::Json {
            status,
            body,
            headers: Vec::new(),
        }
    }

    /// An OpenAI error response: `{"error":{"message","type","param":null,"code"}}`.
    pub fn error(status: u16, message: &str) -> Self {
        let kind = match status {
            400 | 404 | 422 => "invalid_request_error",
            401 => "invalid_request_error",
            429 => "rate_limit_exceeded",
            _ => "server_error",
        };
        Self::json_status(status, openai_error_json(message, kind, None))
    }

    /// A stream of chunks (JSON values) sent at once, then `[DONE]`.
    pub fn sse(chunks: Vec<Value>) -> Self {
        Self::Sse(SseReply {
            status: 200,
            events: chunks
                .into_iter()
                .map(|chunk| SseEvent {
                    data: chunk.to_string(),
                    delay: Duration::ZERO,
                })
                .collect(),
            done: true,
            cut_after: None,
            headers: Vec::new(),
        })
    }

    /// Any bytes.
    pub fn raw(status: u16, content_type: &str, body: impl Into<Bytes>) -> Self {
        Self::Raw {
            status,
            headers: vec![("content-type".to_owned(), content_type.to_owned())],
            body: body.into(),
        }
    }

    /// Adds a response header.
    #[must_use]
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        let pair = (name.to_owned(), value.to_owned());
        match &mut self {
            Self::Json { headers, .. } | Self::Raw { headers, .. } => headers.push(pair),
            Self::Sse(sse) => sse.headers.push(pair),
            Self::Hang => {}
        }
        self
    }

    /// SSE only: waits `delay` before every event.
    #[must_use]
    pub fn delay_each(mut self, delay: Duration) -> Self {
        if let Self::Sse(sse) = &mut self {
            for event in &mut sse.events {
                event.delay = delay;
            }
        }
        self
    }

    /// SSE only: no `data: [DONE]` at the end.
    #[must_use]
    pub fn without_done(mut self) -> Self {
        if let Self::Sse(sse) = &mut self {
            sse.done = false;
        }
        self
    }

    /// SSE only: abort the connection after `n` events.
    #[must_use]
    pub fn cut_after(mut self, n: usize) -> Self {
        if let Self::Sse(sse) = &mut self {
            sse.cut_after = Some(n);
        }
        self
    }
}

// ---------------------------------------------------------------------------------------------
// The mock server
// ---------------------------------------------------------------------------------------------

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Request method.
    pub method: Method,
    /// Path only.
    pub path: String,
    /// Query string, if any.
    pub query: Option<String>,
    /// Every header as received.
    pub headers: HeaderMap,
    /// The body parsed as JSON (`Value::Null` when empty or not JSON).
    pub body: Value,
    /// The body bytes.
    pub raw: Bytes,
}

impl Recorded {
    /// A header as a string, if present and ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

type Responder = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

struct State {
    queue: Mutex<VecDeque<Reply>>,
    fallback: Mutex<Responder>,
    requests: Mutex<Vec<Recorded>>,
    calls: AtomicUsize,
    open: AtomicUsize,
    accepted: AtomicUsize,
}

/// A fake OpenAI-compatible server on `127.0.0.1:<random port>`, stopped when dropped.
///
/// Answers each request with the next queued [`Reply`], or when the queue is empty with the
/// fallback (by default a 200 chat completion saying `"Hello from mock"`).
pub struct MockUpstream {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        // Dropping the accept task drops its JoinSet, which aborts every connection.
        self.task.abort();
    }
}

impl MockUpstream {
    /// Binds `127.0.0.1:0` and starts serving.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind mock");
        let addr = listener.local_addr().expect("mock addr");
        let state = Arc::new(State {
            queue: Mutex::new(VecDeque::new()),
            fallback: Mutex::new(Arc::new(|_: &Recorded| {
                Reply::json(chat_completion_json(
                    "Hello from mock",
                    "stop",
                    usage(10, 3),
                ))
            })),
            requests: Mutex::new(Vec::new()),
            calls: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, state.clone()));
        Self { addr, state, task }
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>/v1`, the usual `OPENAI_BASE_URL`.
    pub fn base_url(&self) -> String {
        self.url("/v1")
    }

    /// `http://127.0.0.1:<port>` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Queues a reply for the next request that has none.
    pub fn push(&self, reply: Reply) {
        self.state.queue.lock().expect("queue").push_back(reply);
    }

    /// Sets the reply used whenever the queue is empty.
    pub fn set_default(&self, reply: Reply) {
        self.respond_with(move |_| reply.clone());
    }

    /// Decides the reply from the request whenever the queue is empty.
    pub fn respond_with(&self, responder: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) {
        *self.state.fallback.lock().expect("fallback") = Arc::new(responder);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().expect("requests").clone()
    }

    /// The last request received.
    pub fn last_request(&self) -> Recorded {
        self.requests().pop().expect("the mock received no request")
    }

    /// How many requests arrived.
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// How many connections are open right now.
    pub fn open_connections(&self) -> usize {
        self.state.open.load(Ordering::SeqCst)
    }

    /// How many connections were accepted in total.
    pub fn accepted_connections(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Waits (at most [`WAIT`]) until at least `n` requests arrived.
    pub async fn wait_for_calls(&self, n: usize) {
        wait_until("mock calls", || self.calls() >= n).await;
    }
}

/// Polls `condition` every 10 ms; panics naming `what` after [`WAIT`].
pub async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Decrements the open-connection count however the connection task ends (even aborted).
struct OpenGuard(Arc<State>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        // Reap finished connection tasks so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
        state.accepted.fetch_add(1, Ordering::SeqCst);
        state.open.fetch_add(1, Ordering::SeqCst);
        let guard = OpenGuard(state.clone());
        let state = state.clone();
        connections.spawn(async move {
            let _guard = guard;
            let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type MockBody = UnsyncBoxBody<Bytes, BoxError>;

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let raw = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let recorded = Recorded {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        // Past serde_json's 128 levels: tests send deep tool schemas on purpose.
        body: tower_llm_bridge::parsed::from_slice_max_depth(&raw, 4096).unwrap_or(Value::Null),
        raw,
    };
    let reply = {
        let queued = state.queue.lock().expect("queue").pop_front();
        match queued {
            Some(reply) => reply,
            None => {
                let fallback = state.fallback.lock().expect("fallback").clone();
                fallback(&recorded)
            }
        }
    };
    state.requests.lock().expect("requests").push(recorded);
    state.calls.fetch_add(1, Ordering::SeqCst);
    Ok(match reply {
        Reply::Json {
            status,
            body,
            headers,
        } => {
            let mut headers = headers;
            headers.push(("content-type".to_owned(), "application/json".to_owned()));
            response(status, &headers, full(body.to_string()))
        }
        Reply::Raw {
            status,
            headers,
            body,
        } => response(status, &headers, full(body)),
        Reply::Sse(sse) => {
            let mut headers = sse.headers.clone();
            headers.push(("content-type".to_owned(), "text/event-stream".to_owned()));
            headers.push(("cache-control".to_owned(), "no-cache".to_owned()));
            response(sse.status, &headers, sse_body(sse))
        }
        Reply::Hang => std::future::pending().await,
    })
}

fn full(bytes: impl Into<Bytes>) -> MockBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn response(status: u16, headers: &[(String, String)], body: MockBody) -> Response<MockBody> {
    let mut res = Response::new(body);
    *res.status_mut() = StatusCode::from_u16(status).expect("valid status");
    for (name, value) in headers {
        res.headers_mut().append(
            HeaderName::try_from(name.as_str()).expect("header name"),
            HeaderValue::try_from(value.as_str()).expect("header value"),
        );
    }
    res
}

/// Frames: one per event (`data: …\n\n`), then `data: [DONE]\n\n`, or an error at the cut.
fn sse_body(sse: SseReply) -> MockBody {
    enum Step {
        Event(SseEvent),
        Done,
        Cut,
    }
    let mut steps: Vec<Step> = Vec::new();
    for (i, event) in sse.events.into_iter().enumerate() {
        if sse.cut_after == Some(i) {
            break;
        }
        steps.push(Step::Event(event));
    }
    if sse.cut_after.is_some() {
        steps.push(Step::Cut);
    } else if sse.done {
        steps.push(Step::Done);
    }
    let stream = futures_util::stream::unfold(steps.into_iter(), |mut steps| async move {
        let frame: Result<Frame<Bytes>, BoxError> = match steps.next()? {
            Step::Event(event) => {
                if !event.delay.is_zero() {
                    tokio::time::sleep(event.delay).await;
                }
                Ok(Frame::data(Bytes::from(format!(
                    "data: {}\n\n",
                    event.data
                ))))
            }
            Step::Done => Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))),
            // An error frame makes hyper abort the connection without a final chunk.
            Step::Cut => Err("mock cut the connection".into()),
        };
        Some((frame, steps))
    });
    StreamBody::new(stream).boxed_unsync()
}

// ---------------------------------------------------------------------------------------------
// OpenAI wire format
// ---------------------------------------------------------------------------------------------

/// The id every mock completion carries.
pub const COMPLETION_ID: &str = "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT";
/// The model every mock completion reports.
pub const MOCK_MODEL: &str = "gpt-4o-2024-08-06";

/// OpenAI's `usage` object, with the detail objects current API versions send.
pub fn usage(prompt_tokens: u64, completion_tokens: u64) -> Value {
    usage_with_cache(prompt_tokens, completion_tokens, 0)
}

/// `usage` with `prompt_tokens_details.cached_tokens`.
pub fn usage_with_cache(prompt_tokens: u64, completion_tokens: u64, cached_tokens: u64) -> Value {
    json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

/// A non-streaming chat completion with one text choice.
pub fn chat_completion_json(text: &str, finish_reason: &str, usage: Value) -> Value {
    completion_with_message(
        json!({"role": "assistant", "content": text, "refusal": null, "annotations": []}),
        finish_reason,
        usage,
    )
}

/// A non-streaming chat completion whose message calls tools: `(id, name, arguments)`.
pub fn tool_calls_completion_json(calls: &[(&str, &str, &str)], usage: Value) -> Value {
    let tool_calls: Vec<Value> = calls
        .iter()
        .map(|(id, name, arguments)| {
            json!({"id": id, "type": "function",
                   "function": {"name": name, "arguments": arguments}})
        })
        .collect();
    completion_with_message(
        json!({"role": "assistant", "content": null, "tool_calls": tool_calls,
               "refusal": null, "annotations": []}),
        "tool_calls",
        usage,
    )
}

/// A non-streaming chat completion around any `message` object.
pub fn completion_with_message(message: Value, finish_reason: &str, usage: Value) -> Value {
    json!({
        "id": COMPLETION_ID,
        "object": "chat.completion",
        "created": 1_741_569_952,
        "model": MOCK_MODEL,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason
        }],
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": "fp_fc9f1d7035"
    })
}

/// One streaming chunk with one choice: `delta` and an optional `finish_reason`.
pub fn chunk(delta: Value, finish_reason: Option<&str>) -> Value {
    json!({
        "id": COMPLETION_ID,
        "object": "chat.completion.chunk",
        "created": 1_741_569_952,
        "model": MOCK_MODEL,
        "service_tier": "default",
        "system_fingerprint": "fp_fc9f1d7035",
        "choices": [{
            "index": 0,
            "delta": delta,
            "logprobs": null,
            "finish_reason": finish_reason
        }],
        "usage": null
    })
}

/// The first chunk of a stream: the role and an empty content.
pub fn role_chunk() -> Value {
    chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        None,
    )
}

/// A content delta.
pub fn text_chunk(text: &str) -> Value {
    chunk(json!({"content": text}), None)
}

/// A tool-call delta: `id` and `name` on the first fragment of a call, then arguments.
pub fn tool_call_chunk(index: u32, id: Option<&str>, name: Option<&str>, arguments: &str) -> Value {
    let mut call = json!({"index": index, "function": {"arguments": arguments}});
    if let Some(id) = id {
        call["id"] = json!(id);
        call["type"] = json!("function");
    }
    if let Some(name) = name {
        call["function"]["name"] = json!(name);
    }
    chunk(json!({"tool_calls": [call]}), None)
}

/// The chunk carrying `finish_reason` (an empty delta).
pub fn finish_chunk(finish_reason: &str) -> Value {
    chunk(json!({}), Some(finish_reason))
}

/// The final usage chunk of `stream_options.include_usage`: no choices.
pub fn usage_chunk(prompt_tokens: u64, completion_tokens: u64) -> Value {
    json!({
        "id": COMPLETION_ID,
        "object": "chat.completion.chunk",
        "created": 1_741_569_952,
        "model": MOCK_MODEL,
        "service_tier": "default",
        "system_fingerprint": "fp_fc9f1d7035",
        "choices": [],
        "usage": usage(prompt_tokens, completion_tokens)
    })
}

/// A whole text stream: role chunk, one chunk per part, finish chunk, usage chunk.
pub fn text_stream(parts: &[&str], finish_reason: &str, usage: (u64, u64)) -> Vec<Value> {
    let mut chunks = vec![role_chunk()];
    chunks.extend(parts.iter().map(|part| text_chunk(part)));
    chunks.push(finish_chunk(finish_reason));
    chunks.push(usage_chunk(usage.0, usage.1));
    chunks
}

/// OpenAI's error body.
pub fn openai_error_json(message: &str, kind: &str, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// The request body type of [`client`].
pub type ClientBody = UnsyncBoxBody<Bytes, BoxError>;

/// A plain HTTP/1.1 client for talking to servers under test.
pub fn client() -> Client<HttpConnector, ClientBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A body from bytes.
pub fn body(bytes: impl Into<Bytes>) -> ClientBody {
    full(bytes)
}

/// An answer, fully read.
#[derive(Debug)]
pub struct Answer {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (panics with the body text when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "body is not JSON ({err}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends `req` and reads the whole answer, within [`WAIT`].
pub async fn send(req: Request<ClientBody>) -> Answer {
    tokio::time::timeout(WAIT, async {
        let res = client().request(req).await.expect("request failed");
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("body failed").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    })
    .await
    .expect("no answer in time")
}

/// `GET url` with headers.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Answer {
    send(build(Method::GET, url, headers, Bytes::new())).await
}

/// `POST url` with a JSON body and headers.
pub async fn post_json(url: &str, headers: &[(&str, &str)], value: &Value) -> Answer {
    let mut with_type = vec![("content-type", "application/json")];
    with_type.extend_from_slice(headers);
    send(build(Method::POST, url, &with_type, value.to_string())).await
}

/// A request with the given method, URL, headers and body.
pub fn build(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body_bytes: impl Into<Bytes>,
) -> Request<ClientBody> {
    let mut req = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(body(body_bytes)).expect("valid request")
}

/// Parses an SSE transcript into `(event, data)` pairs (`event` empty when absent).
pub fn parse_sse(text: &str) -> Vec<(String, String)> {
    let mut events = Vec::new();
    for block in text.replace("\r\n", "\n").split("\n\n") {
        let mut event = String::new();
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(rest) = line.strip_prefix("event:") {
                event = rest.trim_start().to_owned();
            } else if let Some(rest) = line.strip_prefix("data:") {
                data.push(rest.strip_prefix(' ').unwrap_or(rest).to_owned());
            }
        }
        if !event.is_empty() || !data.is_empty() {
            events.push((event, data.join("\n")));
        }
    }
    events
}

//! A misbehaving upstream behind the example proxy: refused and reset connections, silence,
//! HTML error pages, non-JSON and truncated bodies, SSE garbage, dripping and endless
//! streams — for JSON and streaming requests on `/v1/messages`. Each maps per SPEC §25/§29
//! (an Anthropic error status before the stream starts, an `event: error` after), within the
//! configured timeouts, and the proxy's upstream connections all close again (no leak).
//!
//! `cargo test --test upstream_faults -- --nocapture` prints the fault → outcome table.

#[path = "../examples/proxy/main.rs"]
#[allow(dead_code, unused_imports)] // `main`, a few helpers and re-exports are for the binary only.
mod proxy;

mod common;
mod proxy_support;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::Method;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use proxy_support::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_bridge::translate::AnthropicToOpenAiLayer;

/// The proxy's upstream timeout in these tests (head wait and stream idle timeout).
const TIMEOUT: Duration = Duration::from_secs(1);

/// The proxy's `STREAM_MAX_SECS` in these tests.
const STREAM_MAX: Duration = Duration::from_secs(6);

// ---------------------------------------------------------------------------------------------
// A raw TCP upstream that misbehaves on purpose
// ---------------------------------------------------------------------------------------------

/// What the fault server does once a request arrived.
#[derive(Clone, Debug)]
enum Fault {
    /// Nothing listens on the port.
    Refused,
    /// A correct answer (a completion, or an SSE stream when the request streams).
    Good,
    /// Reads nothing and closes: the kernel resets the connection (unread request data).
    ResetBeforeHeaders,
    /// Writes `bytes`, then acts per `then`.
    Send { bytes: Vec<u8>, then: After },
    /// Writes `head` at once, then `body` one byte at a time every `every`, then `then`.
    Drip {
        head: Vec<u8>,
        body: Vec<u8>,
        every: Duration,
        then: After,
    },
}

#[derive(Clone, Copy, Debug)]
enum After {
    /// Close cleanly (FIN) after having read the whole request.
    Close,
    /// Close with the request unread: a reset.
    Reset,
    /// Keep the connection open until the proxy closes it.
    Hang,
}

struct FaultServer {
    addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    open: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FaultServer {
    async fn start(fault: Fault) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let fault = Arc::new(Mutex::new(fault));
        let open = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let (fault, open, accepted) = (fault.clone(), open.clone(), accepted.clone());
            async move {
                let mut connections = tokio::task::JoinSet::new();
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    while connections.try_join_next().is_some() {}
                    accepted.fetch_add(1, Ordering::SeqCst);
                    open.fetch_add(1, Ordering::SeqCst);
                    let guard = OpenGuard(open.clone());
                    let fault = fault.lock().expect("fault").clone();
                    connections.spawn(async move {
                        let _guard = guard;
                        serve_fault(stream, fault).await;
                    });
                }
            }
        });
        Self {
            addr,
            fault,
            open,
            accepted,
            task,
        }
    }

    fn set(&self, fault: Fault) {
        *self.fault.lock().expect("fault") = fault;
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}

/// Reads one request (head, then `content-length` bytes of body); returns whether it streams.
async fn read_request(stream: &mut TcpStream) -> Option<bool> {
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if received.len() >= end + 4 + length {
                let body: Value =
                    serde_json::from_slice(&received[end + 4..end + 4 + length]).ok()?;
                return Some(body["stream"] == true);
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
}

async fn serve_fault(mut stream: TcpStream, fault: Fault) {
    let (bytes, drip, then) = match fault {
        Fault::Refused => return,
        Fault::ResetBeforeHeaders => {
            // Wait for the request, read none of it, close: unread data means a reset.
            let _ = stream.readable().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            return;
        }
        Fault::Good => {
            let Some(streams) = read_request(&mut stream).await else {
                return;
            };
            let bytes = if streams {
                let mut body = Vec::new();
                for chunk in text_stream(&["fine"], "stop", (3, 1)) {
                    body.extend_from_slice(format!("data: {chunk}\n\n").as_bytes());
                }
                body.extend_from_slice(b"data: [DONE]\n\n");
                http_response(200, "text/event-stream", &body)
            } else {
                let body = chat_completion_json("fine", "stop", usage(3, 1)).to_string();
                http_response(200, "application/json", body.as_bytes())
            };
            if stream.write_all(&bytes).await.is_ok() {
                close_cleanly(&mut stream).await;
            }
            return;
        }
        Fault::Send { bytes, then } => (bytes, None, then),
        Fault::Drip {
            head,
            body,
            every,
            then,
        } => (head, Some((body, every)), then),
    };
    if !matches!(then, After::Reset) && read_request(&mut stream).await.is_none() {
        return;
    }
    if matches!(then, After::Reset) {
        let _ = stream.readable().await;
    }
    if stream.write_all(&bytes).await.is_err() {
        return;
    }
    if let Some((body, every)) = drip {
        for byte in body {
            tokio::time::sleep(every).await;
            if stream.write_all(&[byte]).await.is_err() {
                return;
            }
        }
    }
    match then {
        After::Close => close_cleanly(&mut stream).await,
        After::Reset => {}
        After::Hang => {
            // Until the proxy gives up and closes the connection (bounded by the test's WAIT).
            let mut buf = [0u8; 1024];
            let _ = tokio::time::timeout(Duration::from_secs(30), async {
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            })
            .await;
        }
    }
}

/// Shuts down the write side, then drains until the proxy closes its side too.
async fn close_cleanly(stream: &mut TcpStream) {
    let _ = stream.shutdown().await;
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(WAIT, async {
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

fn http_response(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A `200` with `body` and no `content-type` at all.
fn untyped_200(body: &[u8]) -> Vec<u8> {
    let mut bytes = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A response head with a `content-length` larger than what will be sent.
fn short_body(declared: usize, content_type: &str, sent: &[u8]) -> Vec<u8> {
    let mut bytes = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {declared}\r\n\r\n"
    )
    .into_bytes();
    bytes.extend_from_slice(sent);
    bytes
}

/// A chunked SSE head, and `events` as one chunk each.
fn sse_head() -> Vec<u8> {
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        .to_vec()
}

fn chunked(data: &[u8]) -> Vec<u8> {
    let mut bytes = format!("{:x}\r\n", data.len()).into_bytes();
    bytes.extend_from_slice(data);
    bytes.extend_from_slice(b"\r\n");
    bytes
}

fn sse_events(chunks: &[Value]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for chunk in chunks {
        bytes.extend_from_slice(&chunked(format!("data: {chunk}\n\n").as_bytes()));
    }
    bytes
}

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
enum Expected {
    /// An Anthropic error response with this status and type (nothing was streamed).
    Error(u16, &'static str),
    /// A `200` event stream ending in `event: error` of this type, with no `message_stop`.
    StreamError(&'static str),
    /// A complete, correct stream.
    StreamOk,
}

struct FaultCase {
    name: &'static str,
    fault: Fault,
    stream: bool,
    expected: Expected,
    /// The longest the answer may take.
    within: Duration,
}

fn fault_cases() -> Vec<FaultCase> {
    let quick = Duration::from_secs(2);
    let timed = TIMEOUT + Duration::from_secs(2);
    let send = |bytes: Vec<u8>, then| Fault::Send { bytes, then };
    let html = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>";
    let mut cases = Vec::new();
    for stream in [false, true] {
        let mode = if stream { "stream" } else { "JSON" };
        let leak =
            |name: &str| -> &'static str { Box::leak(format!("{name} ({mode})").into_boxed_str()) };
        cases.push(FaultCase {
            name: leak("connection refused"),
            fault: Fault::Refused,
            stream,
            expected: Expected::Error(502, "api_error"),
            within: quick,
        });
        cases.push(FaultCase {
            name: leak("reset before headers"),
            fault: Fault::ResetBeforeHeaders,
            stream,
            expected: Expected::Error(502, "api_error"),
            within: quick,
        });
        cases.push(FaultCase {
            name: leak("accepts, never answers"),
            fault: Fault::Drip {
                head: Vec::new(),
                body: Vec::new(),
                every: Duration::ZERO,
                then: After::Hang,
            },
            stream,
            expected: Expected::Error(504, "timeout_error"),
            within: timed,
        });
        cases.push(FaultCase {
            name: leak("500 with an HTML body"),
            fault: send(http_response(500, "text/html", html), After::Close),
            stream,
            expected: Expected::Error(500, "api_error"),
            within: quick,
        });
        cases.push(FaultCase {
            name: leak("502 with an HTML body"),
            fault: send(http_response(502, "text/html", html), After::Close),
            stream,
            expected: Expected::Error(502, "api_error"),
            within: quick,
        });
        cases.push(FaultCase {
            name: leak("503 with an HTML body"),
            fault: send(http_response(503, "text/html", html), After::Close),
            stream,
            expected: Expected::Error(529, "overloaded_error"),
            within: quick,
        });
        cases.push(FaultCase {
            name: leak("302 redirect"),
            fault: send(
                b"HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:1/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_vec(),
                After::Close,
            ),
            stream,
            expected: Expected::Error(502, "api_error"),
            within: quick,
        });
        cases.push(FaultCase {
            name: leak("429 with retry-after"),
            fault: send(
                b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\ncontent-type: application/json\r\ncontent-length: 41\r\nconnection: close\r\n\r\n{\"error\":{\"message\":\"slow down, please\"}}".to_vec(),
                After::Close,
            ),
            stream,
            expected: Expected::Error(429, "rate_limit_error"),
            within: quick,
        });
        cases.push(FaultCase {
            name: leak("500 head, then silence"),
            fault: send(
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"err".to_vec(),
                After::Hang,
            ),
            stream,
            // The status is known; only the upstream's message is lost.
            expected: Expected::Error(500, "api_error"),
            within: timed,
        });
    }

    // JSON requests: the body is read whole, then translated.
    cases.extend([
        FaultCase {
            name: "200 with an HTML body (JSON)",
            fault: send(http_response(200, "text/html", html), After::Close),
            stream: false,
            expected: Expected::Error(502, "api_error"),
            within: quick,
        },
        FaultCase {
            name: "200 with truncated JSON (JSON)",
            fault: send(
                http_response(
                    200,
                    "application/json",
                    br#"{"choices":[{"message":{"content":"Hel"#,
                ),
                After::Close,
            ),
            stream: false,
            expected: Expected::Error(502, "api_error"),
            within: quick,
        },
        FaultCase {
            name: "200 with an SSE body to a JSON request (JSON)",
            fault: send(
                http_response(200, "text/event-stream", b"data: garbage\n\n"),
                After::Close,
            ),
            stream: false,
            expected: Expected::Error(502, "api_error"),
            within: quick,
        },
        FaultCase {
            name: "reset mid-body (JSON)",
            fault: send(
                short_body(500, "application/json", br#"{"choices":[{"mes"#),
                After::Reset,
            ),
            stream: false,
            expected: Expected::Error(502, "api_error"),
            within: quick,
        },
        FaultCase {
            name: "closed mid-body, short of content-length (JSON)",
            fault: send(
                short_body(500, "application/json", br#"{"choices":[{"mes"#),
                After::Close,
            ),
            stream: false,
            expected: Expected::Error(502, "api_error"),
            within: quick,
        },
        FaultCase {
            name: "200 head, then silence (JSON)",
            fault: send(
                short_body(500, "application/json", br#"{"choices":"#),
                After::Hang,
            ),
            stream: false,
            expected: Expected::Error(504, "timeout_error"),
            within: timed,
        },
        FaultCase {
            name: "body drips one byte per 1.5 s, past the idle timeout (JSON)",
            fault: Fault::Drip {
                head: short_body(60, "application/json", b""),
                body: vec![b' '; 60],
                every: Duration::from_millis(1500),
                then: After::Close,
            },
            stream: false,
            expected: Expected::Error(504, "timeout_error"),
            within: timed + Duration::from_secs(1),
        },
    ]);

    // Streaming requests: once the 200 head is out, failures become `event: error`.
    let mut started = sse_head();
    started.extend(sse_events(&[role_chunk(), text_chunk("partial")]));
    let minimal = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
    let drip_ok =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n".to_vec();
    cases.extend([
        FaultCase {
            name: "reset mid-stream (stream)",
            fault: send(started.clone(), After::Reset),
            stream: true,
            expected: Expected::StreamError("api_error"),
            within: quick,
        },
        FaultCase {
            name: "closed mid-stream without [DONE] or finish (stream)",
            fault: send(
                [started.clone(), b"0\r\n\r\n".to_vec()].concat(),
                After::Close,
            ),
            stream: true,
            expected: Expected::StreamError("api_error"),
            within: quick,
        },
        FaultCase {
            name: "a stream that never ends: events, then silence (stream)",
            fault: send(started.clone(), After::Hang),
            stream: true,
            expected: Expected::StreamError("timeout_error"),
            within: timed,
        },
        FaultCase {
            name: "SSE garbage: data lines that are not JSON (stream)",
            fault: send(
                [sse_head(), chunked(b"data: {{{garbage\n\ndata: more\n\n"), b"0\r\n\r\n".to_vec()].concat(),
                After::Close,
            ),
            stream: true,
            expected: Expected::StreamError("api_error"),
            within: quick,
        },
        FaultCase {
            name: "10 MB of bytes without a line break (stream)",
            fault: send(
                [
                    sse_head(),
                    chunked(&vec![b'x'; 10 * 1024 * 1024]),
                    b"0\r\n\r\n".to_vec(),
                ]
                .concat(),
                After::Close,
            ),
            stream: true,
            expected: Expected::StreamError("api_error"),
            within: Duration::from_secs(8),
        },
        // A 200 that is not an event stream: a 502 before any SSE byte.
        FaultCase {
            name: "200 with an HTML body (stream)",
            fault: send(http_response(200, "text/html", html), After::Close),
            stream: true,
            expected: Expected::Error(502, "api_error"),
            within: quick,
        },
        FaultCase {
            name: "200 with a truncated JSON body (stream)",
            fault: send(
                http_response(200, "application/json", br#"{"choices":[{"message":{"content":"Hel"#),
                After::Close,
            ),
            stream: true,
            expected: Expected::Error(502, "api_error"),
            within: quick,
        },
        FaultCase {
            name: "200 with a whole JSON completion, stream ignored (stream)",
            fault: send(
                http_response(
                    200,
                    "application/json; charset=utf-8",
                    br#"{"choices":[{"message":{"content":"Hello"},"finish_reason":"stop"}]}"#,
                ),
                After::Close,
            ),
            stream: true,
            expected: Expected::Error(502, "api_error"),
            within: quick,
        },
        // A 200 without any content type is judged by its first bytes: an event stream goes
        // on, anything else is a 502 before any SSE byte.
        FaultCase {
            name: "200 without a content type, a whole JSON completion (stream)",
            fault: send(
                untyped_200(br#"{"choices":[{"message":{"content":"Hello"},"finish_reason":"stop"}]}"#),
                After::Close,
            ),
            stream: true,
            expected: Expected::Error(502, "api_error"),
            within: quick,
        },
        FaultCase {
            name: "200 without a content type, an empty body (stream)",
            fault: send(untyped_200(b""), After::Close),
            stream: true,
            expected: Expected::Error(502, "api_error"),
            within: quick,
        },
        FaultCase {
            name: "200 without a content type, an event stream (stream)",
            fault: send(untyped_200(minimal), After::Close),
            stream: true,
            expected: Expected::StreamOk,
            within: quick,
        },
        FaultCase {
            name: "200 without a content type, an event stream dripped a byte per 25 ms (stream)",
            fault: Fault::Drip {
                head: b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_vec(),
                body: minimal.to_vec(),
                every: Duration::from_millis(25),
                then: After::Close,
            },
            stream: true,
            expected: Expected::StreamOk,
            within: Duration::from_secs(6),
        },
        FaultCase {
            name: "200 without a content type, then silence (stream)",
            fault: send(
                b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n".to_vec(),
                After::Hang,
            ),
            stream: true,
            expected: Expected::Error(504, "timeout_error"),
            within: timed,
        },
        // SSE comments keep a stream alive for the idle timeout, not past STREAM_MAX_SECS.
        FaultCase {
            name: "keep-alive comments only, forever (stream)",
            fault: Fault::Drip {
                head: drip_ok.clone(),
                body: b": keep-alive\n\n".repeat(1_000),
                every: Duration::from_millis(10),
                then: After::Close,
            },
            stream: true,
            expected: Expected::StreamError("timeout_error"),
            within: STREAM_MAX + Duration::from_secs(2),
        },
        FaultCase {
            name: "keep-alive comments past the idle timeout, then the answer (stream)",
            fault: Fault::Drip {
                head: drip_ok.clone(),
                body: [b": keep-alive\n\n".repeat(20), minimal.to_vec()].concat(),
                every: Duration::from_millis(5),
                then: After::Close,
            },
            stream: true,
            expected: Expected::StreamOk,
            within: STREAM_MAX,
        },
        FaultCase {
            name: "an upstream error event mid-stream (stream)",
            fault: send(
                [
                    started.clone(),
                    chunked(b"event: error\ndata: {\"error\":{\"message\":\"Overloaded\",\"type\":\"overloaded_error\"}}\n\n"),
                ]
                .concat(),
                After::Hang,
            ),
            stream: true,
            expected: Expected::StreamError("overloaded_error"),
            within: quick,
        },
        FaultCase {
            name: "drips one byte per 25 ms, within the idle timeout (stream)",
            fault: Fault::Drip {
                head: drip_ok.clone(),
                body: minimal.to_vec(),
                every: Duration::from_millis(25),
                then: After::Close,
            },
            stream: true,
            expected: Expected::StreamOk,
            within: Duration::from_secs(6),
        },
        FaultCase {
            name: "drips one byte per 1.5 s, past the idle timeout (stream)",
            fault: Fault::Drip {
                head: drip_ok,
                body: minimal.to_vec(),
                every: Duration::from_millis(1500),
                then: After::Close,
            },
            stream: true,
            expected: Expected::StreamError("timeout_error"),
            within: timed + Duration::from_secs(1),
        },
    ]);
    cases
}

/// The `closed_port` trick: bind, read the port, drop the listener.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").port()
}

fn messages_request(name: &str, stream: bool) -> Value {
    let mut request = anthropic_request(name);
    request["stream"] = json!(stream);
    request
}

/// Runs one case on its own fault server and proxy; returns the table row's outcome.
async fn run_case(case: FaultCase) -> String {
    let server = FaultServer::start(case.fault.clone()).await;
    let port = match case.fault {
        Fault::Refused => closed_port().await,
        _ => server.addr.port(),
    };
    let base = format!("http://127.0.0.1:{port}/v1");
    let timeout = TIMEOUT.as_secs().to_string();
    let proxy = start(parse_config(&[
        ("OPENAI_BASE_URL", &base),
        ("UPSTREAM_TIMEOUT_SECS", &timeout),
        ("STREAM_MAX_SECS", &STREAM_MAX.as_secs().to_string()),
        ("LOG_LEVEL", "off"),
    ]))
    .await;
    let name = case.name;
    let started = Instant::now();
    let res = tokio::time::timeout(
        case.within + Duration::from_secs(5),
        client().request(build(
            Method::POST,
            &proxy.url("/v1/messages"),
            &[("content-type", "application/json")],
            messages_request(name, case.stream).to_string(),
        )),
    )
    .await
    .unwrap_or_else(|_| panic!("{name}: no response head"))
    .unwrap_or_else(|err| panic!("{name}: {err}"));
    let status = res.status();
    let headers = res.headers().clone();
    let body = tokio::time::timeout(
        case.within + Duration::from_secs(5),
        res.into_body().collect(),
    )
    .await
    .unwrap_or_else(|_| panic!("{name}: the body never ended"))
    .unwrap_or_else(|err| panic!("{name}: the body failed: {err}"))
    .to_bytes();
    let elapsed = started.elapsed();
    assert!(elapsed <= case.within, "{name}: took {elapsed:?}");
    let text = String::from_utf8_lossy(&body).into_owned();
    let outcome = match case.expected {
        Expected::Error(want, kind) => {
            assert_eq!(status, want, "{name}: {text}");
            let json: Value = serde_json::from_slice(&body)
                .unwrap_or_else(|err| panic!("{name}: not JSON ({err}): {text}"));
            assert_eq!(json["type"], "error", "{name}: {json}");
            assert_eq!(json["error"]["type"], kind, "{name}: {json}");
            assert!(headers.contains_key("request-id"), "{name}");
            if want == 429 {
                assert_eq!(headers["retry-after"], "7", "{name}");
                assert_eq!(json["error"]["message"], "slow down, please");
            }
            let message: String = json["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .take(60)
                .collect();
            format!("{want} {kind}: {message}")
        }
        Expected::StreamError(kind) => {
            assert_eq!(status, 200, "{name}: {text}");
            assert_eq!(headers["content-type"], "text/event-stream", "{name}");
            let events = parse_sse(&text);
            let (last, data) = events.last().unwrap_or_else(|| panic!("{name}: no events"));
            assert_eq!(last, "error", "{name}: {text}");
            let error: Value = serde_json::from_str(data).expect("error JSON");
            assert_eq!(error["error"]["type"], kind, "{name}: {error}");
            assert!(
                !events.iter().any(|(event, _)| event == "message_stop"),
                "{name}: a fake message_stop: {text}"
            );
            assert_eq!(
                events.iter().filter(|(event, _)| event == "error").count(),
                1,
                "{name}"
            );
            format!("200, {} events, then event: error {kind}", events.len() - 1)
        }
        Expected::StreamOk => {
            assert_eq!(status, 200, "{name}: {text}");
            let events = parse_sse(&text);
            assert_eq!(
                events.last().map(|(event, _)| event.as_str()),
                Some("message_stop"),
                "{name}: {text}"
            );
            assert!(text.contains(r#""text":"hi""#), "{name}: {text}");
            format!("200, complete stream of {} events", events.len())
        }
    };

    // No connection to the upstream stays open: the proxy closed or finished every one.
    if !matches!(case.fault, Fault::Refused) {
        wait_until(&format!("{name}: upstream connections to close"), || {
            server.open() == 0
        })
        .await;
    }
    // The proxy still serves, on the same upstream, both kinds of request.
    server.set(Fault::Good);
    for stream in [false, true] {
        if matches!(case.fault, Fault::Refused) {
            break;
        }
        let answer = post_json(
            &proxy.url("/v1/messages"),
            &[],
            // Different prompts: a cached answer serves both modes, and both must go upstream.
            &messages_request(if stream { "after, streamed" } else { "after" }, stream),
        )
        .await;
        assert_eq!(answer.status, 200, "{name}: after: {}", answer.text());
        assert!(answer.text().contains("fine"), "{name}");
    }
    if !matches!(case.fault, Fault::Refused) {
        wait_until(&format!("{name}: connections closed at the end"), || {
            server.open() == 0
        })
        .await;
        assert!(server.accepted.load(Ordering::SeqCst) >= 3);
    }
    assert!(proxy.is_running(), "{name}");
    proxy.stop().await;
    format!("{outcome} ({} ms)", elapsed.as_millis())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_upstream_fault_maps_to_an_anthropic_error_without_hangs_or_leaks() {
    let cases = fault_cases();
    let names: Vec<&str> = cases.iter().map(|c| c.name).collect();
    let started = Instant::now();
    let tasks: Vec<_> = cases
        .into_iter()
        .map(|c| tokio::spawn(run_case(c)))
        .collect();
    let mut table = String::from("| upstream fault | outcome |\n| --- | --- |\n");
    for (name, task) in names.iter().zip(tasks) {
        let outcome = match task.await {
            Ok(outcome) => outcome,
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        };
        let _ = writeln!(table, "| {name} | {outcome} |");
    }
    println!(
        "{} fault cases in {:?}\n{table}",
        names.len(),
        started.elapsed()
    );
}

/// Tasks: after a burst of faults the runtime has as many live tasks as before (no task is
/// left waiting on a dead upstream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_leave_no_task_behind() {
    let server = FaultServer::start(Fault::Good).await;
    let base = format!("http://{}/v1", server.addr);
    let proxy = start(parse_config(&[
        ("OPENAI_BASE_URL", &base),
        ("UPSTREAM_TIMEOUT_SECS", "1"),
        ("LOG_LEVEL", "off"),
    ]))
    .await;
    let metrics = tokio::runtime::Handle::current().metrics();
    // Warm up: one good exchange of each kind.
    for stream in [false, true] {
        let answer = post_json(
            &proxy.url("/v1/messages"),
            &[],
            &messages_request("warm", stream),
        )
        .await;
        assert_eq!(answer.status, 200);
    }
    wait_until("warm-up connections closed", || server.open() == 0).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let baseline = metrics.num_alive_tasks();

    let mut started = sse_head();
    started.extend(sse_events(&[role_chunk(), text_chunk("partial")]));
    for fault in [
        Fault::ResetBeforeHeaders,
        Fault::Send {
            bytes: started.clone(),
            then: After::Hang,
        },
        Fault::Send {
            bytes: started,
            then: After::Reset,
        },
        Fault::Send {
            bytes: short_body(500, "application/json", b"{"),
            then: After::Hang,
        },
    ] {
        server.set(fault);
        let requests = (0..8).map(|i| {
            let url = proxy.url("/v1/messages");
            async move {
                let answer = post_json(
                    &url,
                    &[],
                    &messages_request(&format!("burst {i}"), i % 2 == 0),
                )
                .await;
                assert!(
                    answer.status.is_server_error() || answer.text().contains("event: error"),
                    "{}",
                    answer.text()
                );
            }
        });
        futures_util::future::join_all(requests).await;
    }
    wait_until("upstream connections closed", || server.open() == 0).await;
    wait_until("tasks back to the baseline", || {
        metrics.num_alive_tasks() <= baseline
    })
    .await;
    let addr: SocketAddr = proxy.addr;
    proxy.stop().await;
    assert!(TcpStream::connect(addr).await.is_err());
}

// ---------------------------------------------------------------------------------------------
// The translation layer alone: a non-streamed upstream body that stalls after the head
// ---------------------------------------------------------------------------------------------

type LayerRequest = http::Request<http_body_util::Either<Full<Bytes>, Full<Bytes>>>;

/// An upstream whose response head arrives at once and whose body never does.
async fn stalled_body(
    status: u16,
) -> Result<
    http::Response<StreamBody<futures_util::stream::Pending<Result<Frame<Bytes>, BoxError>>>>,
    std::convert::Infallible,
> {
    let mut res = http::Response::new(StreamBody::new(futures_util::stream::pending()));
    *res.status_mut() = http::StatusCode::from_u16(status).expect("status");
    Ok(res)
}

#[tokio::test(start_paused = true)]
async fn the_layer_bounds_a_stalled_response_body_by_the_idle_timeout() {
    for (status, want, kind) in [(200, 504, "timeout_error"), (500, 500, "api_error")] {
        let service = ServiceBuilder::new()
            .layer(AnthropicToOpenAiLayer::new().stream_idle_timeout(Duration::from_secs(30)))
            .service(tower::service_fn(move |_: LayerRequest| {
                stalled_body(status)
            }));
        let request = http::Request::post("/v1/messages")
            .body(Full::new(Bytes::from(
                anthropic_request("stall").to_string(),
            )))
            .expect("request");
        let started = tokio::time::Instant::now();
        let res = tokio::time::timeout(Duration::from_secs(120), service.oneshot(request))
            .await
            .expect("bounded by the idle timeout")
            .expect("infallible");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
            "{waited:?}"
        );
        assert_eq!(res.status(), want);
        let body = res.into_body().collect().await.expect("body").to_bytes();
        let body: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(body["error"]["type"], kind, "{body}");
    }
}

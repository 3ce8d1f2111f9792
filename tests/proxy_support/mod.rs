//! Running the example proxy for the hardening tests (hostile requests, upstream faults,
//! security, load): start `proxy::serve` on `127.0.0.1:0` in front of the mock upstream, and
//! talk to it either with the hyper client of `common` or over a raw TCP socket, for what a
//! well-behaved client cannot send (bad framing, slow bodies, vanishing clients).
//!
//! The including test crate declares `mod proxy` (the example, by `#[path]`) and `mod common`.
#![allow(dead_code)] // Not every test file uses every helper.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::common::{Answer, MockUpstream, WAIT};
use crate::proxy;

/// The upstream key the proxy is configured with (must never leak).
pub const UPSTREAM_KEY: &str = "sk-upstream-harden-secret-8080";

/// A proxy served on `127.0.0.1:0`; aborted when dropped, or stopped with [`Running::stop`].
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tower_llm_bridge::BoxError>>>,
}

impl Running {
    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends the shutdown signal and waits (bounded) for `serve` to return.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("running");
        tokio::time::timeout(WAIT, task)
            .await
            .expect("serve did not return after shutdown")
            .expect("serve task panicked")
            .expect("serve failed");
    }

    /// Whether the server task is still running (it never panicked or returned).
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|task| !task.is_finished())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Parses a proxy configuration from environment pairs.
pub fn parse_config(env: &[(&str, &str)]) -> proxy::Config {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    match proxy::Config::from_sources(std::iter::empty(), |name| env.get(name).cloned()) {
        Ok(proxy::Command::Run(config)) => *config,
        Ok(proxy::Command::Help(_)) => panic!("help"),
        Err(err) => panic!("invalid config: {err}"),
    }
}

/// The configuration for a proxy in front of `mock`, plus `extra` variables (later wins).
pub fn config_for(mock: &MockUpstream, extra: &[(&str, &str)]) -> proxy::Config {
    let base = mock.base_url();
    let mut env = vec![
        ("OPENAI_BASE_URL", base.as_str()),
        ("OPENAI_API_KEY", UPSTREAM_KEY),
        ("UPSTREAM_TIMEOUT_SECS", "5"),
        ("LOG_LEVEL", "warn"),
    ];
    env.extend_from_slice(extra);
    parse_config(&env)
}

/// Serves `config` on a fresh `127.0.0.1:0` listener.
pub async fn start(config: proxy::Config) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
    let addr = listener.local_addr().expect("proxy addr");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(proxy::serve(listener, config, async move {
        let _ = rx.await;
    }));
    Running {
        addr,
        shutdown: Some(tx),
        task: Some(task),
    }
}

/// A proxy in front of `mock` with `extra` settings.
pub async fn start_for(mock: &MockUpstream, extra: &[(&str, &str)]) -> Running {
    start(config_for(mock, extra)).await
}

/// An Anthropic request, unique by content.
pub fn anthropic_request(content: &str) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 64,
           "messages": [{"role": "user", "content": content}]})
}

/// Asserts an Anthropic error answer: status, type, a message, JSON content type, request id.
pub fn assert_anthropic_error(answer: &Answer, status: u16, kind: &str) {
    assert_eq!(answer.status, status, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], kind, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(body.as_object().map(|o| o.len()), Some(2), "{body}");
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert!(answer.header("request-id").is_some());
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 over TCP
// ---------------------------------------------------------------------------------------------

/// A response read off a raw socket.
#[derive(Debug)]
pub struct RawResponse {
    /// The status code, if a status line arrived.
    pub status: Option<u16>,
    /// Header lines, lowercased names.
    pub headers: Vec<(String, String)>,
    /// The body (by content-length, or whatever arrived before the close).
    pub body: Vec<u8>,
    /// Whether the server closed the connection (EOF or reset) within the wait.
    pub closed: bool,
    /// How long from the end of the request head to the close (or the end of the wait).
    pub elapsed: Duration,
}

impl RawResponse {
    /// A header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics with the text otherwise).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!(
                "not JSON ({err}): {:?} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// As an [`Answer`], for the shared assertions.
    pub fn answer(&self) -> Answer {
        let mut headers = http::HeaderMap::new();
        for (name, value) in &self.headers {
            if let (Ok(name), Ok(value)) = (
                http::HeaderName::try_from(name.as_str()),
                http::HeaderValue::try_from(value.as_str()),
            ) {
                headers.append(name, value);
            }
        }
        Answer {
            status: http::StatusCode::from_u16(self.status.expect("a status line"))
                .expect("status"),
            headers,
            body: bytes::Bytes::from(self.body.clone()),
        }
    }
}

/// How the request body is written after the head.
pub enum BodyPlan {
    /// All at once.
    Bytes(Vec<u8>),
    /// `total` bytes of `fill` in chunks, as fast as the server reads (errors ignored: the
    /// server may answer and close before the end).
    Repeat {
        /// The byte to send.
        fill: u8,
        /// How many bytes.
        total: usize,
    },
    /// Bytes one at a time with a pause between them.
    Drip {
        /// The bytes to send.
        bytes: Vec<u8>,
        /// The pause before each byte.
        every: Duration,
    },
    /// Some bytes, then the client closes its socket without reading.
    Vanish(Vec<u8>),
    /// `chunk` bytes at a time with a pause before each chunk: a steady rate.
    Paced {
        /// The bytes to send.
        bytes: Vec<u8>,
        /// How many per write.
        chunk: usize,
        /// The pause before each write.
        every: Duration,
    },
}

/// Writes `head` then the body per `plan` while reading the response, until the response is
/// complete (by content-length), the server closes, or `wait` passes.
pub async fn raw_exchange(
    addr: SocketAddr,
    head: &str,
    plan: BodyPlan,
    wait: Duration,
) -> RawResponse {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(head.as_bytes()).await.expect("write head");
    let started = Instant::now();
    let vanish = matches!(plan, BodyPlan::Vanish(_));
    let writing = tokio::spawn(async move {
        match plan {
            BodyPlan::Bytes(bytes) => {
                let _ = writer.write_all(&bytes).await;
            }
            BodyPlan::Repeat { fill, total } => {
                let chunk = vec![fill; 64 * 1024];
                let mut sent = 0;
                while sent < total {
                    let n = chunk.len().min(total - sent);
                    if writer.write_all(&chunk[..n]).await.is_err() {
                        break;
                    }
                    sent += n;
                }
            }
            BodyPlan::Drip { bytes, every } => {
                for byte in bytes {
                    tokio::time::sleep(every).await;
                    if writer.write_all(&[byte]).await.is_err() {
                        break;
                    }
                }
            }
            BodyPlan::Paced {
                bytes,
                chunk,
                every,
            } => {
                // Paced against the clock, so slow writes do not lower the rate.
                let start = tokio::time::Instant::now();
                for (i, piece) in bytes.chunks(chunk.max(1)).enumerate() {
                    let due = start + every * u32::try_from(i + 1).unwrap_or(u32::MAX);
                    tokio::time::sleep_until(due).await;
                    if writer.write_all(piece).await.is_err() {
                        break;
                    }
                }
            }
            BodyPlan::Vanish(bytes) => {
                let _ = writer.write_all(&bytes).await;
                drop(writer);
                return;
            }
        }
        // Keep the write half open until the reader is done.
        std::future::pending::<()>().await;
    });
    if vanish {
        let _ = writing.await;
        // Dropping the read half too closes the socket: the client is gone.
        drop(reader);
        return RawResponse {
            status: None,
            headers: Vec::new(),
            body: Vec::new(),
            closed: true,
            elapsed: started.elapsed(),
        };
    }
    let mut received = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut closed = false;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(response) = parse_response(&received)
            && response.complete
        {
            break;
        }
        match tokio::time::timeout_at(deadline, reader.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    // A complete response on a connection the server means to close: see it close.
    if !closed
        && parse_response(&received).is_some_and(|r| r.connection_close)
        && let Ok(Ok(0) | Err(_)) = tokio::time::timeout_at(deadline, reader.read(&mut buf)).await
    {
        closed = true;
    }
    let elapsed = started.elapsed();
    writing.abort();
    let parsed = parse_response(&received);
    RawResponse {
        status: parsed.as_ref().map(|r| r.status),
        headers: parsed
            .as_ref()
            .map(|r| r.headers.clone())
            .unwrap_or_default(),
        body: parsed.map(|r| r.body).unwrap_or_default(),
        closed,
        elapsed,
    }
}

struct Parsed {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    complete: bool,
    connection_close: bool,
}

fn parse_response(bytes: &[u8]) -> Option<Parsed> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&bytes[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = bytes[end + 4..].to_vec();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let connection_close = headers
        .iter()
        .any(|(n, v)| n == "connection" && v.eq_ignore_ascii_case("close"));
    Some(Parsed {
        status,
        complete: length.is_some_and(|length| body.len() >= length),
        body: match length {
            Some(length) if body.len() > length => body[..length].to_vec(),
            _ => body,
        },
        headers,
        connection_close,
    })
}

/// A request head for `POST path` with `headers` (each `name: value`), ending in the blank line.
pub fn post_head(path: &str, headers: &[&str]) -> String {
    let mut head = format!("POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n");
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head
}

/// Reads `/proc/self/status` `name:` in kB (Linux), e.g. `VmHWM` or `VmRSS`.
pub fn proc_status_kb(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// How many file descriptors this process has open (Linux).
pub fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|dir| dir.count())
}

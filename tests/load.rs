//! A bounded load test of the example proxy in front of a fast local upstream (both on
//! `127.0.0.1`, in this process): a mix of JSON requests, streams and repeated requests
//! (cache hits when the cache layer is in the stack), then many concurrent slow streams.
//! Zero errors are allowed; peak RSS and open file descriptors are sampled and bounded, and
//! the descriptors return to the baseline once the client and the proxy are gone.
//!
//! The CI run is small (5,000 requests, 256 concurrent, 200 slow streams). The full run:
//!
//! ```text
//! LOAD_FULL=1 cargo test --release --all-features --test load -- --nocapture
//! ```
//!
//! (100,000 requests, 256 concurrent, 1,000 slow streams; figures are printed.)

#[path = "../examples/proxy/main.rs"]
#[allow(dead_code, unused_imports)] // `main`, a few helpers and re-exports are for the binary only.
mod proxy;

mod common;
mod proxy_support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{ClientBody, body, chat_completion_json, text_stream, usage};
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy_support::*;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

struct Settings {
    requests: usize,
    concurrency: usize,
    slow_streams: usize,
    budget: Duration,
}

fn settings() -> Settings {
    if std::env::var("LOAD_FULL").is_ok_and(|v| v == "1") {
        Settings {
            requests: 100_000,
            concurrency: 256,
            slow_streams: 1_000,
            budget: Duration::from_secs(600),
        }
    } else {
        Settings {
            requests: 5_000,
            concurrency: 256,
            slow_streams: 200,
            budget: Duration::from_secs(90),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A fast upstream that records nothing (so it does not grow with the request count)
// ---------------------------------------------------------------------------------------------

type UpBody = UnsyncBoxBody<Bytes, common::BoxError>;

struct Upstream {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let calls = Arc::new(AtomicUsize::new(0));
    let completion = Bytes::from(chat_completion_json("load ok", "stop", usage(12, 2)).to_string());
    let stream: Bytes = text_stream(&["load", " stream"], "stop", (12, 2))
        .iter()
        .map(|chunk| format!("data: {chunk}\n\n"))
        .chain(["data: [DONE]\n\n".to_owned()])
        .collect::<String>()
        .into();
    let slow: Vec<Bytes> = text_stream(&["slow "; 20], "stop", (12, 20))
        .iter()
        .map(|chunk| Bytes::from(format!("data: {chunk}\n\n")))
        .chain([Bytes::from_static(b"data: [DONE]\n\n")])
        .collect();
    let task = tokio::spawn({
        let calls = calls.clone();
        async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                while connections.try_join_next().is_some() {}
                let _ = socket.set_nodelay(true);
                let (calls, completion, stream, slow) = (
                    calls.clone(),
                    completion.clone(),
                    stream.clone(),
                    slow.clone(),
                );
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (calls, completion, stream, slow) = (
                            calls.clone(),
                            completion.clone(),
                            stream.clone(),
                            slow.clone(),
                        );
                        async move {
                            let body = req.into_body().collect().await.map(|b| b.to_bytes());
                            let body = body.unwrap_or_default();
                            calls.fetch_add(1, Ordering::Relaxed);
                            let streams = memchr_contains(&body, b"\"stream\":true");
                            let res: Response<UpBody> = if !streams {
                                json_response(completion)
                            } else if memchr_contains(&body, b"slow stream") {
                                sse_response(slow_body(slow))
                            } else {
                                sse_response(
                                    Full::new(stream).map_err(|n| match n {}).boxed_unsync(),
                                )
                            };
                            Ok::<_, Infallible>(res)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        }
    });
    Upstream { addr, calls, task }
}

fn memchr_contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn json_response(body: Bytes) -> Response<UpBody> {
    let mut res = Response::new(Full::new(body).map_err(|n| match n {}).boxed_unsync());
    res.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    res
}

fn sse_response(body: UpBody) -> Response<UpBody> {
    let mut res = Response::new(body);
    res.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("text/event-stream"),
    );
    res
}

/// The slow stream: one event every 50 ms.
fn slow_body(events: Vec<Bytes>) -> UpBody {
    let stream = futures_util::stream::unfold(events.into_iter(), |mut events| async move {
        let event = events.next()?;
        tokio::time::sleep(Duration::from_millis(50)).await;
        Some((Ok::<_, common::BoxError>(Frame::data(event)), events))
    });
    StreamBody::new(stream).boxed_unsync()
}

// ---------------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------------

/// Samples RSS and open descriptors every 20 ms until stopped; keeps the maxima.
struct Sampler {
    peak_rss_kb: Arc<AtomicU64>,
    peak_fds: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start() -> Self {
        let peak_rss_kb = Arc::new(AtomicU64::new(0));
        let peak_fds = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (rss, fds, stop) = (peak_rss_kb.clone(), peak_fds.clone(), stop.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    rss.fetch_max(proc_status_kb("VmRSS").unwrap_or(0), Ordering::Relaxed);
                    fds.fetch_max(open_fds().unwrap_or(0), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        Self {
            peak_rss_kb,
            peak_fds,
            stop,
            task,
        }
    }

    async fn finish(self) -> (u64, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        (
            self.peak_rss_kb.load(Ordering::Relaxed),
            self.peak_fds.load(Ordering::Relaxed),
        )
    }
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at]
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Json,
    Stream,
    Repeat,
    Slow,
}

fn request_body(kind: Kind, i: usize) -> String {
    let (content, stream) = match kind {
        Kind::Json => (format!("load json {i}"), false),
        Kind::Stream => (format!("load stream {i}"), true),
        // 16 bodies repeated over and over: cache hits once the cache layer is in the stack.
        Kind::Repeat => (format!("load repeat {}", i % 16), false),
        Kind::Slow => (format!("slow stream {i}"), true),
    };
    json!({"model": "claude-haiku-4-5", "max_tokens": 32, "stream": stream,
           "messages": [{"role": "user", "content": content}]})
    .to_string()
}

/// Outcome of one request: `(latency µs, cache hit)`, or the error text.
async fn one_request(
    client: Client<hyper_util::client::legacy::connect::HttpConnector, ClientBody>,
    url: String,
    kind: Kind,
    i: usize,
) -> Result<(u32, bool), String> {
    let started = Instant::now();
    let req = Request::post(url)
        .header("content-type", "application/json")
        .body(body(request_body(kind, i)))
        .map_err(|e| e.to_string())?;
    let res = client
        .request(req)
        .await
        .map_err(|e| format!("{kind:?}: {e}"))?;
    let status = res.status();
    let hit = res
        .headers()
        .get("x-cache")
        .is_some_and(|v| v.as_bytes() == b"HIT");
    let bytes = res
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{kind:?} body: {e}"))?
        .to_bytes();
    if status != 200 {
        return Err(format!(
            "{kind:?}: {status}: {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    let ok = match kind {
        Kind::Json | Kind::Repeat => memchr_contains(&bytes, br#""type":"message""#),
        Kind::Stream | Kind::Slow => {
            bytes.ends_with(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
        }
    };
    if !ok {
        return Err(format!(
            "{kind:?}: bad body {}",
            String::from_utf8_lossy(&bytes)
        ));
    }
    Ok((started.elapsed().as_micros() as u32, hit))
}

/// Runs `n` requests of `kinds(i)` with at most `concurrency` in flight.
async fn run(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, ClientBody>,
    url: &str,
    n: usize,
    concurrency: usize,
    kinds: impl Fn(usize) -> Kind,
) -> (Vec<u32>, usize, Vec<String>) {
    let mut in_flight = JoinSet::new();
    let mut latencies = Vec::with_capacity(n);
    let mut hits = 0;
    let mut errors = Vec::new();
    let mut next = 0;
    loop {
        while next < n && in_flight.len() < concurrency {
            in_flight.spawn(one_request(
                client.clone(),
                url.to_owned(),
                kinds(next),
                next,
            ));
            next += 1;
        }
        let Some(done) = in_flight.join_next().await else {
            break;
        };
        match done.expect("request task") {
            Ok((latency, hit)) => {
                latencies.push(latency);
                hits += usize::from(hit);
            }
            Err(err) => errors.push(err),
        }
    }
    latencies.sort_unstable();
    (latencies, hits, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_mix_then_slow_streams_without_errors_and_bounded_resources() {
    let settings = settings();
    let upstream = start_upstream().await;
    let base = format!("http://{}/v1", upstream.addr);
    let fds_before = open_fds().expect("/proc/self/fd");
    let proxy = start(parse_config(&[
        ("OPENAI_BASE_URL", &base),
        ("UPSTREAM_TIMEOUT_SECS", "30"),
        ("LOG_LEVEL", "off"),
    ]))
    .await;
    let url = proxy.url("/v1/messages");
    let client: Client<_, ClientBody> = Client::builder(TokioExecutor::new()).build_http();

    // Phase 1: the mix. 60 % unique JSON, 20 % streams, 20 % repeated JSON.
    let rss_before = proc_status_kb("VmRSS").unwrap_or(0);
    let sampler = Sampler::start();
    let started = Instant::now();
    let (latencies, hits, errors) = tokio::time::timeout(
        settings.budget,
        run(
            &client,
            &url,
            settings.requests,
            settings.concurrency,
            |i| match i % 5 {
                0..=2 => Kind::Json,
                3 => Kind::Stream,
                _ => Kind::Repeat,
            },
        ),
    )
    .await
    .expect("the load run finished within its budget");
    let elapsed = started.elapsed();
    let (peak_rss, peak_fds) = sampler.finish().await;
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );
    assert_eq!(latencies.len(), settings.requests);
    let upstream_calls = upstream.calls.load(Ordering::Relaxed);
    println!(
        "load mix: {} requests ({} concurrent) in {:.2} s = {:.0} req/s; latency p50 {} µs, p99 {} µs, max {} µs; \
         cache hits {hits}, upstream calls {upstream_calls}; RSS {} → peak {} MiB; open fds {fds_before} → peak {peak_fds}",
        settings.requests,
        settings.concurrency,
        elapsed.as_secs_f64(),
        settings.requests as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0),
        rss_before / 1024,
        peak_rss / 1024,
    );
    assert_eq!(
        upstream_calls + hits,
        settings.requests,
        "every answer came from the upstream or the cache, once"
    );
    // 16 distinct repeated bodies: all but their first asks are hits (concurrent first asks
    // are coalesced into one upstream call).
    let repeats = settings.requests / 5;
    assert!(
        hits + 16 >= repeats,
        "{hits} cache hits of {repeats} repeats"
    );
    // Each in-flight request holds 4 descriptors in this process (client socket, accepted
    // socket, upstream socket, upstream's accepted socket); both connection pools may keep a
    // few more connections than requests in flight (a connect that lost the race to an idle
    // connection is pooled too), hence the factor 8 rather than 4.
    assert!(
        peak_fds <= fds_before + 8 * settings.concurrency + 64,
        "{peak_fds} descriptors open at the peak"
    );
    assert!(peak_rss < 1024 * 1024, "peak RSS {} MiB", peak_rss / 1024);

    // Phase 2: many slow streams at once (each ~1 s: 20 events 50 ms apart).
    let rss_before_slow = proc_status_kb("VmRSS").unwrap_or(0);
    let sampler = Sampler::start();
    let started = Instant::now();
    let (latencies, _, errors) = tokio::time::timeout(
        settings.budget,
        run(
            &client,
            &url,
            settings.slow_streams,
            settings.slow_streams,
            |_| Kind::Slow,
        ),
    )
    .await
    .expect("the slow streams finished within the budget");
    let elapsed = started.elapsed();
    let (peak_rss_slow, peak_fds_slow) = sampler.finish().await;
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(3)]
    );
    let per_stream_kb =
        peak_rss_slow.saturating_sub(rss_before_slow) as f64 / settings.slow_streams as f64;
    println!(
        "slow streams: {} concurrent, all complete in {:.2} s (p50 {} ms, max {} ms); RSS {} → peak {} MiB \
         (~{per_stream_kb:.0} KiB per open stream); open fds peak {peak_fds_slow}; process VmHWM {} MiB",
        settings.slow_streams,
        elapsed.as_secs_f64(),
        percentile(&latencies, 0.5) / 1000,
        percentile(&latencies, 1.0) / 1000,
        rss_before_slow / 1024,
        peak_rss_slow / 1024,
        proc_status_kb("VmHWM").unwrap_or(0) / 1024,
    );
    assert!(
        percentile(&latencies, 1.0) < 20_000_000,
        "streams were held up: max {} ms",
        percentile(&latencies, 1.0) / 1000
    );
    assert!(
        peak_rss_slow < 1024 * 1024,
        "peak RSS {} MiB",
        peak_rss_slow / 1024
    );

    // Everything closes: client gone, proxy stopped, descriptors back to the baseline.
    drop(client);
    proxy.stop().await;
    common::wait_until("descriptors back to the baseline", || {
        open_fds().is_some_and(|fds| fds <= fds_before + 8)
    })
    .await;
}

/// `benches/load/run.sh` prints issue 16's goals table from its results through
/// `load.py table`: its arithmetic (medians of the rounds, ours/baseline ratios, the added
/// latency, met/MISSED, errors) is checked on made-up figures by `load.py selftest`.
#[test]
fn load_script_table_arithmetic() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/load/load.py");
    let output = match std::process::Command::new("python3")
        .arg(script)
        .arg("selftest")
        .output()
    {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("python3 is not installed: the load script's table is not checked");
            return;
        }
        Err(err) => panic!("cannot run python3: {err}"),
    };
    assert!(
        output.status.success(),
        "load.py selftest failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "load.py selftest: ok"
    );
}

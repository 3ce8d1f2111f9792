//! Security properties of the example proxy: keys never reach the logs (success, errors,
//! streams, failures mid-stream), client credentials and hop-by-hop headers never reach the
//! upstream, proxy keys are compared in constant time, the default bind is loopback, and no
//! client can choose the upstream (absolute-form targets, Host and forwarding headers,
//! HTTP/2 authorities).

#[path = "../examples/proxy/main.rs"]
#[allow(dead_code, unused_imports)] // `main`, a few helpers and re-exports are for the binary only.
mod proxy;

mod common;
mod proxy_support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use http::Method;
use http_body_util::BodyExt;
use proxy_support::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PROXY_KEY: &str = "proxy-key-security-secret-3141";
const WRONG_KEY: &str = "wrong-key-never-logged-2718";
const QUERY_SECRET: &str = "query-secret-never-logged-1618";

// ---------------------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn streaming(mut request: Value) -> Value {
    request["stream"] = json!(true);
    request
}

// A current-thread runtime: every task logs on this thread, where the subscriber is set.
#[tokio::test(flavor = "current_thread")]
async fn keys_never_appear_in_logs_on_any_path() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .finish();
    // With a single registered dispatcher, tracing takes a callsite's interest from whichever
    // thread hits it first (another test's, without a subscriber, would disable it here too);
    // with two live dispatchers it asks every registered one.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let _guard = tracing::subscriber::set_default(subscriber);

    let mock = MockUpstream::start().await;
    let proxy = start_for(
        &mock,
        &[
            ("PROXY_API_KEYS", PROXY_KEY),
            ("UPSTREAM_TIMEOUT_SECS", "1"),
            ("LOG_LEVEL", "trace"),
        ],
    )
    .await;
    let bearer = format!("Bearer {PROXY_KEY}");
    let messages = proxy.url(&format!("/v1/messages?key={QUERY_SECRET}"));
    let auth: &[(&str, &str)] = &[("x-api-key", PROXY_KEY)];

    // Success: JSON and stream, both routes.
    let ok = post_json(&messages, auth, &anthropic_request("log json")).await;
    assert_eq!(ok.status, 200);
    let hit = post_json(&messages, auth, &anthropic_request("log json")).await;
    assert_eq!(
        hit.header("x-cache"),
        Some("HIT"),
        "the cache path is logged too"
    );
    mock.push(Reply::sse(text_stream(&["log", " stream"], "stop", (3, 2))));
    let ok = post_json(
        &messages,
        &[("authorization", &bearer)],
        &streaming(anthropic_request("log stream")),
    )
    .await;
    assert!(ok.text().contains("message_stop"), "{}", ok.text());
    let ok = post_json(
        &proxy.url("/v1/chat/completions"),
        auth,
        &json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "oai"}]}),
    )
    .await;
    assert_eq!(ok.status, 200);

    // Denied, malformed, too slow, upstream errors, mid-stream failure, upstream timeout.
    let denied = post_json(
        &messages,
        &[("x-api-key", WRONG_KEY)],
        &anthropic_request("x"),
    )
    .await;
    assert_eq!(denied.status, 401);
    let denied = post_json(
        &messages,
        &[("authorization", &format!("Bearer {WRONG_KEY}"))],
        &anthropic_request("x"),
    )
    .await;
    assert_eq!(denied.status, 401);
    let bad = send(build(
        Method::POST,
        &messages,
        &[
            ("x-api-key", PROXY_KEY),
            ("content-type", "application/json"),
        ],
        "{not json",
    ))
    .await;
    assert_eq!(bad.status, 400);
    mock.push(Reply::error(401, "Incorrect API key provided"));
    let failed = post_json(&messages, auth, &anthropic_request("log 401")).await;
    assert_eq!(failed.status, 401);
    mock.push(Reply::error(500, "upstream exploded"));
    let failed = post_json(&messages, auth, &anthropic_request("log 500")).await;
    assert_eq!(failed.status, 500);
    mock.push(
        Reply::sse(text_stream(&["a", "b", "c"], "stop", (1, 3)))
            .delay_each(Duration::from_millis(10))
            .cut_after(2),
    );
    let cut = post_json(&messages, auth, &streaming(anthropic_request("log cut"))).await;
    assert!(cut.text().contains("event: error"), "{}", cut.text());
    mock.push(Reply::Hang);
    let hung = post_json(&messages, auth, &anthropic_request("log hang")).await;
    assert_eq!(hung.status, 504);
    proxy.stop().await;

    // An upstream that cannot be reached at all.
    let refused = start(parse_config(&[
        ("OPENAI_BASE_URL", "http://127.0.0.1:9/v1"),
        ("OPENAI_API_KEY", UPSTREAM_KEY),
        ("PROXY_API_KEYS", PROXY_KEY),
        ("LOG_LEVEL", "trace"),
    ]))
    .await;
    let failed = post_json(
        &refused.url("/v1/messages"),
        auth,
        &anthropic_request("refused"),
    )
    .await;
    assert_eq!(failed.status, 502);
    refused.stop().await;

    let logs = String::from_utf8(captured.0.lock().expect("log buffer").clone()).expect("utf-8");
    for secret in [PROXY_KEY, UPSTREAM_KEY, WRONG_KEY, QUERY_SECRET] {
        assert!(
            !logs.contains(secret),
            "{secret} leaked into the logs:\n{logs}"
        );
    }
    // The key's tail (what a careless redaction keeps) is not there either.
    for secret in [PROXY_KEY, UPSTREAM_KEY, WRONG_KEY] {
        assert!(!logs.contains(&secret[secret.len() - 8..]), "{secret}");
    }
    // Not vacuous: every kind of event was logged.
    for expected in [
        "status=200",
        "status=401",
        "status=400",
        "status=500",
        "status=504",
        "status=502",
        "ending a translated stream with an error event",
        "upstream timed out",
        "upstream request failed",
    ] {
        assert!(logs.contains(expected), "{expected} missing from:\n{logs}");
    }
}

// ---------------------------------------------------------------------------------------------
// What reaches the upstream
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn client_credentials_and_hop_by_hop_headers_never_reach_the_upstream() {
    let mock = MockUpstream::start().await;
    for keys in [Some(PROXY_KEY), None] {
        let mut extra = vec![];
        if let Some(keys) = keys {
            extra.push(("PROXY_API_KEYS", keys));
        }
        let proxy = start_for(&mock, &extra).await;
        let bearer = format!("Bearer {PROXY_KEY}");
        for stream in [false, true] {
            if stream {
                mock.push(Reply::sse(text_stream(&["ok"], "stop", (1, 1))));
            }
            let mut request = anthropic_request(&format!("headers {} {stream}", keys.is_some()));
            request["stream"] = json!(stream);
            let answer = post_json(
                &proxy.url("/v1/messages"),
                &[
                    ("x-api-key", PROXY_KEY),
                    ("authorization", &bearer),
                    ("proxy-authorization", "Basic c2VjcmV0"),
                    ("cookie", "session=secret"),
                    ("anthropic-version", "2023-06-01"),
                    ("anthropic-beta", "prompt-caching-2024-07-31"),
                    ("connection", "keep-alive, x-hop-secret"),
                    ("x-hop-secret", "1"),
                    ("keep-alive", "timeout=5"),
                    ("te", "trailers"),
                    ("x-forwarded-for", "203.0.113.9"),
                ],
                &request,
            )
            .await;
            assert_eq!(answer.status, 200, "{}", answer.text());
            let seen = mock.last_request();
            let upstream_auth = format!("Bearer {UPSTREAM_KEY}");
            assert_eq!(seen.header("authorization"), Some(upstream_auth.as_str()));
            assert_eq!(seen.headers.get_all("authorization").iter().count(), 1);
            for name in [
                "x-api-key",
                "proxy-authorization",
                "cookie",
                "anthropic-version",
                "anthropic-beta",
                "x-hop-secret",
                "keep-alive",
                "te",
            ] {
                assert!(
                    seen.headers.get(name).is_none(),
                    "{name} reached the upstream"
                );
            }
            let all: String = seen
                .headers
                .iter()
                .map(|(n, v)| format!("{n}: {}\n", String::from_utf8_lossy(v.as_bytes())))
                .collect();
            assert!(
                !all.contains(PROXY_KEY) && !all.contains("session=") && !all.contains("c2VjcmV0"),
                "{all}"
            );
            assert!(!String::from_utf8_lossy(&seen.raw).contains(PROXY_KEY));
        }
        proxy.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Proxy keys
// ---------------------------------------------------------------------------------------------

#[test]
fn constant_time_eq_compares_whole_values() {
    let key = b"proxy-key-0123456789";
    assert!(proxy::constant_time_eq(key, key));
    assert!(proxy::constant_time_eq(b"", b""));
    let mut first = *key;
    first[0] ^= 1;
    let mut last = *key;
    last[key.len() - 1] ^= 1;
    assert!(!proxy::constant_time_eq(key, &first), "first byte differs");
    assert!(!proxy::constant_time_eq(key, &last), "last byte differs");
    assert!(
        !proxy::constant_time_eq(key, &key[..key.len() - 1]),
        "prefix"
    );
    assert!(
        !proxy::constant_time_eq(&key[..key.len() - 1], key),
        "longer"
    );
    let mut extended = key.to_vec();
    extended.push(b'x');
    assert!(!proxy::constant_time_eq(key, &extended));
    // Every single-bit difference anywhere is caught (no early exit that skips bytes).
    for i in 0..key.len() {
        for bit in 0..8 {
            let mut flipped = *key;
            flipped[i] ^= 1 << bit;
            assert!(
                !proxy::constant_time_eq(key, &flipped),
                "byte {i} bit {bit}"
            );
        }
    }
}

#[tokio::test]
async fn the_second_of_several_keys_and_either_header_works() {
    let mock = MockUpstream::start().await;
    let keys = format!("first-key-aaaaaaaaaaaaaa,{PROXY_KEY}");
    let proxy = start_for(&mock, &[("PROXY_API_KEYS", &keys)]).await;
    let url = proxy.url("/v1/messages");
    // A wrong x-api-key does not hide a right bearer token, and the other way round.
    let bearer = format!("Bearer {PROXY_KEY}");
    for headers in [
        vec![("x-api-key", WRONG_KEY), ("authorization", bearer.as_str())],
        vec![("x-api-key", PROXY_KEY), ("authorization", "Bearer nope")],
        vec![("authorization", "bearer first-key-aaaaaaaaaaaaaa")],
    ] {
        let answer = post_json(&url, &headers, &anthropic_request(&format!("{headers:?}"))).await;
        assert_eq!(answer.status, 200, "{headers:?}: {}", answer.text());
    }
    let first = "first-key-aaaaaaaaaaaaaa";
    let short = &first[..first.len() - 1];
    let long = format!("{first}a");
    let mut flipped = first.to_owned().into_bytes();
    flipped[0] = b'F';
    let flipped = String::from_utf8(flipped).expect("ascii");
    for headers in [
        vec![("x-api-key", short)],
        vec![("x-api-key", long.as_str())],
        vec![("x-api-key", flipped.as_str())],
        vec![("authorization", "Basic Zmlyc3Qta2V5")],
    ] {
        let answer = post_json(&url, &headers, &anthropic_request(&format!("{headers:?}"))).await;
        assert_anthropic_error(&answer, 401, "authentication_error");
    }
    assert_eq!(mock.calls(), 3);
}

// ---------------------------------------------------------------------------------------------
// Binding and the choice of upstream
// ---------------------------------------------------------------------------------------------

#[test]
fn the_default_bind_is_loopback_and_other_addresses_must_be_asked_for() {
    let config = parse_config(&[("OPENAI_API_KEY", "sk-x")]);
    assert!(config.listen.ip().is_loopback(), "{}", config.listen);
    let config = parse_config(&[("OPENAI_API_KEY", "sk-x"), ("LISTEN_ADDR", "0.0.0.0:3000")]);
    assert!(config.listen.ip().is_unspecified());
}

/// Sends `request` (a raw HTTP/1.1 request with `connection: close`) and returns the answer.
async fn raw_request(proxy: &Running, request: &str) -> String {
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("in time")
        .expect("read");
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn clients_cannot_choose_the_upstream() {
    let mock = MockUpstream::start().await;
    // Without proxy keys, a foreign Host is refused before anything else (DNS rebinding):
    // nothing is forwarded at all.
    let open = start_for(&mock, &[]).await;
    for target in ["http://169.254.169.254/v1/messages", "/v1/messages"] {
        let body = anthropic_request("refused").to_string();
        let request = format!(
            "POST {target} HTTP/1.1\r\nhost: evil.example\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let response = raw_request(&open, &request).await;
        assert!(response.starts_with("HTTP/1.1 403"), "{target}: {response}");
    }
    assert_eq!(mock.calls(), 0);
    // With keys (Host is then not checked), requests still only reach the configured upstream.
    let proxy = start_for(&mock, &[("PROXY_API_KEYS", "k1")]).await;
    let body = anthropic_request("where do I go").to_string();
    let mock_host = mock.addr().to_string();
    let targets = [
        "http://169.254.169.254/v1/messages",
        "http://user:pass@evil.example/v1/messages",
        "https://evil.example:8443/v1/messages?x=1",
    ];
    for (i, target) in targets.iter().enumerate() {
        // Unique per target, so the cache cannot answer.
        let body = anthropic_request(&format!("where do I go {i}")).to_string();
        let request = format!(
            "POST {target} HTTP/1.1\r\nhost: evil.example\r\nx-forwarded-host: evil.example\r\n\
             x-forwarded-proto: https\r\nforwarded: host=evil.example\r\nx-api-key: k1\r\n\
             content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let response = raw_request(&proxy, &request).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{target}: {response}");
        assert_eq!(mock.calls(), i + 1, "{target}");
        let seen = mock.last_request();
        assert_eq!(seen.path, "/v1/chat/completions", "{target}");
        assert_eq!(seen.header("host"), Some(mock_host.as_str()), "{target}");
        assert_eq!(seen.query, None, "{target}");
    }
    // Paths other than the two LLM routes never reach the upstream, whatever their shape.
    for target in [
        "/v1/../../etc/passwd",
        "/v1/chat/completions/../../admin",
        "/v1/files",
        "/v1/embeddings",
        "*",
    ] {
        let request = format!(
            "POST {target} HTTP/1.1\r\nhost: 127.0.0.1\r\nx-api-key: k1\r\ncontent-type: application/json\r\n\
             content-length: 2\r\nconnection: close\r\n\r\n{{}}"
        );
        let response = raw_request(&proxy, &request).await;
        assert!(
            response.starts_with("HTTP/1.1 404") || response.starts_with("HTTP/1.1 400"),
            "{target}: {response}"
        );
    }
    let response = raw_request(
        &proxy,
        "CONNECT evil.example:443 HTTP/1.1\r\nhost: evil.example:443\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(!response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(mock.calls(), targets.len(), "nothing else went upstream");

    // HTTP/2 with another :authority.
    let h2: hyper_util::client::legacy::Client<_, ClientBody> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let mut req = build(
        Method::POST,
        &proxy.url("/v1/messages"),
        &[("content-type", "application/json"), ("x-api-key", "k1")],
        body.clone(),
    );
    *req.uri_mut() = format!("http://{}/v1/messages", proxy.addr)
        .parse()
        .expect("uri");
    req.headers_mut()
        .insert("host", http::HeaderValue::from_static("evil.example"));
    let res = tokio::time::timeout(WAIT, h2.request(req))
        .await
        .expect("in time")
        .expect("h2");
    assert_eq!(res.status(), 200);
    let _ = res.into_body().collect().await;
    assert_eq!(mock.last_request().header("host"), Some(mock_host.as_str()));
}

// ---------------------------------------------------------------------------------------------
// The cache identity
// ---------------------------------------------------------------------------------------------

#[test]
fn the_cache_identity_and_key_are_hashes_not_credentials() {
    use tower_llm_bridge::cache::{
        CacheNamespace, CacheScope, CallerIdentity, cache_key_for_request,
    };
    let identity = CallerIdentity::from_credential(PROXY_KEY);
    let hashed = identity.as_str();
    assert_eq!(hashed.len(), 64);
    assert!(hashed.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(!hashed.contains(PROXY_KEY) && !hashed.contains(&PROXY_KEY[PROXY_KEY.len() - 8..]));
    assert!(!format!("{identity:?}").contains(PROXY_KEY));
    assert_ne!(identity, CallerIdentity::from_credential(WRONG_KEY));
    // Not the bare SHA-256 of the key either (domain-separated), so a leaked identity cannot
    // be matched against a list of hashed keys.
    assert_ne!(hashed, sha256_hex(PROXY_KEY.as_bytes()));

    let body = anthropic_request("identity");
    let scope = CacheScope {
        backend_name: "http://127.0.0.1:1/v1",
        auth_identity: hashed,
    };
    let key = cache_key_for_request(&body, CacheNamespace::Anthropic, &scope);
    assert!(key.starts_with("anth:") && key.len() == 5 + 64, "{key}");
    assert!(!key.contains(PROXY_KEY) && !key.contains(hashed));
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test]
async fn tenants_never_share_cached_answers() {
    let mock = MockUpstream::start().await;
    let other = "proxy-key-other-tenant-5772";
    let keys = format!("{PROXY_KEY},{other}");
    for proxy_keys in [Some(keys.as_str()), None] {
        let mut extra = Vec::new();
        if let Some(keys) = proxy_keys {
            extra.push(("PROXY_API_KEYS", keys));
        }
        let proxy = start_for(&mock, &extra).await;
        let url = proxy.url("/v1/messages");
        let request = anthropic_request(&format!("shared question {}", proxy_keys.is_some()));
        let before = mock.calls();
        let ask = |key: &'static str| {
            let (url, request) = (url.clone(), request.clone());
            async move {
                let answer = post_json(&url, &[("x-api-key", key)], &request).await;
                assert_eq!(answer.status, 200, "{}", answer.text());
                answer.header("x-cache").unwrap_or_default().to_owned()
            }
        };
        // Without proxy keys the clients' own credentials tell tenants apart.
        let (a, b) = if proxy_keys.is_some() {
            (PROXY_KEY, "proxy-key-other-tenant-5772")
        } else {
            ("sk-ant-client-a-1111", "sk-ant-client-b-2222")
        };
        assert_eq!(ask(a).await, "MISS");
        assert_eq!(
            ask(a).await,
            "HIT",
            "the same tenant is served from the cache"
        );
        assert_eq!(
            ask(b).await,
            "MISS",
            "another tenant never gets tenant a's answer"
        );
        assert_eq!(ask(b).await, "HIT");
        assert_eq!(mock.calls(), before + 2);
        proxy.stop().await;
    }
}

//! The example proxy end to end: its `serve` on a real `127.0.0.1:0` socket in front of the
//! mock OpenAI upstream (also a real socket), driven by a hyper client.
//!
//! Every request body here is unique, so the tests hold with the response cache in the stack.

#[path = "../examples/proxy/main.rs"]
#[allow(dead_code, unused_imports)] // `main`, a few helpers and re-exports are for the binary only.
mod proxy;

mod common;
mod common_redis;
mod proxy_support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Method, Request};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use proxy_support::{
    UPSTREAM_KEY, anthropic_request, assert_anthropic_error, config_for, start, start_for,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PROXY_KEY: &str = "proxy-key-e2e-secret-7373";

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

fn parse_config(env: &[(&str, &str)], args: &[&str]) -> Result<proxy::Config, String> {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    match proxy::Config::from_sources(args.iter().map(|a| (*a).to_owned()), |name| {
        env.get(name).cloned()
    }) {
        Ok(proxy::Command::Run(config)) => Ok(*config),
        Ok(proxy::Command::Help(_)) => Err("help".to_owned()),
        Err(err) => Err(err.to_string()),
    }
}

/// An OpenAI request whose content makes it unique (so no cache can answer it).
fn openai_request(content: &str) -> Value {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]})
}

fn assert_openai_error(answer: &Answer, status: u16) -> String {
    assert_eq!(answer.status, status, "{}", answer.text());
    let body = answer.json();
    assert!(
        body.get("type").is_none(),
        "OpenAI shape, not Anthropic: {body}"
    );
    let message = body["error"]["message"].as_str().expect("error.message");
    assert!(!message.is_empty());
    assert!(body["error"]["type"].is_string(), "{body}");
    message.to_owned()
}

/// A port with nothing listening on it.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr").port()
}

// ---------------------------------------------------------------------------------------------
// Local endpoints
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn health_reports_ok_and_the_upstream() {
    let mock = MockUpstream::start().await;
    let proxy = start_for(&mock, &[("PROXY_API_KEYS", PROXY_KEY)]).await;
    // No credentials needed: load balancers probe this.
    let answer = get(&proxy.url("/health"), &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(
        answer.json(),
        json!({"status": "ok", "upstream": mock.base_url(), "redis": "off"})
    );
    assert_eq!(mock.calls(), 0);
}

#[tokio::test]
async fn models_lists_the_mapped_names_in_anthropic_shape() {
    let mock = MockUpstream::start().await;
    let proxy = start_for(
        &mock,
        &[("MODEL_MAP", "haiku=llama3.2,my-local-model=qwen2.5")],
    )
    .await;
    let answer = get(&proxy.url("/v1/models?beta=true"), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = answer.json();
    let data = body["data"].as_array().expect("data");
    let ids: Vec<&str> = data.iter().filter_map(|m| m["id"].as_str()).collect();
    for id in [
        "claude-sonnet-4-5",
        "claude-opus-4-1",
        "claude-haiku-4-5",
        "my-local-model",
    ] {
        assert!(ids.contains(&id), "{id} missing from {ids:?}");
    }
    assert!(
        !ids.contains(&"haiku"),
        "a pattern inside known names is not a model"
    );
    for model in data {
        assert_eq!(model["type"], "model");
        assert!(
            model["display_name"]
                .as_str()
                .is_some_and(|n| !n.is_empty())
        );
        assert!(
            model["created_at"]
                .as_str()
                .is_some_and(|d| d.ends_with('Z'))
        );
    }
    assert_eq!(body["has_more"], false);
    assert_eq!(body["first_id"], data[0]["id"]);
    assert_eq!(body["last_id"], data[data.len() - 1]["id"]);

    // Pagination as the SDKs drive it.
    let page = get(&proxy.url("/v1/models?limit=2"), &[]).await.json();
    assert_eq!(page["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["has_more"], true);
    let last = page["last_id"].as_str().expect("last_id");
    let next = get(
        &proxy.url(&format!("/v1/models?limit=100&after_id={last}")),
        &[],
    )
    .await
    .json();
    assert_eq!(next["data"][0]["id"], data[2]["id"]);
    assert_eq!(next["has_more"], false);
    let bad = get(&proxy.url("/v1/models?limit=0"), &[]).await;
    assert_anthropic_error(&bad, 400, "invalid_request_error");

    // One model by id, and an unknown one.
    let one = get(&proxy.url("/v1/models/claude-sonnet-4-5"), &[]).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["id"], "claude-sonnet-4-5");
    let missing = get(&proxy.url("/v1/models/claude-nope"), &[]).await;
    assert_anthropic_error(&missing, 404, "not_found_error");
    assert_eq!(mock.calls(), 0, "answered locally");
}

#[tokio::test]
async fn count_tokens_is_local_and_does_not_need_max_tokens() {
    let mock = MockUpstream::start().await;
    let proxy = start_for(&mock, &[]).await;
    let url = proxy.url("/v1/messages/count_tokens?beta=true");
    let short = post_json(
        &url,
        &[("anthropic-version", "2023-06-01")],
        &json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(short.status, 200, "{}", short.text());
    let short = short.json()["input_tokens"].as_u64().expect("input_tokens");
    let long = post_json(
        &url,
        &[],
        &json!({"model": "claude-sonnet-4-5", "system": "Be brief.",
                "messages": [{"role": "user", "content": "word ".repeat(400)}],
                "tools": [{"name": "t", "description": "d", "input_schema": {"type": "object"}}]}),
    )
    .await
    .json()["input_tokens"]
        .as_u64()
        .expect("input_tokens");
    assert!(short > 0 && long > short + 400, "{short} vs {long}");

    let missing = post_json(&url, &[], &json!({"model": "claude-sonnet-4-5"})).await;
    assert_anthropic_error(&missing, 400, "invalid_request_error");
    assert!(
        missing.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("messages"))
    );
    let not_json = send(build(Method::POST, &url, &[], "{not json")).await;
    assert_anthropic_error(&not_json, 400, "invalid_request_error");
    assert_eq!(mock.calls(), 0, "counted locally");
}

#[tokio::test]
async fn unknown_routes_are_anthropic_404s() {
    let mock = MockUpstream::start().await;
    let proxy = start_for(&mock, &[]).await;
    for (method, path) in [
        (Method::GET, "/v2/messages"),
        (Method::GET, "/v1/messages"),
        (Method::POST, "/v1/completions"),
        (Method::DELETE, "/health"),
        (Method::GET, "/"),
    ] {
        let answer = send(build(method.clone(), &proxy.url(path), &[], "")).await;
        assert_anthropic_error(&answer, 404, "not_found_error");
        assert!(
            answer.text().contains(path),
            "{method} {path}: {}",
            answer.text()
        );
    }
    assert_eq!(mock.calls(), 0);
}

// ---------------------------------------------------------------------------------------------
// Auth and what reaches the upstream
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn proxy_keys_reject_missing_and_wrong_keys_without_calling_upstream() {
    let mock = MockUpstream::start().await;
    let keys = format!("other-key-1, {PROXY_KEY}");
    let proxy = start_for(&mock, &[("PROXY_API_KEYS", &keys)]).await;
    let url = proxy.url("/v1/messages");

    let wrong_bearer = format!("Bearer {PROXY_KEY}x");
    let truncated = &PROXY_KEY[..PROXY_KEY.len() - 1];
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("x-api-key", "wrong")],
        vec![("x-api-key", truncated)],
        vec![("authorization", &wrong_bearer)],
        vec![("authorization", PROXY_KEY)], // not a Bearer credential
        vec![("x-api-key", "")],
    ];
    for (i, headers) in cases.iter().enumerate() {
        let answer = post_json(&url, headers, &anthropic_request(&format!("denied {i}"))).await;
        assert_anthropic_error(&answer, 401, "authentication_error");
    }
    for path in ["/v1/models", "/v1/messages/count_tokens"] {
        let answer = send(build(Method::GET, &proxy.url(path), &[], "")).await;
        assert_eq!(answer.status, 401, "{path} needs a key too");
    }
    // The OpenAI route answers in the OpenAI shape.
    let answer = post_json(
        &proxy.url("/v1/chat/completions"),
        &[("authorization", "Bearer nope")],
        &openai_request("denied openai"),
    )
    .await;
    assert_openai_error(&answer, 401);
    assert_eq!(mock.calls(), 0, "no rejected request reached the upstream");

    let bearer = format!("Bearer {PROXY_KEY}");
    let ok = post_json(
        &url,
        &[("x-api-key", PROXY_KEY)],
        &anthropic_request("allowed 1"),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let ok = post_json(
        &url,
        &[("authorization", &bearer)],
        &anthropic_request("allowed 2"),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let ok = post_json(
        &url,
        &[("x-api-key", "other-key-1")],
        &anthropic_request("allowed 3"),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(mock.calls(), 3);
}

#[tokio::test]
async fn upstream_gets_its_own_key_and_never_the_clients_credentials() {
    let mock = MockUpstream::start().await;
    let proxy = start_for(&mock, &[("PROXY_API_KEYS", PROXY_KEY)]).await;
    let bearer = format!("Bearer {PROXY_KEY}");
    let body = openai_request("credentials check");
    let answer = post_json(
        &proxy.url("/v1/chat/completions?beta=true"),
        &[
            ("x-api-key", PROXY_KEY),
            ("authorization", &bearer),
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "interleaved-thinking-2025-05-14"),
            ("anthropic-dangerous-direct-browser-access", "true"),
            ("cookie", "session=abc"),
            ("accept-encoding", "gzip, br"),
            ("x-request-origin", "e2e"),
        ],
        &body,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());

    let seen = mock.last_request();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(
        seen.query, None,
        "the client's query string is not forwarded"
    );
    let expected = format!("Bearer {UPSTREAM_KEY}");
    assert_eq!(seen.header("authorization"), Some(expected.as_str()));
    assert_eq!(seen.headers.get_all("authorization").iter().count(), 1);
    assert!(seen.headers.get("x-api-key").is_none());
    assert!(seen.headers.get("cookie").is_none());
    let anthropic: Vec<&str> = seen
        .headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.starts_with("anthropic-"))
        .collect();
    assert!(anthropic.is_empty(), "{anthropic:?}");
    assert_eq!(seen.header("accept-encoding"), Some("identity"));
    assert_eq!(
        seen.header("x-request-origin"),
        Some("e2e"),
        "other headers pass"
    );
    assert_eq!(seen.header("host"), Some(mock.addr().to_string().as_str()));
    assert_eq!(seen.body, body);
}

#[tokio::test]
async fn no_upstream_key_means_no_authorization_header() {
    let mock = MockUpstream::start().await;
    let base = mock.base_url();
    let config = parse_config(&[("OPENAI_BASE_URL", &base)], &[]).expect("config");
    let proxy = start(config).await;
    let answer = post_json(
        &proxy.url("/v1/chat/completions"),
        &[("authorization", "Bearer client-token")],
        &openai_request("keyless"),
    )
    .await;
    assert_eq!(answer.status, 200);
    assert!(mock.last_request().headers.get("authorization").is_none());
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    let mock = MockUpstream::start().await;
    mock.push(
        Reply::json(chat_completion_json("hop", "stop", usage(1, 1)))
            .with_header("connection", "x-upstream-hop")
            .with_header("x-upstream-hop", "1")
            .with_header("keep-alive", "timeout=5")
            .with_header("x-upstream-kept", "yes"),
    );
    let proxy = start_for(&mock, &[]).await;
    let answer = post_json(
        &proxy.url("/v1/chat/completions"),
        &[
            ("connection", "keep-alive, x-client-hop"),
            ("x-client-hop", "secret-ish"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("proxy-connection", "keep-alive"),
            ("x-client-kept", "yes"),
        ],
        &openai_request("hop by hop"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let seen = mock.last_request();
    for name in [
        "x-client-hop",
        "keep-alive",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
    ] {
        assert!(
            seen.headers.get(name).is_none(),
            "{name} reached the upstream"
        );
    }
    assert_eq!(seen.header("x-client-kept"), Some("yes"));
    assert!(answer.headers.get("x-upstream-hop").is_none());
    assert!(answer.headers.get("keep-alive").is_none());
    assert_eq!(answer.header("x-upstream-kept"), Some("yes"));
}

#[tokio::test]
async fn upstream_base_url_path_and_query_are_honoured() {
    let mock = MockUpstream::start().await;
    for (base, expected_path, expected_query) in [
        (mock.url("/api/v1"), "/api/v1/chat/completions", None),
        (mock.url("/api/v1/"), "/api/v1/chat/completions", None),
        (mock.url(""), "/chat/completions", None),
        (mock.url("/"), "/chat/completions", None),
        (
            mock.url("/openai/deployments/gpt?api-version=2024-10-21"),
            "/openai/deployments/gpt/chat/completions",
            Some("api-version=2024-10-21"),
        ),
    ] {
        let config = parse_config(&[("OPENAI_BASE_URL", &base)], &[]).expect("config");
        let proxy = start(config).await;
        let answer = post_json(
            &proxy.url("/v1/chat/completions?x=1"),
            &[],
            &openai_request(&format!("base {base}")),
        )
        .await;
        assert_eq!(answer.status, 200, "{base}: {}", answer.text());
        let seen = mock.last_request();
        assert_eq!(seen.path, expected_path, "{base}");
        assert_eq!(seen.query.as_deref(), expected_query, "{base}");
    }
}

#[tokio::test]
async fn clients_cannot_choose_the_upstream_host() {
    let mock = MockUpstream::start().await;
    // An absolute-form request target naming another host, as a forward proxy would take it.
    let body = openai_request("absolute form").to_string();
    let send = |addr, auth: &'static str| {
        let request = format!(
            "POST http://169.254.169.254/v1/chat/completions HTTP/1.1\r\nhost: 169.254.169.254\r\n\
             content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{auth}\r\n{body}",
            body.len()
        );
        async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream.write_all(request.as_bytes()).await.expect("write");
            let mut response = Vec::new();
            tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
                .await
                .expect("in time")
                .expect("read");
            String::from_utf8_lossy(&response).into_owned()
        }
    };
    // Without proxy keys, a host that is not loopback or allowed is refused outright (DNS
    // rebinding protection).
    let open = start_for(&mock, &[]).await;
    let response = send(open.addr, "").await;
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    assert_eq!(mock.calls(), 0);
    // With keys, the request is served, and still goes to the configured upstream only.
    let keyed = start_for(&mock, &[("PROXY_API_KEYS", "k1")]).await;
    let response = send(keyed.addr, "x-api-key: k1\r\n").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = mock.last_request();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.header("host"), Some(mock.addr().to_string().as_str()));
}

// ---------------------------------------------------------------------------------------------
// Upstream failures
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn upstream_refused_is_a_502_error_json() {
    let port = closed_port().await;
    let base = format!("http://127.0.0.1:{port}/v1");
    let config = parse_config(&[("OPENAI_BASE_URL", &base)], &[]).expect("config");
    let proxy = start(config).await;
    let started = Instant::now();
    let answer = post_json(
        &proxy.url("/v1/chat/completions"),
        &[],
        &openai_request("refused"),
    )
    .await;
    let message = assert_openai_error(&answer, 502);
    assert_eq!(answer.json()["error"]["type"], "api_error");
    assert!(message.contains("onnect"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // /v1/messages too (the translation layer turns it into an Anthropic error).
    let answer = post_json(
        &proxy.url("/v1/messages"),
        &[],
        &anthropic_request("refused"),
    )
    .await;
    assert_eq!(answer.status, 502, "{}", answer.text());
}

#[tokio::test]
async fn upstream_hang_is_a_504_within_the_timeout() {
    let mock = MockUpstream::start().await;
    mock.set_default(Reply::Hang);
    let proxy = start_for(&mock, &[("UPSTREAM_TIMEOUT_SECS", "1")]).await;
    let started = Instant::now();
    let answer = post_json(
        &proxy.url("/v1/chat/completions"),
        &[],
        &openai_request("hang"),
    )
    .await;
    let elapsed = started.elapsed();
    assert_openai_error(&answer, 504);
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert_eq!(mock.calls(), 1);
}

#[tokio::test]
async fn upstream_error_statuses_pass_through_on_chat_completions() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::error(429, "Rate limit reached").with_header("retry-after", "7"));
    let proxy = start_for(&mock, &[]).await;
    let answer = post_json(
        &proxy.url("/v1/chat/completions"),
        &[],
        &openai_request("rate limited"),
    )
    .await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.header("retry-after"), Some("7"));
    assert_eq!(answer.json()["error"]["message"], "Rate limit reached");
}

// ---------------------------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let mock = MockUpstream::start().await;
    let proxy = start_for(&mock, &[("BODY_LIMIT_BYTES", "1KiB")]).await;
    let big = "x".repeat(2048);

    let answer = post_json(&proxy.url("/v1/messages"), &[], &anthropic_request(&big)).await;
    assert_anthropic_error(&answer, 413, "request_too_large");
    let answer = post_json(
        &proxy.url("/v1/messages/count_tokens"),
        &[],
        &anthropic_request(&big),
    )
    .await;
    assert_anthropic_error(&answer, 413, "request_too_large");
    let answer = post_json(
        &proxy.url("/v1/chat/completions"),
        &[],
        &openai_request(&big),
    )
    .await;
    assert_openai_error(&answer, 413);

    // Chunked, without content-length: caught while streaming in.
    let chunks: Vec<Result<Frame<Bytes>, BoxError>> = (0..4)
        .map(|_| Ok(Frame::data(Bytes::from(vec![b' '; 512]))))
        .collect();
    let req = Request::post(proxy.url("/v1/messages"))
        .header("content-type", "application/json")
        .body(StreamBody::new(futures_util::stream::iter(chunks)).boxed_unsync())
        .expect("request");
    let answer = send(req).await;
    assert_anthropic_error(&answer, 413, "request_too_large");

    // Just under the limit goes through.
    let small = openai_request(&"y".repeat(900));
    assert!(small.to_string().len() <= 1024);
    let answer = post_json(&proxy.url("/v1/chat/completions"), &[], &small).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        mock.calls(),
        1,
        "only the small request reached the upstream"
    );
}

#[tokio::test]
async fn chat_completions_pass_through_unchanged() {
    let mock = MockUpstream::start().await;
    let reply = tool_calls_completion_json(
        &[("call_abc", "get_weather", r#"{"city":"Paris"}"#)],
        usage(31, 9),
    );
    mock.push(Reply::json(reply.clone()).with_header("x-request-id", "req-upstream-1"));
    let proxy = start_for(&mock, &[]).await;
    let request = json!({
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "weather?"}],
        "tools": [{"type": "function", "function": {"name": "get_weather",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "temperature": 0.2
    });
    let answer = post_json(&proxy.url("/v1/chat/completions"), &[], &request).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.header("x-request-id"), Some("req-upstream-1"));
    assert_eq!(answer.json(), reply);
    let seen = mock.last_request();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.body, request);
    assert_eq!(seen.header("content-type"), Some("application/json"));
}

#[tokio::test]
async fn streams_arrive_frame_by_frame() {
    let mock = MockUpstream::start().await;
    let mut chunks = vec![role_chunk(), text_chunk("first")];
    chunks.extend(text_stream(&["second"], "stop", (5, 2)).into_iter().skip(1));
    let Reply::Sse(mut sse) = Reply::sse(chunks) else {
        unreachable!()
    };
    // Everything after "first" waits 600 ms.
    for event in sse.events.iter_mut().skip(2) {
        event.delay = Duration::from_millis(600);
    }
    mock.push(Reply::Sse(sse));
    let proxy = start_for(&mock, &[]).await;
    let mut body = openai_request("stream me");
    body["stream"] = json!(true);
    let req = build(
        Method::POST,
        &proxy.url("/v1/chat/completions"),
        &[("content-type", "application/json")],
        body.to_string(),
    );

    tokio::time::timeout(WAIT, async {
        let res = client().request(req).await.expect("response");
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        let head_at = Instant::now();
        let mut body = res.into_body();
        let mut received = String::new();
        let mut first_at = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("clean stream");
            if let Ok(data) = frame.into_data() {
                received.push_str(std::str::from_utf8(&data).expect("utf-8"));
                if first_at.is_none() && received.contains("first") {
                    first_at = Some(head_at.elapsed());
                }
            }
        }
        let first_at = first_at.expect("saw the first chunk");
        let total = head_at.elapsed();
        assert!(
            first_at < Duration::from_millis(400),
            "the first chunk waited for later ones: {first_at:?}"
        );
        assert!(total >= Duration::from_millis(1000), "{total:?}");
        let events = parse_sse(&received);
        assert_eq!(events.last().map(|e| e.1.as_str()), Some("[DONE]"));
        assert!(received.contains("second"));
    })
    .await
    .expect("stream in time");
}

#[tokio::test]
async fn an_upstream_cut_mid_stream_is_not_a_clean_end() {
    let mock = MockUpstream::start().await;
    // Delays, so that the head and the first events are on the wire before the cut.
    mock.push(
        Reply::sse(text_stream(&["a", "b", "c"], "stop", (1, 3)))
            .delay_each(Duration::from_millis(50))
            .cut_after(3),
    );
    let proxy = start_for(&mock, &[]).await;
    let mut body = openai_request("cut me");
    body["stream"] = json!(true);
    let req = build(
        Method::POST,
        &proxy.url("/v1/chat/completions"),
        &[("content-type", "application/json")],
        body.to_string(),
    );
    tokio::time::timeout(WAIT, async {
        let res = client().request(req).await.expect("response");
        assert_eq!(res.status(), 200);
        let mut body = res.into_body();
        let mut received = Vec::new();
        let outcome = loop {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        received.extend_from_slice(&data);
                    }
                }
                Some(Err(err)) => break Err(err),
                None => break Ok(()),
            }
        };
        let text = String::from_utf8_lossy(&received);
        assert!(
            text.contains("\"a\""),
            "events before the cut arrive: {text}"
        );
        assert!(!text.contains("[DONE]"), "{text}");
        assert!(
            outcome.is_err(),
            "a cut upstream must not look like a complete stream: {text}"
        );
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_request() {
    let mut body = openai_request("cancel me");
    body["stream"] = json!(true);
    client_disconnect_closes_upstream_within_a_second("/v1/chat/completions", body).await;
}

#[tokio::test]
async fn a_client_that_leaves_a_translated_stream_cancels_the_upstream_request() {
    let mut body = anthropic_request("cancel my translated stream");
    body["stream"] = json!(true);
    client_disconnect_closes_upstream_within_a_second("/v1/messages", body).await;
}

/// Reads the first frame of a 5-second upstream stream, drops the response, and requires
/// the proxy to close its upstream connection within 1 s of the drop.
async fn client_disconnect_closes_upstream_within_a_second(path: &str, body: Value) {
    let mock = MockUpstream::start().await;
    let parts: Vec<String> = (0..100).map(|i| format!("part {i} ")).collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    mock.push(
        Reply::sse(text_stream(&parts, "stop", (1, 100))).delay_each(Duration::from_millis(50)),
    );
    let proxy = start_for(&mock, &[]).await;
    let req = build(
        Method::POST,
        &proxy.url(path),
        &[("content-type", "application/json")],
        body.to_string(),
    );
    let dropped_at = tokio::time::timeout(WAIT, async {
        let res = client().request(req).await.expect("response");
        assert_eq!(res.status(), 200);
        let mut body = res.into_body();
        let frame = body.frame().await.expect("a frame").expect("data");
        assert!(frame.is_data());
        assert_eq!(mock.open_connections(), 1);
        drop(body);
        Instant::now()
    })
    .await
    .expect("in time");
    wait_until("the upstream connection to close", || {
        mock.open_connections() == 0
    })
    .await;
    assert!(
        dropped_at.elapsed() < Duration::from_secs(1),
        "upstream closed {:?} after the client left",
        dropped_at.elapsed()
    );
}

#[tokio::test]
async fn upstream_connections_are_pooled() {
    let mock = MockUpstream::start().await;
    let proxy = start_for(&mock, &[]).await;
    for i in 0..3 {
        let answer = post_json(
            &proxy.url("/v1/chat/completions"),
            &[],
            &openai_request(&format!("pooled {i}")),
        )
        .await;
        assert_eq!(answer.status, 200);
    }
    assert_eq!(mock.calls(), 3);
    assert_eq!(
        mock.accepted_connections(),
        1,
        "one kept-alive upstream connection"
    );
}

// ---------------------------------------------------------------------------------------------
// Server behaviour
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn serves_http2_with_prior_knowledge() {
    let mock = MockUpstream::start().await;
    let proxy = start_for(&mock, &[]).await;
    let h2: hyper_util::client::legacy::Client<_, ClientBody> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let req = build(
        Method::POST,
        &proxy.url("/v1/chat/completions"),
        &[("content-type", "application/json")],
        openai_request("over h2").to_string(),
    );
    let res = tokio::time::timeout(WAIT, h2.request(req))
        .await
        .expect("in time")
        .expect("h2 response");
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(res.status(), 200);
    let body = tokio::time::timeout(WAIT, res.into_body().collect())
        .await
        .expect("in time")
        .expect("body")
        .to_bytes();
    let body: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from mock");
    // The mock speaks only HTTP/1.1: the proxy downgraded the request for it.
    assert_eq!(mock.calls(), 1);
}

#[tokio::test]
async fn graceful_shutdown_lets_open_streams_finish_then_stops() {
    let mock = MockUpstream::start().await;
    mock.push(
        Reply::sse(text_stream(&["one", "two", "three"], "stop", (1, 3)))
            .delay_each(Duration::from_millis(150)),
    );
    let proxy = start_for(&mock, &[]).await;
    let addr = proxy.addr;
    let mut body = openai_request("drain me");
    body["stream"] = json!(true);
    let req = build(
        Method::POST,
        &proxy.url("/v1/chat/completions"),
        &[("content-type", "application/json")],
        body.to_string(),
    );
    let res = tokio::time::timeout(WAIT, client().request(req))
        .await
        .expect("in time")
        .expect("response");
    assert_eq!(res.status(), 200);
    let reader = tokio::spawn(async move {
        let bytes = res
            .into_body()
            .collect()
            .await
            .expect("the stream finished cleanly");
        String::from_utf8(bytes.to_bytes().to_vec()).expect("utf-8")
    });

    proxy.stop().await;
    let text = tokio::time::timeout(WAIT, reader)
        .await
        .expect("in time")
        .expect("reader");
    assert!(text.contains("three"), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting connections"
    );
}

#[tokio::test]
async fn slow_request_headers_are_cut_off() {
    let mock = MockUpstream::start().await;
    let proxy = start_for(&mock, &[("HEADER_READ_TIMEOUT_SECS", "1")]).await;
    let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
    stream
        .write_all(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let mut buf = vec![0u8; 1024];
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server closed the connection");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(800), "{elapsed:?}");
    // Either a bare close or a 408 before it: never a forwarded request.
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    assert_eq!(mock.calls(), 0);
}

#[tokio::test]
async fn accepted_sockets_get_tcp_nodelay() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let _client = TcpStream::connect(addr).await.expect("connect");
    let (accepted, _) = listener.accept().await.expect("accept");
    assert!(!accepted.nodelay().expect("nodelay"), "off by default");
    proxy::tune_accepted(&accepted);
    assert!(accepted.nodelay().expect("nodelay"));
}

// ---------------------------------------------------------------------------------------------
// Logs never carry keys
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

// A current-thread runtime: every task logs on this thread, where the subscriber is set.
#[tokio::test(flavor = "current_thread")]
async fn api_keys_never_appear_in_logs() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .finish();
    // With a single registered dispatcher, tracing computes a callsite's interest from the
    // default of whichever thread hits it first: another test's thread (no subscriber) would
    // disable the proxy's log lines for this test too. A second live dispatcher makes tracing
    // ask every registered one instead.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let _guard = tracing::subscriber::set_default(subscriber);

    let mock = MockUpstream::start().await;
    let config = config_for(&mock, &[("PROXY_API_KEYS", PROXY_KEY)]);
    let debug = format!("{config:?}");
    assert!(
        !debug.contains(PROXY_KEY) && !debug.contains(UPSTREAM_KEY),
        "{debug}"
    );
    let proxy = start(config).await;

    let bearer = format!("Bearer {PROXY_KEY}");
    let wrong = "wrong-key-should-not-be-logged-9191";
    let ok = post_json(
        &proxy.url("/v1/chat/completions?key=query-secret-5151"),
        &[("authorization", &bearer)],
        &openai_request("log me"),
    )
    .await;
    assert_eq!(ok.status, 200);
    let ok = post_json(
        &proxy.url("/v1/messages"),
        &[("x-api-key", PROXY_KEY)],
        &anthropic_request("log me too"),
    )
    .await;
    assert_eq!(ok.status, 200);
    let denied = post_json(
        &proxy.url("/v1/messages"),
        &[("x-api-key", wrong)],
        &json!({}),
    )
    .await;
    assert_eq!(denied.status, 401);
    mock.set_default(Reply::error(500, "upstream exploded"));
    let failed = post_json(
        &proxy.url("/v1/chat/completions"),
        &[("x-api-key", PROXY_KEY)],
        &openai_request("log the failure"),
    )
    .await;
    assert_eq!(failed.status, 500);
    proxy.stop().await;

    let logs = String::from_utf8(captured.0.lock().expect("log buffer").clone()).expect("utf-8");
    for secret in [PROXY_KEY, UPSTREAM_KEY, wrong, "query-secret-5151"] {
        assert!(
            !logs.contains(secret),
            "{secret} leaked into the logs:\n{logs}"
        );
    }
    // The logs are not simply empty: one line per request, with method, path and status.
    assert!(logs.contains("listening on http://127.0.0.1:"), "{logs}");
    assert!(logs.contains("API key set"), "{logs}");
    assert!(logs.contains("path=/v1/chat/completions"), "{logs}");
    assert!(logs.contains("method=POST"), "{logs}");
    assert!(
        logs.contains("status=200") && logs.contains("status=401"),
        "{logs}"
    );
    assert!(logs.contains("status=500"), "{logs}");
    assert!(logs.contains("latency_ms="), "{logs}");
}

// At the default `info` level each request is one line carrying method, path, status and
// latency, without the per-request span (kept at `debug`: ~7% of a small request's CPU).
#[tokio::test(flavor = "current_thread")]
async fn info_logs_one_line_per_request_without_a_span() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mock = MockUpstream::start().await;
    let proxy = start_for(&mock, &[]).await;
    let ok = post_json(
        &proxy.url("/v1/messages"),
        &[],
        &anthropic_request("one line for me"),
    )
    .await;
    assert_eq!(ok.status, 200);
    let missing = post_json(&proxy.url("/v1/nowhere"), &[], &json!({})).await;
    assert_eq!(missing.status, 404);
    proxy.stop().await;

    let logs = String::from_utf8(captured.0.lock().expect("log buffer").clone()).expect("utf-8");
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains(" response ")).collect();
    assert_eq!(lines.len(), 2, "{logs}");
    for (line, path, status) in [
        (lines[0], "path=/v1/messages", "status=200"),
        (lines[1], "path=/v1/nowhere", "status=404"),
    ] {
        assert!(line.contains("method=POST"), "{line}");
        assert!(line.contains(path), "{line}");
        assert!(line.contains(status), "{line}");
        assert!(line.contains("latency_ms="), "{line}");
    }
    assert!(!logs.contains("request{"), "no span at info level:\n{logs}");
}

// The proxy writes its log lines in batches (one `write` for many requests): a line waits at
// most FLUSH_AFTER, a warning goes out at once with what waited before it, and so does a
// buffer past FLUSH_AT; flush() writes the rest at shutdown.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn log_lines_are_written_in_batches_in_order() {
    let sink = Captured::default();
    let logs = proxy::BatchedLogs::new(sink.clone());
    let flusher = tokio::spawn(logs.clone().run());
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let written = || String::from_utf8(sink.0.lock().expect("log buffer").clone()).expect("utf-8");
    let _guard = tracing::subscriber::set_default(subscriber);

    tracing::info!("first line");
    tracing::info!("second line");
    assert_eq!(written(), "", "held back");
    tokio::time::sleep(proxy::FLUSH_AFTER / 2).await;
    assert_eq!(written(), "", "still within FLUSH_AFTER");
    tokio::time::sleep(proxy::FLUSH_AFTER).await;
    let text = written();
    let (first, second) = (text.find("first line"), text.find("second line"));
    assert!(first.is_some() && first < second, "both, in order: {text}");
    assert_eq!(text.lines().count(), 2, "{text}");

    tracing::info!("third line");
    tracing::warn!("a warning");
    let text = written();
    let (third, warning) = (text.find("third line"), text.find("a warning"));
    assert!(
        third.is_some() && third < warning,
        "at once, in order: {text}"
    );

    // A full buffer is written without waiting for the timer.
    let before = written().len();
    let filler = "x".repeat(1000);
    for _ in 0..proxy::FLUSH_AT / 1000 + 1 {
        tracing::info!("{filler}");
    }
    assert!(
        written().len() >= before + proxy::FLUSH_AT,
        "written once full"
    );

    // What is left waits for the timer or for flush().
    tracing::info!("last line");
    assert!(!written().contains("last line"));
    logs.flush();
    assert!(written().contains("last line"));
    flusher.abort();
}

// The proxy's cheaper field formatting writes exactly what tracing-subscriber's default does
// (without ANSI styling), for every kind of field the log lines carry.
#[test]
fn plain_fields_read_as_the_default_format() {
    fn emit() {
        let model: Option<&str> = Some("claude-haiku-4-5");
        let none: Option<u64> = None;
        tracing::info!(
            method = %http::Method::POST,
            path = %"/v1/messages",
            status = 200u64,
            latency_ms = 12u64,
            offset = -42i64,
            zero = 0u64,
            max = u64::MAX,
            min = i64::MIN,
            ok = true,
            model = model,
            skipped = none,
            quoted = "say \"hi\"\\ \u{1b}[31m é\ttab",
            empty = "",
            r#type = "raw name",
            debug = ?vec![1, 2],
            "response"
        );
        tracing::warn!(error = %"upstream failed", "a \u{1b}[31mred\u{7} message {}", 7);
        let err = std::io::Error::other("disk full");
        tracing::error!(error = &err as &(dyn std::error::Error + 'static), "failed");
        tracing::info!(answer = 42u64);
    }
    let capture = |plain: bool| {
        let sink = Captured::default();
        let builder = tracing_subscriber::fmt()
            .with_writer(sink.clone())
            .with_ansi(false)
            .without_time();
        if plain {
            let subscriber = builder.fmt_fields(proxy::PlainFields).finish();
            tracing::subscriber::with_default(subscriber, emit);
        } else {
            tracing::subscriber::with_default(builder.finish(), emit);
        }
        String::from_utf8(sink.0.lock().expect("log buffer").clone()).expect("utf-8")
    };
    let (default, plain) = (capture(false), capture(true));
    assert_eq!(plain, default);
    assert_eq!(default.lines().count(), 4, "{default}");
    assert!(
        default.contains("status=200 latency_ms=12 offset=-42 zero=0"),
        "{default}"
    );
    // Quoted strings and the message have their control characters escaped.
    assert!(!plain.contains('\u{1b}'), "{plain}");
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

#[test]
fn defaults_are_usable_with_only_a_key() {
    let config = parse_config(&[("OPENAI_API_KEY", "sk-x")], &[]).expect("defaults");
    assert_eq!(config.listen, "127.0.0.1:3000".parse().expect("addr"));
    assert_eq!(config.upstream.to_string(), "https://api.openai.com/v1");
    assert_eq!(config.big_model, "gpt-4o");
    assert_eq!(config.small_model, "gpt-4o-mini");
    assert_eq!(config.reasoning_models, ["o1", "o3", "o4", "gpt-5"]);
    assert_eq!(
        config.max_tokens_caps,
        [
            ("gpt-4o".to_owned(), 16384),
            ("gpt-4o-mini".to_owned(), 16384)
        ]
    );
    assert!(config.proxy_api_keys.is_none());
    assert_eq!(config.upstream_timeout, Duration::from_secs(600));
    assert_eq!(config.body_limit, 32 << 20);
    assert_eq!(config.header_read_timeout, Some(Duration::from_secs(30)));
    assert_eq!(config.log_filter, "info");
    assert!(config.cache.enabled);
    assert_eq!(config.cache.ttl_secs, 300);
    assert_eq!(config.cache.max_entries, 10_000);
    assert_eq!(config.cache.max_bytes, 256 << 20);
    assert!(config.cache.redis_url.is_none());
    assert_eq!(
        config.openai_api_key.as_ref().map(proxy::Secret::expose),
        Some("sk-x")
    );
    // Keyless is fine too (local backends).
    assert!(
        parse_config(&[], &[])
            .expect("no key")
            .openai_api_key
            .is_none()
    );
}

#[test]
fn flags_override_environment_variables() {
    let env = [
        ("LISTEN_ADDR", "127.0.0.1:1111"),
        ("OPENAI_BASE_URL", "http://127.0.0.1:1/v1"),
        ("BIG_MODEL", "env-big"),
        ("RUST_LOG", "warn"),
        ("CACHE_ENABLED", "true"),
    ];
    let config = parse_config(
        &env,
        &[
            "--listen",
            "127.0.0.1:2222",
            "--upstream=http://localhost:11434/v1",
            "--big-model",
            "flag-big",
            "--cache-enabled",
            "off",
            "--body-limit-bytes=2MiB",
        ],
    )
    .expect("config");
    assert_eq!(config.listen.port(), 2222);
    assert_eq!(config.upstream.to_string(), "http://localhost:11434/v1");
    assert_eq!(config.big_model, "flag-big");
    assert_eq!(
        config.log_filter, "warn",
        "RUST_LOG is read when LOG_LEVEL is unset"
    );
    assert!(!config.cache.enabled);
    assert_eq!(config.body_limit, 2 << 20);
    let config = parse_config(&[("LOG_LEVEL", "debug"), ("RUST_LOG", "warn")], &[]).expect("c");
    assert_eq!(config.log_filter, "debug", "LOG_LEVEL wins over RUST_LOG");
    // Empty variables count as unset.
    let config = parse_config(&[("BIG_MODEL", "  ")], &[]).expect("config");
    assert_eq!(config.big_model, "gpt-4o");
}

#[test]
fn model_rules_apply_in_order_with_defaults_last() {
    let config = parse_config(
        &[
            (
                "MODEL_MAP",
                "claude-opus-4=o3, haiku=llama3.2:3b,my-model=qwen2.5",
            ),
            ("BIG_MODEL", "big"),
            ("SMALL_MODEL", "small"),
        ],
        &[],
    )
    .expect("config");
    assert_eq!(
        config.explicit_model_map,
        [
            ("claude-opus-4".to_owned(), "o3".to_owned()),
            ("haiku".to_owned(), "llama3.2:3b".to_owned()),
            ("my-model".to_owned(), "qwen2.5".to_owned()),
        ]
    );
    assert_eq!(config.map_model("claude-opus-4-1-20250805"), "o3");
    assert_eq!(config.map_model("claude-opus-3"), "big");
    assert_eq!(config.map_model("claude-haiku-4-5"), "llama3.2:3b");
    assert_eq!(config.map_model("claude-sonnet-4-5"), "big");
    assert_eq!(
        config.map_model("Claude-HAIKU"),
        "llama3.2:3b",
        "ignores ASCII case"
    );
    assert_eq!(config.map_model("claude-future-model"), "big");
    assert_eq!(config.map_model("my-model"), "qwen2.5");
    assert_eq!(
        config.map_model("gpt-4.1-nano"),
        "gpt-4.1-nano",
        "other names pass as is"
    );
    let plain = parse_config(&[], &[]).expect("config");
    assert_eq!(plain.map_model("claude-3-5-haiku-latest"), "gpt-4o-mini");
    assert_eq!(plain.map_model("claude-opus-4-5"), "gpt-4o");
}

#[test]
fn invalid_configuration_is_reported_clearly() {
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str);
    let cases: &[Case] = &[
        (
            &[("LISTEN_ADDR", "localhost")],
            &[],
            "LISTEN_ADDR=\"localhost\"",
        ),
        (&[], &["--listen", "300.0.0.1:1"], "--listen"),
        (
            &[("OPENAI_BASE_URL", "ftp://x/v1")],
            &[],
            "http:// or https://",
        ),
        (
            &[("OPENAI_BASE_URL", "api.openai.com/v1")],
            &[],
            "OPENAI_BASE_URL",
        ),
        (
            &[("OPENAI_BASE_URL", "https://u:p@host/v1")],
            &[],
            "OPENAI_API_KEY",
        ),
        (&[("MODEL_MAP", "haiku")], &[], "not key=value"),
        (&[("MODEL_MAP", "=gpt-4o")], &[], "empty key"),
        (&[("MODEL_MAP", "haiku=")], &[], "not a model name"),
        (
            &[("MAX_TOKENS_CAPS", "gpt-4o=lots")],
            &[],
            "MAX_TOKENS_CAPS",
        ),
        (&[("MAX_TOKENS_CAPS", "gpt-4o=0")], &[], "positive"),
        (
            &[("UPSTREAM_TIMEOUT_SECS", "0")],
            &[],
            "UPSTREAM_TIMEOUT_SECS",
        ),
        (
            &[("BODY_LIMIT_BYTES", "12 parsecs")],
            &[],
            "BODY_LIMIT_BYTES",
        ),
        (&[("CACHE_ENABLED", "maybe")], &[], "true or false"),
        (&[("CACHE_TTL_SECS", "86401")], &[], "between 1 and 86400"),
        (&[("CACHE_MAX_ENTRIES", "-1")], &[], "CACHE_MAX_ENTRIES"),
        (&[("CACHE_MAX_BYTES", "0")], &[], "CACHE_MAX_BYTES"),
        (&[("REDIS_URL", "http://127.0.0.1:6379")], &[], "redis://"),
        (&[("LOG_LEVEL", "loud=[")], &[], "LOG_LEVEL"),
        (&[("PROXY_API_KEYS", " , ")], &[], "PROXY_API_KEYS"),
        (&[], &["--bogus"], "unknown argument \"--bogus\""),
        (&[], &["--listen"], "--listen needs a value"),
        (&[], &["--proxy-api-keys", "k"], "environment only"),
    ];
    for (env, args, expected) in cases {
        let err = parse_config(env, args).expect_err(&format!("{env:?} {args:?} must fail"));
        assert!(
            err.contains(expected),
            "{env:?} {args:?}: {err:?} lacks {expected:?}"
        );
    }
    // Secrets are not echoed back in errors.
    let err = parse_config(&[("OPENAI_API_KEY", "sk-secret\u{7}bell")], &[]).expect_err("bad");
    assert!(
        err.starts_with("OPENAI_API_KEY") && !err.contains("sk-secret"),
        "{err}"
    );
    let err = parse_config(&[("REDIS_URL", "http://:pw-1234@h")], &[]).expect_err("bad");
    assert!(!err.contains("pw-1234"), "{err}");
}

#[test]
fn help_lists_every_setting_with_env_names_and_defaults() {
    let help = match proxy::Config::from_sources(["--help".to_owned()], |_| None) {
        Ok(proxy::Command::Help(text)) => text,
        other => panic!("expected help, got {other:?}"),
    };
    for name in [
        "--listen",
        "LISTEN_ADDR",
        "127.0.0.1:3000",
        "--upstream",
        "OPENAI_BASE_URL",
        "https://api.openai.com/v1",
        "OPENAI_API_KEY",
        "BIG_MODEL",
        "gpt-4o",
        "SMALL_MODEL",
        "gpt-4o-mini",
        "MODEL_MAP",
        "REASONING_MODELS",
        "o1,o3,o4,gpt-5",
        "MAX_TOKENS_CAPS",
        "PROXY_API_KEYS",
        "UPSTREAM_TIMEOUT_SECS",
        "600",
        "BODY_LIMIT_BYTES",
        "32MiB",
        "HEADER_READ_TIMEOUT_SECS",
        "SHUTDOWN_GRACE_SECS",
        "LOG_LEVEL",
        "RUST_LOG",
        "CACHE_ENABLED",
        "CACHE_TTL_SECS",
        "300",
        "CACHE_MAX_ENTRIES",
        "10000",
        "CACHE_MAX_BYTES",
        "256MiB",
        "REDIS_URL",
    ] {
        assert!(help.contains(name), "--help lacks {name}:\n{help}");
    }
}

// ---------------------------------------------------------------------------------------------
// /v1/messages through the translation layer.
//
// These need `AnthropicToOpenAiLayer` in the stack of `examples/proxy/app.rs`; until it
// is wired in, `/v1/messages` reaches the mock untranslated and these tests fail.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn messages_round_trip_through_real_sockets() {
    let mock = MockUpstream::start().await;
    let proxy = start_for(
        &mock,
        &[("PROXY_API_KEYS", PROXY_KEY), ("MODEL_MAP", "opus=o3")],
    )
    .await;
    let url = proxy.url("/v1/messages?beta=true");
    let headers = [
        ("x-api-key", PROXY_KEY),
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "fine-grained-tool-streaming-2025-05-14"),
    ];

    // JSON: Anthropic request in, OpenAI request upstream, Anthropic message out.
    mock.push(Reply::json(chat_completion_json(
        "Hi there!",
        "stop",
        usage_with_cache(12, 4, 2),
    )));
    let answer = post_json(
        &url,
        &headers,
        &json!({
            "model": "claude-sonnet-4-5-20250929",
            "max_tokens": 32000,
            "system": "Be brief.",
            "messages": [{"role": "user", "content": "Hello, round trip"}],
            "metadata": {"user_id": "user-1"}
        }),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let message = answer.json();
    assert!(
        message["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("msg_")),
        "{message}"
    );
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(
        message["model"], "claude-sonnet-4-5-20250929",
        "the client's name"
    );
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": "Hi there!"}])
    );
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(message["stop_sequence"], Value::Null);
    assert_eq!(message["usage"]["input_tokens"], 10);
    assert_eq!(message["usage"]["cache_read_input_tokens"], 2);
    assert_eq!(message["usage"]["output_tokens"], 4);

    let seen = mock.last_request();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.query, None);
    let expected_auth = format!("Bearer {UPSTREAM_KEY}");
    assert_eq!(seen.header("authorization"), Some(expected_auth.as_str()));
    assert!(seen.headers.get("x-api-key").is_none());
    assert!(
        !seen
            .headers
            .keys()
            .any(|k| k.as_str().starts_with("anthropic-"))
    );
    assert_eq!(seen.body["model"], "gpt-4o");
    assert_eq!(seen.body["max_tokens"], 16384, "clamped by MAX_TOKENS_CAPS");
    assert_eq!(
        seen.body["messages"],
        json!([{"role": "system", "content": "Be brief."},
               {"role": "user", "content": "Hello, round trip"}])
    );
    assert_eq!(seen.body["user"], "user-1");
    assert!(seen.body.get("system").is_none() && seen.body.get("metadata").is_none());

    // A reasoning model from MODEL_MAP: developer role, max_completion_tokens.
    mock.push(Reply::json(chat_completion_json(
        "Deep.",
        "stop",
        usage(20, 5),
    )));
    let answer = post_json(
        &url,
        &headers,
        &json!({
            "model": "claude-opus-4-1",
            "max_tokens": 1024,
            "temperature": 0.5,
            "system": [{"type": "text", "text": "Think.", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "Hello, reasoning"}]
        }),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.json()["model"], "claude-opus-4-1");
    let seen = mock.last_request();
    assert_eq!(seen.body["model"], "o3");
    assert_eq!(seen.body["messages"][0]["role"], "developer");
    assert_eq!(seen.body["max_completion_tokens"], 1024);
    assert!(seen.body.get("max_tokens").is_none());
    assert!(seen.body.get("temperature").is_none());

    // SSE: OpenAI chunks upstream, Anthropic events out, in order, frame by frame.
    mock.push(Reply::sse(text_stream(&["Hi", " there"], "stop", (12, 2))));
    let req = build(
        Method::POST,
        &url,
        &[
            ("content-type", "application/json"),
            ("x-api-key", PROXY_KEY),
            ("anthropic-version", "2023-06-01"),
        ],
        json!({
            "model": "claude-haiku-4-5",
            "max_tokens": 256,
            "stream": true,
            "messages": [{"role": "user", "content": "Hello, stream"}]
        })
        .to_string(),
    );
    let answer = send(req).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(
        answer
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/event-stream")),
        "{:?}",
        answer.headers
    );
    let events = parse_sse(&answer.text());
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    let mut text = String::new();
    for (name, data) in &events {
        let data: Value = serde_json::from_str(data).expect("event data is JSON");
        assert_eq!(data["type"], name.as_str(), "event line matches data.type");
        if name == "content_block_delta" {
            assert_eq!(data["index"], 0);
            text.push_str(data["delta"]["text"].as_str().expect("text delta"));
        }
        if name == "message_start" {
            assert_eq!(data["message"]["model"], "claude-haiku-4-5");
        }
        if name == "message_delta" {
            assert_eq!(data["delta"]["stop_reason"], "end_turn");
            assert_eq!(data["usage"]["output_tokens"], 2);
        }
    }
    assert_eq!(text, "Hi there");
    for name in ["content_block_start", "content_block_stop", "message_delta"] {
        assert_eq!(names.iter().filter(|n| **n == name).count(), 1, "{names:?}");
    }
    let seen = mock.last_request();
    assert_eq!(seen.body["model"], "gpt-4o-mini");
    assert_eq!(seen.body["stream"], true);
    assert_eq!(seen.body["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn messages_upstream_failures_are_anthropic_errors_through_real_sockets() {
    let mock = MockUpstream::start().await;
    let proxy = start_for(&mock, &[("UPSTREAM_TIMEOUT_SECS", "1")]).await;
    let url = proxy.url("/v1/messages");

    mock.push(Reply::error(503, "The engine is currently overloaded"));
    let answer = post_json(&url, &[], &anthropic_request("overloaded")).await;
    assert_anthropic_error(&answer, 529, "overloaded_error");
    assert!(
        answer.text().contains("currently overloaded"),
        "{}",
        answer.text()
    );

    mock.push(Reply::error(429, "Rate limit reached").with_header("retry-after", "7"));
    let answer = post_json(&url, &[], &anthropic_request("rate limited")).await;
    assert_anthropic_error(&answer, 429, "rate_limit_error");
    assert_eq!(answer.header("retry-after"), Some("7"));

    mock.push(Reply::Hang);
    let answer = post_json(&url, &[], &anthropic_request("hang")).await;
    assert_anthropic_error(&answer, 504, "timeout_error");

    let invalid = post_json(
        &url,
        &[],
        &json!({"model": "claude-sonnet-4-5", "messages": []}),
    )
    .await;
    assert_anthropic_error(&invalid, 400, "invalid_request_error");
    assert_eq!(
        mock.calls(),
        3,
        "the invalid request never reached the upstream"
    );

    drop(mock);
    let port = closed_port().await;
    let base = format!("http://127.0.0.1:{port}/v1");
    let refused = start(parse_config(&[("OPENAI_BASE_URL", &base)], &[]).expect("config")).await;
    let answer = post_json(
        &refused.url("/v1/messages"),
        &[],
        &anthropic_request("refused"),
    )
    .await;
    assert_anthropic_error(&answer, 502, "api_error");
}

// ---------------------------------------------------------------------------------------------
// The response cache in the proxy
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn repeated_messages_are_served_from_the_cache_per_caller() {
    let mock = MockUpstream::start().await;
    mock.set_default(Reply::json(chat_completion_json(
        "cached answer",
        "stop",
        usage(9, 2),
    )));
    let proxy = start_for(&mock, &[]).await;
    let request = anthropic_request("cache me through the proxy");
    let alice = [("x-api-key", "alice-key")];

    let first = post_json(&proxy.url("/v1/messages"), &alice, &request).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-cache"), Some("MISS"));
    let second = post_json(&proxy.url("/v1/messages"), &alice, &request).await;
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert!(second.header("age").is_some());
    assert_eq!(second.json()["content"], first.json()["content"]);
    assert_eq!(second.json()["model"], "claude-sonnet-4-5");
    assert_eq!(mock.calls(), 1, "the hit never reached the upstream");

    // Another caller's identical request is not served from alice's entry.
    let bob = post_json(
        &proxy.url("/v1/messages"),
        &[("x-api-key", "bob-key")],
        &request,
    )
    .await;
    assert_eq!(bob.header("x-cache"), Some("MISS"));
    assert_eq!(mock.calls(), 2);

    // The OpenAI passthrough route has its own namespace and is cached too.
    let openai = openai_request("cache me through the proxy");
    let miss = post_json(&proxy.url("/v1/chat/completions"), &alice, &openai).await;
    let hit = post_json(&proxy.url("/v1/chat/completions"), &alice, &openai).await;
    assert_eq!(
        (miss.header("x-cache"), hit.header("x-cache")),
        (Some("MISS"), Some("HIT"))
    );
    assert_eq!(mock.calls(), 3);
}

#[tokio::test]
async fn cache_ttl_secs_is_honoured_and_never_sent_upstream() {
    let mock = MockUpstream::start().await;
    mock.set_default(Reply::json(chat_completion_json("ok", "stop", usage(1, 1))));
    let proxy = start_for(&mock, &[]).await;
    let mut request = anthropic_request("ttl through the proxy");
    request["cache_ttl_secs"] = json!(0);
    for _ in 0..2 {
        let answer = post_json(&proxy.url("/v1/messages"), &[], &request).await;
        assert_eq!(answer.header("x-cache"), Some("BYPASS"));
    }
    assert_eq!(mock.calls(), 2);
    assert!(mock.last_request().body.get("cache_ttl_secs").is_none());

    request["cache_ttl_secs"] = json!(-5);
    let answer = post_json(&proxy.url("/v1/messages"), &[], &request).await;
    assert_anthropic_error(&answer, 400, "invalid_request_error");
    assert!(
        answer.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("cache_ttl_secs"))
    );
    assert_eq!(mock.calls(), 2, "an invalid TTL never reaches the upstream");
}

#[tokio::test]
async fn cache_can_be_switched_off() {
    let mock = MockUpstream::start().await;
    mock.set_default(Reply::json(chat_completion_json(
        "fresh",
        "stop",
        usage(1, 1),
    )));
    let proxy = start_for(&mock, &[("CACHE_ENABLED", "false")]).await;
    let request = anthropic_request("never cached");
    for _ in 0..2 {
        let answer = post_json(&proxy.url("/v1/messages"), &[], &request).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("x-cache"), None);
    }
    assert_eq!(mock.calls(), 2);
}

#[tokio::test]
async fn two_proxies_share_one_redis() {
    let Some(redis) = common_redis::TestRedis::get("two_proxies_share_one_redis") else {
        return;
    };
    let mock = MockUpstream::start().await;
    mock.set_default(Reply::json(chat_completion_json(
        "shared",
        "stop",
        usage(3, 1),
    )));
    let env = [("REDIS_URL", redis.url.as_str())];
    let a = start_for(&mock, &env).await;
    let b = start_for(&mock, &env).await;
    let health = get(&a.url("/health"), &[]).await;
    assert_eq!(health.json()["redis"], "up");

    let request = anthropic_request(&format!("shared across replicas {}", std::process::id()));
    let through_a = post_json(&a.url("/v1/messages"), &[("x-api-key", "k")], &request).await;
    assert_eq!(through_a.header("x-cache"), Some("MISS"));
    // The write to Redis finishes in the background: wait for B to see it (bounded).
    let deadline = Instant::now() + Duration::from_secs(5);
    let through_b = loop {
        let answer = post_json(&b.url("/v1/messages"), &[("x-api-key", "k")], &request).await;
        if answer.header("x-cache") == Some("HIT") || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        through_b.header("x-cache"),
        Some("HIT"),
        "B is served from Redis"
    );
    assert_eq!(through_b.json()["content"], through_a.json()["content"]);
    assert_eq!(mock.calls(), 1, "the upstream was called exactly once");
}

#[tokio::test]
async fn a_redis_outage_is_not_a_client_error() {
    let Some(mut server) = common_redis::RedisServer::start("a_redis_outage_is_not_a_client_error")
    else {
        return;
    };
    let mock = MockUpstream::start().await;
    mock.set_default(Reply::json(chat_completion_json(
        "still here",
        "stop",
        usage(1, 1),
    )));
    let url = server.url();
    let proxy = start_for(&mock, &[("REDIS_URL", url.as_str())]).await;
    server.stop();
    for i in 0..5 {
        let started = Instant::now();
        let answer = post_json(
            &proxy.url("/v1/messages"),
            &[],
            &anthropic_request(&format!("outage {i}")),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "bounded by the Redis timeout"
        );
    }
    let health = get(&proxy.url("/health"), &[]).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    assert_eq!(health.json()["redis"], "down");
}

/// The final message an SDK would build from an answer: the JSON, or the accumulated stream.
fn final_message(answer: &Answer) -> Value {
    use tower_llm_bridge::cache::{AnthropicMessages, StreamCodec};
    if answer
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/event-stream"))
    {
        let mut acc = AnthropicMessages.accumulator();
        acc.push(answer.text().as_bytes()).expect("a valid stream");
        serde_json::from_slice(&acc.finish().expect("a complete stream")).expect("json")
    } else {
        answer.json()
    }
}

fn streamed(request: &Value) -> Value {
    let mut request = request.clone();
    request["stream"] = json!(true);
    request
}

#[tokio::test]
async fn streamed_answers_are_cached_and_replayed_in_both_modes() {
    let mock = MockUpstream::start().await;
    mock.set_default(
        Reply::sse(text_stream(&["Bon", "jour", " !"], "stop", (9, 3)))
            .delay_each(Duration::from_millis(5)),
    );
    let proxy = start_for(&mock, &[]).await;
    let request = anthropic_request("stream me, then replay me");
    let key = [("x-api-key", "alice-key")];
    let first = post_json(&proxy.url("/v1/messages"), &key, &streamed(&request)).await;
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.header("x-cache"), Some("MISS"));
    let second = post_json(&proxy.url("/v1/messages"), &key, &streamed(&request)).await;
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert!(second.header("age").is_some());
    assert_eq!(second.header("content-type"), Some("text/event-stream"));
    let json = post_json(&proxy.url("/v1/messages"), &key, &request).await;
    assert_eq!(json.header("x-cache"), Some("HIT"));
    assert_eq!(json.header("content-type"), Some("application/json"));
    let (a, b, c) = (
        final_message(&first),
        final_message(&second),
        final_message(&json),
    );
    assert_eq!(a["content"], json!([{"type": "text", "text": "Bonjour !"}]));
    for other in [&b, &c] {
        for field in ["content", "stop_reason", "stop_sequence", "usage", "model"] {
            assert_eq!(other[field], a[field], "{field}");
        }
    }
    assert_eq!(a["usage"]["output_tokens"], 3);
    assert_eq!(mock.calls(), 1, "one upstream call for three answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_streams_share_one_upstream_stream_through_real_sockets() {
    let mock = MockUpstream::start().await;
    let parts: Vec<String> = (0..30).map(|i| format!("w{i} ")).collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    mock.set_default(
        Reply::sse(text_stream(&parts, "stop", (9, 30))).delay_each(Duration::from_millis(10)),
    );
    let proxy = start_for(&mock, &[]).await;
    let request = streamed(&anthropic_request("shared live"));
    let url = proxy.url("/v1/messages");
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (url, request) = (url.clone(), request.clone());
            tokio::spawn(async move { post_json(&url, &[("x-api-key", "k")], &request).await })
        })
        .collect();
    let mut texts = Vec::new();
    let mut caches = Vec::new();
    for client in clients {
        let answer = client.await.expect("client");
        assert_eq!(answer.status, 200);
        caches.push(answer.header("x-cache").unwrap_or_default().to_owned());
        texts.push(answer.text());
    }
    caches.sort();
    assert_eq!(
        caches.iter().filter(|c| *c == "MISS").count(),
        1,
        "{caches:?}"
    );
    assert!(
        caches.iter().all(|c| c == "MISS" || c == "HIT"),
        "{caches:?}"
    );
    assert!(
        texts.iter().all(|t| t == &texts[0]),
        "every client got the same bytes"
    );
    assert_eq!(mock.calls(), 1);
}

#[tokio::test]
async fn two_proxies_share_streamed_answers_through_one_redis() {
    let Some(redis) = common_redis::TestRedis::get("two_proxies_share_streamed_answers") else {
        return;
    };
    let mock = MockUpstream::start().await;
    mock.set_default(Reply::sse(text_stream(&["sha", "red"], "stop", (4, 2))));
    let env = [("REDIS_URL", redis.url.as_str())];
    let a = start_for(&mock, &env).await;
    let b = start_for(&mock, &env).await;
    let request = anthropic_request(&format!("streamed across replicas {}", std::process::id()));
    let key = [("x-api-key", "k")];
    let through_a = post_json(&a.url("/v1/messages"), &key, &streamed(&request)).await;
    assert_eq!(through_a.header("x-cache"), Some("MISS"));
    // The write to Redis finishes in the background: wait for B to see it (bounded).
    let deadline = Instant::now() + Duration::from_secs(5);
    let through_b = loop {
        let answer = post_json(&b.url("/v1/messages"), &key, &streamed(&request)).await;
        if answer.header("x-cache") == Some("HIT") || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        through_b.header("x-cache"),
        Some("HIT"),
        "B streams it from Redis"
    );
    assert_eq!(through_b.header("content-type"), Some("text/event-stream"));
    let json_b = post_json(&b.url("/v1/messages"), &key, &request).await;
    assert_eq!(json_b.header("x-cache"), Some("HIT"));
    let (a_msg, b_msg, json_msg) = (
        final_message(&through_a),
        final_message(&through_b),
        final_message(&json_b),
    );
    assert_eq!(a_msg["content"][0]["text"], "shared");
    for other in [&b_msg, &json_msg] {
        for field in ["content", "stop_reason", "usage"] {
            assert_eq!(other[field], a_msg[field], "{field}");
        }
    }
    assert_eq!(mock.calls(), 1, "the upstream was called exactly once");
}

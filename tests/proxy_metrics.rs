//! `GET /metrics` of the example proxy, scraped after known traffic through real sockets and
//! parsed as Prometheus text: every series of the issue with exact values, label rules, no
//! secret anywhere in the exposition.

#[path = "../examples/proxy/main.rs"]
#[allow(dead_code, unused_imports)] // `main`, a few helpers and re-exports are for the binary only.
mod proxy;

mod common;
mod proxy_support;

use std::collections::BTreeMap;

use common::*;
use proxy_support::{UPSTREAM_KEY, anthropic_request, start_for};
use serde_json::json;

const PROXY_KEY: &str = "proxy-key-metrics-secret-4242";

/// One sample line: name, labels (sorted), value.
type Samples = BTreeMap<(String, Vec<(String, String)>), f64>;

/// Parses the Prometheus text exposition format (0.0.4): `# TYPE` lines and samples.
fn parse(text: &str) -> (BTreeMap<String, String>, Samples) {
    let mut types = BTreeMap::new();
    let mut samples = Samples::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line");
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), Vec::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let mut labels: Vec<(String, String)> = body
                    .split("\",")
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| {
                        let (key, value) = pair.split_once("=\"").expect("label");
                        (key.to_owned(), value.trim_end_matches('"').to_owned())
                    })
                    .collect();
                labels.sort();
                (name.to_owned(), labels)
            }
        };
        assert!(
            samples.insert((name, labels), value).is_none(),
            "duplicate: {line}"
        );
    }
    (types, samples)
}

fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut key: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    key.sort();
    *samples.get(&(name.to_owned(), key)).unwrap_or_else(|| {
        panic!(
            "no {name}{labels:?} in {:#?}",
            samples
                .keys()
                .filter(|(n, _)| n == name)
                .collect::<Vec<_>>()
        )
    })
}

#[tokio::test]
async fn metrics_after_known_traffic() {
    let mock = MockUpstream::start().await;
    let backend = mock.addr().to_string();
    mock.respond_with(|req| {
        let stream = req.body.get("stream").and_then(|s| s.as_bool()) == Some(true);
        match req.body["messages"][0]["content"].as_str() {
            Some("rate limited") => Reply::error(429, "slow down"),
            _ if stream => Reply::sse(text_stream(&["Hel", "lo"], "stop", (30, 7))),
            _ => Reply::json(chat_completion_json(
                "Hello",
                "stop",
                usage_with_cache(100, 20, 60),
            )),
        }
    });
    let proxy = start_for(&mock, &[("PROXY_API_KEYS", PROXY_KEY)]).await;
    let key = [("x-api-key", PROXY_KEY)];

    assert_eq!(get(&proxy.url("/health"), &[]).await.status, 200);
    // A JSON answer twice: miss, then hit.
    for _ in 0..2 {
        let answer = post_json(
            &proxy.url("/v1/messages"),
            &key,
            &anthropic_request("prompt-alpha-twice"),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
    }
    // A stream.
    let mut streamed = anthropic_request("prompt-beta-stream");
    streamed["stream"] = json!(true);
    let answer = post_json(&proxy.url("/v1/messages"), &key, &streamed).await;
    assert_eq!(answer.status, 200);
    assert!(answer.text().contains("message_stop"));
    // A model the configuration does not know, and an upstream error.
    let mut unknown = anthropic_request("unknown model");
    unknown["model"] = json!("my-private-finetune-7");
    assert_eq!(
        post_json(&proxy.url("/v1/messages"), &key, &unknown)
            .await
            .status,
        200
    );
    let limited = post_json(
        &proxy.url("/v1/messages"),
        &key,
        &anthropic_request("rate limited"),
    )
    .await;
    assert_eq!(limited.status, 429);
    // OpenAI passthrough.
    let openai = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    assert_eq!(
        post_json(&proxy.url("/v1/chat/completions"), &key, &openai)
            .await
            .status,
        200
    );
    // Refused before any backend: no key.
    assert_eq!(
        post_json(&proxy.url("/v1/messages"), &[], &anthropic_request("x"))
            .await
            .status,
        401
    );
    // Local routes.
    assert_eq!(
        post_json(
            &proxy.url("/v1/messages/count_tokens"),
            &key,
            &anthropic_request("count")
        )
        .await
        .status,
        200
    );
    assert_eq!(get(&proxy.url("/v1/models"), &key).await.status, 200);
    assert_eq!(
        get(&proxy.url("/v1/secret-path-abc"), &key).await.status,
        404
    );

    // Scraped without a key.
    let scrape = get(&proxy.url("/metrics"), &[]).await;
    assert_eq!(scrape.status, 200);
    assert_eq!(
        scrape.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = scrape.text();
    for secret in [
        PROXY_KEY,
        UPSTREAM_KEY,
        "prompt-alpha-twice",
        "prompt-beta-stream",
        "secret-path-abc",
        "my-private-finetune-7",
    ] {
        assert!(!text.contains(secret), "{secret} in:\n{text}");
    }
    let (types, s) = parse(&text);
    for (name, kind) in [
        ("llm_bridge_requests_total", "counter"),
        ("llm_bridge_request_duration_seconds", "histogram"),
        ("llm_bridge_time_to_first_token_seconds", "histogram"),
        ("llm_bridge_tokens_total", "counter"),
        ("llm_bridge_cache_requests_total", "counter"),
        ("llm_bridge_upstream_requests_total", "counter"),
        ("llm_bridge_in_flight_requests", "gauge"),
    ] {
        assert_eq!(types.get(name).map(String::as_str), Some(kind), "{name}");
    }

    let requests = |route: &str, status: &str, model: &str| {
        value(
            &s,
            "llm_bridge_requests_total",
            &[("route", route), ("status", status), ("model", model)],
        )
    };
    assert_eq!(requests("messages", "200", "claude-sonnet-4-5"), 3.0);
    assert_eq!(requests("messages", "200", "other"), 1.0);
    assert_eq!(requests("messages", "429", "claude-sonnet-4-5"), 1.0);
    // The 401 came before the body was read: no model known.
    assert_eq!(requests("messages", "401", ""), 1.0);
    assert_eq!(requests("chat_completions", "200", "gpt-4o-mini"), 1.0);
    assert_eq!(requests("count_tokens", "200", "claude-sonnet-4-5"), 1.0);
    assert_eq!(requests("models", "200", ""), 1.0);
    assert_eq!(requests("health", "200", ""), 1.0);
    assert_eq!(requests("other", "404", ""), 1.0);

    let duration = |route: &str| {
        value(
            &s,
            "llm_bridge_request_duration_seconds_count",
            &[("route", route)],
        )
    };
    assert_eq!(duration("messages"), 6.0);
    assert_eq!(
        value(
            &s,
            "llm_bridge_request_duration_seconds_bucket",
            &[("route", "messages"), ("le", "+Inf")]
        ),
        6.0
    );
    assert_eq!(
        value(
            &s,
            "llm_bridge_time_to_first_token_seconds_count",
            &[("backend", &backend)]
        ),
        1.0
    );

    let tokens = |kind: &str, model: &str, backend: &str| {
        value(
            &s,
            "llm_bridge_tokens_total",
            &[("type", kind), ("model", model), ("backend", backend)],
        )
    };
    let sonnet = "claude-sonnet-4-5";
    // Miss (100 prompt of which 60 cached, 20 out) + stream (30, 7).
    assert_eq!(tokens("input", sonnet, &backend), 40.0 + 30.0);
    assert_eq!(tokens("output", sonnet, &backend), 20.0 + 7.0);
    assert_eq!(tokens("cache_read", sonnet, &backend), 60.0);
    assert_eq!(tokens("input", sonnet, "cache"), 40.0);
    assert_eq!(tokens("output", sonnet, "cache"), 20.0);
    assert_eq!(tokens("output", "other", &backend), 20.0);
    assert_eq!(tokens("input", "gpt-4o-mini", &backend), 40.0);

    let cache = |ns: &str, result: &str| {
        value(
            &s,
            "llm_bridge_cache_requests_total",
            &[("namespace", ns), ("result", result)],
        )
    };
    // The stream is cached too (a miss), so nothing bypassed the cache.
    assert_eq!(cache("anth", "miss"), 4.0);
    assert_eq!(cache("anth", "hit"), 1.0);
    assert!(!text.contains(r#"result="bypass""#), "{text}");
    assert_eq!(cache("oai", "miss"), 1.0);

    let upstream = |outcome: &str| {
        value(
            &s,
            "llm_bridge_upstream_requests_total",
            &[("backend", &backend), ("outcome", outcome)],
        )
    };
    // miss, stream, unknown model, chat completions; the 429.
    assert_eq!(upstream("ok"), 4.0);
    assert_eq!(upstream("error"), 1.0);
    assert_eq!(mock.calls(), 5);

    // The scrape itself is in flight while it renders.
    assert_eq!(value(&s, "llm_bridge_in_flight_requests", &[]), 1.0);
    let again = parse(&get(&proxy.url("/metrics"), &[]).await.text()).1;
    assert_eq!(
        value(
            &again,
            "llm_bridge_requests_total",
            &[("route", "other"), ("status", "200"), ("model", "")]
        ),
        1.0
    );
    proxy.stop().await;
}

/// With the cache off, the router refuses an invalid `cache_ttl_secs` itself; that request
/// and the translator's refusals still count under the model they named (folded).
#[tokio::test]
async fn refused_requests_count_under_their_model() {
    let mock = MockUpstream::start().await;
    let proxy = start_for(&mock, &[("CACHE_ENABLED", "false")]).await;
    let mut bad_ttl = anthropic_request("ttl");
    bad_ttl["cache_ttl_secs"] = json!(-5);
    let mut no_max_tokens = anthropic_request("no max_tokens");
    no_max_tokens["model"] = json!("claude-sonnet-4-5-20250929");
    no_max_tokens
        .as_object_mut()
        .expect("object")
        .remove("max_tokens");
    let mut unknown = anthropic_request("unknown");
    unknown["model"] = json!("my-private-finetune-8");
    unknown["cache_ttl_secs"] = json!("soon");
    for body in [&bad_ttl, &no_max_tokens, &unknown] {
        let answer = post_json(&proxy.url("/v1/messages"), &[], body).await;
        assert_eq!(answer.status, 400, "{}", answer.text());
    }
    let (_, s) = parse(&get(&proxy.url("/metrics"), &[]).await.text());
    let requests = |model: &str| {
        value(
            &s,
            "llm_bridge_requests_total",
            &[("route", "messages"), ("status", "400"), ("model", model)],
        )
    };
    assert_eq!(requests("claude-sonnet-4-5"), 2.0);
    assert_eq!(requests("other"), 1.0);
    assert_eq!(mock.calls(), 0);
    proxy.stop().await;
}

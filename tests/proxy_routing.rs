//! The example proxy with a configuration file (`--config`): several backends on
//! `127.0.0.1` (two OpenAI-compatible mocks and a mock Anthropic upstream speaking its real
//! wire format), routes by model, fallback, cool-down, the `anthropic` kind, `/health`,
//! `/v1/models`, and configuration errors that name the file, the line and the field.

#[path = "../examples/proxy/main.rs"]
#[allow(dead_code, unused_imports)] // `main`, a few helpers and re-exports are for the binary only.
mod proxy;

mod common;
mod proxy_support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use serde_json::{Value, json};
use tokio::net::TcpListener;

const OPENAI_KEY: &str = "sk-routing-openai-secret-1234";
const ANTHROPIC_KEY: &str = "sk-ant-routing-secret-5678";
const CLIENT_KEY: &str = "client-key-never-upstream-90";

/// A configuration file in the temp directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(text: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "llm-bridge-routing-{}-{}.toml",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&path, text).expect("write config");
        Self(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn parse(file: &TempFile, env: &[(&str, &str)], args: &[&str]) -> Result<proxy::Config, String> {
    let mut env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    env.entry("CONFIG_FILE".to_owned())
        .or_insert_with(|| file.path().to_owned());
    match proxy::Config::from_sources(args.iter().map(|a| (*a).to_owned()), |name| {
        env.get(name).cloned()
    }) {
        Ok(proxy::Command::Run(config)) => Ok(*config),
        Ok(proxy::Command::Help(_)) => Err("help".to_owned()),
        Err(err) => Err(err.to_string()),
    }
}

const KEYS: &[(&str, &str)] = &[
    ("ROUTING_OPENAI_KEY", OPENAI_KEY),
    ("ROUTING_ANTHROPIC_KEY", ANTHROPIC_KEY),
    ("LOG_LEVEL", "warn"),
];

/// Three backends: a local OpenAI-compatible server (no key), a hosted one (key, extra
/// header) and Anthropic; `haiku` goes local first, `opus` to Anthropic first.
fn routing_file(local: &str, primary: &str, claude: &str) -> String {
    format!(
        r#"
upstream_timeout_secs = 5
backend_cool_down_secs = 60

[[backends]]
name = "local"
kind = "openai-chat"
base_url = "{local}"

[[backends]]
name = "primary"
kind = "openai-chat"
base_url = "{primary}"
api_key_env = "ROUTING_OPENAI_KEY"
headers = {{ "x-extra" = "1" }}

[[backends]]
name = "claude"
kind = "anthropic"
base_url = "{claude}"
api_key_env = "ROUTING_ANTHROPIC_KEY"
timeout_secs = 5

[[routes]]
match = "haiku"
targets = [ {{ backend = "local", model = "qwen3:8b" }}, {{ backend = "primary", model = "gpt-4o-mini" }} ]

[[routes]]
match = "opus"
targets = [ {{ backend = "claude", model = "claude-opus-4-1-20250805" }}, {{ backend = "primary", model = "gpt-4o" }} ]
"#
    )
}

struct Setup {
    local: MockUpstream,
    primary: MockUpstream,
    claude: MockUpstream,
    proxy: proxy_support::Running,
    _file: TempFile,
}

async fn setup() -> Setup {
    let (local, primary, claude) = (
        MockUpstream::start().await,
        MockUpstream::start().await,
        MockUpstream::start().await,
    );
    claude.respond_with(anthropic_reply);
    let file = TempFile::new(&routing_file(
        &local.base_url(),
        &primary.base_url(),
        &claude.base_url(),
    ));
    let config = parse(&file, KEYS, &[]).expect("config");
    let proxy = proxy_support::start(config).await;
    Setup {
        local,
        primary,
        claude,
        proxy,
        _file: file,
    }
}

/// A message as Anthropic returns it (anthropic-sdk-python `types/message.py`).
fn anthropic_message(model: &str) -> Value {
    json!({
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
        "model": model, "content": [{"type": "text", "text": "Hello from Claude"}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 12, "output_tokens": 6}
    })
}

fn anthropic_stream(model: &str) -> String {
    [
        (
            "message_start",
            json!({"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": model,
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 25, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
        ("ping", json!({"type": "ping"})),
        (
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": "Hi!"}}),
        ),
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": 3}}),
        ),
        ("message_stop", json!({"type": "message_stop"})),
    ]
    .iter()
    .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
    .collect()
}

/// The mock Anthropic upstream: a message, or a stream when asked for one.
fn anthropic_reply(req: &Recorded) -> Reply {
    let model = req.body["model"].as_str().unwrap_or_default().to_owned();
    if req.body["stream"] == true {
        Reply::raw(200, "text/event-stream", anthropic_stream(&model))
    } else {
        Reply::raw(
            200,
            "application/json",
            anthropic_message(&model).to_string(),
        )
        .with_header("request-id", "req_anthropic_1")
    }
}

fn ask(model: &str, content: &str) -> Value {
    json!({"model": model, "max_tokens": 64,
           "messages": [{"role": "user", "content": content}]})
}

const CLIENT_HEADERS: &[(&str, &str)] = &[
    ("x-api-key", CLIENT_KEY),
    ("anthropic-version", "2023-06-01"),
];

#[tokio::test]
async fn routes_send_each_model_to_its_backend_with_the_target_s_model() {
    let s = setup().await;
    let answer = post_json(
        &s.proxy.url("/v1/messages"),
        CLIENT_HEADERS,
        &ask("claude-3-5-haiku-latest", "route me locally"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("x-llm-bridge-backend"), Some("local"));
    let message = answer.json();
    assert_eq!(message["model"], "claude-3-5-haiku-latest");
    assert_eq!(message["content"][0]["text"], "Hello from mock");
    let seen = s.local.last_request();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.body["model"], "qwen3:8b");
    assert_eq!(
        seen.header("authorization"),
        None,
        "a keyless local backend"
    );
    assert!(seen.header("x-api-key").is_none());
    assert_eq!((s.primary.calls(), s.claude.calls()), (0, 0));
}

#[tokio::test]
async fn a_failing_backend_falls_back_then_cools_down() {
    let s = setup().await;
    s.local.set_default(Reply::error(503, "loading model"));
    let answer = post_json(
        &s.proxy.url("/v1/messages"),
        CLIENT_HEADERS,
        &ask("claude-haiku-4-5", "fall back please"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("x-llm-bridge-backend"), Some("primary"));
    assert_eq!(answer.json()["model"], "claude-haiku-4-5");
    let seen = s.primary.last_request();
    assert_eq!(seen.body["model"], "gpt-4o-mini");
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );
    assert_eq!(seen.header("x-extra"), Some("1"));
    assert!(
        !seen
            .raw
            .windows(CLIENT_KEY.len())
            .any(|w| w == CLIENT_KEY.as_bytes())
    );
    assert_eq!(s.local.calls(), 1);

    // Within the cool-down the local backend is skipped; /health says so.
    let answer = post_json(
        &s.proxy.url("/v1/messages"),
        CLIENT_HEADERS,
        &ask("claude-haiku-4-5", "second request"),
    )
    .await;
    assert_eq!(answer.header("x-llm-bridge-backend"), Some("primary"));
    assert_eq!((s.local.calls(), s.primary.calls()), (1, 2));
    let health = get(&s.proxy.url("/health"), &[]).await.json();
    assert_eq!(
        health["backends"],
        json!([{"name": "local", "state": "cooling_down"},
               {"name": "primary", "state": "ok"},
               {"name": "claude", "state": "ok"}])
    );
}

#[tokio::test]
async fn a_refused_connection_falls_back_and_client_errors_do_not() {
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr")
    };
    let (primary, claude) = (MockUpstream::start().await, MockUpstream::start().await);
    let file = TempFile::new(&routing_file(
        &format!("http://{closed}/v1"),
        &primary.base_url(),
        &claude.base_url(),
    ));
    let proxy = proxy_support::start(parse(&file, KEYS, &[]).expect("config")).await;
    let answer = post_json(
        &proxy.url("/v1/messages"),
        CLIENT_HEADERS,
        &ask("claude-haiku-4-5", "nobody home locally"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("x-llm-bridge-backend"), Some("primary"));

    // A 400 from Anthropic goes back at once: the OpenAI fallback is not called.
    claude.set_default(Reply::raw(
        400,
        "application/json",
        json!({"type": "error", "error": {"type": "invalid_request_error",
               "message": "messages: at least one message is required"}})
        .to_string(),
    ));
    let before = primary.calls();
    let answer = post_json(
        &proxy.url("/v1/messages"),
        CLIENT_HEADERS,
        &ask("claude-opus-4-1", "bad for anthropic"),
    )
    .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.header("x-llm-bridge-backend"), Some("claude"));
    assert_eq!(answer.json()["error"]["type"], "invalid_request_error");
    assert_eq!(primary.calls(), before);
}

#[tokio::test]
async fn the_anthropic_kind_passes_json_and_streams_through_with_the_model_swapped() {
    let s = setup().await;
    let mut body = ask("claude-opus-4-5", "to anthropic");
    body["cache_ttl_secs"] = json!(60);
    let answer = post_json(
        &s.proxy.url("/v1/messages?beta=true"),
        &[
            ("x-api-key", CLIENT_KEY),
            ("anthropic-beta", "prompt-caching-2024-07-31"),
        ],
        &body,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("x-llm-bridge-backend"), Some("claude"));
    assert_eq!(answer.header("request-id"), Some("req_anthropic_1"));
    assert_eq!(answer.json(), anthropic_message("claude-opus-4-5"));
    let seen = s.claude.last_request();
    assert_eq!(seen.path, "/v1/messages");
    assert_eq!(seen.query, None, "the client's query is not forwarded");
    assert_eq!(seen.header("x-api-key"), Some(ANTHROPIC_KEY));
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(
        seen.header("anthropic-version"),
        Some("2023-06-01"),
        "added"
    );
    assert_eq!(
        seen.header("anthropic-beta"),
        Some("prompt-caching-2024-07-31")
    );
    let expected = ask("claude-opus-4-1-20250805", "to anthropic");
    assert_eq!(seen.body, expected, "model swapped, cache_ttl_secs removed");

    let mut body = ask("claude-opus-4-5", "stream from anthropic");
    body["stream"] = json!(true);
    let answer = post_json(&s.proxy.url("/v1/messages"), CLIENT_HEADERS, &body).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("text/event-stream"));
    assert_eq!(answer.text(), anthropic_stream("claude-opus-4-5"));
    assert_eq!(
        s.claude.last_request().body["model"],
        "claude-opus-4-1-20250805"
    );
}

#[tokio::test]
async fn an_anthropic_outage_falls_back_to_a_translated_backend() {
    let s = setup().await;
    s.claude.set_default(Reply::raw(
        529,
        "application/json",
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
            .to_string(),
    ));
    let answer = post_json(
        &s.proxy.url("/v1/messages"),
        CLIENT_HEADERS,
        &ask("claude-opus-4-1", "anthropic is overloaded"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("x-llm-bridge-backend"), Some("primary"));
    assert_eq!(answer.json()["model"], "claude-opus-4-1");
    assert_eq!(s.primary.last_request().body["model"], "gpt-4o");
}

#[tokio::test]
async fn a_model_no_route_serves_is_404_and_nothing_is_called() {
    let s = setup().await;
    let answer = post_json(
        &s.proxy.url("/v1/messages"),
        CLIENT_HEADERS,
        &ask("claude-sonnet-4-5", "no route"),
    )
    .await;
    assert_eq!(answer.status, 404);
    let body = answer.json();
    assert_eq!(body["error"]["type"], "not_found_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("m")
            .contains("claude-sonnet-4-5")
    );
    assert_eq!(s.local.calls() + s.primary.calls() + s.claude.calls(), 0);
}

#[tokio::test]
async fn models_lists_the_routed_names_and_health_each_backend() {
    let s = setup().await;
    let models = get(&s.proxy.url("/v1/models?limit=100"), &[]).await.json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(
        ids.contains(&"claude-haiku-4-5") && ids.contains(&"claude-opus-4-1"),
        "{ids:?}"
    );
    assert!(
        !ids.iter().any(|id| id.contains("sonnet")),
        "no route serves sonnet: {ids:?}"
    );
    let health = get(&s.proxy.url("/health"), &[]).await;
    assert_eq!(health.status, 200);
    assert_eq!(
        health.json(),
        json!({"status": "ok", "redis": "off", "backends": [
            {"name": "local", "state": "ok"},
            {"name": "primary", "state": "ok"},
            {"name": "claude", "state": "ok"}]})
    );
}

#[test]
fn top_level_settings_apply_and_env_and_flags_win_over_the_file() {
    let file = TempFile::new(
        "listen = \"127.0.0.1:4100\"\ncache_ttl_secs = 42\nupstream_timeout_secs = 7\n\
         reasoning_models = [\"o1\", \"o3\"]\ncache_enabled = false\n",
    );
    let config = parse(&file, &[], &[]).expect("config");
    assert_eq!(config.listen.port(), 4100);
    assert_eq!(config.cache.ttl_secs, 42);
    assert_eq!(config.upstream_timeout.as_secs(), 7);
    assert_eq!(config.reasoning_models, ["o1", "o3"]);
    assert!(!config.cache.enabled);
    assert!(
        config.routing.is_none(),
        "no backends: the environment's single backend"
    );
    let config = parse(
        &file,
        &[("LISTEN_ADDR", "127.0.0.1:4200"), ("CACHE_TTL_SECS", "9")],
        &["--listen", "127.0.0.1:4300"],
    )
    .expect("config");
    assert_eq!(config.listen.port(), 4300, "flag over variable over file");
    assert_eq!(config.cache.ttl_secs, 9, "variable over file");
    // `--config` works as the flag too.
    let config = parse(
        &file,
        &[("CONFIG_FILE", "/nonexistent")],
        &["--config", file.path()],
    )
    .expect("the flag wins");
    assert_eq!(config.listen.port(), 4100);
}

#[test]
fn bad_files_name_the_line_and_the_field() {
    let backend = "[[backends]]\nname = \"a\"\nkind = \"openai-chat\"\nbase_url = \"http://127.0.0.1:1/v1\"\n";
    let route = "[[routes]]\nmatch = \"*\"\ntargets = [ { backend = \"a\", model = \"m\" } ]\n";
    let cases: Vec<(String, &str)> = vec![
        (
            "listen = \"nowhere\"\n".to_owned(),
            ":1: listen=\"nowhere\"",
        ),
        ("\n\ncache_ttl_secs = 0\n".to_owned(), ":3: cache_ttl_secs"),
        (
            "listne = \"127.0.0.1:1\"\n".to_owned(),
            ":1: listne: unknown setting",
        ),
        (
            "openai_api_key = \"sk-x\"\n".to_owned(),
            "secrets stay in the environment",
        ),
        ("listen = [\n".to_owned(), ":1"),
        (
            format!("{backend}colour = \"red\"\n{route}"),
            ":5: unknown field `colour`",
        ),
        (
            backend.replace("openai-chat", "openai-completions") + route,
            ":3: kind: unknown variant",
        ),
        (
            format!("{backend}{backend}{route}"),
            ":6: name: backend \"a\" is defined twice",
        ),
        (
            backend.replace("http://127.0.0.1:1/v1", "ftp://x") + route,
            ":4: base_url",
        ),
        (
            format!(
                "{backend}{}",
                route.replace("backend = \"a\"", "backend = \"b\"")
            ),
            ":7: targets: no backend is named \"b\"",
        ),
        (
            format!("{backend}api_key_env = \"ROUTING_UNSET_VARIABLE\"\n{route}"),
            ":5: api_key_env: the variable ROUTING_UNSET_VARIABLE is not set",
        ),
        (backend.to_owned(), "need at least one [[routes]]"),
        (
            format!("{backend}{}", route.replace("\"*\"", "\"\"")),
            ":6: match",
        ),
    ];
    for (text, expected) in cases {
        let file = TempFile::new(&text);
        let err = parse(&file, &[], &[]).expect_err(&text);
        assert!(err.starts_with(file.path()), "{err}");
        assert!(
            err.contains(expected),
            "{text}\n→ {err}\nlacks {expected:?}"
        );
    }
    let err = parse(
        &TempFile::new(""),
        &[("CONFIG_FILE", "/nonexistent/proxy.toml")],
        &[],
    )
    .expect_err("missing file");
    assert!(
        err.contains("/nonexistent/proxy.toml: cannot read"),
        "{err}"
    );
}

#[tokio::test]
async fn the_openai_responses_kind_translates_to_the_responses_api() {
    let (responses, primary) = (MockUpstream::start().await, MockUpstream::start().await);
    // A Responses API answer (openai-python `types/responses/response.py`).
    responses.set_default(Reply::json(json!({
        "id": "resp_1", "object": "response", "created_at": 1_700_000_000, "status": "completed",
        "model": "gpt-5-2025-08-07",
        "output": [{"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": "Hi from Responses", "annotations": []}]}],
        "usage": {"input_tokens": 9, "output_tokens": 4, "total_tokens": 13}
    })));
    let file = TempFile::new(&format!(
        "[[backends]]\nname = \"resp\"\nkind = \"openai-responses\"\nbase_url = \"{}\"\n\
         api_key_env = \"ROUTING_OPENAI_KEY\"\n\
         [[backends]]\nname = \"primary\"\nkind = \"openai-chat\"\nbase_url = \"{}\"\n\
         [[routes]]\nmatch = \"*\"\ntargets = [ {{ backend = \"resp\", model = \"gpt-5\" }}, \
         {{ backend = \"primary\", model = \"gpt-4o\" }} ]\n",
        responses.base_url(),
        primary.base_url()
    ));
    let proxy = proxy_support::start(parse(&file, KEYS, &[]).expect("config")).await;
    let answer = post_json(
        &proxy.url("/v1/messages"),
        CLIENT_HEADERS,
        &ask("claude-sonnet-4-5", "via the responses api"),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("x-llm-bridge-backend"), Some("resp"));
    let message = answer.json();
    assert_eq!(message["model"], "claude-sonnet-4-5");
    assert_eq!(message["content"][0]["text"], "Hi from Responses");
    let seen = responses.last_request();
    assert_eq!(seen.path, "/v1/responses");
    assert_eq!(seen.body["model"], "gpt-5");
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );
    assert_eq!(primary.calls(), 0);
}

#[test]
fn the_shipped_example_file_parses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/proxy.example.toml");
    let env = [
        ("OPENAI_API_KEY", "sk-x"),
        ("ANTHROPIC_API_KEY", "sk-ant-x"),
    ];
    let config = parse(
        &TempFile::new(""),
        &[("CONFIG_FILE", path), env[0], env[1]],
        &[],
    )
    .expect("the example parses");
    let routing = config.routing.expect("backends and routes");
    let names: Vec<&str> = routing.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["local", "openai", "anthropic"]);
    assert_eq!(routing.routes.len(), 2);
    assert_eq!(config.cool_down.as_secs(), 30);
}

/// With the cache off, `cache_ttl_secs` is still checked (the same 400) and never reaches an
/// Anthropic backend either.
#[tokio::test]
async fn cache_ttl_secs_never_reaches_an_anthropic_backend_with_the_cache_off() {
    let (local, primary, claude) = (
        MockUpstream::start().await,
        MockUpstream::start().await,
        MockUpstream::start().await,
    );
    claude.respond_with(anthropic_reply);
    let file = TempFile::new(&routing_file(
        &local.base_url(),
        &primary.base_url(),
        &claude.base_url(),
    ));
    let mut env = KEYS.to_vec();
    env.push(("CACHE_ENABLED", "false"));
    let proxy = proxy_support::start(parse(&file, &env, &[]).expect("config")).await;
    let mut request = ask("claude-opus-4-1", "ttl to anthropic");
    request["cache_ttl_secs"] = json!(-1);
    let answer = post_json(&proxy.url("/v1/messages"), CLIENT_HEADERS, &request).await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert_eq!(answer.json()["error"]["type"], "invalid_request_error");
    assert_eq!(claude.calls() + local.calls() + primary.calls(), 0);
    request["cache_ttl_secs"] = json!(600);
    let answer = post_json(&proxy.url("/v1/messages"), CLIENT_HEADERS, &request).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("x-llm-bridge-backend"), Some("claude"));
    let seen = claude.last_request();
    assert!(seen.body.get("cache_ttl_secs").is_none(), "{}", seen.body);
    assert!(!String::from_utf8_lossy(&seen.raw).contains("cache_ttl_secs"));
}

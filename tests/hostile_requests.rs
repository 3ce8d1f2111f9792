//! Hostile requests against the example proxy, through real sockets: malformed JSON and
//! UTF-8, absurd nesting and sizes, wrong types in every field, bad framing, slow and
//! vanishing clients. Each must get the right Anthropic 4xx (or a closed connection), must
//! never reach the upstream, and must leave the proxy serving: a normal request succeeds
//! after every case.
//!
//! `cargo test --test hostile_requests -- --nocapture` prints the case → outcome table.

#[path = "../examples/proxy/main.rs"]
#[allow(dead_code, unused_imports)] // `main`, a few helpers and re-exports are for the binary only.
mod proxy;

mod common;
mod proxy_support;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures_util::StreamExt as _;
use http::{Method, Request};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use proxy_support::*;
use serde_json::{Value, json};

/// What a case sends.
enum Send {
    /// A JSON value with `content-type: application/json`.
    Json(Value),
    /// Bytes with the given headers (through the hyper client).
    Bytes(Vec<(&'static str, String)>, Vec<u8>),
    /// A raw request head and body plan over TCP.
    Raw(String, BodyPlan, Duration),
}

/// What a case must produce.
enum Expect {
    /// An Anthropic error with this status and type; the upstream is not called.
    Anthropic(u16, &'static str),
    /// An Anthropic error with this status and type whose message starts with this text.
    Says(u16, &'static str, String),
    /// A `200` token count from `count_tokens` (no upstream call).
    Tokens,
    /// An OpenAI-shaped error with this status (the `/v1/chat/completions` route).
    OpenAi(u16),
    /// A plain status from the HTTP layer (hyper answers framing errors itself), then a
    /// closed connection; the upstream is not called.
    HttpThenClose(u16),
    /// The connection is closed by the client; nothing to read, the upstream is not called.
    ClientGone,
    /// A normal `200` message: the request is odd but valid and goes upstream once. The
    /// closure checks what the upstream received.
    Works(Box<dyn Fn(&Recorded)>),
}

struct Case {
    name: String,
    path: &'static str,
    send: Send,
    expect: Expect,
}

fn case(name: impl Into<String>, send: Send, expect: Expect) -> Case {
    Case {
        name: name.into(),
        path: "/v1/messages",
        send,
        expect,
    }
}

fn bad(status: u16, kind: &'static str) -> Expect {
    Expect::Anthropic(status, kind)
}

fn invalid() -> Expect {
    bad(400, "invalid_request_error")
}

fn works() -> Expect {
    Expect::Works(Box::new(|_| {}))
}

fn base() -> Value {
    anthropic_request("hostile base")
}

/// `base()` with the value at a JSON pointer replaced (parents must exist).
fn with(pointer: &str, value: Value) -> Value {
    let mut request = base();
    let (parent, key) = pointer.rsplit_once('/').expect("pointer");
    let target = request
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("no parent {parent}"));
    match target {
        Value::Object(map) => {
            map.insert(key.to_owned(), value);
        }
        Value::Array(items) => {
            let index: usize = key.parse().expect("index");
            items[index] = value;
        }
        _ => panic!("parent is not a container"),
    }
    request
}

fn without(field: &str) -> Value {
    let mut request = base();
    request.as_object_mut().expect("object").remove(field);
    request
}

/// A message list with one user message whose content is `content`.
fn content(content: Value) -> Value {
    with("/messages/0/content", content)
}

fn json_bytes(prefix: &str, body: &[u8], suffix: &str) -> Vec<u8> {
    let mut bytes = prefix.as_bytes().to_vec();
    bytes.extend_from_slice(body);
    bytes.extend_from_slice(suffix.as_bytes());
    bytes
}

fn json_type() -> Vec<(&'static str, String)> {
    vec![("content-type", "application/json".to_owned())]
}

/// Every field of the request with wrong types and values (each a 400 naming the field).
fn wrong_type_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |name: &str, body: Value| cases.push(case(name, Send::Json(body), invalid()));
    add("body is an array", json!([base()]));
    add("body is a string", json!("hello"));
    add("body is null", Value::Null);
    add("model missing", without("model"));
    add("model is a number", with("/model", json!(1)));
    add(
        "model is an object",
        with("/model", json!({"name": "claude"})),
    );
    add("model is empty", with("/model", json!("")));
    add("max_tokens missing", without("max_tokens"));
    add("max_tokens is a string", with("/max_tokens", json!("64")));
    add("max_tokens is a float", with("/max_tokens", json!(1.5)));
    add("max_tokens is negative", with("/max_tokens", json!(-1)));
    add("max_tokens is zero", with("/max_tokens", json!(0)));
    add(
        "max_tokens is absurd (1e15)",
        with("/max_tokens", json!(1e15)),
    );
    add(
        "max_tokens is u64::MAX",
        with("/max_tokens", json!(u64::MAX)),
    );
    add("max_tokens is a bool", with("/max_tokens", json!(true)));
    add("messages missing", without("messages"));
    add(
        "messages is an object",
        with("/messages", json!({"role": "user"})),
    );
    add("messages is empty", with("/messages", json!([])));
    add("message is a number", with("/messages", json!([1])));
    add("message is null", with("/messages", json!([null])));
    add("role missing", with("/messages", json!([{"content": "x"}])));
    add("role is a number", with("/messages/0/role", json!(7)));
    add(
        "role unknown (robot)",
        with("/messages/0/role", json!("robot")),
    );
    add(
        "role tool (OpenAI's, not Anthropic's)",
        with("/messages/0/role", json!("tool")),
    );
    add(
        "content missing",
        with("/messages", json!([{"role": "user"}])),
    );
    add("content is a number", content(json!(5)));
    add(
        "content is an object",
        content(json!({"type": "text", "text": "x"})),
    );
    add("content is a bool", content(json!(true)));
    add("content block is a string", content(json!(["text"])));
    add(
        "content block without type",
        content(json!([{"text": "x"}])),
    );
    add(
        "content block type is a number",
        content(json!([{"type": 3}])),
    );
    add(
        "text block text is a number",
        content(json!([{"type": "text", "text": 3}])),
    );
    add("image without source", content(json!([{"type": "image"}])));
    add(
        "image source data is a number",
        content(
            json!([{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": 1}}]),
        ),
    );
    add(
        "tool_result without tool_use_id",
        content(json!([{"type": "tool_result", "content": "x"}])),
    );
    add(
        "tool_result is_error is a string",
        content(json!([{"type": "tool_result", "tool_use_id": "t", "is_error": "yes"}])),
    );
    add(
        "assistant tool_use input is a string",
        with(
            "/messages",
            json!([{"role": "user", "content": "x"},
                   {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "n", "input": "{}"}]}]),
        ),
    );
    add("system is a number", with("/system", json!(5)));
    add("system block is a number", with("/system", json!([1])));
    add(
        "system block text is a number",
        with("/system", json!([{"type": "text", "text": 1}])),
    );
    add(
        "temperature is a string",
        with("/temperature", json!("hot")),
    );
    add("temperature above 1", with("/temperature", json!(2.5)));
    add("top_p negative", with("/top_p", json!(-0.5)));
    add("top_k negative", with("/top_k", json!(-1)));
    add(
        "stop_sequences is a string",
        with("/stop_sequences", json!("STOP")),
    );
    add(
        "stop_sequences holds a number",
        with("/stop_sequences", json!([1])),
    );
    add("stream is a string", with("/stream", json!("yes")));
    add("tools is an object", with("/tools", json!({"name": "x"})));
    add("tool is a number", with("/tools", json!([1])));
    add(
        "tool without name",
        with("/tools", json!([{"input_schema": {}}])),
    );
    add("tool name empty", with("/tools", json!([{"name": ""}])));
    add(
        "tool input_schema is a string",
        with("/tools", json!([{"name": "x", "input_schema": "object"}])),
    );
    add(
        "tool_choice is a string",
        with("/tool_choice", json!("auto")),
    );
    add(
        "tool_choice type unknown",
        with("/tool_choice", json!({"type": "maybe"})),
    );
    add(
        "tool_choice tool without name",
        with("/tool_choice", json!({"type": "tool"})),
    );
    add("metadata is a string", with("/metadata", json!("u1")));
    add(
        "metadata.user_id is a number",
        with("/metadata", json!({"user_id": 1})),
    );
    add("thinking is a string", with("/thinking", json!("on")));
    add("thinking without type", with("/thinking", json!({})));
    add(
        "thinking budget negative",
        with("/thinking", json!({"type": "enabled", "budget_tokens": -1})),
    );
    add(
        "output_config is a number",
        with("/output_config", json!(1)),
    );
    add(
        "output_config.effort is a number",
        with("/output_config", json!({"effort": 1})),
    );
    add(
        "cache_ttl_secs is a string",
        with("/cache_ttl_secs", json!("60")),
    );
    add(
        "cache_ttl_secs negative",
        with("/cache_ttl_secs", json!(-1)),
    );
    add(
        "cache_ttl_secs over a day",
        with("/cache_ttl_secs", json!(86_401)),
    );
    cases
}

fn hostile_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    // Bytes that are not JSON, or not UTF-8.
    let raw = |bytes: &[u8]| Send::Bytes(json_type(), bytes.to_vec());
    cases.push(case("empty body", raw(b""), invalid()));
    cases.push(case("whitespace only", raw(b" \n\t "), invalid()));
    cases.push(case(
        "truncated JSON",
        raw(br#"{"model":"claude","max_tok"#),
        invalid(),
    ));
    cases.push(case(
        "two JSON documents",
        raw(br#"{"a":1}{"b":2}"#),
        invalid(),
    ));
    cases.push(case(
        "trailing comma",
        raw(br#"{"model":"c","max_tokens":1,}"#),
        invalid(),
    ));
    cases.push(case(
        "invalid UTF-8 inside a string",
        raw(&json_bytes(
            r#"{"model":"claude","max_tokens":5,"messages":[{"role":"user","content":""#,
            b"\xff\xfe\xc3",
            r#""}]}"#,
        )),
        invalid(),
    ));
    cases.push(case(
        "invalid UTF-8 outside strings",
        raw(b"\xef\xbb\xbf\xff{}"),
        invalid(),
    ));
    cases.push(case(
        "lone UTF-16 surrogate escape",
        raw(
            br#"{"model":"claude","max_tokens":5,"messages":[{"role":"user","content":"\ud800"}]}"#,
        ),
        invalid(),
    ));
    cases.push(case(
        "NaN literal",
        raw(br#"{"model":"c","max_tokens":NaN}"#),
        invalid(),
    ));
    cases.push(case(
        "number out of range (1e400)",
        raw(br#"{"model":"c","max_tokens":1e400,"messages":[]}"#),
        invalid(),
    ));
    cases.push(case(
        "integer beyond u64 (2^64)",
        raw(br#"{"model":"c","max_tokens":18446744073709551616,"messages":[{"role":"user","content":"x"}]}"#),
        invalid(),
    ));
    cases.push(case(
        "arrays nested 100,000 deep",
        raw(&[vec![b'['; 100_000], vec![b']'; 100_000]].concat()),
        invalid(),
    ));
    cases.push(case(
        "objects nested 100,000 deep",
        raw(&[
            br#"{"a":"#.repeat(100_000),
            b"1".to_vec(),
            b"}".repeat(100_000),
        ]
        .concat()),
        invalid(),
    ));
    cases.push(case(
        "unclosed nesting 100,000 deep",
        raw(&vec![b'['; 100_000]),
        invalid(),
    ));
    let mut schema = json!({"type": "object"});
    for _ in 0..60 {
        schema = json!({"type": "object", "properties": {"x": schema}});
    }
    cases.push(case(
        "tool schema nested 120 deep (under serde_json's 128)",
        Send::Json(with(
            "/tools",
            json!([{"name": "deep", "input_schema": schema}]),
        )),
        Expect::Works(Box::new(|seen| {
            let mut depth = 0;
            let mut node = &seen.body["tools"][0]["function"]["parameters"];
            while let Some(next) = node.get("properties").and_then(|p| p.get("x")) {
                node = next;
                depth += 1;
            }
            assert_eq!(depth, 60, "the schema is forwarded whole");
        })),
    ));
    // Deep JSON up to MAX_JSON_DEPTH (512) is accepted (serde_json alone stops at 128); one
    // level more is a 400. The top-level object, `tools`, the tool and its schema are 4 levels.
    let nested = |levels: usize| {
        let mut value = json!(1);
        for _ in 0..levels {
            value = json!([value]);
        }
        value
    };
    let mut schema = json!({"type": "object"});
    for _ in 0..250 {
        schema = json!({"type": "object", "properties": {"x": schema}});
    }
    cases.push(case(
        "tool schema nested 503 deep (past serde_json's 128)",
        Send::Json(with(
            "/tools",
            json!([{"name": "deep", "input_schema": schema}]),
        )),
        Expect::Works(Box::new(|seen| {
            let mut depth = 0;
            let mut node = &seen.body["tools"][0]["function"]["parameters"];
            while let Some(next) = node.get("properties").and_then(|p| p.get("x")) {
                node = next;
                depth += 1;
            }
            assert_eq!(depth, 250, "the schema is forwarded whole");
        })),
    ));
    let at_limit = with(
        "/tools",
        json!([{"name": "deep", "input_schema": {"type": "object", "default": nested(508)}}]),
    );
    cases.push(case(
        "JSON nested exactly 512 deep",
        Send::Json(at_limit.clone()),
        Expect::Works(Box::new(|seen| {
            let mut node = &seen.body["tools"][0]["function"]["parameters"]["default"];
            let mut depth = 0;
            while let Some(inner) = node.get(0) {
                node = inner;
                depth += 1;
            }
            assert_eq!(depth, 508);
        })),
    ));
    let past_limit = with(
        "/tools",
        json!([{"name": "deep", "input_schema": {"type": "object", "default": nested(509)}}]),
    );
    cases.push(case(
        "JSON nested 513 deep",
        Send::Json(past_limit.clone()),
        Expect::Says(
            400,
            "invalid_request_error",
            "request body is not valid JSON: nesting deeper than 512 levels".into(),
        ),
    ));
    cases.push(Case {
        name: "count_tokens: JSON nested exactly 512 deep".into(),
        path: "/v1/messages/count_tokens",
        send: Send::Json(at_limit),
        expect: Expect::Tokens,
    });
    cases.push(Case {
        name: "count_tokens: JSON nested 513 deep".into(),
        path: "/v1/messages/count_tokens",
        send: Send::Json(past_limit),
        expect: Expect::Says(
            400,
            "invalid_request_error",
            "invalid JSON body: nesting deeper than 512 levels".into(),
        ),
    });
    // Block types: one Anthropic does not know is a 400 naming the field (as Anthropic
    // answers); known ones an OpenAI backend cannot take degrade.
    let bogus = content(json!([{"type": "text", "text": "hi"}, {"type": "bogus"}]));
    cases.push(case(
        "content block of a type Anthropic does not know",
        Send::Json(bogus.clone()),
        Expect::Says(
            400,
            "invalid_request_error",
            "messages.0.content.1.type: Input tag 'bogus' found using 'type' does not match any of the expected tags: 'text', 'image'".into(),
        ),
    ));
    cases.push(Case {
        name: "count_tokens: content block of a type Anthropic does not know".into(),
        path: "/v1/messages/count_tokens",
        send: Send::Json(bogus),
        expect: Expect::Says(
            400,
            "invalid_request_error",
            "messages.0.content.1.type: Input tag 'bogus'".into(),
        ),
    });
    cases.push(case(
        "thinking block inside a tool_result",
        Send::Json(json!({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                "content": [{"type": "thinking", "thinking": "x", "signature": ""}]}]}
        ]})),
        Expect::Says(
            400,
            "invalid_request_error",
            "messages.2.content.0.content.0.type: Input tag 'thinking'".into(),
        ),
    ));
    cases.push(case(
        "known blocks OpenAI cannot take (search_result, server tool blocks, container_upload)",
        Send::Json(json!({"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [
            {"role": "user", "content": [
                {"type": "search_result", "source": "s", "title": "t", "content": [{"type": "text", "text": "r"}]},
                {"type": "container_upload", "file_id": "f"},
                {"type": "text", "text": "use it"}]},
            {"role": "assistant", "content": [
                {"type": "server_tool_use", "id": "s1", "name": "web_search", "input": {}},
                {"type": "web_search_tool_result", "tool_use_id": "s1", "content": []},
                {"type": "text", "text": "ok"}]},
            {"role": "user", "content": "more"}
        ]})),
        Expect::Works(Box::new(|seen| {
            assert_eq!(seen.body["messages"][0]["content"], "use it");
            assert_eq!(seen.body["messages"][1]["content"], "ok");
        })),
    ));
    cases.extend(wrong_type_cases());

    // Odd but valid: each goes upstream once.
    cases.push(case(
        "duplicate keys (last wins, as serde_json and Python do)",
        raw(br#"{"model":"claude-opus-4-1","max_tokens":9,"max_tokens":7,"messages":[{"role":"user","content":"first","content":"second"}]}"#),
        Expect::Works(Box::new(|seen| {
            assert_eq!(seen.body["max_tokens"], 7);
            assert_eq!(seen.body["messages"][0]["content"], "second");
        })),
    ));
    cases.push(case(
        "tiny float temperature (1e-400 underflows to 0)",
        raw(br#"{"model":"claude","max_tokens":5,"temperature":1e-400,"messages":[{"role":"user","content":"x"}]}"#),
        Expect::Works(Box::new(|seen| assert_eq!(seen.body["temperature"], 0.0))),
    ));
    let tools: Vec<Value> = (0..10_000)
        .map(|i| json!({"name": format!("tool_{i}"), "input_schema": {"type": "object"}}))
        .collect();
    cases.push(case(
        "10,000 tools",
        Send::Json(with("/tools", Value::Array(tools))),
        Expect::Works(Box::new(|seen| {
            assert_eq!(seen.body["tools"].as_array().map(Vec::len), Some(10_000));
        })),
    ));
    let history: Vec<Value> = (0..20_000)
        .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": format!("m{i}")}))
        .collect();
    cases.push(case(
        "20,000 messages",
        Send::Json(with("/messages", Value::Array(history))),
        Expect::Works(Box::new(|seen| {
            assert_eq!(seen.body["messages"].as_array().map(Vec::len), Some(20_000));
        })),
    ));
    cases.push(case(
        "max_tokens 128000 (clamped by the model cap)",
        Send::Json(with("/max_tokens", json!(128_000))),
        Expect::Works(Box::new(|seen| assert_eq!(seen.body["max_tokens"], 16_384))),
    ));
    cases.push(case(
        "cache_ttl_secs 1.5 (truncated, as the seed API does)",
        Send::Json(with("/cache_ttl_secs", json!(1.5))),
        Expect::Works(Box::new(|seen| {
            assert!(seen.body.get("cache_ttl_secs").is_none())
        })),
    ));
    cases.push(case(
        "NUL, RTL and emoji in text",
        Send::Json(content(json!("a\u{0}b \u{202e}gnp.exe 🦀"))),
        Expect::Works(Box::new(|seen| {
            assert_eq!(
                seen.body["messages"][0]["content"],
                "a\u{0}b \u{202e}gnp.exe 🦀"
            );
        })),
    ));
    cases.push(case(
        "1 MB model name",
        Send::Json(with(
            "/model",
            json!(format!("claude-{}", "x".repeat(1 << 20))),
        )),
        works(),
    ));
    cases.push(case(
        "unknown top-level fields are not forwarded",
        Send::Json(with("/__proto__", json!({"polluted": true}))),
        Expect::Works(Box::new(|seen| {
            assert!(seen.body.get("__proto__").is_none());
        })),
    ));
    cases.push(case(
        "content-type with charset",
        Send::Bytes(
            vec![("content-type", "application/json; charset=utf-8".to_owned())],
            anthropic_request("charset").to_string().into_bytes(),
        ),
        works(),
    ));
    cases.push(case(
        "no content-type",
        Send::Bytes(
            Vec::new(),
            anthropic_request("no type").to_string().into_bytes(),
        ),
        works(),
    ));

    // Wrong content types: refused before the body is read.
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
    ] {
        cases.push(case(
            format!("content-type {content_type}"),
            Send::Bytes(
                vec![("content-type", content_type.to_owned())],
                base().to_string().into_bytes(),
            ),
            bad(415, "invalid_request_error"),
        ));
    }
    cases.push(Case {
        name: "chat/completions with text/plain (OpenAI shape)".into(),
        path: "/v1/chat/completions",
        send: Send::Bytes(
            vec![("content-type", "text/plain".to_owned())],
            br#"{"model":"gpt-4o","messages":[]}"#.to_vec(),
        ),
        expect: Expect::OpenAi(415),
    });

    // count_tokens gets the same validation.
    for (name, body) in [
        (
            "count_tokens: nested 100,000 deep",
            [vec![b'['; 100_000], vec![b']'; 100_000]].concat(),
        ),
        (
            "count_tokens: invalid UTF-8",
            b"{\"model\":\"\xff\"}".to_vec(),
        ),
        (
            "count_tokens: messages is a number",
            br#"{"model":"claude","messages":5}"#.to_vec(),
        ),
        ("count_tokens: empty body", Vec::new()),
    ] {
        cases.push(Case {
            name: name.into(),
            path: "/v1/messages/count_tokens",
            send: Send::Bytes(json_type(), body),
            expect: invalid(),
        });
    }

    // Framing the HTTP layer refuses.
    let wait = Duration::from_secs(5);
    cases.push(case(
        "garbage request line",
        Send::Raw("GARBAGE\r\n\r\n".into(), BodyPlan::Bytes(Vec::new()), wait),
        Expect::HttpThenClose(400),
    ));
    cases.push(case(
        "1 MiB header value",
        Send::Raw(
            post_head(
                "/v1/messages",
                &[&format!("x-big: {}", "a".repeat(1 << 20))],
            ),
            BodyPlan::Bytes(Vec::new()),
            wait,
        ),
        Expect::HttpThenClose(431),
    ));
    let many: Vec<String> = (0..200).map(|i| format!("x-h{i}: v")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    cases.push(case(
        "200 headers",
        Send::Raw(
            post_head("/v1/messages", &many),
            BodyPlan::Bytes(Vec::new()),
            wait,
        ),
        Expect::HttpThenClose(431),
    ));
    cases.push(case(
        "non-numeric content-length",
        Send::Raw(
            post_head("/v1/messages", &["content-length: abc"]),
            BodyPlan::Bytes(Vec::new()),
            wait,
        ),
        Expect::HttpThenClose(400),
    ));
    cases.push(case(
        "two different content-lengths",
        Send::Raw(
            post_head("/v1/messages", &["content-length: 5", "content-length: 7"]),
            BodyPlan::Bytes(b"{}{}{}{".to_vec()),
            wait,
        ),
        Expect::HttpThenClose(400),
    ));
    let body = base().to_string();
    cases.push(case(
        "content-length and chunked together (smuggling)",
        Send::Raw(
            post_head(
                "/v1/messages",
                &[
                    "content-type: application/json",
                    &format!("content-length: {}", body.len()),
                    "transfer-encoding: chunked",
                ],
            ),
            BodyPlan::Bytes(body.into_bytes()),
            wait,
        ),
        Expect::HttpThenClose(400),
    ));
    cases.push(case(
        "malformed chunk size",
        Send::Raw(
            post_head(
                "/v1/messages",
                &[
                    "content-type: application/json",
                    "transfer-encoding: chunked",
                ],
            ),
            BodyPlan::Bytes(b"zz\r\n{}\r\n0\r\n\r\n".to_vec()),
            wait,
        ),
        invalid(),
    ));
    cases.push(case(
        "expect: 100-continue with a 100 MB content-length",
        Send::Raw(
            post_head(
                "/v1/messages",
                &[
                    "content-type: application/json",
                    "content-length: 104857600",
                    "expect: 100-continue",
                ],
            ),
            BodyPlan::Bytes(Vec::new()),
            wait,
        ),
        bad(413, "request_too_large"),
    ));
    cases.push(case(
        "client vanishes after the head",
        Send::Raw(
            post_head(
                "/v1/messages",
                &["content-type: application/json", "content-length: 1000"],
            ),
            BodyPlan::Vanish(Vec::new()),
            wait,
        ),
        Expect::ClientGone,
    ));
    cases.push(case(
        "client vanishes mid-body",
        Send::Raw(
            post_head(
                "/v1/messages",
                &["content-type: application/json", "content-length: 1000"],
            ),
            BodyPlan::Vanish(br#"{"model":"claude","max_tokens":5,"messages":[{"#.to_vec()),
            wait,
        ),
        Expect::ClientGone,
    ));
    cases.push(case(
        "client vanishes mid-chunk",
        Send::Raw(
            post_head(
                "/v1/messages",
                &[
                    "content-type: application/json",
                    "transfer-encoding: chunked",
                ],
            ),
            BodyPlan::Vanish(b"400\r\n{\"model\":".to_vec()),
            wait,
        ),
        Expect::ClientGone,
    ));
    cases.push(case(
        "path with a trailing slash",
        Send::Json(base()),
        bad(404, "not_found_error"),
    ));
    if let Some(last) = cases.last_mut() {
        last.path = "/v1/messages/";
    }
    cases.push(case(
        "path with a double slash",
        Send::Json(base()),
        bad(404, "not_found_error"),
    ));
    if let Some(last) = cases.last_mut() {
        last.path = "//v1/messages";
    }
    cases.push(case(
        "path traversal",
        Send::Json(base()),
        bad(404, "not_found_error"),
    ));
    if let Some(last) = cases.last_mut() {
        last.path = "/v1/../v1/messages";
    }
    cases
}

/// Runs one case; returns the outcome as a table cell.
async fn run_case(proxy: &Running, mock: &MockUpstream, case: Case) -> String {
    let before = mock.calls();
    let url = proxy.url(case.path);
    let started = Instant::now();
    let (answer, closed) = match case.send {
        Send::Json(value) => (Some(post_json(&url, &[], &value).await), false),
        Send::Bytes(headers, bytes) => {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            (
                Some(send(build(Method::POST, &url, &headers, bytes)).await),
                false,
            )
        }
        Send::Raw(head, plan, wait) => {
            let head = head.replace("POST /v1/messages ", &format!("POST {} ", case.path));
            let raw = raw_exchange(proxy.addr, &head, plan, wait).await;
            match raw.status {
                Some(_) => (Some(raw.answer()), raw.closed),
                None => (None, raw.closed),
            }
        }
    };
    let elapsed = started.elapsed();
    let name = &case.name;
    let outcome = match case.expect {
        Expect::Anthropic(status, kind) => {
            let answer = answer.unwrap_or_else(|| panic!("{name}: no answer"));
            assert_eq!(answer.status, status, "{name}: {}", answer.text());
            assert_anthropic_error(&answer, status, kind);
            let message = answer.json()["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .chars()
                .take(70)
                .collect::<String>();
            format!("{status} {kind}: {message}")
        }
        Expect::Says(status, kind, prefix) => {
            let answer = answer.unwrap_or_else(|| panic!("{name}: no answer"));
            assert_anthropic_error(&answer, status, kind);
            let message = answer.json()["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(message.starts_with(&prefix), "{name}: {message}");
            let shown: String = message.chars().take(70).collect();
            format!("{status} {kind}: {shown}")
        }
        Expect::Tokens => {
            let answer = answer.unwrap_or_else(|| panic!("{name}: no answer"));
            assert_eq!(answer.status, 200, "{name}: {}", answer.text());
            assert!(
                answer.json()["input_tokens"]
                    .as_u64()
                    .is_some_and(|n| n > 0),
                "{name}"
            );
            "200 input_tokens".to_owned()
        }
        Expect::OpenAi(status) => {
            let answer = answer.unwrap_or_else(|| panic!("{name}: no answer"));
            assert_eq!(answer.status, status, "{name}: {}", answer.text());
            let body = answer.json();
            assert!(body["error"]["message"].is_string() && body.get("type").is_none());
            format!("{status} (OpenAI error shape)")
        }
        Expect::HttpThenClose(status) => {
            let answer = answer.unwrap_or_else(|| panic!("{name}: no answer"));
            assert_eq!(answer.status, status, "{name}: {}", answer.text());
            assert!(closed, "{name}: the connection stays open");
            format!("{status} from hyper, connection closed")
        }
        Expect::ClientGone => {
            assert!(answer.is_none());
            "client gone; nothing sent upstream".to_owned()
        }
        Expect::Works(check) => {
            let answer = answer.unwrap_or_else(|| panic!("{name}: no answer"));
            assert_eq!(answer.status, 200, "{name}: {}", answer.text());
            assert_eq!(answer.json()["type"], "message", "{name}");
            assert_eq!(mock.calls(), before + 1, "{name}: one upstream call");
            check(&mock.last_request());
            "200 message (forwarded once)".to_owned()
        }
    };
    if !matches!(outcome.as_str(), "200 message (forwarded once)") {
        // Give a vanished client's server task time to notice, then make sure nothing left.
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(mock.calls(), before, "{name}: the upstream was called");
    }
    // The proxy keeps serving.
    let after = mock.calls();
    let ok = post_json(
        &proxy.url("/v1/messages"),
        &[],
        &anthropic_request(&format!("after {name}")),
    )
    .await;
    assert_eq!(ok.status, 200, "after {name}: {}", ok.text());
    assert_eq!(mock.calls(), after + 1);
    assert!(proxy.is_running(), "after {name}");
    format!("{outcome} ({} ms)", elapsed.as_millis())
}

#[tokio::test]
async fn hostile_requests_get_4xx_never_reach_the_upstream_and_the_proxy_keeps_serving() {
    let mock = MockUpstream::start().await;
    let proxy = start_for(&mock, &[]).await;
    let cases = hostile_cases();
    let total = cases.len();
    let rejected = cases
        .iter()
        .filter(|c| !matches!(c.expect, Expect::Works(_)))
        .count();
    assert!(rejected >= 50, "{rejected} rejected cases");
    let mut table = String::from("| case | outcome |\n| --- | --- |\n");
    for case in cases {
        let name = case.name.clone();
        let outcome = run_case(&proxy, &mock, case).await;
        let _ = writeln!(table, "| {name} | {outcome} |");
    }
    println!("{total} cases ({rejected} rejected)\n{table}");
}

// ---------------------------------------------------------------------------------------------
// Sizes
// ---------------------------------------------------------------------------------------------

const MB: usize = 1024 * 1024;

fn big_request_bytes(string_len: usize) -> Vec<u8> {
    json_bytes(
        r#"{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[{"role":"user","content":""#,
        &vec![b'a'; string_len],
        r#""}]}"#,
    )
}

#[tokio::test]
async fn a_50_mb_string_is_413_with_content_length_or_chunked() {
    let mock = MockUpstream::start().await;
    let proxy = start_for(&mock, &[]).await; // default limit: 32 MiB
    let body = big_request_bytes(50 * MB);
    let started = Instant::now();
    let raw = raw_exchange(
        proxy.addr,
        &post_head(
            "/v1/messages",
            &[
                "content-type: application/json",
                &format!("content-length: {}", body.len()),
            ],
        ),
        BodyPlan::Bytes(body.clone()),
        Duration::from_secs(20),
    )
    .await;
    assert_anthropic_error(&raw.answer(), 413, "request_too_large");
    // Refused on the declared length, before reading the body.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // Chunked: no length up front, refused once 32 MiB arrived.
    let mut chunked = Vec::with_capacity(body.len() + body.len() / 1000);
    for piece in body.chunks(64 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let raw = raw_exchange(
        proxy.addr,
        &post_head(
            "/v1/messages",
            &[
                "content-type: application/json",
                "transfer-encoding: chunked",
            ],
        ),
        BodyPlan::Bytes(chunked),
        Duration::from_secs(30),
    )
    .await;
    assert_anthropic_error(&raw.answer(), 413, "request_too_large");
    assert_eq!(mock.calls(), 0);

    let ok = post_json(
        &proxy.url("/v1/messages"),
        &[],
        &anthropic_request("after 50 MB"),
    )
    .await;
    assert_eq!(ok.status, 200);
}

#[tokio::test]
async fn a_20_mb_string_works_under_a_raised_limit() {
    let mock = MockUpstream::start().await;
    let proxy = start_for(&mock, &[("BODY_LIMIT_BYTES", "64MiB")]).await;
    let body = big_request_bytes(20 * MB);
    let answer = tokio::time::timeout(
        Duration::from_secs(60),
        common::client().request(build(
            Method::POST,
            &proxy.url("/v1/messages"),
            &[("content-type", "application/json")],
            body,
        )),
    )
    .await
    .expect("in time")
    .expect("response");
    assert_eq!(answer.status(), 200);
    let seen = mock.last_request();
    assert_eq!(
        seen.body["messages"][0]["content"].as_str().map(str::len),
        Some(20 * MB),
        "the 20 MB string reached the upstream whole"
    );
}

// ---------------------------------------------------------------------------------------------
// Slow and vanishing clients
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_body_sent_one_byte_per_second_times_out_with_408_and_a_close() {
    let mock = MockUpstream::start().await;
    // The minimum rate (16 KiB/s by default) counts after a 1 s grace period here.
    let proxy = start_for(
        &mock,
        &[("BODY_GRACE_SECS", "1"), ("BODY_FIRST_BYTE_SECS", "1")],
    )
    .await;
    let body = base().to_string().into_bytes();
    // The chunked case must drip a well-formed chunked body: raw JSON bytes would be an
    // invalid chunk size (a 400 racing the 408 timer).
    let mut chunked = format!("{:x}\r\n", body.len()).into_bytes();
    chunked.extend_from_slice(&body);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    for (name, head, bytes) in [
        (
            "content-length",
            post_head(
                "/v1/messages",
                &[
                    "content-type: application/json",
                    &format!("content-length: {}", body.len()),
                ],
            ),
            body.clone(),
        ),
        (
            "chunked",
            post_head(
                "/v1/messages",
                &[
                    "content-type: application/json",
                    "transfer-encoding: chunked",
                ],
            ),
            chunked,
        ),
    ] {
        let raw = raw_exchange(
            proxy.addr,
            &head,
            BodyPlan::Drip {
                bytes,
                every: Duration::from_secs(1),
            },
            Duration::from_secs(5),
        )
        .await;
        assert_anthropic_error(&raw.answer(), 408, "invalid_request_error");
        assert_eq!(raw.header("connection"), Some("close"), "{name}");
        assert!(raw.closed, "{name}: the connection is closed");
        assert!(
            raw.elapsed >= Duration::from_millis(900) && raw.elapsed < Duration::from_secs(3),
            "{name}: {:?}",
            raw.elapsed
        );
    }
    // The same over count_tokens, and a slow but timely body still works.
    let raw = raw_exchange(
        proxy.addr,
        &post_head(
            "/v1/messages/count_tokens",
            &["content-type: application/json", "content-length: 50"],
        ),
        BodyPlan::Drip {
            bytes: vec![b' '; 50],
            every: Duration::from_secs(1),
        },
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(raw.status, Some(408));
    let timely = anthropic_request("slow but in time")
        .to_string()
        .into_bytes();
    let raw = raw_exchange(
        proxy.addr,
        &post_head(
            "/v1/messages",
            &[
                "content-type: application/json",
                &format!("content-length: {}", timely.len()),
            ],
        ),
        BodyPlan::Drip {
            bytes: timely,
            every: Duration::from_millis(3),
        },
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        raw.status,
        Some(200),
        "{}",
        String::from_utf8_lossy(&raw.body)
    );
    assert_eq!(mock.calls(), 1);
}

#[tokio::test]
async fn a_stalled_http2_body_times_out_with_408() {
    let mock = MockUpstream::start().await;
    let proxy = start_for(
        &mock,
        &[("BODY_GRACE_SECS", "1"), ("BODY_FIRST_BYTE_SECS", "1")],
    )
    .await;
    let h2: hyper_util::client::legacy::Client<_, ClientBody> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let stalled = futures_util::stream::iter([Ok::<_, BoxError>(Frame::data(Bytes::from_static(
        b"{\"model\":",
    )))])
    .chain(futures_util::stream::pending());
    let req = Request::post(proxy.url("/v1/messages"))
        .header("content-type", "application/json")
        .body(StreamBody::new(stalled).boxed_unsync())
        .expect("request");
    let started = Instant::now();
    let res = tokio::time::timeout(WAIT, h2.request(req))
        .await
        .expect("in time")
        .expect("response");
    assert_eq!(res.status(), 408);
    let body = res.into_body().collect().await.expect("body").to_bytes();
    let body: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(mock.calls(), 0);
}

#[tokio::test]
async fn body_rate_settings_and_their_defaults() {
    let mock = MockUpstream::start().await;
    let config = config_for(&mock, &[]);
    assert_eq!(config.body_read_timeout, Some(Duration::from_secs(30)));
    let rate = config.body_rate;
    assert_eq!(rate.get_first_byte(), Duration::from_secs(10));
    assert_eq!(rate.get_grace(), Duration::from_secs(10));
    assert_eq!(rate.get_min_bytes_per_sec(), 16 * 1024);
    assert_eq!(rate.get_max_gap(), Some(Duration::from_secs(30)));
    let config = config_for(
        &mock,
        &[
            ("BODY_READ_TIMEOUT_SECS", "0"),
            ("BODY_MIN_RATE", "0"),
            ("BODY_FIRST_BYTE_SECS", "3"),
            ("BODY_GRACE_SECS", "0"),
        ],
    );
    assert_eq!(config.body_read_timeout, None);
    assert_eq!(config.body_rate.get_max_gap(), None);
    assert_eq!(config.body_rate.get_min_bytes_per_sec(), 0);
    assert_eq!(config.body_rate.get_first_byte(), Duration::from_secs(3));
    assert_eq!(config.body_rate.get_grace(), Duration::ZERO);
    assert_eq!(
        config_for(&mock, &[("BODY_MIN_RATE", "1MiB")])
            .body_rate
            .get_min_bytes_per_sec(),
        1 << 20
    );
}

/// `BODY_READ_TIMEOUT_SECS` is the longest pause inside a body: a fast start does not buy a
/// long stall, even with no minimum rate.
#[tokio::test]
async fn a_body_that_stalls_after_a_fast_start_times_out_after_the_longest_pause() {
    let mock = MockUpstream::start().await;
    let proxy = start_for(
        &mock,
        &[("BODY_READ_TIMEOUT_SECS", "1"), ("BODY_MIN_RATE", "0")],
    )
    .await;
    let body = base().to_string().into_bytes();
    let head = post_head(
        "/v1/messages",
        &[
            "content-type: application/json",
            &format!("content-length: {}", body.len() + 10),
        ],
    );
    let raw = raw_exchange(
        proxy.addr,
        &head,
        BodyPlan::Bytes(body),
        Duration::from_secs(5),
    )
    .await;
    assert_anthropic_error(&raw.answer(), 408, "invalid_request_error");
    assert!(
        raw.elapsed >= Duration::from_millis(900) && raw.elapsed < Duration::from_secs(3),
        "{:?}",
        raw.elapsed
    );
    assert_eq!(mock.calls(), 0);
}

/// With the default numbers (10 s to begin, 10 s of grace, 16 KiB/s): a 1 byte/s trickle
/// and an endless chunked body at 4 KiB/s are answered 408 within 15 s, while a 2 MB upload at
/// 200 KB/s, running at the same time, arrives whole. (32 MiB at 1 MB/s would take 33 s of
/// test time: `parsed`'s unit tests run it on tokio's paused clock.)
#[tokio::test]
async fn with_the_default_rate_a_trickle_fails_and_a_steady_upload_passes() {
    let mock = MockUpstream::start().await;
    let proxy = start_for(&mock, &[]).await;
    let trickle = base().to_string().into_bytes();
    let trickle_head = post_head(
        "/v1/messages",
        &[
            "content-type: application/json",
            &format!("content-length: {}", trickle.len()),
        ],
    );
    let trickle = raw_exchange(
        proxy.addr,
        &trickle_head,
        BodyPlan::Drip {
            bytes: trickle,
            every: Duration::from_secs(1),
        },
        Duration::from_secs(20),
    );
    // Chunks of 1 KiB of JSON whitespace, never the end: 4 KiB/s.
    let mut endless = Vec::new();
    for _ in 0..200 {
        endless.extend_from_slice(b"400\r\n");
        endless.extend_from_slice(&[b' '; 1024]);
        endless.extend_from_slice(b"\r\n");
    }
    let endless_head = post_head(
        "/v1/messages",
        &[
            "content-type: application/json",
            "transfer-encoding: chunked",
        ],
    );
    let endless = raw_exchange(
        proxy.addr,
        &endless_head,
        BodyPlan::Paced {
            bytes: endless,
            chunk: 1029,
            every: Duration::from_millis(250),
        },
        Duration::from_secs(20),
    );
    let big = anthropic_request(&"s".repeat(2_000_000))
        .to_string()
        .into_bytes();
    let len = big.len();
    let steady_head = post_head(
        "/v1/messages",
        &[
            "content-type: application/json",
            &format!("content-length: {len}"),
        ],
    );
    let steady = raw_exchange(
        proxy.addr,
        &steady_head,
        BodyPlan::Paced {
            bytes: big,
            chunk: 20_000,
            every: Duration::from_millis(100),
        },
        Duration::from_secs(25),
    );
    let (trickle, endless, steady) = tokio::join!(trickle, endless, steady);
    for (name, raw) in [("trickle", &trickle), ("endless", &endless)] {
        assert_anthropic_error(&raw.answer(), 408, "invalid_request_error");
        assert!(
            raw.elapsed >= Duration::from_millis(9_500) && raw.elapsed < Duration::from_secs(15),
            "{name}: {:?}",
            raw.elapsed
        );
        assert_eq!(raw.header("connection"), Some("close"), "{name}");
    }
    assert_eq!(
        steady.status,
        Some(200),
        "{}",
        String::from_utf8_lossy(&steady.body)
    );
    assert!(
        steady.elapsed >= Duration::from_secs(9),
        "{:?}",
        steady.elapsed
    );
    assert_eq!(mock.calls(), 1);
    assert_eq!(
        mock.last_request().body["messages"][0]["content"]
            .as_str()
            .map(str::len),
        Some(2_000_000)
    );
}

/// A connection that sends nothing, half an HTTP/2 preface, or goes quiet after a request is
/// closed within the header read timeout: idle sockets cannot pile up until the proxy runs
/// out of descriptors.
#[tokio::test]
async fn idle_connections_are_closed_by_the_header_read_timeout() {
    let mock = MockUpstream::start().await;
    let proxy = start_for(&mock, &[("HEADER_READ_TIMEOUT_SECS", "1")]).await;
    let cases = [
        ("silent", &b""[..]),
        ("half an HTTP/2 preface", &b"PRI * HTTP/2.0\r\n"[..]),
        ("one byte of a request line", &b"P"[..]),
        (
            "a kept-alive connection after one request",
            &b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n"[..],
        ),
    ];
    let checks = cases.into_iter().map(|(name, first)| async move {
        let mut stream = tokio::net::TcpStream::connect(proxy.addr)
            .await
            .expect("connect");
        tokio::io::AsyncWriteExt::write_all(&mut stream, first)
            .await
            .expect("write");
        let started = Instant::now();
        let mut buf = [0u8; 4096];
        let closed = tokio::time::timeout(Duration::from_secs(4), async {
            while let Ok(n) = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await
        .is_ok();
        let elapsed = started.elapsed();
        assert!(closed, "{name}: still open after {elapsed:?}");
        assert!(
            elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
            "{name}: {elapsed:?}"
        );
    });
    futures_util::future::join_all(checks).await;
    assert_eq!(mock.calls(), 0);
    let ok = post_json(
        &proxy.url("/v1/messages"),
        &[],
        &anthropic_request("after idle"),
    )
    .await;
    assert_eq!(ok.status, 200);
}

/// `cache_ttl_secs` is the cache's own setting: with the cache switched off it is still
/// validated (the same 400s), and it never reaches a backend, on either LLM route.
#[tokio::test]
async fn cache_ttl_secs_is_checked_and_never_forwarded_with_the_cache_off() {
    let mock = MockUpstream::start().await;
    let proxy = start_for(&mock, &[("CACHE_ENABLED", "false")]).await;
    let openai = |ttl: Value| {
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
               "cache_ttl_secs": ttl})
    };
    let anthropic = |ttl: Value| {
        let mut request = base();
        request["cache_ttl_secs"] = ttl;
        request
    };
    for ttl in [
        json!("60"),
        json!(-1),
        json!(86_401),
        json!(true),
        json!([60]),
    ] {
        let answer = post_json(&proxy.url("/v1/messages"), &[], &anthropic(ttl.clone())).await;
        assert_anthropic_error(&answer, 400, "invalid_request_error");
        assert!(
            answer.text().contains("cache_ttl_secs"),
            "{}",
            answer.text()
        );
        let answer = post_json(
            &proxy.url("/v1/chat/completions"),
            &[],
            &openai(ttl.clone()),
        )
        .await;
        assert_eq!(answer.status, 400, "{ttl}: {}", answer.text());
        let body = answer.json();
        assert!(body.get("type").is_none(), "OpenAI shape: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("cache_ttl_secs")),
            "{body}"
        );
    }
    assert_eq!(mock.calls(), 0, "no invalid TTL reached the upstream");
    for (path, request) in [
        ("/v1/chat/completions", openai(json!(60))),
        ("/v1/messages", anthropic(json!(0))),
    ] {
        let answer = post_json(&proxy.url(path), &[], &request).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.text());
        let seen = mock.last_request();
        assert!(
            seen.body.get("cache_ttl_secs").is_none(),
            "{path}: {}",
            seen.body
        );
        assert!(
            !String::from_utf8_lossy(&seen.raw).contains("cache_ttl_secs"),
            "{path}"
        );
    }
    assert_eq!(mock.calls(), 2);
}

// ---------------------------------------------------------------------------------------------
// Idle connections: keep-alive and HTTP/2
// ---------------------------------------------------------------------------------------------

/// Waits (bounded) until the server closes `stream`; how long that took, or `None`.
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match tokio::io::AsyncReadExt::read(stream, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|()| started.elapsed())
}

/// The HTTP/2 preface and an empty SETTINGS frame: a client that then does nothing (and,
/// reading nothing, answers no ping).
const H2_HELLO: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[tokio::test]
async fn idle_keep_alive_and_http2_connections_are_closed_after_the_idle_timeout() {
    let mock = MockUpstream::start().await;
    // A long header timeout, so only the idle timeout can close these; no pings.
    let proxy = start_for(
        &mock,
        &[
            ("IDLE_TIMEOUT_SECS", "1"),
            ("HEADER_READ_TIMEOUT_SECS", "30"),
            ("H2_PING_INTERVAL_SECS", "0"),
        ],
    )
    .await;
    let mut h1 = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(
        &mut h1,
        b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n",
    )
    .await
    .expect("write");
    let mut h2 = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut h2, H2_HELLO)
        .await
        .expect("write");
    let (h1, h2) = tokio::join!(
        closed_within(&mut h1, Duration::from_secs(5)),
        closed_within(&mut h2, Duration::from_secs(5))
    );
    for (name, elapsed) in [("HTTP/1 keep-alive", h1), ("HTTP/2", h2)] {
        let elapsed = elapsed.unwrap_or_else(|| panic!("{name}: still open after 5 s"));
        assert!(
            elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(3),
            "{name}: {elapsed:?}"
        );
    }
    // A request that lasts longer than the idle timeout is not cut: its body is in flight.
    mock.push(
        Reply::sse(vec![
            role_chunk(),
            text_chunk("slow"),
            text_chunk(" answer"),
            finish_chunk("stop"),
        ])
        .delay_each(Duration::from_millis(600)),
    );
    let mut request = anthropic_request("slow stream");
    request["stream"] = json!(true);
    let answer = post_json(&proxy.url("/v1/messages"), &[], &request).await;
    assert_eq!(answer.status, 200);
    assert!(answer.text().contains("message_stop"), "{}", answer.text());
}

#[tokio::test]
async fn http2_clients_that_do_not_answer_pings_are_disconnected() {
    let mock = MockUpstream::start().await;
    let proxy = start_for(
        &mock,
        &[
            ("IDLE_TIMEOUT_SECS", "0"),
            ("H2_PING_INTERVAL_SECS", "1"),
            ("H2_PING_TIMEOUT_SECS", "1"),
        ],
    )
    .await;
    let mut h2 = tokio::net::TcpStream::connect(proxy.addr)
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut h2, H2_HELLO)
        .await
        .expect("write");
    let elapsed = closed_within(&mut h2, Duration::from_secs(6))
        .await
        .expect("closed once the ping went unanswered");
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
    // Settings and defaults.
    let config = config_for(&mock, &[]);
    assert_eq!(config.idle_timeout, Some(Duration::from_secs(60)));
    assert_eq!(config.h2_ping_interval, Some(Duration::from_secs(30)));
    assert_eq!(config.h2_ping_timeout, Duration::from_secs(20));
    assert_eq!(config.stream_max, Some(Duration::from_secs(3600)));
    assert_eq!(config.max_json_depth, 512);
    assert!(config.allowed_origins.is_empty() && config.allowed_hosts.is_empty());
}

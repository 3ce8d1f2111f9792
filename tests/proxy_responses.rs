//! The example proxy with `OPENAI_WIRE=responses` (or `--wire responses`): real sockets on
//! both sides, the mock upstream speaking OpenAI's Responses API.

#[path = "../examples/proxy/main.rs"]
#[allow(dead_code, unused_imports)] // `main`, a few helpers and re-exports are for the binary only.
mod proxy;

mod common;
mod common_redis;
mod proxy_support;

use std::collections::HashMap;

use common::*;
use proxy_support::{UPSTREAM_KEY, config_for, start};
use serde_json::{Value, json};

fn responses_answer(text: &str) -> Value {
    json!({"id": "resp_1", "object": "response", "status": "completed", "model": "gpt-5",
           "output": [
               {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAAenc"},
               {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}]}],
           "usage": {"input_tokens": 30, "input_tokens_details": {"cached_tokens": 10},
                     "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 2},
                     "total_tokens": 35}})
}

#[tokio::test]
async fn the_wire_setting_parses_from_env_and_flag() {
    let mock = MockUpstream::start().await;
    assert_eq!(config_for(&mock, &[]).wire, proxy::Wire::Chat);
    assert_eq!(
        config_for(&mock, &[("OPENAI_WIRE", "responses")]).wire,
        proxy::Wire::Responses
    );
    let env: HashMap<&str, &str> = [("OPENAI_WIRE", "chat")].into_iter().collect();
    let parsed =
        proxy::Config::from_sources(["--wire".to_owned(), "responses".to_owned()], |name| {
            env.get(name).map(|v| (*v).to_owned())
        });
    match parsed {
        Ok(proxy::Command::Run(config)) => assert_eq!(config.wire, proxy::Wire::Responses),
        other => panic!("{other:?}"),
    }
    let err = proxy::Config::from_sources(std::iter::empty(), |name| {
        (name == "OPENAI_WIRE").then(|| "completions".to_owned())
    })
    .expect_err("unknown wire");
    assert_eq!(
        err.to_string(),
        "OPENAI_WIRE=\"completions\": must be chat or responses"
    );
}

#[tokio::test]
async fn messages_go_to_the_responses_endpoint() {
    let mock = MockUpstream::start().await;
    mock.set_default(Reply::json(responses_answer("Bonjour")));
    let proxy = start(config_for(
        &mock,
        &[("OPENAI_WIRE", "responses"), ("BIG_MODEL", "gpt-5")],
    ))
    .await;
    let request = json!({"model": "claude-sonnet-4-5", "max_tokens": 64,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "messages": [{"role": "user", "content": "Hello in French (responses wire)"}]});
    let answer = post_json(
        &proxy.url("/v1/messages"),
        &[
            ("x-api-key", "client-key"),
            ("anthropic-version", "2023-06-01"),
        ],
        &request,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let message = answer.json();
    assert_eq!(message["content"][0]["type"], "thinking");
    assert_eq!(
        message["content"][0]["signature"],
        "llm-bridge.responses.v1:rs_1:gAAAAenc"
    );
    assert_eq!(message["content"][1]["text"], "Bonjour");
    assert_eq!(message["usage"]["input_tokens"], 20);
    assert_eq!(message["usage"]["cache_read_input_tokens"], 10);

    let seen = mock.last_request();
    assert_eq!(seen.path, "/v1/responses");
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );
    assert!(seen.header("x-api-key").is_none());
    assert_eq!(seen.body["model"], "gpt-5");
    assert_eq!(seen.body["store"], false);
    assert_eq!(seen.body["include"], json!(["reasoning.encrypted_content"]));
    assert_eq!(
        seen.body["reasoning"],
        json!({"effort": "low", "summary": "auto"})
    );

    // The next turn hands the reasoning back.
    let next = json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": [
        {"role": "user", "content": "Hello in French (responses wire)"},
        {"role": "assistant", "content": message["content"].clone()},
        {"role": "user", "content": "And in German?"}]});
    let answer = post_json(&proxy.url("/v1/messages"), &[], &next).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let seen = mock.last_request();
    assert_eq!(
        seen.body["input"][1],
        json!({"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAAenc"})
    );
}

#[tokio::test]
async fn streams_are_translated_from_responses_events() {
    let mock = MockUpstream::start().await;
    let events = [
        json!({"type": "response.created", "sequence_number": 0,
               "response": {"id": "resp_1", "status": "in_progress", "output": []}}),
        json!({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
               "item": {"type": "message", "id": "msg_1", "role": "assistant", "content": []}}),
        json!({"type": "response.output_text.delta", "sequence_number": 2, "output_index": 0,
               "item_id": "msg_1", "content_index": 0, "delta": "Hallo", "logprobs": []}),
        json!({"type": "response.output_item.done", "sequence_number": 3, "output_index": 0,
               "item": {"type": "message", "id": "msg_1", "role": "assistant",
                        "content": [{"type": "output_text", "text": "Hallo"}]}}),
        json!({"type": "response.completed", "sequence_number": 4,
               "response": {"status": "completed", "output": [],
                            "usage": {"input_tokens": 8, "output_tokens": 1}}}),
    ];
    let body: String = events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap_or("")))
        .collect();
    mock.set_default(Reply::raw(200, "text/event-stream", body));
    let proxy = start(config_for(&mock, &[("OPENAI_WIRE", "responses")])).await;
    let request = json!({"model": "claude-haiku-4-5", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "Hello in German (stream)"}]});
    let answer = post_json(&proxy.url("/v1/messages"), &[], &request).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("content-type"), Some("text/event-stream"));
    let text = answer.text();
    let kinds: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("event: "))
        .collect();
    assert_eq!(
        kinds,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert!(text.contains(r#"{"type":"text_delta","text":"Hallo"}"#));
    assert_eq!(mock.last_request().path, "/v1/responses");
    assert_eq!(mock.last_request().body["stream"], true);
}

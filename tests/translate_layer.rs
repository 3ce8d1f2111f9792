//! The translation layer in front of a `service_fn` mock OpenAI upstream: what the upstream
//! receives and what the client gets, for golden request/response pairs, every upstream error
//! status, and a table of malformed requests that must never reach the upstream.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use serde_json::{Value, json};
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_bridge::translate::{
    AnthropicToOpenAiLayer, MaxTokensCaps, ModelMap, ReasoningModels,
};

#[derive(Debug)]
struct Seen {
    method: String,
    path: String,
    headers: HeaderMap,
    body: Value,
}

#[derive(Clone)]
struct Upstream {
    seen: Arc<Mutex<Vec<Seen>>>,
    reply: Arc<dyn Fn() -> Response<Full<Bytes>> + Send + Sync>,
}

impl Upstream {
    fn replying(reply: impl Fn() -> Response<Full<Bytes>> + Send + Sync + 'static) -> Self {
        Self {
            seen: Arc::default(),
            reply: Arc::new(reply),
        }
    }

    fn json(status: u16, body: Value) -> Self {
        Self::replying(move || {
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .header("retry-after", "9")
                .body(Full::new(Bytes::from(body.to_string())))
                .expect("response")
        })
    }

    fn calls(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }

    fn last_body(&self) -> Value {
        self.seen
            .lock()
            .expect("lock")
            .last()
            .expect("a call")
            .body
            .clone()
    }

    async fn send(
        &self,
        layer: AnthropicToOpenAiLayer,
        request: Request<Full<Bytes>>,
    ) -> (StatusCode, HeaderMap, Value) {
        let upstream = self.clone();
        let service = ServiceBuilder::new().layer(layer).service_fn(
            move |req: Request<Either<Full<Bytes>, Full<Bytes>>>| {
                let upstream = upstream.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let bytes = body.collect().await.expect("body").to_bytes();
                    upstream.seen.lock().expect("lock").push(Seen {
                        method: parts.method.to_string(),
                        path: parts.uri.to_string(),
                        headers: parts.headers,
                        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                    });
                    Ok::<_, Infallible>((upstream.reply)())
                }
            },
        );
        let res = service.oneshot(request).await.expect("infallible");
        let (parts, body) = res.into_parts();
        let bytes = body.collect().await.expect("body").to_bytes();
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (parts.status, parts.headers, json)
    }
}

fn layer() -> AnthropicToOpenAiLayer {
    AnthropicToOpenAiLayer::new().model_map(ModelMap::big_small("gpt-4o", "gpt-4o-mini"))
}

fn messages_request(body: &Value) -> Request<Full<Bytes>> {
    Request::post("/v1/messages?beta=true")
        .header("content-type", "application/json")
        .header("x-api-key", "sk-ant-client-secret")
        .header("authorization", "Bearer client-token")
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "interleaved-thinking-2025-05-14")
        .header("x-custom-trace", "kept")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request")
}

fn completion(message: Value, finish: &str) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
           "choices": [{"index": 0, "message": message, "finish_reason": finish}],
           "usage": {"prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37}})
}

#[tokio::test]
async fn plain_text_golden_pair_and_upstream_request_shape() {
    let upstream = Upstream::json(
        200,
        completion(
            json!({"role": "assistant", "content": "Hello there"}),
            "stop",
        ),
    );
    let request = json!({"model": "claude-haiku-4-5", "max_tokens": 50,
                         "messages": [{"role": "user", "content": "Hi"}]});
    let (status, headers, message) = upstream.send(layer(), messages_request(&request)).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers.contains_key("request-id"));
    assert!(!headers.contains_key("x-llm-bridge-degraded"));
    assert_eq!(message["model"], "claude-haiku-4-5");
    assert_eq!(
        message["content"],
        json!([{"type": "text", "text": "Hello there"}])
    );
    assert_eq!(message["stop_reason"], "end_turn");
    assert_eq!(message["usage"]["input_tokens"], 30);
    assert_eq!(message["usage"]["output_tokens"], 7);

    let seen = upstream.seen.lock().expect("lock");
    let call = &seen[0];
    assert_eq!(call.method, "POST");
    assert_eq!(
        call.path, "/v1/chat/completions",
        "query string dropped, path rewritten"
    );
    assert_eq!(
        call.body,
        json!({"model": "gpt-4o-mini", "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}]})
    );
    assert_eq!(call.headers["content-type"], "application/json");
    assert_eq!(
        call.headers["content-length"],
        serde_json::to_vec(&call.body)
            .expect("json")
            .len()
            .to_string()
            .as_str()
    );
    for secret in [
        "x-api-key",
        "authorization",
        "anthropic-version",
        "anthropic-beta",
    ] {
        assert!(
            !call.headers.contains_key(secret),
            "{secret} must not reach the upstream"
        );
    }
    assert_eq!(call.headers["x-custom-trace"], "kept");
}

#[tokio::test]
async fn system_blocks_golden_pair() {
    let upstream = Upstream::json(200, completion(json!({"content": "ok"}), "stop"));
    let request = json!({"model": "claude-sonnet-4-5", "max_tokens": 10,
        "system": [{"type": "text", "text": "Rule one."}, {"type": "text", "text": "Rule two.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "go"}]}]});
    let (status, _, _) = upstream.send(layer(), messages_request(&request)).await;
    assert_eq!(status, 200);
    assert_eq!(
        upstream.last_body()["messages"],
        json!([{"role": "system", "content": "Rule one.\nRule two."}, {"role": "user", "content": "go"}])
    );
}

#[tokio::test]
async fn multi_turn_round_trip_with_two_parallel_tools() {
    // Turn 1: the upstream asks for two tools at once.
    let upstream = Upstream::json(
        200,
        completion(
            json!({"role": "assistant", "content": "Checking both.", "tool_calls": [
                {"id": "call_w", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}},
                {"id": "call_t", "type": "function", "function": {"name": "time", "arguments": "{\"tz\":\"CET\"}"}}
            ]}),
            "tool_calls",
        ),
    );
    let tools = json!([
        {"name": "weather", "description": "Weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
        {"name": "time", "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}}}
    ]);
    let first = json!({"model": "claude-sonnet-4-5", "max_tokens": 200, "tools": tools,
        "messages": [{"role": "user", "content": "Weather and time in Oslo?"}]});
    let (status, _, message) = upstream.send(layer(), messages_request(&first)).await;
    assert_eq!(status, 200);
    assert_eq!(message["stop_reason"], "tool_use");
    assert_eq!(
        message["content"],
        json!([
            {"type": "text", "text": "Checking both."},
            {"type": "tool_use", "id": "call_w", "name": "weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "call_t", "name": "time", "input": {"tz": "CET"}}
        ])
    );
    assert_eq!(
        upstream.last_body()["tools"][1]["function"]["parameters"],
        tools[1]["input_schema"]
    );

    // Turn 2: the client sends the assistant turn back with both results.
    let upstream = Upstream::json(200, completion(json!({"content": "Sunny, 14:00."}), "stop"));
    let second = json!({"model": "claude-sonnet-4-5", "max_tokens": 200, "tools": tools,
    "messages": [
        {"role": "user", "content": "Weather and time in Oslo?"},
        {"role": "assistant", "content": message["content"].clone()},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_w", "content": "Sunny"},
            {"type": "tool_result", "tool_use_id": "call_t", "content": [{"type": "text", "text": "14:00"}]},
            {"type": "text", "text": "Summarise."}
        ]}
    ]});
    let (status, _, message) = upstream.send(layer(), messages_request(&second)).await;
    assert_eq!(status, 200);
    assert_eq!(message["content"][0]["text"], "Sunny, 14:00.");
    assert_eq!(
        upstream.last_body()["messages"],
        json!([
            {"role": "user", "content": "Weather and time in Oslo?"},
            {"role": "assistant", "content": "Checking both.", "tool_calls": [
                {"id": "call_w", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}},
                {"id": "call_t", "type": "function", "function": {"name": "time", "arguments": "{\"tz\":\"CET\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_w", "content": "Sunny"},
            {"role": "tool", "tool_call_id": "call_t", "content": [{"type": "text", "text": "14:00"}]},
            {"role": "user", "content": "Summarise."}
        ])
    );
}

#[tokio::test]
async fn images_golden_pair() {
    let upstream = Upstream::json(200, completion(json!({"content": "A cat."}), "stop"));
    let request = json!({"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/webp", "data": "UklGRg=="}},
        {"type": "image", "source": {"type": "url", "url": "https://img.example/cat.png"}},
        {"type": "text", "text": "What is it?"}
    ]}]});
    let (status, _, _) = upstream.send(layer(), messages_request(&request)).await;
    assert_eq!(status, 200);
    assert_eq!(
        upstream.last_body()["messages"][0]["content"],
        json!([
            {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklGRg=="}},
            {"type": "image_url", "image_url": {"url": "https://img.example/cat.png"}},
            {"type": "text", "text": "What is it?"}
        ])
    );
}

#[tokio::test]
async fn stop_sequences_golden_pair() {
    let upstream = Upstream::replying(|| {
        let body = json!({"choices": [{"index": 0, "message": {"content": "1, 2, 3"}, "finish_reason": "stop", "stop_reason": "4"}],
                          "usage": {"prompt_tokens": 5, "completion_tokens": 5}});
        Response::new(Full::new(Bytes::from(body.to_string())))
    });
    let request = json!({"model": "claude-sonnet-4-5", "max_tokens": 10, "stop_sequences": ["4", "five"],
        "messages": [{"role": "user", "content": "count"}]});
    let (status, _, message) = upstream.send(layer(), messages_request(&request)).await;
    assert_eq!(status, 200);
    assert_eq!(upstream.last_body()["stop"], json!(["4", "five"]));
    assert_eq!(message["stop_reason"], "stop_sequence");
    assert_eq!(message["stop_sequence"], "4");
}

#[tokio::test]
async fn thinking_config_and_reasoning_model_mapping() {
    let upstream = Upstream::json(
        200,
        completion(
            json!({"reasoning_content": "step by step", "content": "4"}),
            "stop",
        ),
    );
    let layer = AnthropicToOpenAiLayer::new()
        .model_map(
            ModelMap::new()
                .contains("opus", "o4-mini")
                .default_model("gpt-4o"),
        )
        .reasoning_models(ReasoningModels::default())
        .max_tokens_caps(MaxTokensCaps::new().cap("o4-mini", 100_000));
    let request = json!({"model": "claude-opus-4-1", "max_tokens": 128000, "temperature": 1,
        "system": "Be exact.", "thinking": {"type": "enabled", "budget_tokens": 20000},
        "messages": [{"role": "user", "content": "2+2"}]});
    let (status, headers, message) = upstream.send(layer, messages_request(&request)).await;
    assert_eq!(status, 200);
    assert!(!headers.contains_key("x-llm-bridge-degraded"));
    assert_eq!(
        upstream.last_body(),
        json!({"model": "o4-mini", "max_completion_tokens": 100000, "reasoning_effort": "high",
               "messages": [{"role": "developer", "content": "Be exact."}, {"role": "user", "content": "2+2"}]})
    );
    assert_eq!(
        message["content"],
        json!([{"type": "thinking", "thinking": "step by step", "signature": ""}, {"type": "text", "text": "4"}])
    );
    assert_eq!(message["model"], "claude-opus-4-1");
}

#[tokio::test]
async fn degraded_features_are_reported_in_a_header() {
    let upstream = Upstream::json(200, completion(json!({"content": "ok"}), "stop"));
    let request = json!({"model": "claude-sonnet-4-5", "max_tokens": 10, "top_k": 5,
        "messages": [{"role": "user", "content": [{"type": "document", "source": {"type": "text", "data": "x", "media_type": "text/plain"}}]}]});
    let (status, headers, _) = upstream.send(layer(), messages_request(&request)).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-llm-bridge-degraded"], "document,top_k");
}

#[tokio::test]
async fn every_upstream_error_status_maps_per_spec_29() {
    let cases = [
        (400, 400, "invalid_request_error"),
        (401, 401, "authentication_error"),
        (402, 402, "billing_error"),
        (403, 403, "permission_error"),
        (404, 404, "not_found_error"),
        (409, 409, "invalid_request_error"),
        (413, 413, "request_too_large"),
        (422, 422, "invalid_request_error"),
        (429, 429, "rate_limit_error"),
        (500, 500, "api_error"),
        (502, 502, "api_error"),
        (503, 529, "overloaded_error"),
        (504, 504, "timeout_error"),
        (529, 529, "overloaded_error"),
    ];
    let request = json!({"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]});
    for (upstream_status, status, kind) in cases {
        let upstream = Upstream::json(
            upstream_status,
            json!({"error": {"message": format!("upstream says {upstream_status}"), "type": "x", "code": upstream_status}}),
        );
        let (got, headers, body) = upstream.send(layer(), messages_request(&request)).await;
        assert_eq!(
            got.as_u16(),
            status,
            "status for upstream {upstream_status}"
        );
        assert_eq!(
            body,
            json!({"type": "error", "error": {"type": kind, "message": format!("upstream says {upstream_status}")}}),
            "body for upstream {upstream_status}"
        );
        assert_eq!(
            headers["retry-after"], "9",
            "retry-after passed through for {upstream_status}"
        );
        assert!(headers.contains_key("request-id"));
    }
}

#[tokio::test]
async fn upstream_garbage_is_a_bad_gateway() {
    let upstream = Upstream::replying(|| {
        Response::new(Full::new(Bytes::from_static(b"<html>proxy error</html>")))
    });
    let request = json!({"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]});
    let (status, _, body) = upstream.send(layer(), messages_request(&request)).await;
    assert_eq!(status, 502);
    assert_eq!(body["error"]["type"], "api_error");
}

#[tokio::test]
async fn other_routes_pass_through_untouched() {
    let upstream = Upstream::json(200, json!({"object": "list", "data": []}));
    let request = Request::post("/v1/chat/completions")
        .header("authorization", "Bearer keep-me")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"gpt-4o","messages":[]}"#,
        )))
        .expect("request");
    let (status, _, body) = upstream.send(layer(), request).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"object": "list", "data": []}));
    {
        let seen = upstream.seen.lock().expect("lock");
        assert_eq!(seen[0].body, json!({"model": "gpt-4o", "messages": []}));
        assert_eq!(seen[0].headers["authorization"], "Bearer keep-me");
    }
    let get = Request::get("/v1/messages")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let (status, _, _) = upstream.send(layer(), get).await;
    assert_eq!(status, 200, "GET /v1/messages is not ours to translate");
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test]
async fn malformed_requests_get_anthropic_400s_and_never_reach_upstream() {
    let ok_message = json!([{"role": "user", "content": "x"}]);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("invalid JSON", b"{\"model\": ".to_vec(), 400, "not valid JSON"),
        ("empty body", Vec::new(), 400, "request body is empty"),
        ("not an object", b"[1,2,3]".to_vec(), 400, "must be a JSON object"),
        ("trailing garbage", b"{\"model\":\"m\"} x".to_vec(), 400, "not valid JSON"),
        ("invalid UTF-8", b"{\"model\":\"\xff\xfe\"}".to_vec(), 400, "not valid JSON"),
        ("missing model", json!({"max_tokens": 5, "messages": ok_message}).to_string().into_bytes(), 400, "model: field required"),
        ("model not a string", json!({"model": ["a"], "max_tokens": 5, "messages": ok_message}).to_string().into_bytes(), 400, "model: must be a string"),
        ("empty model", json!({"model": "", "max_tokens": 5, "messages": ok_message}).to_string().into_bytes(), 400, "model: must not be empty"),
        ("missing max_tokens", json!({"model": "m", "messages": ok_message}).to_string().into_bytes(), 400, "max_tokens: field required"),
        ("max_tokens string", json!({"model": "m", "max_tokens": "5", "messages": ok_message}).to_string().into_bytes(), 400, "max_tokens: must be an integer"),
        ("max_tokens negative", json!({"model": "m", "max_tokens": -1, "messages": ok_message}).to_string().into_bytes(), 400, "max_tokens: must be an integer from 1"),
        ("max_tokens absurd", json!({"model": "m", "max_tokens": 1e30, "messages": ok_message}).to_string().into_bytes(), 400, "max_tokens: must be an integer from 1"),
        ("max_tokens fraction", json!({"model": "m", "max_tokens": 1.5, "messages": ok_message}).to_string().into_bytes(), 400, "max_tokens: must be an integer from 1"),
        ("missing messages", json!({"model": "m", "max_tokens": 5}).to_string().into_bytes(), 400, "messages: field required"),
        ("messages not array", json!({"model": "m", "max_tokens": 5, "messages": {"role": "user"}}).to_string().into_bytes(), 400, "messages: must be an array"),
        ("empty messages", json!({"model": "m", "max_tokens": 5, "messages": []}).to_string().into_bytes(), 400, "messages: at least one message"),
        ("message not object", json!({"model": "m", "max_tokens": 5, "messages": ["hi"]}).to_string().into_bytes(), 400, "messages.0: must be an object"),
        ("unknown role", json!({"model": "m", "max_tokens": 5, "messages": [{"role": "wizard", "content": "x"}]}).to_string().into_bytes(), 400, "messages.0.role"),
        ("missing role", json!({"model": "m", "max_tokens": 5, "messages": [{"content": "x"}]}).to_string().into_bytes(), 400, "messages.0.role: field required"),
        ("content number", json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": 1}]}).to_string().into_bytes(), 400, "messages.0.content"),
        ("missing content", json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user"}]}).to_string().into_bytes(), 400, "messages.0.content: field required"),
        ("block without type", json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"text": "x"}]}]}).to_string().into_bytes(), 400, "messages.0.content.0.type: field required"),
        ("text not string", json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}).to_string().into_bytes(), 400, "messages.0.content.0.text: must be a string"),
        ("image without source", json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "image"}]}]}).to_string().into_bytes(), 400, "messages.0.content.0.source: field required"),
        ("tool_result without id", json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}]}).to_string().into_bytes(), 400, "messages.0.content.0.tool_use_id: field required"),
        ("tool_use without name", json!({"model": "m", "max_tokens": 5, "messages": [{"role": "assistant", "content": [{"type": "tool_use", "id": "t", "input": {}}]}]}).to_string().into_bytes(), 400, "messages.0.content.0.name: field required"),
        ("temperature string", json!({"model": "m", "max_tokens": 5, "temperature": "hot", "messages": ok_message}).to_string().into_bytes(), 400, "temperature: must be a number"),
        ("temperature out of range", json!({"model": "m", "max_tokens": 5, "temperature": 3, "messages": ok_message}).to_string().into_bytes(), 400, "temperature: must be between 0 and 1"),
        ("stream not bool", json!({"model": "m", "max_tokens": 5, "stream": "yes", "messages": ok_message}).to_string().into_bytes(), 400, "stream: must be a boolean"),
        ("stop_sequences not strings", json!({"model": "m", "max_tokens": 5, "stop_sequences": [1], "messages": ok_message}).to_string().into_bytes(), 400, "stop_sequences.0: must be a string"),
        ("tools not array", json!({"model": "m", "max_tokens": 5, "tools": {}, "messages": ok_message}).to_string().into_bytes(), 400, "tools: must be an array"),
        ("tool without name", json!({"model": "m", "max_tokens": 5, "tools": [{"input_schema": {}}], "messages": ok_message}).to_string().into_bytes(), 400, "tools.0.name: field required"),
        ("tool schema not object", json!({"model": "m", "max_tokens": 5, "tools": [{"name": "t", "input_schema": "x"}], "messages": ok_message}).to_string().into_bytes(), 400, "tools.0.input_schema: must be an object"),
        ("tool_choice bad type", json!({"model": "m", "max_tokens": 5, "tool_choice": {"type": "maybe"}, "messages": ok_message}).to_string().into_bytes(), 400, "tool_choice.type"),
        ("tool_choice tool without name", json!({"model": "m", "max_tokens": 5, "tool_choice": {"type": "tool"}, "messages": ok_message}).to_string().into_bytes(), 400, "tool_choice.name: field required"),
        ("system number", json!({"model": "m", "max_tokens": 5, "system": 1, "messages": ok_message}).to_string().into_bytes(), 400, "system: must be a string"),
        ("thinking not object", json!({"model": "m", "max_tokens": 5, "thinking": true, "messages": ok_message}).to_string().into_bytes(), 400, "thinking: must be an object"),
        ("metadata user not string", json!({"model": "m", "max_tokens": 5, "metadata": {"user_id": 1}, "messages": ok_message}).to_string().into_bytes(), 400, "metadata.user_id: must be a string"),
    ];
    assert!(cases.len() >= 20);
    for (name, body, status, needle) in cases {
        let upstream = Upstream::json(200, completion(json!({"content": "never"}), "stop"));
        let request = Request::post("/v1/messages")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("request");
        let (got, headers, error) = upstream.send(layer(), request).await;
        assert_eq!(got.as_u16(), status, "{name}");
        assert_eq!(headers["content-type"], "application/json", "{name}");
        assert_eq!(error["type"], "error", "{name}");
        assert_eq!(error["error"]["type"], "invalid_request_error", "{name}");
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(needle),
            "{name}: {message:?} should contain {needle:?}"
        );
        assert_eq!(
            upstream.calls(),
            0,
            "{name}: the upstream must not be called"
        );
    }
}

#[tokio::test]
async fn body_over_the_limit_is_413_without_upstream_call() {
    let upstream = Upstream::json(200, completion(json!({"content": "never"}), "stop"));
    let big = json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x".repeat(2048)}]});
    let (status, _, error) = upstream
        .send(layer().body_limit(1024), messages_request(&big))
        .await;
    assert_eq!(status, 413);
    assert_eq!(error["error"]["type"], "request_too_large");
    assert_eq!(upstream.calls(), 0);
}

#[tokio::test]
async fn streams_are_requested_with_usage_and_come_back_as_anthropic_events() {
    let upstream = Upstream::replying(|| {
        let chunks = [
            json!({"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
            json!({"id": "c", "choices": [{"index": 0, "delta": {"content": "Hel"}}]}),
            json!({"id": "c", "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]}),
            json!({"id": "c", "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 2}}),
        ];
        let mut sse = String::new();
        for chunk in chunks {
            sse.push_str(&format!("data: {chunk}\n\n"));
        }
        sse.push_str("data: [DONE]\n\n");
        Response::builder()
            .header("content-type", "text/event-stream")
            .header("content-length", sse.len())
            .body(Full::new(Bytes::from(sse)))
            .expect("response")
    });
    let request = json!({"model": "claude-haiku-4-5", "max_tokens": 50, "stream": true,
                         "messages": [{"role": "user", "content": "Hi"}]});
    let (status, headers, body) = upstream.send(layer(), messages_request(&request)).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(
        !headers.contains_key("content-length"),
        "a translated stream has no known length"
    );
    let sent = upstream.last_body();
    assert_eq!(sent["stream"], true);
    assert_eq!(sent["stream_options"], json!({"include_usage": true}));
    assert_eq!(
        upstream.seen.lock().expect("lock")[0].headers["accept"],
        "text/event-stream"
    );

    let text = body.as_str().expect("SSE text");
    let events: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("event: "))
        .collect();
    assert_eq!(
        events,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let message_delta: Value = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .find(|event| event["type"] == "message_delta")
        .expect("message_delta");
    assert_eq!(message_delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(message_delta["usage"]["output_tokens"], 2);
}

#[tokio::test]
async fn a_stream_refused_before_it_starts_keeps_the_real_status() {
    let upstream = Upstream::json(
        429,
        json!({"error": {"message": "slow down", "type": "rate_limit"}}),
    );
    let request = json!({"model": "claude-haiku-4-5", "max_tokens": 50, "stream": true,
                         "messages": [{"role": "user", "content": "Hi"}]});
    let (status, headers, body) = upstream.send(layer(), messages_request(&request)).await;
    assert_eq!(status, 429);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        body,
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
    );
}

/// Alone (no cache in front), the layer still refuses an invalid `cache_ttl_secs` with the
/// cache's 400, and never forwards a valid one.
#[tokio::test]
async fn cache_ttl_secs_is_validated_without_a_cache_and_never_forwarded() {
    let upstream = Upstream::json(200, completion(json!({"content": "ok"}), "stop"));
    let mut request = json!({"model": "claude-sonnet-4-5", "max_tokens": 5,
                             "messages": [{"role": "user", "content": "hi"}]});
    for ttl in [json!("60"), json!(-5), json!(86_401)] {
        request["cache_ttl_secs"] = ttl;
        let (status, _, body) = upstream.send(layer(), messages_request(&request)).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("cache_ttl_secs"))
        );
    }
    assert_eq!(upstream.calls(), 0);
    request["cache_ttl_secs"] = json!(60);
    let (status, _, _) = upstream.send(layer(), messages_request(&request)).await;
    assert_eq!(status, 200);
    assert!(upstream.last_body().get("cache_ttl_secs").is_none());
}

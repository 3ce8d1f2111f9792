//! `examples/axum.rs` over a real socket: the user's own routes and the LLM stack (cache,
//! route, translation) side by side in one axum `Router`, in front of the mock OpenAI upstream.

#[path = "../examples/axum.rs"]
#[allow(dead_code)] // `main` is for the binary only.
mod axum_example;

mod common;

use common::*;
use serde_json::json;

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(listener, router).await.expect("serve");
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn own_routes_and_the_llm_stack_share_one_router() {
    let mock = MockUpstream::start().await;
    let router = axum_example::app(
        &mock.base_url(),
        Some("sk-axum-backend"),
        "big-m",
        "small-m",
    )
    .expect("app");
    let base = serve(router).await;

    let answer = get(&format!("{base}/"), &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), "your own app");
    assert_eq!(mock.calls(), 0, "the user's routes never reach the backend");

    let request = json!({"model": "claude-haiku-4-5", "max_tokens": 32,
                         "messages": [{"role": "user", "content": "Hello from axum"}]});
    let headers = [("x-api-key", "caller-key-1")];
    let answer = post_json(&format!("{base}/v1/messages"), &headers, &request).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("x-cache"), Some("MISS"));
    assert_eq!(answer.header("x-llm-bridge-backend"), Some("small"));
    let message = answer.json();
    assert_eq!(message["model"], "claude-haiku-4-5");
    assert_eq!(message["content"][0]["text"], "Hello from mock");
    let seen = mock.last_request();
    assert_eq!(seen.path, "/v1/chat/completions");
    assert_eq!(seen.body["model"], "small-m");
    assert_eq!(seen.header("authorization"), Some("Bearer sk-axum-backend"));
    assert!(
        seen.header("x-api-key").is_none(),
        "the caller's key stays here"
    );

    // The same request again: answered by the cache, the backend is not called.
    let answer = post_json(&format!("{base}/v1/messages"), &headers, &request).await;
    assert_eq!(answer.header("x-cache"), Some("HIT"));
    assert_eq!(answer.json()["content"][0]["text"], "Hello from mock");
    assert_eq!(mock.calls(), 1);

    // A failing small model falls back to the big one.
    mock.push(Reply::error(503, "overloaded"));
    let other = json!({"model": "claude-haiku-4-5", "max_tokens": 32,
                       "messages": [{"role": "user", "content": "fall back in axum"}]});
    let answer = post_json(&format!("{base}/v1/messages"), &headers, &other).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("x-llm-bridge-backend"), Some("big"));
    assert_eq!(mock.last_request().body["model"], "big-m");

    // Other names go to the big model; other paths are axum's 404.
    let sonnet = json!({"model": "claude-sonnet-4-5", "max_tokens": 32,
                        "messages": [{"role": "user", "content": "big please"}]});
    let answer = post_json(&format!("{base}/v1/messages"), &headers, &sonnet).await;
    assert_eq!(answer.header("x-llm-bridge-backend"), Some("big"));
    assert_eq!(get(&format!("{base}/nowhere"), &[]).await.status, 404);
}

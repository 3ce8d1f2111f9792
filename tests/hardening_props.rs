//! Property tests for the invariants the fuzz targets check, run on stable in the normal
//! suite: request translation never panics on arbitrary JSON (Anthropic-shaped or not) and
//! either yields a valid OpenAI JSON body or a 400 in Anthropic's error shape; response
//! translation yields a valid message or a 502; any byte stream through the stream
//! translator yields valid Anthropic SSE with exactly one terminal event; and every upstream
//! status maps to an Anthropic error of the right shape.

#[path = "../fuzz/fuzz_targets/common.rs"]
mod fuzz_targets;

use http::StatusCode;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tower_llm_bridge::error::ApiError;

/// Field names and values the translators look at, so random trees hit real code paths.
const KEYS: &[&str] = &[
    "model",
    "max_tokens",
    "messages",
    "role",
    "content",
    "type",
    "text",
    "system",
    "source",
    "data",
    "media_type",
    "url",
    "id",
    "name",
    "input",
    "tool_use_id",
    "is_error",
    "tools",
    "input_schema",
    "description",
    "tool_choice",
    "stop_sequences",
    "stream",
    "temperature",
    "top_p",
    "top_k",
    "metadata",
    "user_id",
    "thinking",
    "budget_tokens",
    "output_config",
    "effort",
    "cache_control",
    "signature",
    "disable_parallel_tool_use",
    "choices",
    "message",
    "delta",
    "finish_reason",
    "tool_calls",
    "function",
    "arguments",
    "usage",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_content",
    "refusal",
    "error",
    "index",
];

const WORDS: &[&str] = &[
    "user",
    "assistant",
    "system",
    "tool",
    "text",
    "image",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
    "document",
    "base64",
    "url",
    "auto",
    "any",
    "none",
    "enabled",
    "disabled",
    "adaptive",
    "stop",
    "length",
    "tool_calls",
    "content_filter",
    "claude-haiku-4-5",
    "claude-sonnet-4-5",
    "o3-mini",
    "image/png",
    "{}",
    "{\"a\":1}",
    "",
    "```json\n{}\n```",
    "high",
    "low",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-2.0f64..2.0).prop_map(Value::from),
        (0u64..300_000).prop_map(Value::from),
        prop::sample::select(WORDS).prop_map(Value::from),
        "[a-zé🦀 \\n\"\\\\{}]{0,12}".prop_map(Value::from),
    ]
}

fn tree() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..7).prop_map(|pairs| {
                Value::Object(
                    pairs
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

/// A content block: mostly well formed, sometimes with a random field.
fn block() -> impl Strategy<Value = Value> {
    let text = "[a-z 🦀]{0,10}";
    let valid = prop_oneof![
        text.prop_map(|t| json!({"type": "text", "text": t})),
        Just(json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}})),
        Just(json!({"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}})),
        ("[a-z]{1,6}", tree()).prop_map(|(name, input)| {
            let input = if input.is_object() { input } else { json!({"v": input}) };
            json!({"type": "tool_use", "id": format!("toolu_{name}"), "name": name, "input": input})
        }),
        (text, any::<bool>()).prop_map(|(t, e)| {
            json!({"type": "tool_result", "tool_use_id": "toolu_x", "content": t, "is_error": e})
        }),
        text.prop_map(|t| json!({"type": "tool_result", "tool_use_id": "toolu_y",
                                   "content": [{"type": "text", "text": t},
                                               {"type": "image", "source": {"type": "url", "url": "u"}}]})),
        text.prop_map(|t| json!({"type": "thinking", "thinking": t, "signature": "s"})),
        Just(json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}})),
        (prop::sample::select(KEYS), tree()).prop_map(|(k, v)| json!({"type": "text", "text": "x", k: v})),
    ];
    prop_oneof![8 => valid, 1 => tree()]
}

fn message() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(&["user", "assistant", "user", "assistant", "system", "robot"][..]),
        prop_oneof![
            4 => "[a-z ]{0,10}".prop_map(Value::from),
            4 => prop::collection::vec(block(), 0..4).prop_map(Value::Array),
            1 => leaf(),
        ],
    )
        .prop_map(|(role, content)| json!({"role": role, "content": content}))
}

/// An Anthropic request: mostly valid, with optional fields drawn valid or random.
fn anthropic_request() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            prop::sample::select(
                &["claude-haiku-4-5", "claude-sonnet-4-5", "o3-mini", "gpt-4o"][..]
            )
            .prop_map(Value::from),
            leaf()
        ],
        prop_oneof![4 => (1u64..200_000).prop_map(Value::from), 1 => leaf()],
        prop::collection::vec(message(), 0..5),
        prop::collection::vec((prop::sample::select(KEYS), tree()), 0..2),
        any::<bool>(),
    )
        .prop_map(|(model, max_tokens, messages, extra, stream)| {
            let mut request = json!({"model": model, "max_tokens": max_tokens,
                                     "messages": messages, "stream": stream});
            for (key, value) in extra {
                request[key] = value;
            }
            request
        })
}

fn completion() -> impl Strategy<Value = Value> {
    let tool_call = ("[a-z]{0,4}", "[a-z]{0,4}", prop_oneof![tree().prop_map(|t| t.to_string()), "[{}a-z\":]{0,10}"])
        .prop_map(|(id, name, arguments)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}));
    (
        prop::option::of("[a-z END]{0,12}"),
        prop::option::of("[a-z]{0,6}"),
        prop::collection::vec(tool_call, 0..3),
        prop::sample::select(&["stop", "length", "tool_calls", "content_filter", "other"][..]),
        prop::collection::vec((prop::sample::select(KEYS), tree()), 0..3),
        (0u64..1_000, 0u64..1_000, 0u64..2_000),
    )
        .prop_map(|(content, reasoning, calls, finish, extra, (prompt, completion, cached))| {
            let mut message = json!({"role": "assistant", "content": content, "tool_calls": calls});
            if let Some(reasoning) = reasoning {
                message["reasoning_content"] = json!(reasoning);
            }
            let mut choice = json!({"index": 0, "message": message, "finish_reason": finish});
            for (key, value) in extra {
                choice[key] = value;
            }
            json!({"choices": [choice], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                   "prompt_tokens_details": {"cached_tokens": cached}}})
        })
}

/// `[flags, 0]` then SSE bytes: the stream target without split points of its own; the
/// property splits with its own cuts below.
fn stream_input(flags: u8, cuts: &[u16], sse: &[u8]) -> Vec<u8> {
    let mut input = vec![flags, cuts.len() as u8];
    for cut in cuts {
        input.extend_from_slice(&cut.to_le_bytes());
    }
    input.extend_from_slice(sse);
    input
}

fn chunk_stream() -> impl Strategy<Value = Vec<u8>> {
    let chunk = prop_oneof![
        tree(),
        "[a-z 🦀]{0,8}".prop_map(|t| json!({"choices": [{"delta": {"content": t}}]})),
        "[a-z]{0,8}".prop_map(|t| json!({"choices": [{"delta": {"reasoning_content": t}}]})),
        (0u32..3, prop::option::of("[a-z]{1,4}"), "[{}a-z\":,]{0,8}").prop_map(|(index, name, arguments)| {
            json!({"choices": [{"delta": {"tool_calls": [{"index": index, "id": name.as_ref().map(|n| format!("call_{n}")),
                  "function": {"name": name, "arguments": arguments}}]}}]})
        }),
        prop::sample::select(&["stop", "length", "tool_calls"][..])
            .prop_map(|f| json!({"choices": [{"delta": {}, "finish_reason": f}]})),
        (0u64..100, 0u64..100).prop_map(|(p, c)| json!({"choices": [], "usage": {"prompt_tokens": p, "completion_tokens": c}})),
    ];
    let line = prop_oneof![
        8 => chunk.prop_map(|c| format!("data: {c}\n\n")),
        1 => Just("data: [DONE]\n\n".to_owned()),
        1 => Just(": keep-alive\n\n".to_owned()),
        1 => "[a-z:\\n\\r ]{0,12}",
        1 => Just("event: error\ndata: {\"error\":{\"message\":\"overloaded\"}}\n\n".to_owned()),
    ];
    prop::collection::vec(line, 0..10).prop_map(|lines| lines.concat().into_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn request_translation_never_panics_and_answers_json_or_a_400(request in anthropic_request()) {
        fuzz_targets::request(request.to_string().as_bytes());
    }

    #[test]
    fn request_translation_never_panics_on_arbitrary_json(value in tree()) {
        fuzz_targets::request(value.to_string().as_bytes());
    }

    #[test]
    fn response_translation_gives_a_message_or_a_502(completion in completion()) {
        fuzz_targets::response(completion.to_string().as_bytes());
    }

    #[test]
    fn response_translation_never_panics_on_arbitrary_json(value in tree()) {
        fuzz_targets::response(value.to_string().as_bytes());
    }

    #[test]
    fn any_stream_gives_valid_sse_with_one_terminal_event(
        sse in chunk_stream(),
        flags in 0u8..8,
        cuts in prop::collection::vec(any::<u16>(), 0..6),
    ) {
        fuzz_targets::stream(&stream_input(flags, &cuts, &sse));
    }
}

/// Mostly-valid requests do reach the translated (Ok) path: the generator is not just
/// producing 400s.
#[test]
fn the_request_generator_reaches_successful_translations() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let options = tower_llm_bridge::translate::TranslateOptions::default();
    let mut runner = TestRunner::deterministic();
    let strategy = anthropic_request();
    let ok = (0..300)
        .filter(|_| {
            let request = strategy.new_tree(&mut runner).expect("tree").current();
            tower_llm_bridge::translate::translate_request(&request, &options).is_ok()
        })
        .count();
    assert!(ok >= 30, "only {ok} of 300 generated requests translate");
}

#[test]
fn every_upstream_status_maps_to_an_anthropic_error() {
    for code in 100..=599u16 {
        let Ok(status) = StatusCode::from_u16(code) else {
            continue;
        };
        let err = ApiError::from_upstream_status(status, format!("upstream said {code}"));
        let out = err.status().as_u16();
        assert!((400..=599).contains(&out), "{code} → {out}");
        let expected = match code {
            401 => "authentication_error",
            402 => "billing_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            504 => "timeout_error",
            400..=499 => "invalid_request_error",
            _ => "api_error",
        };
        assert_eq!(err.error_type(), expected, "{code}");
        match code {
            400..=499 => assert_eq!(out, code, "4xx keep their status"),
            503 | 529 => assert_eq!(out, 529),
            500..=599 => assert_eq!(out, code),
            _ => assert_eq!(out, 502, "{code}: not an error status → 502"),
        }
        let body: Value = serde_json::from_slice(&err.anthropic_body()).expect("json");
        assert_eq!(
            body,
            json!({"type": "error", "error": {"type": expected, "message": format!("upstream said {code}")}})
        );
    }
}

//! One test (or more) per SPEC §1 item.

use serde_json::{Value, json};

use super::*;
use crate::translate::{MaxTokensCaps, ModelMap, TranslateOptions};

fn options() -> TranslateOptions {
    TranslateOptions::default().model_map(ModelMap::big_small("gpt-4o", "gpt-4o-mini"))
}

fn translate(request: Value) -> (Value, TranslatedRequest) {
    translate_with(request, &options())
}

fn translate_with(request: Value, options: &TranslateOptions) -> (Value, TranslatedRequest) {
    let translated = translate_request(&request, options).expect("request translates");
    let body = serde_json::from_slice(&translated.body).expect("body is JSON");
    (body, translated)
}

fn error_message(request: Value) -> String {
    let err = translate_request(&request, &options()).expect_err("request is rejected");
    assert_eq!(err.status(), 400);
    assert_eq!(err.error_type(), "invalid_request_error");
    err.message().to_owned()
}

fn base(messages: Value) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": messages})
}

#[test]
fn spec_1_system_string_and_blocks() {
    let mut request = base(json!([{"role": "user", "content": "hi"}]));
    request["system"] = json!("You are terse.");
    let (body, _) = translate(request.clone());
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "You are terse."})
    );

    request["system"] = json!([
        {"type": "text", "text": "Part one."},
        {"type": "text", "text": "Part two.", "cache_control": {"type": "ephemeral"}}
    ]);
    let (body, _) = translate(request);
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "Part one.\nPart two."})
    );
    assert_eq!(body["messages"].as_array().map(Vec::len), Some(2));
}

#[test]
fn spec_1_reasoning_models_get_developer_role_judged_on_mapped_model() {
    let options = TranslateOptions::default().model_map(ModelMap::new().contains("opus", "o3"));
    let mut request = base(json!([{"role": "user", "content": "hi"}]));
    request["model"] = json!("claude-opus-4-1");
    request["system"] = json!("Think.");
    let (body, translated) = translate_with(request.clone(), &options);
    assert_eq!(body["messages"][0]["role"], "developer");
    assert_eq!(body["model"], "o3");
    assert_eq!(translated.upstream_model, "o3");

    // The client model name "o3-looking" alone does not make it a reasoning model.
    let options = TranslateOptions::default()
        .model_map(ModelMap::new().default_model("gpt-4o"))
        .clone();
    request["model"] = json!("o3-pro");
    let (body, _) = translate_with(request, &options);
    assert_eq!(body["messages"][0]["role"], "system");
}

#[test]
fn spec_2_single_text_block_becomes_string_and_many_parts_stay_parts() {
    let (body, _) = translate(base(json!([
        {"role": "user", "content": [{"type": "text", "text": "only"}]}
    ])));
    assert_eq!(
        body["messages"][0],
        json!({"role": "user", "content": "only"})
    );

    let (body, _) = translate(base(json!([
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ])));
    assert_eq!(
        body["messages"][0]["content"],
        json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])
    );
}

#[test]
fn spec_3_images_base64_and_url() {
    let (body, _) = translate(base(json!([{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "what are these?"}
    ]}])));
    assert_eq!(
        body["messages"][0]["content"],
        json!([
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            {"type": "text", "text": "what are these?"}
        ])
    );
}

#[test]
fn spec_4_assistant_tool_use_and_joined_texts() {
    let (body, _) = translate(base(json!([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris", "units": {"c": true}}}
        ]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "12C"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "It is"}, {"type": "text", "text": "12C."}]}
    ])));
    let assistant = &body["messages"][1];
    assert_eq!(
        assistant,
        &json!({"role": "assistant", "tool_calls": [{
            "id": "toolu_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\",\"units\":{\"c\":true}}"}
        }]})
    );
    assert!(
        assistant.get("content").is_none(),
        "tool-only assistant has no content"
    );
    assert_eq!(
        body["messages"][3],
        json!({"role": "assistant", "content": "It is\n12C."})
    );
}

#[test]
fn spec_5_tool_results_become_tool_messages_before_user_text() {
    let (body, translated) = translate(base(json!([
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "a", "name": "f", "input": {}},
            {"type": "tool_use", "id": "b", "name": "g", "input": {}}
        ]},
        {"role": "user", "content": [
            {"type": "text", "text": "here you go"},
            {"type": "tool_result", "tool_use_id": "a", "content": "plain"},
            {"type": "tool_result", "tool_use_id": "b", "is_error": true,
             "content": [{"type": "text", "text": "boom"}, {"type": "text", "text": "trace"}]}
        ]}
    ])));
    let messages = body["messages"].as_array().expect("messages");
    assert_eq!(
        messages[2],
        json!({"role": "tool", "tool_call_id": "a", "content": "plain"})
    );
    assert_eq!(
        messages[3],
        json!({"role": "tool", "tool_call_id": "b", "content": [
            {"type": "text", "text": "Error: boom"}, {"type": "text", "text": "trace"}
        ]})
    );
    assert_eq!(
        messages[4],
        json!({"role": "user", "content": "here you go"})
    );
    assert!(translated.degraded.is_empty());

    let (body, _) = translate(base(json!([
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x", "is_error": true, "content": "denied"}]}
    ])));
    assert_eq!(body["messages"][0]["content"], "Error: denied");
}

#[test]
fn spec_5_tool_result_images_move_to_a_following_user_message_and_degrade() {
    let (body, translated) = translate(base(json!([
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "shot", "content": [
                {"type": "text", "text": "screenshot:"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAAA"}}
            ]}
        ]}
    ])));
    let messages = body["messages"].as_array().expect("messages");
    assert_eq!(messages[0]["role"], "tool");
    assert_eq!(
        messages[0]["content"],
        json!([{"type": "text", "text": "screenshot:"}])
    );
    assert_eq!(
        messages[1],
        json!({"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}}
        ]})
    );
    assert_eq!(translated.degraded.tags(), ["tool_result_image"]);
}

#[test]
fn spec_6_thinking_history_dropped_by_default_or_forwarded() {
    let request = base(json!([
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "let me think", "signature": "sig"},
            {"type": "redacted_thinking", "data": "xxx"},
            {"type": "text", "text": "answer"}
        ]}
    ]));
    let (body, _) = translate(request.clone());
    assert_eq!(
        body["messages"][1],
        json!({"role": "assistant", "content": "answer"})
    );

    let mut options = options();
    options.forward_thinking = true;
    let (body, _) = translate_with(request, &options);
    assert_eq!(body["messages"][1]["reasoning_content"], "let me think");
}

#[test]
fn spec_7_documents_server_tools_unknown_blocks_and_cache_control_degrade_never_400() {
    let mut request = base(json!([
        {"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}},
            {"type": "text", "text": "summarise", "cache_control": {"type": "ephemeral"}},
            {"type": "search_result", "source": "x", "title": "t", "content": []}
        ]},
        {"role": "assistant", "content": [
            {"type": "server_tool_use", "id": "s1", "name": "web_search", "input": {"query": "q"}},
            {"type": "web_search_tool_result", "tool_use_id": "s1", "content": []},
            {"type": "text", "text": "found"}
        ]}
    ]));
    request["tools"] = json!([
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
        {"type": "bash_20250124", "name": "bash"},
        {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
        {"type": "computer_20250124", "name": "computer", "display_width_px": 1024, "display_height_px": 768},
        {"name": "lookup", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}
    ]);
    let (body, translated) = translate(request);
    assert_eq!(body["tools"].as_array().map(Vec::len), Some(1));
    assert_eq!(body["tools"][0]["function"]["name"], "lookup");
    let content = &body["messages"][0]["content"];
    assert_eq!(content[0]["type"], "text");
    assert!(
        content[0]["text"]
            .as_str()
            .is_some_and(|t| t.contains("document omitted"))
    );
    assert_eq!(content[1], json!({"type": "text", "text": "summarise"}));
    assert_eq!(
        body["messages"][1],
        json!({"role": "assistant", "content": "found"})
    );
    for tag in ["document", "unknown_block", "server_tool"] {
        assert!(translated.degraded.tags().contains(&tag), "missing {tag}");
    }
}

#[test]
fn spec_8_tools_become_functions_with_schema_untouched() {
    let schema = json!({"type": "object", "properties": {"q": {"type": "string", "format": "uri"}},
                        "required": ["q"], "additionalProperties": false, "$schema": "x"});
    let mut request = base(json!([{"role": "user", "content": "hi"}]));
    request["tools"] =
        json!([{"name": "search", "description": "Search it", "input_schema": schema}]);
    let (body, _) = translate(request);
    assert_eq!(
        body["tools"],
        json!([{"type": "function", "function": {"name": "search", "description": "Search it", "parameters": schema}}])
    );
}

#[test]
fn spec_9_tool_choice_variants_and_parallel() {
    let cases = [
        (json!({"type": "auto"}), json!("auto")),
        (json!({"type": "any"}), json!("required")),
        (json!({"type": "none"}), json!("none")),
        (
            json!({"type": "tool", "name": "search"}),
            json!({"type": "function", "function": {"name": "search"}}),
        ),
    ];
    for (choice, expected) in cases {
        let mut request = base(json!([{"role": "user", "content": "hi"}]));
        request["tools"] = json!([{"name": "search", "input_schema": {"type": "object"}}]);
        request["tool_choice"] = choice;
        let (body, _) = translate(request);
        assert_eq!(body["tool_choice"], expected);
        assert!(body.get("parallel_tool_calls").is_none());
    }
    let mut request = base(json!([{"role": "user", "content": "hi"}]));
    request["tools"] = json!([{"name": "search", "input_schema": {"type": "object"}}]);
    request["tool_choice"] = json!({"type": "auto", "disable_parallel_tool_use": true});
    let (body, _) = translate(request.clone());
    assert_eq!(body["parallel_tool_calls"], false);

    // Without tools, OpenAI would reject tool_choice: it is not sent.
    request.as_object_mut().map(|o| o.remove("tools"));
    let (body, _) = translate(request);
    assert!(body.get("tool_choice").is_none());
}

#[test]
fn spec_10_max_tokens_required_capped_and_renamed_for_reasoning() {
    assert_eq!(
        error_message(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]})),
        "max_tokens: field required"
    );
    let options = options().clone();
    let options = TranslateOptions {
        max_tokens_caps: MaxTokensCaps::new().cap("gpt-4o", 16_384),
        ..options
    };
    let mut request = base(json!([{"role": "user", "content": "hi"}]));
    request["max_tokens"] = json!(128_000);
    request["temperature"] = json!(0.2);
    request["top_p"] = json!(0.9);
    let (body, _) = translate_with(request.clone(), &options);
    assert_eq!(body["max_tokens"], 16_384);
    assert_eq!(body["temperature"], 0.2);
    assert_eq!(body["top_p"], 0.9);

    let reasoning = TranslateOptions {
        model_map: ModelMap::new().default_model("o4-mini"),
        ..options
    };
    let (body, _) = translate_with(request.clone(), &reasoning);
    assert_eq!(body["max_completion_tokens"], 128_000);
    assert!(body.get("max_tokens").is_none());
    assert!(body.get("temperature").is_none());
    assert!(body.get("top_p").is_none());

    request["top_k"] = json!(40);
    let (body, translated) = translate(request);
    assert!(body.get("top_k").is_none());
    assert_eq!(translated.degraded.tags(), ["top_k"]);
}

#[test]
fn spec_11_stop_sequences_and_user() {
    let mut request = base(json!([{"role": "user", "content": "hi"}]));
    request["stop_sequences"] = json!(["a", "b", "c", "d", "e"]);
    request["metadata"] = json!({"user_id": "user-42"});
    let (body, translated) = translate(request);
    assert_eq!(body["stop"], json!(["a", "b", "c", "d"]));
    assert_eq!(body["user"], "user-42");
    assert_eq!(translated.stop_sequences, ["a", "b", "c", "d", "e"]);
    // The fifth is enforced by the proxy on the answer: nothing is lost.
    assert!(translated.degraded.is_empty());
}

#[test]
fn spec_12_thinking_budget_to_reasoning_effort() {
    let reasoning = TranslateOptions::default().model_map(ModelMap::new().default_model("o3"));
    let cases = [
        (
            json!({"type": "enabled", "budget_tokens": 1024}),
            Some("low"),
        ),
        (
            json!({"type": "enabled", "budget_tokens": 8000}),
            Some("medium"),
        ),
        (
            json!({"type": "enabled", "budget_tokens": 32000}),
            Some("high"),
        ),
        (json!({"type": "adaptive"}), Some("medium")),
        (json!({"type": "something_new"}), Some("medium")),
        (json!({"type": "disabled"}), None),
    ];
    for (thinking, effort) in cases {
        let mut request = base(json!([{"role": "user", "content": "hi"}]));
        request["thinking"] = thinking.clone();
        let (body, _) = translate_with(request, &reasoning);
        assert_eq!(
            body.get("reasoning_effort").and_then(Value::as_str),
            effort,
            "{thinking}"
        );
    }
    // A non-reasoning upstream would reject reasoning_effort: dropped and degraded.
    let mut request = base(json!([{"role": "user", "content": "hi"}]));
    request["thinking"] = json!({"type": "enabled", "budget_tokens": 2048});
    let (body, translated) = translate(request);
    assert!(body.get("reasoning_effort").is_none());
    assert_eq!(translated.degraded.tags(), ["thinking"]);
}

#[test]
fn spec_13_stream_asks_for_usage_unless_switched_off() {
    let mut request = base(json!([{"role": "user", "content": "hi"}]));
    request["stream"] = json!(true);
    let (body, translated) = translate(request.clone());
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert!(translated.stream);

    let mut options = options();
    options.stream_usage = false;
    let (body, _) = translate_with(request.clone(), &options);
    assert_eq!(body["stream"], true);
    assert!(body.get("stream_options").is_none());

    request["stream"] = json!(false);
    let (body, translated) = translate(request);
    assert!(body.get("stream").is_none());
    assert!(!translated.stream);
}

#[test]
fn spec_14_unknown_fields_and_cache_ttl_are_not_forwarded() {
    let mut request = base(json!([{"role": "user", "content": "hi"}]));
    request["cache_ttl_secs"] = json!(60);
    request["service_tier"] = json!("auto");
    request["container"] = json!("c");
    request["mcp_servers"] = json!([]);
    request["context_management"] = json!({"edits": []});
    request["some_future_field"] = json!({"x": 1});
    let (body, _) = translate(request);
    let keys: Vec<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    let mut keys = keys;
    keys.sort_unstable();
    assert_eq!(keys, ["max_tokens", "messages", "model"]);
}

#[test]
fn spec_15_model_mapping_rules_in_order_and_client_model_kept() {
    let options = TranslateOptions::default().model_map(
        ModelMap::new()
            .exact("claude-3-5-haiku-20241022", "llama3.1:8b")
            .contains("haiku", "gpt-4o-mini")
            .contains("sonnet|opus", "never")
            .contains("sonnet", "gpt-4o")
            .default_model("fallback"),
    );
    for (client, upstream) in [
        ("claude-3-5-haiku-20241022", "llama3.1:8b"),
        ("claude-haiku-4-5", "gpt-4o-mini"),
        ("Claude-Sonnet-4-5", "gpt-4o"),
        ("whatever", "fallback"),
    ] {
        let mut request = base(json!([{"role": "user", "content": "hi"}]));
        request["model"] = json!(client);
        let (body, translated) = translate_with(request, &options);
        assert_eq!(body["model"], upstream);
        assert_eq!(translated.client_model, client);
    }
}

#[test]
fn spec_16a_what_claude_code_sends_is_accepted() {
    let request = json!({
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 128000,
        "system": [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "fix the bug", "cache_control": {"type": "ephemeral"}}]},
            {"role": "system", "content": "<system-reminder>todo list empty</system-reminder>"},
            {"role": "assistant", "content": [{"type": "text", "text": "ok"}]}
        ],
        "thinking": {"type": "adaptive"},
        "output_config": {"effort": "high"},
        "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
        "metadata": {"user_id": "user_abc_account__session_123"},
        "tools": [{"name": "Bash", "description": "run", "input_schema": {"type": "object"},
                   "cache_control": {"type": "ephemeral"}}],
        "stream": true
    });
    let options = TranslateOptions {
        max_tokens_caps: MaxTokensCaps::new().cap("gpt-4o", 16_384),
        ..options()
    };
    let (body, _) = translate_with(request, &options);
    assert_eq!(body["max_tokens"], 16_384);
    assert_eq!(
        body["messages"][0],
        json!({"role": "system", "content": "You are Claude Code."})
    );
    assert_eq!(
        body["messages"][1],
        json!({"role": "user", "content": "fix the bug"})
    );
    assert_eq!(
        body["messages"][2],
        json!({"role": "system", "content": "<system-reminder>todo list empty</system-reminder>"})
    );

    let reasoning = TranslateOptions::default().model_map(ModelMap::new().default_model("gpt-5"));
    let request = json!({"model": "claude-opus-4-5", "max_tokens": 10,
        "messages": [{"role": "user", "content": "x"}],
        "thinking": {"type": "enabled", "budget_tokens": 1000}, "output_config": {"effort": "high"}});
    let (body, _) = translate_with(request, &reasoning);
    assert_eq!(
        body["reasoning_effort"], "high",
        "output_config.effort wins over thinking"
    );
}

#[test]
fn spec_30_errors_name_the_field() {
    let cases: Vec<(Value, &str)> = vec![
        (json!([]), "request body must be a JSON object"),
        (
            json!({"max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}),
            "model: field required",
        ),
        (
            json!({"model": 5, "max_tokens": 1, "messages": []}),
            "model: must be a string",
        ),
        (
            json!({"model": "m", "max_tokens": 1}),
            "messages: field required",
        ),
        (
            json!({"model": "m", "max_tokens": 1, "messages": []}),
            "messages: at least one message is required",
        ),
        (
            json!({"model": "m", "max_tokens": "1", "messages": []}),
            "max_tokens: must be an integer",
        ),
        (
            json!({"model": "m", "max_tokens": 0, "messages": []}),
            "max_tokens: must be an integer from 1 to 1000000",
        ),
        (
            json!({"model": "m", "max_tokens": -5, "messages": []}),
            "max_tokens: must be an integer from 1 to 1000000",
        ),
        (
            base(json!([{"role": "robot", "content": "x"}])),
            "messages.0.role: must be one of user, assistant",
        ),
        (
            base(json!([{"role": "user", "content": 7}])),
            "messages.0.content: must be a string or an array of content blocks",
        ),
        (
            base(json!([{"role": "user", "content": [{"type": "text"}]}])),
            "messages.0.content.0.text: field required",
        ),
        (
            base(
                json!([{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}]}]),
            ),
            "messages.0.content.0.source.media_type: field required",
        ),
        (
            base(
                json!([{"role": "user", "content": "a"}, {"role": "assistant", "content": [{"type": "tool_use", "id": "i", "name": "n", "input": []}]}]),
            ),
            "messages.1.content.0.input: must be an object",
        ),
    ];
    for (request, expected) in cases {
        assert_eq!(error_message(request.clone()), expected, "for {request}");
    }
}

#[test]
fn block_types_anthropic_does_not_know_are_a_400_naming_the_field() {
    let message = error_message(base(json!([{"role": "user", "content": [
        {"type": "text", "text": "hi"},
        {"type": "bogus"}
    ]}])));
    assert!(
        message.starts_with(
            "messages.0.content.1.type: Input tag 'bogus' found using 'type' does not match any \
             of the expected tags: 'text', 'image', "
        ),
        "{message}"
    );
    let message = error_message(base(json!([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "Text", "text": "case matters"}]}
    ])));
    assert!(
        message.starts_with("messages.1.content.0.type: Input tag 'Text'"),
        "{message}"
    );
    // Inside a tool result only its own five types are known.
    for kind in ["thinking", "tool_use", "bogus"] {
        let message = error_message(base(json!([
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                "content": [{"type": "text", "text": "ok"}, {"type": kind}]}]}
        ])));
        assert!(
            message.starts_with(&format!(
                "messages.1.content.0.content.1.type: Input tag '{kind}'"
            )),
            "{message}"
        );
        assert!(
            message.ends_with("'document', 'tool_reference'"),
            "{message}"
        );
    }
    // A huge tag is not echoed whole.
    let long = "x".repeat(100_000);
    let message = error_message(base(json!([{"role": "user", "content": [{"type": long}]}])));
    assert!(message.len() < 1_000, "{}", message.len());
}

#[test]
fn every_block_type_anthropic_knows_translates_or_degrades() {
    use crate::translate::anthropic::MESSAGE_BLOCK_TYPES;
    for kind in MESSAGE_BLOCK_TYPES {
        let block = match *kind {
            "text" => json!({"type": "text", "text": "t"}),
            "image" => {
                json!({"type": "image", "source": {"type": "url", "url": "https://x/y.png"}})
            }
            "tool_use" => json!({"type": "tool_use", "id": "t1", "name": "f", "input": {}}),
            "tool_result" => json!({"type": "tool_result", "tool_use_id": "t1",
                "content": [{"type": "tool_reference", "tool_name": "f"},
                            {"type": "search_result", "source": "s", "title": "t", "content": []}]}),
            other => json!({"type": other, "id": "x", "tool_use_id": "x", "content": []}),
        };
        for role in ["user", "assistant"] {
            let request = base(json!([
                {"role": "user", "content": "hi"},
                {"role": role, "content": [block.clone(), {"type": "text", "text": "and"}]}
            ]));
            // Anthropic takes these in either turn; OpenAI-bound, they degrade or drop.
            let result = translate_request(&request, &options());
            assert!(result.is_ok(), "{role} {kind}: {:?}", result.err());
        }
    }
}

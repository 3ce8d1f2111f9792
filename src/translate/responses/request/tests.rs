//! One test (or more) per request mapping rule of the Responses wire.

use serde_json::{Value, json};

use super::*;
use crate::translate::responses::encode_reasoning_signature;
use crate::translate::{MaxTokensCaps, ModelMap};

fn options() -> TranslateOptions {
    TranslateOptions::default().model_map(ModelMap::big_small("gpt-4.1", "gpt-4.1-mini"))
}

fn reasoning_options() -> TranslateOptions {
    TranslateOptions::default().model_map(ModelMap::new().default_model("gpt-5"))
}

fn translate(request: Value) -> (Value, TranslatedRequest) {
    translate_with(request, &options())
}

fn translate_with(request: Value, options: &TranslateOptions) -> (Value, TranslatedRequest) {
    let translated = translate_request(&request, options).expect("request translates");
    let body = serde_json::from_slice(&translated.body).expect("body is JSON");
    (body, translated)
}

fn base(messages: Value) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "messages": messages})
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

#[test]
fn model_is_mapped_and_the_client_model_kept() {
    let (body, translated) = translate(base(user("hi")));
    assert_eq!(body["model"], "gpt-4.1");
    assert_eq!(translated.client_model, "claude-sonnet-4-5");
    assert_eq!(translated.upstream_model, "gpt-4.1");
}

#[test]
fn system_becomes_instructions() {
    let mut request = base(user("hi"));
    request["system"] = json!("Be terse.");
    let (body, _) = translate(request.clone());
    assert_eq!(body["instructions"], "Be terse.");
    request["system"] = json!([
        {"type": "text", "text": "One.", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Two."}
    ]);
    let (body, _) = translate(request);
    assert_eq!(body["instructions"], "One.\nTwo.");
    assert!(!body.to_string().contains("cache_control"));
}

#[test]
fn text_messages_become_input_and_output_text() {
    let (body, _) = translate(base(json!([
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi there"},
        {"role": "user", "content": [
            {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "b", "citations": []}
        ]},
        {"role": "assistant", "content": [{"type": "text", "text": "c"}, {"type": "text", "text": "d"}]}
    ])));
    assert_eq!(
        body["input"],
        json!([
            {"role": "user", "content": [{"type": "input_text", "text": "Hello"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Hi there"}]},
            {"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "c"}, {"type": "output_text", "text": "d"}]},
        ])
    );
}

#[test]
fn images_become_input_images_with_data_or_https_urls() {
    let (body, translated) = translate(base(json!([{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "image", "source": {"type": "file", "file_id": "file_1"}},
        {"type": "text", "text": "What are these?"}
    ]}])));
    assert_eq!(
        body["input"][0]["content"],
        json!([
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"},
            {"type": "input_image", "image_url": "https://example.com/cat.jpg", "detail": "auto"},
            {"type": "input_text", "text": "[image omitted: unsupported source]"},
            {"type": "input_text", "text": "What are these?"},
        ])
    );
    assert_eq!(translated.degraded.tags(), ["image_source"]);
}

#[test]
fn tool_use_and_tool_result_become_function_call_and_output() {
    let (body, translated) = translate(base(json!([
        {"role": "user", "content": "List /"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Listing."},
            {"type": "tool_use", "id": "call_1", "name": "ls", "input": {"dir": "/"}},
            {"type": "tool_use", "id": "toolu_2", "name": "pwd", "input": {}}
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "call_1", "content": "bin etc"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true,
             "content": [{"type": "text", "text": "no"}, {"type": "text", "text": "cwd"}]},
            {"type": "text", "text": "Thanks"}
        ]}
    ])));
    assert_eq!(
        body["input"],
        json!([
            {"role": "user", "content": [{"type": "input_text", "text": "List /"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Listing."}]},
            {"type": "function_call", "call_id": "call_1", "name": "ls", "arguments": "{\"dir\":\"/\"}"},
            {"type": "function_call", "call_id": "toolu_2", "name": "pwd", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "bin etc"},
            {"type": "function_call_output", "call_id": "toolu_2", "output": "Error: no\ncwd"},
            {"role": "user", "content": [{"type": "input_text", "text": "Thanks"}]},
        ])
    );
    assert!(translated.degraded.is_empty());
}

#[test]
fn tool_result_images_move_to_a_user_message() {
    let (body, translated) = translate(base(json!([
        {"role": "assistant", "content": [{"type": "tool_use", "id": "c1", "name": "shot", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "c1", "content": [
                {"type": "text", "text": "screenshot:"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/"}}
            ]},
            {"type": "text", "text": "Look."}
        ]}
    ])));
    assert_eq!(
        body["input"][1],
        json!({"type": "function_call_output", "call_id": "c1", "output": "screenshot:"})
    );
    assert_eq!(
        body["input"][2],
        json!({"role": "user", "content": [
            {"type": "input_image", "image_url": "data:image/jpeg;base64,/9j/", "detail": "auto"},
            {"type": "input_text", "text": "Look."}
        ]})
    );
    assert_eq!(translated.degraded.tags(), ["tool_result_image"]);
}

#[test]
fn our_thinking_becomes_a_reasoning_item_before_its_call() {
    let signature = encode_reasoning_signature("rs_1", "gAAAAenc");
    let (body, translated) = translate(base(json!([
        {"role": "user", "content": "Go"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Need ls.", "signature": signature},
            {"type": "tool_use", "id": "call_1", "name": "ls", "input": {}}
        ]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "", "signature": encode_reasoning_signature("rs_2", "gAAAAtwo")},
            {"type": "text", "text": "Done."}
        ]}
    ])));
    assert_eq!(
        body["input"][1],
        json!({"type": "reasoning", "id": "rs_1",
               "summary": [{"type": "summary_text", "text": "Need ls."}],
               "encrypted_content": "gAAAAenc"})
    );
    assert_eq!(body["input"][2]["type"], "function_call");
    assert_eq!(
        body["input"][3],
        json!({"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "gAAAAtwo"})
    );
    assert_eq!(body["input"][4]["role"], "assistant");
    assert!(translated.degraded.is_empty());
}

#[test]
fn thinking_from_elsewhere_is_dropped_and_reported() {
    let (body, translated) = translate(base(json!([
        {"role": "user", "content": "Go"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Anthropic's.", "signature": "EqQBCkgIARABGAIiQ"},
            {"type": "thinking", "thinking": "A chat backend's.", "signature": ""},
            {"type": "redacted_thinking", "data": "abc"},
            {"type": "text", "text": "Hi"}
        ]}
    ])));
    assert_eq!(
        body["input"][1],
        json!({"role": "assistant", "content": [{"type": "output_text", "text": "Hi"}]})
    );
    assert_eq!(body["input"].as_array().map(Vec::len), Some(2));
    assert_eq!(translated.degraded.tags(), ["foreign_thinking"]);
}

#[test]
fn tools_are_non_strict_functions_and_server_tools_dropped() {
    let mut request = base(user("hi"));
    request["tools"] = json!([
        {"name": "ls", "description": "List", "input_schema": {"type": "object", "properties": {"dir": {"type": "string"}}},
         "cache_control": {"type": "ephemeral"}},
        {"name": "now", "input_schema": {"type": "object"}},
        {"type": "web_search_20250305", "name": "web_search"}
    ]);
    let (body, translated) = translate(request);
    assert_eq!(
        body["tools"],
        json!([
            {"type": "function", "name": "ls", "description": "List",
             "parameters": {"type": "object", "properties": {"dir": {"type": "string"}}}, "strict": false},
            {"type": "function", "name": "now", "parameters": {"type": "object"}, "strict": false},
        ])
    );
    assert_eq!(translated.degraded.tags(), ["server_tool"]);
}

#[test]
fn tool_choice_maps_and_needs_tools() {
    let tools = json!([{"name": "ls", "input_schema": {"type": "object"}}]);
    for (choice, expected) in [
        (json!({"type": "auto"}), json!("auto")),
        (json!({"type": "any"}), json!("required")),
        (json!({"type": "none"}), json!("none")),
        (
            json!({"type": "tool", "name": "ls"}),
            json!({"type": "function", "name": "ls"}),
        ),
    ] {
        let mut request = base(user("hi"));
        request["tools"] = tools.clone();
        request["tool_choice"] = choice;
        let (body, _) = translate(request);
        assert_eq!(body["tool_choice"], expected);
        assert!(body.get("parallel_tool_calls").is_none());
    }
    let mut request = base(user("hi"));
    request["tools"] = tools;
    request["tool_choice"] = json!({"type": "auto", "disable_parallel_tool_use": true});
    let (body, _) = translate(request);
    assert_eq!(body["parallel_tool_calls"], false);

    let mut request = base(user("hi"));
    request["tool_choice"] = json!({"type": "any"});
    let (body, _) = translate(request);
    assert!(body.get("tool_choice").is_none());
}

#[test]
fn max_tokens_becomes_max_output_tokens_at_least_16_and_capped() {
    let mut request = base(user("hi"));
    request["max_tokens"] = json!(1);
    let (body, _) = translate(request.clone());
    assert_eq!(body["max_output_tokens"], 16);
    request["max_tokens"] = json!(200_000);
    let mut capped = options();
    capped.max_tokens_caps = MaxTokensCaps::new().cap("gpt-4.1", 32_768);
    let (body, _) = translate_with(request.clone(), &capped);
    assert_eq!(body["max_output_tokens"], 32_768);
    assert!(body.get("max_tokens").is_none());
    let (body, _) = translate(request);
    assert_eq!(body["max_output_tokens"], 200_000);
}

#[test]
fn thinking_becomes_reasoning_on_reasoning_models_only() {
    let mut request = base(user("hi"));
    request["thinking"] = json!({"type": "enabled", "budget_tokens": 20_000});
    let (body, translated) = translate_with(request.clone(), &reasoning_options());
    assert_eq!(
        body["reasoning"],
        json!({"effort": "high", "summary": "auto"})
    );
    assert!(translated.degraded.is_empty());
    request["thinking"] = json!({"type": "enabled", "budget_tokens": 1_024});
    let (body, _) = translate_with(request.clone(), &reasoning_options());
    assert_eq!(body["reasoning"]["effort"], "low");
    request["thinking"] = json!({"type": "disabled"});
    let (body, _) = translate_with(request.clone(), &reasoning_options());
    assert!(body.get("reasoning").is_none());

    request["thinking"] = json!({"type": "enabled", "budget_tokens": 20_000});
    let (body, translated) = translate(request);
    assert!(body.get("reasoning").is_none());
    assert_eq!(translated.degraded.tags(), ["thinking"]);
}

#[test]
fn store_false_and_encrypted_reasoning_always() {
    for options in [options(), reasoning_options()] {
        let (body, _) = translate_with(base(user("hi")), &options);
        assert_eq!(body["store"], false);
        assert_eq!(body["include"], json!(["reasoning.encrypted_content"]));
    }
}

#[test]
fn metadata_user_id_becomes_user() {
    let mut request = base(user("hi"));
    request["metadata"] = json!({"user_id": "user-42"});
    let (body, _) = translate(request);
    assert_eq!(body["user"], "user-42");
    assert!(body.get("metadata").is_none());
}

#[test]
fn sampling_kept_on_chat_models_dropped_on_reasoning_models() {
    let mut request = base(user("hi"));
    request["temperature"] = json!(0.2);
    request["top_p"] = json!(0.9);
    let (body, translated) = translate(request.clone());
    assert_eq!(
        (body["temperature"].clone(), body["top_p"].clone()),
        (json!(0.2), json!(0.9))
    );
    assert!(translated.degraded.is_empty());
    let (body, translated) = translate_with(request, &reasoning_options());
    assert!(body.get("temperature").is_none() && body.get("top_p").is_none());
    assert_eq!(translated.degraded.tags(), ["temperature", "top_p"]);
}

#[test]
fn stop_sequences_are_kept_for_the_answer_not_sent() {
    let mut request = base(user("hi"));
    request["stop_sequences"] = json!(["a", "b", "c", "d", "e"]);
    let (body, translated) = translate(request);
    assert!(body.get("stop").is_none() && body.get("stop_sequences").is_none());
    assert_eq!(translated.stop_sequences, ["a", "b", "c", "d", "e"]);
    assert!(translated.degraded.is_empty());
}

#[test]
fn stream_is_passed_on() {
    let mut request = base(user("hi"));
    request["stream"] = json!(true);
    let (body, translated) = translate(request.clone());
    assert_eq!(body["stream"], true);
    assert!(translated.stream);
    assert!(body.get("stream_options").is_none());
    request["stream"] = json!(false);
    let (body, translated) = translate(request);
    assert!(body.get("stream").is_none());
    assert!(!translated.stream);
}

#[test]
fn system_messages_in_history_use_the_models_role() {
    let messages = json!([
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "<system-reminder>ok</system-reminder>"}
    ]);
    let (body, _) = translate(base(messages.clone()));
    assert_eq!(body["input"][1]["role"], "system");
    let (body, _) = translate_with(base(messages), &reasoning_options());
    assert_eq!(body["input"][1]["role"], "developer");
}

#[test]
fn documents_top_k_and_unknown_blocks_degrade() {
    let mut request = base(json!([{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}},
        {"type": "search_result", "source": "x"},
        {"type": "text", "text": "Summarise"}
    ]}]));
    request["top_k"] = json!(5);
    let (body, translated) = translate(request);
    assert_eq!(
        body["input"][0]["content"][0],
        json!({"type": "input_text", "text": "[document omitted: not supported by this backend]"})
    );
    assert_eq!(
        translated.degraded.tags(),
        ["document", "unknown_block", "top_k"]
    );
}

#[test]
fn invalid_requests_are_rejected_like_the_chat_wire() {
    let options = options();
    for (request, message) in [
        (json!([]), "request body must be a JSON object"),
        (
            json!({"max_tokens": 5, "messages": []}),
            "model: field required",
        ),
        (
            json!({"model": "m", "messages": user("x")}),
            "max_tokens: field required",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": []}),
            "messages: at least one message is required",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]}),
            "messages.0.role: must be one of user, assistant",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "assistant", "content": [{"type": "tool_use", "name": "f"}]}]}),
            "messages.0.content.0.id: field required",
        ),
        (
            json!({"model": "m", "max_tokens": 5, "stop_sequences": [1], "messages": user("x")}),
            "stop_sequences.0: must be a string",
        ),
    ] {
        let err = translate_request(&request, &options).expect_err("rejected");
        assert_eq!((err.status().as_u16(), err.message()), (400, message));
        let chat = crate::translate::chat::request::translate_request(&request, &options)
            .expect_err("rejected by the chat wire too");
        assert_eq!(chat.message(), message);
    }
}

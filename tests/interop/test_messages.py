"""Non-streaming /v1/messages through the official SDK: what the SDK returns and what the
OpenAI upstream received."""

from __future__ import annotations

import json

import pytest
from anthropic.types import Message, TextBlock, ThinkingBlock, ToolUseBlock

from helpers import (
    BIG,
    CLIENT_KEY,
    HAIKU,
    OPUS,
    PNG_B64,
    REASONER,
    REASONER_UPSTREAM,
    SMALL,
    SONNET,
    TIME_TOOL,
    UPSTREAM_KEY,
    WEATHER_TOOL,
    assert_no_anthropic_fields,
    is_compact_json,
    openai_tool,
)
from mock_upstream import Json, completion, tool_call


@pytest.mark.parametrize(
    ("client_model", "upstream_model"),
    [(SONNET, BIG), (OPUS, BIG), (HAIKU, SMALL)],
)
def test_plain_text(client, mock, nonce, client_model, upstream_model):
    mock.script(completion("Hello there!", prompt_tokens=120, completion_tokens=9, cached_tokens=20))

    msg = client.messages.create(
        model=client_model,
        max_tokens=256,
        messages=[{"role": "user", "content": f"Say hello ({nonce})"}],
    )

    assert isinstance(msg, Message)
    assert msg.id.startswith("msg_")
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.model == client_model  # the client's name is echoed, not the upstream's
    assert len(msg.content) == 1 and isinstance(msg.content[0], TextBlock)
    assert msg.content[0].text == "Hello there!"
    assert msg.stop_reason == "end_turn" and msg.stop_sequence is None
    # SPEC §20: cached tokens are not counted twice
    assert msg.usage.input_tokens == 100
    assert msg.usage.cache_read_input_tokens == 20
    assert msg.usage.output_tokens == 9

    up = mock.only_call()
    assert (up.method, up.path) == ("POST", "/v1/chat/completions")
    assert up.header("authorization") == f"Bearer {UPSTREAM_KEY}"
    assert up.header("content-type").startswith("application/json")
    # the client's Anthropic key never travels to the OpenAI backend
    assert "x-api-key" not in up.headers
    assert all(CLIENT_KEY not in v for v in up.headers.values())
    assert up.json["model"] == upstream_model
    assert up.json["messages"] == [{"role": "user", "content": f"Say hello ({nonce})"}]
    assert up.json["max_tokens"] == 256
    assert not up.json.get("stream")
    assert_no_anthropic_fields(up.json)


def test_system_string(client, mock, nonce):
    mock.script(completion("ok"))
    client.messages.create(
        model=SONNET,
        max_tokens=64,
        system=f"You are terse. {nonce}",
        messages=[{"role": "user", "content": "Hi"}],
    )
    up = mock.only_call().json
    assert up["messages"] == [
        {"role": "system", "content": f"You are terse. {nonce}"},
        {"role": "user", "content": "Hi"},
    ]
    assert_no_anthropic_fields(up)


def test_system_blocks(client, mock, nonce):
    mock.script(completion("ok"))
    msg = client.messages.create(
        model=SONNET,
        max_tokens=64,
        system=[
            {"type": "text", "text": f"You are a helpful assistant. {nonce}"},
            {"type": "text", "text": "Answer in French.", "cache_control": {"type": "ephemeral"}},
        ],
        messages=[{"role": "user", "content": "Hi"}],
    )
    assert msg.content[0].text == "ok"
    up = mock.only_call()
    assert up.json["messages"] == [
        {"role": "system", "content": f"You are a helpful assistant. {nonce}\nAnswer in French."},
        {"role": "user", "content": "Hi"},
    ]
    assert b"cache_control" not in up.raw
    assert_no_anthropic_fields(up.json)


def test_multi_turn(client, mock, nonce):
    mock.script(completion("Paris has about 2.1 million inhabitants."))
    msg = client.messages.create(
        model=SONNET,
        max_tokens=128,
        messages=[
            {"role": "user", "content": f"What is the capital of France? {nonce}"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": [{"type": "text", "text": "And Germany?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Berlin."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "How many people live in the first one?"},
                    {"type": "text", "text": "Roughly."},
                ],
            },
        ],
    )
    assert msg.content[0].text == "Paris has about 2.1 million inhabitants."
    assert mock.only_call().json["messages"] == [
        {"role": "user", "content": f"What is the capital of France? {nonce}"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And Germany?"},  # one text block -> plain string
        {"role": "assistant", "content": "Berlin."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "How many people live in the first one?"},
                {"type": "text", "text": "Roughly."},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("vllm_stop_reason", "stop_reason", "stop_sequence"),
    [("END", "stop_sequence", "END"), (None, "end_turn", None)],
    ids=["matched", "eos"],
)
def test_stop_sequences(client, mock, nonce, vllm_stop_reason, stop_reason, stop_sequence):
    # vLLM reports which stop string matched in choices[].stop_reason (null on EOS).
    mock.script(completion("1, 2, 3", finish_reason="stop", choice_extra={"stop_reason": vllm_stop_reason}))
    msg = client.messages.create(
        model=SONNET,
        max_tokens=64,
        stop_sequences=["###", "END"],
        messages=[{"role": "user", "content": f"Count to three, then say END. {nonce}"}],
    )
    assert msg.stop_reason == stop_reason
    assert msg.stop_sequence == stop_sequence
    assert msg.content[0].text == "1, 2, 3"
    up = mock.only_call().json
    assert up["stop"] == ["###", "END"]
    assert_no_anthropic_fields(up)


def test_max_tokens_reached(client, mock, nonce):
    mock.script(completion("Once upon a time there", finish_reason="length", completion_tokens=5))
    msg = client.messages.create(
        model=SONNET,
        max_tokens=5,
        messages=[{"role": "user", "content": f"Tell me a long story. {nonce}"}],
    )
    assert msg.stop_reason == "max_tokens"
    assert msg.stop_sequence is None
    assert msg.usage.output_tokens == 5
    up = mock.only_call().json
    assert up["max_tokens"] == 5
    assert "max_completion_tokens" not in up


def test_claude_code_sized_max_tokens_is_clamped_not_rejected(client, mock, nonce):
    # Claude Code sends max_tokens up to 128000; gpt-4o rejects more than 16384 (the proxy's
    # default cap for it), so the proxy clamps instead of passing a request that would 400.
    mock.script(completion("ok"))
    client.messages.create(
        model=SONNET,
        max_tokens=128000,
        messages=[{"role": "user", "content": f"Hi {nonce}"}],
    )
    assert mock.only_call().json["max_tokens"] == 16384


TOOL_CHOICES = {
    "auto": ({"type": "auto"}, "auto", None),
    "any": ({"type": "any"}, "required", None),
    "any-no-parallel": ({"type": "any", "disable_parallel_tool_use": True}, "required", False),
    "tool": ({"type": "tool", "name": "get_time"}, {"type": "function", "function": {"name": "get_time"}}, None),
    "none": ({"type": "none"}, "none", None),
}


@pytest.mark.parametrize("variant", list(TOOL_CHOICES))
def test_tools_and_tool_choice(client, mock, nonce, variant):
    anthropic_choice, openai_choice, parallel = TOOL_CHOICES[variant]
    mock.script(completion("No tool needed."))
    msg = client.messages.create(
        model=SONNET,
        max_tokens=128,
        tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice=anthropic_choice,
        messages=[{"role": "user", "content": f"Weather and time in Paris? {nonce}"}],
    )
    assert msg.content[0].text == "No tool needed."
    up = mock.only_call().json
    assert up["tools"] == [openai_tool(WEATHER_TOOL), openai_tool(TIME_TOOL)]  # schemas untouched
    assert up["tool_choice"] == openai_choice
    if parallel is None:
        assert "parallel_tool_calls" not in up
    else:
        assert up["parallel_tool_calls"] is parallel


def test_tool_use_reply(client, mock, nonce):
    weather_args = {"city": "Paris", "unit": "celsius"}
    time_args = {"tz": "Europe/Paris"}
    mock.script(
        completion(
            "Let me check both.",
            tool_calls=[
                tool_call("call_weather_1", "get_weather", json.dumps(weather_args)),
                tool_call("call_time_2", "get_time", json.dumps(time_args)),
            ],
            finish_reason="tool_calls",
            completion_tokens=31,
        )
    )
    msg = client.messages.create(
        model=SONNET,
        max_tokens=256,
        tools=[WEATHER_TOOL, TIME_TOOL],
        messages=[{"role": "user", "content": f"Weather and time in Paris? {nonce}"}],
    )
    assert msg.stop_reason == "tool_use"
    assert [b.type for b in msg.content] == ["text", "tool_use", "tool_use"]
    assert msg.content[0].text == "Let me check both."
    w, t = msg.content[1], msg.content[2]
    assert isinstance(w, ToolUseBlock) and isinstance(t, ToolUseBlock)
    assert (w.id, w.name, w.input) == ("call_weather_1", "get_weather", weather_args)
    assert (t.id, t.name, t.input) == ("call_time_2", "get_time", time_args)
    assert isinstance(w.input, dict)
    assert msg.usage.output_tokens == 31


def test_tool_use_reply_without_text(client, mock, nonce):
    # OpenAI sends content: null alongside tool_calls; that must not become an empty text block.
    mock.script(
        completion(None, tool_calls=[tool_call("call_x", "get_weather", '{"city":"Oslo"}')], finish_reason="tool_calls")
    )
    msg = client.messages.create(
        model=SONNET,
        max_tokens=256,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": f"Weather in Oslo? {nonce}"}],
    )
    assert [b.type for b in msg.content] == ["tool_use"]
    assert msg.content[0].input == {"city": "Oslo"}


TOOL_RESULTS = {
    "string": ({"content": "18°C and sunny"}, "18°C and sunny"),
    "blocks": (
        {"content": [{"type": "text", "text": "18°C"}, {"type": "text", "text": "sunny"}]},
        [{"type": "text", "text": "18°C"}, {"type": "text", "text": "sunny"}],
    ),
    "is_error": ({"content": "unknown city", "is_error": True}, "Error: unknown city"),
}


@pytest.mark.parametrize("variant", list(TOOL_RESULTS))
def test_tool_result_turn(client, mock, nonce, variant):
    result_fields, upstream_content = TOOL_RESULTS[variant]
    tool_input = {"city": "Paris", "unit": "celsius"}
    mock.script(completion("It is 18°C and sunny in Paris."))
    msg = client.messages.create(
        model=SONNET,
        max_tokens=256,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": f"Weather in Paris? {nonce}"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": tool_input}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01A", **result_fields},
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ],
    )
    assert msg.content[0].text == "It is 18°C and sunny in Paris."
    messages = mock.only_call().json["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "user"]
    assistant = messages[1]
    assert "content" not in assistant, "an assistant turn with only tool_use has no content field"
    assert len(assistant["tool_calls"]) == 1
    call = assistant["tool_calls"][0]
    assert (call["id"], call["type"], call["function"]["name"]) == ("toolu_01A", "function", "get_weather")
    assert json.loads(call["function"]["arguments"]) == tool_input
    assert is_compact_json(call["function"]["arguments"])
    assert messages[2] == {"role": "tool", "tool_call_id": "toolu_01A", "content": upstream_content}
    assert messages[3] == {"role": "user", "content": "And tomorrow?"}  # after the tool message


IMAGES = {
    "base64": (
        {"type": "base64", "media_type": "image/png", "data": PNG_B64},
        f"data:image/png;base64,{PNG_B64}",
    ),
    "url": (
        {"type": "url", "url": "https://images.example.com/cat.png?size=large&v=2"},
        "https://images.example.com/cat.png?size=large&v=2",
    ),
}


@pytest.mark.parametrize("variant", list(IMAGES))
def test_image(client, mock, nonce, variant):
    source, url = IMAGES[variant]
    mock.script(completion("A cat."))
    msg = client.messages.create(
        model=SONNET,
        max_tokens=64,
        messages=[
            {
                "role": "user",
                "content": [{"type": "image", "source": source}, {"type": "text", "text": f"What is this? {nonce}"}],
            }
        ],
    )
    assert msg.content[0].text == "A cat."
    content = mock.only_call().json["messages"][0]["content"]
    assert isinstance(content, list) and len(content) == 2
    image, text = content
    assert image["type"] == "image_url"
    assert image["image_url"]["url"] == url
    assert set(image["image_url"]) <= {"url", "detail"}
    assert text == {"type": "text", "text": f"What is this? {nonce}"}


def test_claude_code_style_beta_request(client, mock, nonce):
    # What Claude Code sends (SPEC §16a): the beta endpoint (?beta=true, anthropic-beta
    # header), adaptive thinking, output_config, context_management, cache_control on system,
    # tools and messages. None of it may cause a 400, and none of it is forwarded as is.
    mock.script(completion("Done."))
    msg = client.beta.messages.create(
        model=SONNET,
        max_tokens=32000,
        betas=["interleaved-thinking-2025-05-14", "context-management-2025-06-27"],
        system=[{"type": "text", "text": f"You are Claude Code. {nonce}", "cache_control": {"type": "ephemeral"}}],
        tools=[dict(WEATHER_TOOL, cache_control={"type": "ephemeral"})],
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "Fix the bug.", "cache_control": {"type": "ephemeral"}}],
            }
        ],
        extra_query={"beta": "true"},
        # newer SDK arguments Anthropic understands and OpenAI does not (or differently)
        service_tier="standard_only",
        extra_body={
            "speed": "standard",
            "cache_control": {"type": "ephemeral"},
            "thinking": {"type": "adaptive"},
            "output_config": {"effort": "medium"},
            "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
        },
    )
    assert msg.content[0].text == "Done."
    up = mock.only_call()
    assert up.path == "/v1/chat/completions"
    assert b"cache_control" not in up.raw
    for field in ("context_management", "output_config", "thinking", "betas", "speed"):
        assert field not in up.json
    # OpenAI has a service_tier too, with other values: "standard_only" would be a 400 there
    assert up.json.get("service_tier") in (None, "auto", "default", "flex", "priority")
    assert up.json["messages"] == [
        {"role": "system", "content": f"You are Claude Code. {nonce}"},
        {"role": "user", "content": "Fix the bug."},
    ]
    assert up.json["tools"] == [openai_tool(WEATHER_TOOL)]


def test_reasoning_model_request(client, mock, nonce):
    # MODEL_MAP sends this client model to o3-mini, a reasoning model (SPEC §1.1, §1.10, §1.12):
    # max_completion_tokens instead of max_tokens, a developer message instead of system,
    # no temperature, thinking budget -> reasoning_effort.
    mock.script(completion("42", prompt_tokens=30, completion_tokens=200))
    msg = client.messages.create(
        model=f"claude-{REASONER}",
        max_tokens=10000,
        thinking={"type": "enabled", "budget_tokens": 8000},
        system=f"Think hard. {nonce}",
        messages=[{"role": "user", "content": "What is six times seven?"}],
        extra_body={"temperature": 0.3, "top_p": 0.9},  # this SDK no longer has these arguments
    )
    assert msg.model == f"claude-{REASONER}"
    assert msg.content[0].text == "42"
    up = mock.only_call().json
    assert up["model"] == REASONER_UPSTREAM
    assert up["max_completion_tokens"] == 10000
    assert "max_tokens" not in up
    assert "temperature" not in up and "top_p" not in up
    assert up["reasoning_effort"] == "medium"
    assert up["messages"] == [
        {"role": "developer", "content": f"Think hard. {nonce}"},
        {"role": "user", "content": "What is six times seven?"},
    ]
    assert_no_anthropic_fields(up)


def test_reasoning_content_becomes_thinking_block(client, mock, nonce):
    mock.script(completion("42.", message_extra={"reasoning_content": "6 x 7 = 42."}))
    msg = client.messages.create(
        model=SONNET,
        max_tokens=256,
        messages=[{"role": "user", "content": f"What is six times seven? {nonce}"}],
    )
    assert [b.type for b in msg.content] == ["thinking", "text"]
    thinking = msg.content[0]
    assert isinstance(thinking, ThinkingBlock)
    assert thinking.thinking == "6 x 7 = 42."
    assert thinking.signature == ""
    assert msg.content[1].text == "42."


def test_refusal(client, mock, nonce):
    mock.script(completion(None, finish_reason="content_filter", message_extra={"refusal": "I can't help with that."}))
    msg = client.messages.create(
        model=SONNET,
        max_tokens=64,
        messages=[{"role": "user", "content": f"Something disallowed. {nonce}"}],
    )
    assert msg.stop_reason == "refusal"
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == "I can't help with that."


def test_image_inside_tool_result_is_moved_not_rejected(client, mock, nonce):
    # A tool message carries text only: the image goes into a following user message and the
    # response says what was degraded (SPEC §1.5).
    mock.script(completion("A screenshot of a login page."))
    raw = client.messages.with_raw_response.create(
        model=SONNET,
        max_tokens=128,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": f"Take a screenshot. {nonce}"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_shot", "name": "get_weather", "input": {"city": "x"}}],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_shot",
                        "content": [
                            {"type": "text", "text": "screenshot taken"},
                            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
                        ],
                    }
                ],
            },
        ],
    )
    assert raw.parse().content[0].text == "A screenshot of a login page."
    assert raw.headers.get("x-llm-bridge-degraded"), "the response names what was degraded"
    messages = mock.only_call().json["messages"]
    assert [m["role"] for m in messages[:3]] == ["user", "assistant", "tool"]
    tool = messages[2]
    assert tool["tool_call_id"] == "toolu_shot"
    tool_text = json.dumps(tool["content"])
    assert "screenshot taken" in tool_text and "image_url" not in tool_text and PNG_B64 not in tool_text
    later = messages[3:]
    assert later and all(m["role"] == "user" for m in later)
    parts = [p for m in later if isinstance(m["content"], list) for p in m["content"]]
    assert {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}} in [
        {"type": p["type"], "image_url": {"url": p["image_url"]["url"]}} for p in parts if p["type"] == "image_url"
    ]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [("", {}), ('```json\n{"city": "Rome"}\n```', {"city": "Rome"}), ("{}", {})],
    ids=["empty", "markdown-fenced", "empty-object"],
)
def test_tool_arguments_normalised(client, mock, nonce, arguments, expected):
    # SPEC §2.18: empty arguments -> {}, a markdown fence around the JSON is unwrapped.
    mock.script(
        completion(None, tool_calls=[tool_call("call_n", "get_weather", arguments)], finish_reason="tool_calls")
    )
    msg = client.messages.create(
        model=SONNET,
        max_tokens=64,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": f"Weather? {nonce}"}],
    )
    assert [b.type for b in msg.content] == ["tool_use"]
    assert msg.content[0].input == expected


def test_metadata_user_id_becomes_user(client, mock, nonce):
    mock.script(completion("ok"))
    client.messages.create(
        model=SONNET,
        max_tokens=16,
        metadata={"user_id": f"user-{nonce}"},
        messages=[{"role": "user", "content": f"Hi {nonce}"}],
    )
    up = mock.only_call().json
    assert up["user"] == f"user-{nonce}"
    assert "metadata" not in up


def test_what_openai_cannot_take_is_degraded_not_rejected(client, mock, nonce):
    # More than 4 stop sequences (OpenAI's limit) and top_k: dropped, and the response says so.
    mock.script(completion("ok"))
    raw = client.messages.with_raw_response.create(
        model=SONNET,
        max_tokens=16,
        stop_sequences=["a1", "b2", "c3", "d4", "e5", "f6"],
        messages=[{"role": "user", "content": f"Hi {nonce}"}],
        extra_body={"top_k": 40},
    )
    assert raw.parse().content[0].text == "ok"
    degraded = raw.headers.get("x-llm-bridge-degraded") or ""
    assert degraded, "the response names what was degraded"
    up = mock.only_call().json
    assert up["stop"] == ["a1", "b2", "c3", "d4"]
    assert "top_k" not in up


@pytest.mark.parametrize(
    ("body", "usage"),
    [
        (
            {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]},
            (0, 0),
        ),
        (
            {
                "id": "x",
                "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2, "prompt_tokens_details": None},
            },
            (5, 2),
        ),
    ],
    ids=["no-usage-no-object", "null-details-no-total"],
)
def test_minimal_upstream_completion(client, mock, nonce, body, usage):
    # llama.cpp/Ollama-style bodies leave out object, created, total_tokens, even usage:
    # missing numbers are zero and the SDK still gets a complete Message (SPEC §20).
    mock.script(Json(body))
    msg = client.messages.create(model=SONNET, max_tokens=16, messages=[{"role": "user", "content": f"Hi {nonce}"}])
    assert msg.content[0].text == "hi"
    assert msg.stop_reason == "end_turn"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == usage

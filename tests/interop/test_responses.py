"""The official Anthropic SDK against the proxy with OPENAI_WIRE=responses: the upstream is a
scripted OpenAI Responses API (named SSE events, reasoning items with encrypted content)."""

from __future__ import annotations

import time

import anthropic
import pytest

from conftest import _proxy_binary, _start_proxy
from helpers import CLIENT_KEY, WEATHER_TOOL
from mock_upstream import (
    call_item,
    message_item,
    openai_error,
    reasoning_item,
    responses_answer,
    responses_stream,
    responses_usage,
)

PREFIX = "llm-bridge.responses.v1:"
STREAM_TIMEOUT = 15.0


@pytest.fixture(scope="module")
def responses_proxy(upstream, proxy):
    p = _start_proxy(
        _proxy_binary(),
        upstream,
        proxy.log,
        OPENAI_WIRE="responses",
        BIG_MODEL="gpt-5",
        SMALL_MODEL="gpt-5-mini",
    )
    yield p
    p.stop()


@pytest.fixture
def rclient(responses_proxy):
    c = anthropic.Anthropic(base_url=responses_proxy.url, api_key=CLIENT_KEY, max_retries=0, timeout=15.0)
    yield c
    c.close()


def test_text_answer_and_the_request_upstream(rclient, mock, nonce):
    mock.script(responses_answer([message_item("Bonjour !")], usage=responses_usage(120, 9, cached=100)))
    message = rclient.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=8,
        system=[{"type": "text", "text": "Translate to French.", "cache_control": {"type": "ephemeral"}}],
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": f"Hello! {nonce}"}],
        metadata={"user_id": "user-7"},
    )
    assert message.content[0].type == "text" and message.content[0].text == "Bonjour !"
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (20, 100)
    assert message.usage.output_tokens == 9
    up = mock.only_call()
    assert up.path == "/v1/responses"
    body = up.json
    assert body["model"] == "gpt-5"
    assert body["instructions"] == "Translate to French."
    assert body["input"] == [{"role": "user", "content": [{"type": "input_text", "text": f"Hello! {nonce}"}]}]
    assert body["max_output_tokens"] == 16  # raised to the API's minimum
    assert body["store"] is False
    assert body["include"] == ["reasoning.encrypted_content"]
    assert body["user"] == "user-7"
    assert body["tools"][0]["strict"] is False
    assert body["tools"][0]["parameters"] == WEATHER_TOOL["input_schema"]
    assert "cache_control" not in up.raw.decode()


def test_stream_reasoning_text_and_tool_call(rclient, mock, nonce):
    mock.script(
        responses_stream(
            [
                ("reasoning", [["**Checking** the ", "weather tool."], ["Then answer."]], "gAAAAB-enc-1"),
                ("message", ["Let me ", "check."]),
                ("call", "call_w1", "get_weather", ['{"city":', '"Paris"}']),
            ],
            usage=responses_usage(50, 30, cached=10, reasoning=12),
        )
    )
    with rclient.messages.stream(
        model="claude-opus-4-1",
        max_tokens=1024,
        thinking={"type": "enabled", "budget_tokens": 2048},
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": f"Weather in Paris? {nonce}"}],
        timeout=STREAM_TIMEOUT,
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text", "tool_use"]
    assert final.content[0].thinking == "**Checking** the weather tool.\n\nThen answer."
    assert final.content[0].signature.startswith(PREFIX)
    assert final.content[0].signature.endswith(":gAAAAB-enc-1")
    assert final.content[1].text == "Let me check."
    assert final.content[2].id == "call_w1" and final.content[2].input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens, final.usage.output_tokens) == (40, 10, 30)
    assert sum(1 for e in events if e.type == "content_block_start") == 3
    body = mock.only_call().json
    assert body["stream"] is True
    assert body["reasoning"] == {"effort": "low", "summary": "auto"}


def test_reasoning_round_trip_across_a_tool_loop(rclient, mock, nonce):
    encrypted = "gAAAAABo-opaque_blob+/=" * 20
    mock.script(
        responses_answer(
            [reasoning_item(["Need the weather."], encrypted, item_id="rs_round"), call_item("call_r", "get_weather", '{"city":"Oslo"}')]
        ),
        responses_answer([message_item("It is 3°C in Oslo.")]),
    )
    question = {"role": "user", "content": f"Weather in Oslo? {nonce}"}
    first = rclient.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=1024,
        thinking={"type": "enabled", "budget_tokens": 4096},
        tools=[WEATHER_TOOL],
        messages=[question],
    )
    assert first.stop_reason == "tool_use"
    thinking = first.content[0]
    assert thinking.type == "thinking" and thinking.signature.startswith(PREFIX)
    # The SDK hands the assistant turn back as it came (the signature included).
    second = rclient.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=1024,
        thinking={"type": "enabled", "budget_tokens": 4096},
        tools=[WEATHER_TOOL],
        messages=[
            question,
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_r", "content": "3°C"}]},
        ],
    )
    assert second.content[0].text == "It is 3°C in Oslo."
    replay = mock.calls[1].json["input"]
    assert replay[1] == {
        "type": "reasoning",
        "id": "rs_round",
        "summary": [{"type": "summary_text", "text": "Need the weather."}],
        "encrypted_content": encrypted,
    }
    assert replay[2] == {"type": "function_call", "call_id": "call_r", "name": "get_weather", "arguments": '{"city":"Oslo"}'}
    assert replay[3] == {"type": "function_call_output", "call_id": "call_r", "output": "3°C"}


def test_foreign_thinking_is_dropped_with_the_degrade_header(rclient, mock, nonce):
    mock.script(responses_answer([message_item("ok")]))
    raw = rclient.messages.with_raw_response.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=[
            {"role": "user", "content": f"hi {nonce}"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Claude's own.", "signature": "EqQBCkgIARABGAIiQ"},
                {"type": "text", "text": "Hello"},
            ]},
            {"role": "user", "content": "again"},
        ],
    )
    assert raw.headers["x-llm-bridge-degraded"] == "foreign_thinking"
    assert "Claude's own." not in mock.only_call().raw.decode()


@pytest.mark.parametrize(
    "fragments, stops, text, matched",
    [
        (["The answer is 4", "2. </ans", "wer> and then more"], ["</answer>"], "The answer is 42. ", "</answer>"),
        (["STOP right there"], ["STOP"], "", "STOP"),
        (["one, two, th", "ree, four"], ["five", "three", "two, three"], "one, ", "two, three"),
    ],
)
def test_stop_sequences_in_streams(rclient, mock, nonce, fragments, stops, text, matched):
    # Events 60 ms apart: the proxy stops reading (and closes) the upstream at the match.
    filler = [f" w{i}" for i in range(40)]
    mock.script(responses_stream([("message", fragments + filler)], delay=0.06))
    started = time.monotonic()
    with rclient.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=256,
        stop_sequences=stops,
        messages=[{"role": "user", "content": f"Answer. {nonce}"}],
        timeout=STREAM_TIMEOUT,
    ) as stream:
        got = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert got == text
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == matched
    assert time.monotonic() - started < 2.5, "the stream ended at the stop, not at the upstream's end"
    up = mock.wait_for_calls(1)[0]
    assert up.disconnected.wait(3.0), "the upstream stream was not closed at the stop"
    assert "stop" not in up.json


def test_stop_sequences_none_matching_and_in_json(rclient, mock, nonce):
    mock.script(
        responses_stream([("message", ["no stop ", "<here"])]),
        responses_answer([message_item("alpha END beta"), call_item("c1", "get_weather", "{}")]),
    )
    with rclient.messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=64,
        stop_sequences=["<stop>", "END"],
        messages=[{"role": "user", "content": f"a {nonce}"}],
        timeout=STREAM_TIMEOUT,
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == "no stop <here"
    assert final.stop_reason == "end_turn"
    message = rclient.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        stop_sequences=["END"],
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": f"b {nonce}"}],
    )
    assert [b.type for b in message.content] == ["text"]
    assert message.content[0].text == "alpha "
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "END")


def test_incomplete_is_max_tokens(rclient, mock, nonce):
    mock.script(responses_stream([("message", ["Once upon", " a time"])], end="incomplete"))
    with rclient.messages.stream(
        model="claude-haiku-4-5",
        max_tokens=16,
        messages=[{"role": "user", "content": f"Tell a story. {nonce}"}],
        timeout=STREAM_TIMEOUT,
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "max_tokens"
    assert final.content[0].text == "Once upon a time"
    assert mock.only_call().json["model"] == "gpt-5-mini"


@pytest.mark.parametrize("how", ["failed", "error_event", "cut"])
def test_failures_mid_stream_raise(rclient, mock, nonce, how):
    if how == "failed":
        mock.script(responses_stream([("message", ["Partial"])], end="failed"))
    elif how == "error_event":
        mock.script(responses_stream([("message", ["Partial"])],
                                     error={"code": "server_error", "message": "Upstream hiccup", "param": None}))
    else:
        mock.script(responses_stream([("message", ["Partial", " answer", " cut"])], cut_after=6))
    seen = []
    with pytest.raises(anthropic.APIStatusError) as info:
        with rclient.messages.stream(
            model="claude-sonnet-4-5",
            max_tokens=64,
            messages=[{"role": "user", "content": f"Go. {nonce}"}],
            timeout=STREAM_TIMEOUT,
        ) as stream:
            for event in stream:
                seen.append(event.type)
    body = info.value.body
    assert isinstance(body, dict) and body.get("type") == "error", body
    assert body["error"]["type"] == "api_error"
    assert "message_stop" not in seen
    if how == "error_event":
        assert body["error"]["message"] == "Upstream hiccup"


def test_upstream_errors_map_to_sdk_exceptions(rclient, mock, nonce):
    mock.script(openai_error(429, "Rate limit reached for gpt-5", "requests", "rate_limit_exceeded",
                             headers={"retry-after": "7"}))
    with pytest.raises(anthropic.RateLimitError) as info:
        rclient.messages.create(
            model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": f"x {nonce}"}]
        )
    assert info.value.response.headers["retry-after"] == "7"
    mock.script(openai_error(400, "Invalid 'input[1].encrypted_content'.", "invalid_request_error", None, "input"))
    with pytest.raises(anthropic.BadRequestError) as bad:
        rclient.messages.create(
            model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": f"y {nonce}"}]
        )
    assert "encrypted_content" in bad.value.message

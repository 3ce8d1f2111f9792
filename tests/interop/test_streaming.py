"""Streaming /v1/messages through the SDK's `client.messages.stream(...)` helper."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time

import anthropic
import pytest
from anthropic.types import TextBlock, ToolUseBlock

from helpers import CLIENT_KEY, SONNET, TIME_TOOL, WEATHER_TOOL, check_event_grammar
from mock_upstream import chat_stream, completion, split_every

STREAM_TIMEOUT = 8.0  # per request: any hang fails the test instead of stalling the run


def _text_deltas(pieces):
    return [{"content": p} for p in pieces]


def test_stream_text(client, mock, nonce):
    pieces = ["Hel", "lo, ", "wör", "ld", "! ", "How can I help?"]
    mock.script(
        chat_stream(_text_deltas(pieces), prompt_tokens=300, completion_tokens=42, cached_tokens=100, delay=0.01)
    )

    with client.messages.stream(
        model=SONNET,
        max_tokens=256,
        messages=[{"role": "user", "content": f"Greet me. {nonce}"}],
        timeout=STREAM_TIMEOUT,
    ) as stream:
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        received = list(stream.text_stream)
        final = stream.get_final_message()

    assert "".join(received) == "".join(pieces)
    assert final.id.startswith("msg_")
    assert final.model == SONNET
    # the blank first chunk (content: "") opens no phantom block
    assert len(final.content) == 1 and isinstance(final.content[0], TextBlock)
    assert final.content[0].text == "".join(pieces)
    assert final.stop_reason == "end_turn" and final.stop_sequence is None
    # usage comes from the final usage chunk (choices: []) that follows the finish chunk
    assert final.usage.output_tokens == 42
    assert final.usage.input_tokens == 200
    assert final.usage.cache_read_input_tokens == 100

    up = mock.only_call().json
    assert up["stream"] is True
    assert up["stream_options"] == {"include_usage": True}
    assert up["messages"] == [{"role": "user", "content": f"Greet me. {nonce}"}]


def test_stream_event_order_and_incremental_delivery(client, mock, nonce):
    # 8 chunks 150 ms apart: the first text must reach the SDK long before the stream ends,
    # i.e. the proxy forwards events as they come instead of buffering the whole answer.
    pieces = [f"part{i} " for i in range(8)]
    mock.script(chat_stream(_text_deltas(pieces), delay=0.15))
    arrivals = []
    start = time.monotonic()
    with client.messages.stream(
        model=SONNET,
        max_tokens=256,
        messages=[{"role": "user", "content": f"Count slowly. {nonce}"}],
        timeout=STREAM_TIMEOUT,
    ) as stream:
        events = []
        for event in stream:
            events.append(event)
            if event.type == "text":
                arrivals.append(time.monotonic() - start)
    end = time.monotonic() - start
    check_event_grammar(events)
    assert len(arrivals) == len(pieces)
    assert end >= 1.2
    assert arrivals[0] < end - 0.6, f"first text at {arrivals[0]:.2f}s, stream ended at {end:.2f}s: buffered"


@pytest.mark.parametrize("done", [True, False], ids=["with-done", "without-done"])
def test_stream_stop_sequence(client, mock, nonce, done):
    mock.script(
        chat_stream(
            _text_deltas(["1, 2", ", 3"]),
            finish_reason="stop",
            finish_extra={"stop_reason": "END"},  # vLLM names the matched stop string here
            completion_tokens=6,
            done=done,  # SPEC §25: an upstream that ends without [DONE] after a finish is fine
        )
    )
    with client.messages.stream(
        model=SONNET,
        max_tokens=64,
        stop_sequences=["###", "END"],
        messages=[{"role": "user", "content": f"Count to three then END. {nonce}"}],
        timeout=STREAM_TIMEOUT,
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    check_event_grammar(events)
    assert final.content[0].text == "1, 2, 3"
    assert final.stop_reason == "stop_sequence"
    assert final.stop_sequence == "END"
    assert final.usage.output_tokens == 6
    assert mock.only_call().json["stop"] == ["###", "END"]


def test_stream_tool_call_split_across_many_chunks(client, mock, nonce):
    args = {
        "city": "Zürich",
        "unit": "celsius",
        "days": [1, 2, 3],
        "options": {"hourly": True, "note": 'quote " and \\ backslash, emoji 🌦'},
    }
    arg_text = json.dumps(args, ensure_ascii=False)
    fragments = split_every(arg_text, 3)
    assert len(fragments) > 20
    start = {
        "tool_calls": [
            {
                "index": 0,
                "id": "call_weather_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ]
    }
    deltas = [start] + [{"tool_calls": [{"index": 0, "function": {"arguments": f}}]} for f in fragments]
    mock.script(chat_stream(deltas, finish_reason="tool_calls", completion_tokens=57))

    with client.messages.stream(
        model=SONNET,
        max_tokens=256,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": f"Weather in Zürich? {nonce}"}],
        timeout=STREAM_TIMEOUT,
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()

    check_event_grammar(events)
    partial = "".join(
        e.delta.partial_json for e in events if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
    )
    assert json.loads(partial) == args  # the SDK's accumulated JSON equals the upstream's
    assert len(final.content) == 1, f"expected only the tool_use block, got {final.content}"
    block = final.content[0]
    assert isinstance(block, ToolUseBlock)
    assert (block.id, block.name) == ("call_weather_1", "get_weather")
    assert block.input == args
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens == 57
    starts = [e for e in events if e.type == "content_block_start"]
    assert starts[0].content_block.type == "tool_use" and starts[0].content_block.input == {}


def test_stream_three_parallel_tool_calls_interleaved(client, mock, nonce):
    calls = [
        ("call_a", "get_weather", {"city": "Paris", "unit": "celsius"}),
        ("call_b", "get_time", {"tz": "Europe/Paris"}),
        ("call_c", "get_weather", {"city": "Tokyo", "unit": "fahrenheit"}),
    ]
    frags = [split_every(json.dumps(a), 4) for _, _, a in calls]

    def start(i):
        cid, name, _ = calls[i]
        return {
            "tool_calls": [{"index": i, "id": cid, "type": "function", "function": {"name": name, "arguments": ""}}]
        }

    def frag(i, text):
        return {"tool_calls": [{"index": i, "function": {"arguments": text}}]}

    # Call 1 starts while call 0's arguments are still arriving, call 2 while both are, then
    # the remaining fragments come round-robin: blocks must stay correct however they interleave.
    deltas = [{"content": "Checking three things."}, start(0), frag(0, frags[0][0]), start(1), frag(1, frags[1][0])]
    deltas += [frag(0, frags[0][1]), start(2)]
    cursors = [2, 1, 0]
    while any(c < len(f) for c, f in zip(cursors, frags)):
        for i in (2, 0, 1):
            if cursors[i] < len(frags[i]):
                deltas.append(frag(i, frags[i][cursors[i]]))
                cursors[i] += 1
    mock.script(chat_stream(deltas, finish_reason="tool_calls", completion_tokens=90))

    with client.messages.stream(
        model=SONNET,
        max_tokens=512,
        tools=[WEATHER_TOOL, TIME_TOOL],
        messages=[{"role": "user", "content": f"Weather in Paris and Tokyo, time in Paris. {nonce}"}],
        timeout=STREAM_TIMEOUT,
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()

    check_event_grammar(events)
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use", "tool_use"]
    assert final.content[0].text == "Checking three things."
    got = [(b.id, b.name, b.input) for b in final.content[1:]]
    assert got == calls
    assert final.stop_reason == "tool_use"
    assert final.usage.output_tokens == 90
    # the raw JSON each tool block accumulated is exactly the upstream's arguments
    for index, (_, _, args) in enumerate(calls, start=1):
        partial = "".join(
            e.delta.partial_json
            for e in events
            if e.type == "content_block_delta" and e.index == index and e.delta.type == "input_json_delta"
        )
        assert json.loads(partial) == args


def test_stream_cut_mid_stream_raises_promptly(client, mock, nonce):
    # The upstream sends its role chunk and two text chunks, then the connection dies.
    mock.script(chat_stream(_text_deltas(["The answer ", "is ", "forty", "-two."]), cut_after=3))
    seen_types = []
    texts = []
    start = time.monotonic()
    with pytest.raises(anthropic.APIStatusError) as info:
        with client.messages.stream(
            model=SONNET,
            max_tokens=64,
            messages=[{"role": "user", "content": f"What is the answer? {nonce}"}],
            timeout=STREAM_TIMEOUT,
        ) as stream:
            for event in stream:
                seen_types.append(event.type)
                if event.type == "text":
                    texts.append(event.text)
    elapsed = time.monotonic() - start
    assert elapsed < 5.0, f"the SDK took {elapsed:.1f}s to notice the cut"
    body = info.value.body
    assert isinstance(body, dict) and body.get("type") == "error", body
    assert body["error"]["type"] in ("api_error", "overloaded_error"), body
    assert "".join(texts) == "The answer is "
    assert "message_stop" not in seen_types, "a cut stream must not end with a fake message_stop"
    assert len(mock.calls) == 1


def test_stream_tool_call_from_quirky_backend(client, mock, nonce):
    # Some OpenAI-compatible servers put `tool_calls: []` on text chunks and repeat `id: ""`
    # (and the type) on every argument fragment (SPEC §23).
    args = {"city": "Lyon", "unit": "celsius"}
    pieces = split_every(json.dumps(args), 5)
    deltas = [
        {"content": "Sure.", "tool_calls": []},
        {
            "content": None,
            "tool_calls": [
                {"index": 0, "id": "call_q1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
            ],
        },
    ] + [
        {"content": None, "tool_calls": [{"index": 0, "id": "", "type": "function", "function": {"arguments": p}}]}
        for p in pieces
    ]
    mock.script(chat_stream(deltas, finish_reason="tool_calls"))
    with client.messages.stream(
        model=SONNET,
        max_tokens=128,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": f"Weather in Lyon? {nonce}"}],
        timeout=STREAM_TIMEOUT,
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    check_event_grammar(events)
    assert [b.type for b in final.content] == ["text", "tool_use"]
    assert final.content[0].text == "Sure."
    tool = final.content[1]
    assert (tool.id, tool.name, tool.input) == ("call_q1", "get_weather", args)
    assert final.stop_reason == "tool_use"


def test_stream_wire_format(raw, mock, nonce):
    # What the SDK hides: every event has an `event:` line naming its data's type, a ping
    # follows message_start, and the content type is text/event-stream (SPEC §21, §26).
    mock.script(chat_stream(_text_deltas(["a", "b"])))
    body = {
        "model": SONNET,
        "max_tokens": 16,
        "stream": True,
        "messages": [{"role": "user", "content": f"ab {nonce}"}],
    }
    headers = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    with raw.stream("POST", "/v1/messages", json=body, headers=headers, timeout=STREAM_TIMEOUT) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    frames = [f for f in text.replace("\r\n", "\n").split("\n\n") if f.strip()]
    names = []
    for frame in frames:
        lines = frame.split("\n")
        assert lines[0].startswith("event: "), f"frame without an event line: {frame!r}"
        data_lines = [line for line in lines if line.startswith("data:")]
        assert len(data_lines) == 1, frame
        data = json.loads(data_lines[0][len("data:") :])
        name = lines[0][len("event: ") :]
        assert data["type"] == name
        names.append(name)
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == 1


def test_stream_reasoning_becomes_thinking_block(client, mock, nonce):
    deltas = [
        {"reasoning_content": "Six times "},
        {"reasoning_content": "seven is 42."},
        {"content": "It is "},
        {"content": "42."},
    ]
    mock.script(chat_stream(deltas, first_delta={"role": "assistant", "content": None}, completion_tokens=20))
    with client.messages.stream(
        model=SONNET,
        max_tokens=256,
        messages=[{"role": "user", "content": f"What is six times seven? {nonce}"}],
        timeout=STREAM_TIMEOUT,
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    seq = check_event_grammar(events)
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].thinking == "Six times seven is 42."
    assert final.content[0].signature == ""
    assert final.content[1].text == "It is 42."
    # the thinking block is closed with a signature_delta before the next block (SPEC §22)
    deltas_0 = [e.delta.type for e in events if e.type == "content_block_delta" and e.index == 0]
    assert deltas_0[-1] == "signature_delta" and deltas_0[:-1] == ["thinking_delta", "thinking_delta"]
    assert seq.index(("content_block_stop", 0)) < seq.index(("content_block_start", 1))
    assert final.usage.output_tokens == 20


FRAMINGS = {
    "3-byte-pieces": {"split": 3},
    "crlf": {"crlf": True},
    "5-byte-pieces-crlf": {"split": 5, "crlf": True},
    "comments-and-no-space": {"comments": True, "nospace": True, "split": 7},
}


@pytest.mark.parametrize("framing", list(FRAMINGS))
def test_stream_survives_any_sse_framing(client, mock, nonce, framing):
    # Upstream events arrive in tiny HTTP chunks (inside lines, inside UTF-8 characters), with
    # CRLF line ends, with SSE comments between events, or as `data:` without the space (§26).
    pieces = ["Grüße ", "aus ", "Köln — ", "世界 ", "🌍🚀", " done"]
    args = {"q": "naïve café ☕", "emoji": "🦀"}
    arg_text = json.dumps(args, ensure_ascii=False)
    deltas = (
        [{"content": p} for p in pieces]
        + [
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_u",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            }
        ]
        + [{"tool_calls": [{"index": 0, "function": {"arguments": f}}]} for f in split_every(arg_text, 4)]
    )
    mock.script(chat_stream(deltas, finish_reason="tool_calls", completion_tokens=33, **FRAMINGS[framing]))
    with client.messages.stream(
        model=SONNET,
        max_tokens=256,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": f"Unicode please. {nonce}"}],
        timeout=STREAM_TIMEOUT,
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    check_event_grammar(events)
    assert [b.type for b in final.content] == ["text", "tool_use"]
    assert final.content[0].text == "".join(pieces)
    assert final.content[1].input == args
    assert final.usage.output_tokens == 33


def test_client_disconnect_cancels_upstream(client, mock, nonce):
    # 60 chunks 50 ms apart (3 s): the client leaves after three texts, and the proxy must drop
    # the upstream request instead of reading it to the end (SPEC §27).
    mock.script(chat_stream([{"content": f"w{i} "} for i in range(60)], delay=0.05))
    with client.messages.stream(
        model=SONNET,
        max_tokens=256,
        messages=[{"role": "user", "content": f"Talk for a while. {nonce}"}],
        timeout=STREAM_TIMEOUT,
    ) as stream:
        for n, _ in enumerate(stream.text_stream, start=1):
            if n == 3:
                break
    left_at = time.monotonic()
    up = mock.wait_for_calls(1)[0]
    assert up.disconnected.wait(2.5), "the upstream kept streaming after the client left"
    assert time.monotonic() - left_at < 2.5


def test_stream_from_backend_that_ignores_include_usage(client, mock, nonce):
    # Older vLLM/llama.cpp builds send no usage chunk: the stream must still end normally.
    mock.script(chat_stream(_text_deltas(["no ", "usage"]), honor_include_usage=False))
    with client.messages.stream(
        model=SONNET,
        max_tokens=64,
        messages=[{"role": "user", "content": f"Hi {nonce}"}],
        timeout=STREAM_TIMEOUT,
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    check_event_grammar(events)
    assert final.content[0].text == "no usage"
    assert final.stop_reason == "end_turn"


def test_stream_error_object_mid_stream(client, mock, nonce):
    # vLLM reports a failure inside the stream as a data event with an error object (integer
    # code): the SDK must get an error event, not a normal end (SPEC §25).
    vllm_error = {"error": {"message": "CUDA out of memory", "type": "InternalServerError", "param": None, "code": 500}}
    mock.script(chat_stream(_text_deltas(["Part ", "one"]), after=[vllm_error]))
    seen = []
    with pytest.raises(anthropic.APIStatusError) as info:
        with client.messages.stream(
            model=SONNET,
            max_tokens=64,
            messages=[{"role": "user", "content": f"Hi {nonce}"}],
            timeout=STREAM_TIMEOUT,
        ) as stream:
            for event in stream:
                seen.append(event.type)
    body = info.value.body
    assert isinstance(body, dict) and body.get("type") == "error", body
    assert body["error"]["type"] in ("api_error", "overloaded_error"), body
    assert "message_stop" not in seen


def test_stream_tool_call_in_one_chunk(client, mock, nonce):
    # Mistral- and Gemini-style backends send each tool call whole, in a single chunk.
    a = {"city": "Berlin"}
    b = {"tz": "Europe/Berlin"}
    deltas = [
        {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                         "function": {"name": "get_weather", "arguments": json.dumps(a)}}]},
        {"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                         "function": {"name": "get_time", "arguments": json.dumps(b)}}]},
    ]  # fmt: skip
    mock.script(chat_stream(deltas, first_delta={"role": "assistant", "content": None}, finish_reason="tool_calls"))
    with client.messages.stream(
        model=SONNET,
        max_tokens=64,
        tools=[WEATHER_TOOL, TIME_TOOL],
        messages=[{"role": "user", "content": f"Berlin? {nonce}"}],
        timeout=STREAM_TIMEOUT,
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    check_event_grammar(events)
    assert [(x.type, x.id, x.name, x.input) for x in final.content] == [
        ("tool_use", "call_1", "get_weather", a),
        ("tool_use", "call_2", "get_time", b),
    ]


def test_long_fast_stream(client, mock, nonce):
    # 3000 one-token chunks as fast as the upstream can send them: all arrive, in order, quickly.
    pieces = [f"{i % 10}" for i in range(3000)]
    mock.script(chat_stream(_text_deltas(pieces), completion_tokens=3000))
    start = time.monotonic()
    with client.messages.stream(
        model=SONNET,
        max_tokens=4000,
        messages=[{"role": "user", "content": f"Digits. {nonce}"}],
        timeout=STREAM_TIMEOUT,
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    elapsed = time.monotonic() - start
    assert text == "".join(pieces)
    assert final.usage.output_tokens == 3000
    assert elapsed < 6.0, f"3000 chunks took {elapsed:.1f}s"


def _echo_stream(req):
    """Answers with the request's own user text, so concurrent answers can be told apart."""
    text = req.json["messages"][-1]["content"]
    return chat_stream(_text_deltas(split_every(f"echo: {text}", 4)), delay=0.005)(req)


def test_concurrent_streams_do_not_mix(client, mock, nonce):
    n = 16
    mock.script(*[_echo_stream] * n)

    def one(i):
        with client.messages.stream(
            model=SONNET,
            max_tokens=64,
            messages=[{"role": "user", "content": f"stream {i} of {nonce}"}],
            timeout=STREAM_TIMEOUT,
        ) as stream:
            return "".join(stream.text_stream), stream.get_final_message()

    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(one, range(n), timeout=30))
    for i, (text, final) in enumerate(results):
        assert text == f"echo: stream {i} of {nonce}"
        assert final.content[0].text == text
    assert len(mock.calls) == n


def test_async_client(proxy, mock, nonce):
    # The SDK's asyncio client goes through a different transport path than the sync one.
    mock.script(completion("async ok"), chat_stream(_text_deltas(["as", "ync ", "stream"]), completion_tokens=3))

    async def main():
        async with anthropic.AsyncAnthropic(
            base_url=proxy.url, api_key=CLIENT_KEY, max_retries=0, timeout=STREAM_TIMEOUT
        ) as c:
            msg = await c.messages.create(
                model=SONNET, max_tokens=16, messages=[{"role": "user", "content": f"Hi {nonce}"}]
            )
            async with c.messages.stream(
                model=SONNET, max_tokens=16, messages=[{"role": "user", "content": f"Stream {nonce}"}]
            ) as stream:
                texts = [t async for t in stream.text_stream]
                final = await stream.get_final_message()
            return msg, texts, final

    msg, texts, final = asyncio.run(asyncio.wait_for(main(), timeout=20))
    assert msg.content[0].text == "async ok"
    assert "".join(texts) == "async stream"
    assert final.usage.output_tokens == 3
    assert len(mock.calls) == 2

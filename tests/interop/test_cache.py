"""The response cache seen from the SDK (SPEC §34-35)."""

from __future__ import annotations

import threading
import time

import anthropic
import pytest

from helpers import SONNET, WEATHER_TOOL, check_event_grammar
from mock_upstream import chat_stream, completion, openai_error, split_every


def _ask(client, nonce, max_tokens=64, **extra):
    return client.messages.with_raw_response.create(
        model=SONNET,
        max_tokens=max_tokens,
        messages=[{"role": "user", "content": f"What is 2+2? {nonce}"}],
        **extra,
    )


def test_identical_request_is_served_from_cache(client, mock, nonce):
    mock.script(completion("4", prompt_tokens=15, completion_tokens=1))

    first = _ask(client, nonce)
    second = _ask(client, nonce)

    assert first.headers.get("x-cache") == "MISS"
    assert second.headers.get("x-cache") == "HIT"
    assert second.headers.get("age") is not None
    a, b = first.parse(), second.parse()
    assert a.content[0].text == b.content[0].text == "4"
    assert b.model == SONNET and b.stop_reason == "end_turn"
    assert b.usage.output_tokens == 1
    assert len(mock.calls) == 1, "the second request was answered without the upstream"


def test_cache_key_covers_max_tokens(client, mock, nonce):
    mock.script(completion("4"), completion("4"))
    assert _ask(client, nonce, max_tokens=64).headers.get("x-cache") == "MISS"
    assert _ask(client, nonce, max_tokens=65).headers.get("x-cache") == "MISS"
    assert len(mock.calls) == 2


def test_no_store_bypasses_the_cache(client, mock, nonce):
    mock.script(completion("4"), completion("4"))
    for _ in range(2):
        r = _ask(client, nonce, extra_headers={"Cache-Control": "no-store"})
        assert r.headers.get("x-cache") == "BYPASS"
        assert r.parse().content[0].text == "4"
    assert len(mock.calls) == 2


def test_concurrent_identical_requests_make_one_upstream_call(client, mock, nonce):
    # SPEC §35 request coalescing: three SDK clients ask the same thing at once while the
    # upstream takes 0.8 s; one upstream call answers all three.
    mock.script(*[completion("4", delay=0.8) for _ in range(3)])
    barrier = threading.Barrier(3, timeout=5)
    results: list = [None] * 3

    def ask(i):
        barrier.wait()
        try:
            results[i] = _ask(client, nonce)
        except Exception as e:  # surfaced by the assertions below
            results[i] = e

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=15)
    assert not any(t.is_alive() for t in threads)
    for r in results:
        assert not isinstance(r, Exception), r
        assert r.parse().content[0].text == "4"
    assert len(mock.calls) == 1, f"{len(mock.calls)} upstream calls for 3 identical concurrent requests"


def test_errors_are_not_cached(client, mock, nonce):
    mock.script(openai_error(500, "boom", "server_error"), completion("4"))
    with pytest.raises(anthropic.InternalServerError):
        _ask(client, nonce)
    ok = _ask(client, nonce)
    assert ok.parse().content[0].text == "4"
    assert ok.headers.get("x-cache") == "MISS"
    assert len(mock.calls) == 2


def test_cache_is_per_caller(start_proxy, mock, nonce):
    # Two tenants sending the same request never share an answer (SPEC §33).
    p = start_proxy(PROXY_API_KEYS="sk-tenant-one,sk-tenant-two")
    mock.script(completion("for tenant one"), completion("for tenant two"))
    one = anthropic.Anthropic(base_url=p.url, api_key="sk-tenant-one", max_retries=0, timeout=10.0)
    two = anthropic.Anthropic(base_url=p.url, api_key="sk-tenant-two", max_retries=0, timeout=10.0)
    try:
        a1 = _ask(one, nonce)
        b1 = _ask(two, nonce)
        a2 = _ask(one, nonce)
    finally:
        one.close()
        two.close()
    assert (a1.headers.get("x-cache"), b1.headers.get("x-cache"), a2.headers.get("x-cache")) == ("MISS", "MISS", "HIT")
    assert b1.parse().content[0].text == "for tenant two"
    assert a2.parse().content[0].text == "for tenant one"
    assert len(mock.calls) == 2


def test_cache_ttl_secs_zero_bypasses_and_is_not_forwarded(client, mock, nonce):
    mock.script(completion("4"), completion("4"))
    for _ in range(2):
        r = _ask(client, nonce, extra_body={"cache_ttl_secs": 0})
        assert r.headers.get("x-cache") == "BYPASS"
    assert len(mock.calls) == 2
    assert all("cache_ttl_secs" not in c.json for c in mock.calls)


def test_cache_ttl_secs_expires(client, mock, nonce):
    mock.script(completion("4"), completion("4"))
    assert _ask(client, nonce, extra_body={"cache_ttl_secs": 1}).headers.get("x-cache") == "MISS"
    assert _ask(client, nonce, extra_body={"cache_ttl_secs": 1}).headers.get("x-cache") == "HIT"
    time.sleep(1.6)
    assert _ask(client, nonce, extra_body={"cache_ttl_secs": 1}).headers.get("x-cache") == "MISS"
    assert len(mock.calls) == 2
    assert "cache_ttl_secs" not in mock.calls[0].json


@pytest.mark.parametrize("ttl", [-1, "soon", 86_401])
def test_invalid_cache_ttl_secs_is_400(client, mock, nonce, ttl):
    with pytest.raises(anthropic.BadRequestError) as info:
        _ask(client, nonce, extra_body={"cache_ttl_secs": ttl})
    assert info.value.body["error"]["type"] == "invalid_request_error"
    assert "cache_ttl_secs" in info.value.body["error"]["message"]
    assert mock.calls == []


def _stream(client, nonce, **extra):
    with client.messages.stream(
        model=SONNET,
        max_tokens=256,
        messages=[{"role": "user", "content": f"Weather in Lyon? {nonce}"}],
        timeout=8.0,
        **extra,
    ) as stream:
        headers = stream.response.headers
        events = list(stream)
        final = stream.get_final_message()
    check_event_grammar(events)
    return headers, final


def test_a_streamed_answer_is_cached_and_replayed_to_the_sdk(client, mock, nonce):
    # messages.stream() twice: the second is a HIT with the same final message (text, tool
    # input, stop reason, usage), without calling the upstream.
    args = '{"city": "Lyon", "days": [1, 2], "note": "quote \\" and é"}'
    deltas = [{"content": piece} for piece in split_every("Let me check the weather.", 4)]
    deltas.append({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                   "function": {"name": "get_weather", "arguments": ""}}]})
    deltas += [{"tool_calls": [{"index": 0, "function": {"arguments": f}}]} for f in split_every(args, 5)]
    mock.script(chat_stream(deltas, finish_reason="tool_calls", prompt_tokens=30, completion_tokens=21, delay=0.01))

    h1, first = _stream(client, nonce, tools=[WEATHER_TOOL])
    h2, second = _stream(client, nonce, tools=[WEATHER_TOOL])

    assert (h1.get("x-cache"), h2.get("x-cache")) == ("MISS", "HIT")
    assert h2.get("age") is not None
    assert h2["content-type"].startswith("text/event-stream")
    assert [b.model_dump() for b in second.content] == [b.model_dump() for b in first.content]
    assert first.content[0].text == "Let me check the weather."
    assert first.content[1].input == {"city": "Lyon", "days": [1, 2], "note": 'quote " and é'}
    assert (second.stop_reason, second.stop_sequence) == (first.stop_reason, first.stop_sequence) == ("tool_use", None)
    assert second.usage.model_dump() == first.usage.model_dump()
    assert second.usage.output_tokens == 21
    assert len(mock.calls) == 1, "the replay never reached the upstream"

    # A JSON request for the same thing is answered from the streamed entry.
    r = client.messages.with_raw_response.create(
        model=SONNET,
        max_tokens=256,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": f"Weather in Lyon? {nonce}"}],
    )
    assert r.headers.get("x-cache") == "HIT"
    message = r.parse()
    assert [b.model_dump() for b in message.content] == [b.model_dump() for b in first.content]
    assert len(mock.calls) == 1


def test_a_cut_stream_is_not_cached(client, mock, nonce):
    mock.script(
        chat_stream([{"content": "partial "}, {"content": "answer"}], cut_after=2),
        chat_stream([{"content": "whole answer"}]),
    )
    with pytest.raises(anthropic.APIError):
        _stream(client, nonce)
    h, final = _stream(client, nonce)
    assert h.get("x-cache") == "MISS"
    assert final.content[0].text == "whole answer"
    assert len(mock.calls) == 2


def test_concurrent_identical_streams_share_one_upstream_stream(client, mock, nonce):
    # Three SDK streams at once while the upstream streams slowly: one upstream call, every
    # client the same final message.
    mock.script(*[chat_stream([{"content": p} for p in split_every("shared live stream", 2)], delay=0.05)
                  for _ in range(3)])
    barrier = threading.Barrier(3, timeout=5)
    results: list = [None] * 3

    def run(i):
        barrier.wait()
        try:
            results[i] = _stream(client, nonce)
        except Exception as e:  # surfaced by the assertions below
            results[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=15)
    assert not any(t.is_alive() for t in threads)
    for r in results:
        assert not isinstance(r, Exception), r
        assert r[1].content[0].text == "shared live stream"
    assert sorted(r[0].get("x-cache") for r in results) == ["HIT", "HIT", "MISS"]
    assert len(mock.calls) == 1, f"{len(mock.calls)} upstream calls for 3 identical concurrent streams"


def test_streaming_request_after_a_cached_identical_one_still_streams(client, mock, nonce):
    # The cache key leaves `stream` out (SPEC §33): a streaming client asking what was just
    # cached from a JSON request gets that answer rendered as an SSE stream the SDK can read,
    # never the JSON.
    mock.script(completion("4", completion_tokens=1))
    first = _ask(client, nonce)
    assert first.headers.get("x-cache") == "MISS"
    with client.messages.stream(
        model=SONNET,
        max_tokens=64,
        messages=[{"role": "user", "content": f"What is 2+2? {nonce}"}],
        timeout=8.0,
    ) as stream:
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        assert stream.response.headers["x-cache"] == "HIT"
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "4"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 1
    assert len(mock.calls) == 1
    # and the JSON client after the stream still gets JSON (from the cache)
    third = _ask(client, nonce)
    assert third.headers.get("x-cache") == "HIT"
    assert third.parse().content[0].text == "4"

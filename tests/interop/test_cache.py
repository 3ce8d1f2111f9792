"""The response cache seen from the SDK (SPEC §34-35)."""

from __future__ import annotations

import threading
import time

import anthropic
import pytest

from helpers import SONNET
from mock_upstream import chat_stream, completion, openai_error


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


def test_streaming_request_after_a_cached_identical_one_still_streams(client, mock, nonce):
    # The cache key leaves `stream` out (SPEC §33): a streaming client asking what was just
    # cached from a JSON request must still get an SSE stream the SDK can read, never the JSON.
    mock.script(completion("4", completion_tokens=1), chat_stream([{"content": "4"}], completion_tokens=1))
    first = _ask(client, nonce)
    assert first.headers.get("x-cache") == "MISS"
    with client.messages.stream(
        model=SONNET,
        max_tokens=64,
        messages=[{"role": "user", "content": f"What is 2+2? {nonce}"}],
        timeout=8.0,
    ) as stream:
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "4"
    assert final.stop_reason == "end_turn"
    # and the JSON client after the stream still gets JSON (from the cache)
    third = _ask(client, nonce)
    assert third.headers.get("x-cache") == "HIT"
    assert third.parse().content[0].text == "4"

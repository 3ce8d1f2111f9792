"""The response cache seen from the SDK (SPEC §34-35)."""

from __future__ import annotations

import threading

from helpers import SONNET
from mock_upstream import completion


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

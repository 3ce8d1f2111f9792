"""The response cache seen from the SDK (SPEC §34-35)."""

from __future__ import annotations

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

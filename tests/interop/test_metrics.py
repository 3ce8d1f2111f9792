"""GET /metrics after SDK traffic: the token counters move by exactly the usage the SDK saw."""

from __future__ import annotations

import re

from helpers import SONNET
from mock_upstream import chat_stream, completion

_SAMPLE = re.compile(r"^llm_bridge_tokens_total\{(.*)\} (\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def _tokens(raw) -> dict[str, float]:
    """Tokens by type, summed over models and backends (the suite's proxy is shared)."""
    res = raw.get("/metrics")
    assert res.status_code == 200
    assert res.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    totals: dict[str, float] = {}
    for line in res.text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            labels = dict(_LABEL.findall(m.group(1)))
            assert set(labels) == {"type", "model", "backend"}, line
            totals[labels["type"]] = totals.get(labels["type"], 0.0) + float(m.group(2))
    return totals


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in ("input", "output", "cache_read")}


def test_token_counters_after_json_and_streamed_answers(client, mock, raw, nonce):
    before = _tokens(raw)
    mock.script(completion("Hello", prompt_tokens=120, completion_tokens=9, cached_tokens=20))
    msg = client.messages.create(
        model=SONNET,
        max_tokens=64,
        messages=[{"role": "user", "content": f"metrics json {nonce}"}],
    )
    after_json = _tokens(raw)
    assert _delta(before, after_json) == {
        "input": msg.usage.input_tokens,
        "output": msg.usage.output_tokens,
        "cache_read": msg.usage.cache_read_input_tokens,
    } == {"input": 100, "output": 9, "cache_read": 20}

    mock.script(
        chat_stream(
            [{"content": "Hel"}, {"content": "lo"}],
            prompt_tokens=300,
            completion_tokens=42,
            cached_tokens=100,
        )
    )
    with client.messages.stream(
        model=SONNET,
        max_tokens=64,
        messages=[{"role": "user", "content": f"metrics stream {nonce}"}],
    ) as stream:
        final = stream.get_final_message()
    after_stream = _tokens(raw)
    assert _delta(after_json, after_stream) == {
        "input": final.usage.input_tokens,
        "output": final.usage.output_tokens,
        "cache_read": final.usage.cache_read_input_tokens,
    } == {"input": 200, "output": 42, "cache_read": 100}


def test_metrics_holds_no_key_or_prompt(client, mock, raw, nonce):
    mock.script(completion("ok"))
    client.messages.create(
        model=SONNET,
        max_tokens=16,
        messages=[{"role": "user", "content": f"secret prompt {nonce}"}],
    )
    text = raw.get("/metrics").text
    assert nonce not in text
    assert "sk-" not in text

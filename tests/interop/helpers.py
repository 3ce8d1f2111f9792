"""Shared test data and checks."""

from __future__ import annotations

import json
from typing import Any, Iterable

import anthropic

CLIENT_KEY = "sk-ant-interop-client-key"  # what SDK clients send the proxy (PROXY_API_KEYS)
UPSTREAM_KEY = "sk-interop-upstream-key"  # what the proxy must send the upstream (OPENAI_API_KEY)

SONNET = "claude-sonnet-4-6"
HAIKU = "claude-haiku-4-5"
OPUS = "claude-opus-4-7"
REASONER = "reasoner"  # MODEL_MAP rule: client models containing this go to REASONER_UPSTREAM
REASONER_UPSTREAM = "o3-mini"
BIG = "gpt-4o"  # the proxy's default BIG_MODEL
SMALL = "gpt-4o-mini"  # the proxy's default SMALL_MODEL

# A 1x1 transparent PNG.
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city"],
        "additionalProperties": False,
    },
}
TIME_TOOL = {
    "name": "get_time",
    "description": "Local time in an IANA time zone.",
    "input_schema": {
        "type": "object",
        "properties": {"tz": {"type": "string"}},
        "required": ["tz"],
    },
}


def openai_tool(tool: dict) -> dict:
    """What SPEC §1.8 says an Anthropic tool becomes upstream."""
    return {
        "type": "function",
        "function": {
            "name": tool["name"],
            "description": tool["description"],
            "parameters": tool["input_schema"],
        },
    }


# OpenAI does not know these; the proxy must not forward them (SPEC §1.14 allow-list).
ANTHROPIC_ONLY_FIELDS = (
    "system",
    "stop_sequences",
    "top_k",
    "metadata",
    "thinking",
    "anthropic_version",
    "cache_ttl_secs",
)


def assert_no_anthropic_fields(body: dict) -> None:
    leaked = [f for f in ANTHROPIC_ONLY_FIELDS if f in body]
    assert not leaked, f"Anthropic-only fields forwarded upstream: {leaked}"


def is_compact_json(text: str) -> bool:
    """True when `text` is JSON serialised without insignificant whitespace."""
    return text == json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)


def overloaded_class() -> type:
    """The SDK's class for 529 (newer SDKs have OverloadedError; older ones only APIStatusError)."""
    return getattr(anthropic, "OverloadedError", anthropic.APIStatusError)


RAW_EVENT_TYPES = {
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
}


def check_event_grammar(events: Iterable[Any]) -> list[tuple[str, int | None]]:
    """Checks SPEC §21-23 on the events the SDK decoded: message_start first; block indices
    0, 1, 2... in start order; every delta inside its block's start/stop; exactly one stop per
    block; one message_delta after all blocks closed; message_stop last. Returns the raw
    (type, index) sequence for further assertions."""
    seq = [(e.type, getattr(e, "index", None)) for e in events if e.type in RAW_EVENT_TYPES]
    assert seq, "no events"
    assert seq[0][0] == "message_start", seq
    assert seq[-1][0] == "message_stop", seq
    assert [t for t, _ in seq].count("message_start") == 1, seq
    assert [t for t, _ in seq].count("message_stop") == 1, seq
    assert [t for t, _ in seq].count("message_delta") == 1, seq
    assert seq[-2][0] == "message_delta", seq
    open_blocks: set[int] = set()
    started: list[int] = []
    stopped: list[int] = []
    for t, idx in seq[1:-2]:
        if t == "content_block_start":
            assert idx == len(started), f"block index {idx} started out of order: {seq}"
            started.append(idx)
            open_blocks.add(idx)
        elif t == "content_block_delta":
            assert idx in open_blocks, f"delta for block {idx} outside its start/stop: {seq}"
        elif t == "content_block_stop":
            assert idx in open_blocks, f"stop for block {idx} not open: {seq}"
            open_blocks.remove(idx)
            stopped.append(idx)
        else:
            raise AssertionError(f"unexpected {t} between blocks: {seq}")
    assert not open_blocks, f"blocks never stopped: {open_blocks}: {seq}"
    assert sorted(stopped) == started, seq
    return seq

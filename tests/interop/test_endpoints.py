"""count_tokens, the models list and the /v1/chat/completions passthrough."""

from __future__ import annotations

import json

from helpers import CLIENT_KEY, SONNET, TIME_TOOL, UPSTREAM_KEY, WEATHER_TOOL
from mock_upstream import completion


def test_count_tokens(client, mock, nonce):
    short = client.messages.count_tokens(
        model=SONNET,
        messages=[{"role": "user", "content": f"Hi {nonce}"}],
    )
    long = client.messages.count_tokens(
        model=SONNET,
        messages=[{"role": "user", "content": f"Hi {nonce} " + "tell me about the weather in Paris " * 50}],
    )
    with_tools = client.messages.count_tokens(
        model=SONNET,
        system="You are a weather bot.",
        tools=[WEATHER_TOOL, TIME_TOOL],
        messages=[{"role": "user", "content": f"Hi {nonce}"}],
    )
    assert isinstance(short.input_tokens, int) and short.input_tokens > 0
    assert long.input_tokens > short.input_tokens + 100
    assert with_tools.input_tokens > short.input_tokens
    assert mock.calls == [], "count_tokens is estimated locally (no max_tokens needed, no upstream call)"


def test_models_list(client, mock):
    page = client.models.list()
    models = list(page.data)
    assert models, "the proxy lists at least one model"
    for m in models:
        assert m.type == "model"
        assert isinstance(m.id, str) and m.id


def test_chat_completions_passthrough(raw, mock, nonce):
    request = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"Hi {nonce}"}],
        "temperature": 0.2,
        "logit_bias": {"50256": -100},
        "max_completion_tokens": 20,
    }
    mock.script(completion("Hello from upstream.", prompt_tokens=9, completion_tokens=4))
    r = raw.post(
        "/v1/chat/completions",
        content=json.dumps(request).encode(),
        headers={"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "Hello from upstream."
    assert body["usage"]["prompt_tokens"] == 9
    up = mock.only_call()
    assert up.path == "/v1/chat/completions"
    assert up.json == request, "forwarded as is"
    assert up.header("authorization") == f"Bearer {UPSTREAM_KEY}"

"""count_tokens, the models list and the /v1/chat/completions passthrough."""

from __future__ import annotations

import json

import anthropic

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


def test_beta_count_tokens(client, mock, nonce):
    # The beta variant adds an anthropic-beta header (token-counting-...) and the betas list.
    r = client.beta.messages.count_tokens(
        model=SONNET,
        betas=["context-management-2025-06-27"],
        messages=[{"role": "user", "content": f"Hi {nonce}"}],
    )
    assert r.input_tokens > 0
    assert mock.calls == []


def test_models_retrieve(client, mock):
    first = next(iter(client.models.list().data))
    again = client.models.retrieve(first.id)
    assert again.id == first.id and again.type == "model"


def test_sdk_auth_token_is_accepted(proxy, mock, nonce):
    # `auth_token` makes the SDK send Authorization: Bearer instead of x-api-key.
    mock.script(completion("ok"))
    c = anthropic.Anthropic(base_url=proxy.url, api_key=None, auth_token=CLIENT_KEY, max_retries=0, timeout=10.0)
    try:
        msg = c.messages.create(model=SONNET, max_tokens=16, messages=[{"role": "user", "content": f"Hi {nonce}"}])
    finally:
        c.close()
    assert msg.content[0].text == "ok"
    assert mock.only_call().header("authorization") == f"Bearer {UPSTREAM_KEY}"

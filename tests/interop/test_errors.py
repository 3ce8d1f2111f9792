"""Errors: upstream failures surface as the SDK's exception classes (SPEC §29), and requests the
proxy rejects itself never reach the upstream (SPEC §30)."""

from __future__ import annotations

import json
import socket
import time

import anthropic
import pytest

from helpers import CLIENT_KEY, SONNET, overloaded_class
from mock_upstream import Raw, completion, openai_error

# upstream status, OpenAI error (message, type, code), extra headers,
# expected SDK class, expected status, expected Anthropic error type
UPSTREAM_ERRORS = {
    "400": (
        400,
        ("Invalid 'messages[0].content': string too long.", "invalid_request_error", "string_above_max_length"),
        {},
        anthropic.BadRequestError,
        400,
        "invalid_request_error",
    ),
    "401": (
        401,
        ("Incorrect API key provided: sk-inter***-key.", "invalid_request_error", "invalid_api_key"),
        {},
        anthropic.AuthenticationError,
        401,
        "authentication_error",
    ),
    "403": (
        403,
        ("Country, region, or territory not supported", "request_forbidden", "unsupported_country_region_territory"),
        {},
        anthropic.PermissionDeniedError,
        403,
        "permission_error",
    ),
    "404": (
        404,
        (
            "The model `gpt-4o` does not exist or you do not have access to it.",
            "invalid_request_error",
            "model_not_found",
        ),
        {},
        anthropic.NotFoundError,
        404,
        "not_found_error",
    ),
    "429": (
        429,
        (
            "Rate limit reached for gpt-4o on tokens per min (TPM). Please try again in 7s.",
            "tokens",
            "rate_limit_exceeded",
        ),
        {"retry-after": "7"},
        anthropic.RateLimitError,
        429,
        "rate_limit_error",
    ),
    "500": (
        500,
        ("The server had an error while processing your request. Sorry about that!", "server_error", None),
        {},
        anthropic.InternalServerError,
        500,
        "api_error",
    ),
    "503": (
        503,
        ("The engine is currently overloaded, please try again later", "server_error", None),
        {},
        overloaded_class(),
        529,
        "overloaded_error",
    ),
}


def _check_error(exc: anthropic.APIStatusError, case: str) -> None:
    _, (message, _, _), headers, cls, status, err_type = UPSTREAM_ERRORS[case]
    assert type(exc) is cls or isinstance(exc, cls), f"{type(exc).__name__} is not {cls.__name__}"
    assert exc.status_code == status
    body = exc.body
    assert isinstance(body, dict) and body.get("type") == "error", body
    assert body["error"]["type"] == err_type
    assert exc.type == err_type  # as the SDK itself reads it
    assert message in body["error"]["message"], "the upstream's message is kept"
    assert exc.response.headers.get("content-type", "").startswith("application/json")
    assert exc.request_id, "Anthropic errors carry a request-id header"
    for name, value in headers.items():
        assert exc.response.headers.get(name) == value, f"{name} passed through"


@pytest.mark.parametrize("case", list(UPSTREAM_ERRORS))
def test_upstream_error(client, mock, nonce, case):
    status, (message, err_type, code), headers, *_ = UPSTREAM_ERRORS[case]
    mock.script(openai_error(status, message, err_type, code, headers=headers))
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(
            model=SONNET,
            max_tokens=32,
            messages=[{"role": "user", "content": f"Hi {nonce}"}],
        )
    _check_error(info.value, case)
    assert len(mock.calls) == 1  # max_retries=0 on the client, and the proxy does not retry


@pytest.mark.parametrize("case", ["429", "503"])
def test_upstream_error_before_stream_starts(client, mock, nonce, case):
    # SPEC §25: an error before the stream starts is a real HTTP status, not a 200 stream.
    status, (message, err_type, code), headers, *_ = UPSTREAM_ERRORS[case]
    mock.script(openai_error(status, message, err_type, code, headers=headers))
    with pytest.raises(anthropic.APIStatusError) as info:
        with client.messages.stream(
            model=SONNET,
            max_tokens=32,
            messages=[{"role": "user", "content": f"Hi {nonce}"}],
            timeout=8.0,
        ) as stream:
            stream.get_final_message()
    _check_error(info.value, case)
    assert len(mock.calls) == 1


HEADERS = {"x-api-key": CLIENT_KEY, "anthropic-version": "2023-06-01", "content-type": "application/json"}
GOOD = {"model": SONNET, "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}

MALFORMED = {
    "invalid-json": (b'{"model": "claude-sonnet-4-6", "max_tokens": 16, "messages": [', None),
    "not-an-object": (b'["model", "max_tokens"]', None),
    "missing-max_tokens": ({k: v for k, v in GOOD.items() if k != "max_tokens"}, "max_tokens"),
    "max_tokens-wrong-type": (dict(GOOD, max_tokens="sixteen"), "max_tokens"),
    "missing-messages": ({k: v for k, v in GOOD.items() if k != "messages"}, "messages"),
    "empty-messages": (dict(GOOD, messages=[]), "messages"),
    "missing-model": ({k: v for k, v in GOOD.items() if k != "model"}, "model"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_request_rejected_without_upstream_call(raw, mock, nonce, case):
    payload, field = MALFORMED[case]
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    r = raw.post("/v1/messages", content=body, headers=HEADERS)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()
    assert err["type"] == "error"
    assert err["error"]["type"] == "invalid_request_error"
    assert isinstance(err["error"]["message"], str) and err["error"]["message"]
    if field is not None:
        assert field in err["error"]["message"], f"the message names the field {field!r}: {err}"
    assert r.headers.get("request-id")
    assert mock.calls == [], "a request the proxy rejects must not reach the upstream"


def test_wrong_proxy_key_is_401_without_upstream_call(proxy, mock, nonce):
    bad = anthropic.Anthropic(base_url=proxy.url, api_key="sk-ant-wrong", max_retries=0, timeout=10.0)
    with pytest.raises(anthropic.AuthenticationError) as info:
        bad.messages.create(model=SONNET, max_tokens=16, messages=[{"role": "user", "content": f"Hi {nonce}"}])
    bad.close()
    assert info.value.status_code == 401
    assert info.value.body["error"]["type"] == "authentication_error"
    assert mock.calls == []


def test_overloaded_is_retried_by_the_sdk(proxy, mock, nonce):
    # The point of mapping 503 to 529 overloaded_error with retry-after passed through: the
    # SDK's own retry logic works. It waits the 1 s the upstream asked for, then succeeds.
    mock.script(
        openai_error(503, "The engine is currently overloaded", "server_error", headers={"retry-after": "1"}),
        completion("Recovered."),
    )
    retrying = anthropic.Anthropic(base_url=proxy.url, api_key=CLIENT_KEY, max_retries=1, timeout=10.0)
    start = time.monotonic()
    try:
        msg = retrying.messages.create(
            model=SONNET, max_tokens=16, messages=[{"role": "user", "content": f"Hi {nonce}"}]
        )
    finally:
        retrying.close()
    elapsed = time.monotonic() - start
    assert msg.content[0].text == "Recovered."
    assert len(mock.calls) == 2
    assert mock.calls[0].json == mock.calls[1].json
    assert elapsed >= 0.9, f"the SDK retried after {elapsed:.2f}s, so it did not see retry-after: 1"


def test_upstream_timeout_is_504(start_proxy, mock, nonce):
    slow = start_proxy(UPSTREAM_TIMEOUT_SECS="1")
    mock.script(completion("too late", delay=4.0))
    c = anthropic.Anthropic(base_url=slow.url, api_key=CLIENT_KEY, max_retries=0, timeout=10.0)
    start = time.monotonic()
    try:
        with pytest.raises(anthropic.APIStatusError) as info:
            c.messages.create(model=SONNET, max_tokens=16, messages=[{"role": "user", "content": f"Hi {nonce}"}])
    finally:
        c.close()
    elapsed = time.monotonic() - start
    assert info.value.status_code == 504
    assert isinstance(info.value, anthropic.InternalServerError)
    assert info.value.body["type"] == "error"
    assert info.value.body["error"]["type"] in ("api_error", "timeout_error")
    assert 0.9 <= elapsed < 3.5, f"answered after {elapsed:.2f}s with UPSTREAM_TIMEOUT_SECS=1"


def test_unreachable_upstream_is_502(start_proxy, mock, nonce):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    broken = start_proxy(OPENAI_BASE_URL=f"http://127.0.0.1:{dead_port}/v1")
    c = anthropic.Anthropic(base_url=broken.url, api_key=CLIENT_KEY, max_retries=0, timeout=10.0)
    try:
        with pytest.raises(anthropic.InternalServerError) as info:
            c.messages.create(model=SONNET, max_tokens=16, messages=[{"role": "user", "content": f"Hi {nonce}"}])
    finally:
        c.close()
    assert info.value.status_code == 502
    assert info.value.body["type"] == "error"
    assert info.value.body["error"]["type"] == "api_error"
    assert mock.calls == []


@pytest.mark.parametrize(
    ("answer", "status", "err_type"),
    [
        (Raw(b"<html><body>502 Bad Gateway</body></html>", status=502), 502, "api_error"),
        (Raw(b"<html>Service Temporarily Unavailable</html>", status=503), 529, "overloaded_error"),
        (
            Raw(b"upstream connect error or disconnect/reset before headers", status=429, content_type="text/plain"),
            429,
            "rate_limit_error",
        ),
    ],
    ids=["html-502", "html-503", "text-429"],
)
def test_non_json_upstream_error_still_anthropic_shaped(client, mock, nonce, answer, status, err_type):
    # Load balancers in front of backends answer with HTML or plain text: the status still maps
    # (SPEC §29) and the SDK still gets an Anthropic error body.
    mock.script(answer)
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model=SONNET, max_tokens=16, messages=[{"role": "user", "content": f"Hi {nonce}"}])
    assert info.value.status_code == status
    assert info.value.body["type"] == "error"
    assert info.value.body["error"]["type"] == err_type
    assert info.value.request_id


def test_garbage_success_body_is_an_error(client, mock, nonce):
    # A 200 whose body is not a chat.completion must not reach the SDK as a "message".
    mock.script(Raw(b"<html>captive portal</html>", status=200))
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(model=SONNET, max_tokens=16, messages=[{"role": "user", "content": f"Hi {nonce}"}])
    assert info.value.status_code >= 500
    assert info.value.body["type"] == "error"
    assert info.value.body["error"]["type"] == "api_error"


def test_request_over_body_limit_is_413(start_proxy, mock, nonce):
    small = start_proxy(BODY_LIMIT_BYTES="64KiB")
    c = anthropic.Anthropic(base_url=small.url, api_key=CLIENT_KEY, max_retries=0, timeout=10.0)
    try:
        with pytest.raises(anthropic.APIStatusError) as info:
            c.messages.create(
                model=SONNET,
                max_tokens=16,
                messages=[{"role": "user", "content": f"{nonce} " + "x" * 100_000}],
            )
    finally:
        c.close()
    assert info.value.status_code == 413
    assert isinstance(info.value, getattr(anthropic, "ContentTooLargeError", anthropic.APIStatusError))
    assert info.value.body["error"]["type"] == "request_too_large"
    assert mock.calls == []


def test_unknown_route_is_404(client, mock):
    # The legacy /v1/complete API (gone from this SDK, so sent with its generic post): the
    # proxy does not serve it, and says so in Anthropic's shape (SPEC §30).
    with pytest.raises(anthropic.NotFoundError) as info:
        client.post(
            "/v1/complete",
            cast_to=object,
            body={"model": "claude-2.1", "max_tokens_to_sample": 16, "prompt": "\n\nHuman: Hi\n\nAssistant:"},
        )
    assert info.value.body["type"] == "error"
    assert info.value.body["error"]["type"] == "not_found_error"
    assert mock.calls == []

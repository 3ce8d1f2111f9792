"""The proxy with a configuration file (two OpenAI-compatible backends, routes by model,
fallback), driven by the Anthropic SDK; and a bad file stopping it with exit status 2."""

from __future__ import annotations

import subprocess

import anthropic

from conftest import _proxy_binary
from helpers import CLIENT_KEY
from mock_upstream import MockUpstream, completion, openai_error


def _file(tmp_path, a: str, b: str) -> str:
    path = tmp_path / "proxy.toml"
    path.write_text(
        f"""
backend_cool_down_secs = 60
[[backends]]
name = "a"
kind = "openai-chat"
base_url = "{a}"
[[backends]]
name = "b"
kind = "openai-chat"
base_url = "{b}"
[[routes]]
match = "haiku"
targets = [ {{ backend = "a", model = "small-a" }}, {{ backend = "b", model = "small-b" }} ]
[[routes]]
match = "*"
targets = [ {{ backend = "b", model = "big-b" }} ]
"""
    )
    return str(path)


def test_routed_and_fallback_requests(tmp_path, mock, start_proxy, nonce):
    second = MockUpstream().start()
    try:
        proxy = start_proxy(CONFIG_FILE=_file(tmp_path, mock.base_url, second.base_url))
        client = anthropic.Anthropic(base_url=proxy.url, api_key=CLIENT_KEY, max_retries=0, timeout=15.0)
        mock.script(completion("from a"))
        raw = client.messages.with_raw_response.create(
            model="claude-haiku-4-5", max_tokens=32,
            messages=[{"role": "user", "content": f"routed {nonce}"}],
        )
        assert raw.headers["x-llm-bridge-backend"] == "a"
        message = raw.parse()
        assert message.model == "claude-haiku-4-5"
        assert message.content[0].text == "from a"
        assert mock.calls[-1].json["model"] == "small-a"

        # Backend a is overloaded: the answer comes from b, and the SDK sees a normal message.
        mock.script(lambda req: openai_error(503, "overloaded", "server_error"))
        second.script(completion("from b"))
        raw = client.messages.with_raw_response.create(
            model="claude-haiku-4-5", max_tokens=32,
            messages=[{"role": "user", "content": f"fallback {nonce}"}],
        )
        assert raw.headers["x-llm-bridge-backend"] == "b"
        assert raw.parse().content[0].text == "from b"
        assert second.calls[-1].json["model"] == "small-b"

        # Any other name: the "*" route, the big model on b.
        second.script(completion("big"))
        message = client.messages.create(
            model="claude-sonnet-4-5", max_tokens=32,
            messages=[{"role": "user", "content": f"big {nonce}"}],
        )
        assert message.model == "claude-sonnet-4-5"
        assert second.calls[-1].json["model"] == "big-b"
        client.close()
    finally:
        second.stop()


def test_a_bad_file_exits_with_status_2_naming_the_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[[backends]]\nname = "a"\nkind = "openai-chat"\nbase_url = "http://127.0.0.1:1/v1"\ncolour = "red"\n')
    done = subprocess.run(
        [str(_proxy_binary()), "--config", str(path)],
        capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2, done.stderr
    assert f"{path}:5" in done.stderr and "colour" in done.stderr, done.stderr

"""Fixtures: one scripted OpenAI upstream and one example proxy in front of it for the session.

The proxy runs with its default cache switched on (as users run it). Every test puts a fresh
nonce into its prompt, so no two tests send the same request and cache hits cannot leak from
one test into another; only test_cache.py repeats a request on purpose.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import anthropic
import pytest

from helpers import CLIENT_KEY, REASONER, REASONER_UPSTREAM, UPSTREAM_KEY
from mock_upstream import MockUpstream

try:  # the SDK's own HTTP client; newer SDKs ship it as `httpx2`
    import httpx  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the installed SDK
    import httpx2 as httpx  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

STARTUP_TIMEOUT = 30.0

_proxy_log: Path | None = None


def _proxy_binary() -> Path:
    explicit = os.environ.get("PROXY_BIN")
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    return target / "debug" / "examples" / "proxy"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Child side of Popen: ask Linux to SIGKILL the proxy if pytest itself dies."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Proxy:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def _start_proxy(binary: Path, upstream: MockUpstream, log: Path, **overrides: str) -> Proxy:
    base_env = {k: os.environ[k] for k in ("PATH", "HOME", "LANG", "TMPDIR") if k in os.environ}
    last_error = "not started"
    for _attempt in range(3):  # the port we picked may be taken between picking and binding
        port = _free_port()
        env = dict(
            base_env,
            LISTEN_ADDR=f"127.0.0.1:{port}",
            OPENAI_BASE_URL=upstream.base_url,
            OPENAI_API_KEY=UPSTREAM_KEY,
            PROXY_API_KEYS=CLIENT_KEY,
            UPSTREAM_TIMEOUT_SECS="10",
            CACHE_ENABLED="true",
            CACHE_TTL_SECS="300",
            # one extra rule, tried before the defaults: a reasoning model upstream
            MODEL_MAP=f"{REASONER}={REASONER_UPSTREAM}",
            LOG_LEVEL="info",
        )
        env.update(overrides)
        logf = open(log, "ab")
        proc = subprocess.Popen(
            [str(binary)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        logf.close()
        proxy = Proxy(proc, port, log)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                last_error = f"proxy exited with status {proc.returncode}"
                break
            try:
                r = httpx.get(f"{proxy.url}/health", timeout=1.0)
                if r.status_code == 200:
                    return proxy
                last_error = f"/health answered {r.status_code}"
            except httpx.HTTPError as e:
                last_error = f"/health: {type(e).__name__}"
            time.sleep(0.05)
        else:
            last_error = f"/health not ready within {STARTUP_TIMEOUT}s ({last_error})"
        proxy.stop()
    tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
    raise RuntimeError(f"could not start the proxy: {last_error}\n--- proxy log ---\n{tail}")


@pytest.fixture(scope="session")
def upstream():
    mock = MockUpstream().start()
    yield mock
    mock.stop()


@pytest.fixture(scope="session")
def proxy(upstream):
    global _proxy_log
    binary = _proxy_binary()
    if not binary.is_file():
        pytest.exit(f"proxy binary not found at {binary} (build it with cargo build --all-features --example proxy)", 2)
    # Kept after the run for a post-mortem: inside the (gitignored) venv when there is one.
    log_dir = HERE / ".venv" if (HERE / ".venv").is_dir() else Path(tempfile.mkdtemp(prefix="interop-proxy-"))
    _proxy_log = log_dir / "proxy.log"
    _proxy_log.write_bytes(b"")
    p = _start_proxy(binary, upstream, _proxy_log)
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def start_proxy(upstream, proxy):
    """Starts another proxy with some settings changed (e.g. a short UPSTREAM_TIMEOUT_SECS);
    every proxy started here is stopped when the test ends."""
    started: list[Proxy] = []

    def start(**overrides: str) -> Proxy:
        p = _start_proxy(_proxy_binary(), upstream, proxy.log, **overrides)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


@pytest.fixture
def mock(upstream, proxy):
    """The upstream, emptied for this test (script and records)."""
    upstream.reset()
    yield upstream
    upstream.reset()


@pytest.fixture
def client(proxy) -> anthropic.Anthropic:
    c = anthropic.Anthropic(base_url=proxy.url, api_key=CLIENT_KEY, max_retries=0, timeout=15.0)
    yield c
    c.close()


@pytest.fixture
def raw(proxy):
    """A plain HTTP client for requests the SDK would refuse to build."""
    with httpx.Client(base_url=proxy.url, timeout=10.0) as c:
        yield c


@pytest.fixture
def nonce() -> str:
    return uuid.uuid4().hex[:12]


def pytest_configure(config):
    # Turn SIGTERM (from run.sh's trap or `timeout`) into KeyboardInterrupt so that pytest
    # runs the fixture teardowns that stop the proxy and the mock upstream.
    def _interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _interrupt)


def pytest_report_header(config):
    import importlib.metadata as md

    versions = []
    for dist in ("anthropic", "pytest", "httpx", "httpx2", "pydantic"):
        try:
            versions.append(f"{dist} {md.version(dist)}")
        except md.PackageNotFoundError:
            pass
    return [
        f"interop: python {sys.version.split()[0]}, " + ", ".join(versions),
        f"interop: proxy binary {_proxy_binary()}",
    ]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if exitstatus != 0 and _proxy_log is not None and _proxy_log.exists():
        lines = _proxy_log.read_text(errors="replace").splitlines()[-60:]
        terminalreporter.section("proxy log (last 60 lines)")
        for line in lines:
            terminalreporter.line(line)

#!/usr/bin/env bash
# Interop suite: the official Anthropic Python SDK against the example proxy, which runs in
# front of a scripted OpenAI upstream (tests/interop/mock_upstream.py). Called by .ci/run.
#
# Builds the proxy only if its binary is missing (`cargo test --all-features` already builds
# it in the same dev profile), creates tests/interop/.venv, installs the newest `anthropic`
# and `pytest`, prints the versions used, and runs pytest. Exits non-zero when any case fails.
# Environment: CARGO_TARGET_DIR (where the binary is), PROXY_BIN (use this binary instead),
# PYTHON (interpreter for the venv, default python3), INTEROP_TIMEOUT_SECS (whole-run bound).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"
export PROXY_BIN="${PROXY_BIN:-$TARGET/debug/examples/proxy}"
VENV="$HERE/.venv"
PY="$VENV/bin/python"

if [ ! -x "$PROXY_BIN" ]; then
    echo "interop: building the example proxy ($PROXY_BIN is missing)"
    (cd "$REPO" && cargo build --all-features --example proxy)
fi

if ! "$PY" -c 'import sys' >/dev/null 2>&1; then
    rm -rf "$VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
fi
"$PY" -m pip install --quiet --disable-pip-version-check --upgrade anthropic pytest
"$PY" - <<'PYEOF'
import importlib.metadata as md, sys
names = ["anthropic", "pytest", "httpx", "httpx2", "pydantic"]
found = []
for n in names:
    try:
        found.append(f"{n}=={md.version(n)}")
    except md.PackageNotFoundError:
        pass
print(f"interop: python {sys.version.split()[0]}; " + " ".join(found))
PYEOF

PYTEST_PID=""
cleanup() {
    if [ -n "$PYTEST_PID" ] && kill -0 "$PYTEST_PID" 2>/dev/null; then
        # pytest's fixtures stop the proxy and the mock upstream on SIGTERM; the proxy also
        # dies with pytest (PR_SET_PDEATHSIG) if pytest itself is killed.
        kill -TERM "$PYTEST_PID" 2>/dev/null || true
        wait "$PYTEST_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cd "$HERE"
# Bound the whole run: every request in the suite has its own timeout too.
timeout -k 10 "${INTEROP_TIMEOUT_SECS:-300}" "$PY" -m pytest "$@" &
PYTEST_PID=$!
rc=0
wait "$PYTEST_PID" || rc=$?
PYTEST_PID=""
if [ "$rc" -ne 0 ]; then
    echo "interop: FAILED (pytest exit status $rc)"
fi
exit "$rc"

#!/usr/bin/env bash
# Load benchmark: the example proxy against nginx (the floor) and an nginx proxy_pass hop,
# side by side in one run, on 127.0.0.1 only, checked against the goals of issue 16. See the
# README section "Performance".
#
#   bash benches/load/run.sh            # ~7 minutes; installs nginx and wrk when missing
#
# Settings (environment):
#   LOAD_RUNS=3          rounds of every measurement; the table shows their medians
#   LOAD_DURATION=6s     length of each measured wrk run (each is preceded by a 1 s warm-up);
#                        one round is 14 measurements
#   LOAD_AUTH=1          proxy keys on (PROXY_API_KEYS set, every client sends x-api-key); 0 = off
#   LOAD_PIN=1           pin wrk to CPU 0 and the servers (nginx, proxy) to CPU 1; 0 = no pinning
#   LOAD_STREAMS=1000    concurrent streams for the RSS measurement (0 = skip)
#   LOAD_LOG_LEVEL=info  the proxy's log level (info = one line per request, as shipped)
#   PROXY_BIN=path       use this proxy binary instead of building it
set -euo pipefail

RUNS=${LOAD_RUNS:-3}
DURATION=${LOAD_DURATION:-6s}
AUTH=${LOAD_AUTH:-1}
WARMUP=1s
PIN=${LOAD_PIN:-1}
STREAMS=${LOAD_STREAMS:-1000}
LOG_LEVEL=${LOAD_LOG_LEVEL:-info}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/benches/load
PY=(python3 "$HERE/load.py")

say() { printf '== %s\n' "$*" >&2; }

[[ $RUNS =~ ^[1-9][0-9]*$ ]] || {
    echo "run.sh: LOAD_RUNS must be a positive integer, not $RUNS" >&2
    exit 2
}
# The table's arithmetic, before spending minutes measuring.
"${PY[@]}" selftest >/dev/null

# --- tools ----------------------------------------------------------------------------------
export PATH=$PATH:/usr/sbin:/sbin
missing=()
for tool in nginx:nginx wrk:wrk python3:python3 curl:curl taskset:util-linux; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if ((${#missing[@]})); then
    if [[ $(id -u) != 0 ]]; then
        echo "run.sh: missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root" >&2
        exit 1
    fi
    say "installing ${missing[*]} (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [[ -z ${PROXY_BIN:-} ]]; then
    say "building the example proxy (release)"
    (cd "$ROOT" && cargo build --release --example proxy --quiet)
    target_dir=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
    PROXY_BIN=$target_dir/release/examples/proxy
fi

# --- pinning ----------------------------------------------------------------------------------
CLIENT=()
SERVER=()
if [[ $PIN == 1 ]] && (($(nproc) >= 2)); then
    CLIENT=(taskset -c 0)
    SERVER=(taskset -c 1)
    pinning="wrk on CPU 0; both nginx processes and the proxy on CPU 1 (so the proxy's runtime has 1 worker thread, as nginx has 1 worker)"
else
    pinning="none"
fi

# --- processes, cleaned up on any exit -------------------------------------------------------
TMP=$(mktemp -d /tmp/llm-bridge-load.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r P_JSON P_SSE P_HOP_JSON P_HOP_SSE P_OURS_JSON P_OURS_SSE P_OURS_CACHE P_DRIP P_OURS_DRIP \
    <<<"$("${PY[@]}" ports 9)"
say "generating bodies and the nginx config in $TMP"
"${PY[@]}" gen "$TMP" "$P_JSON" "$P_SSE" "$P_HOP_JSON" "$P_HOP_SSE" >&2

wait_http() { # url: wait up to 10 s for any HTTP answer
    for _ in $(seq 100); do
        curl -s -o /dev/null "$1" && return 0
        sleep 0.1
    done
    echo "run.sh: nothing answers at $1" >&2
    exit 1
}

start_nginx() { # name: sets NGINX_WORKER (the one worker's pid, whose CPU time is measured)
    "${SERVER[@]}" nginx -c "$TMP/$1.conf" -p "$TMP" -e "$TMP/$1-error.log" &
    local master=$!
    PIDS+=("$master")
    for _ in $(seq 100); do
        NGINX_WORKER=$(pgrep -P "$master" | head -1) && [[ -n $NGINX_WORKER ]] && return 0
        sleep 0.1
    done
    echo "run.sh: nginx ($1) did not start: $(cat "$TMP/$1-error.log")" >&2
    exit 1
}
start_nginx upstream
UPSTREAM_WORKER=$NGINX_WORKER
start_nginx hop
HOP_WORKER=$NGINX_WORKER
wait_http "http://127.0.0.1:$P_JSON/"
wait_http "http://127.0.0.1:$P_HOP_SSE/"

# The key clients present to the proxy (sent to nginx too, so every row carries the same
# headers; nginx ignores it).
PROXY_KEY=load-bench-proxy-key
PROXY_ENV=()
if [[ $AUTH == 1 ]]; then
    PROXY_ENV=(PROXY_API_KEYS=$PROXY_KEY)
fi

start_proxy() { # port upstream_port cache_enabled: sets PROXY_PID
    env LISTEN_ADDR=127.0.0.1:$1 OPENAI_BASE_URL=http://127.0.0.1:$2/v1 OPENAI_API_KEY=sk-load-bench \
        CACHE_ENABLED=$3 LOG_LEVEL=$LOG_LEVEL "${PROXY_ENV[@]}" \
        "${SERVER[@]}" "$PROXY_BIN" >"$TMP/proxy-$1.log" 2>&1 &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

RESULTS=$TMP/results
: >"$RESULTS"
info() { echo "INFO $*" >>"$RESULTS"; }
info load "$(uptime | sed 's/.*load average/load average/') (start)"
info pinning "$pinning"
info proxy_keys "$(if [[ $AUTH == 1 ]]; then echo "on (PROXY_API_KEYS set, clients send x-api-key)"; else echo off; fi)"

start_proxy "$P_OURS_JSON" "$P_JSON" false
OURS_JSON=$PROXY_PID
start_proxy "$P_OURS_SSE" "$P_SSE" false
OURS_SSE=$PROXY_PID
start_proxy "$P_OURS_CACHE" "$P_JSON" true
OURS_CACHE=$PROXY_PID
for port in "$P_OURS_JSON" "$P_OURS_SSE" "$P_OURS_CACHE"; do
    wait_http "http://127.0.0.1:$port/health"
done
sleep 0.5
info rss_idle_kb "$(rss_kb "$OURS_JSON")"

# --- sanity: every target answers what the row claims -----------------------------------------
post() { # url body_file [curl args]
    local url=$1 body=$2
    shift 2
    curl -sS --max-time 10 -H 'content-type: application/json' \
        -H 'anthropic-version: 2023-06-01' -H "x-api-key: $PROXY_KEY" --data-binary "@$body" "$@" "$url"
}
expect() { # what text: fail unless text contains what
    [[ $2 == *"$1"* ]] || {
        echo "run.sh: expected $1 in: ${2:0:300}" >&2
        exit 1
    }
}
expect '"type":"message"' "$(post "http://127.0.0.1:$P_OURS_JSON/v1/messages" "$TMP/small-anthropic.json")"
expect '"tool_use"' "$(post "http://127.0.0.1:$P_OURS_JSON/v1/messages" "$TMP/large-anthropic.json")"
expect 'event: message_stop' "$(post "http://127.0.0.1:$P_OURS_SSE/v1/messages" "$TMP/stream-anthropic.json")"
expect 'chat.completion' "$(post "http://127.0.0.1:$P_HOP_JSON/v1/chat/completions" "$TMP/small-openai.json")"
expect '[DONE]' "$(post "http://127.0.0.1:$P_HOP_SSE/v1/chat/completions" "$TMP/stream-openai.json")"
post "http://127.0.0.1:$P_OURS_CACHE/v1/messages" "$TMP/small-anthropic.json" -o /dev/null
if post "http://127.0.0.1:$P_OURS_CACHE/v1/messages" "$TMP/small-anthropic.json" -o /dev/null -D - |
    grep -qi '^x-cache: *HIT'; then
    info cache_check "x-cache: HIT on the repeated request"
else
    info cache_check "NO x-cache: HIT (this build has no cache layer): the cache row measures an uncached proxy"
fi
if [[ $AUTH == 1 ]]; then
    code=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
        --data-binary "@$TMP/small-anthropic.json" "http://127.0.0.1:$P_OURS_JSON/v1/messages")
    [[ $code == 401 ]] || {
        echo "run.sh: a request without the proxy key got $code, not 401: proxy keys are not on" >&2
        exit 1
    }
fi

# --- wrk ---------------------------------------------------------------------------------------
cat >"$TMP/post.lua" <<'LUA'
local f = assert(io.open(os.getenv("WRK_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.headers["x-api-key"] = os.getenv("WRK_KEY")
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT rps=%.1f p50_us=%d p99_us=%d requests=%d non2xx=%d sockerr=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50),
    latency:percentile(99), summary.requests, e.status,
    e.connect + e.read + e.write + e.timeout))
end
LUA

CLK_TCK=$(getconf CLK_TCK)
ticks() { # pid: CPU time (user + system) so far, in clock ticks
    if [[ $1 == - ]]; then echo 0; else awk '{print $14 + $15}' "/proc/$1/stat"; fi
}

measure() { # key target concurrency url body front_pid upstream_pid (RUN: the round)
    local key=$1 target=$2 conns=$3 url=$4 body=$5 front=$6 upstream=$7 out result
    WRK_BODY=$body WRK_KEY=$PROXY_KEY "${CLIENT[@]}" wrk -t1 -c"$conns" -d"$WARMUP" -s "$TMP/post.lua" "$url" >/dev/null
    local f0 u0 f1 u1
    f0=$(ticks "$front") u0=$(ticks "$upstream")
    out=$(WRK_BODY=$body WRK_KEY=$PROXY_KEY "${CLIENT[@]}" wrk -t1 -c"$conns" -d"$DURATION" -s "$TMP/post.lua" "$url")
    f1=$(ticks "$front") u1=$(ticks "$upstream")
    result=$(grep '^RESULT ' <<<"$out" | sed 's/^RESULT //')
    # Server CPU time per request: noise from other processes on the machine shifts
    # throughput and latency much more than this.
    result+=$(awk -v f=$((f1 - f0)) -v u=$((u1 - u0)) -v hz="$CLK_TCK" -v r="$result" 'BEGIN {
        match(r, /requests=[0-9]+/); n = substr(r, RSTART + 9, RLENGTH - 9)
        if (n > 0) printf " cpu_front_us=%.1f cpu_upstream_us=%.1f", f * 1e6 / hz / n, u * 1e6 / hz / n }')
    echo "$key $target run=$RUN $result" >>"$RESULTS"
    say "run $RUN/$RUNS $key $target: $result"
}

row() { # key concurrency targets direct_port hop_port ours_port ours_pid openai_body anthropic_body
    local key=$1 conns=$2 targets=$3
    if [[ $targets == *direct* ]]; then
        measure "$key" direct "$conns" "http://127.0.0.1:$4/v1/chat/completions" "$TMP/$8" - "$UPSTREAM_WORKER"
    fi
    if [[ $targets == *hop* ]]; then
        measure "$key" hop "$conns" "http://127.0.0.1:$5/v1/chat/completions" "$TMP/$8" "$HOP_WORKER" "$UPSTREAM_WORKER"
    fi
    measure "$key" ours "$conns" "http://127.0.0.1:$6/v1/messages" "$TMP/$9" "$7" "$UPSTREAM_WORKER"
}

say "measuring: $RUNS round(s), each measurement $DURATION after a $WARMUP warm-up; $pinning"
J=("$P_JSON" "$P_HOP_JSON" "$P_OURS_JSON" "$OURS_JSON")
S=("$P_SSE" "$P_HOP_SSE" "$P_OURS_SSE" "$OURS_SSE")
C=("$P_JSON" "$P_HOP_JSON" "$P_OURS_CACHE" "$OURS_CACHE")
# Rounds rather than one case N times in a row: a burst of other work on the machine then
# moves one round's figures, which the medians leave out. (Keep in step with MEASUREMENTS in
# load.py.)
for ((RUN = 1; RUN <= RUNS; RUN++)); do
    row small_c1 1 direct,hop "${J[@]}" small-openai.json small-anthropic.json
    row small_c64 64 direct,hop "${J[@]}" small-openai.json small-anthropic.json
    row large_c16 16 direct,hop "${J[@]}" large-openai.json large-anthropic.json
    if ((RUN == 1)); then
        info rss_after_load_kb "$(rss_kb "$OURS_JSON")"
    fi
    row stream_c16 16 direct,hop "${S[@]}" stream-openai.json stream-anthropic.json
    row cache_c64 64 direct "${C[@]}" small-openai.json small-anthropic.json
done

# --- RSS at many concurrent streams -------------------------------------------------------------
if ((STREAMS > 0)); then
    say "opening $STREAMS concurrent streams against a dripping upstream"
    "${PY[@]}" drip "$P_DRIP" &
    PIDS+=($!)
    start_proxy "$P_OURS_DRIP" "$P_DRIP" false
    OURS_DRIP=$PROXY_PID
    wait_http "http://127.0.0.1:$P_OURS_DRIP/health"
    sleep 0.3
    before=$(rss_kb "$OURS_DRIP")
    out=$(timeout 120 "${PY[@]}" streams "http://127.0.0.1:$P_OURS_DRIP" "$STREAMS" "$OURS_DRIP" "$PROXY_KEY")
    say "streams: $out"
    info rss_streams "$(sed 's/^RESULT //' <<<"$out") (idle before: ${before} kB)"
fi
info load "$(uptime | sed 's/.*load average/load average/') (end)"

echo
"${PY[@]}" table "$RESULTS"
if [[ -n ${LOAD_KEEP_RESULTS:-} ]]; then
    cp "$RESULTS" "$LOAD_KEEP_RESULTS"
fi

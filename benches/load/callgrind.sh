#!/usr/bin/env bash
# Instructions per request of the example proxy, counted by callgrind (repeatable even while
# other work shares the machine), for the cases issue 16 tracks. See the README section
# "Performance".
#
#   bash benches/load/callgrind.sh               # small, cache and large; ~3 minutes after the build
#   bash benches/load/callgrind.sh small 1000    # one case, 1,000 requests
#
# Each case: the proxy (release build with line tables, in target/callgrind) runs under
# callgrind in front of nginx serving the load bench's fixed answer, proxy keys on, log level
# info; a 50-request warm-up, the counters zeroed, then N requests one after another on one
# keep-alive connection. Prints instructions per request and the top inclusive functions;
# the callgrind files stay in the directory it names (LOAD_TOP=N: how many functions).
#
#   small   the small Anthropic request, translated to chat completions and back
#   cache   the same request answered from the cache (every measured request is a hit)
#   large   the Claude-Code-sized request (~65 KB), translated
#
# Settings: PROXY_BIN=path (skip the build), LOAD_TOP=15.
set -euo pipefail

CASES=${1:-small cache large}
N_ARG=${2:-}
TOP=${LOAD_TOP:-15}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/benches/load
PY=(python3 "$HERE/load.py")
export PATH=$PATH:/usr/sbin:/sbin
for tool in nginx valgrind callgrind_annotate callgrind_control curl python3; do
    command -v "$tool" >/dev/null || {
        echo "callgrind.sh: $tool is missing (apt-get install nginx valgrind curl python3)" >&2
        exit 1
    }
done

if [[ -z ${PROXY_BIN:-} ]]; then
    echo "== building the example proxy (release, line tables) into target/callgrind" >&2
    (cd "$ROOT" && CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
        cargo build --release --example proxy --target-dir target/callgrind --quiet)
    PROXY_BIN=$ROOT/target/callgrind/release/examples/proxy
fi

OUT=$(mktemp -d /tmp/llm-bridge-callgrind.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

read -r P_JSON P_SSE P_HOP_JSON P_HOP_SSE P_PROXY <<<"$("${PY[@]}" ports 5)"
"${PY[@]}" gen "$OUT" "$P_JSON" "$P_SSE" "$P_HOP_JSON" "$P_HOP_SSE" >/dev/null
nginx -c "$OUT/upstream.conf" -p "$OUT" -e "$OUT/upstream-error.log" &
PIDS+=($!)

wait_http() { # url
    for _ in $(seq 600); do
        curl -s -o /dev/null "$1" && return 0
        sleep 0.1
    done
    echo "callgrind.sh: nothing answers at $1" >&2
    exit 1
}
wait_http "http://127.0.0.1:$P_JSON/"

KEY=load-bench-proxy-key
for case in $CASES; do
    case $case in
        small) body=small-anthropic.json cache=false n=${N_ARG:-500} ;;
        cache) body=small-anthropic.json cache=true n=${N_ARG:-500} ;;
        large) body=large-anthropic.json cache=false n=${N_ARG:-100} ;;
        *)
            echo "callgrind.sh: unknown case $case (small, cache, large)" >&2
            exit 2
            ;;
    esac
    env LISTEN_ADDR=127.0.0.1:$P_PROXY OPENAI_BASE_URL=http://127.0.0.1:$P_JSON/v1 \
        OPENAI_API_KEY=sk-load-bench CACHE_ENABLED=$cache LOG_LEVEL=info PROXY_API_KEYS=$KEY \
        valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.$case.%p" \
        "$PROXY_BIN" >"$OUT/proxy-$case.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_http "http://127.0.0.1:$P_PROXY/health"
    "${PY[@]}" requests "http://127.0.0.1:$P_PROXY/v1/messages" "$OUT/$body" 50 "$KEY"
    callgrind_control -z "$pid" >/dev/null
    "${PY[@]}" requests "http://127.0.0.1:$P_PROXY/v1/messages" "$OUT/$body" "$n" "$KEY"
    callgrind_control -d "$pid" >/dev/null
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    file=$OUT/callgrind.$case.$pid.1
    total=$(callgrind_annotate "$file" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    echo "$case: $((total / n)) instructions per request ($n requests; $file)"
    # The top inclusive functions, per request: without the runtime's frames and the
    # futures that only wrap others (other crates' poll and closure frames), each function
    # once (inlined code shows up under several files).
    callgrind_annotate --inclusive=yes "$file" 2>/dev/null |
        grep -E '^ *[0-9,]+ \(' |
        grep -vE 'PROGRAM TOTALS|clone\.S|pthread_create|thread_start|lifecycle\.rs|backtrace\.rs|tokio-[0-9.]+/src/runtime/' |
        sed -E 's|/root/\.cargo/registry/src/[^/]+/||; s|/rustc/[0-9a-f]+/library/||; s| \[[^]]*\]$||' |
        awk -v n="$n" -v root="$ROOT/" '{
            c = $1; gsub(",", "", c); $1 = ""; $2 = ""; sub(/^ +/, "")
            file = $0; sub(/:.*/, "", file); fn = $0; sub(/^[^:]*:/, "", fn)
            ours = index(file, root) == 1 || file ~ /^(src|examples)\//
            if (!ours && fn ~ /(Future>::poll|\{\{closure\}\}|poll_catch|poll_write|poll_loop|poll_inner)$/) next
            if (fn in seen) next
            seen[fn] = 1
            sub(root, "", fn)
            printf "  %9d  %s\n", c / n, fn
        }' |
        head -n "$TOP" || true # head leaves early: the pipe's SIGPIPE is not a failure
done

#!/usr/bin/env python3
"""Helpers for benches/load/run.sh (standard library only).

    load.py ports N                       print N free 127.0.0.1 TCP ports
    load.py gen DIR PORTS...              write request bodies, upstream answers, nginx.conf
    load.py drip PORT                     a slow-dripping OpenAI SSE upstream (one chunk/s)
    load.py streams URL N PID             open N streaming /v1/messages through the proxy,
                                          wait until every one has its first event, print
                                          the proxy's VmRSS, close them all
    load.py table RESULTS                 print the comparison table from run.sh's results

Everything listens on and connects to 127.0.0.1 only; every wait is bounded.
"""

import asyncio
import json
import os
import socket
import sys
import time

# ---------------------------------------------------------------------------------------------
# Fixtures (shaped like benches/fixtures/mod.rs)
# ---------------------------------------------------------------------------------------------

SMALL_TEXT = "Hello, how are you? Please answer in one short sentence."


def small_anthropic(stream):
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": SMALL_TEXT}],
    }
    if stream:
        body["stream"] = True
    return body


def small_openai(stream):
    body = {
        "model": "gpt-4o-mini",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": SMALL_TEXT}],
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


TURNS = 34  # tuned so the Anthropic request is about 70 KB


def _tool_schema():
    return {
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "A path relative to the workspace root."},
            "pattern": {"type": "string", "description": "A regular expression."},
            "limit": {"type": "integer", "minimum": 1, "maximum": 1000},
            "flags": {"type": "array", "items": {"type": "string", "enum": ["i", "m", "s"]}},
            "options": {
                "type": "object",
                "properties": {"recursive": {"type": "boolean"}, "depth": {"type": "integer"}},
            },
        },
        "required": ["path"],
        "additionalProperties": False,
    }


def _tool_description(i):
    return (f"Tool number {i}. Runs an operation on the workspace and returns its output as "
            "text, with paths relative to the root.")


def _system_text():
    return "".join(
        f"Rule {i}: prefer small, reviewed changes; explain what you verified and why. "
        for i in range(120))


def _tool_input(turn):
    return {"path": f"src/module_{turn}/file.rs", "pattern": "fn parse_.*", "limit": 50,
            "options": {"recursive": True, "depth": 3}}


def _tool_output(turn):
    return "".join(
        f"src/module_{turn}/file.rs:{line}: fn parse_item_{line}(input: &str) -> "
        "Result<Item, Error> {\n" for line in range(12))


def large_anthropic():
    """A Claude-Code-sized request: long system prompt, 16 tools, many tool turns."""
    messages = [{"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>Project context follows.</system-reminder>"},
        {"type": "text", "text": "Please find and fix the failing test in the parser module."},
    ]}]
    for turn in range(TURNS):
        messages.append({"role": "assistant", "content": [
            {"type": "text", "text": f"Step {turn}: I will look at the next file to narrow it down."},
            {"type": "tool_use", "id": f"toolu_{turn:04}", "name": f"tool_{turn % 16}",
             "input": _tool_input(turn)},
        ]})
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"toolu_{turn:04}",
             "content": _tool_output(turn)},
        ]})
    return {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 32000,
        "system": [{"type": "text", "text": _system_text(),
                    "cache_control": {"type": "ephemeral"}}],
        "messages": messages,
        "tools": [{"name": f"tool_{i}", "description": _tool_description(i),
                   "input_schema": _tool_schema(), "cache_control": {"type": "ephemeral"}}
                  for i in range(16)],
        "metadata": {"user_id": "user_0123456789abcdef_account__session_0000"},
        "temperature": 1,
        "stream": False,
    }


def large_openai():
    """The same conversation in OpenAI's format (what the direct and hop rows send)."""
    messages = [
        {"role": "system", "content": _system_text()},
        {"role": "user", "content": "<system-reminder>Project context follows.</system-reminder>"
                                    "\nPlease find and fix the failing test in the parser module."},
    ]
    for turn in range(TURNS):
        messages.append({
            "role": "assistant",
            "content": f"Step {turn}: I will look at the next file to narrow it down.",
            "tool_calls": [{"id": f"toolu_{turn:04}", "type": "function", "function": {
                "name": f"tool_{turn % 16}",
                "arguments": json.dumps(_tool_input(turn), separators=(",", ":"))}}],
        })
        messages.append({"role": "tool", "tool_call_id": f"toolu_{turn:04}",
                         "content": _tool_output(turn)})
    return {
        "model": "gpt-4o",
        "max_tokens": 16384,
        "messages": messages,
        "tools": [{"type": "function", "function": {
            "name": f"tool_{i}", "description": _tool_description(i),
            "parameters": _tool_schema()}} for i in range(16)],
        "user": "user_0123456789abcdef_account__session_0000",
        "temperature": 1,
    }


def completion():
    """The chat.completion nginx answers every JSON request with: text and two tool calls."""
    text = "".join(f"Finding {i}: the parser rejects trailing commas in nested lists. "
                   for i in range(20))
    return {
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000,
        "model": "gpt-4o-2024-08-06", "system_fingerprint": "fp_eb9dce56a8",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None, "message": {
            "role": "assistant", "content": text, "refusal": None,
            "tool_calls": [
                {"id": "call_a", "type": "function", "function": {
                    "name": "tool_3",
                    "arguments": "{\"path\":\"src/parser.rs\",\"pattern\":\"trailing\",\"limit\":20}"}},
                {"id": "call_b", "type": "function", "function": {
                    "name": "tool_7",
                    "arguments": "{\"path\":\"tests/parser.rs\",\"options\":{\"recursive\":false}}"}},
            ]}}],
        "usage": {"prompt_tokens": 15000, "completion_tokens": 420, "total_tokens": 15420,
                  "prompt_tokens_details": {"cached_tokens": 12000}},
    }


def _chunk(delta, finish=None, choices=True, usage=None):
    body = {"id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", "object": "chat.completion.chunk",
            "created": 1741569952, "model": "gpt-4o-2024-08-06",
            "system_fingerprint": "fp_eb9dce56a8",
            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                         "finish_reason": finish}] if choices else [],
            "usage": usage}
    return "data: " + json.dumps(body, separators=(",", ":")) + "\n\n"


def sse_chunks(n=50):
    """An OpenAI stream of exactly `n` chat.completion.chunk events, then [DONE]: a role
    chunk, text deltas, the finish chunk and the usage chunk (include_usage)."""
    chunks = [_chunk({"role": "assistant", "content": "", "refusal": None})]
    chunks += [_chunk({"content": f" word{i}"}) for i in range(n - 3)]
    chunks.append(_chunk({}, finish="stop"))
    chunks.append(_chunk(None, choices=False, usage={
        "prompt_tokens": 19, "completion_tokens": n - 3, "total_tokens": 19 + n - 3}))
    return chunks


def nginx_string(text):
    """A double-quoted nginx config string that nginx unescapes back to `text`."""
    if "$" in text:
        raise ValueError("nginx would expand $ in a return text")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def nginx_return(name, text):
    """`return 200 ...` of `text`: nginx caps one config parameter at 4 KiB, so a longer
    text is assembled from `set` variables of at most 2,000 characters each."""
    pieces = [text[i:i + 2000] for i in range(0, len(text), 2000)]
    lines = [f"set ${name}{i} {nginx_string(piece)};" for i, piece in enumerate(pieces)]
    joined = "".join(f"${name}{i}" for i in range(len(pieces)))
    lines.append(f'return 200 "{joined}";')
    return "\n            ".join(lines)


NGINX_COMMON = """\
# Generated by benches/load/load.py for the load bench: loopback only, its own files.
worker_processes 1;
daemon off;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}-error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/{name}-body;
    proxy_temp_path {tmp}/{name}-proxy;
    fastcgi_temp_path {tmp}/{name}-fastcgi;
    uwsgi_temp_path {tmp}/{name}-uwsgi;
    scgi_temp_path {tmp}/{name}-scgi;
    client_max_body_size 16m;
    client_body_buffer_size 1m;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    tcp_nodelay on;
{servers}}}
"""

UPSTREAM_SERVERS = """
    # The floor: a fixed chat.completion for any request.
    server {{
        listen 127.0.0.1:{json_port} backlog=4096;
        location / {{
            default_type application/json;
            {json_return}
        }}
    }}
    # A fixed 50-chunk OpenAI stream for any request.
    server {{
        listen 127.0.0.1:{sse_port} backlog=4096;
        location / {{
            default_type text/event-stream;
            add_header Cache-Control no-cache;
            {sse_return}
        }}
    }}
"""

# A separate nginx process, as the proxy is one: inside one worker, nginx would hand the
# request to its own upstream server without a context switch, which no real hop gets.
HOP_SERVERS = """
    # The plain hop: proxy_pass with upstream keepalive, nothing else.
    upstream json_up {{ server 127.0.0.1:{json_port}; keepalive 128; }}
    upstream sse_up {{ server 127.0.0.1:{sse_port}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{hop_json_port} backlog=4096;
        location / {{
            proxy_pass http://json_up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
    server {{
        listen 127.0.0.1:{hop_sse_port} backlog=4096;
        location / {{
            proxy_pass http://sse_up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }}
    }}
"""


def write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, separators=(",", ":"))


def gen(out, json_port, sse_port, hop_json_port, hop_sse_port):
    for name, value in [
        ("small-anthropic.json", small_anthropic(False)),
        ("small-openai.json", small_openai(False)),
        ("stream-anthropic.json", small_anthropic(True)),
        ("stream-openai.json", small_openai(True)),
        ("large-anthropic.json", large_anthropic()),
        ("large-openai.json", large_openai()),
        ("completion.json", completion()),
    ]:
        write_json(os.path.join(out, name), value)
    sse = "".join(sse_chunks(50)) + "data: [DONE]\n\n"
    with open(os.path.join(out, "stream.sse"), "w") as f:
        f.write(sse)
    json_body = json.dumps(completion(), separators=(",", ":"))
    ports = dict(json_port=json_port, sse_port=sse_port, hop_json_port=hop_json_port,
                 hop_sse_port=hop_sse_port)
    servers = {
        "upstream": UPSTREAM_SERVERS.format(json_return=nginx_return("json", json_body),
                                            sse_return=nginx_return("sse", sse), **ports),
        "hop": HOP_SERVERS.format(**ports),
    }
    for name, text in servers.items():
        with open(os.path.join(out, f"{name}.conf"), "w") as f:
            f.write(NGINX_COMMON.format(tmp=out, name=name, servers=text))
    for name in ["small-anthropic.json", "small-openai.json", "large-anthropic.json",
                 "large-openai.json", "completion.json", "stream.sse"]:
        print(f"  {name}: {os.path.getsize(os.path.join(out, name))} bytes")


def free_ports(n):
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    print(" ".join(map(str, ports)))


# ---------------------------------------------------------------------------------------------
# 1,000 concurrent streams: a dripping upstream and a bounded client
# ---------------------------------------------------------------------------------------------

DRIP_SECONDS = 90  # an upstream stream never lasts longer than this


async def read_request(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)


async def drip_connection(reader, writer):
    try:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n")
        chunks = sse_chunks(3 + DRIP_SECONDS)
        # The role chunk and the first word at once (so the client sees the stream start),
        # then one word a second: the stream stays open until the client leaves.
        for i, chunk in enumerate(chunks):
            data = chunk.encode()
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
            await writer.drain()
            if i >= 1:
                await asyncio.sleep(1)
        done = b"data: [DONE]\n\n"
        writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        pass
    finally:
        writer.close()


async def drip(port):
    server = await asyncio.start_server(drip_connection, "127.0.0.1", port, backlog=4096)
    async with server:
        # Bounded: the bench takes well under this; the script kills it earlier anyway.
        await asyncio.sleep(600)


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def open_stream(host, port, body, opened, stop):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"POST /v1/messages HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: application/json\r\n"
                     b"anthropic-version: 2023-06-01\r\ncontent-length: %d\r\n\r\n%s"
                     % (host.encode(), port, len(body), body))
        await writer.drain()
        seen = b""
        while b"content_block_delta" not in seen:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("stream closed before its first text delta")
            seen += data
        if not seen.startswith(b"HTTP/1.1 200"):
            raise ConnectionError(seen.split(b"\r\n")[0].decode(errors="replace"))
        opened.append(1)
        await stop.wait()
    finally:
        writer.close()


async def streams(url, n, pid):
    host, _, port = url.removeprefix("http://").rstrip("/").partition(":")
    port = int(port)
    body = json.dumps(small_anthropic(True)).encode()
    opened = []
    stop = asyncio.Event()
    started = time.monotonic()
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(open_stream(host, port, body, opened, stop)))
        if i % 100 == 99:
            await asyncio.sleep(0.05)
    deadline = started + 60
    while len(opened) < n and time.monotonic() < deadline:
        if all(t.done() for t in tasks):
            break
        await asyncio.sleep(0.1)
    failed = [t for t in tasks if t.done() and t.exception()]
    peak = max(rss_kb(pid) for _ in range(5))
    elapsed = time.monotonic() - started
    stop.set()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    reason = ""
    if failed:
        reason = f" first_error={failed[0].exception()!r}"
    print(f"RESULT open={len(opened)} of={n} rss_kb={peak} seconds={elapsed:.1f}{reason}")


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------

ROWS = [
    # key, label, metric, concurrency
    ("small_c1", "small JSON, c=1, p50 latency", "p50_us", 1),
    ("small_c1", "small JSON, c=1, p99 latency", "p99_us", 1),
    ("small_c64", "small JSON, c=64, requests/s", "rps", 64),
    ("large_c16", "Claude-Code-sized (~70 KB), c=16, requests/s", "rps", 16),
    ("stream_c1", "stream 50 chunks, c=1, p50 latency", "p50_us", 1),
    ("stream_c1", "stream 50 chunks, c=1, p99 latency", "p99_us", 1),
    ("stream_c16", "stream 50 chunks, c=16, requests/s", "rps", 16),
    ("stream_c16", "stream 50 chunks, c=16, p50 latency", "p50_us", 16),
    ("cache_c64", "cache hit (small), c=64, requests/s", "rps", 64),
]


def fmt(metric, value):
    if value is None:
        return "-"
    if metric == "rps":
        return f"{value:,.0f}"
    if value >= 1000:
        return f"{value / 1000:.2f} ms"
    return f"{value:.0f} us"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}"


def table(path):
    results = {}
    extra = {}
    notes = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "INFO":
                extra[parts[1]] = " ".join(parts[2:])
                notes.append((parts[1], " ".join(parts[2:])))
                continue
            key, target = parts[0], parts[1]
            fields = dict(p.split("=", 1) for p in parts[2:])
            results[(key, target)] = fields

    def get(key, target, metric):
        fields = results.get((key, target))
        if not fields or metric not in fields:
            return None
        return float(fields[metric])

    def errors(key, target):
        fields = results.get((key, target)) or {}
        n = int(fields.get("non2xx", 0)) + int(fields.get("sockerr", 0))
        return f" ({n} errors)" if n else ""

    header = f"| {'measurement':<46} | {'direct nginx':>12} | {'nginx hop':>12} | {'proxy':>12} | ours/direct | ours/hop |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for key, label, metric, _ in ROWS:
        d, h, o = (get(key, t, metric) for t in ("direct", "hop", "ours"))
        note = errors(key, "ours") + errors(key, "direct") + errors(key, "hop")
        print(f"| {label:<46} | {fmt(metric, d):>12} | {fmt(metric, h):>12} | {fmt(metric, o):>12} "
              f"| {ratio(o, d):>11} | {ratio(o, h):>8} |{note}")
    print()
    print("direct and hop rows send the OpenAI request nginx answers (no translation); the proxy")
    print("rows send the Anthropic request and translate it and the answer (cache row: answered")
    print("from the proxy's cache, compared with nginx answering the same small JSON).")

    def cpu(key, target, which):
        fields = results.get((key, target)) or {}
        front = float(fields.get("cpu_front_us", "nan"))
        upstream = float(fields.get("cpu_upstream_us", "nan"))
        return {"front": front, "upstream": upstream, "total": front + upstream}[which]

    def us(value):
        return "-" if value != value else f"{value:.1f}"

    print()
    print("CPU time per request on the server CPU (user + system, from /proc; steadier than the")
    print("figures above when other work shares the machine), in microseconds:")
    header = (f"| {'measurement':<34} | {'direct':>7} | {'hop+up':>7} | {'ours+up':>7} "
              f"| ours/hop | {'hop':>6} | {'ours':>6} | ours/hop alone |")
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    seen = set()
    for key, label, _, _ in ROWS:
        if key in seen:
            continue
        seen.add(key)
        label = label.rsplit(",", 1)[0]
        d = cpu(key, "direct", "upstream")
        h, o = cpu(key, "hop", "total"), cpu(key, "ours", "total")
        hf, of = cpu(key, "hop", "front"), cpu(key, "ours", "front")
        print(f"| {label:<34} | {us(d):>7} | {us(h):>7} | {us(o):>7} | {ratio(o, h):>8} "
              f"| {us(hf):>6} | {us(of):>6} | {ratio(of, hf):>14} |")
    print()
    for name, text in notes:
        if name.endswith("_kb"):
            text = f"{int(text) / 1024:.1f} MiB"
            name = name[:-3]
        print(f"{name}: {text}")

    print()
    print("targets:")
    checks = []
    d, h, o = (get("small_c1", t, "p50_us") for t in ("direct", "hop", "ours"))
    if None not in (d, h, o):
        added_ours, added_hop = o - d, h - d
        checks.append((f"added p50 at c=1: ours {added_ours:.0f} us vs hop {added_hop:.0f} us "
                       f"(<= 1.5x hop = {1.5 * added_hop:.0f} us)", added_ours <= 1.5 * added_hop))
    for key, floor_target, want, what in [
        ("small_c64", "hop", 0.6, "small c=64 throughput"),
        ("large_c16", "hop", 0.7, "Claude-Code-sized c=16 throughput"),
        ("cache_c64", "direct", 0.7, "cache-hit c=64 throughput"),
    ]:
        o, f = get(key, "ours", "rps"), get(key, floor_target, "rps")
        if None not in (o, f) and f:
            # The same ratio from CPU time: what the throughputs would be if the server CPU
            # alone were the limit (wrk shares its CPU with whatever else runs).
            by_cpu = cpu(key, floor_target, "total") / cpu(key, "ours", "total")
            checks.append((f"{what}: ours/{floor_target} {o / f:.2f} (>= {want}; "
                           f"from CPU time per request {by_cpu:.2f})", o / f >= want))
    s = get("stream_c1", "ours", "p50_us")
    if s is not None:
        checks.append((f"stream p50 at c=1: {s / 1000:.2f} ms (<= 2 ms)", s <= 2000))
    rss = extra.get("rss_idle_kb")
    if rss:
        checks.append((f"idle RSS: {int(rss) / 1024:.1f} MiB (<= 15 MiB)", int(rss) <= 15 * 1024))
    for text, ok in checks:
        print(f"  [{'met' if ok else 'MISSED'}] {text}")


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd = argv[1]
    if cmd == "ports":
        free_ports(int(argv[2]))
    elif cmd == "gen":
        gen(argv[2], *map(int, argv[3:7]))
    elif cmd == "drip":
        asyncio.run(drip(int(argv[2])))
    elif cmd == "streams":
        asyncio.run(streams(argv[2], int(argv[3]), int(argv[4])))
    elif cmd == "table":
        table(argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)

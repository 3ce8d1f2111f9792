"""A scripted OpenAI upstream for the interop suite: Chat Completions and the Responses API.

It listens on 127.0.0.1 only, records every request it receives (method, path, headers, body)
and answers each one with the next scripted response: a JSON body, an SSE stream of
`chat.completion.chunk` objects (optionally slowed down, optionally without `data: [DONE]`,
optionally cut off mid-stream), or an OpenAI-shaped error. Unscripted requests get a 500 so a
test never hangs waiting for an answer that was not planned.

Streams are sent as HTTP/1.1 chunked bodies like the real API does, so that an abrupt cut
(socket closed before the terminating zero-length chunk) is visible to the proxy as a broken
body and not as a normal end of stream.
"""

from __future__ import annotations

import collections
import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Union

UPSTREAM_MODEL_SUFFIX = "-2024-08-06"
FINGERPRINT = "fp_interop01"


# --------------------------------------------------------------------------------------------
# What was received
# --------------------------------------------------------------------------------------------


@dataclass
class Received:
    """One request as the upstream saw it."""

    method: str
    path: str
    headers: dict[str, str]
    raw: bytes
    json: Any = None
    # Set when writing the answer failed because the proxy closed the connection.
    disconnected: threading.Event = field(default_factory=threading.Event)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


# --------------------------------------------------------------------------------------------
# What to answer
# --------------------------------------------------------------------------------------------


@dataclass
class Json:
    """A complete JSON answer."""

    body: Any
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the response head is sent


@dataclass
class Sse:
    """A `text/event-stream` answer: each item becomes one `data:` event (dicts as JSON, str as
    is). `delay` seconds pass before each event; `done` appends `data: [DONE]`; `cut_after=N`
    closes the socket abruptly after N events (no [DONE], no terminating chunk); `split=N`
    writes every event in N-byte HTTP chunks with a flush between them (so lines and UTF-8
    characters arrive in pieces); `crlf` ends lines with CRLF instead of LF."""

    events: list[Any]
    done: bool = True
    delay: float = 0.0
    cut_after: int | None = None
    status: int = 200
    split: int | None = None
    crlf: bool = False
    comments: bool = False  # an SSE comment line before every event (OpenRouter's keep-alives)
    nospace: bool = False  # `data:{...}` without the optional space
    named: bool = False  # an `event: <type>` line before each dict event (the Responses API)


@dataclass
class Raw:
    """Any bytes with any content type (an HTML error page from a load balancer, garbage)."""

    body: bytes
    status: int = 200
    content_type: str = "text/html"


Answer = Union[Json, Sse, Raw]
Responder = Union[Answer, Callable[[Received], Answer]]


def openai_error(
    status: int,
    message: str,
    err_type: str,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Json:
    """An error exactly as OpenAI shapes it."""
    return Json(
        {"error": {"message": message, "type": err_type, "param": param, "code": code}},
        status=status,
        headers=headers or {},
    )


def usage_obj(prompt: int, completion: int, cached: int = 0) -> dict:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _model_of(req: Received | None) -> str:
    model = (req.json or {}).get("model") if req is not None and isinstance(req.json, dict) else None
    return f"{model}{UPSTREAM_MODEL_SUFFIX}" if isinstance(model, str) else "gpt-4o" + UPSTREAM_MODEL_SUFFIX


def completion(
    content: str | None = "",
    *,
    tool_calls: list[dict] | None = None,
    finish_reason: str = "stop",
    prompt_tokens: int = 12,
    completion_tokens: int = 7,
    cached_tokens: int = 0,
    choice_extra: dict | None = None,
    message_extra: dict | None = None,
    delay: float = 0.0,
) -> Callable[[Received], Json]:
    """A `chat.completion` object (as a responder, so it can echo the requested model)."""

    def respond(req: Received) -> Json:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": content,
            "refusal": None,
            "annotations": [],
        }
        if tool_calls is not None:
            message["tool_calls"] = tool_calls
        message.update(message_extra or {})
        choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        choice.update(choice_extra or {})
        return Json(
            {
                "id": "chatcmpl-" + uuid.uuid4().hex[:24],
                "object": "chat.completion",
                "created": int(time.time()),
                "model": _model_of(req),
                "choices": [choice],
                "usage": usage_obj(prompt_tokens, completion_tokens, cached_tokens),
                "service_tier": "default",
                "system_fingerprint": FINGERPRINT,
            },
            delay=delay,
        )

    return respond


def tool_call(call_id: str, name: str, arguments: str) -> dict:
    """One entry of a non-streaming `message.tool_calls`."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def chat_stream(
    deltas: list[dict],
    *,
    finish_reason: str = "stop",
    prompt_tokens: int = 12,
    completion_tokens: int = 7,
    cached_tokens: int = 0,
    first_delta: dict | None = None,
    finish_extra: dict | None = None,
    done: bool = True,
    delay: float = 0.0,
    cut_after: int | None = None,
    split: int | None = None,
    crlf: bool = False,
    honor_include_usage: bool = True,
    after: list[Any] | None = None,
    comments: bool = False,
    nospace: bool = False,
) -> Callable[[Received], Sse]:
    """A `chat.completion.chunk` stream as OpenAI sends it: a role chunk (`first_delta`,
    by default `{"role": "assistant", "content": "", "refusal": null}`), one chunk per delta, a
    finish chunk with an empty delta, then — only when the request asked for
    `stream_options.include_usage` (and `honor_include_usage`) — `usage: null` on every chunk
    and a final usage chunk with `choices: []`. `after` replaces the finish and usage chunks
    with other events (e.g. an error object mid-stream)."""

    def respond(req: Received) -> Sse:
        body = req.json if isinstance(req.json, dict) else {}
        include_usage = honor_include_usage and bool((body.get("stream_options") or {}).get("include_usage"))
        cid = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        model = _model_of(req)

        def chunk(choices: list[dict], usage: dict | None = None) -> dict:
            c = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": FINGERPRINT,
                "choices": choices,
            }
            if include_usage:
                c["usage"] = usage
            return c

        def choice(delta: dict, finish: str | None = None, extra: dict | None = None) -> dict:
            ch = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            ch.update(extra or {})
            return ch

        first = first_delta if first_delta is not None else {"role": "assistant", "content": "", "refusal": None}
        events = [chunk([choice(first)])]
        events += [chunk([choice(d)]) for d in deltas]
        if after is not None:  # something else instead of the finish (e.g. an error object)
            return Sse(
                events + after, done=done, delay=delay, split=split, crlf=crlf, comments=comments, nospace=nospace
            )
        events.append(chunk([choice({}, finish_reason, finish_extra)]))
        if include_usage:
            events.append(chunk([], usage_obj(prompt_tokens, completion_tokens, cached_tokens)))
        return Sse(
            events,
            done=done,
            delay=delay,
            cut_after=cut_after,
            split=split,
            crlf=crlf,
            comments=comments,
            nospace=nospace,
        )

    return respond


# --------------------------------------------------------------------------------------------
# The Responses API (POST /v1/responses), shapes as in openai-python's types/responses/
# --------------------------------------------------------------------------------------------


def responses_usage(input_tokens: int, output_tokens: int, cached: int = 0, reasoning: int = 0) -> dict:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input_tokens + output_tokens,
    }


def _response_obj(req: Received | None, status: str, output: list, usage: dict | None, **extra: Any) -> dict:
    body = req.json if req is not None and isinstance(req.json, dict) else {}
    obj = {
        "id": "resp_" + uuid.uuid4().hex[:24],
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": _model_of(req),
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
        "store": body.get("store", True),
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": body.get("user"),
        "metadata": {},
    }
    obj.update(extra)
    return obj


def reasoning_item(summary: list[str], encrypted: str | None, item_id: str | None = None) -> dict:
    return {
        "id": item_id or "rs_" + uuid.uuid4().hex[:24],
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": t} for t in summary],
        "encrypted_content": encrypted,
    }


def message_item(text: str, item_id: str | None = None, refusal: str | None = None) -> dict:
    content: list[dict] = []
    if text:
        content.append({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
    if refusal is not None:
        content.append({"type": "refusal", "refusal": refusal})
    return {
        "id": item_id or "msg_" + uuid.uuid4().hex[:24],
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": content,
    }


def call_item(call_id: str, name: str, arguments: str, item_id: str | None = None) -> dict:
    return {
        "id": item_id or "fc_" + uuid.uuid4().hex[:24],
        "type": "function_call",
        "status": "completed",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def responses_answer(
    output: list[dict], *, usage: dict | None = None, status: str = "completed", **extra: Any
) -> Callable[[Received], Json]:
    """A non-streamed `response` object."""

    def respond(req: Received) -> Json:
        return Json(_response_obj(req, status, output, usage or responses_usage(12, 7), **extra))

    return respond


def responses_stream(
    items: list[tuple],
    *,
    usage: dict | None = None,
    end: str = "completed",
    delay: float = 0.0,
    cut_after: int | None = None,
    error: dict | None = None,
) -> Callable[[Received], Sse]:
    """A Responses SSE stream as OpenAI sends it (named events, sequence numbers, no [DONE]).

    `items` are `("reasoning", [summary fragments per part], encrypted)`,
    `("message", [text fragments])` or `("call", call_id, name, [argument fragments])`; each
    gets `output_item.added`, its content-part / summary-part events, its deltas, its `.done`
    events and `output_item.done`. `end` is `completed`, `incomplete` (max_output_tokens) or
    `failed`; `error` puts an `error` event there instead."""

    def respond(req: Received) -> Sse:
        events: list[dict] = []

        def emit(kind: str, **fields: Any) -> None:
            events.append({"type": kind, "sequence_number": len(events), **fields})

        created = _response_obj(req, "in_progress", [], None)
        emit("response.created", response=created)
        emit("response.in_progress", response=created)
        output: list[dict] = []
        for index, spec in enumerate(items):
            kind = spec[0]
            if kind == "reasoning":
                _, parts, encrypted = spec
                item = reasoning_item(["".join(p) for p in parts], encrypted)
                iid = item["id"]
                emit("response.output_item.added", output_index=index,
                     item={**item, "summary": [], "encrypted_content": None})
                for k, fragments in enumerate(parts):
                    emit("response.reasoning_summary_part.added", item_id=iid, output_index=index,
                         summary_index=k, part={"type": "summary_text", "text": ""})
                    for fragment in fragments:
                        emit("response.reasoning_summary_text.delta", item_id=iid, output_index=index,
                             summary_index=k, delta=fragment, obfuscation="x")
                    emit("response.reasoning_summary_text.done", item_id=iid, output_index=index,
                         summary_index=k, text="".join(fragments))
                    emit("response.reasoning_summary_part.done", item_id=iid, output_index=index,
                         summary_index=k, part={"type": "summary_text", "text": "".join(fragments)})
            elif kind == "message":
                _, fragments = spec
                item = message_item("".join(fragments))
                iid = item["id"]
                emit("response.output_item.added", output_index=index,
                     item={**item, "status": "in_progress", "content": []})
                emit("response.content_part.added", item_id=iid, output_index=index, content_index=0,
                     part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})
                for fragment in fragments:
                    emit("response.output_text.delta", item_id=iid, output_index=index, content_index=0,
                         delta=fragment, logprobs=[], obfuscation="x")
                emit("response.output_text.done", item_id=iid, output_index=index, content_index=0,
                     text="".join(fragments), logprobs=[])
                emit("response.content_part.done", item_id=iid, output_index=index, content_index=0,
                     part=item["content"][0] if item["content"] else {"type": "output_text", "text": ""})
            else:
                _, call_id, name, fragments = spec
                item = call_item(call_id, name, "".join(fragments))
                iid = item["id"]
                emit("response.output_item.added", output_index=index,
                     item={**item, "status": "in_progress", "arguments": ""})
                for fragment in fragments:
                    emit("response.function_call_arguments.delta", item_id=iid, output_index=index,
                         delta=fragment, obfuscation="x")
                emit("response.function_call_arguments.done", item_id=iid, output_index=index,
                     name=name, arguments="".join(fragments))
            emit("response.output_item.done", output_index=index, item=item)
            output.append(item)
        final_usage = usage or responses_usage(12, 7)
        if error is not None:
            emit("error", **error)
        elif end == "failed":
            emit("response.failed", response=_response_obj(
                req, "failed", output, None,
                error={"code": "server_error", "message": "The model failed to generate a response."}))
        elif end == "incomplete":
            emit("response.incomplete", response=_response_obj(
                req, "incomplete", output, final_usage, incomplete_details={"reason": "max_output_tokens"}))
        else:
            emit("response.completed", response=_response_obj(req, "completed", output, final_usage))
        return Sse(events, done=False, delay=delay, cut_after=cut_after, named=True)

    return respond


def split_every(text: str, n: int) -> list[str]:
    return [text[i : i + n] for i in range(0, len(text), n)]


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # keep pytest output clean; requests are recorded instead

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until the blank line
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        raw = self._read_body()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        req = Received(
            method=self.command,
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            raw=raw,
            json=parsed,
        )
        responder = self.server.mock._record_and_pop(req)
        if responder is None:
            answer: Answer = openai_error(500, "mock upstream: no scripted response", "server_error")
        else:
            answer = responder(req) if callable(responder) else responder
        try:
            if isinstance(answer, Json):
                self._send_json(answer)
            elif isinstance(answer, Raw):
                self._send_raw(answer)
            else:
                self._send_sse(answer)
        except (BrokenPipeError, ConnectionResetError):
            # The proxy went away (e.g. its client disconnected): record it for the tests.
            req.disconnected.set()
            self.close_connection = True

    do_GET = _handle
    do_POST = _handle

    def _send_json(self, answer: Json) -> None:
        if answer.delay:
            time.sleep(answer.delay)
        data = json.dumps(answer.body, separators=(",", ":"), ensure_ascii=False).encode()
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("openai-processing-ms", "12")
        self.send_header("x-request-id", "req_" + uuid.uuid4().hex[:16])
        for k, v in answer.headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _send_raw(self, answer: Raw) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)
        self.wfile.flush()

    def _send_sse(self, answer: Sse) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("x-request-id", "req_" + uuid.uuid4().hex[:16])
        self.end_headers()
        self.wfile.flush()
        # compact JSON, one event per HTTP chunk, as OpenAI sends them
        payloads = [
            e if isinstance(e, str) else json.dumps(e, separators=(",", ":"), ensure_ascii=False) for e in answer.events
        ]
        if answer.done:
            payloads.append("[DONE]")
        for i, payload in enumerate(payloads):
            if answer.cut_after is not None and i >= answer.cut_after:
                self._cut()
                return
            if answer.delay:
                time.sleep(answer.delay)
            eol = "\r\n" if answer.crlf else "\n"
            comment = f": OPENROUTER PROCESSING{eol}{eol}" if answer.comments else ""
            sep = "" if answer.nospace else " "
            name = ""
            if answer.named and isinstance(answer.events[i] if i < len(answer.events) else None, dict):
                name = f"event: {answer.events[i].get('type', 'message')}{eol}"
            event = f"{comment}{name}data:{sep}{payload}{eol}{eol}".encode()
            if answer.split:
                for i in range(0, len(event), answer.split):
                    self._chunk(event[i : i + answer.split])
            else:
                self._chunk(event)
        if answer.cut_after is not None:
            self._cut()
            return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _cut(self) -> None:
        """Drop the connection mid-body, the way a crashed backend or a broken network does."""
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    mock: "MockUpstream"


class MockUpstream:
    """The scripted upstream. Use `script(...)` to queue answers, `calls` to read what arrived."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.mock = self
        self._lock = threading.Condition()
        self._queue: collections.deque[Responder] = collections.deque()
        self._calls: list[Received] = []
        self._thread = threading.Thread(target=self._server.serve_forever, name="mock-upstream", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "MockUpstream":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self._calls.clear()

    def script(self, *responders: Responder) -> None:
        with self._lock:
            self._queue.extend(responders)

    @property
    def calls(self) -> list[Received]:
        with self._lock:
            return list(self._calls)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def only_call(self) -> Received:
        calls = self.calls
        assert len(calls) == 1, f"expected exactly one upstream call, got {len(calls)}: {[c.path for c in calls]}"
        return calls[0]

    def wait_for_calls(self, n: int, timeout: float = 5.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._calls) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._lock.wait(left)
            return list(self._calls)

    def _record_and_pop(self, req: Received) -> Responder | None:
        with self._lock:
            self._calls.append(req)
            self._lock.notify_all()
            return self._queue.popleft() if self._queue else None

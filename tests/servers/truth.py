"""The ground-truth test server: OpenAI-style streams whose every write is stamped and logged.

A raw-socket HTTP/1.1 server, one thread per connection, so every byte and every write instant
is its own. Each write is one `sendall` on a TCP_NODELAY socket, stamped with
`time.monotonic_ns()` just before and just after it (the clock every process on a Linux machine
shares, so a client's marks and the server's log are on one axis). Waits sleep to absolute
deadlines (no drift accumulates), and the log holds the real instants, with the planned ones
beside them. Truth tests compare what a client measured with what this server logged.

## Two ways to run it
- In process: the `truth_server` pytest fixture (a fresh server per test on 127.0.0.1), or
  `with TruthServer(host=LOOPBACK, port=0, log_path=None) as server:`; either is a TruthServer
  with `base_url` (`http://127.0.0.1:PORT`), `openai_url(shape, every=1, **params)` and
  `log(wait_for=0, timeout_s=10.0)`; with log_path it also writes the JSONL log below.
- As a subprocess: `python -m tests.servers.truth --host H --port 0 --log FILE.jsonl` prints one
  line `truth server: listening on http://H:PORT` (READY_LINE) once it accepts connections,
  appends one JSON line per finished request to FILE (`RequestLog.to_json()`; `read_log(FILE)`
  reads them back), and exits 0 on SIGTERM or SIGINT. `spawn_truth_server(log_path)` runs it.

## URLs
`openai_url(shape, every=K, **params)` -> `http://H:P/[every<K>-]<shape>[;<param>=<value>...]/v1`,
e.g. `openai_url("multi", n=12, pattern=(1, 3, 2, 4))` ->
`http://H:P/multi;n=12;pattern=1,3,2,4/v1`.
A client appends `/completions` or `/chat/completions`. Unknown parameters or bad values raise
ValueError in `openai_url` and answer 400 on the wire. `/<prefix>/v1/models` always answers a
normal model list (model `truth-model`), and so do `/v1/models`, `/health` (200, empty body) and
unprefixed completions (the `content` shape with its defaults). Other paths answer 404.
With `every<K>-`, every K-th request of a path (the K-th, 2K-th, ..., counted per path, query
string dropped) gets the shape and the others the `content` shape with the same stream
parameters, so one run mixes failures with successes.
A completion request must have a JSON object body with `"stream": true` (else 400); only its
`stream_options` (usage, below) and `model` (the http404 message) change what is sent.

## Parameters (milliseconds and seconds may be fractional)
The first six, the stream parameters, apply to every shape (for http404, http500 and drop only
head_ms acts, delaying the answer or the close; the others shape their every<K> normal streams).
  n=8               output tokens; token i (1-based) is the text " t<i>"
  interval_ms=5     time between consecutive timed events (token, error or malformed events)
  head_ms=0         time from the request body read (or the last interim response) to the head
  first_ms=10       time from the head write to the first timed event
  pattern=1         tokens per token event, cycled (`1,3,2,4`); an event never mixes reasoning
                    and content: a group that would cross that boundary ends at it
  usage=request     `request`: as vLLM, `stream_options.include_usage` adds a final usage chunk
                    (`choices: []`), and with `continuous_usage_stats` also every role and token
                    chunk carries the cumulative `usage`; `none`: never any usage
  reasoning_tokens=3  (reasoning shapes) the first R tokens go to the reasoning field
  after=2           (error and malformed shapes) token events sent before the bad event
  hold_s=60         (keep-open) how long the connection is held after [DONE]
  idle_ms=100       (idle-close) idle time after the response before the server closes
  at=1,-3           (split) byte offsets at which each event's wire bytes (chunk framing
                    included) are cut: one or two offsets, negative ones count from the end;
                    offsets that do not fall strictly inside a small event are dropped for it
  part_gap_ms=1     (split) part i of an event is due i * part_gap_ms after the first part's
                    before_ns
  depth=100000      (malformed-deep-*) nesting depth
  size=4194304      (malformed-huge) bytes of the one oversized token text
Prompt tokens are always 5 (PROMPT_TOKENS) in usage.

## Timeline of a stream (every instant is a deadline slept to, never a relative sleep)
body read -> interim responses (shapes interim-*) at once -> the head at (last interim write, or
body read) + head_ms -> the role chunk (chat) at once -> timed events (token, error, malformed)
at head write_ns + first_ms + slot * interval_ms, slot 0, 1, ... -> the usage chunk, [DONE] and
the end chunk, each right after the previous write. A late write never moves later deadlines.

## Shapes (chat and completions unless marked chat only)
Every response head carries `x-truth-request-id: <request_id>`. Streams are vLLM's: head `200`
with `transfer-encoding: chunked` and `content-type: text/event-stream; charset=utf-8`; one HTTP
chunk per SSE event, `data: {json}\\n\\n`; chat opens with a role-only chunk (`delta: {"role":
"assistant", "content": ""}`, no token); the last token event carries `finish_reason` ("length",
"tool_calls" for tool_calls); then the usage chunk (if any), `data: [DONE]` and the zero-length
chunk that ends the body, each its own write. Error messages are ERROR_MESSAGE (vLLM's).
  content            completions `text`, chat `delta.content`
  reasoning_content  (chat only) the first R tokens in `delta.reasoning_content`, then content
  reasoning          (chat only) the same in `delta.reasoning` (vLLM's current field name)
  tool_calls         (chat only) `delta.tool_calls` fragments of one call: the first carries
                     `id`, `type`, `function.name` (get_weather) and the first arguments text,
                     the next ones `function.arguments` text only (tokens, not JSON)
  multi              content with pattern=1,3,2,4 (set usage=none for the variant without usage)
  error              after `after` token events, `data: {"error": {"message", "type", "param",
                     "code"}}` as vLLM sends on an engine failure, then [DONE] and the end
  error-object       the same with `data: {"object": "error", "message", "type", "param", "code"}`
  error-event        the same with an `event: error` line before `data: {"message", "code"}`
  keep-open          after [DONE] no end chunk and no close: the connection is held until the
                     client closes, hold_s passes (then FIN) or the server stops
  bom                the body starts with a UTF-8 BOM (inside the first event's chunk)
  interim-100        `HTTP/1.1 100 Continue` right after the body is read, then the response
  interim-103        `103 Early Hints` with two Link headers, head_ms (default 5) later the 200
  idle-close         after the response the server waits idle_ms; if no next request has begun
                     it closes (FIN) without having sent `connection: close`
  split              every event written in two or three parts (`at`), part_gap_ms apart
  malformed-choices, malformed-usage-str, malformed-usage-big, malformed-deep-list,
  malformed-deep-dict, malformed-json, malformed-array, malformed-number, malformed-huge
                     after `after` token events one bad event, then the remaining tokens, usage
                     and [DONE] as normal. Bad events: `"choices": 5`; `usage.completion_tokens`
                     "seven"; the same 2**40; `[[[...]]]` and `{"a":{"a":...}}` `depth` deep;
                     invalid JSON (cut short); a JSON array; a JSON number; a valid token chunk
                     whose text is `size` bytes (a client must refuse an event that large)
  http404            404 with vLLM's body `{"error": {"message": "The model `<model>` does not
                     exist.", "type": "NotFoundError", "param": null, "code": 404}}` (<model>:
                     the request's `model`), Content-Length, kept alive
  http500            500 with a multi-line text/plain body; first line `Internal Server Error`
  drop               read the request, then close (FIN) without a byte of response, so a client
                     that reused the connection sends it again (see `body_seen`)
Also, a request with `Expect: 100-continue` gets `100 Continue` before its body is read.

## The log: one RequestLog per request, in the order requests finished
A request is finished after its last write, or for idle-close after the idle wait, or for
keep-open after the hold. `log()` returns them sorted by request_id. Every `*_ns` field is
`time.monotonic_ns()`; a write's `before_ns` is taken just before its `sendall` (no byte of it
can arrive earlier), its `write_ns` just after the `sendall` returned (the kernel has the bytes).
On loopback a reader often runs before the writer returns from `sendall`: a client's arrival
stamp precedes `write_ns` for 20-45% of events, by tens of µs (once 3.4 ms under load, measured
on 2 busy cores). `before_ns <= arrival` is the causal bound; `write_ns` is the instant the
server was done with the write.
  request_id           1, 2, ... in the order request heads were read (also the response
                       header `x-truth-request-id`)
  connection_id        1, 2, ... in the order connections were accepted
  peer_host, peer_port the client's address: the join key with a client's local port,
                       together with index_on_connection (ports are reused by later connections)
  index_on_connection  0 for the first request on its connection, then 1, 2, ...
  accepted_ns          when the connection was accepted
  method, path         the request line (path without query); route: the path after the prefix
  shape, params        the shape served (after every<K>) and all its parameter values (defaults
                       included), or None and {} for health, models and unknown routes
  every, ordinal       K of every<K> (1 without), and this request's count on its path (1-based)
  first_byte_ns        the recv that brought the request's first byte returned
  head_read_ns         the recv that completed the request head (its blank line) returned
  body_read_ns         the recv that completed the body returned (= head_read_ns when it came
                       with the head or is empty; None when the client left before it)
  body, body_is_json   the body, parsed when it is JSON, else its text
  body_seen            how many requests with this exact body the server has received on any
                       connection, this one included (2 and up: a re-send); None without a body.
                       It tells re-sends apart only when each request's body is unique; with
                       identical bodies count the requests answered against those sent
  status               the final status, None when nothing was answered
  interim              each 1xx written: status, before_ns, write_ns, bytes
  head                 the final status line + headers: before_ns, write_ns, bytes (for a
                       response sent in one write, head and body)
  events               per SSE event: kind, tokens, usage_tokens, offset, bytes, due_ns,
                       before_ns, write_ns, parts
       kind            role, token (completions text), content, reasoning, tool_call, usage,
                       error, malformed, done
       tokens          output tokens the event carries (0 for role, usage, error, malformed, done)
       usage_tokens    `usage.completion_tokens` the event carries, None without usage
       offset, bytes   where the event's chunk starts in the body (0 = the first body byte after
                       the final head) and its size, chunk framing included
       due_ns          the planned instant of a timed event (head write_ns + first_ms +
                       slot * interval_ms); None for events written right after the previous one
       before_ns       just before the first part's sendall; write_ns: just after the sendall
                       that completed the event
       parts           each sendall of the event: before_ns, write_ns, bytes (one unless split)
  complete_ns          just after the write that ended the response (the zero-length chunk, or
                       the one write of a whole response); None when it never ended
  closed_by, close_ns  "server" when the server closed the connection after (or during) this
                       request, close_ns just after its shutdown (FIN); "client" when the server
                       saw the client go (EOF or a failed write) during it; None, None otherwise
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

from tests.servers.http1 import (DONE_EVENT, LAST_CHUNK, MAX_HEADER_BYTES, Request, chunk,
                                 json_response, models_json, parse_head, split_prefix, sse_event,
                                 sse_head, status_head)
from tests.servers.ports import LOOPBACK, stop_process_group

__all__ = ["truth_server"]

MODEL_ID = "truth-model"
PROMPT_TOKENS = 5
TOOL_NAME = "get_weather"
ERROR_MESSAGE = "EngineCore encountered an issue. See stack trace (above) for the root cause."
HTTP500_BODY = (
    "Internal Server Error\n"
    "Traceback (most recent call last):\n"
    '  File "/app/vllm/entrypoints/openai/api_server.py", line 412, in create_completion\n'
    "    generator = await handler.create_completion(request, raw_request)\n"
    "RuntimeError: CUDA error: an illegal memory access was encountered\n"
)
EARLY_HINTS = (("link", "</style.css>; rel=preload; as=style"),
               ("link", "</app.js>; rel=preload; as=script"))
BOM = "\ufeff".encode()
CHAT_ROUTE = "/v1/chat/completions"
COMPLETION_ROUTES = ("/v1/completions", CHAT_ROUTE)
READY_PREFIX = "truth server: listening on "
READY_LINE = re.compile("^" + re.escape(READY_PREFIX) + r"(http://\S+)$")
RECV_BYTES = 65536
# Sleeps and socket waits wake at least this often to notice stop(): prompt shutdown mid-stream.
STOP_POLL_NS = 50_000_000
JOIN_TIMEOUT_S = 5.0
START_TIMEOUT_S = 30.0


# -- shapes and their parameters -------------------------------------------------------------

def _non_negative(kind: Callable[[str], int | float]) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        value = kind(text)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{text!r} is not a finite number >= 0")
        return value
    return parse


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"{text!r} is not a positive integer")
    return value


def _pattern(text: str) -> tuple[int, ...]:
    return tuple(_positive_int(part) for part in text.split(","))


def _offsets(text: str) -> tuple[int, ...]:
    offsets = tuple(int(part) for part in text.split(","))
    if not 1 <= len(offsets) <= 2 or 0 in offsets:
        raise ValueError(f"{text!r}: give one or two non-zero byte offsets")
    return offsets


def _usage_mode(text: str) -> str:
    if text not in ("request", "none"):
        raise ValueError(f"{text!r} is not 'request' or 'none'")
    return text


_PARSERS: dict[str, Callable[[str], object]] = {
    "n": _positive_int, "interval_ms": _non_negative(float), "head_ms": _non_negative(float),
    "first_ms": _non_negative(float), "pattern": _pattern, "usage": _usage_mode,
    "reasoning_tokens": _non_negative(int), "after": _non_negative(int),
    "hold_s": _non_negative(float), "idle_ms": _non_negative(float), "at": _offsets,
    "part_gap_ms": _non_negative(float), "depth": _positive_int, "size": _positive_int,
}
_STREAM: dict[str, object] = {"n": 8, "interval_ms": 5.0, "head_ms": 0.0, "first_ms": 10.0,
                              "pattern": (1,), "usage": "request"}
_FAILING = {**_STREAM, "after": 2}
MALFORMED = ("malformed-choices", "malformed-usage-str", "malformed-usage-big",
             "malformed-deep-list", "malformed-deep-dict", "malformed-json", "malformed-array",
             "malformed-number", "malformed-huge")
ERRORS = ("error", "error-object", "error-event")
CHAT_ONLY = ("reasoning_content", "reasoning", "tool_calls")
#: shape -> its parameters with their defaults
SHAPES: dict[str, dict[str, object]] = {
    "content": _STREAM,
    "reasoning_content": {**_STREAM, "reasoning_tokens": 3},
    "reasoning": {**_STREAM, "reasoning_tokens": 3},
    "tool_calls": _STREAM,
    "multi": {**_STREAM, "pattern": (1, 3, 2, 4)},
    **{name: _FAILING for name in ERRORS},
    "keep-open": {**_STREAM, "hold_s": 60.0},
    "bom": _STREAM,
    "interim-100": _STREAM,
    "interim-103": {**_STREAM, "head_ms": 5.0},
    "idle-close": {**_STREAM, "idle_ms": 100.0},
    "split": {**_STREAM, "at": (1, -3), "part_gap_ms": 1.0},
    **{name: _FAILING for name in MALFORMED},
    "malformed-deep-list": {**_FAILING, "depth": 100_000},
    "malformed-deep-dict": {**_FAILING, "depth": 100_000},
    "malformed-huge": {**_FAILING, "size": 4 * 1024 * 1024},
    # These take the stream parameters too: with every<K>, the other requests stream.
    "http404": _STREAM,
    "http500": _STREAM,
    "drop": _STREAM,
}


def parse_segment(segment: str) -> tuple[str, dict[str, object]]:
    """'multi;n=4' -> ('multi', {every parameter of multi, n=4}); ValueError on a bad one.

    Sequences come back as lists, as they stand in the JSON log.
    """
    name, *pairs = segment.split(";")
    if name not in SHAPES:
        raise ValueError(f"unknown shape {name!r}; known: {', '.join(SHAPES)}")
    defaults = SHAPES[name]
    params = dict(defaults)
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or key not in defaults:
            raise ValueError(f"shape {name!r} takes no parameter {pair!r}; "
                             f"it takes {', '.join(defaults)}")
        try:
            params[key] = _PARSERS[key](text)
        except ValueError as exc:
            raise ValueError(f"parameter {key}: {exc}") from None
    return name, {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}


def _format_param(value: object) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return str(value)


def _duration_ns(params: dict[str, object], name: str) -> int:
    """A `*_ms` or `*_s` parameter in nanoseconds (0 when the shape does not take it)."""
    value = params.get(name, 0)
    assert isinstance(value, (int, float))
    return round(value * (1_000_000 if name.endswith("_ms") else 1_000_000_000))


# -- the log -----------------------------------------------------------------------------------

@dataclass
class Send:
    """One sendall: instants just before the call and just after it returned, and its size."""
    before_ns: int
    write_ns: int
    bytes: int


@dataclass
class InterimLog:
    """One 1xx response head."""
    status: int
    before_ns: int
    write_ns: int
    bytes: int


@dataclass
class EventLog:
    """One SSE event (one HTTP chunk) of a stream; see the module docstring for each field."""
    kind: str
    tokens: int
    usage_tokens: int | None
    offset: int
    bytes: int
    due_ns: int | None
    before_ns: int
    write_ns: int
    parts: list[Send]


@dataclass
class RequestLog:
    """What the server read and wrote for one request; see the module docstring."""
    request_id: int
    connection_id: int
    peer_host: str
    peer_port: int
    index_on_connection: int
    accepted_ns: int
    method: str
    path: str
    route: str
    shape: str | None
    params: dict[str, object]
    every: int
    ordinal: int
    first_byte_ns: int
    head_read_ns: int
    body_read_ns: int | None = None
    body: object = None
    body_is_json: bool = False
    body_seen: int | None = None
    status: int | None = None
    interim: list[InterimLog] = field(default_factory=list)
    head: Send | None = None
    events: list[EventLog] = field(default_factory=list)
    complete_ns: int | None = None
    closed_by: str | None = None
    close_ns: int | None = None

    def to_json(self) -> str:
        """One compact JSON line."""
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> RequestLog:
        data = json.loads(line)
        data["interim"] = [InterimLog(**item) for item in data["interim"]]
        data["head"] = Send(**data["head"]) if data["head"] else None
        data["events"] = [EventLog(**{**event, "parts": [Send(**p) for p in event["parts"]]})
                          for event in data["events"]]
        return cls(**data)


def read_log(path: Path) -> list[RequestLog]:
    """The records of a subprocess server's JSONL log, in the order they were written."""
    return [RequestLog.from_json(line) for line in path.read_text().splitlines() if line]


# -- what a stream sends -----------------------------------------------------------------------

@dataclass
class _PlannedEvent:
    kind: str
    tokens: int
    usage_tokens: int | None
    wire: bytes
    #: planned instant relative to the head's write_ns; None: right after the previous write
    due_offset_ns: int | None


def _token_groups(n: int, pattern: list[int], boundary: int) -> list[tuple[int, int]]:
    """(first token, count) per token event; no group crosses the reasoning boundary."""
    groups: list[tuple[int, int]] = []
    start = 0
    while start < n:
        end = min(start + pattern[len(groups) % len(pattern)], n)
        if start < boundary < end:
            end = boundary
        groups.append((start, end - start))
        start = end
    return groups


def _usage(completion_tokens: int) -> dict[str, object]:
    return {"prompt_tokens": PROMPT_TOKENS, "total_tokens": PROMPT_TOKENS + completion_tokens,
            "completion_tokens": completion_tokens}


class _Chunks:
    """vLLM's chunk objects for one response: the envelope, choices and usage."""

    def __init__(self, chat: bool, request_id: int, continuous_usage: bool) -> None:
        self.chat = chat
        self.continuous_usage = continuous_usage
        self.envelope = {"id": f"{'chatcmpl' if chat else 'cmpl'}-truth-{request_id}",
                         "object": "chat.completion.chunk" if chat else "text_completion",
                         "created": int(time.time()), "model": MODEL_ID}

    def payload(self, choice: dict[str, object], completion_tokens: int) -> dict[str, object]:
        payload: dict[str, object] = {**self.envelope, "choices": [{"index": 0, **choice}]}
        if self.continuous_usage:
            payload["usage"] = _usage(completion_tokens)
        return payload

    def role(self) -> dict[str, object]:
        return self.payload({"delta": {"role": "assistant", "content": ""}, "logprobs": None,
                             "finish_reason": None}, 0)

    def token(self, delta: dict[str, object], finish: str | None,
              completion_tokens: int) -> dict[str, object]:
        content = {"delta": delta} if self.chat else delta
        return self.payload({**content, "logprobs": None, "finish_reason": finish,
                             "stop_reason": None}, completion_tokens)

    def usage(self, usage: dict[str, object]) -> dict[str, object]:
        return {**self.envelope, "choices": [], "usage": usage}


def _token_delta(shape: str, chat: bool, kind: str, text: str, first: bool) -> dict[str, object]:
    if not chat:
        return {"text": text}
    if kind == "reasoning":
        return {shape: text}  # each reasoning shape is named after its field
    if kind == "tool_call":
        call: dict[str, object] = {"index": 0, "function": {"arguments": text}}
        if first:
            call = {"index": 0, "id": "chatcmpl-tool-truth", "type": "function",
                    "function": {"name": TOOL_NAME, "arguments": text}}
        return {"tool_calls": [call]}
    return {"content": text}


def _error_event(shape: str) -> bytes:
    info = {"message": ERROR_MESSAGE, "type": "InternalServerError", "param": None, "code": 500}
    if shape == "error":
        return sse_event({"error": info})
    if shape == "error-object":
        return sse_event({"object": "error", **info})
    return b"event: error\n" + sse_event({"message": ERROR_MESSAGE, "code": 500})


def _malformed_event(shape: str, params: dict[str, object], chunks: _Chunks) -> bytes:
    depth = params.get("depth", 0)
    assert isinstance(depth, int)
    raw = {
        "malformed-deep-list": lambda: b"[" * depth + b"]" * depth,
        "malformed-deep-dict": lambda: b'{"a":' * depth + b"{}" + b"}" * depth,
        "malformed-json": lambda: b'{"choices":[{"index":0,"text":" oops"',
        "malformed-array": lambda: b"[1,2,3]",
        "malformed-number": lambda: b"42",
    }
    if shape in raw:
        return b"data: " + raw[shape]() + b"\n\n"
    if shape == "malformed-choices":
        return sse_event({**chunks.envelope, "choices": 5})
    if shape == "malformed-huge":
        size = params["size"]
        assert isinstance(size, int)
        text = "x" * size
        choice = {"index": 0, **({"delta": {"content": text}} if chunks.chat else {"text": text})}
        return sse_event({**chunks.envelope, "choices": [choice]})
    if shape == "malformed-usage-str":
        return sse_event(chunks.usage({"prompt_tokens": PROMPT_TOKENS, "total_tokens": 12,
                                       "completion_tokens": "seven"}))
    return sse_event(chunks.usage(_usage(2**40)))


def _plan_stream(shape: str, params: dict[str, object], chat: bool, body: dict[str, object],
                 request_id: int) -> list[_PlannedEvent]:
    """Every event of a stream, in order, with its wire bytes and planned instant."""
    options = body.get("stream_options")
    options = options if isinstance(options, dict) else {}
    include_usage = params["usage"] == "request" and options.get("include_usage") is True
    continuous = include_usage and options.get("continuous_usage_stats") is True
    chunks = _Chunks(chat, request_id, continuous)
    n, pattern = params["n"], params["pattern"]
    assert isinstance(n, int) and isinstance(pattern, list)
    boundary = params.get("reasoning_tokens", 0)
    assert isinstance(boundary, int)
    groups = _token_groups(n, pattern, boundary)
    after = params.get("after", len(groups))
    assert isinstance(after, int)
    first_ns, interval_ns = _duration_ns(params, "first_ms"), _duration_ns(params, "interval_ms")
    events: list[_PlannedEvent] = []
    slots = 0

    def add(kind: str, tokens: int, usage_tokens: int | None, data: bytes, timed: bool) -> None:
        nonlocal slots
        due = first_ns + slots * interval_ns if timed else None
        slots += timed
        events.append(_PlannedEvent(kind, tokens, usage_tokens, data, due))

    def add_tokens(selected: list[tuple[int, int]]) -> None:
        for start, count in selected:
            kind = ("reasoning" if start < boundary else
                    "tool_call" if shape == "tool_calls" else "content" if chat else "token")
            text = "".join(f" t{i + 1}" for i in range(start, start + count))
            last = start + count == n
            finish = ("tool_calls" if shape == "tool_calls" else "length") if last else None
            delta = _token_delta(shape, chat, kind, text, start == 0)
            done_tokens = start + count
            add(kind, count, done_tokens if chunks.continuous_usage else None,
                sse_event(chunks.token(delta, finish, done_tokens)), True)

    if chat:
        add("role", 0, 0 if chunks.continuous_usage else None, sse_event(chunks.role()), False)
    add_tokens(groups[:after])
    if shape in ERRORS:
        add("error", 0, None, _error_event(shape), True)
    else:
        if shape in MALFORMED:
            add("malformed", 0, None, _malformed_event(shape, params, chunks), True)
            add_tokens(groups[after:])
        if include_usage:
            add("usage", 0, n, sse_event(chunks.usage(_usage(n))), False)
    add("done", 0, None, DONE_EVENT, False)
    if shape == "bom":
        events[0].wire = BOM + events[0].wire
    for event in events:
        event.wire = chunk(event.wire)
    return events


def _parts(wire: bytes, offsets: list[int]) -> list[bytes]:
    """Cut wire at offsets (negative from the end); offsets not strictly inside are dropped."""
    cuts = sorted({o if o > 0 else len(wire) + o for o in offsets} & set(range(1, len(wire))))
    bounds = [0, *cuts, len(wire)]
    return [wire[a:b] for a, b in zip(bounds, bounds[1:])]


# -- the server --------------------------------------------------------------------------------

class _Stopped(Exception):
    """Raised inside a connection thread when stop() interrupts a wait."""


@dataclass
class _Connection:
    sock: socket.socket
    connection_id: int
    peer_host: str
    peer_port: int
    accepted_ns: int
    buffer: bytearray = field(default_factory=bytearray)
    last_recv_ns: int = 0
    requests: int = 0

    def _fill(self) -> bool:
        """One recv into the buffer; False at EOF."""
        data = self.sock.recv(RECV_BYTES)
        self.last_recv_ns = time.monotonic_ns()
        self.buffer += data
        return bool(data)

    def read_head(self) -> tuple[Request, int, int] | None:
        """The next request head with its first-byte and head-read instants; None at EOF
        between requests. ValueError on a head that is cut short, too large or unparsable."""
        first_byte_ns = self.last_recv_ns if self.buffer else None
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if len(self.buffer) > MAX_HEADER_BYTES:
                raise ValueError("request head too large")
            if not self._fill():
                if self.buffer:
                    raise ValueError("connection closed inside a request head")
                return None
            first_byte_ns = first_byte_ns or self.last_recv_ns
        request = parse_head(bytes(self.buffer[:end + 4]))
        del self.buffer[:end + 4]
        assert first_byte_ns is not None
        return request, first_byte_ns, self.last_recv_ns

    def read_body(self, length: int) -> tuple[bytes, int]:
        """The body and the instant the recv that completed it returned."""
        while len(self.buffer) < length:
            if not self._fill():
                raise ConnectionError("client closed the connection inside a request body")
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return body, self.last_recv_ns


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


class TruthServer:
    """The truth server: an accept thread and one thread per connection (see the module doc).

    `with TruthServer(host, port, log_path) as server:` starts it and stops it (promptly) on exit.
    """

    def __init__(self, host: str = LOOPBACK, port: int = 0, log_path: Path | None = None) -> None:
        self.host = host
        self._requested_port = port
        self._log_path = log_path
        self._log_file: IO[str] | None = None
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Condition()
        self._records: list[RequestLog] = []
        self._connections: dict[int, tuple[socket.socket, threading.Thread]] = {}
        self._connection_count = 0
        self._request_count = 0
        self._path_counts: Counter[str] = Counter()
        self._bodies: Counter[bytes] = Counter()
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        self._listener = socket.create_server((self.host, self._requested_port), family=family,
                                              backlog=128)
        self.port = self._listener.getsockname()[1]
        if self._log_path is not None:
            self._log_file = self._log_path.open("a", buffering=1)
        self._accept_thread = threading.Thread(target=self._accept_loop, name="truth-accept",
                                               daemon=True)
        self._accept_thread.start()

    def __enter__(self) -> TruthServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop promptly: in-flight requests end (logged with closed_by "server")."""
        assert self._listener is not None and self._accept_thread is not None
        self._stopping.set()
        # shutdown() wakes the accept() blocked in the accept thread; close() alone would not.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._accept_thread.join(JOIN_TIMEOUT_S)
        with self._lock:
            live = list(self._connections.values())
        for sock, _ in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes recv/select/sendall in its thread
        for _, thread in live:
            thread.join(JOIN_TIMEOUT_S)
        if self._log_file is not None:
            self._log_file.close()

    # -- what tests read -----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{_url_host(self.host)}:{self.port}"

    def openai_url(self, shape: str = "content", every: int = 1, **params: object) -> str:
        """The OpenAI base URL of a shape: openai_url('split', at=(2, -3)) ->
        http://H:P/split;at=2,-3/v1; with every=3 -> http://H:P/every3-split;at=2,-3/v1."""
        segment = ";".join([shape, *(f"{k}={_format_param(v)}" for k, v in params.items())])
        parse_segment(segment)
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        return f"{self.base_url}/{segment if every == 1 else f'every{every}-{segment}'}/v1"

    def log(self, wait_for: int = 0, timeout_s: float = 10.0) -> list[RequestLog]:
        """The finished requests sorted by request_id, after waiting (up to timeout_s, else
        TimeoutError) until at least `wait_for` have finished."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._records) >= wait_for, timeout_s):
                raise TimeoutError(f"{len(self._records)} requests finished, not {wait_for}, "
                                   f"within {timeout_s} s")
            return sorted(self._records, key=lambda record: record.request_id)

    # -- connections ---------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while True:
            try:
                sock, address = self._listener.accept()
            except OSError:
                return  # stop() shut the listener down
            accepted_ns = time.monotonic_ns()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._stopping.is_set():
                    sock.close()
                    return
                self._connection_count += 1
                conn = _Connection(sock, self._connection_count, address[0], address[1],
                                   accepted_ns)
                thread = threading.Thread(target=self._serve_connection, args=(conn,),
                                          name=f"truth-conn-{conn.connection_id}", daemon=True)
                self._connections[conn.connection_id] = (sock, thread)
            thread.start()

    def _serve_connection(self, conn: _Connection) -> None:
        try:
            while self._serve_request(conn):
                pass
        except (OSError, ValueError):
            pass  # a client gone between requests, or a head we cannot parse: end this one
        finally:
            with self._lock:
                del self._connections[conn.connection_id]
            conn.sock.close()

    def _serve_request(self, conn: _Connection) -> bool:
        """Read and answer one request; True when the connection stays open for another."""
        head = conn.read_head()
        if head is None:
            return False
        request, first_byte_ns, head_read_ns = head
        record, problem = self._open_record(conn, request, first_byte_ns, head_read_ns)
        keep = False
        try:
            if request.expects_continue:
                self._interim(conn, record, 100, status_head(100))
            request.body, record.body_read_ns = conn.read_body(request.content_length)
            self._note_body(record, request.body)
            keep = self._respond(conn, request, record, problem)
        except (_Stopped, OSError, ValueError) as exc:
            # OSError: the client went away (or stop() shut the socket) while we read, wrote or
            # waited; ValueError: a Content-Length we cannot read. Either ends the connection.
            client_gone = isinstance(exc, OSError) and not self._stopping.is_set()
            record.closed_by = "client" if client_gone else "server"
            record.close_ns = time.monotonic_ns()
        finally:
            with self._lock:
                self._records.append(record)
                if self._log_file is not None:
                    self._log_file.write(record.to_json() + "\n")
                self._lock.notify_all()
        return keep

    def _open_record(self, conn: _Connection, request: Request, first_byte_ns: int,
                     head_read_ns: int) -> tuple[RequestLog, str | None]:
        """The request's record with its route and shape; and why it is bad, if it is."""
        segment, every, route = split_prefix(request.path, SHAPES)
        shape: str | None = None
        params: dict[str, object] = {}
        problem = None
        if route in COMPLETION_ROUTES:
            try:
                shape, params = parse_segment(segment or "content")
            except ValueError as exc:
                problem = str(exc)
        with self._lock:
            self._request_count += 1
            self._path_counts[request.path] += 1
            ordinal = self._path_counts[request.path]
            request_id = self._request_count
        if shape is not None and ordinal % every:
            shape, content = parse_segment("content")
            params = {name: params.get(name, default) for name, default in content.items()}
        record = RequestLog(
            request_id=request_id, connection_id=conn.connection_id, peer_host=conn.peer_host,
            peer_port=conn.peer_port, index_on_connection=conn.requests,
            accepted_ns=conn.accepted_ns, method=request.method, path=request.path, route=route,
            shape=shape, params=params, every=every, ordinal=ordinal,
            first_byte_ns=first_byte_ns, head_read_ns=head_read_ns)
        conn.requests += 1
        return record, problem

    def _note_body(self, record: RequestLog, body: bytes) -> None:
        if not body:
            return
        try:
            record.body, record.body_is_json = json.loads(body), True
        except (ValueError, RecursionError):
            record.body = body.decode("utf-8", errors="replace")
        with self._lock:
            digest = hashlib.sha256(body).digest()
            self._bodies[digest] += 1
            record.body_seen = self._bodies[digest]

    # -- writing -------------------------------------------------------------------------------

    @staticmethod
    def _send(conn: _Connection, data: bytes) -> Send:
        before_ns = time.monotonic_ns()
        conn.sock.sendall(data)
        return Send(before_ns, time.monotonic_ns(), len(data))

    def _sleep_until(self, deadline_ns: int) -> None:
        while (left_ns := deadline_ns - time.monotonic_ns()) > 0:
            if self._stopping.is_set():
                raise _Stopped
            time.sleep(min(left_ns, STOP_POLL_NS) / 1e9)

    def _wait_readable(self, conn: _Connection, timeout_ns: int) -> bool | None:
        """Wait for the client: True when it sent data, False when it closed, None on timeout."""
        if conn.buffer:
            return True
        deadline_ns = time.monotonic_ns() + timeout_ns
        while (left_ns := deadline_ns - time.monotonic_ns()) > 0:
            readable, _, _ = select.select([conn.sock], [], [], min(left_ns, STOP_POLL_NS) / 1e9)
            if self._stopping.is_set():
                raise _Stopped
            if readable:
                return bool(conn.sock.recv(1, socket.MSG_PEEK))
        return None

    @staticmethod
    def _close(record: RequestLog, conn: _Connection) -> None:
        conn.sock.shutdown(socket.SHUT_WR)  # FIN; the thread closes the socket when it ends
        record.closed_by, record.close_ns = "server", time.monotonic_ns()

    def _interim(self, conn: _Connection, record: RequestLog, status: int, data: bytes) -> int:
        sent = self._send(conn, data)
        record.interim.append(InterimLog(status, sent.before_ns, sent.write_ns, sent.bytes))
        return sent.write_ns

    def _whole(self, conn: _Connection, request: Request, record: RequestLog, status: int,
               data: bytes) -> bool:
        """Send a whole response in one write; True when the connection stays open."""
        record.head = self._send(conn, data)
        record.status, record.complete_ns = status, record.head.write_ns
        if not request.keep_alive:
            self._close(record, conn)
        return request.keep_alive

    def _respond(self, conn: _Connection, request: Request, record: RequestLog,
                 problem: str | None) -> bool:
        keep = request.keep_alive
        ids = [("x-truth-request-id", str(record.request_id))]
        if record.route == "/health":
            return self._whole(conn, request, record, 200,
                               status_head(200, [("content-length", "0"), *ids]))
        if record.route == "/v1/models":
            return self._whole(conn, request, record, 200,
                               json_response(200, models_json(MODEL_ID), keep, ids))
        if record.route not in COMPLETION_ROUTES:
            return self._whole(conn, request, record, 404, json_response(
                404, {"error": {"message": f"no route {request.path}", "type": "NotFoundError",
                                "param": None, "code": 404}}, keep, ids))
        body = request.json_body()
        chat = record.route == CHAT_ROUTE
        if problem is None and body.get("stream") is not True:
            problem = 'the truth server only streams: send a JSON object with "stream": true'
        if problem is None and not chat and record.shape in CHAT_ONLY:
            problem = f"shape {record.shape!r} is for /v1/chat/completions only"
        if problem is not None:
            return self._whole(conn, request, record, 400, json_response(
                400, {"error": {"message": problem, "type": "BadRequestError", "param": None,
                                "code": 400}}, keep, ids))
        assert record.body_read_ns is not None and record.shape is not None
        self._sleep_until(record.body_read_ns + _duration_ns(record.params, "head_ms"))
        if record.shape == "drop":
            self._close(record, conn)
            return False
        if record.shape == "http404":
            model = body.get("model")
            message = f"The model `{model if isinstance(model, str) else MODEL_ID}` does not exist."
            return self._whole(conn, request, record, 404, json_response(
                404, {"error": {"message": message, "type": "NotFoundError", "param": None,
                                "code": 404}}, keep, ids))
        if record.shape == "http500":
            text = HTTP500_BODY.encode()
            return self._whole(conn, request, record, 500, status_head(500, [
                ("content-type", "text/plain; charset=utf-8"),
                ("content-length", str(len(text))), *ids]) + text)
        return self._stream(conn, request, record, body, chat, ids)

    def _stream(self, conn: _Connection, request: Request, record: RequestLog,
                body: dict[str, object], chat: bool, ids: list[tuple[str, str]]) -> bool:
        shape, params = record.shape, record.params
        assert shape is not None and record.body_read_ns is not None
        # Built before the head goes out, so that only sleeps and sendalls remain on the clock.
        plan = _plan_stream(shape, params, chat, body, record.request_id)
        offsets = params.get("at")
        anchor_ns = record.body_read_ns
        if shape == "interim-100":
            anchor_ns = self._interim(conn, record, 100, status_head(100))
        elif shape == "interim-103":
            anchor_ns = self._interim(conn, record, 103, status_head(103, EARLY_HINTS))
        self._sleep_until(anchor_ns + _duration_ns(params, "head_ms"))
        keep = request.keep_alive
        head = record.head = self._send(conn, sse_head(keep, ids))
        record.status = 200
        offset = 0
        for planned in plan:
            parts = _parts(planned.wire, offsets) if isinstance(offsets, list) else [planned.wire]
            record.events.append(self._send_event(conn, planned, parts, head.write_ns, offset,
                                                  _duration_ns(params, "part_gap_ms")))
            offset += len(planned.wire)
        if shape == "keep-open":
            self._hold(conn, record, _duration_ns(params, "hold_s"))
            return False
        record.complete_ns = self._send(conn, LAST_CHUNK).write_ns
        if shape == "idle-close":
            waited = self._wait_readable(conn, _duration_ns(params, "idle_ms"))
            if waited is None:
                self._close(record, conn)
                return False
            if waited is False:
                record.closed_by, record.close_ns = "client", time.monotonic_ns()
                return False
        if not keep:
            self._close(record, conn)
        return keep

    def _send_event(self, conn: _Connection, planned: _PlannedEvent, parts: list[bytes],
                    head_ns: int, offset: int, part_gap_ns: int) -> EventLog:
        due_ns = None
        if planned.due_offset_ns is not None:
            due_ns = head_ns + planned.due_offset_ns
            self._sleep_until(due_ns)
        sent: list[Send] = []
        for index, part in enumerate(parts):
            if index:
                self._sleep_until(sent[0].before_ns + index * part_gap_ns)
            sent.append(self._send(conn, part))
        return EventLog(planned.kind, planned.tokens, planned.usage_tokens, offset,
                        len(planned.wire), due_ns, sent[0].before_ns, sent[-1].write_ns, sent)

    def _hold(self, conn: _Connection, record: RequestLog, hold_ns: int) -> None:
        """keep-open after [DONE]: wait for the client to close, or close after hold_ns."""
        if self._wait_readable(conn, hold_ns) is False:
            record.closed_by, record.close_ns = "client", time.monotonic_ns()
        else:
            self._close(record, conn)


@pytest.fixture
def truth_server() -> Iterator[TruthServer]:
    """A fresh truth server on 127.0.0.1 per test, so ids and counters start at 1."""
    with TruthServer() as server:
        yield server


# -- the subprocess form -----------------------------------------------------------------------

def truth_command(log_path: Path, host: str = LOOPBACK, port: int = 0) -> list[str]:
    """The command line of the subprocess form (run it from the repository root)."""
    return [sys.executable, "-m", "tests.servers.truth", "--host", host, "--port", str(port),
            "--log", str(log_path)]


@contextlib.contextmanager
def spawn_truth_server(log_path: Path, host: str = LOOPBACK) -> Iterator[str]:
    """Run the subprocess form for the block; yield its base URL. On exit: SIGTERM, and assert
    it exited 0 (unless the block raised)."""
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(truth_command(log_path, host), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=stderr, text=True,
                                start_new_session=True)
        assert proc.stdout is not None
        # readline() has no timeout of its own: a server that never announces itself is killed.
        timer = threading.Timer(START_TIMEOUT_S, proc.kill)
        timer.start()
        try:
            line = proc.stdout.readline()
        finally:
            timer.cancel()
        try:
            match = READY_LINE.match(line.strip())
            if match is None:
                raise RuntimeError(f"truth server said {line!r} instead of its ready line")
            yield match.group(1)
        finally:
            stop_process_group(proc, signal.SIGTERM, JOIN_TIMEOUT_S * 2)
            proc.stdout.close()
        stderr.seek(0)
        assert proc.returncode == 0, (f"truth server exited {proc.returncode}; stderr:\n"
                                      f"{stderr.read().decode(errors='replace')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.servers.truth",
                                     description="The ground-truth test server (see its module "
                                                 "docstring for shapes and the log).")
    parser.add_argument("--host", default=LOOPBACK, help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: a free one)")
    parser.add_argument("--log", type=Path, required=True,
                        help="JSONL file that gets one line per finished request (appended)")
    args = parser.parse_args(argv)
    # Blocked before any thread starts, so every thread inherits the mask and sigwait() below
    # is the only place these signals are taken.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    server = TruthServer(args.host, args.port, args.log)
    server.start()
    print(f"{READY_PREFIX}{server.base_url}", flush=True)
    signal.sigwait(stop_signals)
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

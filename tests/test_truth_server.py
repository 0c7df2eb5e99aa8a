"""Self-checks of the truth server (tests/servers/truth.py), with the stdlib only.

A raw-socket client stamps every recv with time.monotonic_ns() and checks, per shape, that what
it received is exactly what the server's log says it wrote (sizes, offsets, what each event
carried, read by the client's own parser), that no byte arrived before the logged instant just
before its write, that planned gaps are honoured, and the connection behaviours (keep-open,
idle-close, drop, re-sends). Lateness bounds are generous: they check the fixture, not netbench.
"""

from __future__ import annotations

import bisect
import json
import socket
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.servers.truth import (ERROR_MESSAGE, HTTP500_BODY, RequestLog, TruthServer, read_log,
                                 spawn_truth_server)

pytestmark = pytest.mark.integration

IO_TIMEOUT_S = 10.0
MS = 1_000_000
# Sanity, not precision: a logged write instant this long before its bytes arrived is a bug.
MAX_LAG_NS = 1_000 * MS
MEDIAN_LAG_NS = 50 * MS
CHAT = {"model": "truth-model", "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 8, "stream": True}
COMPLETION = {"model": "truth-model", "prompt": "hi", "max_tokens": 8, "stream": True}
CONTINUOUS = {"stream_options": {"include_usage": True, "continuous_usage_stats": True}}
INCLUDE = {"stream_options": {"include_usage": True}}
BOM = b"\xef\xbb\xbf"


# -- a raw client that remembers when each byte arrived ----------------------------------------

@dataclass
class Wire:
    """One client connection: every byte received, and the instant each recv returned."""
    sock: socket.socket
    data: bytearray = field(default_factory=bytearray)
    ends: list[int] = field(default_factory=list)
    stamps: list[int] = field(default_factory=list)
    eof_ns: int | None = None

    local_port: int = 0

    @classmethod
    def connect(cls, port: int, host: str = "127.0.0.1") -> Wire:
        sock = socket.create_connection((host, port), timeout=IO_TIMEOUT_S)
        return cls(sock, local_port=sock.getsockname()[1])

    def post(self, path: str, body: dict[str, object] | bytes, headers: str = "") -> int:
        """Send a POST; return the instant just before the send."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: truth\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n{headers}\r\n")
        sent_ns = time.monotonic_ns()
        self.sock.sendall(head.encode() + data)
        return sent_ns

    def get(self, path: str) -> None:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: truth\r\n\r\n".encode())

    def recv(self) -> bool:
        """One recv; False at EOF (or a reset), whose instant is kept in eof_ns."""
        try:
            chunk = self.sock.recv(1 << 20)
        except ConnectionResetError:
            chunk = b""
        now_ns = time.monotonic_ns()
        if not chunk:
            self.eof_ns = now_ns
            return False
        self.data += chunk
        self.ends.append(len(self.data))
        self.stamps.append(now_ns)
        return True

    def need(self, size: int) -> bool:
        """Receive until `size` bytes are in; False when the connection ends first."""
        while len(self.data) < size:
            if not self.recv():
                return False
        return True

    def find(self, needle: bytes, start: int) -> int:
        """Index of needle at or after start, receiving as needed; -1 when the connection ends."""
        while (index := self.data.find(needle, start)) < 0:
            if not self.recv():
                return -1
        return index

    def arrival_ns(self, index: int) -> int:
        """When the byte at `index` arrived."""
        return self.stamps[bisect.bisect_right(self.ends, index)]

    def close(self) -> None:
        self.sock.close()


@dataclass
class Response:
    """Where one response lies in a Wire's bytes."""
    start: int
    interim: list[tuple[int, int, int]]  # (status, start, end) of each 1xx head
    status: int | None = None
    head: tuple[int, int] = (0, 0)
    headers: dict[str, str] = field(default_factory=dict)
    chunks: list[tuple[int, int, bytes]] = field(default_factory=list)  # (start, end, data)
    body: bytes = b""
    end: int = 0
    complete: bool = False

    @property
    def body_start(self) -> int:
        return self.head[1]


def read_response(wire: Wire, start: int = 0, until_done: bool = False) -> Response:
    """Parse the response at `start`, receiving as needed. With until_done, stop after the
    `data: [DONE]` chunk (keep-open never sends the end chunk)."""
    response = Response(start, [])
    pos = start
    while True:
        head_end = wire.find(b"\r\n\r\n", pos)
        if head_end < 0:
            response.end = len(wire.data)
            return response  # the connection ended without (the rest of) a head
        lines = bytes(wire.data[pos:head_end]).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        if 100 <= status < 200:
            response.interim.append((status, pos, head_end + 4))
            pos = head_end + 4
            continue
        break
    response.status, response.head = status, (pos, head_end + 4)
    response.headers = {name.lower(): value.strip()
                        for name, _, value in (line.partition(":") for line in lines[1:])}
    pos = head_end + 4
    if "content-length" in response.headers:
        end = pos + int(response.headers["content-length"])
        response.complete = wire.need(end)
        response.body, response.end = bytes(wire.data[pos:end]), end
        return response
    assert response.headers["transfer-encoding"] == "chunked"
    while True:
        line_end = wire.find(b"\r\n", pos)
        assert line_end >= 0, "connection ended inside a chunk size line"
        size = int(bytes(wire.data[pos:line_end]), 16)
        end = line_end + 2 + size + 2
        assert wire.need(end), "connection ended inside a chunk"
        if size == 0:
            response.complete, response.end = True, end
            return response
        data = bytes(wire.data[line_end + 2:end - 2])
        response.chunks.append((pos, end, data))
        pos = response.end = end
        if until_done and data == b"data: [DONE]\n\n":
            return response


def classify(data: bytes, first: bool) -> tuple[str, int, int | None]:
    """(kind, tokens, usage.completion_tokens) of one event, read independently of the server."""
    if first and data.startswith(BOM):
        data = data[len(BOM):]
    if len(data) > 1_000_000:
        return "malformed", 0, None
    lines = data.decode().rstrip("\n").split("\n")
    if "event: error" in lines:
        return "error", 0, None
    payload = "\n".join(line[len("data: "):] for line in lines if line.startswith("data: "))
    if payload == "[DONE]":
        return "done", 0, None
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):
        return "malformed", 0, None
    if not isinstance(obj, dict):
        return "malformed", 0, None
    if "error" in obj or obj.get("object") == "error":
        return "error", 0, None
    choices, usage = obj.get("choices"), obj.get("usage")
    if not isinstance(choices, list):
        return "malformed", 0, None
    usage_tokens = None
    if usage is not None:
        usage_tokens = usage.get("completion_tokens")
        if type(usage_tokens) is not int or not 0 <= usage_tokens < 2**31:
            return "malformed", 0, None
    if not choices:
        return "usage", 0, usage_tokens
    choice = choices[0]
    if "text" in choice:
        return "token", len(choice["text"].split()), usage_tokens
    delta = choice["delta"]
    if "role" in delta:
        return "role", 0, usage_tokens
    for name, kind in (("content", "content"), ("reasoning_content", "reasoning"),
                       ("reasoning", "reasoning")):
        if name in delta:
            return kind, len(delta[name].split()), usage_tokens
    (call,) = delta["tool_calls"]
    return "tool_call", len(call["function"]["arguments"].split()), usage_tokens


def check_against_log(wire: Wire, response: Response, record: RequestLog) -> list[int]:
    """Assert the bytes and instants agree with the record; return arrival - write_ns per event."""
    assert record.status == response.status
    assert [(i.status, i.bytes) for i in record.interim] == [
        (status, end - start) for status, start, end in response.interim]
    for interim, (_, _, end) in zip(record.interim, response.interim):
        assert wire.arrival_ns(end - 1) >= interim.before_ns >= record.head_read_ns
    assert record.head is not None
    head_start, head_end = response.head
    if "transfer-encoding" in response.headers:
        assert record.head.bytes == head_end - head_start
    else:
        assert record.head.bytes == response.end - head_start  # head and body in one write
    assert wire.arrival_ns(head_start) >= record.head.before_ns
    assert len(record.events) == len(response.chunks)
    lags = []
    for index, (event, (start, end, data)) in enumerate(zip(record.events, response.chunks)):
        assert (event.offset, event.bytes) == (start - response.body_start, end - start)
        assert classify(data, index == 0) == (event.kind, event.tokens, event.usage_tokens)
        assert sum(part.bytes for part in event.parts) == event.bytes
        assert (event.before_ns, event.write_ns) == (event.parts[0].before_ns,
                                                     event.parts[-1].write_ns)
        part_start = start
        for part in event.parts:
            # No byte of a write can arrive before the instant taken just before it.
            assert wire.arrival_ns(part_start) >= part.before_ns
            assert part.before_ns <= part.write_ns
            part_start += part.bytes
        if event.due_ns is not None:
            assert event.before_ns >= event.due_ns  # never early
        lags.append(wire.arrival_ns(end - 1) - event.write_ns)
    if record.complete_ns is not None:
        assert response.complete
        assert record.complete_ns >= max([record.head.write_ns]
                                         + [e.write_ns for e in record.events])
    if lags:
        assert max(lags) < MAX_LAG_NS
        assert statistics.median(lags) < MEDIAN_LAG_NS
    return lags


def api_path(server: TruthServer, shape: str, route: str, every: int = 1,
             **params: object) -> str:
    """The request path of a shape: route 'chat' or 'completions'."""
    return urlsplit(server.openai_url(shape, every, **params)).path + (
        "/chat/completions" if route == "chat" else "/completions")


def record_of(server: TruthServer, request_id: int) -> RequestLog:
    (record,) = [r for r in server.log(wait_for=request_id) if r.request_id == request_id]
    return record


def stream(server: TruthServer, path: str, body: dict[str, object]) -> tuple[Wire, Response,
                                                                           RequestLog]:
    """One request on a fresh connection, read to its end; the record it left."""
    wire = Wire.connect(server.port)
    wire.post(path, body)
    response = read_response(wire)
    record = record_of(server, int(response.headers["x-truth-request-id"]))
    assert (record.peer_port, record.index_on_connection) == (wire.local_port, 0)
    wire.close()
    return wire, response, record


def kinds(spec: str) -> list[tuple[str, int, int | None]]:
    """'role/0 content:3/4 done' -> [('role', 0, 0), ('content', 3, 4), ('done', 0, None)]."""
    out = []
    for item in spec.split():
        item, _, usage = item.partition("/")
        kind, _, tokens = item.partition(":")
        out.append((kind, int(tokens or 0), int(usage) if usage else None))
    return out


# -- every stream shape: the wire is what the log says ---------------------------------------

SHAPE_CASES = [
    ("content", {"n": 3}, "chat", CHAT, "role content:1 content:1 content:1 done"),
    ("content", {"n": 3}, "completions", COMPLETION, "token:1 token:1 token:1 done"),
    ("reasoning_content", {"n": 4, "reasoning_tokens": 2}, "chat", CHAT,
     "role reasoning:1 reasoning:1 content:1 content:1 done"),
    ("reasoning", {"n": 4, "reasoning_tokens": 3, "pattern": (2,)}, "chat", CHAT,
     "role reasoning:2 reasoning:1 content:1 done"),
    ("tool_calls", {"n": 3}, "chat", CHAT, "role tool_call:1 tool_call:1 tool_call:1 done"),
    ("multi", {"n": 10}, "chat", {**CHAT, **CONTINUOUS},
     "role/0 content:1/1 content:3/4 content:2/6 content:4/10 usage/10 done"),
    ("multi", {"n": 10}, "completions", {**COMPLETION, **INCLUDE},
     "token:1 token:3 token:2 token:4 usage/10 done"),
    ("multi", {"n": 6, "usage": "none"}, "chat", {**CHAT, **CONTINUOUS},
     "role content:1 content:3 content:2 done"),
    ("error", {"n": 5}, "chat", CHAT, "role content:1 content:1 error done"),
    ("error-object", {"n": 5}, "completions", COMPLETION, "token:1 token:1 error done"),
    ("error-event", {"n": 5, "after": 1}, "chat", CHAT, "role content:1 error done"),
    ("error-event", {"n": 5}, "completions", COMPLETION, "token:1 token:1 error done"),
    ("bom", {"n": 2}, "chat", CHAT, "role content:1 content:1 done"),
    ("bom", {"n": 2}, "completions", COMPLETION, "token:1 token:1 done"),
    ("interim-100", {"n": 2}, "completions", COMPLETION, "token:1 token:1 done"),
    ("interim-103", {"n": 2}, "chat", CHAT, "role content:1 content:1 done"),
    ("split", {"n": 3}, "chat", {**CHAT, **INCLUDE},
     "role content:1 content:1 content:1 usage/3 done"),
    ("split", {"n": 2, "at": (40,)}, "completions", COMPLETION, "token:1 token:1 done"),
    *[(shape, {"n": 3, "after": 1}, "chat", CHAT,
       "role content:1 malformed content:1 content:1 done")
      for shape in ("malformed-choices", "malformed-usage-str", "malformed-usage-big",
                    "malformed-deep-list", "malformed-deep-dict", "malformed-json",
                    "malformed-array", "malformed-number", "malformed-huge")],
    ("malformed-deep-dict", {"n": 2}, "completions", COMPLETION, "token:1 token:1 malformed done"),
    ("malformed-huge", {"n": 2, "after": 0}, "completions", COMPLETION,
     "malformed token:1 token:1 done"),
]


@pytest.mark.parametrize(("shape", "params", "route", "body", "expected"), SHAPE_CASES,
                         ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(SHAPE_CASES)])
def test_the_wire_is_what_the_log_says(truth_server: TruthServer, shape: str,
                                       params: dict[str, object], route: str,
                                       body: dict[str, object], expected: str) -> None:
    wire, response, record = stream(truth_server, api_path(truth_server, shape, route, **params),
                                    body)
    assert response.status == 200 and response.complete
    assert [(e.kind, e.tokens, e.usage_tokens) for e in record.events] == kinds(expected)
    check_against_log(wire, response, record)
    assert (record.shape, record.route, record.body) == (
        shape, "/v1/chat/completions" if route == "chat" else "/v1/completions", body)
    assert record.closed_by is None and record.complete_ns is not None
    interval_ns = round(record.params["interval_ms"] * MS)
    first_ns = round(record.params["first_ms"] * MS)
    timed = [e for e in record.events if e.due_ns is not None]
    # Absolute deadlines from the head: the plan cannot drift, whatever the writes did.
    assert [e.due_ns for e in timed] == [record.head.write_ns + first_ns + j * interval_ns
                                         for j in range(len(timed))]
    assert record.head.before_ns >= (record.interim[-1].write_ns if record.interim
                                     else record.body_read_ns) + record.params["head_ms"] * MS


def test_error_events_carry_vllm_bodies(truth_server: TruthServer) -> None:
    errors = {}
    for shape in ("error", "error-object", "error-event"):
        _, response, record = stream(truth_server, api_path(truth_server, shape, "chat"), CHAT)
        (data,) = [d for (_, _, d), e in zip(response.chunks, record.events) if e.kind == "error"]
        errors[shape] = data
    info = {"message": ERROR_MESSAGE, "type": "InternalServerError", "param": None, "code": 500}
    assert json.loads(errors["error"].removeprefix(b"data: ")) == {"error": info}
    assert json.loads(errors["error-object"].removeprefix(b"data: ")) == {"object": "error", **info}
    event_line, data_line = errors["error-event"].decode().strip().split("\n")
    assert event_line == "event: error"
    assert json.loads(data_line.removeprefix("data: ")) == {"message": ERROR_MESSAGE, "code": 500}


def test_bom_tool_calls_and_early_hints_bytes(truth_server: TruthServer) -> None:
    _, response, _ = stream(truth_server, api_path(truth_server, "bom", "chat"), CHAT)
    assert response.chunks[0][2].startswith(BOM + b"data: {")
    assert not response.chunks[1][2].startswith(BOM)

    _, response, _ = stream(truth_server, api_path(truth_server, "tool_calls", "chat", n=2), CHAT)
    deltas = [json.loads(d.removeprefix(b"data: "))["choices"][0]["delta"]
              for _, _, d in response.chunks[1:-1]]
    first, second = deltas[0]["tool_calls"][0], deltas[1]["tool_calls"][0]
    assert (first["id"], first["type"], first["function"]["name"]) == (
        "chatcmpl-tool-truth", "function", "get_weather")
    assert set(second) == {"index", "function"} and set(second["function"]) == {"arguments"}

    wire, response, record = stream(truth_server, api_path(truth_server, "interim-103", "chat",
                                                           head_ms=20), CHAT)
    ((status, start, end),) = response.interim
    hints = bytes(wire.data[start:end]).decode()
    assert hints.startswith("HTTP/1.1 103 Early Hints\r\n") and hints.count("\r\nlink: <") == 2
    assert record.head is not None and status == 103
    assert record.head.before_ns - record.interim[0].write_ns >= 20 * MS
    # On the wire too: the 200 came after the pause, and in another segment than the 103.
    assert wire.arrival_ns(response.head[0]) >= record.interim[0].write_ns + 20 * MS
    assert wire.arrival_ns(response.head[0]) > wire.arrival_ns(end - 1)


def test_split_writes_each_event_in_parts(truth_server: TruthServer) -> None:
    wire, response, record = stream(truth_server, api_path(truth_server, "split", "chat", n=3,
                                                           part_gap_ms=3), CHAT)
    check_against_log(wire, response, record)
    for event in record.events:
        assert [p.bytes for p in event.parts] == [1, event.bytes - 4, 3]  # at=1,-3
        for index, part in enumerate(event.parts):
            assert part.before_ns >= event.parts[0].before_ns + index * 3 * MS
    # The client saw the last part of each event arrive at least one gap after the first byte.
    for event, (start, end, _) in zip(record.events, response.chunks):
        assert wire.arrival_ns(end - 1) >= event.parts[0].before_ns + 6 * MS


def test_configured_gaps_are_honoured_on_the_wire(truth_server: TruthServer) -> None:
    wire = Wire.connect(truth_server.port)
    sent_ns = wire.post(api_path(truth_server, "content", "completions", n=6, head_ms=15,
                                 first_ms=30, interval_ms=20), COMPLETION)
    response = read_response(wire)
    record = record_of(truth_server, 1)
    lags = check_against_log(wire, response, record)
    token_ends = [end - 1 for start, end, data in response.chunks if data != b"data: [DONE]\n\n"]
    # Causal lower bounds: the server waited after the request arrived, which is after we sent.
    assert wire.arrival_ns(response.head[0]) - sent_ns >= 15 * MS
    assert wire.arrival_ns(token_ends[0]) - sent_ns >= 45 * MS
    assert wire.arrival_ns(token_ends[-1]) - sent_ns >= 145 * MS
    # Generous upper bounds: the stream did not drift far beyond its plan.
    assert wire.arrival_ns(token_ends[-1]) - sent_ns < 145 * MS + 500 * MS
    span_ns = wire.arrival_ns(token_ends[-1]) - wire.arrival_ns(token_ends[0])
    assert 100 * MS - 25 * MS < span_ns < 100 * MS + 500 * MS
    lateness = [e.write_ns - e.due_ns for e in record.events if e.due_ns is not None]
    assert statistics.median(lateness) < 20 * MS
    assert min(lags) > -MEDIAN_LAG_NS


# -- connection behaviours -------------------------------------------------------------------

def test_keep_open_holds_the_connection_after_done(truth_server: TruthServer) -> None:
    wire = Wire.connect(truth_server.port)
    wire.post(api_path(truth_server, "keep-open", "chat", n=2), CHAT)
    response = read_response(wire, until_done=True)
    assert not response.complete
    wire.sock.settimeout(0.5)
    with pytest.raises(TimeoutError):  # neither a byte (an end chunk) nor EOF
        wire.recv()
    assert truth_server.log() == []  # held, so not finished
    wire.close()
    (record,) = truth_server.log(wait_for=1)
    check_against_log(wire, response, record)
    assert record.events[-1].kind == "done" and record.complete_ns is None
    assert record.closed_by == "client" and record.close_ns is not None
    assert record.close_ns - record.events[-1].before_ns >= 500 * MS  # we waited 0.5 s


def test_keep_open_closes_after_its_hold(truth_server: TruthServer) -> None:
    wire = Wire.connect(truth_server.port)
    wire.post(api_path(truth_server, "keep-open", "completions", n=2, hold_s=0.3), COMPLETION)
    response = read_response(wire, until_done=True)
    assert not wire.recv(), "the server sent bytes after [DONE]"
    (record,) = truth_server.log(wait_for=1)
    assert len(wire.data) == response.end  # no end chunk ever came
    assert record.closed_by == "server" and record.complete_ns is None
    assert record.close_ns is not None and wire.eof_ns is not None
    assert record.close_ns - record.events[-1].write_ns >= 300 * MS
    assert wire.eof_ns - record.events[-1].write_ns >= 300 * MS  # the FIN came after the hold
    wire.close()


def test_keep_open_is_held_until_the_server_stops() -> None:
    with TruthServer() as server:
        wire = Wire.connect(server.port)
        wire.post(api_path(server, "keep-open", "chat", n=1), CHAT)
        read_response(wire, until_done=True)
        stop_started = time.monotonic()
    assert time.monotonic() - stop_started < 5.0
    (record,) = server.log()
    assert record.closed_by == "server" and record.complete_ns is None
    assert not wire.recv()
    wire.close()


def test_idle_close_closes_an_idle_keep_alive_connection(truth_server: TruthServer) -> None:
    wire = Wire.connect(truth_server.port)
    wire.post(api_path(truth_server, "idle-close", "chat", n=2, idle_ms=150), CHAT)
    response = read_response(wire)
    assert response.complete and response.headers["connection"] == "keep-alive"
    assert not wire.recv() and wire.eof_ns is not None  # FIN, no more bytes
    (record,) = truth_server.log(wait_for=1)
    check_against_log(wire, response, record)
    assert record.complete_ns is not None and record.close_ns is not None
    assert record.closed_by == "server"
    assert record.close_ns - record.complete_ns >= 150 * MS
    assert wire.eof_ns - record.complete_ns >= 150 * MS
    # The next request on it finds it closed: nothing is served, and the server saw nothing.
    with pytest.raises(OSError):
        for _ in range(3):
            wire.post(api_path(truth_server, "content", "chat"), CHAT)
            time.sleep(0.05)
    assert len(truth_server.log()) == 1
    wire.close()


def test_idle_close_serves_a_request_that_comes_in_time(truth_server: TruthServer) -> None:
    wire = Wire.connect(truth_server.port)
    path = api_path(truth_server, "idle-close", "completions", n=1, idle_ms=3000)
    wire.post(path, COMPLETION)
    first = read_response(wire)
    wire.post(path, COMPLETION)
    second = read_response(wire, start=first.end)
    assert first.complete and second.complete
    r1 = truth_server.log(wait_for=1)[0]
    assert r1.closed_by is None
    wire.close()
    r1, r2 = truth_server.log(wait_for=2)
    assert r1.connection_id == r2.connection_id
    assert (r1.index_on_connection, r2.index_on_connection) == (0, 1)
    assert r2.closed_by == "client"
    assert r1.complete_ns is not None and r2.first_byte_ns >= r1.complete_ns


def test_drop_and_the_resend_counter(truth_server: TruthServer) -> None:
    # every2-drop: the 2nd request of the path is read and dropped (FIN, no byte); the client
    # sends it again on a new connection, as libcurl does for a reused connection.
    path = api_path(truth_server, "drop", "chat", every=2, n=1)
    body = {**CHAT, "messages": [{"role": "user", "content": "unique 1"}]}
    wire = Wire.connect(truth_server.port)
    wire.post(path, {**CHAT, "messages": [{"role": "user", "content": "unique 0"}]})
    first = read_response(wire)
    wire.post(path, body)
    dropped = read_response(wire, start=first.end)
    assert first.complete and dropped.status is None and len(wire.data) == first.end
    wire.close()
    _, again, _ = stream(truth_server, path, body)
    assert again.status == 200 and again.complete
    r1, r2, r3 = truth_server.log(wait_for=3)
    assert [r.shape for r in (r1, r2, r3)] == ["content", "drop", "content"]
    assert [r.body_seen for r in (r1, r2, r3)] == [1, 1, 2]
    assert r2.status is None and r2.head is None and r2.events == []
    assert r2.closed_by == "server" and r2.close_ns is not None
    assert (r2.connection_id, r2.index_on_connection) == (r1.connection_id, 1)
    assert r3.connection_id != r2.connection_id
    wire = Wire.connect(truth_server.port)
    wire.get("/health")
    assert read_response(wire).status == 200
    wire.close()
    assert truth_server.log(wait_for=4)[3].body_seen is None  # no body, nothing to count


def test_http_errors_keep_the_connection(truth_server: TruthServer) -> None:
    wire = Wire.connect(truth_server.port)
    wire.post(api_path(truth_server, "http404", "chat"), {**CHAT, "model": "x"})
    not_found = read_response(wire)
    wire.post(api_path(truth_server, "http500", "completions"), COMPLETION)
    failed = read_response(wire, start=not_found.end)
    wire.close()
    assert (not_found.status, failed.status) == (404, 500)
    assert json.loads(not_found.body) == {"error": {
        "message": "The model `x` does not exist.", "type": "NotFoundError", "param": None,
        "code": 404}}
    assert failed.headers["content-type"].startswith("text/plain")
    assert failed.body.decode() == HTTP500_BODY and failed.body.count(b"\n") > 2
    assert failed.body.split(b"\n")[0] == b"Internal Server Error"
    r1, r2 = truth_server.log(wait_for=2)
    for response, record in ((not_found, r1), (failed, r2)):
        check_against_log(wire, response, record)
        assert record.complete_ns == record.head.write_ns and record.closed_by is None
    assert r2.index_on_connection == 1


def test_every_k_mixes_the_shape_with_normal_streams(truth_server: TruthServer) -> None:
    wire = Wire.connect(truth_server.port)
    path = api_path(truth_server, "error", "completions", every=3, n=4, interval_ms=1)
    start, responses = 0, []
    for _ in range(6):
        wire.post(path, COMPLETION)
        responses.append(read_response(wire, start=start))
        start = responses[-1].end
    wire.close()
    records = truth_server.log(wait_for=6)
    assert [r.shape for r in records] == ["content", "content", "error"] * 2
    assert [r.ordinal for r in records] == [1, 2, 3, 4, 5, 6]
    assert all(r.params["n"] == 4 and r.params["interval_ms"] == 1 for r in records)
    for response, record in zip(responses, records):
        check_against_log(wire, response, record)
        read = [classify(data, False)[0] for _, _, data in response.chunks]
        assert ("error" in read) == (record.shape == "error")


def test_expect_100_continue_is_answered_before_the_body(truth_server: TruthServer) -> None:
    wire = Wire.connect(truth_server.port)
    data = json.dumps(COMPLETION).encode()
    wire.sock.sendall(f"POST {api_path(truth_server, 'content', 'completions', n=1)} HTTP/1.1\r\n"
                      f"Host: truth\r\nExpect: 100-continue\r\nContent-Length: {len(data)}\r\n"
                      "\r\n".encode())
    assert wire.find(b"\r\n\r\n", 0) > 0  # the 100 came although the body was not sent
    assert wire.data.startswith(b"HTTP/1.1 100 Continue\r\n")
    wire.sock.sendall(data)
    response = read_response(wire)
    (record,) = truth_server.log(wait_for=1)
    check_against_log(wire, response, record)
    assert [i.status for i in record.interim] == [100]
    assert record.body_read_ns > record.interim[0].write_ns
    wire.close()


def test_concurrent_requests_join_by_peer_port(truth_server: TruthServer) -> None:
    path = api_path(truth_server, "multi", "chat", n=6, interval_ms=2)
    seen: dict[tuple[int, int], tuple[int, Wire, Response]] = {}
    lock = threading.Lock()

    def client() -> None:
        wire = Wire.connect(truth_server.port)
        start = 0
        for index in range(2):
            wire.post(path, CHAT)
            response = read_response(wire, start=start)
            start = response.end
            with lock:
                seen[(wire.local_port, index)] = (
                    int(response.headers["x-truth-request-id"]), wire, response)
        wire.close()

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(IO_TIMEOUT_S * 2)
    records = truth_server.log(wait_for=16)
    assert len(seen) == 16 and len({r.connection_id for r in records}) == 8
    for record in records:
        request_id, wire, response = seen[(record.peer_port, record.index_on_connection)]
        assert record.request_id == request_id
        check_against_log(wire, response, record)


def test_bad_requests_fail_loudly(truth_server: TruthServer) -> None:
    with pytest.raises(ValueError, match="unknown shape"):
        truth_server.openai_url("nope")
    with pytest.raises(ValueError, match="no parameter"):
        truth_server.openai_url("content", hold_s=1)
    with pytest.raises(ValueError, match="parameter n"):
        truth_server.openai_url("content", n=0)
    cases: list[tuple[str, dict[str, object] | bytes, int, str]] = [
        ("/content;n=x/v1/completions", COMPLETION, 400, "parameter n"),
        ("/reasoning/v1/completions", COMPLETION, 400, "chat/completions only"),
        ("/content/v1/completions", {**COMPLETION, "stream": False}, 400, "only streams"),
        ("/nope/v1/completions", COMPLETION, 404, "no route"),
    ]
    cases.append(("/content/v1/chat/completions", b"not json", 400, "only streams"))
    for path, body, status, message in cases:
        wire = Wire.connect(truth_server.port)
        wire.post(path, body)
        response = read_response(wire)
        wire.close()
        assert response.status == status
        assert message in json.loads(response.body)["error"]["message"]
    records = truth_server.log(wait_for=len(cases))
    assert [r.status for r in records] == [status for _, _, status, _ in cases]
    assert (records[-1].body, records[-1].body_is_json) == ("not json", False)
    assert (records[0].body, records[0].body_is_json) == (COMPLETION, True)


def test_stop_ends_a_stream_in_flight_promptly() -> None:
    with TruthServer() as server:
        wire = Wire.connect(server.port)
        wire.post(api_path(server, "content", "chat", first_ms=60_000), CHAT)
        assert wire.find(b"data: ", 0) > 0  # the role chunk: the stream is under way
        stop_started = time.monotonic()
    assert time.monotonic() - stop_started < 5.0
    (record,) = server.log()
    assert [e.kind for e in record.events] == ["role"]
    assert record.closed_by == "server" and record.complete_ns is None
    wire.close()


def test_another_host_ipv6() -> None:
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            pass
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with TruthServer(host="::1") as server:
        assert server.base_url == f"http://[::1]:{server.port}"
        assert server.openai_url("bom", n=2) == f"http://[::1]:{server.port}/bom;n=2/v1"
        wire = Wire.connect(server.port, "::1")
        wire.post(api_path(server, "bom", "chat", n=2), CHAT)
        response = read_response(wire)
        wire.close()
        (record,) = server.log(wait_for=1)
    assert (record.peer_host, record.peer_port) == ("::1", wire.local_port)
    check_against_log(wire, response, record)


# -- the log in both forms -------------------------------------------------------------------

def test_jsonl_log_equals_the_in_process_log(tmp_path: Path) -> None:
    log_path = tmp_path / "truth.jsonl"
    with TruthServer(log_path=log_path) as server:
        for shape, route, params in (("split", "chat", {"n": 2}),
                                     ("interim-103", "completions", {"pattern": (3, 1)}),
                                     ("malformed-usage-big", "chat", {"n": 2}),
                                     ("http404", "chat", {})):
            stream(server, api_path(server, shape, route, **params),
                   CHAT if route == "chat" else COMPLETION)
        records = server.log(wait_for=4)
    assert sorted(read_log(log_path), key=lambda r: r.request_id) == records
    assert all(RequestLog.from_json(r.to_json()) == r for r in records)


def test_subprocess_form(tmp_path: Path) -> None:
    log_path = tmp_path / "truth.jsonl"
    with spawn_truth_server(log_path) as base_url:
        parts = urlsplit(base_url)
        assert parts.hostname == "127.0.0.1" and parts.port
        wire = Wire.connect(parts.port)
        wire.post("/multi;n=4/v1/chat/completions", {**CHAT, **CONTINUOUS})
        response = read_response(wire)
        wire.get("/health")
        health = read_response(wire, start=response.end)
        wire.close()
        assert response.complete and health.status == 200
        deadline = time.monotonic() + IO_TIMEOUT_S
        while len(log_path.read_text().splitlines()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)  # the server appends a line as each request finishes
        streamed, checked = read_log(log_path)
    for line in log_path.read_text().splitlines():
        json.loads(line)
    assert (streamed.peer_port, streamed.index_on_connection) == (wire.local_port, 0)
    assert (checked.peer_port, checked.index_on_connection) == (wire.local_port, 1)
    assert (streamed.shape, checked.route, checked.shape) == ("multi", "/health", None)
    check_against_log(wire, response, streamed)
    assert [e.kind for e in streamed.events] == ["role", "content", "content", "usage", "done"]

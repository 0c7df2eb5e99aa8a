"""A raw-socket HTTP/1.1 fault server: OpenAI-style endpoints that fail in exact, chosen ways.

The behaviour is chosen by the first path segment, so a client pointed at the base URL
`http://127.0.0.1:PORT/<fault>/v1` hits `/<fault>/v1/completions`; `/<fault>/v1/models`
always answers normally, so clients that resolve the model first still reach the fault.
No HTTP framework sits in between: every byte and every close is what the fault says.

Faults (path prefix -> behaviour on the completions endpoints):
  ok                   normal SSE stream (vLLM framing, chunked), 4 tokens, `data: [DONE]`
  reset-before-headers read the request, then RST (SO_LINGER 0)
  reset-mid-stream     headers + 2 token events, then RST
  stall                headers, then silence for STALL_S (cut short when the server stops)
  http429, http500     OpenAI-style JSON error, Content-Length, connection kept alive
  bad-json             first event valid, second event invalid JSON, then `[DONE]`
  no-done              tokens, then a clean end of the chunked body without `[DONE]`
  truncated-chunked    a chunk cut short, then FIN
  trickle              a valid short stream, body written one byte at a time
Also `/health` (200) and `/v1/models` without a prefix.

A prefix `every<K>-<fault>` (e.g. `/every3-reset-mid-stream/v1`) serves the fault to every K-th
request of a path (the K-th, 2K-th, ..., counted per path) and a normal stream to the others,
so one run mixes exact faults with successes: `openai_url(fault, every=K)`.
Redirects (unprefixed): `/redirect-self` -> `http://127.0.0.1:PORT/echo` (the same host),
`/redirect-localhost` -> `http://localhost:PORT/echo` (the same server under another host name);
`/echo` answers 200. The headers of every request are kept per path (`headers_seen`).
`answer(path, status, body)` makes a path answer exactly that (a hostile /metrics or
/v1/models body, an error that quotes a secret); with `stall_after=K` it answers so K times,
then stalls (the head never comes) for STALL_S.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from tests.servers.http1 import (DONE_EVENT, LAST_CHUNK, MAX_HEADER_BYTES, Request, chunk,
                                 json_response, models_json, parse_head, split_prefix, sse_event,
                                 sse_head, status_head)
from tests.servers.ports import LOOPBACK, refused_port

__all__ = ["fault_server", "refused_url"]

MODEL_ID = "fault-model"
TOKENS = (" Hello", " from", " the", " faults")
STALL_S = 30.0
TRICKLE_GAP_S = 0.004
# Give the client time to read what was sent before the RST: on Linux an RST can discard
# data still unread in the client's receive queue, which would make the fault ambiguous.
PRE_RESET_PAUSE_S = 0.05
START_DEADLINE_S = 5.0
STOP_DEADLINE_S = 5.0

FAULTS = (
    "ok",
    "reset-before-headers",
    "reset-mid-stream",
    "stall",
    "http429",
    "http500",
    "bad-json",
    "no-done",
    "truncated-chunked",
    "trickle",
)

class _Reset(Exception):
    """Raised by a handler after it aborted the connection: stop serving this socket."""


def _stream_events(chat: bool, body: dict[str, object]) -> list[bytes]:
    """The SSE events of a normal 4-token stream, shaped like vLLM's (without [DONE])."""
    created = int(time.time())
    common = {
        "id": "chatcmpl-fault" if chat else "cmpl-fault",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": created,
        "model": MODEL_ID,
    }

    def choice(text: str, finish: str | None) -> dict[str, object]:
        content = {"delta": {"content": text}} if chat else {"text": text}
        return {"index": 0, **content, "logprobs": None, "finish_reason": finish, "stop_reason": None}

    events = []
    if chat:
        # vLLM opens a chat stream with a role-only chunk, which carries no token.
        role = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                "finish_reason": None}
        events.append(sse_event({**common, "choices": [role]}))
    events += [sse_event({**common, "choices": [choice(token, None)]}) for token in TOKENS]
    events.append(sse_event({**common, "choices": [choice("", "length")]}))
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        usage = {"prompt_tokens": 5, "completion_tokens": len(TOKENS),
                 "total_tokens": 5 + len(TOKENS)}
        events.append(sse_event({**common, "choices": [], "usage": usage}))
    return events


def _completion_json(chat: bool) -> dict[str, object]:
    text = "".join(TOKENS)
    choice: dict[str, object] = (
        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
        if chat
        else {"index": 0, "text": text, "finish_reason": "length"}
    )
    return {
        "id": "chatcmpl-fault" if chat else "cmpl-fault",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": MODEL_ID,
        "choices": [choice],
        "usage": {"prompt_tokens": 5, "completion_tokens": len(TOKENS),
                  "total_tokens": 5 + len(TOKENS)},
    }


def _compact_events(chat: bool) -> list[bytes]:
    """A minimal valid stream: trickled byte by byte it must stay well under 2 s."""
    if chat:
        return [sse_event({"choices": [{"delta": {"content": t}}]}) for t in TOKENS]
    return [sse_event({"choices": [{"text": t}]}) for t in TOKENS]


def _error_json(status: int) -> dict[str, object]:
    if status == 429:
        return {"error": {"message": "Rate limit reached for requests", "type": "requests",
                          "param": None, "code": "rate_limit_exceeded"}}
    return {"error": {"message": "The server had an error while processing your request.",
                      "type": "server_error", "param": None, "code": None}}


REDIRECTS = {"/redirect-self": LOOPBACK, "/redirect-localhost": "localhost"}


class FaultServer:
    """The fault server running on its own event loop in a background thread.

    `requests` counts requests per path (query string dropped), `connections` counts
    accepted TCP connections, so tests can assert retries and connection reuse.
    """

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-server",
                                        daemon=True)
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._lock = threading.Lock()
        self._requests: collections.Counter[str] = collections.Counter()
        self._headers: collections.defaultdict[str, list[dict[str, str]]] = collections.defaultdict(list)
        self._connections = 0
        #: path -> (status, content type, body, answers before it stalls or None)
        self._answers: dict[str, tuple[int, str, bytes, int | None]] = {}
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self.port = future.result(timeout=START_DEADLINE_S)

    def stop(self) -> None:
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        try:
            future.result(timeout=STOP_DEADLINE_S)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=STOP_DEADLINE_S)
            if not self._thread.is_alive():
                self._loop.close()

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._serve_connection, LOOPBACK, 0,
                                                  limit=MAX_HEADER_BYTES)
        return self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        # Handlers (a stall, an open keep-alive connection) are cancelled rather than awaited:
        # shutdown must be prompt whatever the clients are doing.
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await self._server.wait_closed()

    # -- what tests read ---------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def openai_url(self, fault: str = "ok", every: int = 1) -> str:
        """The OpenAI base URL for a fault: openai_url('stall') -> http://127.0.0.1:P/stall/v1;
        openai_url('stall', every=3) -> http://127.0.0.1:P/every3-stall/v1."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        return f"{self.base_url}/{fault if every == 1 else f'every{every}-{fault}'}/v1"

    def headers_seen(self, path: str) -> list[dict[str, str]]:
        """The headers (names lower-cased) of every request to a path, in arrival order."""
        with self._lock:
            return [dict(h) for h in self._headers[path]]

    @property
    def requests(self) -> dict[str, int]:
        """A snapshot of requests received per path."""
        with self._lock:
            return dict(self._requests)

    def request_count(self, path: str) -> int:
        with self._lock:
            return self._requests[path]

    @property
    def connections(self) -> int:
        with self._lock:
            return self._connections

    def answer(self, path: str, status: int = 200, body: bytes = b"", content_type: str = "text/plain",
               stall_after: int | None = None) -> None:
        """From now on `path` (without its query) answers `status` with `body`; after
        `stall_after` such answers (counted from the path's first request) it stalls instead."""
        with self._lock:
            self._answers[path] = (status, content_type, body, stall_after)

    def reset_counts(self) -> None:
        with self._lock:
            self._requests.clear()
            self._headers.clear()
            self._connections = 0

    # -- HTTP ----------------------------------------------------------------------

    async def _serve_connection(self, reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        with self._lock:
            self._connections += 1
        try:
            while True:
                request = await self._read_request(reader, writer)
                if request is None:
                    break
                with self._lock:
                    self._requests[request.path] += 1
                    # Taken under the lock, so concurrent requests each get their own ordinal.
                    ordinal = self._requests[request.path]
                    self._headers[request.path].append(request.headers)
                await self._respond(request, writer, ordinal)
                if not request.keep_alive:
                    break
        except (_Reset, ConnectionError, ValueError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError):
            # A reset we made, a client that went away, or a request we cannot parse:
            # all end this connection and nothing else.
            pass
        except asyncio.CancelledError:
            # Only _shutdown cancels handlers; ending quietly keeps asyncio from logging the
            # cancellation as an error of the connection callback.
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> Request | None:
        """Parse one request; None when the client closed the connection between requests."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            return None
        request = parse_head(head)
        if request.expects_continue:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        length = request.content_length
        request.body = await reader.readexactly(length) if length else b""
        return request

    async def _respond(self, request: Request, writer: asyncio.StreamWriter, ordinal: int) -> None:
        fault, every, rest = split_prefix(request.path, FAULTS)
        keep = request.keep_alive
        with self._lock:
            answer = self._answers.get(request.path)
        if answer is not None and answer[3] is not None and ordinal > answer[3]:
            await asyncio.sleep(STALL_S)
            raise _Reset
        if answer is not None:
            status, content_type, body, _ = answer
            writer.write(status_head(status, [("content-type", content_type), ("content-length", str(len(body))),
                                              ("connection", "keep-alive" if keep else "close")]))
            for start in range(0, len(body), 1 << 20):
                writer.write(body[start : start + (1 << 20)])
                await writer.drain()
        elif fault is None and rest in REDIRECTS:
            location = f"http://{REDIRECTS[rest]}:{self.port}/echo"
            writer.write(status_head(302, [("location", location), ("content-length", "0")]))
        elif fault is None and rest == "/echo":
            writer.write(status_head(200, [("content-length", "3")]) + b"ok\n")
        elif rest == "/v1/models":
            writer.write(json_response(200, models_json(MODEL_ID), keep))
        elif fault is None and rest == "/health":
            writer.write(status_head(200, [("content-length", "0")]))
        elif rest not in ("/v1/completions", "/v1/chat/completions"):
            writer.write(json_response(404, {"error": {"message": f"no route {request.path}",
                                                       "type": "not_found"}}, keep))
        else:
            if ordinal % every:
                fault = "ok"
            await self._completion(fault or "ok", rest == "/v1/chat/completions", request, writer)
        await writer.drain()

    async def _completion(self, fault: str, chat: bool, request: Request,
                          writer: asyncio.StreamWriter) -> None:
        keep = request.keep_alive
        body = request.json_body()
        if fault == "ok":
            if body.get("stream") is False:
                writer.write(json_response(200, _completion_json(chat), keep))
                return
            writer.write(sse_head(keep))
            for event in _stream_events(chat, body):
                writer.write(chunk(event))
                await writer.drain()
            writer.write(chunk(DONE_EVENT) + LAST_CHUNK)
        elif fault == "reset-before-headers":
            await _reset(writer)
        elif fault == "reset-mid-stream":
            writer.write(sse_head(keep))
            events = _stream_events(chat, body)
            token_events = events[1:3] if chat else events[:2]
            for event in token_events:
                writer.write(chunk(event))
            await writer.drain()
            await asyncio.sleep(PRE_RESET_PAUSE_S)
            await _reset(writer)
        elif fault == "stall":
            writer.write(sse_head(keep))
            await writer.drain()
            await asyncio.sleep(STALL_S)
            # A client that waited this long gets a clean close, never a late stream.
            raise _Reset
        elif fault in ("http429", "http500"):
            status = 429 if fault == "http429" else 500
            retry = [("retry-after", "1")] if status == 429 else []
            writer.write(json_response(status, _error_json(status), keep, retry))
        elif fault == "bad-json":
            first = _stream_events(chat, body)[1 if chat else 0]
            broken = b'data: {"choices": [{"index": 0, "text": "oops"\n\n'
            writer.write(sse_head(keep) + chunk(first) + chunk(broken) + chunk(DONE_EVENT)
                         + LAST_CHUNK)
        elif fault == "no-done":
            writer.write(sse_head(keep))
            for event in _stream_events(chat, body):
                writer.write(chunk(event))
            writer.write(LAST_CHUNK)
        elif fault == "truncated-chunked":
            first = _stream_events(chat, body)[1 if chat else 0]
            cut = chunk(first)[: len(chunk(first)) // 2]
            writer.write(sse_head(keep) + chunk(first) + cut)
            await writer.drain()
            writer.close()  # FIN, not RST: the client must notice the missing bytes itself
            raise _Reset
        elif fault == "trickle":
            writer.write(sse_head(keep))
            await writer.drain()
            wire = b"".join(chunk(e) for e in [*_compact_events(chat), DONE_EVENT]) + LAST_CHUNK
            for i in range(len(wire)):
                if i:
                    await asyncio.sleep(TRICKLE_GAP_S)
                writer.write(wire[i : i + 1])
                await writer.drain()


async def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0 so the kernel sends RST instead of FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
    raise _Reset


@contextlib.contextmanager
def run_fault_server() -> Iterator[FaultServer]:
    """Start a fault server on a free loopback port; stop it (prompt, even mid-stall) on exit."""
    server = FaultServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    """A fresh fault server per test, so request and connection counts start at zero."""
    with run_fault_server() as server:
        yield server


@contextlib.contextmanager
def refused_base_url() -> Iterator[str]:
    """An http://127.0.0.1:PORT URL where connects are refused, valid for the block's duration."""
    with refused_port() as port:
        yield f"http://{LOOPBACK}:{port}"


@pytest.fixture
def refused_url() -> Iterator[str]:
    """http://127.0.0.1:PORT with nothing listening: every connect gets ECONNREFUSED."""
    with refused_base_url() as url:
        yield url

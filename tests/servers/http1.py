"""HTTP/1.1 and SSE wire pieces shared by the raw-socket test servers (faults.py, truth.py).

Request heads are parsed here, responses are framed here (status line, chunked transfer
encoding, vLLM's `data: {json}\\n\\n` events), and the `/<prefix>/v1/...` path scheme that picks
a server's behaviour per request is split here; the servers own only their behaviours.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Container, Iterable
from dataclasses import dataclass

REASONS = {100: "Continue", 103: "Early Hints", 200: "OK", 302: "Found", 400: "Bad Request", 401: "Unauthorized",
           404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error"}
MAX_HEADER_BYTES = 64 * 1024


@dataclass
class Request:
    method: str
    #: the request target without its query string
    path: str
    #: names lower-cased
    headers: dict[str, str]
    body: bytes

    def json_body(self) -> dict[str, object]:
        """The body as a JSON object; {} when it is empty, not JSON, or not an object."""
        try:
            parsed = json.loads(self.body or b"{}")
        except (ValueError, RecursionError):
            return {}
        return parsed if isinstance(parsed, dict) else {}

    @property
    def keep_alive(self) -> bool:
        return self.headers.get("connection", "").lower() != "close"

    @property
    def content_length(self) -> int:
        return int(self.headers.get("content-length", "0"))

    @property
    def expects_continue(self) -> bool:
        return self.headers.get("expect", "").lower() == "100-continue"


def parse_head(head: bytes) -> Request:
    """A Request (body still empty) from the bytes of a request head, up to its blank line.

    Raises ValueError on a request line that is not `METHOD TARGET VERSION`.
    """
    request_line, *header_lines = head.decode("latin-1").split("\r\n")
    method, target, _version = request_line.split(" ", 2)
    headers: dict[str, str] = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return Request(method, target.split("?", 1)[0], headers, b"")


def status_head(status: int, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """A status line and header block, blank line included."""
    lines = [f"HTTP/1.1 {status} {REASONS[status]}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _connection(keep_alive: bool) -> tuple[str, str]:
    return ("connection", "keep-alive" if keep_alive else "close")


def json_response(status: int, payload: object, keep_alive: bool,
                  extra_headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """A whole JSON response (head and body) with Content-Length."""
    body = json.dumps(payload).encode()
    headers = [("content-type", "application/json"), ("content-length", str(len(body))),
               _connection(keep_alive), *extra_headers]
    return status_head(status, headers) + body


def sse_head(keep_alive: bool, extra_headers: Iterable[tuple[str, str]] = ()) -> bytes:
    """The head of a 200 event stream with chunked transfer encoding, as uvicorn sends it."""
    return status_head(200, [("content-type", "text/event-stream; charset=utf-8"),
                             ("transfer-encoding", "chunked"), _connection(keep_alive),
                             *extra_headers])


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
DONE_EVENT = b"data: [DONE]\n\n"


def sse_event(payload: object) -> bytes:
    """One SSE event carrying compact JSON, in vLLM's framing."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def models_json(model_id: str) -> dict[str, object]:
    """A /v1/models answer listing one model, shaped like vLLM's."""
    return {
        "object": "list",
        "data": [{"id": model_id, "object": "model", "created": int(time.time()),
                  "owned_by": "netbench", "root": model_id, "parent": None,
                  "max_model_len": 2048}],
    }


_EVERY_PREFIX = re.compile(r"every([1-9][0-9]*)-(.+)")


def split_prefix(path: str, known: Container[str]) -> tuple[str | None, int, str]:
    """Split a behaviour prefix off a path: (behaviour segment, every K, the rest).

    '/stall/v1/completions' -> ('stall', 1, '/v1/completions'); '/every3-split;at=1/v1/models'
    -> ('split;at=1', 3, '/v1/models'). The segment counts only when its name (the part before
    any ';') is in `known`; otherwise the path is unprefixed: (None, 1, path).
    """
    parts = path.split("/", 2)
    if len(parts) == 3:
        match = _EVERY_PREFIX.fullmatch(parts[1])
        segment, every = (match.group(2), int(match.group(1))) if match else (parts[1], 1)
        if segment.split(";", 1)[0] in known:
            return segment, every, "/" + parts[2]
    return None, 1, path

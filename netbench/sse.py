"""Incremental Server-Sent Events parsing, and what an OpenAI-style stream event means.

`SSEParser` is fed the body chunks exactly as the write callback receives them (split at
any byte) and yields each complete event's data. `interpret` decides whether an event's
data is a token (a non-empty text or content delta), the end of the stream (`[DONE]`),
something else (a role-only chunk, an empty delta, a usage chunk) or malformed JSON.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass


class SSEParser:
    """Splits a byte stream into SSE events (WHATWG rules: LF, CRLF or CR line ends)."""

    __slots__ = ("_pending", "_data_lines", "_skip_lf")

    def __init__(self) -> None:
        self._pending = b""
        self._data_lines: list[bytes] = []
        self._skip_lf = False

    def feed(self, chunk: bytes) -> list[bytes]:
        """Consume a chunk; return the data of every event it completed, in order."""
        buffer = self._pending + chunk
        if self._skip_lf and buffer:
            # The previous chunk ended in CR, already taken as a line end: this LF completes a CRLF.
            if buffer.startswith(b"\n"):
                buffer = buffer[1:]
            self._skip_lf = False
        if b"\r" in buffer:
            self._skip_lf = buffer.endswith(b"\r")
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *lines, self._pending = buffer.split(b"\n")
        events: list[bytes] = []
        for line in lines:
            if not line:
                if self._data_lines:
                    events.append(b"\n".join(self._data_lines))
                    self._data_lines = []
                continue
            if line.startswith(b"data:"):
                value = line[5:]
                self._data_lines.append(value[1:] if value.startswith(b" ") else value)
            # comments (":...") and the event/id/retry fields carry no data for us
        return events


class EventKind(enum.IntEnum):
    TOKEN = 1
    OTHER = 2  # role-only chunk, empty delta, usage chunk, finish chunk
    DONE = 3
    MALFORMED = 4


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    #: usage.completion_tokens when the event carries usage, else -1
    usage_completion_tokens: int = -1
    #: the server's monotonic send stamp (`netbench serve --stamp-events`), else -1
    sent_ns: int = -1


_OTHER = Event(EventKind.OTHER)
_TOKEN = Event(EventKind.TOKEN)
_DONE = Event(EventKind.DONE)
_MALFORMED = Event(EventKind.MALFORMED)


def _has_token(choice: dict) -> bool:
    if choice.get("text"):
        return True
    delta = choice.get("delta")
    if isinstance(delta, dict):
        return bool(delta.get("content") or delta.get("reasoning_content") or delta.get("tool_calls"))
    return False


def interpret(data: bytes) -> Event:
    """What one event's data means in an OpenAI-compatible completion stream."""
    if data == b"[DONE]":
        return _DONE
    try:
        body = json.loads(data)
    except ValueError:
        return _MALFORMED
    if not isinstance(body, dict):
        return _MALFORMED
    choices = body.get("choices") or ()
    is_token = any(isinstance(c, dict) and _has_token(c) for c in choices)
    usage = body.get("usage")
    usage_tokens = usage.get("completion_tokens", -1) if isinstance(usage, dict) else -1
    sent_ns = body.get("netbench_sent_ns", -1)
    if usage_tokens == -1 and sent_ns == -1:
        return _TOKEN if is_token else _OTHER
    return Event(EventKind.TOKEN if is_token else EventKind.OTHER, int(usage_tokens or 0), int(sent_ns))

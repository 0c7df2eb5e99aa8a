"""Incremental Server-Sent Events parsing, and what an OpenAI-style stream event means.

`SSEParser` is fed the body chunks exactly as the write callback receives them (split at
any byte) and yields each complete event as (event type, data), following the WHATWG rules
(LF, CRLF or CR line ends; a leading byte-order mark ignored; comments and unknown fields
skipped). `interpret` is total: whatever bytes a server sends, it returns an `Event` that says
whether the event carried generated tokens (in any field a server uses for them), the end of
the stream (`[DONE]`), a server error inside the stream, something else, or malformed data.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass

_BOM = b"\xef\xbb\xbf"
#: an event (or a line) longer than this is not a completion stream: the request is malformed
MAX_EVENT_BYTES = 16 * 1024 * 1024
#: an integer a server reports (token counts, stamps) outside 0..this is not a count
_MAX_COUNT = 2**31 - 1
_MAX_STAMP_NS = 2**63 - 1
#: the server's error message is kept to this many characters
MAX_MESSAGE_CHARS = 300


class SSEParser:
    """Splits a byte stream into SSE events: (event type, data), the type b"" when unnamed."""

    __slots__ = ("_pending", "_data_lines", "_event_type", "_skip_lf", "_started", "overflowed")

    def __init__(self) -> None:
        self._pending = b""
        self._data_lines: list[bytes] = []
        self._event_type = b""
        self._skip_lf = False
        self._started = False
        #: a line or event grew past MAX_EVENT_BYTES: parsing stopped
        self.overflowed = False

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes]]:
        """Consume a chunk; return every event it completed, in order."""
        if self.overflowed:
            return []
        buffer = self._pending + chunk
        if not self._started:
            # The stream's first bytes may be a UTF-8 BOM (WHATWG: ignored once, at the start).
            if len(buffer) < len(_BOM) and _BOM.startswith(buffer):
                self._pending = buffer
                return []
            self._started = True
            if buffer.startswith(_BOM):
                buffer = buffer[len(_BOM) :]
        if self._skip_lf and buffer:
            # The previous chunk ended in CR, already taken as a line end: this LF completes a CRLF.
            if buffer.startswith(b"\n"):
                buffer = buffer[1:]
            self._skip_lf = False
        if b"\r" in buffer:
            self._skip_lf = buffer.endswith(b"\r")
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *lines, self._pending = buffer.split(b"\n")
        if len(self._pending) > MAX_EVENT_BYTES:
            self.overflowed = True
            self._pending = b""
            return []
        events: list[tuple[bytes, bytes]] = []
        for line in lines:
            if not line:
                if self._data_lines:
                    events.append((self._event_type, b"\n".join(self._data_lines)))
                    self._data_lines = []
                self._event_type = b""
                continue
            if line.startswith(b"data:"):
                value = line[5:]
                self._data_lines.append(value[1:] if value.startswith(b" ") else value)
            elif line.startswith(b"event:"):
                value = line[6:]
                self._event_type = value[1:] if value.startswith(b" ") else value
            elif line == b"data":
                self._data_lines.append(b"")
            # comments (":...") and the id/retry fields carry nothing we measure
        return events


class EventKind(enum.IntEnum):
    TOKEN = 1  # carried at least one generated token
    OTHER = 2  # role-only chunk, empty delta, usage chunk, finish chunk, keep-alive
    DONE = 3
    ERROR = 4  # the server reported an error inside the stream
    MALFORMED = 5


@dataclass(frozen=True, slots=True)
class Event:
    kind: EventKind
    #: whether a token of visible content (`text`, `delta.content`) was among them; reasoning and
    #: tool-call tokens are tokens too, but not content
    content: bool = False
    #: usage.completion_tokens / usage.prompt_tokens when the event carries usage, else -1
    usage_completion_tokens: int = -1
    usage_prompt_tokens: int = -1
    #: the server's monotonic send stamp (`netbench serve --stamp-events`), else -1
    sent_ns: int = -1
    #: ERROR: the server's message; MALFORMED: what was wrong
    message: str = ""
    #: a `timings` object the server put in the event (llama.cpp: prompt and generation times)
    timings: dict | None = None


_OTHER = Event(EventKind.OTHER)
_CONTENT = Event(EventKind.TOKEN, content=True)
_NOT_CONTENT = Event(EventKind.TOKEN)
_DONE = Event(EventKind.DONE)


class _Malformed(Exception):
    """An event's JSON has the wrong shape for a completion stream."""


def _malformed(why: str) -> Event:
    return Event(EventKind.MALFORMED, message=why)


def _text(value: object, where: str) -> bool:
    """Whether a text field carries a token; None and "" do not."""
    if value is None:
        return False
    if not isinstance(value, str):
        raise _Malformed(f"{where} is not a string")
    return bool(value)


def _tool_call_has_token(call: object) -> bool:
    if not isinstance(call, dict):
        raise _Malformed("delta.tool_calls holds a non-object")
    function = call.get("function")
    if function is None:
        return bool(call.get("id"))
    if not isinstance(function, dict):
        raise _Malformed("delta.tool_calls[].function is not an object")
    return _text(function.get("name"), "tool call name") | _text(function.get("arguments"), "tool call arguments")


def _choice_tokens(choice: object) -> tuple[bool, bool]:
    """(carries a token, carries a content token) of one choice."""
    if not isinstance(choice, dict):
        raise _Malformed("a choice is not an object")
    content = _text(choice.get("text"), "text")
    delta = choice.get("delta")
    if delta is None:
        return content, content
    if not isinstance(delta, dict):
        raise _Malformed("delta is not an object")
    content |= _text(delta.get("content"), "delta.content")
    # vLLM named it reasoning_content, and now reasoning; both are generated tokens
    reasoning = _text(delta.get("reasoning_content"), "delta.reasoning_content")
    reasoning |= _text(delta.get("reasoning"), "delta.reasoning")
    calls = delta.get("tool_calls")
    if calls is not None and not isinstance(calls, list):
        raise _Malformed("delta.tool_calls is not a list")
    tool = any([_tool_call_has_token(call) for call in calls or ()])
    return content or reasoning or tool, content


def _count(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_COUNT:
        raise _Malformed(f"{where} is not a token count")
    return value


def _usage(usage: object) -> tuple[int, int]:
    if usage is None:
        return -1, -1
    if not isinstance(usage, dict):
        raise _Malformed("usage is not an object")
    completion = usage.get("completion_tokens")
    prompt = usage.get("prompt_tokens")
    return (
        -1 if completion is None else _count(completion, "usage.completion_tokens"),
        -1 if prompt is None else _count(prompt, "usage.prompt_tokens"),
    )


def _error_message(error: object) -> str:
    """The server's words for an error object (vLLM: {"message", "type", "param", "code"})."""
    if isinstance(error, dict):
        error = error.get("message") or error.get("detail") or error.get("type") or json.dumps(error)[:MAX_MESSAGE_CHARS]
    return str(error)[:MAX_MESSAGE_CHARS]


def _interpret_object(body: dict) -> Event:
    if "error" in body and body["error"] not in (None, "", {}):
        return Event(EventKind.ERROR, message=_error_message(body["error"]))
    if body.get("object") == "error":
        return Event(EventKind.ERROR, message=_error_message(body))
    choices = body.get("choices")
    if choices is None:
        choices = ()
    elif not isinstance(choices, list):
        raise _Malformed("choices is not a list")
    is_token = is_content = False
    for choice in choices:
        token, content = _choice_tokens(choice)
        is_token |= token
        is_content |= content
    completion_tokens, prompt_tokens = _usage(body.get("usage"))
    sent_ns = body.get("netbench_sent_ns", -1)
    if isinstance(sent_ns, bool) or not isinstance(sent_ns, int) or not -1 <= sent_ns <= _MAX_STAMP_NS:
        raise _Malformed("netbench_sent_ns is not a monotonic stamp")
    timings = body.get("timings")
    timings = timings if isinstance(timings, dict) else None  # read by server_timing, which trusts nothing
    if completion_tokens == -1 and prompt_tokens == -1 and sent_ns == -1 and timings is None:
        if not is_token:
            return _OTHER
        return _CONTENT if is_content else _NOT_CONTENT
    kind = EventKind.TOKEN if is_token else EventKind.OTHER
    return Event(kind, is_content, completion_tokens, prompt_tokens, sent_ns, timings=timings)


def interpret(data: bytes, event_type: bytes = b"") -> Event:
    """What one event means in an OpenAI-compatible completion stream. Never raises."""
    if event_type == b"error":
        try:
            return Event(EventKind.ERROR, message=_error_message(json.loads(data)))
        except (ValueError, RecursionError):
            return Event(EventKind.ERROR, message=data[:MAX_MESSAGE_CHARS].decode("utf-8", "replace"))
    if data == b"[DONE]":
        return _DONE
    try:
        body = json.loads(data)
    except RecursionError:
        return _malformed("nested too deeply")
    except ValueError:
        return _malformed("not JSON")
    if not isinstance(body, dict):
        return _malformed("not a JSON object")
    try:
        return _interpret_object(body)
    except _Malformed as error:
        return _malformed(str(error))
    except RecursionError:
        return _malformed("nested too deeply")

"""Per-request timings a server reports about itself, parsed into one small typed result.

Three formats, all pure functions of what the server sent (no I/O, no pycurl):
- llama.cpp's `timings` object, in the last stream event or the non-streaming body
  (`from_llama_cpp`);
- TGI's `x-*-time` / `x-*-tokens` response headers (`from_tgi_headers`);
- the W3C `Server-Timing` response header, any server or proxy (`parse_server_timing` for
  every metric, `from_server_timing` for the ones netbench understands).
`from_headers` picks the header format a response carries. Server data is hostile: a value
that is not a finite, non-negative, plausible number becomes None, a malformed entry is
skipped, and nothing here raises on any input. Durations are integer µs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "ServerTimings",
    "TimingMetric",
    "from_headers",
    "from_llama_cpp",
    "from_server_timing",
    "from_tgi_headers",
    "header_pairs",
    "parse_server_timing",
]

LLAMA_CPP = "llama.cpp"
TGI = "tgi"
SERVER_TIMING = "server-timing"
#: a server-reported duration above a day is garbage, not a measurement
MAX_DURATION_US = 86_400 * 1_000_000
#: no prompt or generation is this long; a larger count is garbage
MAX_TOKENS = 1_000_000_000
#: longer header values are not parsed at all (hostile input must stay cheap)
MAX_HEADER_CHARS = 16_384

#: a plain non-negative decimal; float() alone would accept "nan", "inf", "1_000" and "1e400"
_DECIMAL = re.compile(r"[0-9]{1,15}(?:\.[0-9]{0,15})?|\.[0-9]{1,15}")
_INTEGER = re.compile(r"[0-9]{1,15}")
#: RFC 9110 tchar: the characters of a token (metric and parameter names, bare values)
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass(frozen=True)
class ServerTimings:
    """What one response says the server spent on it; None where the server did not say.

    server_queue_us: waiting before the engine started on the request.
    server_prompt_us: prompt processing (prefill), up to the first token.
    server_decode_us: first token to last token.
    server_inference_us: the engine's share, prefill + decode.
    server_total_us: the whole span the server timed. TGI: request received to response built
      (validation + queue + inference). llama.cpp: slot start to last token, its own "total
      time" (it does not time its queue or tokenization).
    prompt_tokens: the prompt's length; cached_tokens: the part of it served from the cache;
    generated_tokens: output tokens.
    """

    source: str
    server_queue_us: int | None = None
    server_prompt_us: int | None = None
    server_decode_us: int | None = None
    server_inference_us: int | None = None
    server_total_us: int | None = None
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    generated_tokens: int | None = None

    @property
    def empty(self) -> bool:
        """True when no field besides the source is known."""
        return all(getattr(self, name) is None for name in self.__dataclass_fields__ if name != "source")


@dataclass(frozen=True)
class TimingMetric:
    """One Server-Timing metric: its name, `dur` in µs (None when absent or unusable), `desc`."""

    name: str
    dur_us: int | None = None
    desc: str | None = None


# --- value checks: every number from a server goes through one of these ------------------------


def _json_us(value: object, unit_us: float) -> int | None:
    """A JSON number in units of `unit_us` µs -> integer µs; None for anything else."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        number = float(value)  # an integer beyond a float's range raises
    except OverflowError:
        return None
    # checked before the product: 1e305 ms times 1000 is no finite number to round
    if not math.isfinite(number) or number < 0 or number * unit_us > MAX_DURATION_US:
        return None
    return round(number * unit_us)


def _text_us(value: str | None, unit_us: float) -> int | None:
    """A header's plain decimal in units of `unit_us` µs -> integer µs; None for anything else."""
    text = (value or "").strip()
    return _json_us(float(text), unit_us) if _DECIMAL.fullmatch(text) else None


def _json_count(value: object) -> int | None:
    """A token count: a non-negative JSON integer (or integral float); None for anything else."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKENS:
        return value
    return None


def _text_count(value: str | None) -> int | None:
    text = (value or "").strip()
    return _json_count(int(text)) if _INTEGER.fullmatch(text) else None


def _sum(*parts: int | None) -> int | None:
    if any(p is None for p in parts):
        return None
    total = sum(parts)  # type: ignore[arg-type]
    return total if total <= MAX_DURATION_US else None


# --- llama.cpp -----------------------------------------------------------------------------------


def from_llama_cpp(body: object) -> ServerTimings | None:
    """The `timings` object of a decoded llama.cpp response body or stream event (or the
    object itself); None when there is none or nothing in it is usable.

    llama.cpp (tools/server, server_slot_stats): prompt_ms runs from the slot starting on the
    prompt to the first sampled token, predicted_ms from there to the last token; prompt_n
    counts the prompt tokens evaluated, cache_n those reused from the KV cache; predicted_n
    counts every output token, the first included. The final event always carries it; with
    the request option `timings_per_token` every event does (running values).
    """
    if not isinstance(body, Mapping):
        return None
    timings = body.get("timings", body)
    if not isinstance(timings, Mapping):
        return None
    prompt_us = _json_us(timings.get("prompt_ms"), 1000.0)
    decode_us = _json_us(timings.get("predicted_ms"), 1000.0)
    evaluated, cached = _json_count(timings.get("prompt_n")), _json_count(timings.get("cache_n"))
    inference_us = _sum(prompt_us, decode_us)
    prompt_tokens = None if evaluated is None or cached is None else evaluated + cached
    result = ServerTimings(
        source=LLAMA_CPP,
        server_prompt_us=prompt_us,
        server_decode_us=decode_us,
        server_inference_us=inference_us,
        server_total_us=inference_us,
        prompt_tokens=prompt_tokens if prompt_tokens is None or prompt_tokens <= MAX_TOKENS else None,
        cached_tokens=cached,
        generated_tokens=_json_count(timings.get("predicted_n")),
    )
    return None if result.empty else result


# --- headers -------------------------------------------------------------------------------------

Headers = Iterable[tuple[str, str]] | Mapping[str, str]


def _pairs(headers: Headers) -> list[tuple[str, str]]:
    """(lower-case name, value) pairs; entries that are not two strings are dropped."""
    try:
        items = list(headers.items() if isinstance(headers, Mapping) else headers)
    except (TypeError, ValueError):
        return []
    out = []
    for item in items:
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], str):
            out.append((item[0].strip().lower(), item[1]))
    return out


def header_pairs(block: bytes | str) -> list[tuple[str, str]]:
    """Split a raw header block ("Name: value" lines, as libcurl hands them over) into
    (name, value) pairs. The status line, blank lines and lines without a colon are skipped;
    when the block holds several responses (100 Continue, redirects), only the last counts."""
    text = block.decode("latin-1") if isinstance(block, bytes) else block
    out: list[tuple[str, str]] = []
    for line in text.splitlines():
        if line.startswith("HTTP/"):
            out = []  # a new response starts: the earlier one's headers are not this one's
            continue
        name, colon, value = line.partition(":")
        if colon and name and not name[0].isspace():
            out.append((name.strip(), value.strip()))
    return out


def from_tgi_headers(headers: Headers) -> ServerTimings | None:
    """TGI's timing headers; None when the response carries none of them.

    As TGI's router sets them (huggingface/text-generation-inference, router/src/server.rs,
    `generate_internal`): x-compute-time is the total as `as_secs_f64()` (seconds, decimal);
    x-total-time, x-validation-time, x-queue-time, x-inference-time and x-time-per-token are
    `as_millis()` (whole ms, truncated); x-prompt-tokens and x-generated-tokens are integers;
    x-compute-type ("gpu+optimized") and x-compute-characters carry no timing. Only the
    non-streaming path sets the timings: a stream's headers leave before generation (TGI's
    `generate_stream_internal` sends x-compute-type, x-compute-characters, X-Accel-Buffering).
    x-inference-time is prefill + decode together; TGI does not split them.
    """
    values: dict[str, str] = {}
    for name, value in _pairs(headers):
        values.setdefault(name, value)  # a duplicated header: the first one counts
    total_us = _text_us(values.get("x-compute-time"), 1_000_000.0)
    if total_us is None:  # the same span at ms resolution
        total_us = _text_us(values.get("x-total-time"), 1000.0)
    result = ServerTimings(
        source=TGI,
        server_queue_us=_text_us(values.get("x-queue-time"), 1000.0),
        server_inference_us=_text_us(values.get("x-inference-time"), 1000.0),
        server_total_us=total_us,
        prompt_tokens=_text_count(values.get("x-prompt-tokens")),
        generated_tokens=_text_count(values.get("x-generated-tokens")),
    )
    return None if result.empty else result


def _token(text: str, pos: int) -> tuple[str, int]:
    start = pos
    while pos < len(text) and text[pos] in _TCHAR:
        pos += 1
    return text[start:pos], pos


def _quoted(text: str, pos: int) -> tuple[str | None, int]:
    """An RFC 9110 quoted-string starting at text[pos] == '"'; None when it never ends."""
    out = []
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char == '"':
            return "".join(out), pos + 1
        if char == "\\" and pos + 1 < len(text):
            pos += 1
            char = text[pos]
        out.append(char)
        pos += 1
    return None, pos


def _skip_ows(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    return pos


def _skip_entry(text: str, pos: int) -> int:
    """Past the next comma outside a quoted string: where the next metric starts."""
    while pos < len(text):
        if text[pos] == '"':
            _, pos = _quoted(text, pos)
        elif text[pos] == ",":
            return pos + 1
        else:
            pos += 1
    return pos


def _metric(text: str, pos: int) -> tuple[TimingMetric | None, int]:
    """One `name *(OWS ";" OWS param-name OWS "=" OWS (token / quoted-string))` entry at pos;
    (None, next entry) when it is malformed. Repeated parameters: the first counts (W3C)."""
    name, pos = _token(text, pos)
    if not name:
        return None, _skip_entry(text, pos)
    params: dict[str, str] = {}
    while True:
        pos = _skip_ows(text, pos)
        if pos >= len(text) or text[pos] == ",":
            break
        if text[pos] != ";":
            return None, _skip_entry(text, pos)
        param, pos = _token(text, _skip_ows(text, pos + 1))
        if not param:
            return None, _skip_entry(text, pos)
        pos = _skip_ows(text, pos)
        value: str | None = ""
        if pos < len(text) and text[pos] == "=":
            pos = _skip_ows(text, pos + 1)
            if pos < len(text) and text[pos] == '"':
                value, pos = _quoted(text, pos)
                if value is None:
                    return None, pos
            else:
                value, pos = _token(text, pos)
        params.setdefault(param.lower(), value)
    dur = params.get("dur")
    return TimingMetric(name, _text_us(dur, 1000.0), params.get("desc")), pos


def parse_server_timing(values: list[str] | tuple[str, ...] | str) -> tuple[TimingMetric, ...]:
    """Every well-formed metric of one Server-Timing header value or a list of them, in order.

    W3C Server Timing: `Server-Timing = #server-timing-metric`; `dur` is in milliseconds
    (a decimal), `desc` a token or quoted string; several headers are one comma-separated
    list. A malformed entry is skipped up to the next comma; a value over MAX_HEADER_CHARS
    is not parsed.
    """
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, (list, tuple)):
        return ()
    out: list[TimingMetric] = []
    for text in (v for v in values if isinstance(v, str) and len(v) <= MAX_HEADER_CHARS):
        pos = 0
        while pos < len(text):
            pos = _skip_ows(text, pos)
            if pos < len(text) and text[pos] == ",":
                pos += 1
                continue
            if pos >= len(text):
                break
            metric, pos = _metric(text, pos)
            if metric is not None:
                out.append(metric)
    return tuple(out)


#: Server-Timing metric names (case-insensitive) -> the field they fill. There is no standard
#: vocabulary; these are the plain names a server would pick for each span.
SERVER_TIMING_NAMES: dict[str, str] = {
    "queue": "server_queue_us",
    "prefill": "server_prompt_us",
    "prompt": "server_prompt_us",
    "decode": "server_decode_us",
    "inference": "server_inference_us",
    "total": "server_total_us",
}


def from_server_timing(values: list[str] | tuple[str, ...] | str) -> ServerTimings | None:
    """The Server-Timing metrics named in SERVER_TIMING_NAMES (the first of each, with a
    usable `dur`); None when there are none."""
    fields: dict[str, int] = {}
    for metric in parse_server_timing(values):
        key = SERVER_TIMING_NAMES.get(metric.name.lower())
        if key is not None and metric.dur_us is not None:
            fields.setdefault(key, metric.dur_us)
    return ServerTimings(source=SERVER_TIMING, **fields) if fields else None


def from_headers(headers: Headers) -> ServerTimings | None:
    """The timings a response's headers carry: TGI's own headers when present (they say
    more), else Server-Timing; None when neither is there."""
    pairs = _pairs(headers)
    return from_tgi_headers(pairs) or from_server_timing([v for n, v in pairs if n == "server-timing"])

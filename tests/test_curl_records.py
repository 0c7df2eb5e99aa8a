"""A Transfer's record, exactly: libcurl's getinfo marks, the callbacks' marks on one µs axis
(the anchor found from the first status line), the TCP readings around the request, what the
server said it spent, and how the request ended. pycurl's handle is faked after construction
(getinfo answers from a dict), the clock is set by hand, and the callbacks are driven directly:
no server, no socket."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from types import SimpleNamespace

import pycurl
import pytest

from netbench import curl
from netbench.curl import _ERROR_BODY_BYTES, _MARK_INFOS, Transfer, _Connections, outcome_of
from netbench.outcomes import Outcome
from netbench.phases import Record
from netbench.spec import RunSpec
from netbench.sse import MAX_EVENT_BYTES
from netbench.tcpinfo import TcpSample
from netbench.workloads import Request

URL = "http://127.0.0.1:9/v1/completions"
DONE = b"data: [DONE]\n\n"
#: libcurl's cumulative marks (µs), every one its own value
MARKS = {
    "queue_mark_us": 11,
    "namelookup_mark_us": 23,
    "connect_mark_us": 131,
    "appconnect_mark_us": 0,
    "pretransfer_mark_us": 303,
    "posttransfer_mark_us": 349,
    "starttransfer_mark_us": 1201,
    "total_mark_us": 9173,
}
#: TCP_INFO just before the request and after it (state, rto, srtt, rttvar, min_rtt, retrans, bytes, ooo, age)
BEFORE = TcpSample(1, 204_000, 2400, 600, 17, 3, 5123, 2, 42)
AFTER = TcpSample(1, 208_000, 2450, 610, 15, 7, 98_765, 8, 3)
LLAMA_TIMINGS = {"prompt_ms": 12.345, "predicted_ms": 67.891, "prompt_n": 7, "cache_n": 13, "predicted_n": 9}
SERVER_FIELDS = ("server_queue_us", "server_prompt_us", "server_decode_us", "server_total_us",
                 "server_cached_tokens", "timing_source")  # fmt: skip


def _sse(*bodies: object) -> bytes:
    return b"".join(b"data: " + json.dumps(body).encode() + b"\n\n" for body in bodies)


def _content(text: str, **extra: object) -> dict:
    return {"choices": [{"delta": {"content": text}}], **extra}


class Clock:
    """monotonic_ns as the test sets it."""

    def __init__(self) -> None:
        self.now_ns = 0

    def __call__(self) -> int:
        return self.now_ns


class FakeConnections:
    """What a Transfer asks of _Connections: the reading and handshake before an attempt, the reading after."""

    def __init__(self, before: TcpSample | None = None, handshake: tuple[int, int] = (-1, -1), after: TcpSample | None = None):
        self.before, self.handshake, self.after = before, handshake, after
        self.attempts: list[tuple[object, int]] = []
        self.completed: list[object] = []

    def on_open(self, fd: int, purpose: int) -> int:
        return pycurl.SOCKOPT_OK

    def on_close(self, fd: int) -> int:
        return 0

    def begin_attempt(self, transfer: object, local_port: int) -> tuple[TcpSample | None, tuple[int, int]]:
        self.attempts.append((transfer, local_port))
        return self.before, self.handshake

    def complete(self, handle: object) -> TcpSample | None:
        self.completed.append(handle)
        return self.after


class FakeHandle:
    """getinfo from a dict keyed by pycurl constants (anything else: KeyError)."""

    def __init__(self, infos: dict) -> None:
        self.infos = infos

    def getinfo(self, code: int) -> int:
        return self.infos[code]

    def close(self) -> None:
        pass


@dataclass
class Rig:
    transfer: Transfer
    clock: Clock
    connections: FakeConnections
    backlog: list = field(default_factory=list)
    done_seen: list = field(default_factory=list)
    handle: FakeHandle | None = None

    def header(self, at_ns: int, *lines: bytes) -> None:
        self.clock.now_ns = at_ns
        for line in lines:
            assert self.transfer._on_header(line) is None

    def stream(self, at_ns: int, chunk: bytes) -> None:
        self.clock.now_ns = at_ns
        self.transfer._on_stream(chunk)

    def body(self, at_ns: int, chunk: bytes) -> None:
        self.clock.now_ns = at_ns
        self.transfer._on_body(chunk)

    def attempt(self, local_port: int = 40123) -> None:
        assert self.transfer._on_prereq("127.0.0.1", "127.0.0.1", 9, local_port) == pycurl.PREREQFUNC_OK

    def finish(self, curl_error: int = 0, worker: int = 3, **infos: int) -> tuple[Record, list, Outcome]:
        self.handle = FakeHandle(_infos(**infos))
        self.transfer.handle.close()
        self.transfer.handle = self.handle
        result = self.transfer.finish(curl_error, worker)
        assert self.connections.completed == [self.handle]
        return result


def _rig(monkeypatch: pytest.MonkeyPatch, *, streaming: bool = True, connections: FakeConnections | None = None,
         spec: RunSpec | None = None, headers: tuple[str, ...] = ("Content-Type: application/json",),
         on_done_seen=None) -> Rig:  # fmt: skip
    clock = Clock()
    monkeypatch.setattr(curl, "monotonic_ns", clock)
    request = Request(URL, "POST", headers, b'{"prompt": "x"}', streaming, prompt_tokens=37, output_tokens=41)
    rig = Rig(None, clock, connections or FakeConnections())  # type: ignore[arg-type]
    rig.transfer = Transfer(spec or RunSpec(url=URL), request, rig.backlog, on_done_seen or rig.done_seen.append, rig.connections)
    return rig


def _infos(status: int = 200, connects: int = 1, local_port: int = 40123, redirects: int = 0, request_bytes: int = 187,
           **marks: int) -> dict:  # fmt: skip
    marks = {**MARKS, **marks}
    infos = {pycurl.RESPONSE_CODE: status, pycurl.NUM_CONNECTS: connects, pycurl.LOCAL_PORT: local_port,
             pycurl.REDIRECT_COUNT: redirects, pycurl.REQUEST_SIZE: request_bytes}  # fmt: skip
    infos.update({code: marks[name] for name, code in _MARK_INFOS if code is not None})
    return infos


def _marks(**overrides: int) -> dict:
    """The mark fields a record gets from _infos: -1 where this libcurl has no such mark."""
    marks = {**MARKS, **overrides}
    return {name: marks[name] if code is not None else -1 for name, code in _MARK_INFOS}


def _pick(record: Record, *names: str) -> tuple:
    return tuple(getattr(record, name) for name in names)


def _short_stream(rig: Rig, *, status: bytes = b"HTTP/1.1 200 OK\r\n", before_done: bytes = b"", done: bool = True) -> None:
    """A status line, one content token, [DONE]: anchored at 8_999_679_123 by starttransfer 321 µs,
    the token at mark 821, [DONE] at 1321."""
    rig.header(9_000_000_123, status, b"\r\n")
    rig.stream(9_000_500_456, before_done + _sse(_content("a")))
    if done:
        rig.stream(9_001_000_789, DONE)
    rig.transfer.digest()


# --- the whole record ---------------------------------------------------------------------------


def test_a_stream_record_holds_every_mark_on_libcurls_axis(monkeypatch):
    rig = _rig(monkeypatch, connections=FakeConnections(BEFORE, (877, 2), AFTER))
    t = rig.transfer
    t.begin(7_000_003, 4_990_000_000, measured=True)
    t.anchor(4_998_700_000)  # the perform's start: a bound, moved to libcurl's start below
    rig.attempt(40123)
    rig.header(5_000_000_777, b"HTTP/1.1 200 OK\r\n", b"Content-Type: text/event-stream\r\n", b"\r\n")
    rig.stream(5_000_410_333, b": keep-alive\n\n")
    assert rig.backlog == [t]
    rig.stream(5_001_234_567, _sse({"choices": [{"delta": {"role": "assistant"}}]}))
    rig.stream(5_002_345_678, _sse({"choices": [{"delta": {"reasoning_content": "hm"}}]}))
    rig.stream(5_003_456_789, _sse(_content("Hi", netbench_sent_ns=5_003_400_001)))
    final = {"choices": [], "usage": {"completion_tokens": 5, "prompt_tokens": 29}, "timings": LLAMA_TIMINGS}
    rig.stream(5_004_567_891, _sse(_content(" there"), final))
    rig.stream(5_005_678_912, DONE)
    assert rig.backlog == [t]
    rig.clock.now_ns = 5_100_000_000  # parsing later: each chunk keeps its arrival time
    t.digest()
    assert rig.done_seen == [t]

    record, events, outcome = rig.finish(0, worker=3)

    # anchor: the status line's instant minus STARTTRANSFER, 5_000_000_777 - 1_201_000
    assert record == Record(
        transfer_start_ns=4_998_799_777, intended_start_us=7_000_003, start_us=8799, **_marks(),
        final_status_mark_us=-1, first_byte_mark_us=1610, first_event_mark_us=2434, first_token_mark_us=3545,
        first_content_mark_us=4657, last_token_mark_us=5768, done_mark_us=6879,
        tcp_min_rtt_us=15, tcp_srtt_us=2450, tcp_rttvar_us=610, tcp_srtt_before_us=2400, tcp_rto_us=204_000,
        handshake_rtt_us=877, syn_retries=2, retransmits=4, ooo_packets=6,
        events=3, events_kept=3, event_tokens=3, tokens=5, usage_completion_tokens=5, usage_prompt_tokens=29,
        requested_prompt_tokens=37, requested_output_tokens=41, request_bytes=187,
        server_queue_us=-1, server_prompt_us=12_345, server_decode_us=67_891, server_total_us=80_236,
        server_cached_tokens=13, timing_source=1, http_status=200, curl_error=0, error_class=0,
        new_connection=True, tls_handshake_bytes=-1, local_port=40123, worker=3,
    )  # fmt: skip
    assert events == [(3545, 1, -1), (4657, 1, 5_003_400_001), (5768, 1, -1)]
    assert outcome is Outcome.OK
    assert rig.connections.attempts == [(t, 40123)]
    assert t.malformed == "" and t.stream_error == "" and t.error_body == b""


def test_an_interim_response_then_an_error_keeps_the_final_status_mark_and_the_bodys_first_4096_bytes(monkeypatch):
    rig = _rig(monkeypatch, streaming=False)
    t = rig.transfer
    t.begin(12_345_678, 6_000_000_000, measured=True)
    t.anchor(6_998_400_000)
    rig.attempt(40999)
    # the 100's headers are not the 503's: its Server-Timing must not count
    rig.header(7_000_000_501, b"HTTP/1.1 100 Continue\r\n", b"Server-Timing: prompt;dur=1.75\r\n", b"\r\n")
    rig.header(7_000_900_123, b"HTTP/1.1 503 Service Unavailable\r\n", b"Retry-After: 3\r\n",
               b"Server-Timing: queue;dur=0.25, total;dur=3.5\r\n", b"\r\n")  # fmt: skip
    rig.body(7_001_111_222, b"x" * 3000)
    rig.body(7_001_222_333, b"y" * 3000)
    rig.body(7_001_333_444, b"z" * 10)
    assert t.error_body == b"x" * 3000 + b"y" * (_ERROR_BODY_BYTES - 3000)

    record, events, outcome = rig.finish(0, worker=5, status=503, connects=0, local_port=40999, request_bytes=211,
                                         starttransfer_mark_us=1500, total_mark_us=2777)  # fmt: skip

    # anchor: the 100's status line (libcurl's STARTTRANSFER), 7_000_000_501 - 1_500_000
    assert record == Record(
        transfer_start_ns=6_998_500_501, intended_start_us=12_345_678, start_us=998_500,
        **_marks(starttransfer_mark_us=1500, total_mark_us=2777),
        final_status_mark_us=2399, first_byte_mark_us=2610, first_event_mark_us=-1, first_token_mark_us=-1,
        first_content_mark_us=-1, last_token_mark_us=-1, done_mark_us=-1,
        tcp_min_rtt_us=-1, tcp_srtt_us=-1, tcp_rttvar_us=-1, tcp_srtt_before_us=-1, tcp_rto_us=-1,
        handshake_rtt_us=-1, syn_retries=-1, retransmits=-1, ooo_packets=-1,
        events=0, events_kept=0, event_tokens=0, tokens=0, usage_completion_tokens=-1, usage_prompt_tokens=-1,
        requested_prompt_tokens=37, requested_output_tokens=41, request_bytes=211,
        server_queue_us=250, server_prompt_us=-1, server_decode_us=-1, server_total_us=3500,
        server_cached_tokens=-1, timing_source=3, http_status=503, curl_error=0, error_class=7,
        new_connection=False, tls_handshake_bytes=-1, local_port=40999, worker=5,
    )  # fmt: skip
    assert events == []
    assert outcome is Outcome.HTTP_5XX
    assert rig.connections.attempts == [(t, 40999)]


def test_a_400_over_http2_keeps_the_streams_first_4096_bytes_unparsed(monkeypatch):
    rig = _rig(monkeypatch)
    t = rig.transfer
    rig.header(3_000_000_001, b"HTTP/2 400\r\n", b"\r\n")  # HTTP/2: no reason phrase
    first = b'{"error": {"message": "bad"}}'.ljust(3000)
    second = (DONE + _sse(_content("a"))).ljust(3000, b"q")
    rig.stream(3_000_444_555, first)
    rig.stream(3_000_666_777, second)
    t.digest()
    assert t.error_body == first + second[: _ERROR_BODY_BYTES - 3000]
    record, events, outcome = rig.finish(0, status=400, starttransfer_mark_us=77)
    # anchor 3_000_000_001 - 77_000: the first byte at (3_000_444_555 - 2_999_923_001) // 1000
    assert _pick(record, "first_byte_mark_us", "first_event_mark_us", "first_token_mark_us", "done_mark_us",
                 "events", "http_status", "error_class") == (521, -1, -1, -1, 0, 400, 6)  # fmt: skip
    assert (events, outcome, rig.done_seen) == ([], Outcome.HTTP_4XX, [])


def test_a_failed_connect_keeps_the_performs_anchor_and_marks_nothing(monkeypatch):
    rig = _rig(monkeypatch)
    rig.transfer.begin(40, 1_000_000_000, measured=True)
    rig.transfer.anchor(1_234_567_891)
    zero = {name: 0 for name in MARKS}
    record, events, outcome = rig.finish(pycurl.E_COULDNT_CONNECT, worker=1, status=0, connects=0, local_port=0,
                                         request_bytes=0, **zero)  # fmt: skip
    assert _pick(record, "transfer_start_ns", "start_us", "final_status_mark_us", "first_byte_mark_us",
                 "done_mark_us", "http_status", "curl_error", "error_class", "new_connection",
                 "tokens", "retransmits") == (1_234_567_891, 234_567, -1, -1, -1, 0, 7, 2, False, 0, -1)  # fmt: skip
    assert (events, outcome) == ([], Outcome.REFUSED)


def test_a_mark_this_libcurl_cannot_give_is_missing(monkeypatch):
    rig = _rig(monkeypatch, streaming=False)
    monkeypatch.setattr(curl, "_MARK_INFOS", tuple((name, None if name == "queue_mark_us" else code) for name, code in _MARK_INFOS))
    rig.header(2_000_000_000, b"HTTP/1.1 200 OK\r\n")
    record, _, _ = rig.finish(0)
    assert _pick(record, *MARKS) == tuple(-1 if name == "queue_mark_us" else mark for name, mark in _marks().items())


# --- marks: the first of each, sentinels, zero --------------------------------------------------


def test_marks_at_the_clocks_zero_are_marks_and_only_the_first_of_each_counts(monkeypatch):
    rig = _rig(monkeypatch)
    t = rig.transfer
    # 100 Continue, a followed redirect, then the answer: the first two at the clock's zero
    rig.header(0, b"HTTP/1.1 100 Continue\r\n", b"\r\n", b"HTTP/1.1 302 Found\r\n", b"Location: /v1/x\r\n", b"\r\n")
    rig.header(7_777, b"HTTP/1.1 200 OK\r\n", b"\r\n")
    rig.stream(0, _sse({"choices": [{"delta": {"role": "assistant"}}]}, _content("a")) + DONE)
    rig.stream(9_999, _sse(_content("b")) + DONE)
    t.digest()
    record, events, outcome = rig.finish(0, starttransfer_mark_us=0, total_mark_us=12)
    assert _pick(record, "transfer_start_ns", "final_status_mark_us", "first_byte_mark_us", "first_event_mark_us",
                 "first_token_mark_us", "first_content_mark_us", "last_token_mark_us", "done_mark_us",
                 "total_mark_us") == (0, 0, 0, 0, 0, 0, 9, 0, 12)  # fmt: skip
    assert events == [(0, 1, -1), (9, 1, -1)]
    assert rig.done_seen == [t]
    assert outcome is Outcome.OK


def test_early_hints_then_200_marks_the_200s_status_line_as_final(monkeypatch):
    rig = _rig(monkeypatch, streaming=False)
    rig.header(2_000_000_999, b"HTTP/1.1 103 Early Hints\r\n", b"Link: </style.css>; rel=preload\r\n", b"\r\n")
    rig.header(2_000_300_555, b"HTTP/1.1 200 OK\r\n", b"\r\n")
    rig.header(2_000_700_111, b"HTTP/1.1 200 OK\r\n")  # a later response's status line (a redirect's) moves nothing
    record, _, outcome = rig.finish(0, starttransfer_mark_us=250)
    # anchor 2_000_000_999 - 250_000: the 200 at (2_000_300_555 - 1_999_750_999) // 1000
    assert _pick(record, "transfer_start_ns", "final_status_mark_us", "starttransfer_mark_us") == (1_999_750_999, 549, 250)
    assert outcome is Outcome.OK


def test_a_body_at_the_clocks_zero_marks_its_first_byte_there(monkeypatch):
    rig = _rig(monkeypatch, streaming=False)
    rig.header(0, b"HTTP/1.1 200 OK\r\n")
    rig.body(0, b"{}")
    rig.body(5_555, b"{}")
    record, _, outcome = rig.finish(0, starttransfer_mark_us=0)
    assert _pick(record, "transfer_start_ns", "first_byte_mark_us", "final_status_mark_us") == (0, 0, -1)
    assert (outcome, rig.transfer.error_body) == (Outcome.OK, b"")


def test_a_status_line_without_a_number_is_no_status(monkeypatch):
    rig = _rig(monkeypatch, streaming=False)
    rig.header(1_000_000_000, b"HTTP/1.1\r\n", b"HTTP/1.1 abc Odd\r\n")
    rig.body(1_000_500_000, b"kept nowhere")
    assert rig.transfer.error_body == b""
    record, _, outcome = rig.finish(0, starttransfer_mark_us=100)
    # neither line is interim: no final-status mark; the anchor is the first of them
    assert _pick(record, "transfer_start_ns", "final_status_mark_us", "first_byte_mark_us") == (999_900_000, -1, 600)
    assert outcome is Outcome.OK


def test_a_redirect_to_another_host_with_a_secret_header_is_refused_at_its_location(monkeypatch):
    rig = _rig(monkeypatch, spec=RunSpec(url=URL, follow_redirects=True), headers=("X-Api-Key: k-123",))
    t = rig.transfer
    assert t._on_header(b"HTTP/1.1 302 Found\r\n") is None
    assert t._on_header(b"Location: /v1/elsewhere\r\n") is None  # the same host
    assert t._on_header(b"Location: http://other.example:8080/x\r\n") == 0
    assert t.redirect_guard is not None and t.redirect_guard.refused == "http://other.example:8080"


# --- how a request ended ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("streaming", "status", "body", "curl_error", "ended_at_done", "expected"),
    [
        # [DONE] then the connection failed: the stream was complete, e2e at libcurl's end
        (True, 200, "done", pycurl.E_RECV_ERROR, False, (0, 9173, Outcome.OK)),
        # held open after [DONE] and ended there by netbench: e2e at [DONE]
        (True, 200, "done", 0, True, (0, 1321, Outcome.OK)),
        (True, 200, "done", 0, False, (0, 9173, Outcome.OK)),
        (True, 200, "no_done", pycurl.E_RECV_ERROR, False, (56, 9173, Outcome.RESET)),
        (True, 202, "done", pycurl.E_RECV_ERROR, False, (56, 9173, Outcome.RESET)),
        (True, 200, "stream_error", pycurl.E_RECV_ERROR, False, (56, 9173, Outcome.RESET)),
        (True, 200, "stream_error", 0, False, (0, 9173, Outcome.STREAM_ERROR)),
        (False, 200, "json", pycurl.E_OPERATION_TIMEDOUT, False, (28, 9173, Outcome.TIMEOUT)),
        (False, 200, "json", 0, False, (0, 9173, Outcome.OK)),
    ],
)
def test_what_ends_a_request_decides_its_curl_error_total_mark_and_outcome(
    monkeypatch, streaming, status, body, curl_error, ended_at_done, expected
):
    rig = _rig(monkeypatch, streaming=streaming)
    if streaming:
        error = b'event: error\ndata: {"message": "engine died"}\n\n' if body == "stream_error" else b""
        _short_stream(rig, before_done=error, done=body != "no_done")
    else:
        rig.header(9_000_000_123, b"HTTP/1.1 200 OK\r\n")
        rig.body(9_000_500_456, b'{"choices": []}')
    rig.transfer.ended_at_done = ended_at_done
    record, _, outcome = rig.finish(curl_error, status=status, starttransfer_mark_us=321)
    assert (record.curl_error, record.total_mark_us, outcome) == expected
    assert record.error_class == int(expected[2])


@pytest.mark.parametrize(
    ("attempts", "redirects", "unreceived", "connects", "expected"),
    [
        (1, 0, 0, 0, (False, Outcome.OK)),
        (0, 0, 0, 1, (True, Outcome.OK)),  # no attempt reached PREREQ: no resend either
        (3, 1, 0, 0, (True, Outcome.RESET)),  # one redirect, one resend: the request may have run twice
        (3, 1, 1, 0, (True, Outcome.OK)),  # that resend followed an idle close: harmless
        (2, 0, 1, 0, (True, Outcome.OK)),
        (2, 3, 0, 0, (False, Outcome.OK)),  # redirects beyond the attempts count no resend
    ],
)
def test_resends_beyond_redirects_and_idle_closes_are_resets_on_new_connections(
    monkeypatch, attempts, redirects, unreceived, connects, expected
):
    rig = _rig(monkeypatch, streaming=False)
    for _ in range(attempts):
        rig.attempt(40123)
    rig.transfer.unreceived_attempts = unreceived
    rig.header(1_000_000_000, b"HTTP/1.1 200 OK\r\n")
    record, _, outcome = rig.finish(0, connects=connects, redirects=redirects)
    assert (record.new_connection, outcome, record.error_class) == (*expected, int(expected[1]))
    assert rig.connections.attempts == [(rig.transfer, 40123)] * attempts


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((pycurl.E_COULDNT_CONNECT, 200, True, False), Outcome.REFUSED),
        ((pycurl.E_OPERATION_TIMEDOUT, 503, False, True), Outcome.TIMEOUT),  # curl's error first
        ((pycurl.E_UNSUPPORTED_PROTOCOL, 200, True, False), Outcome.OTHER),  # a code without a class
        ((0, 503, False, True), Outcome.RESET),  # then a resend
        ((0, 500, False, False), Outcome.HTTP_5XX),  # then the status
        ((0, 499, True, False), Outcome.HTTP_4XX),
        ((0, 400, False, False), Outcome.HTTP_4XX),
        ((0, 399, True, False), Outcome.OK),
        ((0, 200, False, False), Outcome.MALFORMED),  # then the stream
        ((0, 200, True, False), Outcome.OK),
    ],
)
def test_outcome_of_ranks_curl_error_then_resend_then_status_then_stream(args, expected):
    assert outcome_of(*args) is expected


def test_outcome_of_counts_no_resend_unless_told():
    assert outcome_of(0, 200, True) is Outcome.OK


# --- the stream's tokens, usage, errors --------------------------------------------------------


def test_continuous_usage_gives_each_event_the_tokens_it_carried(monkeypatch):
    rig = _rig(monkeypatch)
    rig.header(1_000_000_000, b"HTTP/1.1 200 OK\r\n")
    role = {"choices": [{"delta": {"role": "assistant"}}], "usage": {"completion_tokens": 0, "prompt_tokens": 23}}
    rig.stream(1_000_100_000, _sse(role))
    for at_ns, text, cumulative in ((1_000_200_000, "a", 2), (1_000_300_000, "b", 5), (1_000_400_000, "c", 9)):
        rig.stream(at_ns, _sse(_content(text, usage={"completion_tokens": cumulative})))
    rig.stream(1_000_500_000, DONE)
    rig.transfer.digest()
    record, events, _ = rig.finish(0, starttransfer_mark_us=0)
    assert events == [(200, 2, -1), (300, 3, -1), (400, 4, -1)]
    assert _pick(record, "events", "event_tokens", "tokens", "usage_completion_tokens", "usage_prompt_tokens") == (3, 9, 9, 9, 23)


def test_a_usage_of_zero_tokens_is_a_count_not_a_missing_one(monkeypatch):
    rig = _rig(monkeypatch)
    rig.header(1_000_000_000, b"HTTP/1.1 200 OK\r\n")
    rig.stream(1_000_200_000, _sse(_content("a"), {"choices": [], "usage": {"completion_tokens": 0, "prompt_tokens": 0}}) + DONE)
    rig.transfer.digest()
    record, events, _ = rig.finish(0, starttransfer_mark_us=0)
    assert events == [(200, 1, -1)]
    assert _pick(record, "events", "event_tokens", "tokens", "usage_completion_tokens", "usage_prompt_tokens") == (1, 1, 0, 0, 0)


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (b'event: error\ndata: {"message": "boom"}\n\n' + _sse({"error": {"message": "later"}}), "boom"),
        (b"event: error\ndata:\n\n", "(no message)"),
    ],
)
def test_a_stream_error_keeps_the_servers_first_words_and_fails_the_request(monkeypatch, stream, message):
    rig = _rig(monkeypatch)
    _short_stream(rig, before_done=stream)
    record, _, outcome = rig.finish(0, starttransfer_mark_us=321)
    assert (rig.transfer.stream_error, rig.transfer.malformed, outcome, record.error_class) == (message, "", Outcome.STREAM_ERROR, 10)
    assert _pick(record, "done_mark_us", "events") == (1321, 1)


@pytest.mark.parametrize(
    ("chunks", "malformed"),
    [
        ([b"data: nope\n\n", b"data: [1]\n\n"], "not JSON"),
        ([b"a" * (MAX_EVENT_BYTES + 1)], "an event larger than the parser's bound"),
        ([b"data: nope\n\n", b"a" * (MAX_EVENT_BYTES + 1)], "not JSON"),
    ],
)
def test_a_malformed_stream_keeps_its_first_fault_and_fails_the_request(monkeypatch, chunks, malformed):
    rig = _rig(monkeypatch)
    rig.header(1_000_000_000, b"HTTP/1.1 200 OK\r\n")
    for index, chunk in enumerate(chunks):
        rig.stream(1_000_100_000 + index, chunk)
    rig.stream(1_000_900_000, DONE)
    rig.transfer.digest()
    record, _, outcome = rig.finish(0, starttransfer_mark_us=0)
    assert (rig.transfer.malformed, rig.transfer.stream_error, outcome, record.error_class) == (malformed, "", Outcome.MALFORMED, 8)
    # the parser stops at an overflow: no [DONE] after it
    assert record.done_mark_us == (900 if len(chunks[-1]) < MAX_EVENT_BYTES else -1)


@pytest.mark.parametrize(("first", "malformed"), [(b"", "the stream could not be read (RuntimeError)"), (b"data: nope\n\n", "not JSON")])
def test_an_exception_while_parsing_fails_only_that_request(monkeypatch, first, malformed):
    def refuse(transfer: Transfer) -> None:
        raise RuntimeError("a bug in the caller")

    rig = _rig(monkeypatch, on_done_seen=refuse)
    _short_stream(rig, before_done=first)
    record, _, outcome = rig.finish(0, starttransfer_mark_us=321)
    assert (rig.transfer.malformed, outcome, record.done_mark_us, record.events) == (malformed, Outcome.MALFORMED, 1321, 1)


def test_only_a_streams_first_unparsed_chunk_puts_it_on_the_backlog(monkeypatch):
    rig = _rig(monkeypatch)
    t = rig.transfer
    rig.stream(10, b": a\n\n")
    assert rig.backlog == [t]
    rig.stream(20, b": b\n\n")
    assert rig.backlog == [t]
    rig.backlog.pop()
    t.digest()
    rig.stream(30, b": c\n\n")
    assert rig.backlog == [t]


# --- TCP, TLS, what the server said -------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (BEFORE, AFTER, (2400, 204_000, 15, 2450, 610, 4, 6)),
        (BEFORE, None, (2400, 204_000, -1, -1, -1, -1, -1)),
        (None, AFTER, (-1, -1, 15, 2450, 610, -1, -1)),
        # counters lower after than before (another socket after a resend): never negative
        (BEFORE, AFTER._replace(total_retrans=1, ooo_packets=1), (2400, 204_000, 15, 2450, 610, 0, 0)),
        (BEFORE, AFTER._replace(ooo_packets=-1), (2400, 204_000, 15, 2450, 610, 4, -1)),  # a kernel before 5.4
        (BEFORE._replace(ooo_packets=0), AFTER._replace(ooo_packets=0), (2400, 204_000, 15, 2450, 610, 4, 0)),
    ],
)
def test_tcp_readings_before_and_after_give_rtts_and_what_happened_between(monkeypatch, before, after, expected):
    rig = _rig(monkeypatch, streaming=False, connections=FakeConnections(before, (901, 0), after))
    rig.attempt()
    rig.header(1_000_000_000, b"HTTP/1.1 200 OK\r\n")
    record, _, _ = rig.finish(0)
    assert _pick(record, "tcp_srtt_before_us", "tcp_rto_us", "tcp_min_rtt_us", "tcp_srtt_us", "tcp_rttvar_us",
                 "retransmits", "ooo_packets") == expected  # fmt: skip
    assert _pick(record, "handshake_rtt_us", "syn_retries") == (901, 0)


@pytest.mark.parametrize(
    ("connects", "appconnect", "received", "expected"),
    [
        (1, 257, 5123, (True, 5123)),
        (0, 257, 5123, (False, -1)),  # a reused connection did no handshake
        (1, 0, 5123, (True, -1)),  # plain HTTP
        (1, 1, 5123, (True, 5123)),
        (1, 257, None, (True, -1)),  # no reading before the request
        (1, 257, 0, (True, 0)),
        (1, 257, -1, (True, -1)),  # a kernel before 4.1
    ],
)
def test_tls_handshake_bytes_come_only_from_a_new_tls_connection(monkeypatch, connects, appconnect, received, expected):
    before = None if received is None else BEFORE._replace(bytes_received=received)
    rig = _rig(monkeypatch, streaming=False, connections=FakeConnections(before, (877, 2), AFTER))
    rig.attempt()
    rig.header(1_000_000_000, b"HTTP/1.1 200 OK\r\n")
    record, _, _ = rig.finish(0, connects=connects, appconnect_mark_us=appconnect)
    assert _pick(record, "new_connection", "tls_handshake_bytes") == expected


@pytest.mark.parametrize(
    ("timings", "headers", "expected"),
    [
        (None, [], (-1, -1, -1, -1, -1, 0)),
        # llama.cpp's own timings win over headers
        (LLAMA_TIMINGS, [b"Server-Timing: queue;dur=0.25, total;dur=3.5\r\n"], (-1, 12_345, 67_891, 80_236, 13, 1)),
        (None, [b"Retry-After: 3\r\n", b"Server-Timing: queue;dur=0.25, total;dur=3.5\r\n"], (250, -1, -1, 3500, -1, 3)),
        # timings with nothing usable in them: the headers say it
        ({"prompt_ms": "soon"}, [b"Server-Timing: decode;dur=4.125\r\n"], (-1, -1, 4125, -1, -1, 3)),
        (None, [b"x-queue-time: 7\r\n", b"x-total-time: 19\r\n"], (7000, -1, -1, 19_000, -1, 2)),
    ],
)
def test_server_timings_come_from_the_stream_else_the_headers(monkeypatch, timings, headers, expected):
    rig = _rig(monkeypatch)
    rig.header(9_000_000_123, b"HTTP/1.1 200 OK\r\n", *headers, b"\r\n")
    final = [] if timings is None else [{"choices": [], "timings": timings}]
    rig.stream(9_000_500_456, _sse(_content("a"), *final) + DONE)
    rig.transfer.digest()
    record, _, outcome = rig.finish(0, starttransfer_mark_us=321)
    assert _pick(record, *SERVER_FIELDS) == expected
    assert outcome is Outcome.OK


# --- _Connections: a request's attempts on libcurl's sockets ------------------------------------


class FakeTcp:
    """TcpSockets answering from dicts: a descriptor's reading and local port."""

    def __init__(self) -> None:
        self.samples: dict[int, TcpSample] = {}
        self.ports: dict[int, int] = {}

    def sample(self, fd: int) -> TcpSample | None:
        return self.samples.get(fd)

    def local_port(self, fd: int) -> int:
        return self.ports.get(fd, -1)

    def forget(self, fd: int) -> None:
        self.samples.pop(fd, None)


@pytest.fixture
def sockets():
    """A _Connections over a fake TCP_INFO, and a real descriptor (its on_close closes it)."""
    connections, tcp = _Connections(), FakeTcp()
    connections.tcp = tcp
    fd = os.open(os.devnull, os.O_RDONLY)
    connections.on_open(fd, 0)
    tcp.ports[fd] = 40123
    yield connections, tcp, fd
    if fd in connections._unmapped or fd in connections._fd_by_port.values():  # on_close did not close it
        os.close(fd)


@pytest.mark.parametrize(("min_rtt_us", "handshake_rtt_us"), [(17, 17), (0, 0), (-1, 2400)])
def test_an_attempt_reads_its_connection_and_its_handshake_is_the_first_reading(sockets, min_rtt_us, handshake_rtt_us):
    connections, tcp, fd = sockets
    transfer = SimpleNamespace(unreceived_attempts=0)
    tcp.samples[fd] = first = BEFORE._replace(min_rtt_us=min_rtt_us)
    assert connections.begin_attempt(transfer, 40123) == (first, (handshake_rtt_us, 3))
    tcp.samples[fd] = second = BEFORE._replace(min_rtt_us=9, rtt_us=2300, total_retrans=5)
    assert connections.begin_attempt(transfer, 40123) == (second, (handshake_rtt_us, 3))


def test_an_attempt_on_an_unknown_socket_reads_nothing(sockets):
    connections, tcp, fd = sockets
    transfer = SimpleNamespace(unreceived_attempts=0)
    assert connections.begin_attempt(transfer, 40999) == (None, (-1, -1))
    tcp.samples[fd] = BEFORE._replace(state=8)  # closed by the peer: harmless, were it the attempt's
    assert connections.on_close(fd) == 0
    assert transfer.unreceived_attempts == 0


def test_an_attempt_on_a_connection_the_server_had_closed_is_unreceived(sockets):
    connections, tcp, fd = sockets
    transfer = SimpleNamespace(unreceived_attempts=0)
    tcp.samples[fd] = BEFORE._replace(state=8)  # TCP_CLOSE_WAIT
    connections.begin_attempt(transfer, 40123)
    assert connections.on_close(fd) == 0
    assert transfer.unreceived_attempts == 1


def test_a_completed_transfer_reads_its_socket_and_forgets_its_attempt(sockets):
    connections, tcp, fd = sockets
    transfer = SimpleNamespace(unreceived_attempts=0)
    tcp.samples[fd] = BEFORE._replace(state=8)
    connections.begin_attempt(transfer, 40123)
    tcp.samples[fd] = AFTER
    handle = FakeHandle({pycurl.ACTIVESOCKET: fd})
    assert connections.complete(handle) == AFTER
    assert connections.complete(handle) == AFTER  # twice: no attempt left, no error
    tcp.samples[fd] = BEFORE._replace(state=8)
    assert connections.on_close(fd) == 0
    assert transfer.unreceived_attempts == 0  # the completed attempt is not looked at again


def test_a_completed_transfer_without_a_socket_reads_nothing(sockets):
    connections, _, _ = sockets

    class NoSocket:
        def getinfo(self, code: int) -> int:
            raise pycurl.error("no socket")

    assert connections.complete(NoSocket()) is None

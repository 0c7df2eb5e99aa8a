"""The only module that imports pycurl: handle setup, the CurlMulti loop, getinfo, outcomes.

A `Transfer` is one in-flight slot: a reusable easy handle (so its connection is kept alive)
plus the marks of the request it is performing. Write-callback marks are taken with
`time.monotonic_ns()` and anchored at the moment the handle is added to the multi, so they
share one µs axis with libcurl's cumulative ``*_TIME_T`` marks (DESIGN.md, "Clocks and marks").
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Callable
from io import BytesIO
from time import monotonic_ns

import pycurl

from netbench.outcomes import Outcome
from netbench.spec import RunSpec
from netbench.sse import EventKind, SSEParser, interpret
from netbench.workloads import Request

# POSTTRANSFER exists from libcurl 8.10 on; before that, send is folded into wait.
_HAS_POSTTRANSFER = hasattr(pycurl, "POSTTRANSFER_TIME_T") and pycurl.version_info()[2] >= 0x080A00
_MARK_INFOS = (
    pycurl.QUEUE_TIME_T if hasattr(pycurl, "QUEUE_TIME_T") else None,
    pycurl.NAMELOOKUP_TIME_T,
    pycurl.CONNECT_TIME_T,
    pycurl.APPCONNECT_TIME_T,
    pycurl.PRETRANSFER_TIME_T,
    pycurl.POSTTRANSFER_TIME_T if _HAS_POSTTRANSFER else None,
    pycurl.STARTTRANSFER_TIME_T,
    pycurl.TOTAL_TIME_T,
)

_CURL_OUTCOMES: dict[int, Outcome] = {
    6: Outcome.DNS,  # COULDNT_RESOLVE_HOST
    5: Outcome.DNS,  # COULDNT_RESOLVE_PROXY
    7: Outcome.REFUSED,  # COULDNT_CONNECT
    28: Outcome.TIMEOUT,  # OPERATION_TIMEDOUT
    35: Outcome.TLS,  # SSL_CONNECT_ERROR
    58: Outcome.TLS,  # SSL_CERTPROBLEM
    59: Outcome.TLS,  # SSL_CIPHER
    60: Outcome.TLS,  # PEER_FAILED_VERIFICATION
    77: Outcome.TLS,  # SSL_CACERT_BADFILE
    83: Outcome.TLS,  # SSL_ISSUER_ERROR
    90: Outcome.TLS,  # SSL_PINNEDPUBKEYNOTMATCH
    91: Outcome.TLS,  # SSL_INVALIDCERTSTATUS
    16: Outcome.RESET,  # HTTP2 framing layer
    18: Outcome.RESET,  # PARTIAL_FILE: closed before the whole body (truncated chunks)
    52: Outcome.RESET,  # GOT_NOTHING
    55: Outcome.RESET,  # SEND_ERROR
    56: Outcome.RESET,  # RECV_ERROR (RST)
    92: Outcome.RESET,  # HTTP2_STREAM
    8: Outcome.MALFORMED,  # WEIRD_SERVER_REPLY
    61: Outcome.MALFORMED,  # BAD_CONTENT_ENCODING
}
#: what a user can do about a failure, by curl error code (shown beside curl's own message)
_CURL_HINTS: dict[int, str] = {
    28: "raise --timeout if the server is only slow",
    60: "pass the server's CA with --cacert FILE, or skip verification with --insecure",
}

#: parsing runs in slices this long between checks for input: an event that arrives meanwhile
#: waits at most about this much for its arrival time, and a check (a select over every
#: transfer's socket) is paid once per slice, not once per event
_DIGEST_SLICE_NS = 50_000

_TCP_INFO = getattr(socket, "TCP_INFO", None)
# struct tcp_info (linux/tcp.h): tcpi_rtt (smoothed) at byte 68, tcpi_min_rtt (kernel >= 4.6) at 148.
_TCPI_RTT_OFFSET = 68
_TCPI_MIN_RTT_OFFSET = 148


def curl_version() -> str:
    return pycurl.version


_RESENT_NOTE = (
    "reset: a reused connection was reset before any response, and libcurl sent the request again "
    "on a new connection (the server may have received it twice); counted as a reset"
)


def _curl_error_note(curl_error: int, message: str) -> str:
    """One line for the report: the failure class, curl's code and message, and a hint."""
    note = f"{_CURL_OUTCOMES.get(curl_error, Outcome.OTHER).key}: curl error {curl_error}: {message}"
    hint = _CURL_HINTS.get(curl_error)
    return f"{note} ({hint})" if hint else note


def outcome_of(curl_error: int, http_status: int, stream_ok: bool, resent: bool = False) -> Outcome:
    """Classify a finished request (curl's error first, then a re-send, then HTTP status, then
    the stream). A re-sent request is the reset any other client would have reported, and its
    marks add up two attempts: it stays out of the success histograms."""
    if curl_error:
        return _CURL_OUTCOMES.get(curl_error, Outcome.OTHER)
    if resent:
        return Outcome.RESET
    if http_status >= 500:
        return Outcome.HTTP_5XX
    if http_status >= 400:
        return Outcome.HTTP_4XX
    return Outcome.OK if stream_ok else Outcome.MALFORMED


def _default_cafile() -> str | None:
    paths = ssl.get_default_verify_paths()
    return paths.cafile or paths.openssl_cafile


def configure(handle: pycurl.Curl, spec: RunSpec, request: Request) -> None:
    """Options shared by every handle of a run."""
    handle.setopt(pycurl.URL, request.url)
    handle.setopt(pycurl.NOSIGNAL, 1)  # signals and threaded resolvers do not mix
    handle.setopt(pycurl.TCP_NODELAY, 1)
    handle.setopt(pycurl.HTTPHEADER, list(request.headers))
    handle.setopt(pycurl.TIMEOUT_MS, int(spec.timeout_s * 1000))
    handle.setopt(pycurl.CONNECTTIMEOUT_MS, int(min(spec.timeout_s, 30.0) * 1000))
    handle.setopt(pycurl.FOLLOWLOCATION, 1 if spec.follow_redirects else 0)
    handle.setopt(pycurl.UNRESTRICTED_AUTH, 0)  # never send credentials to another host
    handle.setopt(pycurl.MAXREDIRS, 10)
    if request.body is not None:
        handle.setopt(pycurl.POST, 1)
        handle.setopt(pycurl.POSTFIELDS, request.body)
    else:
        handle.setopt(pycurl.HTTPGET, 1)
    if spec.insecure:
        handle.setopt(pycurl.SSL_VERIFYPEER, 0)
        handle.setopt(pycurl.SSL_VERIFYHOST, 0)
    else:
        cafile = spec.cacert or _default_cafile()
        if cafile:
            handle.setopt(pycurl.CAINFO, cafile)
    handle.setopt(
        pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_2_0 if spec.http2 else pycurl.CURL_HTTP_VERSION_1_1
    )


class _TcpInfo:
    """The kernel's RTT of a transfer's socket, read through one socket object per descriptor.

    `socket.fromfd` per request (a dup, an object and a close) cost more than the rest of the
    request's bookkeeping; a non-owning view of libcurl's descriptor, made once per descriptor
    number and shared by the driver's transfers (they take turns on the multi's connections),
    leaves one getsockopt per request. A view never closes its descriptor: libcurl owns it, so
    `release` detaches them all (the driver's close does).
    """

    __slots__ = ("_views",)

    def __init__(self) -> None:
        self._views: dict[int, socket.socket] = {}

    def rtt_us(self, handle: pycurl.Curl) -> int:
        """The RTT, µs, or -1 where the platform has none.

        The minimum RTT is preferred to the smoothed one: delayed ACKs of a streamed response
        inflate srtt by milliseconds even on loopback, and the split subtracts this from wait."""
        if _TCP_INFO is None:
            return -1
        try:
            fd = handle.getinfo(pycurl.ACTIVESOCKET)
            if fd < 0:
                return -1
            view = self._views.get(fd)
            if view is None:
                view = self._views[fd] = socket.socket(socket.AF_INET, socket.SOCK_STREAM, fileno=fd)
            info = view.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCPI_MIN_RTT_OFFSET + 4)
            offset = _TCPI_MIN_RTT_OFFSET if len(info) >= _TCPI_MIN_RTT_OFFSET + 4 else _TCPI_RTT_OFFSET
            return struct.unpack_from("I", info, offset)[0]
        except (OSError, pycurl.error):
            return -1

    def release(self) -> None:
        for view in self._views.values():
            view.detach()
        self._views.clear()


class Transfer:
    """One reusable in-flight slot and the marks of its current request."""

    __slots__ = (
        "handle", "streaming", "parser", "anchor_ns", "intended_start_us", "start_us", "first_byte_ns",
        "first_event_ns", "first_token_ns", "last_token_ns", "done_ns", "tokens", "usage_tokens",
        "malformed", "itl_us", "token_lag_us", "measured", "tcp_info", "chunks", "_backlog", "resent",
    )  # fmt: skip

    def __init__(self, spec: RunSpec, request: Request, backlog: list[Transfer], tcp_info: _TcpInfo) -> None:
        self.handle = pycurl.Curl()
        configure(self.handle, spec, request)
        self.streaming = request.streaming
        self.handle.setopt(pycurl.WRITEFUNCTION, self._on_stream if self.streaming else self._on_body)
        self.parser = SSEParser()
        self.tcp_info = tcp_info
        #: (arrival ns, bytes) of stream chunks not parsed yet; `backlog` lists the transfers that have some
        self.chunks: list[tuple[int, bytes]] = []
        self._backlog = backlog
        self.itl_us: list[int] = []
        self.token_lag_us: list[int] = []
        self.begin(0, 0, measured=False)

    def begin(self, intended_start_us: int, start_us: int, measured: bool) -> None:
        self.intended_start_us = intended_start_us
        self.start_us = start_us
        self.measured = measured
        self.first_byte_ns = self.first_event_ns = self.first_token_ns = -1
        self.last_token_ns = self.done_ns = -1
        self.tokens = 0
        self.usage_tokens = -1
        self.malformed = False
        self.resent = False
        if self.streaming:
            self.parser = SSEParser()
            self.chunks = []
            self.itl_us = []
            self.token_lag_us = []
        self.anchor_ns = monotonic_ns()

    # The write callbacks run for every body chunk: keep them small.
    def _on_body(self, chunk: bytes) -> None:
        if self.first_byte_ns < 0:
            self.first_byte_ns = monotonic_ns()

    def _on_stream(self, chunk: bytes) -> None:
        # Only the arrival time is taken here; MultiDriver parses later (`digest`): in a burst of
        # events on many streams, one stream's JSON would otherwise delay the next one's arrival time.
        if not self.chunks:
            self._backlog.append(self)
        self.chunks.append((monotonic_ns(), chunk))

    def digest(self) -> None:
        """Parse the stream chunks received since the last digest, each at its arrival time."""
        chunks, self.chunks = self.chunks, []
        for now_ns, chunk in chunks:
            if self.first_byte_ns < 0:
                self.first_byte_ns = now_ns
            for data in self.parser.feed(chunk):
                event = interpret(data)
                if self.first_event_ns < 0:
                    self.first_event_ns = now_ns
                kind = event.kind
                if kind is EventKind.TOKEN:
                    if self.first_token_ns < 0:
                        self.first_token_ns = now_ns
                    else:
                        self.itl_us.append((now_ns - self.last_token_ns) // 1000)
                    self.last_token_ns = now_ns
                    self.tokens += 1
                elif kind is EventKind.DONE:
                    self.done_ns = now_ns
                elif kind is EventKind.MALFORMED:
                    self.malformed = True
                if event.usage_completion_tokens >= 0:
                    self.usage_tokens = event.usage_completion_tokens
                if event.sent_ns >= 0:
                    self.token_lag_us.append((now_ns - event.sent_ns) // 1000)

    def _mark_us(self, ns: int) -> int:
        return (ns - self.anchor_ns) // 1000 if ns >= 0 else -1

    def finish(self, curl_error: int, worker: int) -> tuple:
        """The request's record, as a tuple in `phases.RECORD_DTYPE` order."""
        info = self.handle.getinfo
        status = info(pycurl.RESPONSE_CODE)
        new_connection = info(pycurl.NUM_CONNECTS) > 0
        marks = [info(m) if m is not None else -1 for m in _MARK_INFOS]
        stream_ok = not self.streaming or (not self.malformed and self.done_ns >= 0)
        outcome = outcome_of(curl_error, status, stream_ok, self.resent)
        tcp_rtt = -1 if new_connection or outcome is not Outcome.OK else self.tcp_info.rtt_us(self.handle)
        return (
            self.intended_start_us,
            self.start_us,
            *marks,
            self._mark_us(self.first_byte_ns),
            self._mark_us(self.first_event_ns),
            self._mark_us(self.first_token_ns),
            self._mark_us(self.last_token_ns),
            self._mark_us(self.done_ns),
            tcp_rtt,
            self.tokens,
            self.usage_tokens,
            status,
            curl_error,
            int(outcome),
            new_connection,
            worker,
        )

    def close(self) -> None:
        self.handle.close()


class MultiDriver:
    """One CurlMulti driving a fixed set of slots; the caller decides when a slot starts."""

    def __init__(self, spec: RunSpec, request: Request, slots: int) -> None:
        self.multi = pycurl.CurlMulti()
        self.multi.setopt(pycurl.M_MAXCONNECTS, max(slots, 1))
        self._backlog: list[Transfer] = []
        self._tcp_info = _TcpInfo()
        self.transfers = [Transfer(spec, request, self._backlog, self._tcp_info) for _ in range(slots)]
        self.idle = list(self.transfers)
        self._by_handle = {t.handle: t for t in self.transfers}
        #: why requests failed, one report line per kind ("curl 60", "resent"), from its first occurrence
        self.failure_notes: dict[str, str] = {}
        self._request_size = 0  # bytes libcurl sends for one request (see _resent)

    @property
    def active(self) -> int:
        return len(self.transfers) - len(self.idle)

    def start(self, intended_start_us: int, start_us: int, measured: bool) -> None:
        transfer = self.idle.pop()
        transfer.begin(intended_start_us, start_us, measured)
        self.multi.add_handle(transfer.handle)

    def step(self, timeout_s: float, on_done: Callable[[Transfer, int], None]) -> int:
        """Drive transfers; wait at most timeout_s for activity. Returns how many finished."""
        finished = self._perform(on_done)
        if finished:
            return finished
        # Parse the streams' chunks in short slices, and only while no socket has more to read:
        # taking arrival times comes first, parsing fills the time the loop would wait anyway.
        backlog = self._backlog
        while backlog:
            if self.multi.select(0) > 0:
                return self._perform(on_done)
            slice_end_ns = monotonic_ns() + _DIGEST_SLICE_NS
            while backlog and monotonic_ns() < slice_end_ns:
                backlog.pop().digest()
        curl_timeout_ms = self.multi.timeout()
        if curl_timeout_ms >= 0:
            timeout_s = min(timeout_s, curl_timeout_ms / 1000)
        if timeout_s > 0:
            self.multi.select(timeout_s)
        return self._perform(on_done)

    def _perform(self, on_done: Callable[[Transfer, int], None]) -> int:
        while self.multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
        finished = 0
        while True:
            queued, ok_handles, failed = self.multi.info_read()
            for handle in ok_handles:
                self._complete(handle, 0, on_done)
            for handle, curl_error, message in failed:
                if f"curl {curl_error}" not in self.failure_notes:
                    self.failure_notes[f"curl {curl_error}"] = _curl_error_note(curl_error, message)
                self._complete(handle, curl_error, on_done)
            finished += len(ok_handles) + len(failed)
            if not queued:
                return finished

    def _complete(self, handle: pycurl.Curl, curl_error: int, on_done: Callable[[Transfer, int], None]) -> None:
        transfer = self._by_handle[handle]
        transfer.digest()  # whatever of the stream is not parsed yet
        transfer.resent = self._resent(handle)
        on_done(transfer, curl_error)  # before remove_handle: the socket is still the transfer's (TCP_INFO)
        self.multi.remove_handle(handle)
        self.idle.append(transfer)

    def _resent(self, handle: pycurl.Curl) -> bool:
        """Whether libcurl sent this request twice. When a reused connection dies before any
        response byte, libcurl silently sends the request again on a new connection; the request
        bytes then add up to two requests. Every request of a run is the same bytes, and the first
        to complete ran on a new connection (nothing to reuse yet), so it gives one request's size.
        Followed redirects add up too, so they are not judged."""
        size = handle.getinfo(pycurl.REQUEST_SIZE)
        if not self._request_size:
            self._request_size = size
            return False
        if size < 2 * self._request_size or handle.getinfo(pycurl.REDIRECT_COUNT):
            return False
        self.failure_notes.setdefault("resent", _RESENT_NOTE)
        return True

    def abort_all(self) -> None:
        """Stop every in-flight transfer without recording it (interrupted runs)."""
        for transfer in self.transfers:
            if transfer not in self.idle:
                self.multi.remove_handle(transfer.handle)
                self.idle.append(transfer)

    def close(self) -> None:
        self.abort_all()
        for transfer in self.transfers:
            transfer.close()
        self._tcp_info.release()
        self.multi.close()


def fetch(spec: RunSpec, request: Request) -> tuple[int, bytes, int]:
    """One blocking request outside the measured run (probes): (http status, body, curl error)."""
    handle = pycurl.Curl()
    body = BytesIO()
    try:
        configure(handle, spec, request)
        handle.setopt(pycurl.WRITEDATA, body)
        handle.perform()
        return handle.getinfo(pycurl.RESPONSE_CODE), body.getvalue(), 0
    except pycurl.error as error:
        return 0, body.getvalue(), error.args[0]
    finally:
        handle.close()

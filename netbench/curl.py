"""The only module that imports pycurl: handle setup, the CurlMulti loop, getinfo, outcomes.

A `Transfer` is one in-flight slot: a reusable easy handle (so its connection is kept alive)
plus the marks of the request it is performing. Callback marks are taken with
`time.monotonic_ns()` and anchored where libcurl's clock for the transfer started (found from
the first status line, which reaches the header callback as libcurl stamps STARTTRANSFER), so
they share one µs axis with libcurl's cumulative ``*_TIME_T`` marks (docs/architecture.md,
"Clocks and marks"). Whatever a server sends, one request fails at worst: never the worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import monotonic_ns
from urllib.parse import urljoin, urlsplit

import pycurl

from netbench import signals
from netbench.outcomes import Outcome
from netbench.pacing import LATE_INPUT_US
from netbench.phases import TIMING_SOURCES, Record
from netbench.secrets import is_secret_header, redact
from netbench.server_timing import ServerTimings, from_headers, from_llama_cpp, header_pairs
from netbench.spec import RunSpec
from netbench.sse import MAX_MESSAGE_CHARS, EventKind, SSEParser, interpret
from netbench.tcpinfo import TcpSample, TcpSockets
from netbench.workloads import Request

# POSTTRANSFER exists from libcurl 8.10 on; before that, send is folded into wait.
_HAS_POSTTRANSFER = hasattr(pycurl, "POSTTRANSFER_TIME_T") and pycurl.version_info()[2] >= 0x080A00
_MARK_INFOS = (
    ("queue_mark_us", getattr(pycurl, "QUEUE_TIME_T", None)),
    ("namelookup_mark_us", pycurl.NAMELOOKUP_TIME_T),
    ("connect_mark_us", pycurl.CONNECT_TIME_T),
    ("appconnect_mark_us", pycurl.APPCONNECT_TIME_T),
    ("pretransfer_mark_us", pycurl.PRETRANSFER_TIME_T),
    ("posttransfer_mark_us", pycurl.POSTTRANSFER_TIME_T if _HAS_POSTTRANSFER else None),
    ("starttransfer_mark_us", pycurl.STARTTRANSFER_TIME_T),
    ("total_mark_us", pycurl.TOTAL_TIME_T),
)

#: pycurl exports no constant for it
_CURLE_HTTP2_STREAM = 92
_CURL_OUTCOMES: dict[int, Outcome] = {
    pycurl.E_COULDNT_RESOLVE_HOST: Outcome.DNS,
    pycurl.E_COULDNT_RESOLVE_PROXY: Outcome.DNS,
    pycurl.E_COULDNT_CONNECT: Outcome.REFUSED,
    pycurl.E_OPERATION_TIMEDOUT: Outcome.TIMEOUT,
    pycurl.E_SSL_CONNECT_ERROR: Outcome.TLS,
    pycurl.E_SSL_CERTPROBLEM: Outcome.TLS,
    pycurl.E_SSL_CIPHER: Outcome.TLS,
    pycurl.E_PEER_FAILED_VERIFICATION: Outcome.TLS,
    pycurl.E_SSL_CACERT_BADFILE: Outcome.TLS,
    pycurl.E_SSL_ISSUER_ERROR: Outcome.TLS,
    pycurl.E_SSL_PINNEDPUBKEYNOTMATCH: Outcome.TLS,
    pycurl.E_SSL_INVALIDCERTSTATUS: Outcome.TLS,
    pycurl.E_HTTP2: Outcome.RESET,
    pycurl.E_PARTIAL_FILE: Outcome.RESET,  # closed before the whole body (truncated chunks)
    pycurl.E_GOT_NOTHING: Outcome.RESET,
    pycurl.E_SEND_ERROR: Outcome.RESET,
    pycurl.E_RECV_ERROR: Outcome.RESET,  # RST
    _CURLE_HTTP2_STREAM: Outcome.RESET,
    pycurl.E_FTP_WEIRD_SERVER_REPLY: Outcome.MALFORMED,  # code 8, CURLE_WEIRD_SERVER_REPLY in libcurl now
    pycurl.E_BAD_CONTENT_ENCODING: Outcome.MALFORMED,
}
#: what a user can do about a failure, by curl error code (shown beside curl's own message)
_CURL_HINTS: dict[int, str] = {
    pycurl.E_OPERATION_TIMEDOUT: "raise --timeout if the server is only slow",
    pycurl.E_PEER_FAILED_VERIFICATION: "pass the server's CA with --cacert FILE, or skip verification with --insecure",
}

#: parsing runs in slices this long between checks for input: an event that arrives meanwhile
#: waits at most about this much for its arrival time, and a check (a select over every
#: transfer's socket) is paid once per slice, not once per event
_DIGEST_SLICE_NS = 50_000
#: after `[DONE]`, how long the response may take to end before netbench ends it: the stream is
#: complete at [DONE], and a server or proxy that holds the response open must not turn every
#: request into a timeout. Long enough that a response whose end is merely late is not cut (a
#: cut response closes its connection, and the next request would pay a new one).
_END_AFTER_DONE_NS = 50_000_000
#: bytes of an error response kept to explain the failure
_ERROR_BODY_BYTES = 4096
#: the most a probe or a /metrics scrape reads: a larger body is refused, not held in memory
FETCH_BODY_BYTES = 16 * 1024 * 1024
#: how often a probe looks for a stop signal (Ctrl-C) while it waits
_FETCH_POLL_S = 0.05
#: late input is looked for only after a perform that followed LATE_INPUT_US without reading
#: (input that came later waited less), once the perform has read and stamped what it found,
#: on at most this many sockets (in turn): never on the per-chunk path
_INPUT_CHECK_SOCKETS = 64
#: last_data_recv counts kernel ticks (1-10 ms, floored): a segment counts as arrived after a
#: read only when its age is below the time since that read by more than a tick
_TICK_US = 10_000
#: secret headers libcurl itself withholds from another host on a followed redirect
_WITHHELD_BY_LIBCURL = frozenset(("authorization", "cookie"))


def curl_version() -> str:
    return pycurl.version


_RESENT_NOTE = (
    "reset: a reused connection was reset before any response, and libcurl sent the request again "
    "on a new connection (the server may have received it twice); counted as a reset"
)
_IDLE_CLOSED_NOTE = (
    "the server closed keep-alive connections without answering as requests were sent on them (a FIN and no "
    "response byte, or closed before); libcurl sent those requests again on new connections, counted once as "
    "successes on new connections"
)
_ENDED_AT_DONE_NOTE = (
    "the server held responses open after [DONE]: netbench ended them there (e2e is the arrival of [DONE]; "
    "their connections were closed, so the next requests opened new ones)"
)
_ERROR_AFTER_DONE_NOTE = (
    "the connection failed after [DONE] had arrived: the streams were complete, so the requests are counted "
    "as successes (e2e ends at the failure)"
)


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, the port made explicit: what "another host" means."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    return parts.scheme.lower(), (parts.hostname or "").lower(), port or {"http": 80, "https": 443}.get(parts.scheme.lower())


class RedirectGuard:
    """Refuses a followed redirect to another host (scheme, host or port) when the request
    carries secret headers that libcurl would send there: libcurl withholds only Authorization
    and Cookie from another host, and forwards every other custom header (X-Api-Key, api-key,
    ...). The redirect's target is read from its Location header; refusing aborts the transfer
    before libcurl follows it (a failed request, and a note naming the target and the headers)."""

    __slots__ = ("url", "origin", "secrets", "redirecting", "refused")

    def __init__(self, url: str, secrets: tuple[str, ...]) -> None:
        self.url, self.origin, self.secrets = url, _origin(url), secrets
        self.redirecting = False
        #: the origin a redirect was refused to, "" when none was
        self.refused = ""

    @classmethod
    def of(cls, spec: RunSpec, request: Request) -> RedirectGuard | None:
        """The guard a request needs; None when it follows no redirect or carries no such header."""
        if not spec.follow_redirects:
            return None
        names = [line.partition(":")[0].strip() for line in request.headers]
        secrets = tuple(n for n in names if is_secret_header(n) and n.lower() not in _WITHHELD_BY_LIBCURL)
        return cls(request.url, secrets) if secrets else None

    def reset(self) -> None:
        self.redirecting, self.refused = False, ""

    def allows(self, line: bytes) -> bool:
        """Called with every header line; False: abort the transfer, it would leak the secrets."""
        if line[:5] == b"HTTP/":
            parts = line.split(None, 2)
            self.redirecting = len(parts) > 1 and parts[1][:1] == b"3"
            return True
        if not self.redirecting or line[:9].lower() != b"location:":
            return True
        # A relative Location stays on the host; an absolute one names its own.
        target = urljoin(self.url, line[9:].strip().decode("latin-1"))
        origin = _origin(target)
        if origin == self.origin:
            return True
        self.refused = f"{origin[0]}://{origin[1]}:{origin[2]}"
        return False

    def note(self) -> str:
        return (
            f"other: the server redirected to {self.refused}, another host, and netbench did not follow: libcurl "
            f"would send the secret header(s) {', '.join(self.secrets)} there (pass the target's own URL as --url)"
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


def error_message(body: bytes) -> str:
    """The server's own words for an HTTP error: the JSON error message (OpenAI and vLLM:
    {"error": {"message": ...}}; FastAPI: {"detail": ...}), else the body's first line."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        for candidate in (error.get("message") if isinstance(error, dict) else error, data.get("message"), data.get("detail")):
            if isinstance(candidate, str) and candidate.strip():
                return candidate.strip()[:MAX_MESSAGE_CHARS]
    text = body.decode("utf-8", "replace")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return first[:MAX_MESSAGE_CHARS]


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


class _Connections:
    """libcurl's sockets as they open, carry requests and close.

    A request's attempt is looked at just before it is sent (PREREQFUNCTION, by the connection's
    local port) and again when its socket closes (CLOSESOCKETFUNCTION): libcurl sends a request
    again when a reused connection dies before any response. The attempt was harmless when the
    server had closed the connection before it (its FIN or RST was there), or ended the
    connection in order meanwhile (a FIN and no response byte: it closed a keep-alive connection,
    as llama.cpp's server does after every stream). A connection reset while the request was on
    it (an RST without FIN) may have delivered the request: the server may have received it twice.
    """

    __slots__ = ("tcp", "_fd_by_port", "_unmapped", "_attempts", "_handshakes", "_check_offset")

    def __init__(self) -> None:
        self.tcp = TcpSockets()
        self._fd_by_port: dict[int, int] = {}
        #: descriptors opened whose local port is not known yet
        self._unmapped: set[int] = set()
        #: descriptor -> (the transfer whose attempt it carries, the reading just before it)
        self._attempts: dict[int, tuple[Transfer, TcpSample]] = {}
        #: descriptor -> (its handshake's RTT µs, SYN retransmissions), read before its first request
        self._handshakes: dict[int, tuple[int, int]] = {}
        #: where the next check_input starts among the in-flight descriptors
        self._check_offset = 0

    def on_open(self, fd: int, purpose: int) -> int:
        self._unmapped.add(fd)
        return pycurl.SOCKOPT_OK

    def fd_for_port(self, local_port: int) -> int:
        fd = self._fd_by_port.get(local_port)
        if fd is not None:
            return fd
        for candidate in list(self._unmapped):
            port = self.tcp.local_port(candidate)
            if port > 0:
                self._unmapped.discard(candidate)
                self._fd_by_port[port] = candidate
                if port == local_port:
                    return candidate
        return -1

    def begin_attempt(self, transfer: Transfer, local_port: int) -> tuple[TcpSample | None, tuple[int, int]]:
        """The connection's reading just before the attempt, and its handshake: (RTT µs, SYN
        retransmissions), (-1, -1) when unknown. Before its first request a connection's only
        RTT sample is the handshake (the kernel answers a SYN at once: no server time in it);
        TLS adds samples that hold the server's handshake work, so the minimum is taken."""
        fd = self.fd_for_port(local_port)
        before = self.tcp.sample(fd)
        if before is None:
            return None, (-1, -1)
        self._attempts[fd] = (transfer, before)
        handshake = self._handshakes.get(fd)
        if handshake is None:
            handshake = self._handshakes[fd] = (before.min_rtt_us if before.min_rtt_us >= 0 else before.rtt_us, before.total_retrans)
        return before, handshake

    def on_close(self, fd: int) -> int:
        attempt = self._attempts.pop(fd, None)
        if attempt is not None:
            transfer, before = attempt
            after = self.tcp.sample(fd)
            # A FIN consumes one sequence number, counted in bytes_received: one more byte, and no
            # response byte, is an orderly close. (An unacknowledged request proves nothing: the
            # server may have read it, its ACK delayed, and reset.)
            harmless = before.peer_closed or (after is not None and after.bytes_received - before.bytes_received == 1)
            transfer.unreceived_attempts += harmless
        self._forget(fd)
        try:
            os.close(fd)
        except OSError:
            return 1
        return 0

    def _forget(self, fd: int) -> None:
        self.tcp.forget(fd)
        self._unmapped.discard(fd)
        self._handshakes.pop(fd, None)
        for port in [p for p, known in self._fd_by_port.items() if known == fd]:
            del self._fd_by_port[port]

    def check_input(self, previous_read_ns: int, read_ns: int) -> None:
        """Mark the in-flight requests whose input waited in the kernel over LATE_INPUT_US
        before the perform that began at `read_ns` read it; the loop read nothing between
        `previous_read_ns` (the end of the perform before) and it. TCP_INFO's last_data_recv (ms, the kernel's jiffies) dates
        a socket's last data segment: one that arrived in that gap waited from its arrival to
        `read_ns` (its earlier segments longer: a lower bound, the honest side for a verdict).
        Data older than the gap was read before it (a FIN alone does not date a socket)."""
        fds = list(self._attempts)
        if not fds:
            return
        start = self._check_offset % len(fds)
        self._check_offset = start + _INPUT_CHECK_SOCKETS
        now_ns = monotonic_ns()
        gap_us, since_read_us = (now_ns - previous_read_ns) // 1000, (now_ns - read_ns) // 1000
        for fd in (fds[start:] + fds[:start])[:_INPUT_CHECK_SOCKETS]:
            sample = self.tcp.sample(fd)
            if sample is None or sample.last_data_recv_ms < 0:
                continue
            age_us = sample.last_data_recv_ms * 1000
            waited_us = age_us - since_read_us
            if waited_us > LATE_INPUT_US and age_us + _TICK_US < gap_us:
                transfer = self._attempts[fd][0]
                transfer.late_input_us = max(transfer.late_input_us, waited_us)

    def complete(self, handle: pycurl.Curl) -> TcpSample | None:
        """The reading of a completed transfer's socket; None when it has none."""
        try:
            fd = handle.getinfo(pycurl.ACTIVESOCKET)
        except pycurl.error:
            return None
        self._attempts.pop(fd, None)
        return self.tcp.sample(fd)

    def close_all(self) -> None:
        """Close what libcurl could not close through its callback (at the multi's cleanup)."""
        for fd in {*self._unmapped, *self._fd_by_port.values()}:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._unmapped.clear()
        self._fd_by_port.clear()
        self._attempts.clear()
        self._handshakes.clear()
        self.tcp.release()


class Transfer:
    """One reusable in-flight slot and the marks of its current request."""

    __slots__ = (
        "handle", "request", "streaming", "parser", "anchor_ns", "origin_ns", "intended_start_us", "measured",
        "last_timings",
        "first_byte_ns", "first_event_ns", "first_token_ns", "first_content_ns", "last_token_ns", "done_ns",
        "first_status_ns", "final_status_ns", "interim_seen", "error_status", "error_body", "headers",
        "events", "event_tokens", "usage_tokens", "usage_prompt_tokens", "last_usage_tokens",
        "malformed", "stream_error", "chunks", "attempts", "unreceived_attempts", "tcp_before", "handshake", "ended_at_done",
        "redirect_guard", "late_input_us", "_spec", "_backlog", "_on_done_seen", "_connections",
    )  # fmt: skip

    def __init__(
        self,
        spec: RunSpec,
        request: Request,
        backlog: list[Transfer],
        on_done_seen: Callable[[Transfer], None],
        connections: _Connections,
    ) -> None:
        self.handle = pycurl.Curl()
        configure(self.handle, spec, request)
        self.request = request
        self._spec = spec
        self.redirect_guard = RedirectGuard.of(spec, request)
        self.streaming = request.streaming
        self.handle.setopt(pycurl.WRITEFUNCTION, self._on_stream if self.streaming else self._on_body)
        self.handle.setopt(pycurl.HEADERFUNCTION, self._on_header)
        self.handle.setopt(pycurl.PREREQFUNCTION, self._on_prereq)
        self.handle.setopt(pycurl.SOCKOPTFUNCTION, connections.on_open)
        self.handle.setopt(pycurl.CLOSESOCKETFUNCTION, connections.on_close)
        self.parser = SSEParser()
        self._connections = connections
        #: (arrival ns, bytes) of stream chunks not parsed yet; `backlog` lists the transfers that have some
        self.chunks: list[tuple[int, bytes]] = []
        self._backlog = backlog
        self._on_done_seen = on_done_seen
        #: (arrival ns, tokens carried, server stamp ns) of every token-carrying event
        self.events: list[tuple[int, int, int]] = []
        self.headers: list[bytes] = []
        self.begin(0, 0, measured=False)

    def begin(self, intended_start_us: int, origin_ns: int, measured: bool, request: Request | None = None) -> None:
        """Ready the slot for its next request (`request` when it differs from the slot's last
        one: its own body, URL or headers); `origin_ns` is the run's start (the axis of the
        schedule). The anchor is set when libcurl starts the transfer's clock (`anchor`)."""
        if request is not None and request != self.request:
            self._switch(request)
        self.intended_start_us = intended_start_us
        self.origin_ns = origin_ns
        self.measured = measured
        self.first_byte_ns = self.first_event_ns = self.first_token_ns = self.first_content_ns = -1
        self.last_token_ns = self.done_ns = self.first_status_ns = self.final_status_ns = -1
        self.attempts = self.unreceived_attempts = 0
        self.tcp_before: TcpSample | None = None
        self.handshake = (-1, -1)
        self.interim_seen = self.error_status = self.ended_at_done = False
        #: the longest its response's bytes were seen waiting in the kernel unread (µs; 0: never late)
        self.late_input_us = 0
        if self.redirect_guard is not None:
            self.redirect_guard.reset()
        self.error_body = b""
        self.headers = []
        self.event_tokens = self.last_usage_tokens = 0
        self.usage_tokens = self.usage_prompt_tokens = -1
        self.malformed = self.stream_error = ""
        self.last_timings: dict | None = None
        if self.streaming:
            self.parser = SSEParser()
            self.chunks = []
            self.events = []
        self.anchor_ns = -1

    def _switch(self, request: Request) -> None:
        if request.url != self.request.url:
            self.handle.setopt(pycurl.URL, request.url)
        if request.headers != self.request.headers:
            self.handle.setopt(pycurl.HTTPHEADER, list(request.headers))
        if request.body is not None:
            self.handle.setopt(pycurl.POSTFIELDS, request.body)
        self.request = request
        self.redirect_guard = RedirectGuard.of(self._spec, request)

    def anchor(self, now_ns: int) -> None:
        """libcurl starts a transfer's clock, from which its *_TIME_T marks count, when its first
        perform after add_handle reaches the transfer, not at add_handle. This is the perform's
        start, a bound: `finish` sets the anchor exactly where the response allows it."""
        self.anchor_ns = now_ns

    def _align_anchor(self, starttransfer_us: int) -> None:
        """Put the anchor where libcurl's clock started: the first status line reached the header
        callback right after libcurl stamped STARTTRANSFER (µs apart), so the anchor is that
        instant minus STARTTRANSFER. Within one perform libcurl serves the other transfers' data
        first: a new transfer's clock can start tens of µs after the perform began."""
        if self.first_status_ns >= 0 and starttransfer_us >= 0:
            self.anchor_ns = self.first_status_ns - starttransfer_us * 1000

    # The callbacks run for every header line and body chunk, inside libcurl: keep them small.
    def _on_prereq(self, primary_ip: str, local_ip: str, primary_port: int, local_port: int) -> int:
        # Once per attempt, just before the request is sent (see _Connections).
        self.attempts += 1
        self.tcp_before, self.handshake = self._connections.begin_attempt(self, local_port)
        return pycurl.PREREQFUNC_OK

    def _on_header(self, line: bytes) -> int | None:
        if self.redirect_guard is not None and not self.redirect_guard.allows(line):
            return 0  # not the line's length: libcurl aborts the transfer (CURLE_WRITE_ERROR)
        if line[:5] != b"HTTP/":
            self.headers.append(line)
            return
        # A status line: the first of each response (interim 1xx ones included).
        if self.first_status_ns < 0:
            self.first_status_ns = monotonic_ns()
        parts = line.split(None, 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        if 100 <= status < 200:
            self.interim_seen = True
        elif self.interim_seen and self.final_status_ns < 0:
            self.final_status_ns = monotonic_ns()
        self.error_status = status >= 400
        self.headers = []

    def _on_body(self, chunk: bytes) -> None:
        if self.first_byte_ns < 0:
            self.first_byte_ns = monotonic_ns()
        if self.error_status and len(self.error_body) < _ERROR_BODY_BYTES:
            self.error_body += chunk[: _ERROR_BODY_BYTES - len(self.error_body)]

    def _on_stream(self, chunk: bytes) -> None:
        # Only the arrival time is taken here; MultiDriver parses later (`digest`): in a burst of
        # events on many streams, one stream's JSON would otherwise delay the next one's arrival time.
        if not self.chunks:
            self._backlog.append(self)
        self.chunks.append((monotonic_ns(), chunk))

    def digest(self) -> None:
        """Parse the stream chunks received since the last digest, each at its arrival time.
        Whatever the server sent, this request alone pays for it: it is marked malformed."""
        chunks, self.chunks = self.chunks, []
        try:
            for now_ns, chunk in chunks:
                self._digest_chunk(now_ns, chunk)
        except Exception as error:  # noqa: BLE001  (server data must never stop the worker)
            self.malformed = self.malformed or f"the stream could not be read ({type(error).__name__})"

    def _digest_chunk(self, now_ns: int, chunk: bytes) -> None:
        if self.first_byte_ns < 0:
            self.first_byte_ns = now_ns
        if self.error_status:
            if len(self.error_body) < _ERROR_BODY_BYTES:
                self.error_body += chunk[: _ERROR_BODY_BYTES - len(self.error_body)]
            return
        for event_type, data in self.parser.feed(chunk):
            event = interpret(data, event_type)
            if self.first_event_ns < 0:
                self.first_event_ns = now_ns
            kind = event.kind
            carried = 1
            if event.usage_completion_tokens >= 0:
                # Continuous usage: the cumulative count says how many tokens this event carried.
                carried = event.usage_completion_tokens - self.last_usage_tokens
                self.last_usage_tokens = self.usage_tokens = event.usage_completion_tokens
            if event.usage_prompt_tokens >= 0:
                self.usage_prompt_tokens = event.usage_prompt_tokens
            if event.timings is not None:
                self.last_timings = event.timings
            if kind is EventKind.TOKEN:
                if self.first_token_ns < 0:
                    self.first_token_ns = now_ns
                if event.content and self.first_content_ns < 0:
                    self.first_content_ns = now_ns
                self.last_token_ns = now_ns
                self.event_tokens += carried
                self.events.append((now_ns, carried, event.sent_ns))
            elif kind is EventKind.DONE:
                if self.done_ns < 0:
                    self.done_ns = now_ns
                    self._on_done_seen(self)
            elif kind is EventKind.ERROR:
                self.stream_error = self.stream_error or event.message or "(no message)"
            elif kind is EventKind.MALFORMED:
                self.malformed = self.malformed or event.message
        if self.parser.overflowed:
            self.malformed = self.malformed or "an event larger than the parser's bound"

    def _mark_us(self, ns: int) -> int:
        return (ns - self.anchor_ns) // 1000 if ns >= 0 else -1

    @property
    def stream_complete(self) -> bool:
        return self.done_ns >= 0 and not self.malformed and not self.stream_error

    def finish(self, curl_error: int, worker: int) -> tuple[Record, list[tuple[int, int, int]], Outcome]:
        """The request's record, its token events (arrival mark µs, tokens, server stamp), and
        how it ended."""
        info = self.handle.getinfo
        status = info(pycurl.RESPONSE_CODE)
        new_connection = info(pycurl.NUM_CONNECTS) > 0
        marks = {name: info(code) if code is not None else -1 for name, code in _MARK_INFOS}
        self._align_anchor(marks["starttransfer_mark_us"])
        local_port = info(pycurl.LOCAL_PORT)
        after = self._connections.complete(self.handle)
        if self.ended_at_done or (curl_error and self.streaming and status == 200 and self.stream_complete):
            # The stream was complete at [DONE]: what the connection did afterwards is not the request's.
            marks["total_mark_us"] = self._mark_us(self.done_ns) if self.ended_at_done else marks["total_mark_us"]
            curl_error = 0
        resends = max(self.attempts - 1 - info(pycurl.REDIRECT_COUNT), 0)
        resent = resends > self.unreceived_attempts
        stream_ok = not self.streaming or self.stream_complete
        outcome = outcome_of(curl_error, status, stream_ok, resent)
        if outcome is Outcome.MALFORMED and self.stream_error:
            outcome = Outcome.STREAM_ERROR
        before = self.tcp_before
        said = self.server_timings()
        # What the server sent before the request went out is its TLS handshake: a resumed one
        # has no certificate in it (phases.derive tells them apart by size).
        tls_bytes = -1
        if new_connection and marks["appconnect_mark_us"] > 0 and before is not None and before.bytes_received >= 0:
            tls_bytes = before.bytes_received
        usage = self.usage_tokens
        record = Record(
            transfer_start_ns=self.anchor_ns,
            intended_start_us=self.intended_start_us,
            start_us=(self.anchor_ns - self.origin_ns) // 1000,
            **marks,
            final_status_mark_us=self._mark_us(self.final_status_ns),
            first_byte_mark_us=self._mark_us(self.first_byte_ns),
            first_event_mark_us=self._mark_us(self.first_event_ns),
            first_token_mark_us=self._mark_us(self.first_token_ns),
            first_content_mark_us=self._mark_us(self.first_content_ns),
            last_token_mark_us=self._mark_us(self.last_token_ns),
            done_mark_us=self._mark_us(self.done_ns),
            tcp_min_rtt_us=-1 if after is None else after.min_rtt_us,
            tcp_srtt_us=-1 if after is None else after.rtt_us,
            tcp_rttvar_us=-1 if after is None else after.rttvar_us,
            tcp_srtt_before_us=-1 if before is None else before.rtt_us,
            tcp_rto_us=-1 if before is None else before.rto_us,
            handshake_rtt_us=self.handshake[0],
            syn_retries=self.handshake[1],
            retransmits=-1 if before is None or after is None else max(after.total_retrans - before.total_retrans, 0),
            ooo_packets=-1 if before is None or after is None or after.ooo_packets < 0 else max(after.ooo_packets - before.ooo_packets, 0),
            events=len(self.events),
            events_kept=len(self.events),
            event_tokens=self.event_tokens,
            tokens=usage if usage >= 0 else self.event_tokens,
            usage_completion_tokens=usage,
            usage_prompt_tokens=self.usage_prompt_tokens,
            requested_prompt_tokens=self.request.prompt_tokens,
            requested_output_tokens=self.request.output_tokens,
            request_bytes=info(pycurl.REQUEST_SIZE),
            server_queue_us=_known(said and said.server_queue_us),
            server_prompt_us=_known(said and said.server_prompt_us),
            server_decode_us=_known(said and said.server_decode_us),
            server_total_us=_known(said and said.server_total_us),
            server_cached_tokens=_known(said and said.cached_tokens),
            timing_source=TIMING_SOURCES.get(said.source, 0) if said else 0,
            http_status=status,
            curl_error=curl_error,
            error_class=int(outcome),
            new_connection=new_connection or resends > 0,
            tls_handshake_bytes=tls_bytes,
            local_port=local_port,
            worker=worker,
        )
        anchor_ns = self.anchor_ns
        events = [((arrival_ns - anchor_ns) // 1000, carried, sent_ns) for arrival_ns, carried, sent_ns in self.events]
        return record, events, outcome

    def server_timings(self) -> ServerTimings | None:
        """What the server said it spent on this request: llama.cpp's `timings` in the stream
        (the only body parsed: health, models and GET carry none), else TGI's or W3C
        Server-Timing headers."""
        said = from_llama_cpp(self.last_timings) if self.last_timings is not None else None
        if said is None and self.headers:
            said = from_headers(header_pairs(b"".join(self.headers)))
        return None if said is None or said.empty else said

    def close(self) -> None:
        self.handle.close()


def _known(value: int | None) -> int:
    return -1 if value is None else value


class MultiDriver:
    """One CurlMulti driving a fixed set of slots; the caller decides when a slot starts."""

    def __init__(self, spec: RunSpec, request: Request, slots: int, worker: int = 0) -> None:
        self.worker = worker
        self.multi = pycurl.CurlMulti()
        self.multi.setopt(pycurl.M_MAXCONNECTS, max(slots, 1))
        self._backlog: list[Transfer] = []
        self._connections = _Connections()
        #: transfers that saw [DONE], and when their response must have ended (monotonic ns)
        self._ending: dict[Transfer, int] = {}
        self.transfers = [Transfer(spec, request, self._backlog, self._done_seen, self._connections) for _ in range(slots)]
        self.idle = list(self.transfers)
        self._active: set[Transfer] = set()
        #: added to the multi, not yet performed: libcurl has not started their clocks
        self._unanchored: list[Transfer] = []
        self._by_handle = {t.handle: t for t in self.transfers}
        #: why requests failed (or what they survived), one report line per kind, from its first occurrence
        self.failure_notes: dict[str, str] = {}
        #: how many requests each noted kind concerned (ended at [DONE], idle closes, ...)
        self.tallies: dict[str, int] = {}
        self._secrets: Sequence[str] = spec.secret_values()
        #: measured requests whose input waited unread longer than LATE_INPUT_US, and the longest wait
        self.late_input = 0
        self.input_lag_max_us = 0
        #: when the loop last read its sockets (the end of the last perform)
        self._read_ns = monotonic_ns()

    @property
    def active(self) -> int:
        return len(self._active)

    def start(self, intended_start_us: int, origin_ns: int, measured: bool, request: Request | None = None) -> None:
        transfer = self.idle.pop()
        transfer.begin(intended_start_us, origin_ns, measured, request)
        self._active.add(transfer)
        self._unanchored.append(transfer)
        self.multi.add_handle(transfer.handle)

    def _done_seen(self, transfer: Transfer) -> None:
        self._ending[transfer] = transfer.done_ns + _END_AFTER_DONE_NS

    def step(self, timeout_s: float, on_done: Callable[[Transfer, Record, list, Outcome], None]) -> int:
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
        finished = self._end_held_open(on_done)
        if finished:
            return finished
        curl_timeout_ms = self.multi.timeout()
        if curl_timeout_ms >= 0:
            timeout_s = min(timeout_s, curl_timeout_ms / 1000)
        if self._ending:
            timeout_s = min(timeout_s, max(min(self._ending.values()) - monotonic_ns(), 0) / 1e9)
        if timeout_s > 0:
            self.multi.select(timeout_s)
        return self._perform(on_done)

    def _end_held_open(self, on_done: Callable[[Transfer, Record, list, Outcome], None]) -> int:
        """End the transfers whose response is still open well after its [DONE]."""
        now_ns = monotonic_ns()
        due = [t for t, deadline_ns in self._ending.items() if deadline_ns <= now_ns]
        for transfer in due:
            transfer.ended_at_done = True
            self._tally("ended_at_done", _ENDED_AT_DONE_NOTE)
            self._complete(transfer.handle, 0, "", on_done)
        return len(due)

    def _perform(self, on_done: Callable[[Transfer, Record, list, Outcome], None]) -> int:
        now_ns = monotonic_ns()
        if self._unanchored:
            for transfer in self._unanchored:
                transfer.anchor(now_ns)
            self._unanchored.clear()
        while self.multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
        if now_ns - self._read_ns > LATE_INPUT_US * 1000:
            # Only input the loop left unread this long can have waited this long.
            self._connections.check_input(self._read_ns, now_ns)
        self._read_ns = monotonic_ns()
        finished = 0
        while True:
            queued, ok_handles, failed = self.multi.info_read()
            for handle in ok_handles:
                self._complete(handle, 0, "", on_done)
            for handle, curl_error, message in failed:
                self._complete(handle, curl_error, message, on_done)
            finished += len(ok_handles) + len(failed)
            if not queued:
                return finished

    def _complete(
        self, handle: pycurl.Curl, curl_error: int, message: str, on_done: Callable[[Transfer, Record, list, Outcome], None]
    ) -> None:
        transfer = self._by_handle[handle]
        transfer.digest()  # whatever of the stream is not parsed yet
        self._ending.pop(transfer, None)
        # finish before remove_handle: the socket is still the transfer's (TCP_INFO)
        record, events, outcome = transfer.finish(curl_error, self.worker)
        self._explain(transfer, record, outcome, curl_error, message)
        if transfer.late_input_us and transfer.measured:
            self.late_input += 1
            self.input_lag_max_us = max(self.input_lag_max_us, transfer.late_input_us)
        on_done(transfer, record, events, outcome)
        self.multi.remove_handle(handle)
        self._active.discard(transfer)
        self.idle.append(transfer)

    def _tally(self, kind: str, note: str) -> None:
        self.tallies[kind] = self.tallies.get(kind, 0) + 1
        self.failure_notes.setdefault(kind, note)

    def _explain(self, transfer: Transfer, record: Record, outcome: Outcome, curl_error: int, message: str) -> None:
        """Keep one line per kind of failure (and of survived trouble) for the report."""
        if outcome is Outcome.OK:
            if transfer.unreceived_attempts:
                self._tally("idle_closes", _IDLE_CLOSED_NOTE)
            if curl_error and not transfer.ended_at_done:
                self._tally("errors_after_done", _ERROR_AFTER_DONE_NOTE)
            return
        guard = transfer.redirect_guard
        if guard is not None and guard.refused:
            self.failure_notes.setdefault("redirect_refused", guard.note())
        elif record.curl_error:
            note = redact(_curl_error_note(record.curl_error, message), self._secrets)
            self.failure_notes.setdefault(f"curl {record.curl_error}", note)
        elif outcome is Outcome.RESET:
            self.failure_notes.setdefault("resent", _RESENT_NOTE)
        elif outcome in (Outcome.HTTP_4XX, Outcome.HTTP_5XX):
            said = redact(error_message(transfer.error_body), self._secrets)
            why = f": {said}" if said else " (no message in the body)"
            self.failure_notes.setdefault(f"http {record.http_status}", f"{outcome.key}: HTTP {record.http_status}{why}")
        elif outcome is Outcome.STREAM_ERROR:
            said = redact(transfer.stream_error, self._secrets)
            self.failure_notes.setdefault("stream_error", f"stream_error: the server reported an error inside the stream: {said}")
        elif outcome is Outcome.MALFORMED:
            why = transfer.malformed or ("the stream ended without [DONE]" if transfer.done_ns < 0 else "unreadable stream")
            self.failure_notes.setdefault("malformed", f"malformed: {redact(why, self._secrets)}")

    def abort_all(self) -> None:
        """Stop every in-flight transfer without recording it (interrupted runs)."""
        self._unanchored.clear()
        for transfer in list(self._active):
            self.multi.remove_handle(transfer.handle)
            self._active.discard(transfer)
            self.idle.append(transfer)
        self._ending.clear()

    def close(self) -> None:
        self.abort_all()
        for transfer in self.transfers:
            transfer.close()
        with warnings.catch_warnings():
            # The multi's cleanup closes the connections it still holds through the close
            # callback, which pycurl cannot run outside a transfer: close_all closes those.
            warnings.simplefilter("ignore", RuntimeWarning)
            self.multi.close()
        self._connections.close_all()


@dataclass(frozen=True)
class Fetched:
    """What a probe got: the HTTP status (0: no response), the body, and why it failed."""

    status: int
    body: bytes
    #: curl's code and message, a body over FETCH_BODY_BYTES, a refused redirect, a stop signal; None: it did not fail
    error: str | None = None


def fetch(spec: RunSpec, request: Request, max_body_bytes: int = FETCH_BODY_BYTES) -> Fetched:
    """One request outside the measured run (probes, /metrics scrapes). It reads at most
    `max_body_bytes`, and gives up within _FETCH_POLL_S of a stop signal (Ctrl-C) that a
    guard (signals.stop_on_signals) received meanwhile; without a guard, Ctrl-C raises
    KeyboardInterrupt between polls, as it would anywhere else."""
    handle, multi = pycurl.Curl(), pycurl.CurlMulti()
    chunks: list[bytes] = []
    size = [0]
    guard = RedirectGuard.of(spec, request)

    def on_body(chunk: bytes) -> int | None:
        size[0] += len(chunk)
        if size[0] > max_body_bytes:
            return 0  # abort: CURLE_WRITE_ERROR
        chunks.append(chunk)
        return None

    def on_header(line: bytes) -> int | None:
        return 0 if guard is not None and not guard.allows(line) else None

    signals_before = signals.received_count()
    try:
        configure(handle, spec, request)
        handle.setopt(pycurl.WRITEFUNCTION, on_body)
        handle.setopt(pycurl.HEADERFUNCTION, on_header)
        multi.add_handle(handle)
        while True:
            while multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
                pass
            _, ok, failed = multi.info_read()
            if ok or failed:
                break
            stopped = signals.signals_since(signals_before)
            if stopped:
                return Fetched(0, b"", f"stopped by {signals.signal_name(stopped[0])}")
            multi.select(_FETCH_POLL_S)
        status, body = handle.getinfo(pycurl.RESPONSE_CODE), b"".join(chunks)
        if not failed:
            return Fetched(status, body)
        _, code, message = failed[0]
        if guard is not None and guard.refused:
            return Fetched(status, body, guard.note().partition(": ")[2])
        if size[0] > max_body_bytes:
            return Fetched(status, b"", f"the body is larger than {max_body_bytes // (1024 * 1024)} MiB")
        return Fetched(status, body, redact(f"curl error {code}: {message}", spec.secret_values()))
    finally:
        with contextlib.suppress(pycurl.error):
            multi.remove_handle(handle)
        handle.close()
        multi.close()

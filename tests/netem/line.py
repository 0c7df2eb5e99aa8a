"""A delay line for truth tests: two network namespaces joined only by a userspace emulator.

    from tests.netem.line import delay_line

    with delay_line(one_way_ms=5, jitter_ms=1, loss=0.01, seed=3) as line:
        server = line.popen_in("server", [sys.executable, "-m", "netbench", "serve",
                                          "--host", line.server.v4, "--port", "0"], ...)
        client = line.popen_in("client", ["netbench", "run", ...])
        ...
        conn = line.connection(local_port=record_port, at_ns=record_transfer_start_ns)
        conn.handshake_rtt_ns, conn.data_delays_ns("s2c"), conn.retransmits(), conn.syn_retries

In pytest, the `make_delay_line` fixture (registered in tests/conftest.py) returns a factory
that takes the same keywords, skips the test with a one-line reason where namespaces or TUN
devices cannot be made (not root, no /dev/net/tun, no `ip`), and closes every line it made.

Topology
    client namespace nbdl-<pid>-<tag>-c        server namespace nbdl-<pid>-<tag>-s
      lo (up)                                    lo (up)
      nbdl<tag>c (TUN, point-to-point)           nbdl<tag>s (TUN, point-to-point)
        198.18.0.1 peer 198.18.0.2                 198.18.0.2 peer 198.18.0.1
        fd4e:4244:4c00::1 peer ::2                 fd4e:4244:4c00::2 peer ::1
                 \\                                   /
                  +-- emulator process (root namespace, holds both TUN fds) --+
The addresses (RFC 2544 benchmarking range, an IPv6 ULA pair) exist only inside the two
namespaces; each namespace has only its peer route and loopback (no default route, no veth, no
bridge), so the only path out of either namespace is the other one, through the emulator.
<pid> is the test process that owns the line; a later run removes namespaces whose owner is
dead (and SIGKILLs what still runs inside them) before it creates its own.

Parameters (per direction; the scalar keywords set both, `c2s=`/`s2c=` a LinkParams each;
see tests.netem.config):
    one_way_ms   fixed delay added to every packet
    jitter_ms    seeded extra delay, uniform in [0, jitter_ms], per TCP/UDP packet
    loss         seeded drop probability per TCP/UDP packet (ICMP always passes, so the
                 kernel's own chatter never shifts the random sequence)
    rate_mbps    bandwidth limit (serialisation before the delay), None = unlimited
    seed         seeds four streams: loss and jitter, per direction
    reorder      False (default): a packet never departs before one that arrived ahead of it
                 in its direction (its departure moves back instead); True: jitter reorders
    drops        DropRule(direction, match, nth=1, count=1, port=None): deterministic drops,
                 e.g. DropRule("c2s", "syn") drops the first SYN (connect then takes the
                 kernel's 1 s SYN retransmit), DropRule("s2c", "data", nth=3) the third
                 data segment from the server
    spin_us      the emulator polls (busy) this long before each departure, default 200;
                 0 saves CPU on a busy line at ~0.1 ms of precision
`line.configure(...)` takes the same keywords and replaces the whole config for packets that
arrive from the instant it returns (a time.monotonic_ns()); it re-seeds and resets the rules.

The log (JSONL, one object per packet, written by the emulator; `line.packets()` reads it)
    n             arrival order over both directions, from 0
    dir           "c2s" (client to server) or "s2c"
    arrival_ns    the emulator read the packet from the sender's TUN device: the sender's
                  kernel had transmitted it (a select wake-up, typically tens of µs, earlier)
    planned_ns    the departure the parameters ask for: arrival + serialisation + one_way
                  + jitter, pushed back to keep order (null when dropped)
    departure_ns  the emulator handed the packet to the receiver's TUN device (called write(2)):
                  the path has delivered it (null when dropped)
    delivered_ns  that write(2) returned: the receiver's kernel has processed the packet (its
                  socket holds the data, a waiting reader is woken); departure_ns to
                  delivered_ns is the receiving host's stack, not the path
    drop          null, "loss" (random), "rule" (a DropRule), "stopped" (still queued when the
                  line closed) or "write: <error>"
    length, ip (4 or 6), proto ("tcp", "udp", "icmp", "icmpv6" or the number), src, dst,
    sport, dport (TCP/UDP), flags ("S", "SA", "PA", "FA", "R", ...), seq, ack (TCP), payload
    (transport payload bytes)
All instants are time.monotonic_ns() (CLOCK_MONOTONIC, one clock for every process here), so
they compare directly with a client's or server's own stamps, e.g. netbench's
`transfer_start_ns`. The reader adds `retransmit` (tests.netem.log) and the truths per TCP
connection: syns / syn_retries, connect_ns, handshake_rtt_ns, data(direction),
data_delays_ns(direction), retransmits(direction); `line.connection(local_port, at_ns)` finds
the connection a client transfer used. `line.precision()` is departure_ns - planned_ns over
delivered packets (p50, p99, max): the emulator's own timing error.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

import pytest

from tests.netem import netns
from tests.netem.config import LineConfig, line_config
from tests.netem.log import (LogReader, Packet, Precision, TcpConnection, connection_for, precision,
                             tcp_connections)
from tests.servers.ports import stop_process_group

__all__ = ["DelayLine", "DelayLineUnavailable", "delay_line", "make_delay_line", "skip_unless_available"]

REPO_ROOT = Path(__file__).resolve().parents[2]
Side = Literal["client", "server"]
READY_TIMEOUT_S = 15.0
REPLY_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 5.0
# packets() waits this long past the longest configured delay for in-flight packets to land.
SETTLE_MARGIN_S = 0.2


class DelayLineUnavailable(RuntimeError):
    """Namespaces with TUN devices cannot be made on this machine (the message says why)."""


@dataclass(frozen=True)
class Endpoint:
    """One side of the line: its namespace, device and addresses."""

    namespace: str
    device: str
    v4: str
    v6: str


class DelayLine:
    """A running delay line; made by `delay_line()`, closed when its block ends."""

    def __init__(self, emulator: subprocess.Popen[str], ready: dict[str, Any], log_path: Path,
                 stderr_path: Path, config: LineConfig) -> None:
        self._emulator = emulator
        self._stderr_path = stderr_path
        self.client = Endpoint(ready["client_ns"], ready["client_dev"], ready["client_v4"],
                               ready["client_v6"])
        self.server = Endpoint(ready["server_ns"], ready["server_dev"], ready["server_v4"],
                               ready["server_v6"])
        self.emulator_pid: int = ready["pid"]
        self.sched: str = ready["sched"]
        self.log_path = log_path
        self.config = config
        self._reader = LogReader(log_path)
        self._processes: list[subprocess.Popen[Any]] = []
        self._sockets: list[socket.socket] = []
        self._closed_packets: list[Packet] | None = None

    def endpoint(self, side: Side) -> Endpoint:
        return self.client if side == "client" else self.server

    def exec_prefix(self, side: Side) -> list[str]:
        """argv prefix that runs a command in that side's namespace (for other helpers)."""
        return netns.exec_prefix(self.endpoint(side).namespace)

    def popen_in(self, side: Side, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start argv inside a namespace, always in a session of its own (closing the line
        signals its process group); stopped (group SIGTERM, then SIGKILL) when the line closes
        unless it exited before."""
        popen_kwargs["start_new_session"] = True
        popen_kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen([*self.exec_prefix(side), *argv], **popen_kwargs)
        self._processes.append(proc)
        return proc

    def socket(self, side: Side, family: int = socket.AF_INET,
               kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A socket of this process inside that side's namespace; closed when the line closes."""
        sock = netns.socket_in(self.endpoint(side).namespace, family, kind)
        self._sockets.append(sock)
        return sock

    def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self._emulator.stdin is not None and self._emulator.stdout is not None
        self._emulator.stdin.write(json.dumps(message) + "\n")
        self._emulator.stdin.flush()
        try:
            answer = _read_line(self._emulator.stdout, REPLY_TIMEOUT_S)
        except RuntimeError as error:
            raise RuntimeError(f"{error}\n{_tail(self._stderr_path)}") from error
        if not answer.get("ok"):
            raise RuntimeError(f"delay line emulator refused {message['op']}: {answer}")
        return answer

    def configure(self, config: LineConfig | None = None, **keywords: Any) -> int:
        """Replace the config (a LineConfig, or line_config's keywords); return the
        time.monotonic_ns() from which arriving packets get it."""
        self.config = config if config is not None else line_config(**keywords)
        return int(self._request({"op": "configure", "config": self.config.to_json()})["at_ns"])

    def packets(self, settle: bool = True) -> list[Packet]:
        """Every packet logged so far, in arrival order. With settle, first wait (up to the
        longest configured delay + SETTLE_MARGIN_S) until no packet is still in flight."""
        if self._closed_packets is not None:
            return self._closed_packets
        longest_s = max((link.one_way_ms + link.jitter_ms) / 1000
                        for link in (self.config.c2s, self.config.s2c))
        deadline = time.monotonic() + longest_s + SETTLE_MARGIN_S
        while time.monotonic() < deadline:
            state = self._request({"op": "flush"})  # logs only where no departure is near
            if not state["unlogged"] and not (settle and state["in_flight"]):
                break
            time.sleep(0.002)
        else:
            self._request({"op": "flush", "force": True})
        return self._reader.read()

    def connections(self) -> list[TcpConnection]:
        return tcp_connections(self.packets())

    def connection(self, local_port: int, at_ns: int) -> TcpConnection:
        """The TCP connection a client transfer from `local_port` starting at `at_ns` used."""
        return connection_for(self.connections(), local_port, at_ns)

    def precision(self) -> Precision:
        return precision(self.packets())

    def close(self) -> None:
        """Stop the processes started in the namespaces, then the emulator, which removes the
        devices and namespaces; keeps the final log in memory for packets()."""
        try:
            for proc in self._processes:
                if proc.poll() is None:
                    stop_process_group(proc, signal.SIGTERM, STOP_TIMEOUT_S)
            for sock in self._sockets:
                sock.close()
        finally:
            _stop_emulator(self._emulator, [self.client.namespace, self.server.namespace])
        self._closed_packets = self._reader.read()


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:]


def _read_line(stream: IO[str], timeout_s: float) -> dict[str, Any]:
    readable, _, _ = select.select([stream], [], [], timeout_s)
    line = stream.readline() if readable else ""
    if not line:
        raise RuntimeError(f"delay line emulator sent nothing within {timeout_s} s (or exited)")
    return json.loads(line)


def _stop_emulator(emulator: subprocess.Popen[str], namespaces: list[str]) -> None:
    """EOF on its stdin is the emulator's stop; SIGKILL and clean up after it if it hangs."""
    assert emulator.stdin is not None and emulator.stdout is not None
    with contextlib.suppress(BrokenPipeError):
        emulator.stdin.close()
    try:
        emulator.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        emulator.kill()
        emulator.wait()
        for namespace in namespaces:
            netns.remove_namespace(namespace)
    emulator.stdout.close()


@contextlib.contextmanager
def _teardown_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt while the block runs, so `finally` clauses (ours
    and pytest's fixture teardown) run instead of the process dying on the spot. Only where
    SIGTERM has its default action and we are on the main thread; else left as it is."""
    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt("SIGTERM")

    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def delay_line(config: LineConfig | None = None, **keywords: Any) -> Iterator[DelayLine]:
    """Create the namespaces and the emulator (a LineConfig, or line_config's keywords); yield
    the DelayLine; tear everything down on exit, exception, SIGINT or SIGTERM."""
    reason = netns.unavailable_reason()
    if reason is not None:
        raise DelayLineUnavailable(reason)
    config = config if config is not None else line_config(**keywords)
    netns.remove_stale_namespaces()
    tag = secrets.token_hex(3)
    namespaces = [netns.namespace_name(os.getpid(), tag, side) for side in ("c", "s")]
    with _teardown_on_sigterm(), tempfile.TemporaryDirectory(prefix="netbench-delayline-") as tmp:
        log_path, stderr_path = Path(tmp) / "packets.jsonl", Path(tmp) / "emulator.stderr"
        log_path.touch()
        with open(stderr_path, "wb") as stderr:
            emulator = subprocess.Popen(
                [sys.executable, "-m", "tests.netem.emulator", "--owner", str(os.getpid()),
                 "--tag", tag, "--log", str(log_path), "--config", json.dumps(config.to_json())],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True,
                cwd=REPO_ROOT, start_new_session=True,
            )
        try:
            ready = _read_line(emulator.stdout, READY_TIMEOUT_S)  # type: ignore[arg-type]
            if not ready.get("ready"):
                raise RuntimeError(ready.get("error"))
        except BaseException as error:
            _stop_emulator(emulator, namespaces)
            if not isinstance(error, RuntimeError):
                raise
            raise RuntimeError(f"delay line failed to start: {error}\n{_tail(stderr_path)}") from error
        line = DelayLine(emulator, ready, log_path, stderr_path, config)
        try:
            yield line
        finally:
            line.close()
        if emulator.returncode != 0:
            raise RuntimeError(f"delay line emulator exited {emulator.returncode}:\n{_tail(stderr_path)}")


def skip_unless_available() -> None:
    """pytest.skip with the one-line reason when this machine cannot make a delay line."""
    reason = netns.unavailable_reason()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def make_delay_line() -> Iterator[Callable[..., DelayLine]]:
    """A factory: make_delay_line(one_way_ms=5, ...) -> a running DelayLine, closed after the test."""
    skip_unless_available()
    with contextlib.ExitStack() as stack:
        yield lambda config=None, **keywords: stack.enter_context(delay_line(config, **keywords))

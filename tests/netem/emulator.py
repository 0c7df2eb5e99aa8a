"""The delay line's forwarding process: owns the two namespaces, both TUN devices and the log.

Started by `tests.netem.line` as `python -m tests.netem.emulator --owner PID --tag TAG --log
PATH --config JSON` in a session of its own (a terminal's Ctrl-C reaches the test process,
which then stops this one in order). It creates the namespaces and devices, prints one JSON
"ready" line on stdout, forwards packets until stdin reaches EOF (the owner closed it, or
died) or SIGTERM/SIGINT arrives, and then removes everything it created. It runs in its own
process so that no test, server or client code shares its interpreter lock.

Timing: each packet gets a planned departure; the loop sleeps in select(2) until spin_us
before the earliest one, then polls until it is due, writes the packet and stamps the
departure. It asks for SCHED_FIFO and a 1 ns timer slack (both best effort; the ready line
says what it got), so a loaded machine delays its wake-ups as little as possible. Log lines
are serialised only when no departure is due within LOG_SLACK_NS, a few at a time.

Control (one JSON object per line on stdin, one reply per line on stdout):
  {"op": "configure", "config": {...}}  -> {"ok": true, "at_ns": T}: applies to packets read
                                           after T (time.monotonic_ns()), re-seeds, resets rules
  {"op": "flush"}                       -> {"ok": true, "logged": N, "unlogged": U, "in_flight": K}:
                                           logs finished packets while no departure is near and
                                           no packet waits to be read (U: those left; ask again)
  {"op": "flush", "force": true}        -> the same, every finished packet logged whatever is due
A failure after the ready line is answered {"ok": false, "error": ...} before the exit.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import heapq
import json
import os
import random
import select
import signal
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from tests.netem import netns
from tests.netem.config import Direction, DropRule, LineConfig
from tests.netem.packet import Header, parse

CLIENT_V4, SERVER_V4 = "198.18.0.1", "198.18.0.2"  # RFC 2544 benchmarking range
CLIENT_V6, SERVER_V6 = "fd4e:4244:4c00::1", "fd4e:4244:4c00::2"  # ULA, "NBDL" in hex
TUN_MTU = 1500
# The TUN device's queue towards this process: large, so a burst is delayed, not dropped
# unseen by the log.
TUN_QUEUE_PACKETS = 10_000
ROUTE_TIMEOUT_S = 5.0

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
PR_SET_TIMERSLACK = 29
RT_PRIORITY = 10

LOG_SLACK_NS = 1_000_000
LOG_CHUNK = 16
READ_BATCH = 64
RANDOMISED = ("tcp", "udp")


@dataclass(slots=True)
class Flight:
    """One packet from arrival to departure or drop; becomes one log line."""

    n: int
    direction: Direction
    arrival_ns: int
    header: Header
    data: bytes
    planned_ns: int | None = None
    departure_ns: int | None = None
    delivered_ns: int | None = None
    drop: str | None = None

    def log_line(self) -> bytes:
        h = self.header
        record = {
            "n": self.n, "dir": self.direction, "arrival_ns": self.arrival_ns,
            "planned_ns": self.planned_ns, "departure_ns": self.departure_ns,
            "delivered_ns": self.delivered_ns, "drop": self.drop,
            "length": h.length, "ip": h.ip, "proto": h.proto, "src": h.src, "dst": h.dst,
            "sport": h.sport, "dport": h.dport, "flags": h.flags, "seq": h.seq, "ack": h.ack,
            "payload": h.payload,
        }
        return json.dumps(record, separators=(",", ":")).encode() + b"\n"


@dataclass
class Lane:
    """One direction: where its packets go, its parameters, random streams and queue."""

    direction: Direction
    out_fd: int
    delay_ns: int = 0
    jitter_ns: int = 0
    loss: float = 0.0
    ns_per_byte: float = 0.0
    loss_rng: random.Random = field(default_factory=random.Random)
    jitter_rng: random.Random = field(default_factory=random.Random)
    queue: list[tuple[int, int, Flight]] = field(default_factory=list)
    last_planned_ns: int = 0
    link_free_ns: int = 0

    def configure(self, config: LineConfig) -> None:
        link = config.link(self.direction)
        self.delay_ns = round(link.one_way_ms * 1e6)
        self.jitter_ns = round(link.jitter_ms * 1e6)
        self.loss = link.loss
        self.ns_per_byte = 8_000.0 / link.rate_mbps if link.rate_mbps else 0.0
        # Strings seed deterministically (unlike hash()-seeded objects), one stream per use.
        self.loss_rng = random.Random(f"{config.seed}:{self.direction}:loss")
        self.jitter_rng = random.Random(f"{config.seed}:{self.direction}:jitter")


def _matches(rule: DropRule, direction: Direction, h: Header) -> bool:
    if rule.direction != direction or (rule.port is not None and rule.port not in (h.sport, h.dport)):
        return False
    tcp = h.proto == "tcp"
    flags = h.flags or ""
    return {
        "syn": tcp and "S" in flags,
        "fin": tcp and "F" in flags,
        "rst": tcp and "R" in flags,
        "data": tcp and h.payload > 0,
        "tcp": tcp,
        "udp": h.proto == "udp",
        "any": True,
    }[rule.match]


class Emulator:
    """The forwarding loop between the client device (c2s in) and the server device (s2c in)."""

    def __init__(self, client_fd: int, server_fd: int, log_fd: int, config: LineConfig) -> None:
        self.lanes = {client_fd: Lane("c2s", server_fd), server_fd: Lane("s2c", client_fd)}
        self.log_fd = log_fd
        self.control = b""
        self.finished: list[Flight] = []
        self.arrived = 0
        self.logged = 0
        self.stopping = False
        self.configure(config)

    def configure(self, config: LineConfig) -> None:
        for lane in self.lanes.values():
            lane.configure(config)
        self.reorder = config.reorder
        self.spin_ns = config.spin_us * 1000
        self.rules = list(config.drops)
        self.rule_matches = [0] * len(self.rules)

    def run(self) -> None:
        os.set_blocking(sys.stdin.fileno(), False)
        read_fds = [*self.lanes, sys.stdin.fileno()]
        try:
            self.forward(read_fds)
        finally:
            self.shutdown()

    def forward(self, read_fds: list[int]) -> None:
        while not self.stopping:
            deadline = self.depart_due(time.monotonic_ns())
            self.log_while_idle()
            wait_ns = None if deadline is None else deadline - time.monotonic_ns()
            timeout_s = None if wait_ns is None else max(0.0, (wait_ns - self.spin_ns) / 1e9)
            for fd in select.select(read_fds, [], [], timeout_s)[0]:
                if fd in self.lanes:
                    self.read_packets(fd)
                else:
                    self.read_control()

    def read_packets(self, fd: int) -> None:
        lane = self.lanes[fd]
        for _ in range(READ_BATCH):
            try:
                data = os.read(fd, 65_536)
            except BlockingIOError:
                return
            self.arrive(lane, data, time.monotonic_ns())

    def arrive(self, lane: Lane, data: bytes, arrival_ns: int) -> None:
        header = parse(data)
        flight = Flight(self.arrived, lane.direction, arrival_ns, header, data)
        self.arrived += 1
        randomised = header.proto in RANDOMISED
        if self.rule_drops(lane.direction, header):
            flight.drop = "rule"
        elif randomised and lane.loss and lane.loss_rng.random() < lane.loss:
            flight.drop = "loss"
        if flight.drop is not None:
            self.finished.append(flight)
            return
        sent_ns = arrival_ns
        if lane.ns_per_byte:
            lane.link_free_ns = max(arrival_ns, lane.link_free_ns) + round(len(data) * lane.ns_per_byte)
            sent_ns = lane.link_free_ns
        planned_ns = sent_ns + lane.delay_ns
        if randomised and lane.jitter_ns:
            planned_ns += round(lane.jitter_rng.random() * lane.jitter_ns)
        if not self.reorder:
            planned_ns = max(planned_ns, lane.last_planned_ns)
            lane.last_planned_ns = planned_ns
        flight.planned_ns = planned_ns
        heapq.heappush(lane.queue, (planned_ns, flight.n, flight))

    def rule_drops(self, direction: Direction, header: Header) -> bool:
        drop = False
        for index, rule in enumerate(self.rules):
            if _matches(rule, direction, header):
                self.rule_matches[index] += 1
                drop = drop or rule.nth <= self.rule_matches[index] < rule.nth + rule.count
        return drop

    def next_departure(self) -> int | None:
        return min((lane.queue[0][0] for lane in self.lanes.values() if lane.queue), default=None)

    def depart_due(self, now_ns: int) -> int | None:
        """Write every packet whose planned departure has come, polling while the next one is
        within spin_us; return the next planned departure (None when nothing is queued)."""
        while True:
            for lane in self.lanes.values():
                queue = lane.queue
                while queue and queue[0][0] <= now_ns:
                    flight = heapq.heappop(queue)[2]
                    departure_ns = time.monotonic_ns()
                    try:
                        os.write(lane.out_fd, flight.data)
                    except OSError as error:
                        flight.drop = f"write: {error.strerror}"
                    else:
                        flight.departure_ns, flight.delivered_ns = departure_ns, time.monotonic_ns()
                    flight.data = b""
                    self.finished.append(flight)
            now_ns = time.monotonic_ns()
            deadline = self.next_departure()
            # Within spin_us of a departure select's wake-up is too coarse: poll instead, but
            # still take arrivals (their stamps must not wait for the spin to end).
            if deadline is None or deadline - now_ns > self.spin_ns:
                return deadline
            if select.select(list(self.lanes), [], [], 0)[0]:
                return deadline

    def log_while_idle(self) -> None:
        """Log finished packets, a chunk at a time, while no departure is due within
        LOG_SLACK_NS and no packet waits to be read: serialising them must delay neither."""
        while self.finished:
            deadline = self.next_departure()
            if deadline is not None and deadline - time.monotonic_ns() <= LOG_SLACK_NS:
                return
            if select.select(list(self.lanes), [], [], 0)[0]:
                return
            self.write_log(LOG_CHUNK)

    def write_log(self, limit: int | None = None) -> None:
        batch = self.finished[:limit] if limit else self.finished
        if batch:
            os.write(self.log_fd, b"".join(flight.log_line() for flight in batch))
            self.logged += len(batch)
            del self.finished[:len(batch)]

    def read_control(self) -> None:
        try:
            chunk = os.read(sys.stdin.fileno(), 65_536)
        except BlockingIOError:
            return
        if not chunk:
            self.stopping = True
            return
        self.control += chunk
        while b"\n" in self.control:
            line, self.control = self.control.split(b"\n", 1)
            self.command(json.loads(line))

    def command(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "configure":
            self.configure(LineConfig.from_json(message["config"]))
            reply(ok=True, at_ns=time.monotonic_ns())
        elif op == "flush":
            if message.get("force"):
                self.write_log()
            else:
                self.log_while_idle()
            reply(ok=True, logged=self.logged, unlogged=len(self.finished),
                  in_flight=sum(len(lane.queue) for lane in self.lanes.values()))
        else:
            reply(ok=False, error=f"unknown op {op!r}")

    def shutdown(self) -> None:
        """Log what never departed as dropped "stopped", then everything else still pending."""
        for lane in self.lanes.values():
            for _, _, flight in sorted(lane.queue):
                flight.drop = "stopped"
                self.finished.append(flight)
            lane.queue.clear()
        self.write_log()


def reply(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def open_tun(name: str) -> int:
    fd = os.open(netns.TUN_PATH, os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def configure_side(namespace: str, device: str, local: tuple[str, str], peer: tuple[str, str]) -> None:
    """Move the device into the namespace and give it the point-to-point pair; nothing else.

    addrgenmode none: no link-local address, so the kernel sends no router solicitations or
    other chatter of its own into the line. No default route is ever added.
    """
    netns.ip("link", "set", device, "netns", namespace)
    netns.ip("-n", namespace, "-batch", "-", input_text="\n".join([
        "link set lo up",
        f"link set {device} addrgenmode none mtu {TUN_MTU} txqueuelen {TUN_QUEUE_PACKETS}",
        # Up before the addresses: an IPv6 peer address added while the link is down
        # sometimes never gets its peer route when the link comes up (seen here 5 in 20).
        f"link set {device} up",
        f"addr add {local[0]} peer {peer[0]} dev {device}",
        f"addr add {local[1]}/128 peer {peer[1]}/128 dev {device} nodad",
    ]) + "\n")
    # IPv6 address set-up may finish in a work queue after the command returns: wait for the
    # peer route, or a connect right after the ready line meets "Network is unreachable".
    deadline = time.monotonic() + ROUTE_TIMEOUT_S
    while True:
        try:
            netns.ip("-n", namespace, "-6", "route", "get", peer[1])
            return
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def realtime() -> str:
    """Ask for SCHED_FIFO and a 1 ns timer slack; return the policy obtained."""
    ctypes.CDLL(None).prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
    except OSError:
        return "other"
    return "fifo"


def _stop_on_signal(signum: int, _frame: object) -> None:
    # Ignore repeats so the teardown that the exit starts is not cut short by a second signal.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--owner", type=int, required=True, help="pid of the owning test process")
    parser.add_argument("--tag", required=True, help="short unique tag for names")
    parser.add_argument("--log", required=True, help="the per-packet JSONL log to write")
    parser.add_argument("--config", required=True, help="LineConfig as JSON")
    args = parser.parse_args(argv)
    config = LineConfig.from_json(json.loads(args.config))
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGINT, _stop_on_signal)
    client_ns = netns.namespace_name(args.owner, args.tag, "c")
    server_ns = netns.namespace_name(args.owner, args.tag, "s")
    client_dev, server_dev = f"nbdl{args.tag}c", f"nbdl{args.tag}s"
    fds: list[int] = []
    try:
        with open(args.log, "ab") as log:
            for namespace in (client_ns, server_ns):
                netns.ip("netns", "add", namespace)
            fds = [open_tun(client_dev), open_tun(server_dev)]
            configure_side(client_ns, client_dev, (CLIENT_V4, CLIENT_V6), (SERVER_V4, SERVER_V6))
            configure_side(server_ns, server_dev, (SERVER_V4, SERVER_V6), (CLIENT_V4, CLIENT_V6))
            emulator = Emulator(fds[0], fds[1], log.fileno(), config)
            reply(ready=True, client_ns=client_ns, server_ns=server_ns, client_dev=client_dev,
                  server_dev=server_dev, client_v4=CLIENT_V4, server_v4=SERVER_V4,
                  client_v6=CLIENT_V6, server_v6=SERVER_V6, sched=realtime(), pid=os.getpid())
            emulator.run()
    except (OSError, RuntimeError, ValueError) as error:
        reply(ok=False, ready=False, error=f"{type(error).__name__}: {error}")
        return 1
    finally:
        # Closing a TUN fd destroys its (non-persistent) device; then the namespaces go.
        for fd in fds:
            os.close(fd)
        for namespace in (client_ns, server_ns):
            with contextlib.suppress(RuntimeError, OSError):
                netns.remove_namespace(namespace)
    return 0


if __name__ == "__main__":
    sys.exit(main())

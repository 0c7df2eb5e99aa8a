"""Read the delay line's per-packet log and turn it into truths: connections, delays, retries.

The log format and the meaning of each instant are documented in `tests.netem.line`. This
module adds what the emulator does not write: `retransmit`, derived over the whole log in
arrival order (a TCP segment of the same direction and flow whose sequence space was already
sent, dropped copies included; or a repeated SYN with the same initial sequence number).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from tests.netem.config import Direction

SEQ_SPACE = 1 << 32


@dataclass(frozen=True)
class Packet:
    """One log line, plus the derived `retransmit` flag. Times are time.monotonic_ns()."""

    n: int
    dir: Direction
    arrival_ns: int
    planned_ns: int | None
    departure_ns: int | None
    delivered_ns: int | None
    drop: str | None
    length: int
    ip: int
    proto: str
    src: str
    dst: str
    sport: int | None
    dport: int | None
    flags: str | None
    seq: int | None
    ack: int | None
    payload: int
    retransmit: bool = False

    @property
    def delivered(self) -> bool:
        return self.departure_ns is not None

    @property
    def delay_ns(self) -> int | None:
        """The one-way delay this packet took through the line (None when dropped)."""
        return None if self.departure_ns is None else self.departure_ns - self.arrival_ns

    @property
    def lateness_ns(self) -> int | None:
        """How much later than planned it departed: the emulator's timing error."""
        if self.departure_ns is None or self.planned_ns is None:
            return None
        return self.departure_ns - self.planned_ns

    @property
    def is_syn(self) -> bool:
        """A connection request (SYN without ACK)."""
        return self.proto == "tcp" and "S" in (self.flags or "") and "A" not in (self.flags or "")

    @property
    def is_synack(self) -> bool:
        return self.proto == "tcp" and "S" in (self.flags or "") and "A" in (self.flags or "")


_RECORD_FIELDS = tuple(f.name for f in fields(Packet) if f.name != "retransmit")


def with_retransmits(records: list[dict[str, Any]]) -> list[Packet]:
    """Packets in arrival order, each flagged when it retransmits (see the module docstring)."""
    # flow -> [initial sequence number, end of the sequence space sent so far, relative]
    flows: dict[tuple[Any, ...], list[int]] = {}
    packets = []
    for record in sorted(records, key=lambda r: r["n"]):
        retransmit = False
        if record["proto"] == "tcp" and record["seq"] is not None:
            key = (record["dir"], record["src"], record["sport"], record["dst"], record["dport"])
            flags, seq = record["flags"], record["seq"]
            state = flows.get(key)
            if "S" in flags:
                retransmit = state is not None and state[0] == seq
                if not retransmit:
                    flows[key] = [seq, 1]
            else:
                if state is None:
                    state = flows[key] = [seq, 0]
                length = record["payload"] + ("F" in flags)
                if length:
                    relative = (seq - state[0]) % SEQ_SPACE
                    retransmit = relative < state[1]
                    state[1] = max(state[1], relative + length)
        packets.append(Packet(**{name: record[name] for name in _RECORD_FIELDS},
                              retransmit=retransmit))
    return packets


class LogReader:
    """Reads the JSONL log incrementally: each `read()` parses only what was appended."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._records: list[dict[str, Any]] = []

    def read(self) -> list[Packet]:
        """Every packet logged so far, in arrival order, with `retransmit` derived."""
        with open(self.path, "rb") as log:
            log.seek(self._offset)
            chunk = log.read()
        # Only whole lines: the emulator may be in the middle of writing the last one.
        complete = chunk[:chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        self._records.extend(json.loads(line) for line in complete.splitlines())
        return with_retransmits(self._records)


@dataclass(frozen=True)
class Precision:
    """Departure minus planned departure over delivered packets, in ns (nearest rank)."""

    count: int
    p50_ns: int
    p99_ns: int
    max_ns: int


def nearest_rank(sorted_values: list[int], quantile: float) -> int:
    return sorted_values[min(len(sorted_values) - 1, int(quantile * len(sorted_values)))]


def precision(packets: list[Packet]) -> Precision:
    late = sorted(p.lateness_ns for p in packets if p.lateness_ns is not None)
    if not late:
        return Precision(0, 0, 0, 0)
    return Precision(len(late), nearest_rank(late, 0.5), nearest_rank(late, 0.99), late[-1])


@dataclass
class TcpConnection:
    """Every packet of one TCP connection, both directions, in arrival order; and its truths.

    The client is the end in the client namespace. A new SYN (not a retransmission) on the same
    four-tuple starts a new connection.
    """

    client: str
    client_port: int
    server: str
    server_port: int
    packets: list[Packet]

    def sent(self, direction: Direction) -> list[Packet]:
        return [p for p in self.packets if p.dir == direction]

    @property
    def syns(self) -> list[Packet]:
        """Every SYN the client sent, the dropped and the retransmitted ones included."""
        return [p for p in self.sent("c2s") if p.is_syn]

    @property
    def syn_retries(self) -> int:
        return max(0, len(self.syns) - 1)

    @property
    def start_ns(self) -> int:
        return self.packets[0].arrival_ns

    @property
    def end_ns(self) -> int:
        return max(p.departure_ns or p.arrival_ns for p in self.packets)

    def _handshake(self) -> tuple[Packet, Packet] | None:
        """The delivered SYN-ACK that completed connect() and the delivered SYN it answered."""
        synack = next((p for p in self.sent("s2c") if p.is_synack and p.delivered), None)
        if synack is None:
            return None
        answered = [p for p in self.syns if p.delivered and p.departure_ns <= synack.arrival_ns]
        return (answered[-1], synack) if answered else None

    @property
    def connect_ns(self) -> int | None:
        """First SYN leaving the client to the SYN-ACK reaching it: connect() as the path makes
        it, SYN retries included (the hosts' own stack time is not in it)."""
        handshake = self._handshake()
        return None if handshake is None else handshake[1].departure_ns - self.syns[0].arrival_ns

    @property
    def handshake_rtt_ns(self) -> int | None:
        """The path's round trip in the handshake: delay of the SYN that got through plus delay
        of the SYN-ACK that answered it (the server's own time in between excluded)."""
        handshake = self._handshake()
        return None if handshake is None else handshake[0].delay_ns + handshake[1].delay_ns

    def data(self, direction: Direction) -> list[Packet]:
        """Every transmission carrying payload in one direction (dropped ones included)."""
        return [p for p in self.sent(direction) if p.payload > 0]

    def data_delays_ns(self, direction: Direction) -> list[int]:
        """The one-way delay of each delivered data segment, in arrival order."""
        return [p.delay_ns for p in self.data(direction) if p.delay_ns is not None]

    def retransmits(self, direction: Direction | None = None) -> list[Packet]:
        """Retransmitted segments (SYN retries included), in arrival order."""
        return [p for p in self.packets if p.retransmit and direction in (None, p.dir)]


def tcp_connections(packets: list[Packet]) -> list[TcpConnection]:
    """Every TCP connection in the log, ordered by start."""
    current: dict[tuple[str, int, str, int], TcpConnection] = {}
    connections = []
    for packet in packets:
        if packet.proto != "tcp" or packet.sport is None or packet.dport is None:
            continue
        if packet.dir == "c2s":
            key = (packet.src, packet.sport, packet.dst, packet.dport)
        else:
            key = (packet.dst, packet.dport, packet.src, packet.sport)
        connection = current.get(key)
        if connection is None or (packet.is_syn and not packet.retransmit):
            connection = current[key] = TcpConnection(*key, packets=[])
            connections.append(connection)
        connection.packets.append(packet)
    return connections


def connection_for(connections: list[TcpConnection], local_port: int, at_ns: int) -> TcpConnection:
    """The connection a client transfer used, from its local port and its start instant.

    A reused connection is the one on that port alive at `at_ns`; otherwise the transfer
    opened one, the first on that port that starts after `at_ns`.
    """
    on_port = [c for c in connections if c.client_port == local_port]
    alive = [c for c in on_port if c.start_ns <= at_ns <= c.end_ns]
    if alive:
        return alive[-1]
    later = [c for c in on_port if c.start_ns > at_ns]
    if later:
        return later[0]
    raise LookupError(f"no TCP connection from client port {local_port} at or after {at_ns} ns")

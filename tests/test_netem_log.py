"""Unit tests of the delay line's pure parts: header parsing, the log's derived truths, config.

No namespaces: synthetic packets and log records, so cases the live line rarely produces
(sequence wrap-around, a reused client port) are covered too.
"""

from __future__ import annotations

import socket
import struct
from typing import Any

import pytest

from tests.netem import netns
from tests.netem.config import DropRule, LineConfig, LinkParams, line_config
from tests.netem.log import connection_for, tcp_connections, with_retransmits
from tests.netem.packet import parse

CLIENT, SERVER = "198.18.0.1", "198.18.0.2"


def _ipv4_tcp(flags: int, payload: bytes) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", 40_000, 8_000, 123, 456, 5 << 4, flags, 65_535, 0, 0)
    total = 20 + len(tcp) + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, 6, 0,
                     socket.inet_aton(CLIENT), socket.inet_aton(SERVER))
    return ip + tcp + payload


def test_parse_reads_ipv4_tcp_and_ipv6_udp_headers() -> None:
    header = parse(_ipv4_tcp(0x12, b"0123456789"))
    assert (header.ip, header.proto, header.src, header.dst) == (4, "tcp", CLIENT, SERVER)
    assert (header.sport, header.dport, header.flags) == (40_000, 8_000, "SA")
    assert (header.seq, header.ack) == (123, 456)
    assert header.payload == 10 and header.length == 50
    udp = struct.pack("!HHHH", 5353, 53, 8 + 3, 0) + b"abc"
    ipv6 = struct.pack("!IHBB16s16s", 6 << 28, len(udp), 17, 64,
                       socket.inet_pton(socket.AF_INET6, "fd4e:4244:4c00::1"),
                       socket.inet_pton(socket.AF_INET6, "fd4e:4244:4c00::2")) + udp
    header = parse(ipv6)
    assert (header.ip, header.proto, header.src, header.sport, header.dport, header.payload) == (
        6, "udp", "fd4e:4244:4c00::1", 5353, 53, 3)
    assert header.flags is None and header.seq is None
    assert parse(b"\x00garbage").proto == "unknown"


def _record(n: int, direction: str, flags: str, seq: int, payload: int = 0, port: int = 40_000,
            drop: str | None = None) -> dict[str, Any]:
    src, dst = (CLIENT, SERVER) if direction == "c2s" else (SERVER, CLIENT)
    sport, dport = (port, 80) if direction == "c2s" else (80, port)
    arrival = 1_000 * n
    return {"n": n, "dir": direction, "arrival_ns": arrival, "planned_ns": None if drop else arrival + 5,
            "departure_ns": None if drop else arrival + 5, "delivered_ns": None if drop else arrival + 6,
            "drop": drop, "length": 40 + payload, "ip": 4, "proto": "tcp", "src": src, "dst": dst,
            "sport": sport, "dport": dport, "flags": flags, "seq": seq, "ack": 0, "payload": payload}


def test_retransmits_are_found_across_sequence_wrap_around() -> None:
    isn = (1 << 32) - 100  # the first data segment wraps past 2**32
    records = [
        _record(0, "c2s", "S", isn, drop="rule"),
        _record(1, "c2s", "S", isn),                                   # SYN retry
        _record(2, "s2c", "SA", 7),
        _record(3, "c2s", "PA", isn + 1, 200, drop="loss"),
        _record(4, "c2s", "PA", (isn + 201) % (1 << 32), 100),
        _record(5, "c2s", "PA", isn + 1, 200),                         # resend of n=3
        _record(6, "c2s", "A", (isn + 301) % (1 << 32)),               # pure ACK: no sequence space
        _record(7, "c2s", "FA", (isn + 301) % (1 << 32)),
        _record(8, "c2s", "FA", (isn + 301) % (1 << 32)),              # FIN resent
    ]
    # The log is written in finishing order, not arrival order; the reader sorts by n.
    packets = with_retransmits(list(reversed(records)))
    assert [p.n for p in packets if p.retransmit] == [1, 5, 8]
    (conn,) = tcp_connections(packets)
    assert conn.syn_retries == 1 and [p.n for p in conn.retransmits()] == [1, 5, 8]
    assert conn.connect_ns == packets[2].departure_ns - packets[0].arrival_ns
    assert conn.handshake_rtt_ns == 10
    assert [p.n for p in conn.data("c2s")] == [3, 4, 5] and len(conn.data_delays_ns("c2s")) == 2


def test_a_new_syn_on_a_reused_port_starts_a_new_connection() -> None:
    records = [_record(0, "c2s", "S", 1_000), _record(1, "s2c", "SA", 5), _record(2, "c2s", "A", 1_001),
               _record(3, "c2s", "S", 9_000), _record(4, "s2c", "SA", 77)]
    first, second = tcp_connections(with_retransmits(records))
    assert (first.start_ns, second.start_ns) == (0, 3_000) and not second.retransmits()
    assert connection_for([first, second], 40_000, 1_500) is first     # reused: alive then
    assert connection_for([first, second], 40_000, 2_500) is second    # new: opened after
    with pytest.raises(LookupError):
        connection_for([first, second], 40_001, 0)


def test_config_rejects_bad_parameters_and_round_trips_as_json() -> None:
    with pytest.raises(ValueError, match="loss"):
        LinkParams(loss=1.5)
    with pytest.raises(ValueError, match="one_way_ms"):
        LinkParams(one_way_ms=-1)
    with pytest.raises(ValueError, match="match"):
        DropRule("c2s", "bogus")
    with pytest.raises(ValueError, match="nth"):
        DropRule("s2c", "data", nth=0)
    config = line_config(one_way_ms=5, jitter_ms=1, seed=3, reorder=True,
                         drops=[DropRule("c2s", "syn")], s2c=LinkParams(one_way_ms=7, rate_mbps=10))
    assert LineConfig.from_json(config.to_json()) == config
    assert config.c2s.one_way_ms == 5 and config.s2c.one_way_ms == 7


def test_unavailable_reason_names_the_missing_privilege(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    reason = netns.unavailable_reason.__wrapped__()
    assert reason is not None and "root" in reason and "\n" not in reason

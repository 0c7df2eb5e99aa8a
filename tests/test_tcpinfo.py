"""TCP_INFO parsing against struct tcp_info's layout, and readings of a real loopback socket."""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Iterator

import pytest

from netbench.tcpinfo import TcpSockets, parse


def _tcp_info(size: int, **fields: int) -> bytes:
    buffer = bytearray(size)
    layout = {"state": ("B", 0), "rto": ("I", 8), "rtt": ("I", 68), "rttvar": ("I", 72), "total_retrans": ("I", 100),
              "bytes_received": ("Q", 128), "min_rtt": ("I", 148), "last_data_recv": ("I", 52), "ooo": ("I", 224)}  # fmt: skip
    for name, value in fields.items():
        fmt, offset = layout[name]
        if offset + struct.calcsize(fmt) <= size:
            struct.pack_into(fmt, buffer, offset, value)
    return bytes(buffer)


def test_older_kernels_give_what_they_have():
    sample = parse(_tcp_info(104, state=1, rtt=50, min_rtt=9))
    assert sample is not None and (sample.rtt_us, sample.min_rtt_us, sample.bytes_received) == (50, -1, -1)
    assert not sample.peer_closed
    assert parse(b"\x01" * 60) is None


#: every field a distinct value (none a neighbour's, none 0 or -1), as a 5.4+ kernel fills them
FULL = _tcp_info(232, state=1, rto=204_000, rtt=2400, rttvar=600, total_retrans=3, bytes_received=2**33 + 1990,
                 min_rtt=17, last_data_recv=42, ooo=5)  # fmt: skip


def test_every_field_of_a_full_reading_is_its_own():
    assert parse(FULL) == (1, 204_000, 2400, 600, 17, 3, 2**33 + 1990, 5, 42)


def test_the_kernels_fields_are_unsigned():
    # a kernel with no min_rtt sample yet reports ~0U; every field is __u8, __u32 or __u64
    top = _tcp_info(232, state=0x80, rto=2**31 + 1, rtt=2**31 + 2, rttvar=2**31 + 3, total_retrans=2**31 + 4,
                    bytes_received=2**63 + 5, min_rtt=2**32 - 1, last_data_recv=2**31 + 6, ooo=2**31 + 7)  # fmt: skip
    assert parse(top) == (0x80, 2**31 + 1, 2**31 + 2, 2**31 + 3, 2**32 - 1, 2**31 + 4, 2**63 + 5, 2**31 + 7, 2**31 + 6)


@pytest.mark.parametrize(("field", "first_size"), [("bytes_received", 136), ("min_rtt_us", 152), ("ooo_packets", 228)])
def test_a_field_is_read_exactly_when_the_kernel_wrote_all_of_it(field: str, first_size: int):
    full = getattr(parse(FULL), field)
    shorter, enough = parse(FULL[: first_size - 1]), parse(FULL[:first_size])
    assert shorter is not None and enough is not None
    assert (getattr(shorter, field), getattr(enough, field)) == (-1, full)
    # the fields every kernel has are read whatever the length
    assert shorter[:4] == enough[:4] == (1, 204_000, 2400, 600) and shorter.last_data_recv_ms == 42


def test_104_bytes_hold_the_rtts_and_103_do_not():
    assert parse(FULL[:103]) is None
    assert parse(FULL[:104]) == (1, 204_000, 2400, 600, -1, 3, -1, -1, 42)


@pytest.mark.parametrize(("state", "closed"), [(1, False), (6, False), (7, True), (8, True), (9, False)])
def test_only_close_and_close_wait_are_a_closed_peer(state: int, closed: bool):
    sample = parse(FULL[:104])
    assert sample is not None and sample._replace(state=state).peer_closed is closed


@contextlib.contextmanager
def loopback_pair() -> Iterator[tuple[socket.socket, socket.socket, TcpSockets]]:
    """A connected client and peer on loopback, and a TcpSockets to read the client with."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
        tcp = TcpSockets()
        try:
            yield client, peer, tcp
        finally:
            tcp.release()
            client.close()
            peer.close()


@pytest.mark.integration
@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="no TCP_INFO on this platform")
def test_a_loopback_connection_reads_its_own_bytes_and_the_fin():
    with loopback_pair() as (client, peer, tcp):
        peer.sendall(b"hello")
        assert client.recv(5) == b"hello"
        before = tcp.sample(client.fileno())
        assert before is not None and before.state == 1 and not before.peer_closed
        assert tcp.local_port(client.fileno()) == client.getsockname()[1]
        peer.close()
        after = tcp.sample(client.fileno())
        for _ in range(100):
            if after is not None and after.peer_closed:
                break
            after = tcp.sample(client.fileno())
        assert after is not None and after.peer_closed
        assert after.bytes_received - before.bytes_received == 1  # the FIN's sequence number


@pytest.mark.integration
@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="no TCP_INFO on this platform")
def test_last_data_recv_dates_a_connections_last_data():
    """The evidence of a late client (curl._Connections.check_input): the age of the last data."""
    with loopback_pair() as (client, peer, tcp):
        peer.sendall(b"token")
        time.sleep(0.002)
        fresh = tcp.sample(client.fileno())
        time.sleep(0.12)
        aged = tcp.sample(client.fileno())
        assert fresh is not None and aged is not None
        assert aged.last_data_recv_ms - fresh.last_data_recv_ms >= 100  # kernel ticks: a few ms coarse

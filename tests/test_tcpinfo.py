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
    layout = {"state": ("B", 0), "rtt": ("I", 68), "rttvar": ("I", 72), "total_retrans": ("I", 100),
              "bytes_received": ("Q", 128), "min_rtt": ("I", 148), "last_data_recv": ("I", 52)}  # fmt: skip
    for name, value in fields.items():
        fmt, offset = layout[name]
        if offset + struct.calcsize(fmt) <= size:
            struct.pack_into(fmt, buffer, offset, value)
    return bytes(buffer)


def test_fields_are_read_at_their_offsets():
    info = _tcp_info(232, state=8, rtt=2400, rttvar=600, total_retrans=3, bytes_received=1990, min_rtt=17, last_data_recv=42)
    sample = parse(info)
    assert sample is not None
    assert sample.last_data_recv_ms == 42
    assert (sample.state, sample.rtt_us, sample.rttvar_us, sample.total_retrans) == (8, 2400, 600, 3)
    assert (sample.bytes_received, sample.min_rtt_us) == (1990, 17)
    assert sample.peer_closed  # CLOSE_WAIT


def test_older_kernels_give_what_they_have():
    sample = parse(_tcp_info(104, state=1, rtt=50, min_rtt=9))
    assert sample is not None and (sample.rtt_us, sample.min_rtt_us, sample.bytes_received) == (50, -1, -1)
    assert not sample.peer_closed
    assert parse(b"\x01" * 60) is None


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

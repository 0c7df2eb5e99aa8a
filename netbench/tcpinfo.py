"""The kernel's view of a TCP connection (Linux TCP_INFO), read from libcurl's descriptors.

`TcpSockets` keeps one non-owning socket view per descriptor: `socket.fromfd` per read (a dup,
an object and a close) cost more than the rest of a request's bookkeeping, while a view made
once leaves one getsockopt per read. A view never closes its descriptor (libcurl owns it);
`release` detaches them all. `TcpSample` is one reading: the RTT estimates, the counters that
move while a request runs (retransmissions, bytes received), how long ago data last arrived
(the client's input lag, `curl._Connections.check_input`) and the connection's state.
Where the platform has no TCP_INFO every reading is None.
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

_TCP_INFO = getattr(socket, "TCP_INFO", None)
#: bytes of struct tcp_info (linux/tcp.h) read: up to tcpi_rcv_ooopack (kernel >= 5.4)
_READ_BYTES = 232
#: tcpi_state values (netinet/tcp.h) of a connection whose peer has closed or reset it
PEER_CLOSED_STATES = frozenset((7, 8))  # TCP_CLOSE, TCP_CLOSE_WAIT


class TcpSample(NamedTuple):
    """One TCP_INFO reading; times in µs. min_rtt_us is -1 on kernels before 4.6."""

    state: int
    rto_us: int  # the retransmission timeout the kernel would wait now
    rtt_us: int  # smoothed RTT (srtt)
    rttvar_us: int
    min_rtt_us: int
    total_retrans: int
    #: payload bytes received, plus one for a FIN (it takes a sequence number); -1 before 4.1
    bytes_received: int
    #: segments received out of order (a segment before them was lost or late); -1 before 5.4
    ooo_packets: int
    #: ms since the last data segment arrived (the kernel's jiffies: 1-4 ms resolution)
    last_data_recv_ms: int = -1

    @property
    def peer_closed(self) -> bool:
        return self.state in PEER_CLOSED_STATES


def parse(info: bytes) -> TcpSample | None:
    """A TcpSample from the bytes of struct tcp_info; None when too short to hold the RTTs."""
    if len(info) < 104:
        return None
    (state,) = struct.unpack_from("B", info, 0)
    (rto_us,) = struct.unpack_from("I", info, 8)
    (last_data_recv_ms,) = struct.unpack_from("I", info, 52)
    rtt_us, rttvar_us = struct.unpack_from("II", info, 68)
    (total_retrans,) = struct.unpack_from("I", info, 100)
    bytes_received = min_rtt_us = ooo_packets = -1
    if len(info) >= 136:
        (bytes_received,) = struct.unpack_from("Q", info, 128)
    if len(info) >= 152:
        (min_rtt_us,) = struct.unpack_from("I", info, 148)
    if len(info) >= 228:
        (ooo_packets,) = struct.unpack_from("I", info, 224)
    return TcpSample(state, rto_us, rtt_us, rttvar_us, min_rtt_us, total_retrans, bytes_received, ooo_packets, last_data_recv_ms)


class TcpSockets:
    """TCP_INFO readings and local ports of descriptors someone else owns."""

    __slots__ = ("_views",)

    def __init__(self) -> None:
        self._views: dict[int, socket.socket] = {}

    def _view(self, fd: int) -> socket.socket:
        view = self._views.get(fd)
        if view is None:
            view = self._views[fd] = socket.socket(fileno=fd)  # family detected: IPv4 or IPv6
        return view

    def sample(self, fd: int) -> TcpSample | None:
        if _TCP_INFO is None or fd < 0:
            return None
        try:
            return parse(self._view(fd).getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _READ_BYTES))
        except OSError:
            return None

    def local_port(self, fd: int) -> int:
        try:
            return int(self._view(fd).getsockname()[1])
        except (OSError, IndexError, TypeError):
            return -1

    def forget(self, fd: int) -> None:
        """The descriptor is being closed: its number may soon name another socket."""
        view = self._views.pop(fd, None)
        if view is not None:
            view.detach()

    def release(self) -> None:
        for view in self._views.values():
            view.detach()
        self._views.clear()

"""Parse the IPv4/IPv6 and TCP/UDP headers of one packet as read from a TUN device (no PI).

Only what the delay line logs and matches on: addresses, protocol, ports, TCP flags, seq, ack
and the transport payload length. IPv6 extension headers are not walked (the kernel sends TCP
and UDP without them); such packets are logged with the next-header number as protocol.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

PROTOCOL_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}
# TCP flag bits, in the order tcpdump prints them.
TCP_FLAGS = ((0x02, "S"), (0x01, "F"), (0x04, "R"), (0x08, "P"), (0x10, "A"), (0x20, "U"))

_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_PORTS = struct.Struct("!HH")
_TCP = struct.Struct("!HHIIBB")


@dataclass(frozen=True, slots=True)
class Header:
    """The logged fields of one packet; TCP-only fields are None for other protocols.

    length: the whole IP packet in bytes. payload: bytes after the transport header (after the
    IP header for protocols other than TCP and UDP).
    """

    length: int
    ip: int
    proto: str
    src: str
    dst: str
    sport: int | None = None
    dport: int | None = None
    flags: str | None = None
    seq: int | None = None
    ack: int | None = None
    payload: int = 0


def tcp_flags(bits: int) -> str:
    """"SA" for a SYN-ACK, "PA" for data with ACK, "" for none."""
    return "".join(letter for mask, letter in TCP_FLAGS if bits & mask)


def parse(packet: bytes) -> Header:
    """The header fields; proto "unknown" when the bytes are not an IPv4/IPv6 packet."""
    version = packet[0] >> 4 if packet else 0
    if version == 4 and len(packet) >= _IPV4.size:
        ihl_bytes = (packet[0] & 0x0F) * 4
        _, _, total, _, _, _, number, _, src, dst = _IPV4.unpack_from(packet)
        family, offset, end = socket.AF_INET, ihl_bytes, min(total, len(packet))
    elif version == 6 and len(packet) >= _IPV6.size:
        _, payload_len, number, _, src, dst = _IPV6.unpack_from(packet)
        family, offset, end = socket.AF_INET6, _IPV6.size, min(_IPV6.size + payload_len, len(packet))
    else:
        return Header(length=len(packet), ip=version, proto="unknown", src="", dst="")
    proto = PROTOCOL_NAMES.get(number, str(number))
    fields = {"length": len(packet), "ip": version, "proto": proto,
              "src": socket.inet_ntop(family, src), "dst": socket.inet_ntop(family, dst)}
    if number == 6 and end - offset >= 20:
        sport, dport, seq, ack, data_offset, flags = _TCP.unpack_from(packet, offset)
        return Header(**fields, sport=sport, dport=dport, flags=tcp_flags(flags), seq=seq, ack=ack,
                      payload=max(0, end - offset - (data_offset >> 4) * 4))
    if number == 17 and end - offset >= 8:
        sport, dport = _PORTS.unpack_from(packet, offset)
        return Header(**fields, sport=sport, dport=dport, payload=end - offset - 8)
    return Header(**fields, payload=max(0, end - offset))

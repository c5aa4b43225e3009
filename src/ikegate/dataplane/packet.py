"""Just enough IPv4/IPv6 to select, protect and answer packets.

The dataplane needs the 5-tuple of every packet (for the SPD and the inbound selector check) and the
gateway's ``ping`` needs ICMP echo in both families. Everything here is ``struct`` on bytes; addresses
are carried as ``int`` in :class:`IpInfo` because the SPD compares them against selector ranges, and an
``ipaddress`` object per packet would cost more than the parse itself (``src_ip``/``dst_ip`` give the
objects when a human needs them).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Container
from typing import NamedTuple

__all__ = [
    "ICMP",
    "ICMPV6",
    "TCP",
    "UDP",
    "IpInfo",
    "PacketError",
    "build_ipv4",
    "build_ipv6",
    "echo_reply_for",
    "echo_request",
    "inet_checksum",
    "parse_ip",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ICMP = 1
TCP = 6
UDP = 17
ICMPV6 = 58
SCTP = 132
UDPLITE = 136
#: Upper layers whose first four bytes are source and destination port.
PORTED = frozenset({TCP, UDP, SCTP, UDPLITE})

_ICMP_ECHO_REQUEST, _ICMP_ECHO_REPLY = 8, 0
_ICMPV6_ECHO_REQUEST, _ICMPV6_ECHO_REPLY = 128, 129
# IPv6 extension headers that are walked to reach the upper layer (RFC 8200 §4); ESP (50) and AH (51)
# are upper layers as far as selection is concerned.
_V6_HOP, _V6_ROUTING, _V6_FRAGMENT, _V6_DSTOPTS = 0, 43, 44, 60
_V6_NO_NEXT = 59

_V4_HDR = struct.Struct("!BBHHHBBHII")  # addresses as integers: what IpInfo carries
_V4_BUILD = struct.Struct("!BBHHHBBH4s4s")
_V6_HDR = struct.Struct("!IHBB16s16s")
_PORTS = struct.Struct("!HH")
_ICMP_HDR = struct.Struct("!BBHHH")
_TWO = struct.Struct("!BB")
_V6_PSEUDO = struct.Struct("!16s16sI3xB")
_U16 = struct.Struct("!H")


class PacketError(ValueError):
    """Not a parseable IPv4/IPv6 packet (truncated, wrong version, bad lengths)."""


class IpInfo(NamedTuple):
    """What selection needs of one IP packet. ``src``/``dst`` are the addresses as integers.

    ``src_port``/``dst_port`` are set for TCP, UDP, SCTP and UDP-Lite, and 0 otherwise (and for
    non-first fragments, whose ports are not in the packet); ``icmp_type``/``icmp_code`` likewise for
    ICMP and ICMPv6. ``header_len`` counts the IPv4 header with options, or the IPv6 header with the
    extension headers walked before the upper layer.
    """

    version: int
    src: int
    dst: int
    protocol: int
    src_port: int
    dst_port: int
    icmp_type: int
    header_len: int
    total_len: int
    icmp_code: int = 0

    @property
    def src_ip(self) -> IPAddress:
        return ipaddress.IPv4Address(self.src) if self.version == 4 else ipaddress.IPv6Address(self.src)

    @property
    def dst_ip(self) -> IPAddress:
        return ipaddress.IPv4Address(self.dst) if self.version == 4 else ipaddress.IPv6Address(self.dst)


#: Builds a named tuple from a plain one without the generated ``__new__`` (a Python function: half the
#: cost of an ``IpInfo`` made once per packet).
_new_tuple = tuple.__new__


def parse_ip(packet: bytes) -> IpInfo:
    """The selectors of an IPv4 or IPv6 packet; ``PacketError`` when it is not one."""
    n = len(packet)
    if n < 20:
        raise PacketError("shorter than an IP header")
    version = packet[0] >> 4
    if version == 4:
        vihl, _tos, total, _ident, frag, _ttl, proto, _csum, src_i, dst_i = _V4_HDR.unpack_from(packet)
        hlen = (vihl & 0x0F) * 4
        if hlen < 20 or total < hlen or total > n:
            raise PacketError("bad IPv4 header or total length")
        first = (frag & 0x1FFF) == 0
        icmp = ICMP
    elif version == 6:
        if n < 40:
            raise PacketError("shorter than an IPv6 header")
        _vtf, plen, proto, _hop, src, dst = _V6_HDR.unpack_from(packet)
        total = 40 + plen
        if total > n:
            raise PacketError("IPv6 payload length beyond the packet")
        hlen = 40
        first = True
        while proto in (_V6_HOP, _V6_ROUTING, _V6_DSTOPTS, _V6_FRAGMENT):
            if hlen + 8 > total:
                raise PacketError("truncated IPv6 extension header")
            nxt, ext_len = _TWO.unpack_from(packet, hlen)
            if proto == _V6_FRAGMENT:
                first = (_U16.unpack_from(packet, hlen + 2)[0] & 0xFFF8) == 0
                size = 8
            else:
                size = (ext_len + 1) * 8
            proto = nxt
            hlen += size
        if hlen > total:
            raise PacketError("IPv6 extension headers beyond the packet")
        icmp = ICMPV6
        src_i = int.from_bytes(src, "big")
        dst_i = int.from_bytes(dst, "big")
    else:
        raise PacketError(f"IP version {version}")
    sport = dport = itype = icode = 0
    if first and total - hlen >= 4:
        if proto in PORTED:
            sport, dport = _PORTS.unpack_from(packet, hlen)
        elif proto == icmp:
            itype, icode = _TWO.unpack_from(packet, hlen)
    return _new_tuple(IpInfo, (version, src_i, dst_i, proto, sport, dport, itype, hlen, total, icode))


def inet_checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``: the one's complement of its one's complement sum.

    Computed on the whole buffer as one integer: since 2^16 = 1 (mod 0xFFFF), the value of the buffer
    read as a big number is congruent to the sum of its 16-bit words, and ``int.from_bytes`` plus one
    ``%`` run in C, many times faster than a Python loop over the words.
    """
    if len(data) & 1:
        data += b"\x00"
    value = int.from_bytes(data, "big")
    total = value % 0xFFFF
    if total == 0 and value:
        total = 0xFFFF  # a non-zero sum that folds to all ones
    return 0xFFFF - total


def build_ipv4(src: IPAddress | str, dst: IPAddress | str, protocol: int, payload: bytes, *, ttl: int = 64,
               ident: int = 0, tos: int = 0) -> bytes:
    """An IPv4 packet (20-byte header, DF clear, checksum filled in) around ``payload``."""
    s = ipaddress.IPv4Address(src).packed
    d = ipaddress.IPv4Address(dst).packed
    total = 20 + len(payload)
    if total > 0xFFFF:
        raise PacketError("IPv4 packet longer than 65535 bytes")
    header = _V4_BUILD.pack(0x45, tos, total, ident, 0, ttl, protocol, 0, s, d)
    csum = inet_checksum(header)
    return header[:10] + _U16.pack(csum) + header[12:] + payload


def build_ipv6(src: IPAddress | str, dst: IPAddress | str, next_header: int, payload: bytes, *,
               hop_limit: int = 64) -> bytes:
    """An IPv6 packet (no extension headers) around ``payload``."""
    if len(payload) > 0xFFFF:
        raise PacketError("IPv6 payload longer than 65535 bytes (no jumbograms)")
    s = ipaddress.IPv6Address(src).packed
    d = ipaddress.IPv6Address(dst).packed
    return _V6_HDR.pack(6 << 28, len(payload), next_header, hop_limit, s, d) + payload


def _icmpv6_checksum(src: bytes, dst: bytes, message: bytes) -> int:
    """ICMPv6 checksum over the RFC 8200 §8.1 pseudo-header and the message."""
    return inet_checksum(_V6_PSEUDO.pack(src, dst, len(message), ICMPV6) + message)


def _echo(type_: int, ident: int, seq: int, data: bytes) -> bytes:
    return _ICMP_HDR.pack(type_, 0, 0, ident, seq) + data


def echo_request(src: IPAddress | str, dst: IPAddress | str, ident: int, seq: int, data: bytes = b"", *,
                 reply: bool = False, ttl: int = 64) -> bytes:
    """An ICMP (IPv4) or ICMPv6 echo request, or reply with ``reply=True``, as a full IP packet."""
    s = ipaddress.ip_address(src)
    d = ipaddress.ip_address(dst)
    if s.version != d.version:
        raise PacketError("source and destination are of different families")
    if s.version == 4:
        msg = _echo(_ICMP_ECHO_REPLY if reply else _ICMP_ECHO_REQUEST, ident, seq, data)
        msg = msg[:2] + _U16.pack(inet_checksum(msg)) + msg[4:]
        return build_ipv4(s, d, ICMP, msg, ttl=ttl)
    msg = _echo(_ICMPV6_ECHO_REPLY if reply else _ICMPV6_ECHO_REQUEST, ident, seq, data)
    msg = msg[:2] + _U16.pack(_icmpv6_checksum(s.packed, d.packed, msg)) + msg[4:]
    return build_ipv6(s, d, ICMPV6, msg, hop_limit=ttl)


def echo_reply_for(packet: bytes, local: Container[IPAddress] | None = None) -> bytes | None:
    """The echo reply to ``packet`` if it is an echo request addressed to us, else None.

    ``local`` holds our addresses (None: answer whatever the destination). The reply swaps the
    addresses and keeps identifier, sequence number and data, as RFC 792 and RFC 4443 §4.2 require;
    requests with a wrong checksum are not answered (a host must silently discard them).
    """
    try:
        info = parse_ip(packet)
    except PacketError:
        return None
    body = packet[info.header_len : info.total_len]
    if len(body) < 8:
        return None
    if info.version == 4:
        if info.protocol != ICMP or info.icmp_type != _ICMP_ECHO_REQUEST or inet_checksum(body) != 0:
            return None
    elif info.protocol != ICMPV6 or info.icmp_type != _ICMPV6_ECHO_REQUEST:
        return None
    src, dst = info.src_ip, info.dst_ip
    if local is not None and dst not in local:
        return None
    if info.version == 6 and _icmpv6_checksum(src.packed, dst.packed, body) != 0:
        return None
    ident, seq = _PORTS.unpack_from(body, 4)
    return echo_request(dst, src, ident, seq, body[8:], reply=True)

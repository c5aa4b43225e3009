"""Segmentation and coalescing for a TUN device opened with a virtio-net header (TUN offload).

Why: the path around the crypto is dominated by one TUN ``read`` per packet on the encrypting gateway and
one TUN ``write`` per packet on the decrypting one, each a full trip through the kernel's stack. With
``IFF_VNET_HDR`` and ``TUNSETOFFLOAD`` (see :mod:`ikegate.io.tun`) every frame carries a 10-byte
``struct virtio_net_hdr`` and the kernel may hand us a TCP (or UDP) *super-packet* of up to 64 KB, as it
would to a NIC with segmentation offload; and we may write such a super-packet back, which the kernel
carries as one buffer until something needs it segmented. This is what wireguard-go does on Linux.

Sans-I/O and plain bytes, like the rest of the dataplane:

* :func:`split` turns one frame read from the TUN into the inner packets ESP protects: a super-packet is
  cut into ``gso_size`` segments (headers copied and fixed: IPv4 total length, identification and header
  checksum, IPv6 payload length, TCP sequence numbers, FIN/PSH on the last segment only, CWR on the first
  only, UDP length) and every transport checksum is computed in full, because the kernel leaves them
  partial (``VIRTIO_NET_HDR_F_NEEDS_CSUM``) for the "hardware" to finish; the peer must get correct ones.
* :func:`coalesce` turns the decrypted packets queued for the protected side into the frames to write:
  consecutive TCP segments of one flow (same addresses, ports, acknowledgement, window, options and IP
  header fields; contiguous sequence numbers; pure ACK, PSH only on the last; all but the last of one
  size) become one super-packet with a GSO header and a partial checksum, as the kernel's GRO would build.
  Each segment's checksum is verified first (a segment whose checksum is wrong is written alone, for the
  kernel to drop): a super-packet's checksum is recomputed, so merging would hide the error.

Checksums use :func:`ones_sum`: the buffer read as one big integer is congruent, modulo 0xFFFF, to the
sum of its 16-bit words (2^16 = 1 mod 0xFFFF), so ``int.from_bytes`` and one ``%`` do in C what a loop
over the words would do in Python. A result of 0 stands for the all-ones sum.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

__all__ = [
    "F_DATA_VALID",
    "F_NEEDS_CSUM",
    "GSO_NONE",
    "GSO_TCPV4",
    "GSO_TCPV6",
    "GSO_UDP_L4",
    "PLAIN_HEADER",
    "VNET_HDR",
    "VNET_HDR_LEN",
    "OffloadError",
    "coalesce",
    "ones_sum",
    "split",
]

#: ``struct virtio_net_hdr`` (linux/virtio_net.h): flags, gso_type, hdr_len, gso_size, csum_start,
#: csum_offset. A TUN uses the CPU's byte order for it unless told otherwise (TUNSETVNETLE/BE).
VNET_HDR = struct.Struct("=BBHHHH")
VNET_HDR_LEN = VNET_HDR.size
F_NEEDS_CSUM = 1
F_DATA_VALID = 2
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_TCPV6 = 4
GSO_UDP_L4 = 5
GSO_ECN = 0x80
#: A frame header that asks nothing of the kernel (checksums complete, no segmentation).
PLAIN_HEADER = bytes(VNET_HDR_LEN)
#: The same for a packet whose transport checksum we verified: the kernel need not verify it again.
VALID_HEADER = VNET_HDR.pack(F_DATA_VALID, GSO_NONE, 0, 0, 0, 0)

TCP = 6
UDP = 17
_FIN, _PSH, _ACK, _CWR = 0x01, 0x08, 0x10, 0x80
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_V4_LEN_ID = struct.Struct("!HH")
#: A super-packet never exceeds what one IP length field can say.
MAX_IP_LEN = 0xFFFF


class OffloadError(ValueError):
    """A frame whose virtio-net header does not describe its packet (dropped and counted by the caller)."""


def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """The one's complement sum of ``data``'s 16-bit big-endian words, modulo 0xFFFF (an odd length is
    padded with a zero byte, RFC 1071). Sums of adjacent pieces add up when each piece but the last has
    an even length."""
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    return value % 0xFFFF


def _pseudo(packet: bytes, proto: int, length: int) -> int:
    """The pseudo-header's contribution (RFC 793/768, RFC 8200 §8.1): both addresses, protocol, length."""
    if packet[0] >> 4 == 4:
        addresses = int.from_bytes(packet[12:20], "big")
    else:
        addresses = int.from_bytes(packet[8:40], "big")
    return addresses + proto + length


def _finish(total: int) -> int:
    """The checksum field for a sum: its complement, never 0 (0xFFFF, the other zero, is what UDP needs
    and what TCP accepts as well)."""
    return 0xFFFF - total % 0xFFFF


# ------------------------------------------------------------------------------------------- reading


def split(frame: bytes) -> list[bytes]:
    """The inner IP packets of one frame read from an ``IFF_VNET_HDR`` TUN, every checksum complete."""
    if len(frame) < VNET_HDR_LEN + 20:
        raise OffloadError("frame shorter than its header and an IP header")
    flags, gso_type, _hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(frame)
    packet = frame[VNET_HDR_LEN:]
    kind = gso_type & ~GSO_ECN
    if kind == GSO_NONE:
        if flags & F_NEEDS_CSUM:
            return [_complete(packet, csum_start, csum_offset)]
        return [packet]
    if not gso_size:
        raise OffloadError("segmentation asked with a segment size of 0")
    version = packet[0] >> 4
    if (kind == GSO_TCPV4 and version == 4) or (kind == GSO_TCPV6 and version == 6):
        return _split_tcp(packet, csum_start, gso_size)
    if kind == GSO_UDP_L4 and version in (4, 6):
        return _split_udp(packet, csum_start, gso_size)
    raise OffloadError(f"unsupported segmentation type {gso_type} for IPv{version}")


def _complete(packet: bytes, start: int, offset: int) -> bytes:
    """Finish a partial checksum: the field holds the pseudo-header's sum, the rest is ours to add."""
    pos = start + offset
    if start < 20 or pos + 2 > len(packet):
        raise OffloadError("checksum position beyond the packet")
    csum = _finish(ones_sum(memoryview(packet)[start:]))
    return b"".join((packet[:pos], _U16.pack(csum), packet[pos + 2:]))


class _IpParts(NamedTuple):
    """The super-packet's IP header in the pieces every segment repeats around its own length (and, for
    IPv4, identification and header checksum)."""

    version: int
    before: bytes  # up to the length field
    mid: bytes  # IPv4: flags/fragment, TTL, protocol; IPv6: the rest, extension headers included
    tail: bytes  # IPv4: addresses and options
    ident: int  # IPv4: the first segment's identification
    base: int  # IPv4: the header's sum without length, identification and checksum


def _ip_parts(packet: bytes, l4: int, proto: int) -> _IpParts:
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        if ihl < 20 or l4 != ihl or packet[9] != proto:
            raise OffloadError("IPv4 header does not lead to the announced transport header")
        before, mid, tail = packet[:2], packet[6:10], packet[12:ihl]
        return _IpParts(4, before, mid, tail, _U16.unpack_from(packet, 4)[0], ones_sum(before + mid + tail))
    if l4 < 40 or (l4 == 40 and packet[6] != proto):
        raise OffloadError("IPv6 header does not lead to the announced transport header")
    return _IpParts(6, packet[:4], packet[6:l4], b"", 0, 0)


def _ip_header(ip: _IpParts, total: int, index: int) -> bytes:
    """Segment ``index``'s IP header, for a segment of ``total`` bytes (IP header included)."""
    if ip.version == 4:
        ident = (ip.ident + index) & 0xFFFF
        csum = _finish(ip.base + total + ident)
        return b"".join((ip.before, _V4_LEN_ID.pack(total, ident), ip.mid, _U16.pack(csum), ip.tail))
    return b"".join((ip.before, _U16.pack(total - 40), ip.mid))


def _split_tcp(packet: bytes, l4: int, mss: int) -> list[bytes]:
    if l4 + 20 > len(packet):
        raise OffloadError("TCP header beyond the packet")
    ip = _ip_parts(packet, l4, TCP)
    thl = (packet[l4 + 12] >> 4) * 4
    hdr = l4 + thl
    if thl < 20 or hdr > len(packet):
        raise OffloadError("bad TCP data offset")
    seq0 = _U32.unpack_from(packet, l4 + 4)[0]
    flags0 = packet[l4 + 13]
    ports, ack_off, window = packet[l4:l4 + 4], packet[l4 + 8:l4 + 13], packet[l4 + 14:l4 + 16]
    urg_opts = packet[l4 + 18:hdr]
    # Sum of the TCP header with sequence number, flags and checksum zeroed, plus the addresses and the
    # protocol; each segment adds its own sequence number, flags, length and payload.
    t_base = ones_sum(ports + b"\0\0\0\0" + ack_off + b"\0" + window + b"\0\0" + urg_opts) + _pseudo(packet, TCP, 0)
    view = memoryview(packet)
    size = len(packet) - hdr
    out: list[bytes] = []
    for i, off in enumerate(range(0, size, mss)):
        chunk = view[hdr + off:hdr + off + mss]
        n = len(chunk)
        flags = flags0
        if off + n < size:
            flags &= ~(_FIN | _PSH)
        if i:
            flags &= ~_CWR
        seq = (seq0 + off) & 0xFFFFFFFF
        csum = _finish(t_base + seq + flags + thl + n + ones_sum(chunk))
        tcp = b"".join((ports, _U32.pack(seq), ack_off, bytes((flags,)), window, _U16.pack(csum), urg_opts))
        out.append(b"".join((_ip_header(ip, hdr + n, i), tcp, chunk)))
    return out


def _split_udp(packet: bytes, l4: int, size_each: int) -> list[bytes]:
    if l4 + 8 > len(packet):
        raise OffloadError("UDP header beyond the packet")
    ip = _ip_parts(packet, l4, UDP)
    ports = packet[l4:l4 + 4]
    u_base = ones_sum(ports) + _pseudo(packet, UDP, 0)
    view = memoryview(packet)
    hdr = l4 + 8
    size = len(packet) - hdr
    out: list[bytes] = []
    for i, off in enumerate(range(0, size, size_each)):
        chunk = view[hdr + off:hdr + off + size_each]
        length = 8 + len(chunk)
        csum = _finish(u_base + 2 * length + ones_sum(chunk))  # the length is in the header and the pseudo-header
        udp = ports + _U16.pack(length) + _U16.pack(csum)
        out.append(b"".join((_ip_header(ip, l4 + length, i), udp, chunk)))
    return out


# ------------------------------------------------------------------------------------------- writing


class _Group:
    """A run of TCP segments being merged: the first packet's headers, then every payload."""

    __slots__ = (
        "closed",
        "df",
        "first",
        "hdr",
        "key",
        "l4",
        "last_id",
        "length",
        "mss",
        "next_seq",
        "parts",
        "psh",
    )

    def __init__(self, key: bytes, packet: bytes, l4: int, hdr: int, seq: int, n: int, flags: int) -> None:
        self.key = key
        self.first = packet
        self.l4 = l4
        self.hdr = hdr
        self.mss = n
        self.next_seq = (seq + n) & 0xFFFFFFFF
        self.last_id = _U16.unpack_from(packet, 4)[0] if l4 == 20 else 0
        self.df = l4 == 20 and bool(packet[6] & 0x40)
        self.parts: list[bytes | memoryview] = [packet]
        self.length = len(packet)
        self.psh = bool(flags & _PSH)
        self.closed = self.psh


def _candidate(packet: bytes) -> tuple[bytes, int, int, int, int] | None:
    """(flow key, TCP header offset, payload offset, sequence number, flags) of a TCP segment that may be
    merged (checksum verified), or None. The key holds every header byte that must be equal in a run."""
    n = len(packet)
    first = packet[0]
    if first == 0x45:  # IPv4 without options, not a fragment, nothing after its total length
        if n < 40 or packet[9] != TCP or packet[6] & 0x3F or packet[7] or _U16.unpack_from(packet, 2)[0] != n:
            return None
        l4 = 20
        thl = (packet[32] >> 4) * 4
        hdr = 20 + thl
        key = packet[0:2] + packet[6:9] + packet[12:24] + packet[28:33] + packet[34:36] + packet[40:hdr]
    elif first >> 4 == 6:  # IPv6 without extension headers
        if n < 60 or packet[6] != TCP or 40 + _U16.unpack_from(packet, 4)[0] != n:
            return None
        l4 = 40
        thl = (packet[52] >> 4) * 4
        hdr = 40 + thl
        key = packet[0:4] + packet[6:44] + packet[48:53] + packet[54:56] + packet[60:hdr]
    else:
        return None
    if thl < 20 or hdr >= n:  # no payload: nothing to merge (a pure ACK)
        return None
    flags = packet[l4 + 13]
    if flags & ~_PSH != _ACK:
        return None
    if (_pseudo(packet, TCP, n - l4) + ones_sum(memoryview(packet)[l4:])) % 0xFFFF:
        return None
    return key, l4, hdr, _U32.unpack_from(packet, l4 + 4)[0], flags


def coalesce(packets: Sequence[bytes]) -> list[list[bytes | memoryview]]:
    """The frames to write for ``packets`` (in order), each a list of buffers for one ``writev``: a
    virtio-net header, then the packet, or a super-packet's headers and its segments' payloads."""
    frames: list[list[bytes | memoryview]] = []
    group: _Group | None = None
    for packet in packets:
        cand = _candidate(packet)
        if cand is None:
            if group is not None:
                frames.append(_emit(group))
                group = None
            frames.append([PLAIN_HEADER, packet])
            continue
        key, l4, hdr, seq, flags = cand
        n = len(packet) - hdr
        if (group is not None and not group.closed and key == group.key and seq == group.next_seq
                and n <= group.mss and group.length + n <= MAX_IP_LEN
                and (group.df or l4 != 20 or _U16.unpack_from(packet, 4)[0] == (group.last_id + 1) & 0xFFFF)):
            group.parts.append(memoryview(packet)[hdr:])
            group.length += n
            group.next_seq = (seq + n) & 0xFFFFFFFF
            if l4 == 20:
                group.last_id = _U16.unpack_from(packet, 4)[0]
            if n < group.mss or flags & _PSH:
                group.closed = True
                group.psh = bool(flags & _PSH)
            continue
        if group is not None:
            frames.append(_emit(group))
        group = _Group(key, packet, l4, hdr, seq, n, flags)
    if group is not None:
        frames.append(_emit(group))
    return frames


def _emit(group: _Group) -> list[bytes | memoryview]:
    first = group.first
    if len(group.parts) == 1:
        return [VALID_HEADER, first]
    l4, hdr, total = group.l4, group.hdr, group.length
    flags = first[l4 + 13] | (_PSH if group.psh else 0)
    if l4 == 20:
        ip = bytearray(first[:20])
        ip[2:4] = _U16.pack(total)
        ip[10:12] = b"\0\0"
        ip[10:12] = _U16.pack(_finish(ones_sum(ip)))
        gso_type = GSO_TCPV4
    else:
        ip = bytearray(first[:40])
        ip[4:6] = _U16.pack(total - 40)
        gso_type = GSO_TCPV6
    tcp = bytearray(first[l4:hdr])
    tcp[13] = flags
    # CHECKSUM_PARTIAL: the field holds the pseudo-header's sum (not complemented) over the whole length;
    # the kernel adds the rest when (and if) it segments or checks the super-packet.
    tcp[16:18] = _U16.pack(_pseudo(first, TCP, total - l4) % 0xFFFF or 0xFFFF)
    header = VNET_HDR.pack(F_NEEDS_CSUM, gso_type, hdr, group.mss, l4, 16)
    group.parts[0] = memoryview(first)[hdr:]
    return [header, bytes(ip), bytes(tcp), *group.parts]

"""TUN offload in memory: super-packets cut into segments, segments merged back (ikegate.dataplane.offload).

Every checksum is checked with a word-by-word RFC 1071 sum written here, independent of the module's
big-integer arithmetic.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest

from ikegate.dataplane.offload import (
    F_NEEDS_CSUM,
    GSO_NONE,
    GSO_TCPV4,
    GSO_TCPV6,
    GSO_UDP_L4,
    PLAIN_HEADER,
    VNET_HDR,
    VNET_HDR_LEN,
    OffloadError,
    coalesce,
    split,
)

FIN, SYN, PSH, ACK, CWR = 0x01, 0x02, 0x08, 0x10, 0x80
V4 = ("192.0.2.10", "192.0.2.74")
V6 = ("2001:db8::10", "2001:db8:1::74")


def naive_sum(data: bytes) -> int:
    """One's complement sum, a word at a time, carries folded in as they happen."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def pseudo(src: str, dst: str, proto: int, length: int) -> bytes:
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    if len(s) == 4:
        return s + d + struct.pack("!BBH", 0, proto, length)
    return s + d + struct.pack("!I3xB", length, proto)


def transport_ok(packet: bytes) -> bool:
    """The transport checksum of a whole IPv4/IPv6 packet verifies (its sum with the pseudo-header is all ones)."""
    if packet[0] >> 4 == 4:
        ihl = (packet[0] & 15) * 4
        src, dst = str(ipaddress.IPv4Address(packet[12:16])), str(ipaddress.IPv4Address(packet[16:20]))
        proto, l4 = packet[9], ihl
    else:
        src, dst = str(ipaddress.IPv6Address(packet[8:24])), str(ipaddress.IPv6Address(packet[24:40]))
        proto, l4 = packet[6], 40
    segment = packet[l4:]
    return naive_sum(pseudo(src, dst, proto, len(segment)) + segment) == 0xFFFF


def ip_header_ok(packet: bytes) -> bool:
    return packet[0] >> 4 == 6 or naive_sum(packet[: (packet[0] & 15) * 4]) == 0xFFFF


def ip_packet(version: int, proto: int, l4: bytes, *, ident: int = 100, df: bool = True) -> bytes:
    src, dst = V4 if version == 4 else V6
    if version == 4:
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident, 0x4000 if df else 0, 64, proto, 0,
                          ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
        csum = 0xFFFF - naive_sum(hdr)
        hdr = hdr[:10] + struct.pack("!H", csum) + hdr[12:]
        return hdr + l4
    hdr = struct.pack("!IHBB16s16s", 0x60000000, len(l4), proto, 64, ipaddress.IPv6Address(src).packed,
                      ipaddress.IPv6Address(dst).packed)
    return hdr + l4


def tcp_packet(version: int, payload: bytes, *, seq: int = 1000, flags: int = ACK, options: bytes = b"",
               ident: int = 100, df: bool = True, partial: bool = False, sport: int = 40000) -> bytes:
    """A TCP segment; ``partial``: its checksum field holds the pseudo-header sum only (as the kernel
    leaves it for offload), else the full checksum."""
    src, dst = V4 if version == 4 else V6
    thl = 20 + len(options)
    tcp = struct.pack("!HHIIBBHHH", sport, 5201, seq, 7777, (thl // 4) << 4, flags, 502, 0, 0) + options + payload
    ph = pseudo(src, dst, 6, len(tcp))
    csum = naive_sum(ph) if partial else 0xFFFF - naive_sum(ph + tcp)
    tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
    return ip_packet(version, 6, tcp, ident=ident, df=df)


def udp_packet(version: int, payload: bytes, *, partial: bool = False) -> bytes:
    src, dst = V4 if version == 4 else V6
    udp = struct.pack("!HHHH", 5000, 5001, 8 + len(payload), 0) + payload
    ph = pseudo(src, dst, 17, len(udp))
    csum = naive_sum(ph) if partial else (0xFFFF - naive_sum(ph + udp)) or 0xFFFF
    return ip_packet(version, 17, udp[:6] + struct.pack("!H", csum) + udp[8:])


def frame(packet: bytes, gso_type: int = GSO_NONE, gso_size: int = 0, l4: int = 0, offset: int = 0,
          flags: int = F_NEEDS_CSUM) -> bytes:
    return VNET_HDR.pack(flags, gso_type, 0, gso_size, l4, offset) + packet


def payload_of(size: int, salt: int = 0) -> bytes:
    return bytes((i * 7 + salt) % 251 for i in range(size))


def tcp_fields(packet: bytes) -> tuple[int, int, bytes]:
    """(sequence number, flags, payload) of an IPv4/IPv6 TCP packet."""
    l4 = (packet[0] & 15) * 4 if packet[0] >> 4 == 4 else 40
    thl = (packet[l4 + 12] >> 4) * 4
    return struct.unpack_from("!I", packet, l4 + 4)[0], packet[l4 + 13], packet[l4 + thl:]


def as_written(bufs: list[bytes | memoryview]) -> bytes:
    return b"".join(bytes(b) for b in bufs)


# ------------------------------------------------------------------------------------------- split


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("size", [4001, 1000, 999, 1])
def test_a_tcp_super_packet_becomes_segments_with_valid_checksums(version: int, size: int) -> None:
    data = payload_of(size)
    options = b"\x01\x01\x08\x0a" + bytes(range(8))  # NOP NOP timestamps: a 32-byte header
    sup = tcp_packet(version, data, flags=ACK | PSH | FIN | CWR, options=options, partial=True)
    l4 = 20 if version == 4 else 40
    segments = split(frame(sup, GSO_TCPV4 if version == 4 else GSO_TCPV6, 1000, l4, 16))
    assert len(segments) == -(-size // 1000)
    assert b"".join(tcp_fields(s)[2] for s in segments) == data
    for i, seg in enumerate(segments):
        assert transport_ok(seg), i
        assert ip_header_ok(seg), i
        seq, flags, body = tcp_fields(seg)
        assert seq == 1000 + 1000 * i
        assert len(body) == min(1000, size - 1000 * i)
        last = i == len(segments) - 1
        assert flags == ACK | (PSH | FIN if last else 0) | (CWR if i == 0 else 0)
        assert seg[l4 + 20:l4 + 32] == options
        if version == 4:
            assert struct.unpack_from("!HH", seg, 2) == (len(seg), 100 + i)
            assert seg[6] & 0x40  # DF kept
        else:
            assert struct.unpack_from("!H", seg, 4)[0] == len(seg) - 40


@pytest.mark.parametrize("version", [4, 6])
def test_a_udp_super_packet_becomes_datagrams_with_valid_checksums(version: int) -> None:
    data = payload_of(3333)
    sup = udp_packet(version, data, partial=True)
    l4 = 20 if version == 4 else 40
    segments = split(frame(sup, GSO_UDP_L4, 1200, l4, 6))
    assert [len(s) - l4 - 8 for s in segments] == [1200, 1200, 933]
    assert b"".join(s[l4 + 8:] for s in segments) == data
    for seg in segments:
        assert transport_ok(seg) and ip_header_ok(seg)
        assert struct.unpack_from("!H", seg, l4 + 4)[0] == len(seg) - l4


@pytest.mark.parametrize("version", [4, 6])
def test_a_partial_checksum_is_completed_and_a_plain_packet_passes_unchanged(version: int) -> None:
    l4 = 20 if version == 4 else 40
    for packet, offset in ((udp_packet(version, payload_of(77), partial=True), 6),
                           (tcp_packet(version, payload_of(501), partial=True), 16)):
        [done] = split(frame(packet, l4=l4, offset=offset))
        assert transport_ok(done) and len(done) == len(packet)
        assert done[:l4 + offset] == packet[:l4 + offset] and done[l4 + offset + 2:] == packet[l4 + offset + 2:]
    icmp = ip_packet(version, 1 if version == 4 else 58, b"\x08\0\0\0" + payload_of(9))
    assert split(PLAIN_HEADER + icmp) == [icmp]


def test_frames_that_lie_are_refused() -> None:
    sup = tcp_packet(4, payload_of(3000), partial=True)
    with pytest.raises(OffloadError):
        split(frame(sup, GSO_TCPV4, 0, 20, 16))  # segment size 0
    with pytest.raises(OffloadError):
        split(frame(sup, GSO_TCPV6, 1000, 20, 16))  # IPv6 segmentation of an IPv4 packet
    with pytest.raises(OffloadError):
        split(frame(sup, GSO_TCPV4, 1000, 40, 16))  # transport header not where the IP header says
    with pytest.raises(OffloadError):
        split(frame(sup[:30], l4=20, offset=16))  # checksum field beyond the packet
    with pytest.raises(OffloadError):
        split(frame(sup)[:VNET_HDR_LEN + 10])
    with pytest.raises(OffloadError):
        split(frame(udp_packet(4, b"x" * 100), 3, 50, 20, 6))  # UFO: never enabled


# ------------------------------------------------------------------------------------------- coalesce


@pytest.mark.parametrize("version", [4, 6])
def test_segments_of_one_flow_are_merged_and_the_kernel_would_cut_them_back_the_same(version: int) -> None:
    data = payload_of(9999)
    sup = tcp_packet(version, data, flags=ACK | PSH, partial=True)
    l4 = 20 if version == 4 else 40
    segments = split(frame(sup, GSO_TCPV4 if version == 4 else GSO_TCPV6, 1400, l4, 16))
    [merged] = coalesce(segments)
    written = as_written(merged)
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(written)
    assert (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset) == (
        F_NEEDS_CSUM, GSO_TCPV4 if version == 4 else GSO_TCPV6, l4 + 20, 1400, l4, 16)
    packet = written[VNET_HDR_LEN:]
    assert tcp_fields(packet) == (1000, ACK | PSH, data)
    assert ip_header_ok(packet)
    [whole] = split(frame(packet, l4=l4, offset=16))  # the partial checksum, finished, verifies
    assert transport_ok(whole)
    # What the kernel does with it: segment by the header (our split stands in), same segments again.
    assert split(written) == segments


def test_boundaries_end_a_run() -> None:
    def seg(seq: int, size: int, flags: int = ACK, **kw: object) -> bytes:
        return tcp_packet(4, payload_of(size, seq), seq=seq, flags=flags, **kw)  # type: ignore[arg-type]

    def runs(packets: list[bytes]) -> list[int]:
        """How many input packets each written frame carries."""
        out = []
        for bufs in coalesce(packets):
            hdr = VNET_HDR.unpack(bytes(bufs[0]))
            out.append(len(bufs) - 3 if hdr[1] != GSO_NONE else 1)
        return out

    assert runs([seg(0, 100), seg(100, 100, ACK | PSH), seg(200, 100)]) == [2, 1]  # PSH ends a run
    assert runs([seg(0, 100), seg(100, 100, ACK | FIN)]) == [1, 1]  # FIN is never merged
    assert runs([seg(0, 100, ACK | SYN)]) == [1]
    assert runs([seg(0, 100), seg(100, 60), seg(160, 100)]) == [2, 1]  # a short segment is a run's last
    assert runs([seg(0, 100), seg(150, 100)]) == [1, 1]  # a gap in the sequence
    assert runs([seg(0, 100), seg(100, 100, sport=40001)]) == [1, 1]  # another flow
    assert runs([seg(0, 100, ident=5, df=False), seg(100, 100, ident=9, df=False)]) == [1, 1]  # IDs not in step
    assert runs([seg(0, 100, ident=5, df=False), seg(100, 100, ident=6, df=False)]) == [2]
    assert runs([seg(0, 100), seg(100, 100, options=b"\x01\x01\x01\x01")]) == [1, 1]  # other options
    bad = bytearray(seg(100, 100))
    bad[-1] ^= 0xFF  # a wrong checksum: written alone, for the kernel to drop
    assert runs([seg(0, 100), bytes(bad), seg(200, 100)]) == [1, 1, 1]
    ping = ip_packet(4, 1, b"\x08\0\0\0" + payload_of(20))
    frames = coalesce([seg(0, 100), seg(100, 100), ping, seg(200, 100)])
    assert [as_written(f)[VNET_HDR_LEN:] == ping for f in frames] == [False, True, False]
    assert as_written(frames[1])[:VNET_HDR_LEN] == PLAIN_HEADER  # non-TCP passes through untouched
    assert tcp_fields(as_written(frames[2])[VNET_HDR_LEN:])[0] == 200  # order kept


def test_a_run_stops_below_the_ip_length_limit() -> None:
    packets = [tcp_packet(4, payload_of(1400, i), seq=1400 * i) for i in range(60)]
    frames = coalesce(packets)
    assert len(frames) == 2
    for bufs in frames:
        assert len(as_written(bufs)) - VNET_HDR_LEN <= 0xFFFF
    assert b"".join(tcp_fields(p)[2] for bufs in frames for p in split(as_written(bufs))) == \
        b"".join(tcp_fields(p)[2] for p in packets)

"""IPv4/IPv6 parsing and building for the dataplane, checked against scapy where it can serve as oracle."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ikegate.dataplane.packet import (
    ICMP,
    ICMPV6,
    TCP,
    UDP,
    PacketError,
    build_ipv4,
    build_ipv6,
    echo_reply_for,
    echo_request,
    inet_checksum,
    parse_ip,
)

scapy_inet = pytest.importorskip("scapy.layers.inet")
scapy_inet6 = pytest.importorskip("scapy.layers.inet6")
IP, TCP_, UDP_, ICMP_ = scapy_inet.IP, scapy_inet.TCP, scapy_inet.UDP, scapy_inet.ICMP
IPv6, ICMPv6EchoRequest, ICMPv6EchoReply = scapy_inet6.IPv6, scapy_inet6.ICMPv6EchoRequest, scapy_inet6.ICMPv6EchoReply
IPv6ExtHdrFragment, IPv6ExtHdrHopByHop = scapy_inet6.IPv6ExtHdrFragment, scapy_inet6.IPv6ExtHdrHopByHop


def n(addr: str) -> int:
    return int(ipaddress.ip_address(addr))


def test_parse_v4_tcp_with_options() -> None:
    raw = bytes(IP(src="10.0.0.1", dst="10.0.0.2", options=b"\x01\x01\x01\x00") / TCP_(sport=1234, dport=80))
    info = parse_ip(raw + b"\x00" * 6)  # trailing link-layer padding is not part of the packet
    assert info.version == 4 and info.src == n("10.0.0.1") and info.dst == n("10.0.0.2")
    assert (info.protocol, info.src_port, info.dst_port) == (TCP, 1234, 80)
    assert (info.header_len, info.total_len) == (24, len(raw))
    assert str(info.src_ip) == "10.0.0.1" and str(info.dst_ip) == "10.0.0.2"


def test_parse_v4_icmp_and_fragments() -> None:
    info = parse_ip(bytes(IP(src="1.1.1.1", dst="2.2.2.2") / ICMP_(type=8, code=0)))
    assert (info.protocol, info.icmp_type, info.icmp_code, info.src_port) == (ICMP, 8, 0, 0)
    later = bytes(IP(src="1.1.1.1", dst="2.2.2.2", proto=17, frag=100) / (b"\x12\x34\x00\x35" + bytes(20)))
    info = parse_ip(later)
    assert (info.protocol, info.src_port, info.dst_port) == (UDP, 0, 0)  # no ports in a non-first fragment


def test_parse_v6_with_extension_headers() -> None:
    raw = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrHopByHop() / UDP_(sport=500, dport=4500))
    info = parse_ip(raw)
    assert (info.version, info.protocol, info.src_port, info.dst_port) == (6, UDP, 500, 4500)
    assert info.header_len == 48 and info.total_len == len(raw)
    assert info.src == n("2001:db8::1") and str(info.dst_ip) == "2001:db8::2"
    frag = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrFragment(offset=10, nh=6) / bytes(24))
    info = parse_ip(frag)
    assert (info.protocol, info.src_port, info.header_len) == (TCP, 0, 48)
    echo = parse_ip(bytes(IPv6(src="::1", dst="::2") / ICMPv6EchoRequest()))
    assert (echo.protocol, echo.icmp_type) == (ICMPV6, 128)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        bytes(19),
        b"\x45" + bytes(19),  # total length 0 < header
        bytes(IP(dst="1.2.3.4"))[:-1],  # a header one byte short
        b"\x46" + bytes(2) + b"\x14" + bytes(16),  # IHL 6 (24 bytes) in a 20-byte packet
        b"\x65" + bytes(30),  # v6 shorter than 40
        b"\x15" + bytes(40),  # version 1
    ],
)
def test_parse_refuses_garbage(raw: bytes) -> None:
    with pytest.raises(PacketError):
        parse_ip(raw)


def test_parse_refuses_truncation() -> None:
    raw = bytes(IP(dst="1.2.3.4") / UDP_() / b"data")
    with pytest.raises(PacketError):
        parse_ip(raw[:-1])
    raw6 = bytes(IPv6(dst="::1") / UDP_() / b"data")
    with pytest.raises(PacketError):
        parse_ip(raw6[:-1])
    hop = bytes(IPv6(dst="::1", nh=0, plen=4) / bytes(4))
    with pytest.raises(PacketError):
        parse_ip(hop)


@given(st.binary(max_size=120))
def test_parse_raises_only_packet_error(data: bytes) -> None:
    try:
        info = parse_ip(data)
    except PacketError:
        return
    assert info.header_len <= info.total_len <= len(data)


@given(st.binary(max_size=200))
def test_checksum_matches_scapy(data: bytes) -> None:
    from scapy.utils import checksum

    assert inet_checksum(data) == checksum(data)


def test_build_ipv4_header_checksum_valid() -> None:
    raw = build_ipv4("192.0.2.1", "198.51.100.7", UDP, b"\x00" * 12, ttl=5, ident=77)
    parsed = IP(raw)
    assert parsed.chksum == IP(bytes(IP(raw))).chksum
    del parsed.chksum
    assert IP(bytes(parsed)).chksum == IP(raw).chksum
    assert inet_checksum(raw[:20]) == 0
    assert (parsed.ttl, parsed.id, parsed.proto, parsed.len) == (5, 77, UDP, 32)


def test_build_ipv6() -> None:
    raw = build_ipv6("2001:db8::1", "2001:db8::2", TCP, b"abc")
    parsed = IPv6(raw)
    assert (parsed.plen, parsed.nh, parsed.hlim, parsed.src) == (3, TCP, 64, "2001:db8::1")


def test_echo_request_v4_checksums() -> None:
    raw = echo_request("10.0.0.1", "10.0.0.2", 0x1234, 9, b"abcdefgh")
    parsed = IP(raw)
    assert parsed[ICMP_].type == 8 and parsed[ICMP_].id == 0x1234 and parsed[ICMP_].seq == 9
    rebuilt = IP(raw)
    del rebuilt.chksum
    del rebuilt[ICMP_].chksum
    assert bytes(IP(bytes(rebuilt))) == raw  # scapy computes the same IP and ICMP checksums


def test_echo_request_v6_checksum() -> None:
    raw = echo_request("2001:db8::1", "2001:db8::2", 7, 3, b"xyz")
    parsed = IPv6(raw)
    assert parsed.haslayer(ICMPv6EchoRequest)
    rebuilt = IPv6(raw)
    del rebuilt[ICMPv6EchoRequest].cksum
    assert bytes(IPv6(bytes(rebuilt))) == raw
    with pytest.raises(PacketError):
        echo_request("10.0.0.1", "2001:db8::2", 1, 1)


def test_echo_reply_for_v4() -> None:
    request = echo_request("10.0.0.1", "10.0.0.2", 42, 5, b"payload")
    reply = echo_reply_for(request, {ipaddress.ip_address("10.0.0.2")})
    assert reply is not None
    parsed = IP(reply)
    assert (parsed.src, parsed.dst, parsed[ICMP_].type, parsed[ICMP_].id, parsed[ICMP_].seq) == (
        "10.0.0.2", "10.0.0.1", 0, 42, 5)
    assert bytes(parsed[ICMP_].payload) == b"payload"
    assert reply == echo_request("10.0.0.2", "10.0.0.1", 42, 5, b"payload", reply=True)
    assert echo_reply_for(request, {ipaddress.ip_address("10.0.0.9")}) is None  # not ours
    assert echo_reply_for(reply) is None  # a reply is not answered
    corrupt = bytearray(request)
    corrupt[-1] ^= 1
    assert echo_reply_for(bytes(corrupt)) is None
    assert echo_reply_for(b"junk") is None


def test_echo_reply_for_v6() -> None:
    request = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMPv6EchoRequest(id=9, seq=2, data=b"hi"))
    reply = echo_reply_for(request)
    assert reply is not None
    parsed = IPv6(reply)
    assert parsed.haslayer(ICMPv6EchoReply)
    assert (parsed.src, parsed.dst, parsed[ICMPv6EchoReply].id, parsed[ICMPv6EchoReply].data) == (
        "2001:db8::2", "2001:db8::1", 9, b"hi")
    again = IPv6(reply)
    del again[ICMPv6EchoReply].cksum
    assert bytes(IPv6(bytes(again))) == reply
    corrupt = bytearray(request)
    corrupt[-1] ^= 1
    assert echo_reply_for(bytes(corrupt)) is None

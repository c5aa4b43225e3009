"""The raw-ESP socket and the ESP-in-UDP checksum on real loopback sockets (root tests skip without it)."""

from __future__ import annotations

import select
import socket
import struct

import pytest

from ikegate.io.raw import IPPROTO_ESP, RawEspEndpoint, esp_payload, open_raw_esp
from ikegate.io.udp import SO_NO_CHECK, _Endpoint, is_udp_esp

ESP = struct.pack("!II", 0x1234ABCD, 1) + bytes(range(48))


def _raw_or_skip(open_: object, *args: object) -> socket.socket:
    try:
        return open_(*args)  # type: ignore[operator, no-any-return]
    except PermissionError:
        pytest.skip("raw sockets need CAP_NET_RAW")


def test_esp_payload_strips_the_ipv4_header_by_its_ihl() -> None:
    header = bytes([0x46]) + bytes(19) + bytes(4)  # IHL 6: 24 bytes with options
    assert esp_payload(header + ESP, socket.AF_INET) == ESP
    assert esp_payload(ESP, socket.AF_INET6) == ESP  # IPv6 raw sockets deliver no header
    assert esp_payload(b"\x45" + bytes(10), socket.AF_INET) is None  # truncated
    assert esp_payload(b"\x60" + bytes(40), socket.AF_INET) is None  # not IPv4
    assert esp_payload(b"\x43" + bytes(30), socket.AF_INET) is None  # IHL below 5


def test_udp_esp_is_neither_ike_nor_keepalive() -> None:
    assert is_udp_esp(ESP)
    assert not is_udp_esp(bytes(4) + b"ike message")
    assert not is_udp_esp(b"\xff")


def test_raw_esp_round_trip_on_loopback() -> None:
    """Protocol 50 reaches a raw socket although this kernel has no ESP; what it sends is protocol 50."""
    sock = _raw_or_skip(open_raw_esp, "127.0.0.1")
    got: list[tuple[bytes, str]] = []
    endpoint = RawEspEndpoint("127.0.0.1", sock, lambda packet, remote: got.append((packet, remote)))
    try:
        endpoint.sendto(ESP, "127.0.0.1")
        assert select.select([sock], [], [], 5)[0]
        data = sock.recv(65535, socket.MSG_PEEK)
        assert data[9] == IPPROTO_ESP  # the IPv4 protocol field
        assert endpoint.on_readable() == 1
        assert got == [(ESP, "127.0.0.1")]
    finally:
        endpoint.close()


def test_esp_in_udp_checksum_zero_ike_checksum_kept() -> None:
    """RFC 3948 §3.1 on the wire: a raw UDP socket sees both datagrams with their UDP headers."""
    sniff = _raw_or_skip(socket.socket, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        tx.bind(("127.0.0.1", 0))
        sniff.bind(("127.0.0.1", 0))
        endpoint = _Endpoint(None, tx.getsockname(), tx, zero_esp_checksum=True)  # type: ignore[arg-type]
        port = rx.getsockname()[1]
        checksums: dict[bytes, int] = {}
        for payload in (ESP, bytes(4) + b"an IKE message", ESP):
            endpoint.sendto(payload, ("127.0.0.1", port))
            while True:
                assert select.select([sniff], [], [], 5)[0]
                packet = sniff.recv(65535)
                ihl = (packet[0] & 0x0F) * 4
                dport, checksum = struct.unpack_from("!2xH2xH", packet, ihl)
                if dport == port:
                    checksums.setdefault(packet[ihl + 8:], checksum)
                    assert checksum == 0 if is_udp_esp(packet[ihl + 8:]) else checksum != 0
                    break
        assert checksums[ESP] == 0 and checksums[bytes(4) + b"an IKE message"] != 0
        assert tx.getsockopt(socket.SOL_SOCKET, SO_NO_CHECK) == 1  # left on after the last ESP
    finally:
        for s in (sniff, rx, tx):
            s.close()

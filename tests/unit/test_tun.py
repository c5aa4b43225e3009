"""The TUN binding without a TUN: a SOCK_SEQPACKET pair stands in for the device (one read = one packet)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections import deque

import pytest

from ikegate.dataplane.packet import build_ipv4
from ikegate.io.tun import TunBridge, TunDevice, TunError
from tests.waiting import until


class _FakeDevice(TunDevice):
    def __init__(self, name: str) -> None:  # no /dev/net/tun: one end of a packet socket pair
        self.name = name
        self.kernel, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        self._sock = ours
        self.fd = ours.fileno()

    def close(self) -> None:
        self._sock.close()
        self.kernel.close()
        self.fd = -1


class _Gateway:
    def __init__(self) -> None:
        self.lan_out: deque[bytes] = deque()
        self.seen: list[bytes] = []

    def from_lan(self, packet: bytes, now: float) -> None:
        self.seen.append(packet)
        self.lan_out.append(packet)  # straight back out, as if it had crossed a tunnel


def test_invalid_names_are_refused_before_any_system_call() -> None:
    for name in ("", "x" * 16, "a/b", "a b"):
        with pytest.raises(TunError):
            TunDevice(name)


def test_packets_in_go_to_the_gateway_and_lan_out_is_written_after_the_flush() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        gateway = _Gateway()
        flushes: list[int] = []

        def flush() -> None:  # what UdpRunner.flush does at its end: the flush hooks
            flushes.append(1)
            bridge.drain()

        bridge = TunBridge(gateway, loop, flush, loop.time)  # type: ignore[arg-type]  # a stub gateway
        lan = _FakeDevice("tun-a")
        other = _FakeDevice("tun-b")
        bridge.add(lan, (ipaddress.ip_network("192.0.2.0/26"),))
        bridge.add(other, (ipaddress.ip_network("192.0.2.64/26"),))
        first = build_ipv4("192.0.2.70", "192.0.2.10", 17, bytes(12))
        second = build_ipv4("192.0.2.10", "192.0.2.70", 17, bytes(12))
        lan.kernel.send(first)
        lan.kernel.send(second)
        await until(lambda: gateway.seen, what="the packets read from the device")
        assert gateway.seen == [first, second]
        assert flushes == [1]  # one flush for the burst
        # Each decrypted packet went to the device whose interface holds its destination.
        assert lan.kernel.recv(2048) == first
        assert other.kernel.recv(2048) == second
        assert (bridge.packets_in, bridge.packets_out, bridge.write_errors) == (2, 2, 0)
        bridge.close()
        assert lan.fd == -1 and other.fd == -1

    asyncio.run(scenario())


def test_an_adopted_queue_carries_the_openers_state_and_its_own_descriptor() -> None:
    opener = _FakeDevice("tun-q")
    opener.negotiated = 7  # type: ignore[attr-defined]  # what an open may learn from the kernel
    state = opener.state()
    assert state == {"name": "tun-q", "negotiated": 7}  # only plain values: it crosses to a worker pickled
    kernel, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        adopted = TunDevice.adopt(ours.fileno(), state)
        assert (adopted.name, adopted.fd, adopted.negotiated) == ("tun-q", ours.fileno(), 7)  # type: ignore[attr-defined]
        assert not os.get_blocking(ours.fileno())
        kernel.send(b"\x45packet")
        assert adopted.read() == b"\x45packet"
    finally:
        kernel.close()
        ours.close()
        opener.close()

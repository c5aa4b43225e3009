"""The TUN binding without a TUN: a SOCK_SEQPACKET pair stands in for the device (one read = one packet)."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
import struct
from collections import deque

import pytest

from ikegate.dataplane.offload import GSO_TCPV4, PLAIN_HEADER, VNET_HDR, split
from ikegate.dataplane.packet import build_ipv4
from ikegate.io import tun
from ikegate.io.tun import TunBridge, TunDevice, TunError
from tests.unit.test_tun_offload import frame, payload_of, tcp_packet
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


def test_with_a_virtio_net_header_super_packets_are_cut_and_runs_written_merged() -> None:
    """The bridge on a device opened with IFF_VNET_HDR: a TSO frame reaches the gateway as MTU-sized
    segments, their decrypted twins leave as one merged frame, a bare frame loses only its header, and a
    frame whose header lies is dropped and counted."""
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        gateway = _Gateway()
        bridge = TunBridge(gateway, loop, lambda: bridge.drain(), loop.time)  # type: ignore[arg-type]
        lan = _FakeDevice("tun-a")
        lan.vnet = True
        bridge.add(lan)
        sup = tcp_packet(4, payload_of(5000), flags=0x18, partial=True)
        lan.kernel.send(frame(sup, GSO_TCPV4, 1360, 20, 16))
        await until(lambda: len(gateway.seen) == 4, what="the segments of the super-packet")
        assert gateway.seen == split(frame(sup, GSO_TCPV4, 1360, 20, 16))
        assert all(len(p) <= 1400 for p in gateway.seen)
        merged = lan.kernel.recv(65536)
        assert VNET_HDR.unpack_from(merged)[1] == GSO_TCPV4
        assert split(merged) == gateway.seen  # what the kernel would cut it into
        ping = build_ipv4("192.0.2.70", "192.0.2.10", 1, b"\x08\0\0\0" + bytes(8))
        lan.kernel.send(PLAIN_HEADER + ping)
        lan.kernel.send(frame(sup, GSO_TCPV4, 0, 20, 16))  # segmentation with a size of 0: dropped
        lan.kernel.send(PLAIN_HEADER + ping)
        await until(lambda: len(gateway.seen) == 6, what="the bare packets")
        assert gateway.seen[4:] == [ping, ping]
        assert lan.kernel.recv(65536) == PLAIN_HEADER + ping
        assert (bridge.packets_in, bridge.packets_out, bridge.offload_errors) == (6, 6, 1)
        bridge.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(("refused", "has_vnet", "vnet", "offload"), [
    (set(), True, True, tun.OFFLOAD_CHOICES[0]),  # a kernel with UDP segmentation offload (6.2+)
    ({tun.OFFLOAD_CHOICES[0]}, True, True, tun.TUN_F_CSUM | tun.TUN_F_TSO4 | tun.TUN_F_TSO6),  # no USO
    (set(tun.OFFLOAD_CHOICES), True, True, 0),  # no offload at all: headers, but no super-packets
    (set(), False, False, 0),  # the device did not take IFF_VNET_HDR: bare packets, nothing asked
])
def test_offload_takes_what_the_kernel_grants(monkeypatch: pytest.MonkeyPatch, refused: set[int], has_vnet: bool,
                                               vnet: bool, offload: int) -> None:
    asked: list[int] = []

    def ioctl(fd: int, request: int, arg: bytes | int) -> bytes:  # stands in for the kernel's answers
        if request == tun.TUNGETIFF:
            flags = tun.IFF_TUN | tun.IFF_NO_PI | (tun.IFF_VNET_HDR if has_vnet else 0)
            return struct.pack(f"{tun.IFNAMSIZ}sH", b"tun-a", flags)
        assert request == tun.TUNSETOFFLOAD and isinstance(arg, int)
        asked.append(arg)
        if arg in refused:
            raise OSError(errno.EINVAL, "Invalid argument")
        return b""

    monkeypatch.setattr(tun.fcntl, "ioctl", ioctl)
    device = object.__new__(TunDevice)
    device.fd, device.name = 99, "tun-a"
    device._negotiate_offload(True)
    assert (device.vnet, device.offload) == (vnet, offload)
    assert asked == ([c for c in tun.OFFLOAD_CHOICES if c in refused] + ([offload] if offload else []) if vnet else [])


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
        assert adopted.read() == [b"\x45packet"]
    finally:
        kernel.close()
        ours.close()
        opener.close()

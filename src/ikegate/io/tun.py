"""The protected side on a real host: a Linux TUN device carrying the LAN's IP packets.

This kernel has no ESP, so the gateway does IPsec in userspace (:mod:`ikegate.dataplane`); a TUN device is
how its packets meet the kernel's routing. The operator (or a test) routes the protected remote networks
into the TUN; every packet the kernel sends there is read here and handed to
:meth:`Gateway.from_lan <ikegate.gateway.controller.Gateway.from_lan>`, which protects it, traps it (a
traffic-based policy starts negotiating) or drops it. Decrypted packets the gateway puts in
``gateway.lan_out`` are written back into the TUN, and the kernel forwards them to the hosts.

Design choices, and why:

* ``IFF_TUN | IFF_NO_PI``: bare IP packets, no 4-byte packet-information header. The family is read
  from the IP version nibble by the dataplane anyway, and this is what ``ip tuntap add mode tun``
  creates, so an operator's persistent device can be attached to as well.
* The device is opened by name through ``TUNSETIFF``: it is created when missing (and disappears when the
  gateway exits, unless it was made persistent beforehand) and then set ``up`` with ``SIOCSIFFLAGS``.
  Routes are deliberately *not* touched: which networks go into the tunnel is routing policy, the
  operator's (or the test topology's) job.
* Its MTU is lowered to :data:`DEFAULT_MTU` when the device is larger: every packet grows by the outer
  IP header, UDP (ESP-in-UDP on the NAT-T port), ESP header, IV, padding and ICV (up to about 90 bytes
  with IPv6 outside), and a 1500-byte inner packet would otherwise need fragmenting on the WAN.
* Reads are event driven (``loop.add_reader`` on the non-blocking fd, draining everything readable),
  and writes happen right after the UDP runner flushed: the gateway only fills ``lan_out`` while it
  handles a datagram or a timer, and the runner flushes after each of those, so a flush hook sees every
  packet without polling (see :meth:`UdpRunner.add_flush_hook <ikegate.io.udp.UdpRunner.add_flush_hook>`).
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import ipaddress
import logging
import os
import socket
import struct
from collections import deque
from collections.abc import Callable, Mapping

from ikegate.dataplane.packet import PacketError, parse_ip
from ikegate.gateway.controller import Gateway
from ikegate.io.udp import UdpRunner

__all__ = ["DEFAULT_MTU", "TunBridge", "TunDevice", "TunError", "open_bridge"]

log = logging.getLogger("ikegate.io.tun")

TUNSETIFF = 0x400454CA  # _IOW('T', 202, int)
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
#: One queue (file descriptor) per opener: placement workers each read their own share of the packets the
#: kernel routes into the device (tun picks the queue by the flow's symmetric hash, preferring the queue
#: that last wrote the flow's other direction), and each writes its decrypted packets into its own queue.
IFF_MULTI_QUEUE = 0x0100
IFF_UP = 0x1
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCGIFMTU = 0x8921
SIOCSIFMTU = 0x8922
IFNAMSIZ = 16
#: Room for ESP-in-UDP over IPv6 inside a 1500-byte WAN MTU (see the module docstring).
DEFAULT_MTU = 1400
#: Larger than any MTU a TUN is given here: one read returns exactly one packet.
READ_SIZE = 65536
#: Packets read per wake-up before the loop gets a turn again (a flood must not starve IKE).
READ_BURST = 256

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_IFREQ_FLAGS = struct.Struct(f"{IFNAMSIZ}sH")
_IFREQ_INT = struct.Struct(f"{IFNAMSIZ}si")


class TunError(OSError):
    """The TUN device could not be opened or configured (no /dev/net/tun, no CAP_NET_ADMIN, bad name)."""


def _ifreq_name(name: str) -> bytes:
    raw = name.encode()
    if not raw or len(raw) >= IFNAMSIZ or b"/" in raw or b" " in raw:
        raise TunError(errno.EINVAL, f"invalid interface name {name!r}")
    return raw


class TunDevice:
    """One open TUN device: a non-blocking file descriptor that reads and writes whole IP packets."""

    def __init__(self, name: str, *, mtu: int | None = DEFAULT_MTU, multi_queue: bool = False) -> None:
        raw = _ifreq_name(name)
        flags = IFF_TUN | IFF_NO_PI | (IFF_MULTI_QUEUE if multi_queue else 0)
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise TunError(exc.errno, f"cannot open /dev/net/tun: {exc.strerror}") from exc
        try:
            answer = fcntl.ioctl(fd, TUNSETIFF, _IFREQ_FLAGS.pack(raw, flags))
        except OSError as exc:
            os.close(fd)
            raise TunError(exc.errno, f"cannot attach TUN {name}: {exc.strerror} (root or CAP_NET_ADMIN?)") from exc
        self.fd = fd
        # The kernel answers with the name it really used (the same, since we gave one).
        self.name = _IFREQ_FLAGS.unpack(answer)[0].rstrip(b"\0").decode()
        try:
            self._configure(mtu)
        except OSError as exc:
            self.close()
            raise TunError(exc.errno, f"cannot bring up TUN {name}: {exc.strerror}") from exc

    @classmethod
    def adopt(cls, fd: int, state: Mapping[str, object]) -> TunDevice:
        """A queue another process opened and passed down (a placement worker's: the supervisor attaches
        the queues in worker order, see :mod:`ikegate.workers.tunsteer`), already configured; ``state`` is
        the opener's :meth:`state` (the name, and whatever the open negotiated with the kernel)."""
        device = cls.__new__(cls)
        device.__dict__.update(state)
        device.fd = fd
        os.set_blocking(fd, False)
        return device

    def state(self) -> dict[str, object]:
        """What :meth:`adopt` needs besides the descriptor: every plain attribute (the name, and what the open
        negotiated, the same for every queue of the device), picklable to cross to a worker."""
        return {k: v for k, v in vars(self).items() if k != "fd" and isinstance(v, bool | int | str | float)}

    def _configure(self, mtu: int | None) -> None:
        """``ip link set NAME mtu M up`` without running ``ip``: two ioctls on any socket."""
        raw = self.name.encode()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            if mtu is not None:
                current = _IFREQ_INT.unpack(fcntl.ioctl(sock, SIOCGIFMTU, _IFREQ_INT.pack(raw, 0)))[1]
                if current > mtu:
                    fcntl.ioctl(sock, SIOCSIFMTU, _IFREQ_INT.pack(raw, mtu))
            flags = _IFREQ_FLAGS.unpack(fcntl.ioctl(sock, SIOCGIFFLAGS, _IFREQ_FLAGS.pack(raw, 0)))[1]
            if not flags & IFF_UP:
                fcntl.ioctl(sock, SIOCSIFFLAGS, _IFREQ_FLAGS.pack(raw, flags | IFF_UP))

    def fileno(self) -> int:
        return self.fd

    def read(self) -> bytes | None:
        """One packet, or None when nothing is waiting."""
        try:
            return os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return None

    def write(self, packet: bytes) -> bool:
        """Hand one packet to the kernel; False when it was refused (queue full, link down, bad packet)."""
        try:
            os.write(self.fd, packet)
        except OSError as exc:
            log.debug("TUN %s refused a %d-byte packet: %s", self.name, len(packet), exc)
            return False
        return True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class TunBridge:
    """Binds TUN devices to a gateway in an event loop: LAN packets in, decrypted packets out.

    ``flush`` is the UDP runner's flush (send what the gateway produced, re-arm its timer); it is called
    after each burst read from a TUN, because protecting a packet produces ESP datagrams and trapping one
    may start an IKE negotiation. :meth:`drain` is meant to be the runner's flush hook.

    With several devices (one per protected VRP interface) a decrypted packet goes to the device whose
    interface prefixes contain its destination, else to the first one: once in the kernel it is routed
    by destination anyway, the choice only keeps reverse-path filtering happy.
    """

    def __init__(self, gateway: Gateway, loop: asyncio.AbstractEventLoop, flush: Callable[[], None],
                 clock: Callable[[], float]) -> None:
        self.gateway = gateway
        self.loop = loop
        self._flush = flush
        self._clock = clock
        self.devices: list[tuple[TunDevice, tuple[IPNetwork, ...]]] = []
        self.packets_in = 0
        self.packets_out = 0
        self.write_errors = 0

    def add(self, device: TunDevice, networks: tuple[IPNetwork, ...] = ()) -> None:
        """Start reading ``device``; ``networks`` are the prefixes of the VRP interface it stands for."""
        self.devices.append((device, networks))
        self.loop.add_reader(device.fileno(), self._on_readable, device)

    def _on_readable(self, device: TunDevice) -> None:
        """Drain the device until it would block (at most :data:`READ_BURST` packets), then flush once:
        the ESP datagrams of the whole burst leave together (in runs, see ``UdpRunner.flush``)."""
        got = 0
        from_lan, now, read, fd = self.gateway.from_lan, self._clock(), os.read, device.fd
        for _ in range(READ_BURST):
            try:
                packet = read(fd, READ_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                log.debug("TUN %s read failed: %s", device.name, exc)
                break
            got += 1
            try:
                from_lan(packet, now)
            except Exception:  # a bad packet must not take the daemon down
                log.exception("unexpected error handling a %d-byte packet from %s", len(packet), device.name)
        if got:
            self.packets_in += got
            self._flush()  # which ends with the flush hooks, drain() among them

    def _device_for(self, packet: bytes) -> TunDevice:
        first = self.devices[0][0]
        if len(self.devices) == 1:
            return first
        try:
            dst = parse_ip(packet).dst_ip
        except PacketError:
            return first
        return next((dev for dev, nets in self.devices if any(dst in net for net in nets)), first)

    def drain(self) -> None:
        """Write every packet the gateway queued for the protected side into a TUN."""
        out = self.gateway.lan_out
        if not self.devices or not out:
            return
        if len(self.devices) == 1:
            self._drain_one(self.devices[0][0], out)
            return
        while out:
            packet = out.popleft()
            if self._device_for(packet).write(packet):
                self.packets_out += 1
            else:
                self.write_errors += 1

    def _drain_one(self, device: TunDevice, out: deque[bytes]) -> None:
        """:meth:`drain` with one device: the burst written in a tight loop (no choice of device, no
        method call per packet)."""
        write, fd, popleft = os.write, device.fd, out.popleft
        written = errors = 0
        while out:
            packet = popleft()
            try:
                write(fd, packet)
            except OSError as exc:
                log.debug("TUN %s refused a %d-byte packet: %s", device.name, len(packet), exc)
                errors += 1
            else:
                written += 1
        self.packets_out += written
        self.write_errors += errors

    def close(self) -> None:
        for device, _ in self.devices:
            if device.fd >= 0:
                self.loop.remove_reader(device.fileno())
            device.close()
        self.devices.clear()


def open_bridge(gateway: Gateway, mapping: dict[str, str], runner: UdpRunner, *,
                multi_queue: bool = False, queues: Mapping[str, tuple[int, Mapping[str, object]]] | None = None
                ) -> TunBridge:
    """``--tun ITF=TUN`` for each item of ``mapping``: open (create) and bring up each TUN, bind it to the
    gateway and hook it to ``runner``'s flushes.

    The VRP interface must exist and must not carry an ``ipsec policy``: it is the protected side, whose
    ``ip address`` is the gateway's own LAN address (pings to it are answered by the gateway itself).
    ``multi_queue``: attach one queue of a multi-queue device (each placement worker attaches its own);
    ``queues``: queues already attached, by TUN name: (descriptor, :meth:`TunDevice.state`) (a worker's, passed
    down by the supervisor).
    """
    bridge = TunBridge(gateway, runner.loop, runner.flush, runner.now)
    try:
        for itf_name, tun_name in mapping.items():
            itf = gateway.config.interfaces.get(itf_name)
            if itf is None:
                raise TunError(errno.ENODEV, f"--tun {itf_name}={tun_name}: no interface {itf_name} in the "
                                             "configuration")
            if itf.ipsec_policy is not None:
                raise TunError(errno.EINVAL, f"--tun {itf_name}={tun_name}: {itf_name} carries ipsec policy "
                                             f"{itf.ipsec_policy}; a TUN stands for a protected-side interface")
            networks = tuple(i.network for i in itf.ipv4) + tuple(i.network for i in itf.ipv6)
            queue = None if queues is None else queues.get(tun_name)
            device = TunDevice(tun_name, multi_queue=multi_queue) if queue is None else TunDevice.adopt(*queue)
            bridge.add(device, networks)
            log.info("TUN %s is the protected side of %s", tun_name, itf_name)
    except BaseException:
        bridge.close()
        raise
    runner.add_flush_hook(bridge.drain)
    return bridge

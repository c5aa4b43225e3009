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
* Offload (as wireguard-go does), **opt-in**: with ``IKEGATE_TUN_OFFLOAD=1`` in the environment (the
  workers inherit it) the device is opened with ``IFF_VNET_HDR`` and asked for checksum and TCP
  segmentation offload (``TUNSETOFFLOAD``: ``TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6``, plus UDP
  segmentation where the kernel has it). A read may then return a TCP super-packet of up to 64 KB behind
  a ``virtio_net_hdr``, one system call instead of forty; :func:`ikegate.dataplane.offload.split` cuts it
  into MTU-sized packets with complete checksums before ESP. Decrypted packets are written with the same
  header, consecutive TCP segments of one flow merged into one super-packet
  (:func:`ikegate.dataplane.offload.coalesce`, GRO in userspace): one write, and one trip through the
  kernel's forwarding, per run. ``rx`` asks only for the super-packets, ``tx`` only merges what is
  written. Whatever the kernel refuses is left off (the flags a device took are on
  :attr:`TunDevice.offload`; without ``IFF_VNET_HDR`` every frame is a bare packet). Every queue of a
  multi-queue device shares the flags (the kernel keeps them per device), so every worker opens its
  queue the same way. Off by default because it does not pay in Python: both halves work (64 KB frames
  each way, byte-exact), but cutting and merging cost a checksum over every segment in Python, which is
  dearer than the system call per packet they save (``bench/dataplane_vs_libipsec.py --offload``, same
  run: TCP 1 stream 0.57-0.87x of the plain path; with one worker, gateway CPU per GB of TCP 1.4x);
  compiled, or with a C checksum, it might pay.
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

from ikegate.dataplane.offload import (
    F_NEEDS_CSUM,
    GSO_NONE,
    PLAIN_HEADER,
    VNET_HDR_LEN,
    OffloadError,
    coalesce,
    split,
)
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
#: Every frame carries a ``struct virtio_net_hdr`` (GSO type and size, checksum state): what offload needs.
IFF_VNET_HDR = 0x4000
TUNGETIFF = 0x800454D2  # _IOR('T', 210, unsigned int): the flags the device really has
TUNSETOFFLOAD = 0x400454D0  # _IOW('T', 208, unsigned int)
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_USO4 = 0x20  # Linux 6.2
TUN_F_USO6 = 0x40
#: What is asked, most first; a kernel that does not know a flag refuses the whole set (EINVAL).
OFFLOAD_CHOICES = (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_USO4 | TUN_F_USO6,
                   TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6,
                   TUN_F_CSUM)
IFF_UP = 0x1
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCGIFMTU = 0x8921
SIOCSIFMTU = 0x8922
IFNAMSIZ = 16
#: Room for ESP-in-UDP over IPv6 inside a 1500-byte WAN MTU (see the module docstring).
DEFAULT_MTU = 1400
#: Larger than any packet a TUN hands over (a 64 KB super-packet and its header included): one read returns
#: exactly one frame.
READ_SIZE = 65536 + 64
#: Packets read per wake-up before the loop gets a turn again (a flood must not starve IKE); the segments of a
#: super-packet count one by one.
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
    """One open TUN device (one queue of it): a non-blocking file descriptor of IP packets.

    ``vnet``: every frame read or written carries a virtio-net header (``IFF_VNET_HDR`` took);
    ``offload``: the ``TUN_F_*`` flags the kernel accepted (0: it segments and checksums as before)."""

    vnet = False
    offload = 0

    def __init__(self, name: str, *, mtu: int | None = DEFAULT_MTU, multi_queue: bool = False,
                 offload: bool = False, segmentation: bool = True) -> None:
        raw = _ifreq_name(name)
        flags = IFF_TUN | IFF_NO_PI | (IFF_MULTI_QUEUE if multi_queue else 0)
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise TunError(exc.errno, f"cannot open /dev/net/tun: {exc.strerror}") from exc
        self.fd = fd
        try:
            answer = self._attach(raw, flags | (IFF_VNET_HDR if offload else 0))
        except OSError as exc:
            self.close()
            raise TunError(exc.errno, f"cannot attach TUN {name}: {exc.strerror} (root or CAP_NET_ADMIN?)") from exc
        # The kernel answers with the name it really used (the same, since we gave one).
        self.name = _IFREQ_FLAGS.unpack(answer)[0].rstrip(b"\0").decode()
        if offload:
            self._negotiate_offload(segmentation)
        try:
            self._configure(mtu)
        except OSError as exc:
            self.close()
            raise TunError(exc.errno, f"cannot bring up TUN {name}: {exc.strerror}") from exc

    def _attach(self, raw: bytes, flags: int) -> bytes:
        """``TUNSETIFF``: create the device or attach this queue to it. (A further per-queue ioctl, a
        steering program say, goes after this one.)"""
        return fcntl.ioctl(self.fd, TUNSETIFF, _IFREQ_FLAGS.pack(raw, flags))

    def _negotiate_offload(self, segmentation: bool) -> None:
        """Read back the flags this queue has (a device's flags are shared by its queues), then ask for
        the most offload the kernel grants; whatever it refuses stays off."""
        try:
            got = _IFREQ_FLAGS.unpack(fcntl.ioctl(self.fd, TUNGETIFF, _IFREQ_FLAGS.pack(b"", 0)))[1]
        except OSError as exc:  # TUNSETIFF took the flag: the frames carry the header
            log.debug("TUN %s: TUNGETIFF refused (%s)", self.name, exc)
            got = IFF_VNET_HDR
        self.vnet = bool(got & IFF_VNET_HDR)
        if not self.vnet:
            log.info("TUN %s: no virtio-net header, no offload", self.name)
            return
        if not segmentation:
            return
        for want in OFFLOAD_CHOICES:
            try:
                fcntl.ioctl(self.fd, TUNSETOFFLOAD, want)
            except OSError as exc:
                log.debug("TUN %s refused offload flags %#x: %s", self.name, want, exc)
                continue
            self.offload = want
            break
        log.debug("TUN %s: virtio-net header, offload flags %#x", self.name, self.offload)

    @classmethod
    def opened(cls, name: str, *, multi_queue: bool = False) -> TunDevice:
        """A queue opened with the offload :func:`offload_mode` asks for: whoever opens a device (one
        process, or the supervisor for its workers) opens it the same way."""
        mode = offload_mode()
        return cls(name, multi_queue=multi_queue, offload=mode != "0", segmentation=mode != "tx")

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

    def read(self) -> list[bytes] | None:
        """The packets of one frame (a super-packet cut into segments), or None when nothing is waiting."""
        try:
            frame = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return None
        return split(frame) if self.vnet else [frame]

    def write(self, packet: bytes) -> bool:
        """Hand one packet to the kernel; False when it was refused (queue full, link down, bad packet)."""
        try:
            if self.vnet:
                os.writev(self.fd, coalesce((packet,))[0])
            else:
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
        self.offload_errors = 0  # frames whose virtio-net header did not fit the packet
        self._reading = False  # in _on_readable: its own flush drains, and must not read again
        #: Merge the TCP runs of what is written into super-packets (with a virtio-net header only).
        self.merge = True

    def add(self, device: TunDevice, networks: tuple[IPNetwork, ...] = ()) -> None:
        """Start reading ``device``; ``networks`` are the prefixes of the VRP interface it stands for."""
        self.devices.append((device, networks))
        self.loop.add_reader(device.fileno(), self._on_readable, device)

    def _on_readable(self, device: TunDevice) -> None:
        """Drain the device until it would block (at most :data:`READ_BURST` packets), then flush once:
        the ESP datagrams of the whole burst leave together (in runs, see ``UdpRunner.flush``). With a
        virtio-net header, a frame that needs nothing (no segmentation, checksum complete) is only
        stripped of it; the others go through :func:`~ikegate.dataplane.offload.split`."""
        self._reading = True
        try:
            self._read_burst(device)
        finally:
            self._reading = False

    def _read_burst(self, device: TunDevice) -> None:
        got = 0
        from_lan, now, read, fd, vnet = self.gateway.from_lan, self._clock(), os.read, device.fd, device.vnet
        while got < READ_BURST:
            try:
                frame = read(fd, READ_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                log.debug("TUN %s read failed: %s", device.name, exc)
                break
            if not vnet:
                packets: list[bytes] | tuple[bytes] = (frame,)
            elif frame[1] == GSO_NONE and not frame[0] & F_NEEDS_CSUM:
                packets = (frame[VNET_HDR_LEN:],)
            else:
                try:
                    packets = split(frame)
                except OffloadError as exc:
                    self.offload_errors += 1
                    log.debug("TUN %s: dropped a %d-byte frame: %s", device.name, len(frame), exc)
                    continue
            for packet in packets:
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
            device = self.devices[0][0]
            self._write(device, out)
            if not self._reading:
                # Writing a packet into the kernel runs its forwarding there and then, and a host that
                # answers at once (a ping, a TCP ACK) has its answer queued on the TUN before write()
                # returned: read it in this pass rather than after one more trip through the event loop
                # (half of the idle round trip is such trips). When nothing came back this costs one
                # read that would block.
                self._on_readable(device)
            return
        shares: dict[int, tuple[TunDevice, list[bytes]]] = {}
        while out:
            packet = out.popleft()
            device = self._device_for(packet)
            shares.setdefault(id(device), (device, []))[1].append(packet)
        for device, packets in shares.values():
            self._write(device, packets)

    def _write(self, device: TunDevice, packets: deque[bytes] | list[bytes]) -> None:
        """Write ``packets`` (emptied) into ``device`` in a tight loop: bare, or behind a virtio-net header
        with the TCP runs merged (one ``writev`` per run)."""
        fd = device.fd
        written = errors = 0
        if device.vnet:
            batch = list(packets)
            packets.clear()
            writev = os.writev
            for bufs in coalesce(batch) if self.merge else [[PLAIN_HEADER, p] for p in batch]:
                count = 1 if len(bufs) == 2 else len(bufs) - 3  # header + packet, or header, IP, TCP, payloads
                try:
                    writev(fd, bufs)
                except OSError as exc:
                    log.debug("TUN %s refused a frame of %d packet(s): %s", device.name, count, exc)
                    errors += count
                else:
                    written += count
        else:
            write = os.write
            for packet in packets:
                try:
                    write(fd, packet)
                except OSError as exc:
                    log.debug("TUN %s refused a %d-byte packet: %s", device.name, len(packet), exc)
                    errors += 1
                else:
                    written += 1
            packets.clear()
        self.packets_out += written
        self.write_errors += errors

    def close(self) -> None:
        for device, _ in self.devices:
            if device.fd >= 0:
                self.loop.remove_reader(device.fileno())
            device.close()
        self.devices.clear()


def offload_mode() -> str:
    """``IKEGATE_TUN_OFFLOAD`` (see the module docstring): "1" both ways, "rx" or "tx" one way, "0" none."""
    mode = os.environ.get("IKEGATE_TUN_OFFLOAD", "0")
    return mode if mode in ("1", "rx", "tx") else "0"


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
    bridge.merge = offload_mode() != "rx"
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
            device = (TunDevice.opened(tun_name, multi_queue=multi_queue) if queue is None
                      else TunDevice.adopt(*queue))
            bridge.add(device, networks)
            log.info("TUN %s is the protected side of %s (offload %#x)", tun_name, itf_name, device.offload)
    except BaseException:
        bridge.close()
        raise
    runner.add_flush_hook(bridge.drain)
    return bridge

"""The asyncio binding of the gateway controller: UDP sockets and one timer, nothing else.

Like aioquic's ``asyncio/protocol.py``: on a datagram or when the timer fires, feed the sans-I/O
controller, send what it produced, re-arm the single ``call_at`` for its next deadline. Time is the
event loop's monotonic clock.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import struct
from collections import deque
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

from ikegate.gateway.controller import Gateway
from ikegate.ike.core.config import Addr
from ikegate.io.raw import RawEspEndpoint, open_raw_esp

log = logging.getLogger("ikegate.io")


SOCKET_BUFFER = 4 << 20
_FORCE = {socket.SO_RCVBUF: 33, socket.SO_SNDBUF: 32}  # SO_RCVBUFFORCE / SO_SNDBUFFORCE (Linux, root)


def _enlarge_buffers(sock: socket.socket | None) -> None:
    """Bursts (a reset of thousands of SAs, a flood of IKE_SA_INIT) must queue, not drop: ask for 4 MiB,
    beyond net.core.rmem_max when we are allowed to."""
    if sock is None:
        return
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, _FORCE[opt], SOCKET_BUFFER)
        except OSError:
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
            except OSError:
                log.debug("cannot enlarge socket buffer %s", opt)


#: Datagrams read per readiness event before the loop gets control back. asyncio's own datagram transport
#: reads one per event, so a loop busy with other work (a 20-session `display ike sa` storm) would starve
#: negotiations; reading a batch and flushing once per batch also saves a timer re-arm per datagram.
READ_BATCH = 64
MAX_DATAGRAM = 65535
SO_NO_CHECK = getattr(socket, "SO_NO_CHECK", 11)  # Linux: send this socket's UDP/IPv4 with checksum 0
#: The port of ESP-in-UDP when a gateway owns its addresses: only then may it also take raw ESP, which
#: has no port to tell two gateways on one address apart (test and demo setups use other ports).
STANDARD_NATT_PORT = 4500


#: UDP segmentation offload (Linux 4.18) and its receive side, UDP GRO (Linux 5.0): one ``sendmsg`` hands
#: the kernel a run of datagrams of one size for one peer, and one ``recvmsg`` returns a run the kernel
#: coalesced; across the routing, veth or NIC they travel as one buffer, on the wire as ordinary datagrams.
SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
UDP_GRO = getattr(socket, "UDP_GRO", 104)
#: A run never exceeds the smallest UDP_MAX_SEGMENTS Linux has had (64), nor one IP datagram's length.
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000
_GRO_CMSG_SPACE = socket.CMSG_SPACE(4)
_GSO_SIZE = struct.Struct("=H")
_GRO_SIZE = struct.Struct("=i")
_MSG_TRUNC = int(socket.MSG_TRUNC)  # a plain int: ``IntFlag.__and__`` is a Python call per datagram
#: errors that say segmentation offload cannot work on this socket at all (rather than for this run), and
#: how many refusals of other kinds in a row say the same
GSO_MAX_REFUSALS = 16
_NO_GSO = frozenset({errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP, errno.ENOTSUP})


def is_udp_esp(data: bytes) -> bool:
    """An ESP-in-UDP payload on the NAT-T port: neither IKE (non-ESP marker) nor a NAT keepalive."""
    return data[:4] != b"\0\0\0\0" and data != b"\xff"


class _Endpoint:
    """One bound UDP socket: batched non-blocking reads, and writes that queue when the socket is full."""

    def __init__(self, runner: UdpRunner, local: Addr, sock: socket.socket, zero_esp_checksum: bool = False,
                 batch: bool = False, gro: bool = True) -> None:
        self.runner = runner
        self.local = local
        self.sock = sock
        self._backlog: deque[tuple[bytes, Addr]] = deque()
        #: ``batch``: the ESP socket sends runs with UDP_SEGMENT and receives coalesced runs (UDP_GRO),
        #: each switched off for good when the kernel refuses it (see :meth:`send_run`).
        self.gso = batch
        self._gso_refused = 0  # runs refused in a row (an old kernel refuses the option with EINVAL)
        #: ``gro`` False: not on a SO_REUSEPORT member steered by a BPF program (a placement worker's): a
        #: coalesced run is steered as one datagram, by its first, whatever SPIs the others carry.
        self._gro = batch and gro and _enable_gro(sock)
        #: RFC 3948 §3.1: ESP-in-UDP over IPv4 SHOULD carry a zero checksum (ESP has its own integrity),
        #: IKE keeps its checksum. Linux offers no per-message control, and a second socket on the same
        #: port (SO_REUSEPORT) would take a share of the *received* datagrams too, so SO_NO_CHECK is
        #: switched on this one socket when the kind of datagram changes (ESP comes in runs: cheap).
        self._zero_esp = zero_esp_checksum
        self._no_check = False

    def _checksum_for(self, data: bytes) -> None:
        want = is_udp_esp(data)
        if want != self._no_check:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, int(want))
                self._no_check = want
            except OSError as exc:
                log.debug("cannot set SO_NO_CHECK on %s: %s", self.local, exc)
                self._zero_esp = False

    def on_readable(self) -> None:
        """Read until the socket would block (at most :data:`READ_BATCH` reads), then flush once."""
        runner = self.runner
        feed, local, sock, gro = runner.feed, self.local, self.sock, self._gro
        now = runner.now()
        for _ in range(READ_BATCH):
            try:
                if gro:
                    data, ancillary, flags, addr = sock.recvmsg(MAX_DATAGRAM, _GRO_CMSG_SPACE)
                else:
                    data, addr = sock.recvfrom(MAX_DATAGRAM)
                    ancillary, flags = [], 0
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # e.g. ICMP port unreachable reported on the socket
                log.debug("socket error on %s: %s", self.local, exc)
                break
            remote = addr if len(addr) == 2 else (addr[0], addr[1])  # IPv6: without flow info and scope
            if ancillary:
                size = _gro_size(ancillary)
                if flags & _MSG_TRUNC:
                    log.debug("dropped a truncated run of datagrams from %s", remote)
                    continue
                if 0 < size < len(data):
                    for offset in range(0, len(data), size):
                        feed(data[offset:offset + size], local, remote, now)
                    continue
            feed(data, local, remote, now)
        runner.flush()

    def send_run(self, run: list[bytes], remote: Addr) -> None:
        """Datagrams for one peer, all of one length but the last (which may be shorter), in one
        ``sendmsg`` with UDP_SEGMENT. The kernel refuses segmentation on a socket that sends without
        checksums, so a run goes with them (RFC 3948 §3.1 only says SHOULD for the zero checksum of
        ESP-in-UDP over IPv4, and the checksum of a segmented run is offloaded); single datagrams keep the
        zero checksum. A refusal that concerns the socket switches segmentation off for good, one that
        concerns the run (too long for the path MTU) sends this run datagram by datagram, and so many of
        those in a row (:data:`GSO_MAX_REFUSALS`) switch it off too."""
        if len(run) == 1 or not self.gso or self._backlog:
            for data in run:
                self.sendto(data, remote)
            return
        if self._no_check:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 0)
                self._no_check = False
            except OSError:
                self.gso = False
        try:
            self.sock.sendmsg([b"".join(run)], [(SOL_UDP, UDP_SEGMENT, _GSO_SIZE.pack(len(run[0])))], 0, remote)
        except (BlockingIOError, InterruptedError):
            if not self._backlog:
                self.runner.loop.add_writer(self.sock.fileno(), self._on_writable)
            self._backlog.extend((data, remote) for data in run)
        except OSError as exc:
            self._gso_refused += 1
            if exc.errno in _NO_GSO or self._gso_refused >= GSO_MAX_REFUSALS:
                log.debug("no UDP segmentation offload on %s (%s): one datagram per send", self.local, exc)
                self.gso = False
            for data in run:
                self.sendto(data, remote)
        else:
            self._gso_refused = 0

    def sendto(self, data: bytes, remote: Addr) -> None:
        if self._backlog:
            self._backlog.append((data, remote))
            return
        if self._zero_esp:
            self._checksum_for(data)
        try:
            self.sock.sendto(data, remote)
        except (BlockingIOError, InterruptedError):
            self._backlog.append((data, remote))
            self.runner.loop.add_writer(self.sock.fileno(), self._on_writable)
        except OSError as exc:
            log.debug("cannot send from %s to %s: %s", self.local, remote, exc)

    def _on_writable(self) -> None:
        while self._backlog:
            data, remote = self._backlog[0]
            if self._zero_esp:
                self._checksum_for(data)
            try:
                self.sock.sendto(data, remote)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("cannot send from %s to %s: %s", self.local, remote, exc)
            self._backlog.popleft()
        self.runner.loop.remove_writer(self.sock.fileno())

    def close(self) -> None:
        loop = self.runner.loop
        loop.remove_reader(self.sock.fileno())
        if self._backlog:
            loop.remove_writer(self.sock.fileno())
        self.sock.close()


def _enable_gro(sock: socket.socket) -> bool:
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def _gro_size(ancillary: list[tuple[int, int, bytes]]) -> int:
    """The segment size of a coalesced run (the UDP_GRO control message), 0 when there is none."""
    for level, kind, value in ancillary:
        if level == SOL_UDP and kind == UDP_GRO and len(value) >= _GRO_SIZE.size:
            return int(_GRO_SIZE.unpack_from(value)[0])
    return 0


def _dispatch_udp(out: list[tuple[bytes, Addr, Addr]], endpoints: Mapping[Addr, _Endpoint]) -> None:
    """Like :func:`_dispatch`, but consecutive datagrams from one socket to one peer, of one length (the
    last of a run may be shorter), leave in one :meth:`_Endpoint.send_run`. Order is kept: a run only
    ever takes neighbours, so no flow is reordered."""
    i, n = 0, len(out)
    while i < n:
        data, local, remote = out[i]
        endpoint = endpoints.get(local)
        if endpoint is None:
            log.debug("no socket for %s; dropping a datagram to %s", local, remote)
            i += 1
            continue
        size = len(data)
        j = i + 1
        if endpoint.gso:
            end = min(n, i + GSO_MAX_SEGMENTS, i + GSO_MAX_BYTES // max(size, 1))
            while j < end:
                more, its_local, its_remote = out[j]
                if its_remote != remote or its_local != local or len(more) > size:
                    break
                j += 1
                if len(more) < size:
                    break  # a shorter datagram ends a run
        if j == i + 1:
            endpoint.sendto(data, remote)
        else:
            endpoint.send_run([item[0] for item in out[i:j]], remote)
        i = j


_K = TypeVar("_K")
_R = TypeVar("_R", contravariant=True)


class _Sender(Protocol[_R]):
    def sendto(self, data: bytes, remote: _R, /) -> None: ...


def _dispatch(out: list[tuple[bytes, _K, _R]], senders: Mapping[_K, _Sender[_R]], what: str) -> None:
    """Each (data, local, remote) through the socket bound to ``local``; none bound: dropped, logged."""
    for data, local, remote in out:
        sender = senders.get(local)
        if sender is None:
            log.debug("no socket for %s; dropping a %s to %s", local, what, remote)
            continue
        sender.sendto(data, remote)


IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)  # Linux <linux/in.h>


class UdpRunner:
    """Owns the sockets of one gateway and drives it."""

    def __init__(self, gateway: Gateway, loop: asyncio.AbstractEventLoop | None = None,
                 after: Callable[[], None] | None = None) -> None:
        self.gateway = gateway
        self.loop = loop or asyncio.get_event_loop()
        self._endpoints: dict[Addr, _Endpoint] = {}
        self._raw: dict[str, RawEspEndpoint] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._armed: float | None = None
        self._after = after
        #: Called, in order, at the end of every :meth:`flush` (after ``after``); see :meth:`add_flush_hook`.
        self._flush_hooks: list[Callable[[], None]] = []
        #: Which raw ESP packets are this gateway's (a placement worker takes only its SPIs); None: all.
        self.esp_filter: Callable[[bytes], bool] | None = None

    def add_flush_hook(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` at the end of every flush.

        The controller only produces output while it handles a datagram, a timer or a command, and each of
        those ends in a flush; so a hook here sees everything the controller queued for other outputs than
        UDP, at once and without polling. The TUN dataplane uses it to write ``gateway.lan_out``.
        """
        self._flush_hooks.append(hook)

    def now(self) -> float:
        return self.loop.time()

    async def open(self, addresses: list[str], raw_esp: bool = True, freebind: bool = False) -> None:
        """Bind the IKE and NAT-T ports on each configured address (and nothing else), and when
        ``raw_esp`` and the NAT-T port is the standard one, a raw ESP socket on each (see :meth:`_open_raw`)."""
        for address in addresses:
            family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
            for port in (self.gateway.ike_port, self.gateway.natt_port):
                local = (address, port)
                sock = socket.socket(family, socket.SOCK_DGRAM)
                try:
                    if family == socket.AF_INET6:
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    if freebind:  # hot standby: the VRRP address is ours only while we are active
                        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
                    sock.bind(local)
                    sock.setblocking(False)
                except OSError:
                    sock.close()
                    self.close()
                    raise
                self._add_endpoint(local, sock)
        self._finish_open(addresses, raw_esp)

    def adopt(self, sockets: Mapping[Addr, socket.socket], addresses: list[str], raw_esp: bool = True) -> None:
        """Drive sockets bound elsewhere (a placement worker gets its members of the supervisor's
        ``SO_REUSEPORT`` groups, see :mod:`ikegate.workers.sockets`) instead of binding them here."""
        for local, sock in sockets.items():
            sock.setblocking(False)
            self._add_endpoint(local, sock, gro=False)
        self._finish_open(addresses, raw_esp)

    def _add_endpoint(self, local: Addr, sock: socket.socket, gro: bool = True) -> None:
        _enlarge_buffers(sock)
        natt = local[1] == self.gateway.natt_port
        endpoint = _Endpoint(self, local, sock, zero_esp_checksum=sock.family == socket.AF_INET and natt,
                             batch=natt, gro=gro)
        self.loop.add_reader(sock.fileno(), endpoint.on_readable)
        self._endpoints[local] = endpoint

    def _finish_open(self, addresses: list[str], raw_esp: bool) -> None:
        self.gateway.raw_esp = bool(addresses) and raw_esp and self.gateway.natt_port == STANDARD_NATT_PORT \
            and self._open_raw(addresses)

    def _open_raw(self, addresses: list[str]) -> bool:
        """A raw ESP socket on every address, or none at all: the gateway either takes raw ESP from every
        peer or makes every peer encapsulate (an SA must not depend on which address it came to)."""
        for address in addresses:
            try:
                sock = open_raw_esp(address)
            except OSError as exc:
                log.info("no raw ESP on %s (%s): ESP will be carried in UDP %d", address, exc,
                         self.gateway.natt_port)
                self._close_raw()
                return False
            _enlarge_buffers(sock)
            endpoint = RawEspEndpoint(address, sock, self._feed_esp)
            self.loop.add_reader(sock.fileno(), self._on_raw_readable, endpoint)
            self._raw[address] = endpoint
        log.info("raw ESP (IP protocol 50) on %s", ", ".join(addresses))
        return True

    def _on_raw_readable(self, endpoint: RawEspEndpoint) -> None:
        if endpoint.on_readable():
            self.flush()

    def _feed_esp(self, packet: bytes, remote: str) -> None:
        if self.esp_filter is not None and not self.esp_filter(packet):
            return  # another worker's: every raw socket sees every ESP packet
        try:
            self.gateway.receive_esp(packet, remote, self.now())
        except Exception:  # as for datagrams: never take the daemon down
            log.exception("unexpected error handling raw ESP from %s", remote)

    def _close_raw(self) -> None:
        for endpoint in self._raw.values():
            self.loop.remove_reader(endpoint.sock.fileno())
            endpoint.close()
        self._raw.clear()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for endpoint in self._endpoints.values():
            endpoint.close()
        self._endpoints.clear()
        self._close_raw()

    def feed(self, data: bytes, local: Addr, remote: Addr, now: float | None = None) -> None:
        """One datagram into the controller (without flushing: the caller flushes once per batch, and
        may give the batch's ``now``: one clock reading per batch rather than per datagram)."""
        try:
            self.gateway.receive_datagram(data, local, remote, self.now() if now is None else now)
        except Exception:  # the controller must never take the daemon down; log and carry on
            log.exception("unexpected error handling a datagram from %s", remote)

    def on_datagram(self, data: bytes, local: Addr, remote: Addr) -> None:
        self.feed(data, local, remote)
        self.flush()

    def flush(self) -> None:
        """Send what the controller produced and re-arm the timer."""
        _dispatch_udp(self.gateway.datagrams_to_send(), self._endpoints)
        _dispatch(self.gateway.raw_esp_to_send(), self._raw, "raw ESP packet")
        when = self.gateway.get_timer()
        # Re-arm only for an earlier deadline: a timer that fires early finds nothing due and re-arms
        # itself, which is cheaper than cancelling and re-creating a handle on every datagram.
        if when is not None and (self._armed is None or when < self._armed):
            if self._timer is not None:
                self._timer.cancel()
            self._armed = when
            self._timer = self.loop.call_at(when, self._on_timer)
        if self._after is not None:
            self._after()
        for hook in self._flush_hooks:
            hook()

    def _on_timer(self) -> None:
        self._timer = None
        self._armed = None
        try:
            self.gateway.handle_timer(self.now())
        except Exception:
            log.exception("unexpected error in a timer")
        self.flush()

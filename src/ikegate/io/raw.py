"""Raw ESP (IP protocol 50) sockets: what a peer sends when no NAT is in the path.

This kernel has no ESP, and Linux hands the packets of a protocol it does not handle to the raw sockets
of that protocol (``raw_local_deliver`` runs before the protocol lookup), so a ``SOCK_RAW``/50 socket
receives them; sending through it lets the kernel build the outer IP header. It needs CAP_NET_RAW. One
socket per local address, bound to it, so only ESP for our addresses arrives. An IPv4 raw socket delivers
the IP header too (stripped here, by its IHL); an IPv6 one delivers the payload only (RFC 3542 §3).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable

log = logging.getLogger("ikegate.io")

IPPROTO_ESP = 50
MAX_PACKET = 65535
READ_BATCH = 64

#: (ESP packet without IP header, remote address)
Deliver = Callable[[bytes, str], None]


def open_raw_esp(address: str) -> socket.socket:
    """A non-blocking protocol-50 raw socket bound to ``address``; ``PermissionError`` without CAP_NET_RAW."""
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_RAW, IPPROTO_ESP)
    try:
        sock.bind((address, 0))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def esp_payload(data: bytes, family: int) -> bytes | None:
    """The ESP packet in what an IPv4 raw socket read (header stripped), or ``data`` itself for IPv6."""
    if family == socket.AF_INET6:
        return data
    if len(data) < 20 or data[0] >> 4 != 4:
        return None
    ihl = (data[0] & 0x0F) * 4
    if ihl < 20 or len(data) < ihl:
        return None
    return data[ihl:]


class RawEspEndpoint:
    """One bound raw socket: batched reads handed to ``deliver``; sends that fail are logged and dropped
    (ESP is datagram traffic; a full send buffer loses the packet as a full link would)."""

    def __init__(self, address: str, sock: socket.socket, deliver: Deliver) -> None:
        self.address = address
        self.sock = sock
        self.family = sock.family
        self._deliver = deliver

    def on_readable(self) -> int:
        """Read what is queued; returns how many packets went to ``deliver``."""
        done = 0
        for _ in range(READ_BATCH):
            try:
                data, addr = self.sock.recvfrom(MAX_PACKET)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.debug("raw ESP socket error on %s: %s", self.address, exc)
                break
            payload = esp_payload(data, self.family)
            if payload is None:
                continue
            self._deliver(payload, str(addr[0]))
            done += 1
        return done

    def sendto(self, packet: bytes, remote: str) -> None:
        try:
            self.sock.sendto(packet, (remote, 0))
        except OSError as exc:  # BlockingIOError included: dropped, as on a congested link
            log.debug("cannot send raw ESP from %s to %s: %s", self.address, remote, exc)

    def close(self) -> None:
        self.sock.close()

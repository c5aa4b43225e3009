"""The supervisor's UDP sockets: one ``SO_REUSEPORT`` group per (address, port), one member per worker.

The supervisor binds every member itself, in worker-index order, attaches the steering program to the group
and keeps every member open for its whole life: the kernel numbers members in the order they joined and
moves the last one into a closed member's place (``__reuseport_detach_sock``), so a member closed while its
worker restarts would re-number another worker. A worker gets its members as inherited descriptors and
never binds anything (docs/steering.md, "Kernel facts for the supervisor").
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from ikegate.ike.core.config import Addr
from ikegate.io.udp import IP_FREEBIND
from ikegate.workers.steering import Steering, attach

__all__ = ["Groups", "close_groups", "open_groups"]

#: (address, port) -> the group's members, index i for worker i
Groups = dict[Addr, list[socket.socket]]


def _family(address: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def _socket(address: str, reuse: bool, freebind: bool = False) -> socket.socket:
    sock = socket.socket(_family(address), socket.SOCK_DGRAM)
    if freebind:  # hot standby: the VRRP address is ours only while we are active
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    if reuse:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


def _probe(local: Addr, freebind: bool = False) -> None:
    """Bind once without ``SO_REUSEPORT``: a port held by anyone (another gateway's group included, which
    we could otherwise silently join and share its datagrams with) fails here as a single process would."""
    sock = _socket(local[0], reuse=False, freebind=freebind)
    try:
        sock.bind(local)
    finally:
        sock.close()


def open_groups(addresses: Iterable[str], ports: tuple[int, int], steering: Steering, *,
                freebind: bool = False) -> Groups:
    """Bind ``steering.workers`` members on each address's IKE and NAT-T port (``ports``), attach the
    program of each port to its group; OSError (port in use, a kernel without ``SO_ATTACH_REUSEPORT_CBPF``)
    closes whatever was opened."""
    groups: Groups = {}
    try:
        for address in addresses:
            for port, natt in ((ports[0], False), (ports[1], True)):
                local = (address, port)
                _probe(local, freebind)
                members: list[socket.socket] = []
                groups[local] = members
                for _ in range(steering.workers):
                    sock = _socket(address, reuse=True, freebind=freebind)
                    members.append(sock)
                    sock.bind(local)
                attach(members[0], steering.program(natt))
    except BaseException:
        close_groups(groups)
        raise
    return groups


def close_groups(groups: Groups) -> None:
    for members in groups.values():
        for sock in members:
            sock.close()
    groups.clear()

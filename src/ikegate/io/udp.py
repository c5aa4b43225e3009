"""The asyncio binding of the gateway controller: UDP sockets and one timer, nothing else.

Like aioquic's ``asyncio/protocol.py``: on a datagram or when the timer fires, feed the sans-I/O
controller, send what it produced, re-arm the single ``call_at`` for its next deadline. Time is the
event loop's monotonic clock.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable

from ikegate.gateway.controller import Gateway
from ikegate.ike.v2.config import Addr

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


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, runner: UdpRunner, local: Addr) -> None:
        self.runner = runner
        self.local = local
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint gets a datagram transport

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.runner.on_datagram(data, self.local, (str(addr[0]), int(str(addr[1]))))

    def error_received(self, exc: Exception) -> None:
        log.debug("socket error on %s: %s", self.local, exc)


class UdpRunner:
    """Owns the sockets of one gateway and drives it."""

    def __init__(self, gateway: Gateway, loop: asyncio.AbstractEventLoop | None = None,
                 after: Callable[[], None] | None = None) -> None:
        self.gateway = gateway
        self.loop = loop or asyncio.get_event_loop()
        self._endpoints: dict[Addr, _Endpoint] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._armed: float | None = None
        self._after = after
        #: Called, in order, at the end of every :meth:`flush` (after ``after``); see :meth:`add_flush_hook`.
        self._flush_hooks: list[Callable[[], None]] = []

    def add_flush_hook(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` at the end of every flush.

        The controller only produces output while it handles a datagram, a timer or a command, and each of
        those ends in a flush; so a hook here sees everything the controller queued for other outputs than
        UDP, at once and without polling. The TUN dataplane uses it to write ``gateway.lan_out``.
        """
        self._flush_hooks.append(hook)

    def now(self) -> float:
        return self.loop.time()

    async def open(self, addresses: list[str]) -> None:
        """Bind the IKE and NAT-T ports on each configured address (and nothing else)."""
        for address in addresses:
            family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
            for port in (self.gateway.ike_port, self.gateway.natt_port):
                local = (address, port)
                endpoint = _Endpoint(self, local)
                await self.loop.create_datagram_endpoint(lambda e=endpoint: e, local_addr=local, family=family)  # type: ignore[misc]
                self._endpoints[local] = endpoint
                if endpoint.transport is not None:
                    _enlarge_buffers(endpoint.transport.get_extra_info("socket"))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for endpoint in self._endpoints.values():
            if endpoint.transport is not None:
                endpoint.transport.close()
        self._endpoints.clear()

    def on_datagram(self, data: bytes, local: Addr, remote: Addr) -> None:
        try:
            self.gateway.receive_datagram(data, local, remote, self.now())
        except Exception:  # the controller must never take the daemon down; log and carry on
            log.exception("unexpected error handling a datagram from %s", remote)
        self.flush()

    def flush(self) -> None:
        """Send what the controller produced and re-arm the timer."""
        for data, local, remote in self.gateway.datagrams_to_send():
            endpoint = self._endpoints.get(local)
            if endpoint is None or endpoint.transport is None:
                log.debug("no socket for %s; dropping datagram to %s", local, remote)
                continue
            endpoint.transport.sendto(data, remote)
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

"""The asyncio binding of hot standby: the sync channel's UDP socket on the heartbeat interface, the
:class:`~ikegate.ha.sync.SyncNode`'s timer, and keepalived (configuration, process, notify FIFO).

Thin by design: every decision is in ``sync.py`` (sans-I/O) and ``keepalived.py`` (pure functions). The
gateway's own UDP runner calls :meth:`HaRuntime.flush` at the end of each of its flushes, so whatever the
gateway did (an exchange, a rekey, a reset) is streamed to the standby at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ipaddress
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING

from ikegate.gateway.device import HrpState, VrrpGroupState
from ikegate.ha import keepalived as ka
from ikegate.ha.channel import Channel
from ikegate.ha.sync import Role, SyncNode
from ikegate.policy.model import HRP_PORT, Config

if TYPE_CHECKING:  # pragma: no cover
    from ikegate.gateway.controller import Gateway

log = logging.getLogger("ikegate.ha")
_VRRP_STATE = {"MASTER": "Master", "BACKUP": "Backup", "FAULT": "Initialize", "STOP": "Initialize"}
RESTART_AFTER = 1.0
_PR_SET_PDEATHSIG = 1


class HaConfigError(ValueError):
    """The hrp configuration is incomplete (a sentence for the operator)."""


def heartbeat_address(config: Config) -> ipaddress.IPv4Address:
    hrp = config.hrp
    if hrp.interface is None or hrp.remote is None:
        raise HaConfigError("hrp enable needs 'hrp interface IFNAME remote ADDRESS'")
    if not hrp.key:
        raise HaConfigError("hrp enable needs 'hrp authentication-key KEY' (the sync channel is never in clear)")
    itf = config.interfaces.get(hrp.interface)
    if itf is None or not itf.ipv4:
        raise HaConfigError(f"the heartbeat interface {hrp.interface} has no IPv4 address")
    return itf.ipv4[0].ip


def _die_with_parent() -> None:
    """In the keepalived child: SIGTERM when ikegate dies, however it dies (kill -9 included). keepalived
    then gives up its addresses with a priority-0 advertisement and the other node takes over at once,
    instead of this node keeping the virtual address with nobody behind it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class _Link(asyncio.DatagramProtocol):
    def __init__(self, owner: HaRuntime) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | bytes | int, ...]) -> None:
        self.owner.on_datagram(data, str(addr[0]))


class Keepalived:
    """keepalived for one node: its configuration, its process (restarted when it dies) and its notify
    FIFO, whose MASTER/BACKUP word becomes a :class:`Role` handed to ``on_role``. One per node: a single
    process's :class:`HaRuntime` owns it, or the supervisor of placement workers, which fans the role out
    to every worker's sync node."""

    def __init__(self, config: Config, loop: asyncio.AbstractEventLoop, on_role: Callable[[Role], None],
                 log_line: Callable[[str], None]) -> None:
        self.config = config
        self.loop = loop
        self._on_role = on_role
        self._log_line = log_line
        self.vrrp: dict[str, ka.Notice] = {}
        self.instances: list[ka.Instance] = []
        self._workdir: str | None = None
        self._fifo_fd: int | None = None
        self._fifo_buf = b""
        self._proc: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self.restarts = 0

    async def open(self) -> None:
        try:
            self._start_files()
            await self._spawn()
        except BaseException:
            await self.close()
            raise
        self._supervisor = self.loop.create_task(self._supervise())

    def _start_files(self) -> None:
        path = ka.find_keepalived()
        self.instances = ka.instances(self.config, ka.linux_interfaces())
        if not self.instances:
            raise ka.KeepalivedError("hrp enable needs a 'vrrp vrid N virtual-ip ADDRESS' on an interface")
        self._keepalived = path
        self._workdir = tempfile.mkdtemp(prefix="ikegate-ha-")
        fifo = os.path.join(self._workdir, "notify.fifo")
        os.mkfifo(fifo, 0o600)
        # Read-write, so that the FIFO never reports end-of-file between keepalived's writes (or lives).
        self._fifo_fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        self.loop.add_reader(self._fifo_fd, self._on_fifo)
        with open(os.path.join(self._workdir, "keepalived.conf"), "w", encoding="utf-8") as fh:
            fh.write(ka.render(self.config, self.instances, fifo))

    async def _spawn(self) -> None:
        assert self._workdir is not None
        d = self._workdir
        logfile = open(os.path.join(d, "keepalived.log"), "ab")  # noqa: SIM115 (the child keeps it)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self._keepalived, "--dont-fork", "--vrrp", "--log-console", "--no-syslog", "--log-detail",
                "--use-file", os.path.join(d, "keepalived.conf"), "--pid", os.path.join(d, "keepalived.pid"),
                "--vrrp_pid", os.path.join(d, "vrrp.pid"), stdin=asyncio.subprocess.DEVNULL, stdout=logfile,
                stderr=logfile, preexec_fn=_die_with_parent)
        finally:
            logfile.close()
        self._log_line(f"keepalived started (pid {self._proc.pid}, {len(self.instances)} VRRP group(s))")

    async def _supervise(self) -> None:
        """keepalived must run while we do: restart it when it dies (VRRP falls back to BACKUP meanwhile)."""
        while not self._closing and self._proc is not None:
            code = await self._proc.wait()
            if self._closing:
                return
            self.restarts += 1
            self._log_line(f"keepalived exited with status {code}; restarting it")
            self._on_role(Role.STANDBY)
            await asyncio.sleep(RESTART_AFTER)
            if not self._closing:
                await self._spawn()

    async def close(self) -> None:
        self._closing = True
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5.0)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._fifo_fd is not None:
            self.loop.remove_reader(self._fifo_fd)
            os.close(self._fifo_fd)
            self._fifo_fd = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def _on_fifo(self) -> None:
        assert self._fifo_fd is not None
        try:
            chunk = os.read(self._fifo_fd, 4096)
        except BlockingIOError:
            return
        self._fifo_buf += chunk
        *lines, self._fifo_buf = self._fifo_buf.split(b"\n")
        for raw in lines:
            notice = ka.parse_notice(raw.decode("utf-8", "replace"))
            if notice is None or notice.kind != "INSTANCE" or notice.state not in ka.STATES:
                continue  # e.g. MASTER_RX_LOWER_PRI: a master told of a lower-priority one, still master
            self.vrrp[notice.name] = notice
            self._log_line(f"VRRP {notice.name} is {notice.state}")
        if self.instances and all(self.vrrp.get(i.name) is not None for i in self.instances):
            master = all(self.vrrp[i.name].state == "MASTER" for i in self.instances)
            self._on_role(Role.ACTIVE if master else Role.STANDBY)

    def groups(self) -> tuple[VrrpGroupState, ...]:
        """``display vrrp``'s groups as keepalived last told them."""
        hrp = self.config.hrp
        states = {name: _VRRP_STATE.get(n.state, "Initialize") for name, n in self.vrrp.items()}
        return tuple(VrrpGroupState(
            i.vrp_interface, i.vrid, states.get(i.name, "Initialize"), str(i.virtual_ip), i.priority,
            i.priority == ka.ACTIVE_PRIORITY, hrp.preempt, hrp.preempt_delay, ka.ADVERT_INT) for i in self.instances)


class HaRuntime:
    """One node's hot standby machinery around one gateway. With placement workers (issue 14) each worker
    has one, without keepalived (``run_keepalived=False``: the supervisor runs it and hands the role over
    by :meth:`set_role`), on the sync port ``HRP_PORT + index`` to the same-index worker of the other node;
    ``workers`` (both nodes must run as many) is checked in the hellos."""

    def __init__(self, gateway: Gateway, config: Config, loop: asyncio.AbstractEventLoop, *,
                 flush_gateway: Callable[[], None], emit: Callable[[str, int, str, str], None] | None = None,
                 run_keepalived: bool = True, index: int = 0, workers: int = 1) -> None:
        self.gateway = gateway
        self.config = config
        self.loop = loop
        self._flush_gateway = flush_gateway
        self._emit = emit
        local = heartbeat_address(config)
        assert config.hrp.key is not None and config.hrp.remote is not None
        self.local = str(local)
        self.remote = str(config.hrp.remote)
        self.port = HRP_PORT + index
        groups = [g for itf in config.interfaces.values() for g in itf.vrrp.values()]
        priority = ka.ACTIVE_PRIORITY if any(g.active for g in groups) else ka.STANDBY_PRIORITY
        self.node = SyncNode(gateway, Channel(config.hrp.key.encode()), priority=priority, node_id=int(local),
                             log=self._log_line, workers=workers)
        self.keepalived = Keepalived(config, loop, self._set_role, self._log_line) if run_keepalived else None
        self.changes: list[tuple[float, str]] = []
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        #: Called after each flush: a worker reports the SAs its standby gateway imported to the supervisor
        #: (what it lists if the worker dies), as its UDP runner's flushes do for the SAs it negotiates.
        self.after_flush: Callable[[], None] | None = None

    # ------------------------------------------------------------------ life cycle

    async def open(self) -> None:
        transport, _ = await self.loop.create_datagram_endpoint(lambda: _Link(self),
                                                                local_addr=(self.local, self.port))
        self._transport = transport
        if self.keepalived is not None:
            try:
                await self.keepalived.open()
            except BaseException:
                await self.close()
                raise
        self.flush()

    async def close(self) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self.keepalived is not None:
            await self.keepalived.close()

    # ------------------------------------------------------------------ events

    def _set_role(self, role: Role) -> None:
        if role is self.node.role:
            return
        before = self.node.role
        self.node.set_role(role, self.loop.time())
        self.changes.append((self.loop.time(), f"{before.value} -> {role.value}"))
        self._flush_gateway()  # a new active resumes its SAs: their timers and datagrams go now
        self.flush()

    def set_role(self, role: Role) -> None:
        """For a node run without keepalived (tests, or an operator's own VRRP): the role by hand."""
        self._set_role(role)

    def on_datagram(self, data: bytes, source: str) -> None:
        if source != self.remote:
            self.node.channel.stats.forged += 1  # only the configured peer may speak on the link
            return
        before = self.node.role
        self.node.receive(data, self.loop.time())
        if self.node.role is not before:
            self.changes.append((self.loop.time(), f"{before.value} -> {self.node.role.value}"))
        self.flush()

    def flush(self) -> None:
        """Send what the sync node has, and re-arm its timer (the gateway's runner calls this too)."""
        node = self.node
        node.flush(self.loop.time())
        if self._transport is not None:
            for data in node.datagrams_to_send():
                self._transport.sendto(data, (self.remote, self.port))
        when = node.get_timer()
        if self._timer is not None:
            self._timer.cancel()
        if when is not None and not self._closing:
            self._timer = self.loop.call_at(when, self._on_timer)
        if self.after_flush is not None:
            self.after_flush()

    def _on_timer(self) -> None:
        self._timer = None
        self.node.handle_timer(self.loop.time())
        self.flush()

    def state(self) -> HrpState:
        node, hrp, now = self.node, self.config.hrp, self.loop.time()
        alive = node.link_alive(now)
        peer = node.peer_role if alive and node.peer_role else "unknown"
        kept = self.keepalived
        counters = {**vars(node.stats), **{f"channel_{k}": v for k, v in vars(node.channel.stats).items()},
                    "keepalived_restarts": kept.restarts if kept is not None else 0,
                    "sas": sum(1 for sa in self.gateway.engines() if sa.established)}
        role = node.role.value if node.role is not Role.INIT else "initial"
        last = self.changes[-1] if self.changes else None
        return HrpState(role=role, peer_role=peer, priority=node.priority, peer_priority=node.peer_priority if alive
                        else 0, link_up=alive, stable_since=last[0] if last else None,
                        last_change=last[1] if last else "", auto_sync=hrp.auto_sync,
                        mirror_session=hrp.mirror_session, standby_config=hrp.standby_config, preempt=hrp.preempt,
                        preempt_delay=hrp.preempt_delay, counters=counters,
                        vrrp=kept.groups() if kept is not None else ())

    def _log_line(self, text: str) -> None:
        log.info("%s", text)
        if self._emit is not None:
            severity = 3 if "HRP error" in text else 4 if "split brain" in text or "exited" in text else 5
            self._emit("HRP", severity, "HRP_STATE", text)


__all__ = ["HaConfigError", "HaRuntime", "Keepalived", "heartbeat_address"]

"""One placement worker: a gateway controller, its engines, its part of the SA database and its dataplane,
in its own process, on the sockets the supervisor bound for it.

Started by the supervisor (:mod:`ikegate.workers.fanout`) as ``python -m ikegate worker`` with its index, the
steering key and inherited descriptors: its member of every ``SO_REUSEPORT`` group, a blocking *call*
channel and an *async* channel (:mod:`ikegate.workers.rpc`). The first call is ``init`` with the options
and the configuration; the worker then opens and answers the supervisor's Device operations, each one the
single-process :class:`~ikegate.gateway.local.LocalDevice` call on its own share of the SAs. Its log records
go to the supervisor, whose log buffer, stderr mirror and syslog are the device's.

The worker lives as long as its channels: a supervisor that stops asks it to delete its SAs first; one that
dies takes it along silently, as a killed single process sends nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from ikegate.cli.render import ike_sa
from ikegate.dataplane.packet import PacketError, echo_request, parse_ip
from ikegate.gateway.controller import Gateway
from ikegate.gateway.device import DeviceModel, HrpState, Selection
from ikegate.gateway.local import LocalDevice
from ikegate.gateway.translate import connections
from ikegate.ha.sync import Role
from ikegate.ike.core.config import Addr
from ikegate.io.bpf import Map
from ikegate.io.udp import UdpRunner
from ikegate.mgmt.pacing import WORK
from ikegate.policy.model import Config
from ikegate.sad import IkeSaEntry, Placement, SaEntry
from ikegate.workers.mesh import WAN, MeshEnds, parse_spec, parse_wan, wan_frame
from ikegate.workers.rpc import AsyncChannel, WorkerGone, read_frame, write_frame
from ikegate.workers.steering import Steering, WorkerSlot, esp_spi_owner, peer_owner
from ikegate.workers.tunsteer import KEY_SIZE, VALUE_SIZE, Prefix, Publisher, destination_owner, prefix_keys

__all__ = ["CLAIM_NONE", "CLAIM_POLICY", "CLAIM_SA", "SaKey", "WorkerOptions", "main", "sa_key"]

log = logging.getLogger("ikegate.workers")

#: How strongly a worker claims a protected-side packet (the supervisor routes it to the strongest claim):
#: it holds the SA protecting the flow, or it owns the policy that would negotiate one, or neither.
CLAIM_NONE, CLAIM_POLICY, CLAIM_SA = 0, 1, 2
#: A packet covered by a policy but by no SA of ours: someone else's to decide (see :class:`LanSide`).
CLAIM_POLICY_ELSEWHERE = -1
#: At most this many mesh packets per wake-up (then the loop serves the others), and the largest one read.
MESH_BURST, MESH_READ = 256, 65536
INIT_TIMEOUT = 60.0
#: Paged displays a worker keeps open at most (one per session displaying, and a margin).
MAX_CURSORS = 64
#: A worker counts as busy for the display pacer when other work took more than this share of its time.
BUSY_SHARE = 0.02

#: What ``display ike offline-info`` records of an IKE SA: (peer address, peer port, version, placement).
SaKey = tuple[str, int, int, Placement]


def sa_key(entry: IkeSaEntry) -> SaKey:
    return str(entry.peer_address), entry.peer_port, entry.version, entry.placement


@dataclass(frozen=True)
class WorkerOptions:
    """What a worker needs besides its index and sockets (the ``init`` call carries it)."""

    config: Config
    model: DeviceModel
    placement: Placement
    ike_port: int
    natt_port: int
    retransmit_tries: int
    raw_esp: bool
    keylog: str | None
    tun: dict[str, str]
    #: the queue of each TUN the supervisor attached for this worker (by TUN name: its descriptor and
    #: ``TunDevice.state``; :mod:`tunsteer`), and the steering trie it publishes its destinations in (None:
    #: the kernel refused eBPF steering)
    tun_queues: dict[str, tuple[int, dict[str, object]]] = dataclasses.field(default_factory=dict)
    steer_map_fd: int | None = None


class LanSide:
    """What a worker's TUN queue feeds: the gateway, behind a check that the packet is this worker's.

    The kernel puts the TUN's packets on the queue of the worker the steering trie names for their
    destination (:mod:`ikegate.workers.tunsteer`), or, without it, spreads them by flow hash. A packet we
    hold the SA for is ours. One covered by a site-to-site policy whose peer another worker owns, or whose
    destination the trie gives to another worker (a dial-up SA's), goes straight to that worker
    (:mod:`ikegate.workers.mesh`; counted as ``lan_missteered``). Any other (our own policy without an SA,
    which another worker's dial-up SA may yet cover, or no policy) is handed to the supervisor, which gives
    it to the worker with the strongest claim (counted there as ``handed_over``; nobody's goes to the first
    worker, which passes or drops it)."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker
        self._gateway = worker.gateway
        self.lan_out = worker.gateway.lan_out

    @property
    def config(self) -> Config:
        return self._gateway.config

    def from_lan(self, packet: bytes, now: float) -> None:
        # No SA of ours covers it: another worker's may (a template without ACL has no rule before its SA
        # exists, so "no policy here" proves nothing). The owner of a site-to-site policy, or the worker the
        # steering trie names (a dial-up SA's destinations), gets it straight; else the supervisor decides.
        worker = self._worker
        level, owner = worker.classify(packet)
        if level == CLAIM_SA:
            self._gateway.from_lan(packet, now)
            return
        if owner is None:
            owner = worker.trie_owner(packet)
            if owner == worker.slot.index:  # ours by the trie, yet no SA of ours: let the supervisor weigh it
                owner = None
        if owner is not None:
            self._gateway.stats.lan_missteered += 1
            if worker.send_direct(owner, packet):
                return
        worker.hand_over(packet)


class WorkerRunner(UdpRunner):
    """The UDP runner of a worker: counts every datagram whose SPI names another worker (the kernel's
    steering program and :meth:`Steering.expected_worker` are the same rule, so the count stays 0 unless
    steering is broken or an IKEv1 peer's cookie happens to look like ours, see docs/steering.md)."""

    def __init__(self, gateway: Gateway, loop: asyncio.AbstractEventLoop, slot: WorkerSlot) -> None:
        super().__init__(gateway, loop)
        self._slot = slot
        self._expected = slot.steering.expected_worker
        self.esp_filter = self._ours
        #: Where an opening message (IKE_SA_INIT request, Main/Aggressive Mode 1) from a site-to-site peer
        #: owned by another worker goes: (owner, datagram, local, remote). The kernel spreads openings by
        #: initiator SPI; the peer's SAs must all live with the worker owning its policies.
        self.hand_over: Callable[[int, bytes, Addr, Addr], None] | None = None
        self._peers_of: Config | None = None
        self._peers: frozenset[str] = frozenset()
        #: Run at the start of every flush, before its datagrams go (see :meth:`Worker._report`).
        self.before_flush: Callable[[], None] | None = None

    def flush(self) -> None:
        if self.before_flush is not None:
            self.before_flush()
        super().flush()

    def _ours(self, packet: bytes) -> bool:
        return len(packet) >= 4 and esp_spi_owner(int.from_bytes(packet[:4], "big")) == self._slot.index

    def feed(self, data: bytes, local: Addr, remote: Addr, now: float | None = None) -> None:
        natt = local[1] == self.gateway.natt_port
        owner = self._expected(data, natt)
        if owner != self._slot.index:
            # The kernel picked another socket than the program's rule says: a peer's UDP_SEGMENT run (a
            # GSO super-packet, kept whole over loopback and veth) is steered as one datagram, by its
            # first segment, whatever SPIs the others carry. Counted, and passed to the owner.
            self.gateway.stats.misrouted += 1
            if self.hand_over is not None:
                self.hand_over(owner, data, local, remote)
                return
        elif self.hand_over is not None and _opening(data, natt) and remote[0] in self._site_peers():
            owner = peer_owner(remote[0], self._slot.steering.workers)
            if owner != self._slot.index:
                self.hand_over(owner, data, local, remote)
                return
        super().feed(data, local, remote, now)

    def feed_handed(self, data: bytes, local: Addr, remote: Addr, flush: bool = True) -> None:
        """A datagram another worker received for us: an opening of one of our peers, or one the kernel
        steered wrong (see :meth:`feed`). ``flush`` False: the caller flushes once after a burst."""
        self.gateway.stats.handed_over += 1
        super().feed(data, local, remote)
        if flush:
            self.flush()

    def _site_peers(self) -> frozenset[str]:
        config = self.gateway.config
        if config is not self._peers_of:
            self._peers_of, self._peers = config, self.gateway.site_peers()
        return self._peers


def _opening(data: bytes, natt: bool) -> bool:
    """A first request of an IKE SA (responder SPI zero, sent by an initiator): IKEv2 IKE_SA_INIT and its
    COOKIE/INVALID_KE retries, IKEv1 Main/Aggressive Mode message 1."""
    at = 4 if natt else 0
    if len(data) < at + 28 or (natt and data[:4] != bytes(4)) or any(data[at + 8:at + 16]):
        return False
    return data[at + 17] & 0xF0 == 0x10 or bool(data[at + 19] & 0x08)


def _plain(entry: SaEntry) -> SaEntry:
    """A row fit to cross the channel: the engine behind it stays here."""
    return dataclasses.replace(entry, handle=None)


class PagedTables:
    """Paged ``display ike sa`` outputs: :meth:`open` selects the rows now, in display order, and keeps them
    under a cursor that :meth:`page` renders a page at a time as the supervisor takes them (so the worker
    serves its peers between pages, and a display the operator leaves early costs only what was shown).
    Each answer carries the CPU seconds it took and whether the worker had other work (:meth:`busy`): the
    supervisor's output pacer counts them (:meth:`ikegate.mgmt.pacing.Pacer.charge`)."""

    def __init__(self, select: Callable[[Selection], Sequence[SaEntry]],
                 busy: Callable[[], bool] | None = None) -> None:
        self._select = select
        self._busy = busy or self.busy
        self._cursors: dict[int, tuple[Sequence[SaEntry], int]] = {}  # cursor -> (rows, next index)
        self._next = 0
        self._mark = (time.monotonic(), time.thread_time())  # when the last answer went, and this CPU then

    def busy(self) -> bool:
        """Whether this process did other work since its last answer: more CPU than one loop pass with
        work costs (:data:`~ikegate.mgmt.pacing.WORK`) and over :data:`BUSY_SHARE` of the time (an idle
        worker's timers cost less; negotiation or traffic cost more)."""
        wall, cpu = self._mark
        other, elapsed = time.thread_time() - cpu, time.monotonic() - wall
        return other > WORK and other > BUSY_SHARE * elapsed

    def sent(self) -> None:
        """The answer has gone out: its pickling and sending were part of the call, not other work."""
        self._mark = (time.monotonic(), time.thread_time())

    def _start(self) -> tuple[float, bool]:
        """A call begins: the CPU clock now, and whether other work came since the last answer."""
        return time.thread_time(), self._busy()

    def _answer(self, start: tuple[float, bool]) -> tuple[float, bool]:
        """(CPU seconds this call took, busy), and the mark for the next :meth:`busy`."""
        now = time.thread_time()
        self._mark = (time.monotonic(), now)
        return now - start[0], start[1]

    def open(self, selection: Selection, size: int) -> tuple[int, list[int], list[str], float, bool]:
        """A cursor and its first page: (cursor, conn-ids, lines, CPU seconds, busy); fewer than ``size``
        rows when that was all (the cursor is then closed already)."""
        start = self._start()
        entries = self._select(selection)
        self._next += 1
        self._cursors[self._next] = (entries, 0)
        while len(self._cursors) > MAX_CURSORS:  # displays whose supervisor side went away unclosed
            del self._cursors[next(iter(self._cursors))]
        return self._next, *self._page(self._next, size), *self._answer(start)

    def page(self, cursor: int, size: int) -> tuple[list[int], list[str], float, bool]:
        """The next ``size`` rows of ``cursor`` (conn-ids and lines; fewer at the end, which closes it), CPU
        seconds, busy."""
        start = self._start()
        return *self._page(cursor, size), *self._answer(start)

    def _page(self, cursor: int, size: int) -> tuple[list[int], list[str]]:
        entries, at = self._cursors.pop(cursor, ((), 0))
        part = entries[at:at + size]
        if at + size < len(entries):
            self._cursors[cursor] = (entries, at + size)
        return ike_sa.rendered(part)

    def close(self, cursor: int) -> None:
        self._cursors.pop(cursor, None)


class Worker:
    """The worker's side of the channels (see the module docstring)."""

    def __init__(self, slot: WorkerSlot, options: WorkerOptions, sockets: dict[Addr, socket.socket],
                 call: socket.socket, events: socket.socket, mesh: MeshEnds | None = None) -> None:
        self.slot = slot
        self._mesh = mesh
        self.options = options
        self._call = call
        self._events_sock = events
        self._events: AsyncChannel | None = None
        #: log records not yet sent to the supervisor (see :meth:`_log`)
        self._logs: list[tuple[object, ...]] = []  # (module, severity, brief, text, *args)
        self._done = asyncio.Event()
        self._closing = False
        self._pending_config: Config | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        gateway = Gateway(options.config, ike_port=options.ike_port, natt_port=options.natt_port,
                          placements=(options.placement,), retransmit_tries=options.retransmit_tries,
                          log=self._log, worker=slot)
        self.gateway = gateway
        gateway.on_initial_contact = self._initial_contact
        self.device = LocalDevice(gateway, DeviceModel(options.model.model, (options.placement,)),
                                  raw_esp=options.raw_esp, keylog=options.keylog, log=self._log, sockets=sockets,
                                  make_runner=lambda gw, loop: WorkerRunner(gw, loop, slot), tun=options.tun,
                                  lan_side=cast(Gateway, LanSide(self)), ha_worker=(slot.index, slot.steering.workers),
                                  tun_queues=options.tun_queues)
        #: our entries in the TUN steering trie (None: not steered by eBPF)
        self._publisher: Publisher | None = None
        if options.steer_map_fd is not None:
            self._publisher = Publisher(Map(options.steer_map_fd, KEY_SIZE, VALUE_SIZE), slot.index)
        self._published: Config | None = None
        self._runner: WorkerRunner | None = None
        #: IKE SAs added, moved (conn-id -> what offline-info would record) or removed (-> None) since the
        #: last report to the supervisor (see :meth:`_report`).
        self._changes: dict[int, SaKey | None] = {}
        self.tables = PagedTables(self.device.select)
        self._load_gated = False
        gateway.sad.ike_observer = self._on_ike_change

    # -- life cycle -----------------------------------------------------------------------------------

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._events = AsyncChannel(self._events_sock, self._on_async, on_closed=self._supervisor_gone)
        await self.device.open()
        runner = self.device.runner
        assert isinstance(runner, WorkerRunner)
        runner.before_flush = self._report
        runner.add_flush_hook(self._report)
        if self.device.ha is not None:
            self.device.ha.after_flush = self._report
        runner.hand_over = self._hand_opening
        self._runner = runner
        if self._publisher is not None:
            self._publisher.purge()  # a predecessor's destinations: its SAs died with it
            spd = self.gateway.dataplane.spd
            spd.on_change = self._publisher.sa_change
            self._publisher.sa_change(list(spd.remote_selectors()), 1)  # none yet, unless a standby synced some
            self.gateway.stats.tun_steered = 1
            runner.add_flush_hook(self._publish)
            self._publish()
        if self._mesh is not None:
            loop.add_reader(self._mesh.inbox.fileno(), self._on_mesh)
        loop.add_reader(self._call.fileno(), self._on_call)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self._stop)
        write_frame(self._call, ("ok", self.device.local_addresses()))
        await self._done.wait()

    def _supervisor_gone(self) -> None:
        """A channel closed without the supervisor asking us to stop: it died (a supervisor that stops sends
        ``close`` first). Go as it went, without a word to the peers: a SIGKILLed gateway sends no Deletes.
        (``PR_SET_PDEATHSIG`` would kill us too, but the kernel closes the dead process's descriptors
        before it signals its children, and a Delete could slip out in between.)"""
        if not self._closing:
            os._exit(1)

    def _stop(self) -> None:
        """SIGTERM or SIGHUP to this worker: delete every SA as a shutdown does, then exit (the supervisor
        restarts it)."""
        if not self._closing:
            self._closing = True
            task = asyncio.get_running_loop().create_task(self._close(1.0, None))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _close(self, grace: float, ident: int | None) -> None:
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self._call.fileno())
            if self._mesh is not None:
                asyncio.get_running_loop().remove_reader(self._mesh.inbox.fileno())
        await self.device.close(grace)
        if self._events is not None:
            if ident is not None:
                self._post(("ok", None), ident)
            self._send_logs()
            await self._events.drain()
        self._done.set()

    def _log(self, module: str, severity: int, brief: str, text: str, /, *args: object) -> None:
        """Log records go to the supervisor in one message per pass of the event loop: a send per record
        (three per tunnel set up) woke the supervisor each time, and on a machine whose cores are all busy
        each wake-up preempted this worker -- about a third of what a worker added per SA over one process.
        They go in parts (text template and arguments): the text is made there, and only if a sink reads it
        (the arguments are plain values and addresses, which pickle small)."""
        if self._events is None:
            return
        if not self._logs:
            try:
                asyncio.get_running_loop().call_soon(self._send_logs)
            except RuntimeError:  # no loop running (closing): at once
                self._events.post(("logs", [(module, severity, brief, text, *args)]))
                return
        self._logs.append((module, severity, brief, text, *args))

    def _send_logs(self) -> None:
        if self._logs and self._events is not None:
            logs, self._logs = self._logs, []
            self._events.post(("logs", logs))

    def _post(self, body: object, ident: int = 0) -> None:
        """Any other event or answer for the supervisor, after the log records that came before it."""
        if self._events is not None:
            self._send_logs()
            self._events.post(body, ident)

    def _publish(self) -> None:
        """After every flush (work only when the configuration changed): our site-to-site destinations in the
        TUN steering trie, the remote networks of the policies whose peer we own (their SAs will be ours, so
        even the first packet reaches the worker that negotiates). Our SAs' selectors are published as they
        are installed and removed (``Spd.on_change``)."""
        publisher, config = self._publisher, self.gateway.config
        if publisher is None:
            return
        if config is not self._published:
            self._published = config
            wanted: list[Prefix] = []
            for conn in connections(config):
                if self.slot.owns(str(conn.remote)):
                    for flow in conn.flows:
                        wanted += prefix_keys(flow.remote.family, flow.remote.start, flow.remote.end)
            publisher.set_site(wanted)
        if publisher.failed is not None:  # the map is full, or gone: stop steering by it
            self._log("WORKER", 4, "TUN_STEERING_OFF", f"Worker {self.slot.index} stops publishing TUN "
                      f"steering: {publisher.failed}")
            self._publisher = None
            self.gateway.dataplane.spd.on_change = None
            self.gateway.stats.tun_steered = 0

    def trie_owner(self, packet: bytes) -> int | None:
        """The worker the TUN steering trie names for ``packet``'s destination (None: no trie, no entry)."""
        publisher = self._publisher
        if publisher is None:
            return None
        try:
            owner = destination_owner(publisher.map, packet)
        except OSError:
            return None
        return owner if owner is not None and 0 <= owner < self.slot.steering.workers else None

    def _on_ike_change(self, entry: IkeSaEntry, present: bool) -> None:
        self._changes[entry.conn_id] = sa_key(entry) if present else None

    def _report(self) -> None:
        """Tell the supervisor which IKE SAs came and went since the last report: if this process dies,
        those it holds are the tunnels ``display ike offline-info`` records (a dead process cannot say what
        it had). Run before every flush sends its datagrams (and after it, for what the flush's hooks
        changed), so the supervisor's socket holds an SA's record before the peer can hear of the SA: the
        message is in the kernel's buffer, which outlives this process."""
        if self._changes and self._events is not None:
            changes, self._changes = self._changes, {}
            self._post(("sas", list(changes.items())))
            self._events.send_now()  # posts wait for the end of the pass; this one must not
        if self._load_gated and not self.gateway.load_gated:
            self._load_gated = False
            if self._events is not None:
                self._post(("load_open",))

    # -- the call channel -------------------------------------------------------------------------------

    def _on_call(self) -> None:
        try:
            op, args = read_frame(self._call, time.monotonic() + INIT_TIMEOUT)
        except WorkerGone:
            self._supervisor_gone()
            return
        try:
            answer: tuple[str, Any] = ("ok", getattr(self, f"op_{op}")(*args))
        except Exception as exc:  # an operation's failure is the caller's answer, never the worker's end
            log.debug("worker call %s failed", op, exc_info=True)
            answer = ("error", f"{type(exc).__name__}: {exc}")
        self._send_logs()  # what the operation logged reaches the supervisor before its answer does
        try:
            write_frame(self._call, answer)
        except WorkerGone:
            self._supervisor_gone()
        if op.startswith("ike_sa_"):
            self.tables.sent()

    def op_select(self, selection: Selection, counters: bool) -> list[SaEntry]:
        return [_plain(e) for e in self.device.select(selection, counters=counters)]

    def op_ike_sa_open(self, selection: Selection, size: int) -> tuple[int, list[int], list[str], float, bool]:
        return self.tables.open(selection, size)

    def op_ike_sa_page(self, cursor: int, size: int) -> tuple[list[int], list[str], float, bool]:
        return self.tables.page(cursor, size)

    def op_ike_sa_close(self, cursor: int) -> None:
        self.tables.close(cursor)


    def op_children(self, conn_id: int) -> list[SaEntry]:
        return [_plain(e) for e in self.device.children(conn_id)]

    def op_reset_ike(self, selection: Selection) -> int:
        return self.device.reset_ike_sa(selection)

    def op_reset_ipsec(self, selection: Selection) -> int:
        return self.device.reset_ipsec_sa(selection)

    def op_statistics(self) -> Any:
        return self.device.statistics()

    def op_offline(self, peer: str | None, placement: Placement | None) -> Any:
        return self.device.offline(peer, placement)

    def op_claim(self, packets: Sequence[bytes]) -> list[int]:
        return [self._claim(p) for p in packets]

    def _claim(self, packet: bytes) -> int:
        level = self.claim(packet)
        return CLAIM_NONE if level == CLAIM_POLICY_ELSEWHERE else level

    def claim(self, packet: bytes) -> int:
        """CLAIM_SA (our SA protects it), CLAIM_POLICY (no SA of ours, our policy would negotiate it),
        CLAIM_POLICY_ELSEWHERE (a policy covers it, neither its SA nor the policy is ours), CLAIM_NONE (no
        policy covers it: in clear, the same on every worker)."""
        return self.classify(packet)[0]

    def classify(self, packet: bytes) -> tuple[int, int | None]:
        """:meth:`claim`'s level, and for CLAIM_POLICY_ELSEWHERE of a site-to-site policy the worker owning
        its peer (which holds the flow's SA if there is one, and would negotiate it), else None."""
        try:
            info = parse_ip(packet)
        except PacketError:
            return CLAIM_NONE, None
        covered, match = self.gateway.dataplane.spd.covering(info)
        if covered:
            return CLAIM_SA, None
        if match is None:
            return CLAIM_NONE, None
        peer = self.gateway.policy_peer(match.policy)
        if peer is None:
            return CLAIM_POLICY_ELSEWHERE, None
        owner = peer_owner(peer, self.slot.steering.workers)
        return (CLAIM_POLICY, None) if owner == self.slot.index else (CLAIM_POLICY_ELSEWHERE, owner)

    def send_direct(self, owner: int, packet: bytes) -> bool:
        """``packet`` to worker ``owner``'s mesh inbox; False if there is no direct path (then the
        supervisor routes it). A full inbox drops it (counted): never block on a slow or restarting peer."""
        if self._mesh is None:
            return False
        sent = self._mesh.send(owner, packet)
        if sent is None:
            return False
        if not sent:
            self.gateway.stats.handoff_dropped += 1
        return True

    def _on_mesh(self) -> None:
        """Packets other workers' TUN queues read for flows of ours: protected here as if our queue had
        read them (a packet that turns out not to be ours after all goes to the supervisor: never back and
        forth between workers)."""
        assert self._mesh is not None
        recv, stats, now = self._mesh.inbox.recv, self.gateway.stats, self.device.now()
        got = 0
        for _ in range(MESH_BURST):
            try:
                packet = recv(MESH_READ)
            except (BlockingIOError, InterruptedError):
                break
            got += 1
            if packet[:1] == WAN:
                self._handed_datagram(packet)
            elif self.claim(packet) in (CLAIM_SA, CLAIM_POLICY):
                stats.handed_over += 1
                stats.handed_direct += 1
                try:
                    self.gateway.from_lan(packet, now)
                except Exception:  # a bad packet must not take the worker down
                    log.exception("unexpected error handling a %d-byte handed-over packet", len(packet))
            else:
                self.hand_over(packet)
        if got and self._runner is not None:
            self._runner.flush()

    def _handed_datagram(self, frame: bytes) -> None:
        parsed = parse_wan(frame)
        if parsed is None or self._runner is None:
            return
        try:
            self._runner.feed_handed(*parsed, flush=False)  # _on_mesh flushes after the burst
        except Exception:  # a bad datagram must not take the worker down
            log.exception("unexpected error handling a %d-byte handed-over datagram", len(frame))

    def hand_over(self, packet: bytes) -> None:
        if self._events is not None:
            self._post(("handoff", [packet]))

    def op_claim_ping(self, source: str, destination: str) -> int:
        return self._claim(echo_request(source, destination, 0, 0, b""))

    def op_inject(self, packets: Sequence[bytes], handed: int) -> int:
        self.gateway.stats.handed_over += handed
        return self.device.inject(packets)

    def op_lan(self) -> list[bytes]:
        return self.device.take_lan_output()

    def op_load(self, count: int, concurrency: int, initial_contact: bool = False) -> bool:
        """Start negotiating ``count`` SAs (the ``load`` benchmark op); True if the first carries
        INITIAL_CONTACT and the rest wait for it: then ``load_open`` tells the supervisor when it is through,
        and the other workers' shares may start (the peer would drop any SA of ours made before it)."""
        if count:
            self.gateway.load(self.device.now(), count, concurrency, initial_contact)
            if self._runner is not None:
                self._runner.flush()
        self._load_gated = self.gateway.load_gated
        return self._load_gated

    def op_prepare(self, config: Config) -> bool:
        """Phase one of a configuration change: check that this worker can take it, keep it aside."""
        Gateway(config, ike_port=self.options.ike_port, natt_port=self.options.natt_port,
                placements=(self.options.placement,), worker=self.slot)  # raises on what it cannot take
        self._pending_config = config
        return True

    def op_commit(self) -> bool:
        config, self._pending_config = self._pending_config, None
        if config is None:
            return False
        self.device.apply_config(config)
        return True

    def op_abort(self) -> None:
        self._pending_config = None

    def op_start(self) -> None:
        """Bring up auto policies that have no SA (the configuration did not change)."""
        self.device.apply_config(self.device.config)

    def op_config_digest(self) -> str:
        from ikegate.workers.fanout import config_digest

        return config_digest(self.device.config)

    def op_lan_addresses(self) -> list[str]:
        return self.device.lan_addresses()

    def op_mesh_sent(self) -> int:
        """Packets this worker sent to others' mesh inboxes (tests: the direct path was taken)."""
        return 0 if self._mesh is None else self._mesh.sent

    def op_misrouted(self) -> int:
        return self.gateway.stats.misrouted

    def op_hrp_state(self) -> HrpState | None:
        return self.device.hrp_state()

    def op_hrp_mirror(self, text: str) -> None:
        """The active: send the backed-up configuration to the other node's worker of this index. The
        standby: what arrives goes to the supervisor, which applies it to every worker."""
        self.device.hrp_mirror(text, self._mirrored)

    def _mirrored(self, text: str) -> None:
        if self._events is not None:
            self._post(("hrp_config", text))

    # -- the async channel ------------------------------------------------------------------------------

    def _hand_opening(self, owner: int, data: bytes, local: Addr, remote: Addr) -> None:
        """A WAN datagram for worker ``owner``: over the mesh, else through the supervisor."""
        sent = None if self._mesh is None else self._mesh.send(owner, wan_frame(data, local, remote))
        if sent is not None:
            if not sent:  # a full inbox drops it, as the network might: the peer retransmits
                self.gateway.stats.handoff_dropped += 1
            return
        if self._events is not None:
            self._post(("datagram", owner, data, local, remote))

    def _initial_contact(self, address: str, id_type: str, id_text: str) -> None:
        if self._events is not None:
            self._post(("initial_contact", address, id_type, id_text, asyncio.get_running_loop().time()))

    def _on_async(self, ident: int, body: Any) -> None:
        op, args = body
        loop = asyncio.get_running_loop()
        if op == "peers":  # peer addresses with IKE SAs on other workers
            self.gateway.peers_elsewhere = frozenset(args)
            return
        if op == "drop_identity":  # INITIAL_CONTACT heard by another worker
            self.gateway.drop_identity(loop.time(), *args)
            runner = self.device.runner
            if runner is not None:
                runner.flush()
            return
        if op == "hrp_role":  # keepalived's word, from the supervisor
            if self.device.ha is not None:
                self.device.ha.set_role(Role(args[0]))
            return
        if op == "datagram":  # an opening another worker received for a peer of ours
            if self._runner is not None:
                data, local, remote = args
                self._runner.feed_handed(data, tuple(local), tuple(remote))
            return
        if op == "ping":
            task = loop.create_task(self._ping(ident, *args))
        elif op == "close":
            self._closing = True
            task = loop.create_task(self._close(float(args[0]), ident))
        else:
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ping(self, ident: int, source: str, destination: str, count: int, size: int) -> None:
        assert self._events is not None
        try:
            result: tuple[str, Any] = ("ok", await self.device.ping(source, destination, count, size))
        except Exception as exc:
            result = ("error", str(exc))
        self._post(result, ident)


PR_SET_PDEATHSIG = 1


def _die_with_supervisor() -> None:
    """A supervisor killed outright (SIGKILL, a crash) takes its workers with it, as a single process
    would go: no Deletes, nothing left holding the ports. (A supervisor that shuts down asks them to
    delete their SAs first; one that only closes the channels gets the same.)"""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the request took effect
        os._exit(1)


def _fd_socket(fd: int) -> socket.socket:
    return socket.socket(fileno=fd)


def main(argv: Sequence[str]) -> int:
    """``ikegate worker INDEX WORKERS KEY CALL_FD EVENTS_FD MESH ADDR,PORT,FD ...`` (the supervisor's command
    line; MESH is :meth:`ikegate.workers.mesh.Mesh.spec`, or ``-`` for none)."""
    index, workers, key, call_fd, events_fd = (int(x) for x in argv[:5])
    mesh = None if argv[5] == "-" else parse_spec(argv[5])
    _die_with_supervisor()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C at the console is the supervisor's to handle
    call, events = _fd_socket(call_fd), _fd_socket(events_fd)
    sockets: dict[Addr, socket.socket] = {}
    for item in argv[6:]:
        address, port, fd = item.rsplit(",", 2)
        sockets[(address, int(port))] = _fd_socket(int(fd))
    call.setblocking(True)
    try:
        op, (options,) = read_frame(call, time.monotonic() + INIT_TIMEOUT)
    except WorkerGone:
        return 1
    assert op == "init" and isinstance(options, WorkerOptions)
    slot = WorkerSlot(Steering(workers, key), index)
    try:
        worker = Worker(slot, options, sockets, call, events, mesh)
    except Exception as exc:
        write_frame(call, ("error", f"{type(exc).__name__}: {exc}"))
        return 1
    asyncio.run(worker.run())
    return 0


def command(index: int, steering: Steering, call_fd: int, events_fd: int,
            sockets: dict[Addr, int], mesh: str = "-") -> list[str]:
    """The command line :func:`main` takes."""
    return [sys.executable, "-m", "ikegate", "worker", str(index), str(steering.workers), str(steering.key),
            str(call_fd), str(events_fd), mesh, *(f"{a},{p},{fd}" for (a, p), fd in sockets.items())]


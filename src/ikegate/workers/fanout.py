"""The supervisor's :class:`~ikegate.gateway.device.Device`: placement workers behind one device.

``ikegate run --workers N`` (N > 1, or a multi-SPU model's placements) gives the management plane this
device instead of the single-process one. It binds the UDP groups (:mod:`ikegate.workers.sockets`), starts
one worker process per placement (:mod:`ikegate.workers.worker`) and answers every Device call by asking the
workers concerned and combining their answers with the seam's merge helpers, so the CLI prints exactly
what one process holding the same SAs would print:

* ``display ike sa``: every worker, rows merged in conn-id order (:func:`merge_rows`);
  ``… conn-id N`` and ``reset ike sa conn-id N``: only the owner, computed from N (worker i hands out
  conn-ids ``i+1, i+1+N, …``); ``… slot S cpu C``: only the worker of that placement; everything else
  goes to every worker at once (:func:`ikegate.workers.rpc.gather`: the cost of the slowest, not the sum).
* Configuration: every change is first *prepared* on every worker (each checks it can take it), then
  *committed* on every worker, or *aborted* on every worker if any refused: all or none, before the
  command's prompt returns.
* Site-to-site peers: every SA with one peer address lives on one worker
  (:func:`ikegate.workers.steering.peer_owner`), which initiates its auto policies; a peer's opening message
  that the kernel spread to another worker is passed on to the owner over the workers' mesh (through here
  only without one). Dial-up (template) SAs stay where the kernel spread them.
* Protected-side packets (the packet API, ``ping``, a TUN queue's packets that are not its worker's): to
  the worker holding the SA of the flow, else to the worker owning the policy's peer. The TUN's queues are
  attached here in worker order and steered by eBPF to the worker owning each destination
  (:mod:`ikegate.workers.tunsteer`); a TUN queue's packet that still reaches another worker, of a
  site-to-site flow or a dial-up SA's, goes from worker to worker directly (:mod:`ikegate.workers.mesh`), not
  through here; the supervisor only makes the mesh and the queues and keeps them across restarts.
* Hot standby (``hrp enable``): the supervisor runs keepalived and posts the role to every worker; each
  worker's sync node pairs with the same-index worker of the other node (docs/ha.md, "Workers").
* A worker that dies is restarted on the same sockets (the kernel's group keeps its index); the IKE SAs it
  last reported go to ``display ike offline-info`` with the reason ``worker restart``; the others' SAs are
  untouched. Shutdown deletes every SA on every worker, in parallel.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import heapq
import os
import pickle
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ikegate.cli.render import ike_sa
from ikegate.cli.render.chunks import CHUNK_ROWS
from ikegate.gateway.device import (
    ALL,
    HRP_STANDBY_ERROR,
    DeviceError,
    DeviceModel,
    HrpState,
    LogSink,
    PingResult,
    Selection,
    Statistics,
    WorkerInfo,
    merge_hrp,
    merge_offline,
    merge_rows,
    no_log,
)
from ikegate.ha.keepalived import KeepalivedError
from ikegate.ha.runtime import HaConfigError, Keepalived, heartbeat_address
from ikegate.ha.sync import Role
from ikegate.mgmt import pacing
from ikegate.policy.model import Config
from ikegate.sad import (
    DEFAULT_PLACEMENT,
    OFFLINE_LOG_CAPACITY,
    IpsecSaEntry,
    OfflineLog,
    OfflineRecord,
    Placement,
    SaEntry,
)
from ikegate.workers.mesh import Mesh
from ikegate.workers.rpc import AsyncChannel, Channel, WorkerGone, gather
from ikegate.workers.sockets import Groups, close_groups, open_groups
from ikegate.workers.steering import Steering, esp_spi_owner
from ikegate.workers.tunsteer import TunQueues
from ikegate.workers.worker import CLAIM_NONE, SaKey, WorkerOptions, command

__all__ = ["RESTART_REASON", "FanoutDevice", "config_digest", "worker_count"]

#: The offline-info reason of the tunnels a dead worker held.
RESTART_REASON = "worker restart"
INIT_TIMEOUT = 60.0
#: ``display ike sa``: a worker's pages after its first (see ``_paged_rows``); rendering one takes a worker
#: some 30 ms, a few IKE exchanges' worth.
PAGE_ROWS = 16384
PING_TIMEOUT = 2.0  # per echo request, as the single process
#: A worker that dies sooner than this after its start is restarted after a growing pause (1, 2, 4 … 30 s)
#: rather than at once, so a worker that cannot start does not spin.
STABLE_AFTER = 10.0


def _charge(cpu: float, busy: bool) -> None:
    """A worker's CPU for management output, to the pacer of the loop printing it (none outside a loop)."""
    with contextlib.suppress(RuntimeError):
        pacing.pacer().charge(cpu, busy)


def config_digest(config: Config) -> str:
    """What a worker's running configuration is, to compare across processes (tests, diagnostics)."""
    return hashlib.sha256(pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL)).hexdigest()[:16]


def _pair_steering(config: Config, workers: int) -> Steering | None:
    """A hot-standby node's steering: its IKEv1 cookie tag key is derived from the pair's ``hrp
    authentication-key``, so that after a failover the other node's kernel steers an SA's datagrams to the
    worker of the same index (the one its sync node gave the SA to), as this node's did."""
    if not config.hrp.enabled or not config.hrp.key:
        return None
    digest = hashlib.sha256(b"ikegate steering key\0" + config.hrp.key.encode()).digest()
    return Steering(workers, int.from_bytes(digest[:2], "big") or 1)


def worker_count(model: DeviceModel, workers: int) -> int:
    """How many worker processes serve ``model`` when ``workers`` were asked for: a multi-SPU model's
    placements are its workers (``--workers 1`` keeps them as labels in one process); elsewhere ``workers``."""
    if model.has_slots and workers != 1:
        return len(model.placements)
    return workers


@dataclass(eq=False)
class _Member:
    index: int
    placement: Placement
    channel: Channel | None = None
    events: AsyncChannel | None = None
    proc: asyncio.subprocess.Process | None = None
    up: bool = False
    started: float = 0.0
    restarts: int = 0
    #: the IKE SAs it holds, as it reported them (conn-id -> what offline-info records if it dies)
    held: dict[int, SaKey] = field(default_factory=dict)
    #: how many of them each peer address has (its INITIAL_CONTACT rule, :meth:`FanoutDevice._share_peers`)
    peers: Counter[str] = field(default_factory=Counter)
    #: the peers-elsewhere set it was last told
    told: set[str] = field(default_factory=set)


class FanoutDevice:
    """The device as a supervisor of placement workers (see the module docstring)."""

    def __init__(self, config: Config, model: DeviceModel, *, workers: int, ike_port: int = 500,
                 natt_port: int = 4500, retransmit_tries: int = 5, log: LogSink | None = None,
                 raw_esp: bool = True, keylog: str | None = None, tun: dict[str, str] | None = None,
                 tun_steering: bool = True) -> None:
        n = worker_count(model, workers)
        if model.has_slots and n != len(model.placements):
            raise ValueError(f"{model.model} has {len(model.placements)} placements: --workers must be 1 or "
                             f"{len(model.placements)}")
        self._config = config
        self._model = model
        self._ports = (ike_port, natt_port)
        self._retransmit_tries = retransmit_tries
        self._log: LogSink = log or no_log
        self._raw_esp = raw_esp
        self._keylog = keylog
        self._tun = dict(tun or {})
        self._tun_steering = tun_steering
        placements = model.placements if model.has_slots else (DEFAULT_PLACEMENT,) * n
        self.steering = _pair_steering(config, n) or Steering.generate(n, os.urandom)
        self.members = [_Member(i, p) for i, p in enumerate(placements)]
        self._groups: Groups = {}
        #: the workers' direct path for protected-side packets (made at open, kept across restarts)
        self._mesh = Mesh(0)
        #: each TUN's queues in worker order, and their eBPF steering (made at open, kept across restarts)
        self._queues: TunQueues | None = None
        self._offline = OfflineLog()
        #: one tuple per distinct offline key the workers reported (100,000 SAs of one peer: one tuple)
        self._keys: dict[SaKey, SaKey] = {}
        self._resets = 0
        #: when a worker last reported an SA made or gone (it is negotiating: display output is paced)
        self._negotiated_at = float("-inf")
        #: shares of a ``load`` waiting for the first worker's INITIAL_CONTACT SA (see :meth:`load`)
        self._load_waiting: list[tuple[_Member, int, int]] = []
        #: The configuration every worker runs: pickled (what a restarted worker gets, never the in-place
        #: edits of a change the workers refused), and which object at which generation it was.
        self._committed = pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL)
        self._applied: tuple[Config, int] = (config, config.generation)
        self._opened = False
        self._closing = False
        self._watchers: list[asyncio.Task[None]] = []
        #: Hot standby: the supervisor runs keepalived and fans its role out to the workers' sync nodes.
        self._keepalived: Keepalived | None = None
        self._role: Role | None = None
        self._mirror_apply: Callable[[str], None] | None = None

    # -- what the device is -------------------------------------------------------------------------------

    @property
    def model(self) -> DeviceModel:
        return self._model

    @property
    def config(self) -> Config:
        return self._config

    def now(self) -> float:
        return time.monotonic()  # the event loops' clock, the same in every process of the host

    def local_addresses(self) -> list[str]:
        return [str(a) for a in self._config.local_addresses()]

    def lan_addresses(self) -> list[str]:
        up = [m for m in self.members if m.up][:1]
        answers = self._gather(up, "lan_addresses") if up else []
        return list(answers[0] or []) if answers else []

    # -- routing ------------------------------------------------------------------------------------------

    def owner_of(self, conn_id: int) -> _Member:
        """Worker i hands out conn-ids i+1, i+1+N, … (:class:`ikegate.sad.ConnIdAllocator`)."""
        return self.members[(conn_id - 1) % len(self.members)]

    def _targets(self, selection: Selection) -> list[_Member]:
        if selection.conn_id is not None:
            chosen = [self.owner_of(selection.conn_id)]
        elif selection.placement is not None:
            chosen = [m for m in self.members if m.placement == selection.placement]
        else:
            chosen = self.members
        return [m for m in chosen if m.up]

    def _gather(self, members: Sequence[_Member], op: str, *args: Any,
                each: Sequence[tuple[Any, ...]] | None = None) -> list[Any]:
        channels = [m.channel for m in members]
        assert all(c is not None for c in channels)
        return gather([c for c in channels if c is not None], op, *args,
                      on_gone=lambda i, exc: self._gone(members[i], exc), each=each)

    def _gone(self, member: _Member, exc: WorkerGone) -> None:
        """A worker stopped answering: take it out of service and make sure it ends (its watcher then
        records its SAs and starts a new one)."""
        if not member.up:
            return
        member.up = False
        self._log("WORKER", 3, "WORKER_LOST", f"Worker {member.index} stopped answering ({exc}); restarting it")
        if member.proc is not None and member.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                member.proc.kill()

    # -- SAs ----------------------------------------------------------------------------------------------

    def select(self, selection: Selection = ALL, *, counters: bool = False) -> list[SaEntry]:
        return merge_rows(part for part in self._gather(self._targets(selection), "select", selection, counters)
                          if part is not None)

    def ike_sa_table(self, selection: Selection = ALL) -> Iterator[list[str]]:
        """Each worker renders its rows a page at a time as the output is taken (:meth:`Worker.op_ike_sa_page
        <ikegate.workers.worker.Worker.op_ike_sa_page>`); here the pages are merged by conn-id and framed,
        a chunk at a time as the single process prints them. The workers' CPU for it, and whether they had
        other work, go to the output's pacer (:meth:`ikegate.mgmt.pacing.Pacer.charge`), and so does every
        chunk while a worker reports SAs coming and going (it is negotiating; on a machine whose cores the
        workers need, the supervisor's own output work is their loss): 20 sessions displaying 100,000 rows
        take no more than the pacer's share."""
        for chunk in ike_sa.streamed_chunks(self._paged_rows(self._targets(selection), selection)):
            if time.monotonic() - self._negotiated_at < pacing.HORIZON:
                _charge(0.0, True)  # a worker is negotiating: this output takes only the pacer's share
            yield chunk

    def _paged_rows(self, targets: list[_Member], selection: Selection) -> Iterator[tuple[int, str]]:
        """Every worker opens its cursor and sends its first page (CHUNK_ROWS rows: a screen), in parallel;
        when the merge has used up a worker's page, every worker with rows left sends its next
        :data:`PAGE_ROWS`, in parallel again. So a display left after its first screen costs a page per
        worker; a whole one few calls (each call waits for the workers to be scheduled: on a loaded machine
        that wait, not the rendering, is what a call costs), none of which holds a worker from its peers
        for long."""
        opened = self._gather(targets, "ike_sa_open", selection, CHUNK_ROWS)
        first: dict[int, tuple[int, list[int], list[str]]] = {}
        for member, answer in zip(targets, opened, strict=True):
            if answer is not None:
                cursor, ids, lines, cpu, busy = answer
                _charge(cpu, busy)
                if ids:
                    first[member.index] = (cursor, ids, lines)
        left = {i: cursor for i, (cursor, ids, _) in first.items() if len(ids) == CHUNK_ROWS}
        queued: dict[int, list[tuple[list[int], list[str]]]] = {i: [] for i in first}

        def fetch_more() -> None:
            members = [self.members[i] for i in left if self.members[i].up]
            answers = self._gather(members, "ike_sa_page", each=[(left[m.index], PAGE_ROWS) for m in members])
            for index in [i for i in left if not self.members[i].up]:
                del left[index]
            for member, answer in zip(members, answers, strict=True):
                if answer is None or len(answer[0]) < PAGE_ROWS:
                    left.pop(member.index, None)  # that was its last page (the cursor is closed there)
                if answer is not None:
                    ids, lines, cpu, busy = answer
                    _charge(cpu, busy)
                    queued[member.index].append((ids, lines))

        def stream(index: int, ids: list[int], lines: list[str]) -> Iterator[tuple[int, str]]:
            while True:
                yield from zip(ids, lines, strict=True)
                if not queued[index] and index in left:
                    fetch_more()
                if not queued[index]:
                    return
                ids, lines = queued[index].pop(0)

        try:
            yield from heapq.merge(*(stream(i, ids, lines) for i, (_, ids, lines) in first.items()), reverse=True)
        finally:
            for i in [i for i in left if self.members[i].up]:  # left before the rest was asked for
                with contextlib.suppress(RuntimeError):
                    self._gather([self.members[i]], "ike_sa_close", left[i])

    def children(self, conn_id: int) -> list[IpsecSaEntry]:
        owner = self.owner_of(conn_id)
        if not owner.up:
            return []
        (rows,) = self._gather([owner], "children", conn_id)
        return list(rows or [])

    def reset_ike_sa(self, selection: Selection = ALL) -> int:
        self._refuse_on_standby()
        deleted = sum(n or 0 for n in self._gather(self._targets(selection), "reset_ike", selection))
        self._resets += 1
        return deleted

    def reset_ipsec_sa(self, selection: Selection = ALL) -> int:
        self._refuse_on_standby()
        targets = [m for m in self.members if m.up]
        if selection.spi is not None and selection.remote is None:
            targets = [m for m in targets if m.index == esp_spi_owner(selection.spi)] or targets
        return sum(n or 0 for n in self._gather(targets, "reset_ipsec", selection))

    def statistics(self) -> Statistics:
        parts = [s for s in self._gather([m for m in self.members if m.up], "statistics") if s is not None]
        total = Statistics.total(parts)
        # ``resets`` counts commands (each ran on several workers); ``workers`` the device's, up or not.
        return dataclasses.replace(total, resets=self._resets, workers=len(self.members))

    def offline(self, peer: str | None = None, placement: Placement | None = None) -> list[OfflineRecord]:
        parts = self._gather([m for m in self.members if m.up], "offline", peer, placement)
        ours = self._offline.entries(peer=peer, placement=placement)
        return merge_offline([*(p for p in parts if p is not None), ours], OFFLINE_LOG_CAPACITY)

    # -- the protected side ----------------------------------------------------------------------------------

    def _claims(self, packets: Sequence[bytes]) -> list[_Member]:
        """For each packet, the worker it belongs to: the strongest claim wins (lowest index on a tie);
        nobody's (no policy covers it) goes to the first worker, which answers or drops it."""
        up = [m for m in self.members if m.up]
        if not up:
            raise DeviceError("no worker is running")
        answers = self._gather(up, "claim", list(packets))
        out: list[_Member] = []
        for i in range(len(packets)):
            best, level = up[0], CLAIM_NONE
            for member, claims in zip(up, answers, strict=True):
                if claims is not None and claims[i] > level:
                    best, level = member, claims[i]
            out.append(best)
        return out

    def inject(self, packets: Sequence[bytes]) -> int:
        if packets:
            self._route(packets, handed=False)
        return len(packets)

    def _route(self, packets: Sequence[bytes], *, handed: bool) -> None:
        by_member: dict[int, list[bytes]] = {}
        for packet, member in zip(packets, self._claims(packets), strict=True):
            by_member.setdefault(member.index, []).append(packet)
        for index, share in by_member.items():
            self._gather([self.members[index]], "inject", share, len(share) if handed else 0)

    def _hand_over(self, source: _Member, packets: Sequence[bytes]) -> None:
        """Protected-side packets a worker's TUN queue read but which are not its own (see
        :class:`ikegate.workers.worker.LanSide`): to their owner, counted there."""
        try:
            self._route(packets, handed=True)
        except (DeviceError, RuntimeError) as exc:
            self._log("WORKER", 5, "HANDOFF_FAILED", f"{len(packets)} packet(s) from worker {source.index} "
                      f"dropped: {exc}")

    def take_lan_output(self) -> list[bytes]:
        out: list[bytes] = []
        for part in self._gather([m for m in self.members if m.up], "lan"):
            out.extend(part or [])
        return out

    def load(self, count: int, concurrency: int = 64) -> None:
        """Each worker negotiates its share (its SPIs, its conn-ids, its core). The first worker's first SA
        carries INITIAL_CONTACT if the device has no IKE SA with the peer, as one process's would; then the
        other workers start only once it is through (``load_open``): the peer drops every SA of ours made
        before it."""
        up = [m for m in self.members if m.up]
        shares = [(m, count // len(up) + (1 if i < count % len(up) else 0), max(1, concurrency // len(up)))
                  for i, m in enumerate(up)]
        if not shares:
            return
        (first, share, window), rest = shares[0], shares[1:]
        (gated,) = self._gather([first], "load", share, window, True)
        if gated:
            self._load_waiting.extend(rest)
        else:
            self._load_rest(rest)

    def _load_rest(self, shares: Sequence[tuple[_Member, int, int]]) -> None:
        for member, share, window in shares:
            if member.up:
                self._gather([member], "load", share, window, False)

    def ping(self, source: str, destination: str, count: int, size: int) -> Awaitable[PingResult]:
        up = [m for m in self.members if m.up]
        if not self._opened or not up:
            raise DeviceError("ping is not available on this session")
        claims = self._gather(up, "claim_ping", source, destination)
        best = max(zip(up, claims, strict=True), key=lambda mc: (mc[1] or 0, -mc[0].index))[0]
        return self._ping(best, source, destination, count, size)

    async def _ping(self, member: _Member, source: str, destination: str, count: int, size: int) -> PingResult:
        assert member.events is not None
        status, value = await member.events.request(("ping", (source, destination, count, size)),
                                                     timeout=count * (PING_TIMEOUT + 1) + 10)
        if status != "ok":
            raise DeviceError(str(value))
        assert isinstance(value, PingResult)
        return value

    # -- hot standby: keepalived here, one sync node per worker (to the same index on the other node) -----

    def _on_role(self, role: Role) -> None:
        """keepalived's word: every worker's sync node takes the role (a worker started later gets it at
        its start). Told again even when unchanged here: a worker may have left it on its own (the loser of
        a split brain becomes standby by the hellos), and the worker ignores a role it already has."""
        if role is not self._role:
            self._log("HRP", 5, "HRP_STATE", f"VRRP names this node {role.value}; telling {len(self.members)} "
                      "worker(s)")
        self._role = role
        for member in self.members:
            self._tell_role(member)

    def _tell_role(self, member: _Member) -> None:
        if self._role is not None and member.up and member.events is not None:
            member.events.post(("hrp_role", (self._role.value,)))

    def _refuse_on_standby(self) -> None:
        st = self.hrp_state()
        if st is not None and st.role != "active":
            raise DeviceError(HRP_STANDBY_ERROR.removeprefix("Error: ").rstrip("."))

    def hrp_state(self) -> HrpState | None:
        if self._keepalived is None:
            return None
        parts = self._gather([m for m in self.members if m.up], "hrp_state")
        return merge_hrp(parts, self._keepalived.groups(), self._keepalived.restarts)

    def hrp_mirror(self, text: str, apply: Callable[[str], None]) -> None:
        """Worker 0's sync node carries the backed-up configuration to worker 0 of the other node; there it
        comes back here (``hrp_config``) and goes to every worker through :meth:`apply_config`."""
        if self._keepalived is None or not self._config.hrp.auto_sync:
            return
        self._mirror_apply = apply
        first = self.members[0]
        if first.up:
            self._gather([first], "hrp_mirror", text)

    def _mirrored(self, text: str) -> None:
        if self._mirror_apply is not None:
            try:
                self._mirror_apply(text)
            except DeviceError as exc:
                self._log("HRP", 4, "HRP_CONFIG", f"Mirrored configuration not applied: {exc}")

    # -- configuration ------------------------------------------------------------------------------------

    def apply_config(self, config: Config) -> None:
        """Prepare on every worker, then commit on every worker (or abort on every worker): all or none.
        An unchanged configuration (the same object at the same :attr:`~Config.generation`: one comparison,
        whatever its size) only lets the workers bring up their auto policies, as the single process does
        after every command."""
        self._config = config
        up = [m for m in self.members if m.up]
        if self._is_applied(config):
            self._gather(up, "start")
            return
        try:
            ready = self._gather(up, "prepare", config)
        except RuntimeError as exc:
            ready = [False]
            reason = str(exc)
        else:
            reason = "a worker did not answer"
        if not all(ready):
            self._gather([m for m in up if m.up], "abort")
            self._log("CFG", 3, "CONFIG_NOT_APPLIED", f"The configuration change was not applied to any "
                      f"worker: {reason}")
            raise DeviceError(f"configuration not applied: {reason}")
        self._gather(up, "commit")
        self._committed = pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL)
        self._applied = (config, config.generation)

    def _is_applied(self, config: Config) -> bool:
        applied, generation = self._applied
        return config is applied and config.generation == generation

    def workers(self) -> list[WorkerInfo]:
        up = [m for m in self.members if m.up]
        digests = dict(zip((m.index for m in up), self._gather(up, "config_digest"), strict=True))
        return [WorkerInfo(m.index, m.placement, m.proc.pid if m.up and m.proc is not None else None, m.restarts,
                           digests.get(m.index), len(m.held)) for m in self.members]

    def worker_pids(self) -> list[tuple[int, Placement, int]]:
        return [(m.index, m.placement, m.proc.pid) for m in self.members if m.up and m.proc is not None]

    # -- life cycle ---------------------------------------------------------------------------------------

    async def open(self) -> None:
        pair = self._config.hrp.enabled
        if pair:
            try:
                heartbeat_address(self._config)
            except HaConfigError as exc:
                raise DeviceError(f"hot standby: {exc}") from exc
        # A hot-standby node binds the VRRP address before it holds it.
        self._groups = open_groups(self.local_addresses(), self._ports, self.steering, freebind=pair)
        self._mesh = Mesh(len(self.members))
        try:
            self._open_queues()
            await asyncio.gather(*(self._spawn(m) for m in self.members))
            if pair:
                self._keepalived = Keepalived(self._config, asyncio.get_running_loop(), self._on_role,
                                              lambda text: self._log("HRP", 5, "HRP_STATE", text))
                await self._keepalived.open()
        except BaseException as exc:
            self._keepalived = None
            await self._stop_all(0.0)
            close_groups(self._groups)
            self._mesh.close()
            self._close_queues()
            if isinstance(exc, KeepalivedError):
                raise DeviceError(f"hot standby: {exc}") from exc
            raise
        self._opened = True
        self._watchers = [asyncio.get_running_loop().create_task(self._watch(m)) for m in self.members]

    def _open_queues(self) -> None:
        """Attach every TUN's queues here, in worker order, and steer them by eBPF if the kernel lets us
        (:mod:`ikegate.workers.tunsteer`); if not, say so once: the workers hand packets over as before."""
        if not self._tun:
            return
        try:
            self._queues = TunQueues(self._tun.values(), len(self.members), steer=self._tun_steering)
        except OSError as exc:
            raise DeviceError(str(exc)) from exc
        if self._queues.refused is not None:
            self._log("WORKER", 4, "TUN_STEERING_OFF", "TUN queues are not steered by eBPF (LAN packets of "
                      f"other workers' tunnels are handed over): {self._queues.refused}")

    def _close_queues(self) -> None:
        if self._queues is not None:
            self._queues.close()
            self._queues = None

    def _queue_handles(self, member: _Member) -> tuple[dict[str, tuple[int, dict[str, object]]], int | None]:
        if self._queues is None:
            return {}, None
        return self._queues.handles(member.index), self._queues.map_fd

    def _options(self, member: _Member) -> WorkerOptions:
        tun_queues, steer_map = self._queue_handles(member)
        return WorkerOptions(config=pickle.loads(self._committed), model=self._model, placement=member.placement,
                             ike_port=self._ports[0], natt_port=self._ports[1],
                             retransmit_tries=self._retransmit_tries, raw_esp=self._raw_esp, keylog=self._keylog,
                             tun=self._tun, tun_queues=tun_queues, steer_map_fd=steer_map)

    async def _spawn(self, member: _Member) -> None:
        """Start worker ``member`` on its members of the groups and wait until it has opened."""
        call_here, call_there = socket.socketpair()
        events_here, events_there = socket.socketpair()
        fds = {local: socks[member.index].fileno() for local, socks in self._groups.items()}
        inbox, outs = self._mesh.fds(member.index)
        tun_queues, steer_map = self._queue_handles(member)
        queues = (*(fd for fd, _ in tun_queues.values()), *(() if steer_map is None else (steer_map,)))
        try:
            member.proc = await asyncio.create_subprocess_exec(
                *command(member.index, self.steering, call_there.fileno(), events_there.fileno(), fds,
                         self._mesh.spec(member.index)),
                pass_fds=(call_there.fileno(), events_there.fileno(), *fds.values(), inbox,
                          *(fd for fd in outs if fd >= 0), *queues),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        finally:
            call_there.close()
            events_there.close()
        member.started = time.monotonic()
        member.channel = Channel(call_here)
        member.events = AsyncChannel(events_here, lambda _ident, body: self._on_event(member, body))
        channel = member.channel
        try:
            await asyncio.to_thread(channel.call, "init", self._options(member), timeout=INIT_TIMEOUT)
        except (WorkerGone, RuntimeError) as exc:
            raise OSError(f"worker {member.index} did not start: {exc}") from exc
        member.up = True
        self._tell_role(member)

    def _on_event(self, member: _Member, body: Any) -> None:
        kind = body[0]
        if kind == "logs":  # a worker's log records of one pass of its loop
            for record in body[1]:
                self._log(*record)
        elif kind == "sas":
            self._negotiated_at = time.monotonic()
            if self._take_sas(member, body[1]):
                self._share_peers()
        elif kind == "load_open":
            waiting, self._load_waiting = self._load_waiting, []
            self._load_rest(waiting)
        elif kind == "initial_contact":
            for other in self.members:
                if other is not member and other.up and other.events is not None:
                    other.events.post(("drop_identity", tuple(body[1:])))
        elif kind == "datagram":  # (owner, data, local, remote): an opening for another worker's peer
            target = self.members[body[1]] if 0 <= body[1] < len(self.members) else None
            if target is not None and target.up and target.events is not None:
                target.events.post(("datagram", tuple(body[2:])))
        elif kind == "handoff":
            self._hand_over(member, body[1])
        elif kind == "hrp_config":  # the active node's configuration, through worker 0's sync node
            self._mirrored(body[1])

    def _take_sas(self, member: _Member, changes: list[tuple[int, SaKey | None]]) -> bool:
        """A worker's IKE SAs that came (or moved) and went since its last report (:meth:`Worker._report
        <ikegate.workers.worker.Worker._report>`); True if the set of peers it has SAs with changed."""
        held, peers, keys = member.held, member.peers, self._keys
        if len(keys) > 4 * OFFLINE_LOG_CAPACITY + 1000:
            keys.clear()  # only a cache: distinct keys (NAT ports) must not pile up
        changed = False
        for conn_id, key in changes:
            old = held.pop(conn_id, None)
            if old is not None:
                left = peers[old[0]] - 1
                if left:
                    peers[old[0]] = left
                else:
                    del peers[old[0]]
                    changed = True
            if key is not None:
                held[conn_id] = keys.setdefault(key, key)
                if key[0] not in peers:
                    changed = True
                peers[key[0]] += 1
        return changed

    def _share_peers(self) -> None:
        """Tell each worker which peers have IKE SAs on the others (its INITIAL_CONTACT decision)."""
        held = [set(m.peers) for m in self.members]
        for member in self.members:
            if member.up and member.events is not None:
                elsewhere = set().union(*(h for i, h in enumerate(held) if i != member.index))
                if elsewhere != member.told:
                    member.told = elsewhere
                    member.events.post(("peers", tuple(sorted(elsewhere))))

    async def _watch(self, member: _Member) -> None:
        """Restart ``member`` whenever its process ends, until the device closes."""
        while not self._closing:
            proc = member.proc
            assert proc is not None
            code = await proc.wait()
            if self._closing:
                return
            member.up = False
            self._retire(member, code)
            pause = 0.0 if time.monotonic() - member.started >= STABLE_AFTER else min(30.0, 2.0 ** member.restarts)
            member.restarts += 1
            while not self._closing:
                if pause:
                    await asyncio.sleep(pause)
                try:
                    await self._spawn(member)
                except OSError as exc:
                    self._log("WORKER", 3, "WORKER_START_FAILED", str(exc))
                    pause = min(30.0, max(1.0, pause * 2))
                    continue
                self._share_peers()
                self._log("WORKER", 4, "WORKER_RESTARTED", f"Worker {member.index} ({member.placement}) "
                          "restarted")
                if not self._is_applied(self._config):
                    with contextlib.suppress(DeviceError):
                        self.apply_config(self._config)
                break

    def _retire(self, member: _Member, code: int) -> None:
        """A worker ended by itself: its channels go, its tunnels are recorded as gone (every IKE SA it
        reported, up to its last words: what it wrote before it died is still in the socket)."""
        if member.events is not None:
            member.events.read_rest()
        how = f"signal {-code}" if code < 0 else f"exit status {code}"
        self._log("WORKER", 3, "WORKER_EXITED", f"Worker {member.index} ({member.placement}) ended ({how}); "
                  f"{len(member.held)} IKE SA(s) lost")
        now = self.now()
        for conn_id in sorted(member.held)[-OFFLINE_LOG_CAPACITY:]:  # the log keeps that many at most
            peer, port, version, placement = member.held[conn_id]
            self._offline.record(peer_address=peer, peer_port=port, reason=RESTART_REASON, version=version,
                                 time=now, placement=placement)
        member.held = {}
        member.peers = Counter()
        member.told = set()
        self._share_peers()
        if member.events is not None:
            member.events.close()
        if member.channel is not None:
            member.channel.close()
        member.channel = member.events = None

    async def close(self, grace: float) -> None:
        self._closing = True
        for task in self._watchers:
            task.cancel()
        if self._keepalived is not None:  # first: the other node takes the address while the workers hand over
            await self._keepalived.close()
            self._keepalived = None
        await self._stop_all(grace)
        close_groups(self._groups)
        self._mesh.close()
        self._close_queues()
        self._opened = False

    async def _stop_all(self, grace: float) -> None:
        """Every worker deletes its SAs (in parallel) and exits; a worker that does not is killed."""

        async def stop(member: _Member) -> None:
            if member.events is not None and member.up:
                with contextlib.suppress(WorkerGone):
                    await member.events.request(("close", (grace,)), timeout=grace + 10)
            member.up = False
            proc = member.proc
            if proc is not None and proc.returncode is None:
                try:
                    await asyncio.wait_for(proc.wait(), 5.0)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
            if member.events is not None:
                member.events.close()
            if member.channel is not None:
                member.channel.close()
            member.channel = member.events = None

        await asyncio.gather(*(stop(m) for m in self.members))

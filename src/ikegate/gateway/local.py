"""The single-process :class:`~ikegate.gateway.device.Device`: one controller, its sockets and TUN bridges,
in the caller's event loop.

It is the only place where a management operation touches the controller, so each operation exists once:
``reset ike sa`` from the console, the control socket or SSH is :meth:`LocalDevice.reset_ike_sa`, and a
shutdown is :meth:`LocalDevice.close`. After anything that may have queued datagrams it flushes the UDP
runner itself, so callers never need to know there is one.

In-memory tests wrap a controller they drive themselves (``LocalDevice(gateway, clock=lambda: net.now)``)
and never open it: every operation but ``ping`` works without sockets.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import random
import socket
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import fields
from typing import Any

from ikegate.cli.render import ike_sa
from ikegate.gateway.controller import Gateway
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
)
from ikegate.ha.keepalived import KeepalivedError
from ikegate.ha.runtime import HaConfigError, HaRuntime
from ikegate.ike.core.config import Addr
from ikegate.io.keylog import KeyLogWriter
from ikegate.io.tun import TunBridge, open_bridge
from ikegate.io.udp import UdpRunner
from ikegate.policy.model import Config
from ikegate.sad import IpsecSaEntry, OfflineRecord, Placement, SaEntry, SaFlag

__all__ = ["PING_TIMEOUT", "LocalDevice"]

PING_TIMEOUT = 2.0  # seconds VRP's ping waits for each reply
_IDLE_POLL = 0.02  # seconds between checks that a shutdown's Deletes were answered


class LocalDevice:
    """The device as one process: wraps a :class:`Gateway` (see the module docstring)."""

    def __init__(self, gateway: Gateway, model: DeviceModel | None = None, *,
                 clock: Callable[[], float] = lambda: 0.0, tun: dict[str, str] | None = None,
                 raw_esp: bool = True, keylog: str | None = None, log: LogSink | None = None,
                 sockets: Mapping[Addr, socket.socket] | None = None,
                 make_runner: Callable[[Gateway, asyncio.AbstractEventLoop], UdpRunner] = UdpRunner,
                 lan_side: Gateway | None = None, ha_worker: tuple[int, int] | None = None,
                 tun_queues: Mapping[str, tuple[int, Mapping[str, object]]] | None = None) -> None:
        self.gateway = gateway
        #: A placement worker's (index, workers) in a hot-standby pair: its sync node pairs with the
        #: same-index worker of the other node; the supervisor runs keepalived and sets the role.
        self._ha_worker = ha_worker
        #: Sockets bound by someone else (a placement worker's share of the supervisor's groups), driven
        #: instead of binding our own; ``make_runner`` builds the runner that drives them.
        self._sockets = sockets
        self._make_runner = make_runner
        #: What the TUN bridge feeds (a placement worker's filter in front of the gateway, which hands
        #: other workers' packets over and attaches one queue of a multi-queue TUN); None: the gateway.
        self._lan_side = lan_side
        self._model = model or DeviceModel(placements=tuple(gateway.placements))
        self._clock = clock  # until the sockets are open (in-memory tests step their own clock)
        self._tun_map = dict(tun or {})
        #: TUN queues opened by someone else, by TUN name (a placement worker's, from the supervisor)
        self._tun_queues = tun_queues
        self._raw_esp = raw_esp  # raw ESP sockets where no NAT is detected (False: --force-udp-encap)
        self._keylog = keylog  # --keylog DIR
        self._log = log
        self._runner: UdpRunner | None = None
        self._tun: TunBridge | None = None
        self._pings: dict[tuple[int, int], asyncio.Future[float]] = {}
        gateway.on_echo_reply = self._echo_reply
        #: Hot standby (``hrp enable``), made at :meth:`open`.
        self.ha: HaRuntime | None = None

    @classmethod
    def build(cls, config: Config, model: DeviceModel, *, ike_port: int = 500, natt_port: int = 4500,
              retransmit_tries: int = 5, log: LogSink | None = None, tun: dict[str, str] | None = None,
              raw_esp: bool = True, keylog: str | None = None) -> LocalDevice:
        gateway = Gateway(config, ike_port=ike_port, natt_port=natt_port, placements=model.placements,
                          retransmit_tries=retransmit_tries, log=log)
        return cls(gateway, model, tun=tun, raw_esp=raw_esp, keylog=keylog, log=log)

    # -- what the device is --------------------------------------------------------------------------

    @property
    def model(self) -> DeviceModel:
        return self._model

    @property
    def config(self) -> Config:
        return self.gateway.config

    def now(self) -> float:
        return self._runner.now() if self._runner is not None else self._clock()

    def local_addresses(self) -> list[str]:
        return self.gateway.local_addresses()

    def lan_addresses(self) -> list[str]:
        return self.gateway.lan_addresses()

    @property
    def runner(self) -> UdpRunner | None:
        """The UDP runner driving the gateway while open (a worker hooks its SA reports on its flushes)."""
        return self._runner

    def _flush(self) -> None:
        if self._runner is not None:
            self._runner.flush()

    # -- SAs -----------------------------------------------------------------------------------------

    def ike_sa_table(self, selection: Selection = ALL) -> Iterator[list[str]]:
        return ike_sa.chunks(self.select(selection), ordered=True)

    def select(self, selection: Selection = ALL, *, counters: bool = False) -> list[SaEntry]:
        if counters:
            self.gateway.sync_counters()
        sad, sel = self.gateway.sad, selection
        if sel.spi is not None:
            found = sad.by_esp_spi(sel.spi, peer=sel.remote)
            rows: list[SaEntry] = [found] if found is not None else []
            return [e for e in rows if _matches(e, sel)]
        if sel.policy is not None:
            return [e for e in sad.by_policy(sel.policy, sel.seq) if _matches(e, sel)]
        return sad.select(conn_id=sel.conn_id, remote=sel.remote, placement=sel.placement, phase=sel.phase)

    def children(self, conn_id: int) -> list[IpsecSaEntry]:
        return self.gateway.sad.children(conn_id)

    def _refuse_on_standby(self) -> None:
        if self.gateway.standby and self.ha is not None:
            raise DeviceError(HRP_STANDBY_ERROR.removeprefix("Error: ").rstrip("."))

    def reset_ike_sa(self, selection: Selection = ALL) -> int:
        self._refuse_on_standby()
        _only(selection, "reset ike sa", "conn_id", "remote", "placement")
        deleted = self.gateway.reset_ike_sa(self.now(), conn_id=selection.conn_id, remote=selection.remote,
                                            placement=selection.placement)
        self._flush()
        return deleted

    def reset_ipsec_sa(self, selection: Selection = ALL) -> int:
        self._refuse_on_standby()
        _only(selection, "reset ipsec sa", "remote", "policy", "seq", "spi")
        deleted = self.gateway.reset_ipsec_sa(self.now(), remote=selection.remote, policy=selection.policy,
                                              seq=selection.seq, spi=selection.spi)
        self._flush()
        return deleted

    def offline(self, peer: str | None = None, placement: Placement | None = None) -> list[OfflineRecord]:
        return self.gateway.sad.offline.entries(peer=peer, placement=placement)

    def statistics(self) -> Statistics:
        gw, sad, st = self.gateway, self.gateway.sad, self.gateway.stats
        negotiating = {1: 0, 2: 0}
        if sad.flag_count(SaFlag.NEG):  # O(1) when nothing negotiates, a scan only when something does
            for entry in sad.ike_sas():
                if SaFlag.NEG in entry.flags:
                    negotiating[entry.version] = negotiating.get(entry.version, 0) + 1
        # Every controller counter under its own name (a copy: the caller may keep it while they move on).
        counters: dict[str, Any] = {f.name: _copied(getattr(st, f.name)) for f in fields(st)}
        return Statistics(
            ike_sas={v: sad.count(version=v, phase=1) for v in (1, 2)},
            negotiating=negotiating,
            ipsec_sas={v: sad.count(version=v, phase=2) for v in (1, 2)},
            engines=len(gw.engines()),
            esp=dict(gw.dataplane.totals()),
            **counters,
        )

    # -- the protected side ----------------------------------------------------------------------------

    def inject(self, packets: Sequence[bytes]) -> int:
        for packet in packets:
            self.gateway.from_lan(packet, self.now())
        self._flush()
        return len(packets)

    def take_lan_output(self) -> list[bytes]:
        out = list(self.gateway.lan_out)
        self.gateway.lan_out.clear()
        return out

    def workers(self) -> list[WorkerInfo]:
        placement = self._model.placements[0]
        return [WorkerInfo(0, placement, os.getpid(), 0, None)]

    def worker_pids(self) -> list[tuple[int, Placement, int]]:
        return []

    def load(self, count: int, concurrency: int = 64) -> None:
        self.gateway.load(self.now(), count, concurrency)
        self._flush()

    def ping(self, source: str, destination: str, count: int, size: int) -> Awaitable[PingResult]:
        if self._runner is None:
            raise DeviceError("ping is not available on this session")
        return self._ping(source, destination, count, size)

    async def _ping(self, source: str, destination: str, count: int, size: int) -> PingResult:
        """One echo request at a time, each waiting up to :data:`PING_TIMEOUT` for its reply (VRP's way)."""
        loop = asyncio.get_running_loop()
        ident = random.randrange(1, 0x10000)
        rtts: list[float | None] = []
        for seq in range(1, count + 1):
            fut: asyncio.Future[float] = loop.create_future()
            self._pings[(ident, seq)] = fut
            sent = self.now()
            self.gateway.ping(sent, source, destination, ident, seq, size)
            self._flush()
            try:
                got = await asyncio.wait_for(fut, PING_TIMEOUT)
            except TimeoutError:
                self._pings.pop((ident, seq), None)
                rtts.append(None)
                continue
            rtts.append((got - sent) * 1000)
        return PingResult(destination, size, tuple(rtts))

    def _echo_reply(self, ident: int, seq: int, now: float) -> None:
        fut = self._pings.pop((ident, seq), None)
        if fut is not None and not fut.done():
            fut.set_result(now)

    # -- configuration and life cycle -------------------------------------------------------------------

    def apply_config(self, config: Config) -> None:
        self.gateway.reload(config)
        if self._runner is not None:
            self.gateway.start(self._runner.now())
            self._runner.flush()

    def hrp_state(self) -> HrpState | None:
        return self.ha.state() if self.ha is not None else None

    def hrp_mirror(self, text: str, apply: Callable[[str], None]) -> None:
        if self.ha is None or not self.config.hrp.auto_sync:
            return
        node = self.ha.node
        first, node.on_config = node.on_config is None, apply
        if not self.gateway.standby:
            node.mirror_config(text)
            self.ha.flush()
        elif first and node.config_text is not None:
            apply(node.config_text)  # the active's came before anyone listened (during start-up)

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        runner = self._make_runner(self.gateway, loop)
        pair = self.config.hrp.enabled
        # A hot-standby node binds the VRRP address before it holds it, and carries ESP in UDP only (a raw
        # ESP socket cannot follow the address).
        if self._sockets is not None:
            runner.adopt(self._sockets, self.gateway.local_addresses(), raw_esp=self._raw_esp and not pair)
        else:
            await runner.open(self.gateway.local_addresses(), raw_esp=self._raw_esp and not pair, freebind=pair)
        try:
            if pair:
                try:
                    index, workers = self._ha_worker or (0, 1)
                    self.ha = HaRuntime(self.gateway, self.config, loop, flush_gateway=runner.flush, emit=self._log,
                                        run_keepalived=self._ha_worker is None, index=index, workers=workers)
                    runner.add_flush_hook(self.ha.flush)
                    await self.ha.open()
                except (HaConfigError, KeepalivedError) as exc:
                    raise DeviceError(f"hot standby: {exc}") from exc
            if self._keylog:
                self.gateway.keylog = KeyLogWriter(self._keylog).write
                if self._log is not None:
                    self._log("IKE", 3, "KEYLOG_ENABLED", f"WARNING: IKE and ESP keys are written to "
                              f"{self._keylog} (--keylog): anyone who can read these files can decrypt this "
                              "gateway's traffic")
            if self._tun_map:
                self._tun = open_bridge(self._lan_side or self.gateway, self._tun_map, runner,
                                        multi_queue=self._lan_side is not None,
                                        queues=self._tun_queues)
        except BaseException:
            if self.ha is not None:
                await self.ha.close()
                self.ha = None
            runner.close()
            raise
        self._runner = runner
        self.gateway.start(runner.now())
        runner.flush()

    async def close(self, grace: float) -> None:
        runner = self._runner
        ha, self.ha = self.ha, None
        handover = ha is not None and not self.gateway.standby and ha.node.link_alive(ha.loop.time())
        if ha is not None:
            await ha.close()
        if runner is not None and (handover or self.gateway.standby):
            # Hot standby: the other node carries on with these SAs (or, on a standby, they are the
            # active's): deleting them would tear down the tunnels it is about to serve.
            runner.close()
            self._runner = None
        if runner is not None and self._runner is not None:
            self.gateway.shutdown(runner.now())
            runner.flush()
            deadline = runner.now() + grace
            while not self.gateway.idle and runner.now() < deadline:
                await asyncio.sleep(_IDLE_POLL)
            runner.close()
            self._runner = None
        if self._tun is not None:
            self._tun.close()
            self._tun = None


def _copied(value: object) -> object:
    return dict(value) if isinstance(value, dict) else value


def _only(selection: Selection, what: str, *allowed: str) -> None:
    """Refuse a selection with fields the operation does not honour (rather than silently widen it)."""
    extra = sorted(f.name for f in fields(selection)
                   if getattr(selection, f.name) is not None and f.name not in allowed)
    if extra:
        raise ValueError(f"{what} does not select by {', '.join(extra)}")


def _matches(entry: SaEntry, sel: Selection) -> bool:
    """The filters :meth:`LocalDevice.select` applies after an index lookup by SPI or policy."""
    return ((sel.conn_id is None or entry.conn_id == sel.conn_id)
            and (sel.remote is None or entry.peer_address == ipaddress.ip_address(sel.remote))
            and (sel.placement is None or entry.placement == sel.placement)
            and (sel.phase is None or entry.phase == sel.phase))

"""The gateway controller: owns the IKE engines and the SA database, and decides after every change.

Also sans-I/O: datagrams and time go in, datagrams and one deadline come out, exactly like a single IKE
SA, so a whole gateway (or two facing each other) runs in memory in tests. The asyncio layer in
:mod:`ikegate.io` only moves bytes and arms the timer.

Responsibilities, in one place each:

* demultiplexing datagrams to engines by our SPI (and half-open SAs by peer and initiator SPI), COOKIE
  defence before any state is kept;
* mirroring engine events into the :class:`~ikegate.sad.SaDatabase` (the one truth the CLI reads) and
  into the offline log and log buffer;
* after any deletion, applying :func:`ikegate.gateway.decide.after_delete`;
* the operator API: list, ``reset ike sa`` by conn-id / remote / placement / all, shutdown.
"""

from __future__ import annotations

import enum
import functools
import heapq
import ipaddress
import itertools
import logging
import os
import struct
from collections import OrderedDict, deque
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ikegate.dataplane.backend import Acquire, Bypass, Outbound, Send, SoftExpire, UserspaceBackend
from ikegate.dataplane.packet import IpInfo, PacketError, echo_reply_for, echo_request, parse_ip
from ikegate.gateway import translate
from ikegate.gateway.admission import (
    BLOCK_TIME,
    LOG_INTERVAL,
    HalfOpen,
    SourceGuard,
    cookie_and_nonce,
    opening_ok,
    proven_share,
)
from ikegate.gateway.decide import Action, after_delete
from ikegate.gateway.device import GatewayStats, LogSink, no_log
from ikegate.gateway.keylog import EspKeys, Ikev1Keys, Ikev2Keys, KeyRecord
from ikegate.gateway.sendorder import OrderedSends
from ikegate.gateway.translate import Connection, Flow, PolicyKind
from ikegate.ike.core import ts as tsmod
from ikegate.ike.core.auth import Authenticator
from ikegate.ike.core.child import ChildSa
from ikegate.ike.core.config import Addr, ChildSaConfig, IkeProposalSpec, IkeSaConfig, ResponderPolicy
from ikegate.ike.core.engine import Engine
from ikegate.ike.core.ids import random_spi
from ikegate.ike.core.negotiated import Chosen
from ikegate.ike.core.snapshot import SnapshotError
from ikegate.ike.crypto import dh_group, integ_alg, prf_alg
from ikegate.ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    DeleteReason,
    IkeEvent,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaRekeyed,
    InitialContact,
    NegotiationFailed,
)
from ikegate.ike.fragments import FragmentationConfig
from ikegate.ike.v1 import snapshot as v1_snapshot
from ikegate.ike.v1.registry import NotifyType as V1NotifyType
from ikegate.ike.v1.sa import ExchangeMode as V1Mode
from ikegate.ike.v1.sa import IsakmpSa, V1Options
from ikegate.ike.v2 import snapshot as v2_snapshot
from ikegate.ike.v2.cookies import CookieJar
from ikegate.ike.v2.sa import ID_TEXT, IkeSa
from ikegate.ike.wire.registry import ExchangeType, HeaderFlag, NotifyType
from ikegate.ike.wire.v2 import (
    HEADER_LEN,
    Header,
    Notify,
    TrafficSelector,
    encode_message,
)
from ikegate.policy.model import V6_RULE_BASE, Config, ExchangeMode, IkePeer, IpsecPolicy, IpsecPolicyTemplate
from ikegate.sad import (
    DEFAULT_PLACEMENT,
    ConnIdError,
    IkeSaEntry,
    IpsecSaEntry,
    Placement,
    Role,
    SaDatabase,
    SaFlag,
    Selector,
    placement_for,
)
from ikegate.workers.steering import WorkerSlot, esp_spi

_T = TypeVar("_T")
log = logging.getLogger("ikegate.gateway")
NON_ESP_MARKER = bytes(4)
#: ISAKMP exchanges that open a new phase-1 negotiation: Main Mode (ID_PROT) and Aggressive Mode.
V1_OPENING = frozenset({2, 4})
_FLAG_R = int(HeaderFlag.RESPONSE)
NAT_KEEPALIVE = b"\xff"
ZERO_SPI = bytes(8)
RETRY_AFTER_FAILURE = 5.0
#: A policy's IKE SA replaced by a newer one the peer set up (its make-before-break re-authentication)
#: is normally deleted by the peer right away; if it is still there after this long, we delete it.
SUPERSEDED_GRACE = 10.0
#: Responder policy answers kept (per peer address and identity; see ``_Responder._cached``).
RESPONDER_CACHE = 4096
#: Delete exchanges run at most this many at a time; the rest wait their turn (their SAs are already gone
#: from the table). Thousands of Deletes in one burst would only overflow the peer's socket buffer.
DELETE_WINDOW = 256
#: IKEv1 Deletes are one-way notifications, so no answer paces them: at most this many IKEv1 SAs start
#: their Deletes per DELETE_TICK seconds (5,000 a second), the rest wait in the same queue. Sent in one
#: burst, a reset of 2,000 overflowed strongSwan's receive buffer and left hundreds of SAs at the peer.
ONE_WAY_DELETES = 50
DELETE_TICK = 0.01

#: Flags of an established SA (computed once: every ``enum.Flag`` operation is a Python-level call).
_READY = SaFlag.RD | SaFlag.A


@dataclass(slots=True)
class _Meta:
    """What the controller knows about an engine beyond the engine itself."""

    conn: Connection | None
    kind: PolicyKind
    scheduled: float | None = None
    reported: bool = False  # its deletion was already mirrored into the table and the policy
    replaced: bool = False  # an IKEv1 phase-1 rekey by the peer moved its IPsec SAs to a newer SA
    created: float = 0.0
    up_at: float | None = None  # when it was established
    #: another IKE SA now serves its policy (this one is deleted after a grace time)
    superseded: bool = False


def _addr(ip: ipaddress.IPv4Address | ipaddress.IPv6Address | str) -> str:
    return str(ip)


@functools.lru_cache(maxsize=4096)
@functools.lru_cache(maxsize=4096)
def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """Parsed addresses, cached: the SA database keys on address objects and peers repeat."""
    return ipaddress.ip_address(text)


class Gateway:
    """All IKE SAs of one device (or one placement worker)."""

    def __init__(
        self,
        config: Config,
        *,
        ike_port: int = 500,
        natt_port: int = 4500,
        placements: Sequence[Placement] = (DEFAULT_PLACEMENT,),
        rng: Callable[[int], bytes] = os.urandom,
        retransmit_tries: int = 5,
        cookie_threshold: int = 1000,
        log: LogSink | None = None,
        worker: WorkerSlot | None = None,
    ) -> None:
        self.config = config
        self.ike_port = ike_port
        self.natt_port = natt_port
        self.placements = sorted(placements)
        #: Which worker of how many this gateway is (None: the whole device in one process). A worker takes
        #: conn-ids from its residue class and SPIs naming it, and initiates only the auto policies it owns.
        self.worker = worker
        self.sad = SaDatabase() if worker is None else SaDatabase(conn_id_offset=worker.index,
                                                                 conn_id_stride=worker.steering.workers)
        #: Placement workers: peer addresses with IKE SAs on *other* workers (the supervisor keeps it up to
        #: date), so INITIAL_CONTACT goes out only when the device, not just this worker, has none left;
        #: and who to tell when a peer's INITIAL_CONTACT arrives here (address, RemoteType, RemoteID), so
        #: the other workers drop that identity's SAs too (:meth:`drop_identity`).
        self.peers_elsewhere: Container[str] = frozenset()
        self.on_initial_contact: Callable[[str, str, str], None] | None = None
        self._ike_spi: Callable[[], bytes] | None = (
            None if worker is None else worker.steering.ike_spi_allocator(worker.index, rng))
        self.stats = GatewayStats()
        self.retransmit_tries = retransmit_tries
        self._rng = rng
        self._log: LogSink = log or no_log
        self._cookies = CookieJar(cookie_threshold, rng=rng)
        self._engines: dict[bytes, Engine] = {}
        self._spis: dict[Engine, list[bytes]] = {}
        #: responder SAs not yet authenticated (see :mod:`ikegate.gateway.admission`)
        self._half_open: HalfOpen[Engine] = HalfOpen()
        self._guard = SourceGuard()
        self._full_logged_at: float | None = None
        self._full_dropped = 0
        self._guard_swept = 0.0
        self._meta: dict[Engine, _Meta] = {}
        self._heap: list[tuple[float, int, Engine | None, Callable[[float], object] | None]] = []
        self._counter = itertools.count()
        self._out: list[tuple[bytes, Addr, Addr]] = []
        #: Raw ESP (IP protocol 50) to send: (ESP packet, local address, remote address).
        self._raw_out: list[tuple[bytes, str, str]] = []
        #: Whether the I/O layer can carry raw ESP (it opened a protocol-50 raw socket on every local
        #: address). Without it every engine forces UDP encapsulation (see ``IkeSa.force_encap``), so ESP
        #: travels in UDP exactly when a NAT is detected or when raw ESP is impossible.
        self.raw_esp = False
        #: Called with each key-log record (see :mod:`ikegate.gateway.keylog`) when a key log is enabled.
        self.keylog: Callable[[KeyRecord], None] | None = None
        #: Hot-standby taps (``ikegate.ha``): after an engine was serviced, and when it is forgotten.
        self.on_change: Callable[[Engine, float], None] | None = None
        self.on_gone: Callable[[Engine, float], None] | None = None
        #: A hot-standby node's passive half: SAs mirrored from the active are held (and shown) but run no
        #: timers and send nothing until the node becomes active.
        self.standby = False
        self._conns: dict[tuple[str, int], Connection] = {}
        #: the (policy, seq) bound to an interface by the configuration (site-to-site and template), and
        #: those a reload unbound whose SAs :meth:`start` has yet to delete
        self._bound: frozenset[tuple[str, int]] = frozenset()
        self._retired: set[tuple[str, int]] = set()
        self._template_policy: dict[str, tuple[IpsecPolicy, str]] = {}
        self._template_by_peer: dict[str, tuple[IpsecPolicy, str, str]] = {}
        #: the live ISAKMP SAs per peer address, port and identity, oldest first (dicts keep insertion
        #: order): what a peer's new Main Mode may replace (see _replaced_v1)
        self._v1_live: dict[tuple[str, int, str, str], dict[IsakmpSa, None]] = {}
        self._responder = _Responder(self)
        self._responder_v1 = _Responder(self, version=1)
        #: The userspace ESP dataplane (this kernel has no ESP): SPD, ESP-in-UDP, traps. The controller
        #: arms the traps (:meth:`_arm_traps`, :meth:`_arm`): the dataplane only holds what it is told.
        self.dataplane = UserspaceBackend(config, arm_traps=False)
        #: Decrypted packets for the protected side that are not for the gateway itself (TUN or the
        #: packet API read them); bounded so an unread queue cannot grow without end.
        self.lan_out: deque[bytes] = deque(maxlen=4096)
        #: Called with (identifier, sequence, now) for each echo reply addressed to the gateway.
        self.on_echo_reply: Callable[[int, int, float], None] | None = None
        self._lan_addrs: frozenset[ipaddress.IPv4Address | ipaddress.IPv6Address] = frozenset()
        #: the same as (version, address as int): what a parsed packet (``IpInfo``) is compared with
        self._lan_keys: frozenset[tuple[int, int]] = frozenset()
        #: per peer ESP destination, the (local, remote) UDP addresses its ESP-in-UDP leaves with: worked
        #: out once per peer instead of once per packet; cleared on reload (the WAN addresses may change)
        self._esp_routes: dict[Addr, tuple[Addr, Addr]] = {}
        self._wan_by_version: dict[int, str] = {}
        #: the IKE SA serving each site-to-site policy, whoever initiated it
        self._active: dict[tuple[str, int], Engine] = {}
        self._rechecks: set[tuple[str, int]] = set()
        self._load_conn: Connection | None = None
        self._load_left = 0
        self._load_inflight = 0
        self._load_window = 0
        #: The load's next SA may carry INITIAL_CONTACT (by the usual rule); while the one that does is in
        #: negotiation (the gate), the others wait: the peer would drop every SA of ours made before it.
        self._load_announce = False
        self._load_gate: Engine | None = None
        self._loading: set[Engine] = set()
        self._deleting: set[Engine] = set()
        self._delete_queue: deque[tuple[Engine, DeleteReason]] = deque()
        self._one_way: tuple[float, int] = (-1.0, 0)  # (tick start, IKEv1 Deletes started in it)
        self._drain_at: float | None = None  # when a queue drain is scheduled
        #: IKEv1 Delete notifications, each one DELETE_TICK behind the one before it (see _start_delete)
        self._ordered: OrderedSends[tuple[bytes, Addr, Addr]] = OrderedSends(DELETE_TICK)
        self._ordered_at: float | None = None  # when a release of ordered datagrams is scheduled
        self._burst = False  # a reset or shutdown of several SAs is under way
        self._if_indexes: tuple[Config | None, dict[str, int]] = (None, {})
        self.reload(config)

    # ------------------------------------------------------------------ configuration

    def reload(self, config: Config) -> None:
        """Take a new configuration: existing SAs stay, except those of a policy no longer bound to an
        interface (``undo ipsec policy``, an interface's ``undo ipsec policy``): the next :meth:`start`
        deletes them, telling the peer, as VRP does (offline reason ``config modify or manual offline``).
        Later decisions follow the new policies."""
        self.config = config
        self._conns = {c.key: c for c in translate.connections(config)}
        bound = frozenset(self._conns) | {(p.name, p.seq) for p, _tpl, _itf in translate.templates(config)}
        self._retired = (self._retired | (self._bound - bound)) - bound
        self._bound = bound
        self.dataplane.reload(config)
        lan: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
        for itf in config.interfaces.values():
            if itf.ipsec_policy is None:
                lan += [i.ip for i in itf.ipv4] + [i.ip for i in itf.ipv6]
        self._lan_addrs = frozenset(lan)
        self._lan_keys = frozenset((a.version, int(a)) for a in lan)
        self._esp_routes.clear()
        self._wan_by_version = {}
        for addr in config.local_addresses():
            self._wan_by_version.setdefault(addr.version, str(addr))
        self._template_policy = {tpl.name: (policy, itf) for policy, tpl, itf in translate.templates(config)}
        self._template_by_peer = {tpl.ike_peer: (policy, tpl.name, itf)
                                  for policy, tpl, itf in reversed(translate.templates(config)) if tpl.ike_peer}
        self._arm_traps()

    def _arm_traps(self) -> None:
        """A traffic-based policy waits for traffic from the start (the seed): its trap is armed with the
        configuration and stays armed; after a deletion :func:`~ikegate.gateway.decide.after_delete`
        says ARM_TRAP and :meth:`_arm` arms it again (idempotent). Only :meth:`shutdown` disarms."""
        for key, conn in self._conns.items():
            if conn.kind is PolicyKind.TRAFFIC_BASED:
                self._arm(key)

    def _arm(self, key: tuple[str, int]) -> None:
        self.dataplane.install_trap(key)

    def local_addresses(self) -> list[str]:
        return [_addr(a) for a in self.config.local_addresses()]

    def policy_peer(self, policy: tuple[str, int]) -> str | None:
        """The peer address of site-to-site policy ``policy`` (None: a template's, or no such policy)."""
        conn = self._conns.get(policy)
        return None if conn is None else str(conn.remote)

    def site_peers(self) -> frozenset[str]:
        """The peer addresses of the site-to-site policies (placement workers route their openings)."""
        return frozenset(str(c.remote) for c in self._conns.values())

    # ------------------------------------------------------------------ sans-I/O surface

    def start(self, now: float) -> None:
        """Bring up every site-to-site policy in auto trigger mode that has no IKE SA yet.

        Called again after every command (the configuration may have changed), so it must never open a
        second IKE SA for a policy that has one, whoever initiated it (see :meth:`_bring_up`). A standby
        starts nothing: the active node's SAs are its SAs."""
        if self.standby:
            return
        if self._retired:
            self._delete_retired(now)
        for conn in self._conns.values():
            if conn.kind is PolicyKind.AUTO and (self.worker is None or self.worker.owns(str(conn.remote))):
                self._bring_up(conn, now)

    def _delete_retired(self, now: float) -> None:
        """Delete the SAs of the policies a reload unbound: their IKE SAs with every child, then the IPsec
        SAs of theirs living under an IKE SA of another policy."""
        retired, self._retired = self._retired, set()
        entries = [e for name, seq in sorted(retired) for e in self.sad.by_policy(name, seq)]
        entries.sort(key=lambda e: not isinstance(e, IkeSaEntry))
        for entry in entries:
            if self.sad.get(entry.conn_id) is entry:
                self._delete_entry(entry, now, DeleteReason.MANUAL)

    def _bring_up(self, conn: Connection, now: float, *, defer: bool = True) -> None:
        """Initiate ``conn`` unless an IKE SA already serves it, ours or the peer's. While the peer is in
        the middle of negotiating with us, look again a little later instead (its SA may be the one) --
        once only: half-open SAs from the peer's address may be someone spoofing it."""
        current = self._active.get(conn.key)
        if current is not None and not current.finished:
            return
        if any(isinstance(e, IkeSaEntry) and e.policy_name == conn.policy.name and e.policy_seq == conn.policy.seq
               for e in self.sad.by_peer(conn.remote)):
            return
        if defer and self._half_open.from_source(_addr(conn.remote)):
            if conn.key not in self._rechecks:
                self._rechecks.add(conn.key)
                self._schedule(now + RETRY_AFTER_FAILURE, functools.partial(self._reinitiate, conn))
            return
        self._initiate(conn, now)

    def datagrams_to_send(self) -> list[tuple[bytes, Addr, Addr]]:
        """(UDP payload, local address, remote address); NAT-T markers already added."""
        out, self._out = self._out, []
        return out

    def raw_esp_to_send(self) -> list[tuple[bytes, str, str]]:
        """(ESP packet, local address, remote address) to send as raw IP protocol 50.

        A queue beside :meth:`datagrams_to_send` rather than a flag in its tuples: raw ESP has no ports and
        needs another socket, and the many drivers that only know UDP (in-memory harnesses) stay as they
        are; with ``raw_esp`` false this queue stays empty."""
        out, self._raw_out = self._raw_out, []
        return out

    def get_timer(self) -> float | None:
        if self.standby:
            return None
        half_open = self._half_open.next_deadline()
        while self._heap:
            when, _, sa, _job = self._heap[0]
            if sa is not None and not self._timer_live(when, sa):
                heapq.heappop(self._heap)
                continue
            return when if half_open is None else min(when, half_open)
        return half_open

    def handle_timer(self, now: float) -> None:
        if self.standby:
            return
        if now - self._guard_swept >= LOG_INTERVAL:
            self._guard_swept = now
            self._guard.forget_idle(now)
        for stale in list(self._half_open.expired(now)):
            # Its engine may have armed no timer at all (a first message it never got past): the
            # gateway's deadline ends it. Unauthenticated, so the peer is told nothing.
            self.stats.half_open_expired += 1
            self._forget(stale, now)
        while self._heap and self._heap[0][0] <= now:
            when, _, sa, job = heapq.heappop(self._heap)
            if job is not None:
                job(now)
                continue
            if sa is None or sa.finished:
                continue
            meta = self._meta.get(sa)
            if meta is None or meta.scheduled != when:
                continue
            meta.scheduled = None
            self._note_traffic(sa)
            sa.handle_timer(now)
            self._service(sa, now)

    def receive_datagram(self, data: bytes, local: Addr, remote: Addr, now: float) -> None:
        """One UDP payload that arrived on ``local`` from ``remote``."""
        if local[1] == self.natt_port:
            if len(data) == 1 and data[0] == 0xFF:
                return  # NAT keepalive
            if data[:4] != NON_ESP_MARKER:
                self._esp_in(data, remote, now)
                return
            data = data[4:]
        if len(data) < HEADER_LEN:
            self.stats.dropped += 1
            return
        spi_i, spi_r = data[:8], data[8:16]
        exchange, flags = data[18], data[19]
        sa = self._engines.get(spi_i) if flags & _FLAG_R or spi_r == ZERO_SPI else None
        if sa is None:
            sa = self._engines.get(spi_r) or self._engines.get(spi_i)
        fresh = False
        if sa is None:
            v1 = data[17] >> 4 == 1
            opening = exchange in V1_OPENING if v1 else exchange == ExchangeType.IKE_SA_INIT and not flags & _FLAG_R
            if opening and spi_r == ZERO_SPI:
                sa = self._half_open.get(remote[0], spi_i)
                if sa is None:
                    sa = self._admit(data, local, remote, now, version=1 if v1 else 2)
                    fresh = True
                if sa is None:
                    return
            else:
                self.stats.dropped += 1
                log.debug("dropped an IKE message for unknown SPIs from %s:%s", *remote)
                return
        dropped = sa.stats.dropped
        sa.receive_datagram(data, remote, now, local=local)
        if sa.stats.dropped != dropped:
            self.stats.dropped += 1
            log.debug("dropped a malformed or unexpected IKE message from %s:%s (%d bytes)", *remote, len(data))
        self._service(sa, now)
        if fresh and not sa.finished and sa.untouched:
            # Its engine could not use the first message (or answered it without keeping state): keep nothing.
            self._forget(sa, now)

    def receive_esp(self, packet: bytes, remote: str, now: float) -> None:
        """One raw ESP packet (the body of IP protocol 50, without IP header) from ``remote``. Accepted for
        any SA, encapsulated or not: the SPI selects the SA (RFC 4301 §4.1)."""
        self._esp_in(packet, (remote, 0), now)

    def _esp_in(self, packet: bytes, remote: Addr, now: float) -> None:
        dataplane = self.dataplane
        opened = dataplane.open_wan(packet, remote, now)
        if opened is None:
            self.stats.esp_dropped += 1
        else:
            self._to_lan(opened[0], now, opened[1])
        if dataplane.events:
            self._dataplane_events(now)

    # ------------------------------------------------------------------ operator API

    def reset_ike_sa(self, now: float, *, conn_id: int | None = None, remote: str | None = None,
                     placement: Placement | None = None) -> int:
        """``reset ike sa``: delete the selected SAs, telling the peer; returns how many SAs went away."""
        self.stats.resets += 1
        entries = self.sad.select(conn_id=conn_id, remote=remote, placement=placement)
        if conn_id is None:
            # Without a conn-id every IKE SA goes with its children (the seed: "as for phase 1").
            entries = [e for e in entries if isinstance(e, IkeSaEntry) or e.parent is None]
        doomed: set[int] = set()
        for entry in entries:
            doomed.add(entry.conn_id)
            if isinstance(entry, IkeSaEntry):
                doomed.update(entry.child_ids)
        self._burst = len(doomed) > 2
        try:
            for entry in entries:
                self._delete_entry(entry, now, DeleteReason.MANUAL)
        finally:
            self._burst = False
        return sum(1 for cid in doomed if self.sad.get(cid) is None)

    def reset_ipsec_sa(self, now: float, *, remote: str | None = None, policy: str | None = None,
                       seq: int | None = None, spi: int | None = None) -> int:
        """``reset ipsec sa``: delete IPsec SAs only (their IKE SAs stay), telling the peer."""
        self.stats.resets += 1
        if spi is not None:
            found = self.sad.by_esp_spi(spi, peer=remote)
            entries: list[IkeSaEntry | IpsecSaEntry] = [found] if found is not None else []
        elif policy is not None:
            entries = [e for e in self.sad.by_policy(policy, seq) if isinstance(e, IpsecSaEntry)]
        else:
            entries = self.sad.select(remote=remote, phase=2)
        doomed = {e.conn_id for e in entries}
        for entry in entries:
            self._delete_entry(entry, now, DeleteReason.MANUAL)
        return sum(1 for cid in doomed if self.sad.get(cid) is None)

    def load(self, now: float, count: int, concurrency: int = 64, initial_contact: bool = True) -> None:
        """Benchmark aid: negotiate ``count`` extra IKE SAs (each with its first Child SA) over the first
        site-to-site policy, keeping at most ``concurrency`` in negotiation. These SAs belong to no policy
        decision: deleting them brings nothing back. The first carries INITIAL_CONTACT when no IKE SA with
        the peer exists (as a policy's SA would; ``initial_contact`` False: never), and the others wait
        until it is through (:attr:`load_gated`)."""
        if not self._conns:
            raise ValueError("no site-to-site policy to load")
        self._load_conn = next(iter(self._conns.values()))
        self._load_left += count
        self._load_window = concurrency
        self._load_announce = initial_contact
        self._load_more(now)

    @property
    def load_gated(self) -> bool:
        """A load's SA carrying INITIAL_CONTACT is in negotiation (the rest of the load waits for it)."""
        return self._load_gate is not None

    def _load_more(self, now: float) -> None:
        conn = self._load_conn
        while conn is not None and self._load_left > 0 and self._load_inflight < self._load_window \
                and self._load_gate is None:
            self._load_left -= 1
            self._load_inflight += 1
            announce, self._load_announce = self._load_announce, False
            sa = self._initiate(conn, now, track=False, announce=announce)
            if sa is None:
                break
            if sa.initial_contact:
                self._load_gate = sa

    # ------------------------------------------------------------------ the protected side

    def from_lan(self, packet: bytes, now: float) -> None:
        """An IP packet from the protected side (TUN, the packet API, the gateway's own ping): protect it,
        trap it (a traffic-based policy starts negotiating), or — when no policy covers it — deliver it
        if it is for the gateway itself, otherwise drop it (there is no clear-text routing here)."""
        dataplane = self.dataplane
        self._dataplane_actions(dataplane.from_lan(packet, now), now)
        if dataplane.events:
            self._dataplane_events(now)

    def ping(self, now: float, source: str, destination: str, ident: int, seq: int, size: int = 56) -> None:
        """Send one echo request from ``source`` (a protected-side address) through the SPD."""
        self.from_lan(echo_request(source, destination, ident, seq, bytes(i % 256 for i in range(size))), now)

    def lan_addresses(self) -> list[str]:
        """The gateway's own protected-side addresses (interfaces without an IPsec policy)."""
        return sorted(str(a) for a in self._lan_addrs)

    def sync_counters(self) -> None:
        """Copy the dataplane's per-SA counters into the SA database (before a display)."""
        for entry in self.sad.select(phase=2):
            if not isinstance(entry, IpsecSaEntry):
                continue
            pair = self.dataplane.sa(entry.spi_in)
            if pair is None:
                continue
            entry.packets_in, entry.bytes_in = pair.inbound.packets, pair.inbound.bytes
            entry.packets_out, entry.bytes_out = pair.outbound.packets, pair.outbound.bytes
            entry.seq_in, entry.seq_out = pair.inbound.highest_seq, pair.outbound.seq

    def _to_lan(self, packet: bytes, now: float, info: IpInfo | None = None) -> None:
        """A decrypted packet: answer pings to our own addresses, note replies to ours, pass the rest on.
        ``info``: the packet's parsed header when the caller has it (decrypted packets always do)."""
        if info is None:
            try:
                info = parse_ip(packet)
            except PacketError:
                self.stats.lan_dropped += 1
                return
        if (info.version, info.dst) in self._lan_keys:
            reply = echo_reply_for(packet, self._lan_addrs)
            if reply is not None:
                self.from_lan(reply, now)
                return
            if (info.protocol, info.icmp_type) in ((1, 0), (58, 129)) and self.on_echo_reply is not None:
                ident, seq = struct.unpack_from("!HH", packet, info.header_len + 4)
                self.on_echo_reply(ident, seq, now)
                return
        self.lan_out.append(packet)

    def _dataplane_actions(self, actions: Sequence[Send | Bypass | Acquire], now: float) -> None:
        for action in actions:
            if isinstance(action, Send):
                if action.udp_encap or not self.raw_esp:
                    # Without raw ESP an SA negotiated unencapsulated (NAT traversal disabled) still
                    # travels in UDP: the best this gateway can do.
                    route = self._esp_routes.get(action.remote)
                    if route is None:
                        if len(self._esp_routes) >= 4096:
                            self._esp_routes.clear()  # bounded; a busy peer is back after one packet
                        route = self._esp_routes[action.remote] = (
                            (self._local_for(action.remote[0]), self.natt_port),
                            (action.remote[0], action.remote[1] or self.natt_port))
                    self._out.append((action.payload, *route))
                else:
                    self._raw_out.append((action.payload, self._local_for(action.remote[0]), action.remote[0]))
            elif isinstance(action, Acquire):
                self.acquire(now, action.policy_key, action.rule)
            else:
                try:
                    info = parse_ip(action.packet)
                except PacketError:
                    self.stats.lan_dropped += 1
                    continue
                if (info.version, info.dst) in self._lan_keys:
                    self._to_lan(action.packet, now, info)
                else:
                    self.stats.lan_dropped += 1

    def _dataplane_events(self, now: float) -> None:
        for event in self.dataplane.poll(now):
            if isinstance(event, Acquire):
                self.acquire(now, event.policy_key, event.rule)
                continue
            found = self.sad.by_esp_spi(event.spi, direction="in")
            if found is None or not isinstance(found.handle, tuple):
                continue
            sa, child = found.handle
            if isinstance(event, Outbound):
                self._note_traffic(sa)  # on-demand DPD: traffic out after a quiet spell
            elif isinstance(event, SoftExpire):
                sa.rekey_child(child, now)
            else:
                sa.delete_child(child, now, DeleteReason.PHASE2_HARD_EXPIRY)
            self._service(sa, now)

    def _local_for(self, remote_ip: str) -> str:
        """Our public address of the peer's family (the one WAN address ESP leaves from)."""
        version = _ip(remote_ip).version
        return self._wan_by_version.get(version, "0.0.0.0" if version == 4 else "::")

    def shutdown(self, now: float) -> None:
        """Delete every IKE SA (sending Deletes) without re-establishing anything."""
        for key, conn in self._conns.items():
            if conn.kind is PolicyKind.TRAFFIC_BASED:
                self.dataplane.remove_trap(key)  # traffic during the goodbyes starts nothing
        self._conns = {}
        self._burst = len(self._meta) > 1
        try:
            for sa in list(self._meta):
                self._delete_ike(sa, now, DeleteReason.SHUTDOWN)
        finally:
            self._burst = False

    def engines(self) -> list[Engine]:
        return list(self._meta)

    @property
    def idle(self) -> bool:
        """True when no engine has anything left to send or wait for (a clean shutdown is complete)."""
        return not self._ordered and not any(not sa.finished for sa in self._meta)

    # ------------------------------------------------------------------ hot standby (issue 17)
    # Additive hooks for ``ikegate.ha``: engine snapshots out and in, and a tap on every engine change.

    def export_sa(self, sa: Engine, now: float) -> dict[str, Any] | None:
        """An established IKE SA with its Child SAs, their ESP counters and its table fields, as plain
        data (``ike/core/snapshot.py``); None for an SA that is not established (not synchronised)."""
        if not sa.established or not isinstance(sa.handle, int) or (entry := self.sad.ike(sa.handle)) is None:
            return None
        try:
            rec = v2_snapshot.export_ike(sa, now) if isinstance(sa, IkeSa) else (
                v1_snapshot.export_ike(sa, now) if isinstance(sa, IsakmpSa) else None)
        except SnapshotError:
            return None
        if rec is None:
            return None
        rec["sad"] = {"conn_id": entry.conn_id, "policy": entry.policy_name, "seq": entry.policy_seq,
                      "itf": entry.interface, "tpl": entry.template_name,
                      "place": [entry.placement.slot, entry.placement.cpu]}
        for crec in rec["children"]:
            crec["esp"] = self.esp_state(int(crec["spi_in"]))
            child = sa.children.get(int(crec["spi_in"]))
            centry = self.sad.ipsec(child.handle) if child is not None and isinstance(child.handle, int) else None
            crec["conn_id"] = centry.conn_id if centry is not None else 0
        return rec

    def esp_state(self, spi_in: int) -> list[int | bytes]:
        """(outbound sequence number, inbound replay top, inbound replay bitmap as little-endian bytes) of a
        Child SA."""
        pair = self.dataplane.sa(spi_in)
        if pair is None:
            return [0, 0, b""]
        replay = pair.inbound.replay
        bits = replay._bits
        return [pair.outbound.seq, replay.top, bits.to_bytes((bits.bit_length() + 7) // 8, "little")]

    def set_esp_state(self, spi_in: int, seq_out: int, replay_top: int, replay_bits: bytes) -> None:
        """Move a Child SA's ESP counters forward (a standby applying the active's batches; never back)."""
        pair = self.dataplane.sa(spi_in)
        if pair is None:
            return
        pair.outbound.seq = max(pair.outbound.seq, seq_out)
        replay = pair.inbound.replay
        if replay_top > replay.top:
            replay.top, replay._bits = replay_top, int.from_bytes(replay_bits, "little") & replay._mask

    def ike_config(self, name: str, local: Addr, version: int) -> IkeSaConfig | None:
        """The IKE configuration of the peer named ``name`` (snapshot import's :class:`Resolver`)."""
        peer = self.config.ike_peers.get(name)
        if peer is None:
            return None
        return translate.ike_config(self.config, peer, _ip(local[0]), ike_port=self.ike_port,
                                    natt_port=self.natt_port, retransmit_tries=self.retransmit_tries,
                                    version=version)

    def child_config(self, sa: Engine, ts_local: list[TrafficSelector],
                     ts_remote: list[TrafficSelector]) -> ChildSaConfig | None:
        """The Child SA configuration that covers these selectors, as a responder would pick it."""
        responder = self._responder_v1 if sa.version == 1 else self._responder
        return responder.select_child(sa, ts_remote, ts_local)

    def adopt(self, rec: dict[str, Any], now: float, *, seq_jump: int = 0) -> Engine:
        """Take over an IKE SA from a snapshot (the standby becoming active, or a standby mirroring the
        active): no negotiation, the same SPIs, keys and message IDs. ESP outbound sequence numbers jump
        ``seq_jump`` ahead so that none the old active used is sent again. Raises ``SnapshotError``."""
        version = int(rec.get("version", 0))
        resolver = _SnapshotResolver(self, self._responder_v1 if version == 1 else self._responder)
        sa: IkeSa | IsakmpSa = v1_snapshot.import_ike(rec, now, resolver) if version == 1 else \
            v2_snapshot.import_ike(rec, now, resolver)
        sa.force_encap = sa.force_encap or not self.raw_esp
        if isinstance(sa, IsakmpSa) and sa.config is not None and sa.config.name in self.config.ike_peers:
            sa.options = translate.v1_options(self.config, self.config.ike_peers[sa.config.name])
        table = rec.get("sad") or {}
        conn = self._match_connection(sa)
        meta = _Meta(conn, conn.kind if conn is not None else PolicyKind.TEMPLATE, created=now, up_at=now)
        self._meta[sa] = meta
        slot, cpu = table.get("place") or [DEFAULT_PLACEMENT.slot, DEFAULT_PLACEMENT.cpu]
        entry = IkeSaEntry(version=version, role=Role.INITIATOR if sa.is_initiator else Role.RESPONDER,
                           flags=SaFlag.RD | SaFlag.A, placement=Placement(int(slot), int(cpu)),
                           local_address=_ip(sa.local[0]), local_port=sa.local[1],
                           peer_address=_ip(sa.peer[0]), peer_port=sa.peer[1], spi_i=sa.spi_i, spi_r=sa.spi_r,
                           policy_name=table.get("policy"), policy_seq=table.get("seq"),
                           interface=table.get("itf") or "", template_name=table.get("tpl"),
                           created=sa.established_at or now, handle=sa)
        wanted = int(table.get("conn_id") or 0)
        entry.conn_id = wanted if wanted and self.sad.get(wanted) is None else 0
        try:
            self.sad.add_ike(entry)  # under the active's conn-id, so that both nodes show the same ids
        except ConnIdError:
            entry.conn_id = 0
            self.sad.add_ike(entry)
        sa.handle = entry.conn_id
        self.sad.set_peer_identity(entry.conn_id, *self._peer_identity(sa))
        algs = self._algorithms(sa)
        entry.encryption, entry.integrity = algs.get("encryption", ""), algs.get("integrity", "")
        entry.prf, entry.dh = algs.get("prf", ""), algs.get("dh", "")
        entry.auth_method = "PRE_SHARED"
        if isinstance(sa, IsakmpSa):
            entry.exchange_mode = sa.options.mode.value
            self._v1_live.setdefault(self._v1_key(sa), {})[sa] = None
            sa.heir = self._inherit
        if sa.config is not None:
            entry.lifetime_hard = int(sa.config.lifetime)
            entry.lifetime_soft = int(sa.rekey_at - now) if sa.rekey_at else None
        if conn is not None:
            self._active[conn.key] = sa
        esp = {int(c["spi_in"]): c for c in rec["children"]}
        log, self._log = self._log, (self._log if not self.standby else lambda *_: None)
        try:  # a standby mirrors tunnels it does not run: no "tunnel established" line for each
            for child in list(sa.children.values()):
                self._on_child_up(sa, child, now)
                crec = esp.get(child.spi_in, {})
                self._renumber(child, int(crec.get("conn_id") or 0))
                seq_out, top, bits = crec.get("esp") or [0, 0, b""]
                self.set_esp_state(child.spi_in, int(seq_out) + seq_jump, int(top), bytes(bits))
        finally:
            self._log = log
        self._service(sa, now)
        return sa

    def _renumber(self, child: ChildSa, wanted: int) -> None:
        """Give an adopted Child SA's row the conn-id it has on the active node, when that id is free."""
        entry = self.sad.ipsec(child.handle) if isinstance(child.handle, int) else None
        if entry is None or not wanted or wanted == entry.conn_id or self.sad.get(wanted) is not None:
            return
        self.sad.remove(entry.conn_id)
        entry.conn_id = wanted
        try:
            self.sad.add_ipsec(entry)
        except ConnIdError:
            entry.conn_id = 0
            self.sad.add_ipsec(entry)
        child.handle = entry.conn_id

    def resume(self, now: float) -> None:
        """Leave standby: every adopted engine's timers run again (DPD, rekeys, expiries resume), then
        the auto policies that have no SA are brought up (those with one keep it: no renegotiation)."""
        self.standby = False
        for sa in list(self._meta):
            meta = self._meta.get(sa)
            if meta is not None:
                meta.scheduled = None
                self._service(sa, now)
        self.start(now)

    def engine_of(self, conn_id: int) -> Engine | None:
        """The engine behind an IKE SA's conn-id."""
        entry = self.sad.ike(conn_id)
        handle = entry.handle if entry is not None else None
        return handle if isinstance(handle, IkeSa | IsakmpSa) else None

    def mids_of(self, sa: Engine) -> list[int]:
        """The message-ID counters the sync stream carries after every exchange."""
        return v2_snapshot.mids(sa) if isinstance(sa, IkeSa) else (
            v1_snapshot.mids(sa) if isinstance(sa, IsakmpSa) else [])

    def set_mids(self, sa: Engine, mids: list[int]) -> None:
        if isinstance(sa, IkeSa):
            v2_snapshot.set_mids(sa, *mids[:2])
        elif isinstance(sa, IsakmpSa):
            v1_snapshot.set_mids(sa, mids)

    def drop_quietly(self, sa: Engine, now: float) -> None:
        """Forget an adopted SA without a word to the peer (a standby removing what the active deleted:
        the active sends the Delete, once)."""
        for child in sa.children.values():
            self.dataplane.delete_sa(child.spi_in)
        meta = self._meta.get(sa)
        if meta is not None:
            meta.reported = True
        self._forget(sa, now)

    # ------------------------------------------------------------------ internals: engines

    def _delete_entry(self, entry: IkeSaEntry | IpsecSaEntry, now: float, reason: DeleteReason) -> None:
        handle = entry.handle
        if isinstance(entry, IkeSaEntry):
            if isinstance(handle, IkeSa | IsakmpSa):
                self._delete_ike(handle, now, reason)
            else:
                self.sad.remove_tree(entry.conn_id)
            return
        if isinstance(handle, tuple) and len(handle) == 2 and isinstance(handle[0], IkeSa | IsakmpSa):
            sa, child = handle
            sa.delete_child(child, now, reason)
            self._service(sa, now)
        else:
            self.sad.remove(entry.conn_id)

    def _delete_ike(self, sa: Engine, now: float, reason: DeleteReason) -> None:
        """Delete an IKE SA: at once in the table, and its Delete exchange within the window."""
        if sa.finished or sa.is_deleting:
            return
        if not self._delete_queue and self._may_start_delete(sa, now):
            self._start_delete(sa, now, reason, ordered=self._burst)
            return
        self._on_ike_down(sa, reason, now)
        self._delete_queue.append((sa, reason))
        self._drain_deletes(now)

    def _may_start_delete(self, sa: Engine, now: float) -> bool:
        """Whether ``sa``'s Delete may go now: a slot of the window (IKEv2, freed by the answer), or of this
        tick's budget of one-way IKEv1 Deletes (counted as taken)."""
        if not isinstance(sa, IsakmpSa):
            return len(self._deleting) < DELETE_WINDOW
        start, used = self._one_way
        if now >= start + DELETE_TICK:
            start, used = now, 0
        if used >= ONE_WAY_DELETES:
            return False
        self._one_way = (start, used + 1)
        return True

    def _drain_deletes(self, now: float) -> None:
        """Start queued Deletes in order while they may go; when an IKEv1 one must wait for the next tick,
        come back then (an IKEv2 one waits for an answer, which calls this again)."""
        queue = self._delete_queue
        while queue:
            waiting, reason = queue[0]
            if waiting.finished:
                queue.popleft()
                continue
            if not self._may_start_delete(waiting, now):
                if isinstance(waiting, IsakmpSa) and self._drain_at is None:
                    self._drain_at = self._one_way[0] + DELETE_TICK
                    self._schedule(self._drain_at, self._drain_later)
                return
            queue.popleft()
            self._start_delete(waiting, now, reason, ordered=True)

    def _send_ordered(self, now: float) -> None:
        """Send the ordered datagrams whose time has come; come back when the next one's comes."""
        ordered = self._ordered
        for packet, local, remote in ordered.due(now):
            self._send(packet, local, remote)
        when = ordered.next_time()
        if when is not None and (self._ordered_at is None or when < self._ordered_at):
            self._ordered_at = when
            self._schedule(when, self._ordered_timer)

    def _ordered_timer(self, now: float) -> None:
        self._ordered_at = None
        self._send_ordered(now)

    def _drain_later(self, now: float) -> None:
        self._drain_at = None
        self._drain_deletes(now)

    def _start_delete(self, sa: Engine, now: float, reason: DeleteReason, *, ordered: bool = False) -> None:
        """Send ``sa``'s Delete. An IKEv1 SA says goodbye in one-way notifications (with IPsec SAs two: the
        ESP Delete, then the ISAKMP Delete), which must reach the peer's threads in that order. In a burst
        (``ordered``: a reset or shutdown of several SAs, which keeps a peer's threads busy) each goes only
        after the one before it and one DELETE_TICK later (:mod:`ikegate.gateway.sendorder` says why).

        A lone reset sends them back to back: held a tick, the ISAKMP Delete would let an auto policy's new
        Main Mode (started at once by the reset) overtake it, and the peer would end the old SA for
        INITIAL-CONTACT instead of hearing its Delete."""
        sa.delete(now, reason)
        if isinstance(sa, IsakmpSa):
            ticket = None
            for datagram in sa.datagrams_to_send():
                ticket = self._ordered.submit(datagram, now, after=ticket if ordered else None)
            self._send_ordered(now)
        if not sa.finished:
            self._deleting.add(sa)
        self._service(sa, now)

    def _spi_alloc(self) -> int:
        while True:
            spi = random_spi(self._rng) if self.worker is None else esp_spi(self._rng, self.worker.index)
            if self.sad.by_esp_spi(spi, direction="in") is None:
                return spi

    def acquire(self, now: float, policy: tuple[str, int], rule: int | None = None) -> bool:
        """Traffic matched a traffic-based policy with no SA (the dataplane's ACQUIRE): negotiate, with the
        selectors of the ACL rule the traffic matched. False when the policy is not ours to start."""
        conn = self._conns.get(policy)
        if conn is None:
            return False
        flows = [f for f in conn.flows if rule is None or f.rule == rule][:1]
        if not flows:
            return False
        sa = self._active.get(policy)
        if sa is None:
            return self._initiate(conn, now, flows=flows) is not None
        if sa.established and not any(c.config.handle == (conn.policy, flows[0].rule) for c in sa.children.values()):
            sa.create_child(translate.child_config(self.config, conn.policy, flows[0]), now)
            self._service(sa, now)
        return True

    def _initiate(self, conn: Connection, now: float, track: bool = True,
                  flows: list[Flow] | None = None, announce: bool = False) -> Engine | None:
        flows = conn.flows if flows is None else flows
        if not flows:
            return None
        version = conn.peer.preferred_version
        cfg = translate.ike_config(self.config, conn.peer, conn.local, ike_port=self.ike_port,
                                   natt_port=self.natt_port, retransmit_tries=self.retransmit_tries, version=version)
        local = (_addr(conn.local), self.ike_port)
        remote = (_addr(conn.remote), self.ike_port)
        sa: Engine
        if version == 1:
            sa = IsakmpSa(cfg, initiator=True, local=local, peer=remote, now=now, rng=self._rng,
                          policy=self._responder_v1,
                          spi_allocator=self._spi_alloc, ike_spi_allocator=self._ike_spi,
                          v1=translate.v1_options(self.config, conn.peer))
        else:
            sa = IkeSa(cfg, initiator=True, local=local, peer=remote, now=now, rng=self._rng,
                       policy=self._responder,
                       spi_allocator=self._spi_alloc, ike_spi_allocator=self._ike_spi)
        # INITIAL-CONTACT when no IKE SA with the peer is left (IKEv1 orphan IPsec SAs do not count): the
        # peer then drops whatever it still holds of ours, say after a Delete of ours was lost.
        # (On the benchmark's extra SAs (``track`` false) only on the load's first, ``announce``: they come
        # on top of what exists, and must not make the peer drop each other; see :meth:`load`.)
        sa.initial_contact = (track or announce) and str(conn.remote) not in self.peers_elsewhere and (
            not self.sad.peer_count(conn.remote) or not any(
                isinstance(e, IkeSaEntry) for e in self.sad.by_peer(conn.remote)))
        sa.force_encap = not self.raw_esp
        if track:
            self._meta[sa] = _Meta(conn, conn.kind, created=now)
            self._active[conn.key] = sa
        else:
            self._meta[sa] = _Meta(None, PolicyKind.TEMPLATE)
            self._loading.add(sa)
        placement = placement_for(conn.remote, self.ike_port, sa.spi_i, self.placements)
        entry = IkeSaEntry(version=version, role=Role.INITIATOR, flags=SaFlag.NEG, placement=placement,
                           local_address=conn.local, local_port=self.ike_port, peer_address=conn.remote,
                           peer_port=self.ike_port, spi_i=sa.spi_i, spi_r=ZERO_SPI,
                           policy_name=conn.policy.name, policy_seq=conn.policy.seq, interface=conn.interface,
                           created=now, handle=sa)
        self.sad.add_ike(entry)
        sa.handle = entry.conn_id
        self.stats.negotiations_started += 1
        first, *rest = flows
        try:
            sa.initiate(now, translate.child_config(self.config, conn.policy, first))
        except ValueError as exc:
            # A configuration the protocol cannot express (say, only AES-GCM for IKEv1 phase 1).
            self._log("IKE", 4, "NEGOTIATION_FAILED", f"Cannot negotiate policy {conn.policy.name} "
                      f"{conn.policy.seq} with {conn.remote}: {exc}")
            self.stats.negotiations_failed["configuration"] = self.stats.negotiations_failed.get("configuration", 0) + 1
            self._meta.pop(sa, None)
            self._loading.discard(sa)
            if self._active.get(conn.key) is sa:
                del self._active[conn.key]
            self.sad.remove(entry.conn_id)
            return None
        for flow in rest:
            sa.create_child(translate.child_config(self.config, conn.policy, flow), now)
        self._service(sa, now)
        return sa

    def _admit(self, data: bytes, local: Addr, remote: Addr, now: float, version: int) -> Engine | None:
        """An opening message from an unknown SA: a new responder engine, or None (dropped, or answered
        with a COOKIE). Every refusal happens before anything is allocated for the datagram."""
        source = remote[0]
        if not opening_ok(data, version):
            self.stats.openings_malformed += 1
            self.stats.dropped += 1
            return None
        limits = self.config.ike_admission
        if self._guard.blocked(source, now):
            self._refuse(source, now, "blocked after repeated authentication failures")
            return None
        if len(self._half_open) >= limits.in_negotiation:
            self._refuse_full(now, limits.in_negotiation)
            return None
        held = self._half_open.from_source(source)
        if version == 1:
            if self._half_open.of_version(1) >= limits.in_negotiation // 2:
                # IKEv1 cannot prove its source address (no COOKIE exchange): it gets half of the table at most.
                self._refuse_full(now, limits.in_negotiation // 2, "IKEv1 ")
                return None
            if held >= limits.per_address and not (held < proven_share(limits.in_negotiation)
                                                   and self._guard.proven(source, now)):
                self._refuse(source, now, f"more than {limits.per_address} IKE SAs in negotiation from it")
                return None
        elif held >= limits.per_address or self._cookies.required(len(self._half_open)):
            # Past the per-address cap (or under global load) the source proves its address with a COOKIE.
            if held >= proven_share(limits.in_negotiation):
                self._refuse(source, now, f"more than {proven_share(limits.in_negotiation)} IKE SAs in "
                             "negotiation from it")
                return None
            if not self._cookie_ok(data, local, remote, now):
                return None
        sa: Engine
        if version == 1:
            # Aggressive Mode only where an ike peer for this source is configured for it (as the USG).
            mode = V1Mode.AGGRESSIVE if self._responder_v1.aggressive_allowed(remote[0]) else V1Mode.MAIN
            sa = IsakmpSa(None, initiator=False, local=local, peer=remote, now=now, policy=self._responder_v1,
                          rng=self._rng, spi_allocator=self._spi_alloc, ike_spi_allocator=self._ike_spi,
                          v1=V1Options(mode=mode, dependent=self.config.ikev1_dependent))
        else:
            sa = IkeSa(None, initiator=False, local=local, peer=remote, now=now, policy=self._responder,
                       rng=self._rng, spi_allocator=self._spi_alloc, ike_spi_allocator=self._ike_spi)
        sa.force_encap = not self.raw_esp
        self._meta[sa] = _Meta(None, PolicyKind.TEMPLATE, created=now)
        self._half_open.add(source, data[:8], sa, now, version)
        return sa

    def _cookie_ok(self, data: bytes, local: Addr, remote: Addr, now: float) -> bool:
        """True when the IKE_SA_INIT carries a valid COOKIE of ours; otherwise it is answered with a fresh
        COOKIE and nothing is kept (RFC 7296 §2.6). ``data`` passed :func:`opening_ok`."""
        cookie, nonce = cookie_and_nonce(data)
        if nonce is None:
            self.stats.dropped += 1
            return False
        spi_i = data[:8]
        if cookie is not None and self._cookies.check(cookie, nonce, remote[0], spi_i, now):
            return True
        header = Header(spi_i, ZERO_SPI, 0, ExchangeType.IKE_SA_INIT, HeaderFlag.RESPONSE, 0)
        made = self._cookies.make(nonce, remote[0], spi_i, now)
        self._send(encode_message(header, [Notify(NotifyType.COOKIE, data=made)]), local, remote)
        self.stats.cookies_sent += 1
        return False

    def _refuse(self, source: str, now: float, why: str) -> None:
        """An opening message from ``source`` dropped by a per-source rule; logged once per interval."""
        self.stats.openings_refused += 1
        count = self._guard.note_drop(source, now)
        if count is not None:
            self._log("IKE", 4, "IKE_NEGOTIATION_REFUSED",
                      f"IKE negotiation requests were dropped. (RemoteAddress={source}, Reason={why}, Count={count})")

    def _refuse_full(self, now: float, limit: int, which: str = "") -> None:
        """The half-open table is full: drop, and log once per interval for all sources together (a
        spoofed flood has as many sources as datagrams)."""
        self.stats.openings_refused += 1
        self._full_dropped += 1
        if self._full_logged_at is None or now - self._full_logged_at >= LOG_INTERVAL:
            self._log("IKE", 4, "IKE_NEGOTIATION_REFUSED",
                      f"IKE negotiation requests were dropped. (RemoteAddress=any, Reason=the limit of {limit} "
                      f"{which}IKE SAs in negotiation is reached, Count={self._full_dropped})")
            self._full_logged_at, self._full_dropped = now, 0

    def _send(self, packet: bytes, local: Addr, remote: Addr) -> None:
        if self.standby:
            return
        if local[1] == self.natt_port and packet != NAT_KEEPALIVE:
            packet = NON_ESP_MARKER + packet
        self._out.append((packet, local, remote))

    def _service(self, sa: Engine, now: float) -> None:
        """After feeding an engine: ship its datagrams, mirror its events, ship what they caused, re-arm
        its timer. The engine's own messages go first: an IKEv1 Quick Mode's last message must reach the
        peer before the ESP packets that the new SA releases (the peer installs it only then)."""
        for packet, local, remote in sa.datagrams_to_send():
            self._send(packet, local, remote)
        while (event := sa.next_event()) is not None:
            self._on_event(event, now)
        for packet, local, remote in sa.datagrams_to_send():
            self._send(packet, local, remote)
        meta = self._meta.get(sa)
        if sa.finished or meta is None:
            self._forget(sa, now)
            return
        spis = sa.local_spis
        if self._spis.get(sa) != spis:
            for old in self._spis.get(sa, []):
                if self._engines.get(old) is sa:
                    del self._engines[old]
            for spi in spis:
                self._engines[spi] = sa
            self._spis[sa] = list(spis)
        if sa.established and sa in self._half_open:
            if self._half_open.version_of(sa) == 1:
                # An IKEv1 source that authenticated has proven its address (see gateway.admission).
                self._guard.prove(self._half_open.source_of(sa) or sa.peer[0], now)
            self._half_open.discard(sa)
        if isinstance(sa.handle, int) and (entry := self.sad.ike(sa.handle)) is not None:
            if sa.peer[1] != entry.peer_port or sa.peer[0] != str(entry.peer_address):
                self._peer_moved(sa, entry)
            entry.messages_in, entry.messages_out = sa.stats.messages_in, sa.stats.messages_out
        if sa.awaits_outbound:
            for child_spi in sa.children:
                self.dataplane.watch(child_spi)
        when = sa.get_timer()
        if when is not None and when != meta.scheduled:
            meta.scheduled = when
            self._push_timer(when, sa)
        if self.on_change is not None:
            self.on_change(sa, now)

    def _peer_moved(self, sa: Engine, entry: IkeSaEntry) -> None:
        """The engine took the peer's new address or port from an authenticated message (a NAT mapping
        changed, RFC 7296 §2.23; the engine has already moved): the SA database and the ESP of the IKE SA's
        Child SAs follow. Compared with the database, not with the engine before the message: the engine
        moves while it reads the message, before the controller services it."""
        self.sad.move_peer(entry.conn_id, sa.peer[0], sa.peer[1])
        remote = sa.peer if sa.peer[1] == self.natt_port or sa.udp_encap else (sa.peer[0], self.natt_port)
        for child in self.sad.children(entry.conn_id):
            if child.spi_in:
                self.dataplane.move_sa(child.spi_in, remote)

    def _note_traffic(self, sa: Engine) -> None:
        """Tell the engine when ESP of its Child SAs last came in and went out (DPD's view of traffic).
        Read from the dataplane's per-SA times at the engine's timer, never pushed per packet."""
        for spi in sa.children:
            last_in, last_out = self.dataplane.traffic(spi)
            if last_in is not None:
                sa.note_inbound(last_in)
            if last_out is not None:
                sa.note_outbound(last_out)

    def _forget(self, sa: Engine, now: float) -> None:
        if self.on_gone is not None and sa in self._meta:
            self.on_gone(sa, now)
        for spi in self._spis.pop(sa, []):
            if self._engines.get(spi) is sa:
                del self._engines[spi]
        self._half_open.discard(sa)
        meta = self._meta.pop(sa, None)
        if meta is not None and meta.conn is not None and self._active.get(meta.conn.key) is sa:
            del self._active[meta.conn.key]
        if isinstance(sa.handle, int) and self.sad.get(sa.handle) is not None:
            self.sad.remove_tree(sa.handle)
        if sa in self._deleting:
            self._deleting.discard(sa)
            self._drain_deletes(now)

    def _schedule(self, when: float, job: Callable[[float], object]) -> None:
        heapq.heappush(self._heap, (when, next(self._counter), None, job))

    def _push_timer(self, when: float, sa: Engine) -> None:
        heapq.heappush(self._heap, (when, next(self._counter), sa, None))
        if len(self._heap) > 4 * len(self._meta) + 4096:
            # Entries of engines that are gone or re-armed wait for their time to be skipped; under a flood
            # of short-lived engines that would keep them all alive. Sweep now and then (amortised O(1)).
            self._heap = [item for item in self._heap if item[2] is None or self._timer_live(item[0], item[2])]
            heapq.heapify(self._heap)

    def _timer_live(self, when: float, sa: Engine) -> bool:
        meta = self._meta.get(sa)
        return meta is not None and meta.scheduled == when and not sa.finished

    # ------------------------------------------------------------------ internals: events

    def _on_event(self, event: IkeEvent, now: float) -> None:
        if isinstance(event, IkeSaEstablished | IkeSaRekeyed) and self.keylog is not None:
            self._keylog_ike(event.sa)
        if isinstance(event, IkeSaEstablished):
            self._on_ike_up(event.sa, now)
        elif isinstance(event, ChildSaEstablished):
            self._on_child_up(event.sa, event.child, now)
        elif isinstance(event, ChildSaDeleted):
            self._on_child_down(event.sa, event.child, event.reason, now)
        elif isinstance(event, IkeSaDeleted):
            self._on_ike_down(event.sa, event.reason, now)
        elif isinstance(event, IkeSaRekeyed):
            if isinstance(event.sa.handle, int) and self.sad.get(event.sa.handle) is not None:
                self.sad.set_ike_spis(event.sa.handle, event.sa.spi_i, event.sa.spi_r)
        elif isinstance(event, InitialContact):
            self._on_initial_contact(event.sa, now)
        elif isinstance(event, NegotiationFailed):
            if event.notify == NotifyType.AUTHENTICATION_FAILED and not event.sa.initiator:
                self._auth_failed(event.sa.peer[0], now)
            reason = _failure_label(V1NotifyType if event.sa.version == 1 else NotifyType, event.notify)
            self.stats.negotiations_failed[reason] = self.stats.negotiations_failed.get(reason, 0) + 1
            self._log("IKE", 4, "NEGOTIATION_FAILED",
                      f"IKE negotiation failed. (RemoteAddress={event.sa.peer[0]}, Reason={event.detail})")
            if event.auth_failure:
                self._auth_refused(event.sa, event.auth_failure, event.detail, now)

    def _auth_refused(self, sa: Engine, kind: str, reason: str, now: float) -> None:
        """An authentication failed with a known cause: count it by kind and keep its reason in the
        offline history (a negotiation that never came up records nothing else there)."""
        self.stats.auth_failure_reasons[kind] = self.stats.auth_failure_reasons.get(kind, 0) + 1
        entry = self.sad.get(sa.handle) if isinstance(sa.handle, int) else None
        if entry is not None:
            self.sad.offline.record_sa(entry, reason, now)
        else:  # a responder's SA enters the SA database only once it is up
            self.sad.offline.record(peer_address=sa.peer[0], peer_port=sa.peer[1], reason=reason,
                                    version=sa.version, time=now, placement=self.placements[0])

    def _auth_failed(self, source: str, now: float) -> None:
        """A peer failed to authenticate to us: count it against its address; over the limit, refuse it."""
        self.stats.auth_failures += 1
        limit = self.config.ike_admission.authentication_failures
        if self._guard.auth_failed(source, now, limit):
            self.stats.sources_blocked += 1
            self._log("IKE", 4, "IKE_PEER_BLOCKED",
                      f"A peer was blocked after repeated authentication failures. (RemoteAddress={source}, "
                      f"Failures={limit + 1}, BlockTime={int(BLOCK_TIME)}s)")

    def _keylog_ike(self, sa: Engine) -> None:
        """Hand the IKE SA's current keys to the key log (only while the operator enabled one)."""
        assert self.keylog is not None
        if isinstance(sa, IsakmpSa):
            v1 = sa.phase1_key()
            if v1 is not None:
                self.keylog(Ikev1Keys(*v1))
            return
        v2 = sa.current_keys() if isinstance(sa, IkeSa) else None
        if v2 is not None:
            spi_i, spi_r, keys, chosen = v2
            self.keylog(Ikev2Keys(spi_i, spi_r, keys.sk_ei, keys.sk_er, keys.sk_ai, keys.sk_ar, chosen.encr_alg(),
                                  integ_alg(chosen.integ) if chosen.integ is not None else None))

    def _keylog_child(self, sa: Engine, child: ChildSa) -> None:
        """Both ESP SAs of a new Child SA for the key log."""
        assert self.keylog is not None
        local, peer = sa.local[0], sa.peer[0]
        self.keylog(EspKeys(peer, local, child.spi_in, child.encr, child.encr_key_in, child.integ,
                            child.integ_key_in))
        self.keylog(EspKeys(local, peer, child.spi_out, child.encr, child.encr_key_out, child.integ,
                            child.integ_key_out))

    def _algorithms(self, sa: Engine) -> dict[str, str]:
        chosen = sa.chosen
        if chosen is None:
            return {}
        return _algorithm_names(chosen)

    def _load_done(self, sa: Engine, now: float) -> None:
        if sa in self._loading:
            self._loading.discard(sa)
            if sa is self._load_gate:
                self._load_gate = None
            self._load_inflight -= 1
            self._load_more(now)

    def _on_ike_up(self, sa: Engine, now: float) -> None:
        self.stats.negotiations_succeeded += 1
        meta = self._meta[sa]
        version = sa.version
        peer_type, peer_id = self._peer_identity(sa)
        algs = self._algorithms(sa)
        if isinstance(sa.handle, int) and (entry := self.sad.ike(sa.handle)) is not None:
            self.sad.set_ike_spis(entry.conn_id, sa.spi_i, sa.spi_r)
            self.sad.set_flags(entry.conn_id, add=_READY, remove=SaFlag.NEG)
            if (sa.peer[0], sa.peer[1]) != (str(entry.peer_address), entry.peer_port):
                self.sad.move_peer(entry.conn_id, sa.peer[0], sa.peer[1])
            entry.local_port = sa.local[1]
        else:
            conn = self._match_connection(sa)
            if conn is not None:
                meta.conn, meta.kind = conn, conn.kind
            peer_addr = _ip(sa.peer[0])
            placement = placement_for(peer_addr, sa.peer[1], sa.spi_i, self.placements)
            older = self._replaced_v1(sa, now)
            if older is not None and isinstance(older.handle, int) and (old := self.sad.ike(older.handle)):
                placement = old.placement  # a phase-1 rekey stays where its IPsec SAs live
            entry = IkeSaEntry(version=version, role=Role.RESPONDER, flags=_READY, placement=placement,
                               local_address=_ip(sa.local[0]), local_port=sa.local[1],
                               peer_address=peer_addr, peer_port=sa.peer[1], spi_i=sa.spi_i, spi_r=sa.spi_r,
                               created=now, handle=sa)
            if conn is not None:
                entry.policy_name, entry.policy_seq, entry.interface = conn.policy.name, conn.policy.seq, conn.interface
            elif sa.config is not None and sa.config.name in self._template_by_peer:
                policy, template, interface = self._template_by_peer[sa.config.name]
                entry.policy_name, entry.policy_seq, entry.interface = policy.name, policy.seq, interface
                entry.template_name = template
            self.sad.add_ike(entry)
            sa.handle = entry.conn_id
            if isinstance(sa, IsakmpSa):
                if sa.config is not None and sa.config.name in self.config.ike_peers:
                    # now that the peer is known: its own dependency and DPD settings
                    sa.options = translate.v1_options(self.config, self.config.ike_peers[sa.config.name])
                if older is not None:
                    self._adopt(sa, older, entry)
        if isinstance(sa, IsakmpSa):
            entry.exchange_mode = sa.options.mode.value
        self.sad.set_peer_identity(entry.conn_id, peer_type, peer_id)
        entry.encryption, entry.integrity = algs.get("encryption", ""), algs.get("integrity", "")
        entry.prf, entry.dh = algs.get("prf", ""), algs.get("dh", "")
        verdict = sa.peer_auth
        entry.auth_method = verdict.text if verdict is not None else "PRE_SHARED"
        entry.peer_certificate = verdict.subject if verdict is not None else ""
        entry.created = now
        if sa.config is not None:
            entry.lifetime_hard = int(sa.config.lifetime)
            entry.lifetime_soft = int(sa.rekey_at - now) if sa.rekey_at else None
        meta.up_at = now
        if meta.conn is not None and sa not in self._loading:
            self._claim(sa, meta, now)
        self._log("IKE", 6, "IKE_SA_ESTABLISHED",
                  "IKE SA established. (ConnID=%s, RemoteAddress=%s, Version=v%s)", entry.conn_id, sa.peer[0], version)

    def _replaced_v1(self, sa: Engine, now: float) -> IsakmpSa | None:
        """The established IKEv1 SA this new one (from the peer's Main Mode) replaces at once, if any: the
        only other live one from the same address, port and identity, when it is due for renewal
        (:meth:`IsakmpSa.replaceable`). O(1) however many ISAKMP SAs the identity holds. Side-by-side SAs of
        one identity (a load generator, a crowd behind one NAT address) are not rekeys of each other and
        keep their own IPsec SAs; which of them a new one renews shows only when the peer deletes the old
        one, and :meth:`_inherit` moves its IPsec SAs then.
        """
        if not isinstance(sa, IsakmpSa):
            return None
        live = self._v1_live.setdefault(self._v1_key(sa), {})
        older = next(iter(live), None) if len(live) == 1 else None
        live[sa] = None
        sa.heir = self._inherit
        if older is None or older is sa or older.peer_id != sa.peer_id or not older.replaceable(now):
            return None
        del live[older]
        return older

    def _inherit(self, sa: IsakmpSa) -> None:
        """The peer deletes ISAKMP SA ``sa`` that still holds IPsec SAs, while a newer one from the same
        address, port and identity is up: the peer re-authenticated make-before-break (strongSwan's IKEv1
        reauth keeps the IPsec SAs), so the newest ISAKMP SA takes them, and a ``phase1-phase2 sa dependent``
        setting does not delete what the peer kept. A peer that wants its IPsec SAs gone deletes them first.
        """
        live = self._v1_live.get(self._v1_key(sa))
        newest = next(reversed(live)) if live else None
        if newest is None or newest is sa or not newest.established or not isinstance(newest.handle, int):
            return
        if (entry := self.sad.ike(newest.handle)) is not None:
            live.pop(sa, None)  # type: ignore[union-attr]
            self._adopt(newest, sa, entry)

    def _v1_key(self, sa: IsakmpSa) -> tuple[str, int, str, str]:
        return (sa.peer[0], sa.peer[1], *self._peer_identity(sa))

    def _adopt(self, sa: IsakmpSa, older: IsakmpSa, entry: IkeSaEntry) -> None:
        """IKEv1 phase-1 rekey by the peer: the IPsec SAs move under the new ISAKMP SA."""
        for child in sa.adopt_children(older):
            if isinstance(child.handle, int) and (child_entry := self.sad.ipsec(child.handle)) is not None:
                self.sad.reparent(child_entry.conn_id, entry.conn_id)
                child_entry.handle = (sa, child)
        old_meta = self._meta.get(older)
        if old_meta is not None:
            old_meta.replaced = True
            if entry.policy_name is None and isinstance(older.handle, int) and (old := self.sad.ike(older.handle)):
                entry.policy_name, entry.policy_seq, entry.interface = old.policy_name, old.policy_seq, old.interface

    def _peer_identity(self, sa: Engine) -> tuple[str, str]:
        if sa.peer_id is None:
            return "IP", sa.peer[0]
        id_type, data = sa.peer_id
        if id_type in (1, 5):
            try:
                return "IP", str(ipaddress.ip_address(data))
            except ValueError:
                return "IP", data.hex()
        return ID_TEXT.get(id_type, str(id_type)), data.decode("utf-8", "replace")

    def _match_connection(self, sa: Engine) -> Connection | None:
        """The site-to-site policy a responder SA belongs to (its peer is configured with this address)."""
        name = sa.config.name if sa.config else None
        for conn in self._conns.values():
            if conn.peer.name == name and _addr(conn.remote) == sa.peer[0]:
                return conn
        return None

    def _on_child_up(self, sa: Engine, child: ChildSa, now: float) -> None:
        self._load_done(sa, now)
        if self.keylog is not None:
            self._keylog_child(sa, child)
        parent = self.sad.ike(sa.handle) if isinstance(sa.handle, int) else None
        if parent is None:
            return
        settings, rule = child.config.handle if isinstance(child.config.handle, tuple) else (None, None)
        policy_name, policy_seq, interface = child.config.name, child.config.seq, parent.interface
        if child.config.template is not None and child.config.template in self._template_policy:
            # A template's SAs are shown under the ISAKMP policy that references the template.
            tpl_policy, interface = self._template_policy[child.config.template]
            policy_name, policy_seq = tpl_policy.name, tpl_policy.seq
        entry = IpsecSaEntry.from_parent(
            parent,
            flags=_READY,
            role=Role.INITIATOR if child.initiator else Role.RESPONDER,
            spi_in=child.spi_in,
            spi_out=child.spi_out,
            encryption=child.encr.name,
            integrity=child.integ.name if child.integ else "",
            pfs=str(child.dh) if child.dh else "",
            encapsulation_mode=child.mode.value,
            udp_encap=child.udp_encap or not self.raw_esp,  # as carried (see _dataplane_actions)
            local_selectors=tuple(_selector(t) for t in child.ts_local),
            remote_selectors=tuple(_selector(t) for t in child.ts_remote),
            lifetime_hard=int(child.config.lifetime),
            lifetime_soft=int(child.rekey_at - now) if child.rekey_at else None,
            lifetime_hard_kb=child.config.lifetime_kb,
            acl_rule=rule % V6_RULE_BASE if rule is not None else None,
            acl_number=getattr(settings, "acl6" if rule is not None and rule >= V6_RULE_BASE else "acl", None),
            policy_name=policy_name,
            policy_seq=policy_seq,
            interface=interface,
            template_name=child.config.template,
            created=now,
            handle=(sa, child),
        )
        self.sad.add_ipsec(entry)
        child.handle = entry.conn_id
        policy_key = (policy_name, policy_seq) if policy_seq is not None else None
        remote = sa.peer if sa.peer[1] == self.natt_port or sa.udp_encap else (sa.peer[0], self.natt_port)
        self._dataplane_actions(self.dataplane.install_sa(child, remote, local=sa.local[0], policy=policy_key,
                                                          now=now), now)
        self._log("IPSEC-VPN", 4, "IPSECTUNNELSTART",
                  "The IPSec tunnel is established. (PolicyName=%s, SeqNum=%s, RuleNum=%s, SrcIP=%s, DstIP=%s, "
                  "InboundSPI=%s)", policy_name, policy_seq, rule, sa.local[0], sa.peer[0], child.spi_in)
        if isinstance(sa, IsakmpSa):
            self._retire_orphans(sa, child, now)

    def _retire_orphans(self, sa: IsakmpSa, child: ChildSa, now: float) -> None:
        """A new IKEv1 pair replaces orphans (IPsec SAs whose ISAKMP SA is gone) of the same peer and flow."""
        for entry in list(self.sad.by_peer(sa.peer[0])):
            handle = entry.handle
            if not (isinstance(entry, IpsecSaEntry) and entry.parent is None and isinstance(handle, tuple)):
                continue
            owner, orphan = handle
            if isinstance(owner, IsakmpSa) and owner is not sa and isinstance(orphan, ChildSa) \
                    and orphan.config.name == child.config.name and orphan.config.seq == child.config.seq \
                    and orphan.ts_local == child.ts_local and orphan.ts_remote == child.ts_remote:
                sa.supersede(owner, orphan, now)
                self._service(owner, now)

    def _record_down(self, entry: IkeSaEntry | IpsecSaEntry, reason: DeleteReason, now: float) -> None:
        self.sad.offline.record_sa(entry, reason.value, now)
        if isinstance(entry, IpsecSaEntry):
            placement = entry.placement
            self._log("IPSEC-VPN", 5, "IPSEC_TUNNEL_TEARED_DOWN",
                      "An IPSec tunnel is teared down. (PolicyName=%s, IfIndex=%s, SeqNum=%s, RuleNum=%s, SrcIP=%s, "
                      "DstIP=%s, InboundSPI=%s, Slot=%s, CpuID=%s, OfflineReason=%s, State=Normal)",
                      entry.policy_name, self._if_index(entry.interface), entry.policy_seq, entry.acl_rule,
                      entry.local_address, entry.peer_address, entry.spi_in, placement.slot, placement.cpu,
                      reason.value)

    def _if_index(self, name: str) -> int:
        """The configuration's IfIndex of ``name``, kept per configuration (a delete-all logs it per SA)."""
        if self._if_indexes[0] is not self.config:
            self._if_indexes = (self.config, {})
        found = self._if_indexes[1].get(name)
        if found is None:
            found = self._if_indexes[1][name] = self.config.if_index(name)
        return found

    def _on_child_down(self, sa: Engine, child: ChildSa, reason: DeleteReason, now: float) -> None:
        self.dataplane.delete_sa(child.spi_in)
        entry = self.sad.ipsec(child.handle) if isinstance(child.handle, int) else None
        if entry is not None:
            self.sad.remove(entry.conn_id)
            if reason is not DeleteReason.REKEYED:
                self._record_down(entry, reason, now)
        if reason is DeleteReason.PEER_REQUEST:
            self.stats.deletes_received += 1
        elif reason is DeleteReason.MANUAL:
            self.stats.deletes_sent += 1
        if reason in (DeleteReason.REKEYED, DeleteReason.SHUTDOWN) or not sa.established:
            return
        meta = self._meta.get(sa)
        if meta is None:
            return
        kind = self._kind_of(meta, child.config)
        action = after_delete(kind, 2)
        if action is Action.RENEGOTIATE_CHILD:
            _settings, rule = child.config.handle if isinstance(child.config.handle, tuple) else (None, None)
            flow = next((f for f in meta.conn.flows if f.rule == rule), None) if meta.conn else None
            if meta.conn is not None and flow is not None:
                sa.create_child(translate.child_config(self.config, meta.conn.policy, flow), now)
        elif action is Action.ARM_TRAP and meta.conn is not None:
            self._arm(meta.conn.key)

    def _kind_of(self, meta: _Meta, child: ChildSaConfig | None) -> PolicyKind:
        """How the policy of ``meta``'s SA comes back after a deletion: as configured now (``sa
        trigger-mode`` may have changed since the SA was negotiated), not as it was then."""
        if child is not None and child.template is not None:
            return PolicyKind.TEMPLATE
        current = self._conns.get(meta.conn.key) if meta.conn is not None else None
        return current.kind if current is not None else meta.kind

    def _on_ike_down(self, sa: Engine, reason: DeleteReason, now: float) -> None:
        meta = self._meta.get(sa)
        if meta is not None:
            if meta.reported:
                return
            meta.reported = True
        self._load_done(sa, now)
        if isinstance(sa, IsakmpSa) and (live := self._v1_live.get(key := self._v1_key(sa))) is not None:
            live.pop(sa, None)
            if not live:
                del self._v1_live[key]
        orphans = isinstance(sa, IsakmpSa) and sa.orphans_survive and bool(sa.children)
        if not orphans:
            for child in list(sa.children.values()):
                self.dataplane.delete_sa(child.spi_in)
        if isinstance(sa.handle, int):
            if orphans:
                # IKEv1 without phase1-phase2 dependency: the IPsec SAs stay in service, parentless.
                self.sad.detach_children(sa.handle)
            for entry in self.sad.remove_tree(sa.handle):
                if isinstance(entry, IpsecSaEntry) or sa.established or reason is not DeleteReason.NEGOTIATION_FAILED:
                    self._record_down(entry, reason, now)
            sa.handle = None
        if reason is DeleteReason.PEER_REQUEST:
            self.stats.deletes_received += 1
        elif reason in (DeleteReason.MANUAL, DeleteReason.SHUTDOWN):
            self.stats.deletes_sent += 1
        meta = self._meta.get(sa)
        if meta is None or meta.conn is None:
            return
        if self._active.get(meta.conn.key) is sa:
            del self._active[meta.conn.key]
        if reason in (DeleteReason.SHUTDOWN, DeleteReason.INITIAL_CONTACT) or meta.replaced \
                or meta.conn.key in self._active:
            # Nothing to bring back: another IKE SA serves the policy (a superseded one's end included).
            # Orphan IPsec SAs keep forwarding until a new pair replaces them: see _retire_orphans.
            return
        conn = self._conns.get(meta.conn.key)
        if conn is None:
            return
        action = after_delete(conn.kind, 1)  # the trigger mode configured now
        if action is Action.REINITIATE:
            if reason in (DeleteReason.MANUAL, DeleteReason.DPD_TIMEOUT):
                # At once after a dead peer too (strongSwan's dpd_action=restart): detection already took
                # idle + retries x interval, and a failed attempt falls back to the delayed retry below.
                self._bring_up(conn, now)
            else:
                # After a failure or the peer's word, come back a little later rather than in a hot loop.
                self._schedule(now + RETRY_AFTER_FAILURE * (1 if reason is not DeleteReason.PEER_REQUEST else 0.2),
                               functools.partial(self._reinitiate, conn))
        elif action is Action.ARM_TRAP:
            self._arm(conn.key)
            # Orphans are in use (traffic made them) and may be gone at the peer, where they would swallow
            # the traffic that should bring the tunnel back: renegotiate their flows now.
            rules = {c.config.handle[1] for c in sa.children.values() if isinstance(c.config.handle, tuple)}
            for rule in sorted(rules) if orphans else ():
                self._schedule(now + RETRY_AFTER_FAILURE * 0.2, functools.partial(self.acquire, policy=conn.key,
                                                                                   rule=rule))

    def _reinitiate(self, conn: Connection, now: float) -> None:
        self._rechecks.discard(conn.key)
        current = self._conns.get(conn.key)
        if current is not None:
            self._bring_up(current, now, defer=False)  # unless the peer came back to us first

    def _claim(self, sa: Engine, meta: _Meta, now: float) -> None:
        """``sa`` is established for a site-to-site policy: decide which IKE SA serves the policy.

        One IKE SA per policy and peer, whoever initiated it (strongSwan's ``unique``):

        * none serves it yet, or the current one is still negotiating: ``sa`` does (the other is judged
          when it comes up);
        * the current one was already up when ``sa`` began: ``sa`` is the peer's re-authentication or
          re-establishment (make-before-break) and replaces it; the peer deletes the old one itself,
          and if it has not after :data:`SUPERSEDED_GRACE`, we do;
        * both were negotiated at the same time (both sides initiated): both ends must keep the same
          one, so the one with the lower SPI pair loses (the nonce rule of RFC 7296 §2.8.2, on values
          both ends know), and its initiator deletes it.

        The loser is marked ``superseded``; its end brings nothing back while the winner serves."""
        assert meta.conn is not None
        key = meta.conn.key
        current = self._active.get(key)
        cur_meta = self._meta.get(current) if current is not None else None
        if current is None or current is sa or cur_meta is None or current.finished or not current.established:
            self._active[key] = sa
            return
        newer = cur_meta.up_at is not None and meta.created > cur_meta.up_at
        if newer or _collision_rank(sa) > _collision_rank(current):
            winner, loser = sa, current
        else:
            winner, loser = current, sa
        self._active[key] = winner
        self._meta[loser].superseded = True
        if not newer and loser.initiator:
            self._delete_ike(loser, now, DeleteReason.PHASE1_REPLACED)
        else:
            self._schedule(now + SUPERSEDED_GRACE, functools.partial(self._retire, loser))

    def _retire(self, sa: Engine, now: float) -> None:
        """A superseded IKE SA the peer has not deleted in its grace time: delete it ourselves."""
        meta = self._meta.get(sa)
        if meta is not None and meta.superseded and not sa.finished:
            self._delete_ike(sa, now, DeleteReason.PHASE1_REPLACED)

    def drop_identity(self, now: float, address: str, id_type: str, id_text: str,
                      heard: float | None = None) -> None:
        """Another placement worker heard INITIAL_CONTACT from this peer identity at ``heard`` (the same
        monotonic clock in every process): drop what we hold of it made before then too (the peer lost it
        all, whichever worker held it: a dial-up peer's SAs spread over workers; those made since, while the
        news travelled, are the peer's new ones)."""
        self._drop_identity(now, _ip(address), id_type, id_text, None, heard)

    def _on_initial_contact(self, sa: Engine, now: float) -> None:
        """Drop older IKE SAs with the same peer identity: the peer lost them (RFC 7296 §2.4; RFC 2407
        §4.6.3.3), and IKEv1 orphan IPsec SAs of that peer with them; on every worker."""
        if self.on_initial_contact is not None:
            self.on_initial_contact(sa.peer[0], *self._peer_identity(sa))
        self._drop_identity(now, sa.peer[0], *self._peer_identity(sa), sa)

    def _drop_identity(self, now: float, address: ipaddress.IPv4Address | ipaddress.IPv6Address | str,
                       id_type: str, id_text: str, keep: Engine | None, heard: float | None = None) -> None:
        """Delete the established IKE SAs and the IKEv1 orphan IPsec SAs of this peer identity, but ``keep``
        (the SA that brought INITIAL_CONTACT, whose exact identity the others must share; None when it was
        heard by another worker, which already compared); only SAs made by ``heard``, when given."""
        for entry in self.sad.by_identity(address, id_type, id_text):
            other = entry.handle
            if heard is not None and entry.created > heard:
                continue
            if isinstance(entry, IpsecSaEntry) and entry.parent is None and isinstance(other, tuple) \
                    and isinstance(other[0], IsakmpSa) and other[0].orphans_survive \
                    and (keep is None or other[0].peer_id == keep.peer_id):
                other[0].delete(now, DeleteReason.INITIAL_CONTACT)
                self._service(other[0], now)
            elif isinstance(entry, IkeSaEntry) and isinstance(other, IkeSa | IsakmpSa) and other is not keep \
                    and (keep is None or other.peer_id == keep.peer_id) and other.established:
                # The peer has no state for it any more; its Delete simply goes unanswered.
                other.delete(now, DeleteReason.INITIAL_CONTACT)
                self._service(other, now)


@functools.lru_cache(maxsize=256)
def _algorithm_names(chosen: Chosen) -> dict[str, str]:
    """Display names of a negotiated suite (few distinct suites exist, so they are computed once)."""
    return {
        "encryption": chosen.encr_alg().name,
        "integrity": integ_alg(chosen.integ).name if chosen.integ is not None else "",
        "prf": prf_alg(chosen.prf).name if chosen.prf is not None else "",
        "dh": dh_group(chosen.dh).name if chosen.dh is not None else "",
    }


def _collision_rank(sa: Engine) -> bytes:
    """What both ends know of an IKE SA and compare alike: its lower SPI (random, so no side is favoured)."""
    return min(sa.spi_i, sa.spi_r)


def _failure_label(names: type[enum.IntEnum], notify: int) -> str:
    """The statistics key of a failure: a known notify's name in its version's registry, else one bucket
    (peers choose the number, and a key per number would let them grow the table and the metrics)."""
    if not notify:
        return "timeout"
    try:
        return names(notify).name
    except ValueError:
        return "other"


@functools.lru_cache(maxsize=4096)
def _selector(ts: TrafficSelector) -> Selector:
    """The SA database's form of a selector. Both are immutable and SAs of one policy repeat the same
    few selectors, so they share one object each (no address objects built per SA)."""
    return Selector(ts.start_addr, ts.end_addr, ts.ip_protocol, ts.start_port, ts.end_port)


class _Responder:
    """The responder policy the engines consult, answered from the gateway's configuration."""

    def __init__(self, gw: Gateway, version: int = 2) -> None:
        self._gw = gw
        self._version = version
        self._config: Config | None = None
        self._cache: OrderedDict[tuple[object, ...], object] = OrderedDict()

    def _cached(self, key: tuple[object, ...], make: Callable[[], _T]) -> _T:
        """Answers depend only on the configuration: keep them until it changes. Keys carry the peer's
        address (and identity), which anyone can vary, so the least recently used go beyond a bound."""
        if self._config is not self._gw.config:
            self._config = self._gw.config
            self._cache.clear()
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]  # type: ignore[return-value]
        value = self._cache[key] = make()
        if len(self._cache) > RESPONDER_CACHE:
            self._cache.popitem(last=False)
        return value

    def _peers_for(self, ip: str) -> list[IkePeer]:
        return self._cached(("peers", ip), lambda: self._find_peers(ip))

    def _find_peers(self, ip: str) -> list[IkePeer]:
        cfg = self._gw.config
        addr = ipaddress.ip_address(ip)
        explicit = [p for p in cfg.ike_peers.values() if addr in p.remote_addresses and self._version in p.versions]
        template_peers = {t.ike_peer for _, t, _ in translate.templates(cfg) if t.ike_peer}
        open_peers = [cfg.ike_peers[n] for n in sorted(template_peers)
                      if n in cfg.ike_peers and not cfg.ike_peers[n].remote_addresses
                      and self._version in cfg.ike_peers[n].versions]
        return explicit + open_peers

    def aggressive_allowed(self, ip: str) -> bool:
        """Whether an IKEv1 peer at ``ip`` may use Aggressive Mode: some ike peer matching it says so."""
        return self._cached(("aggressive", ip), lambda: any(
            p.exchange_mode is ExchangeMode.AGGRESSIVE for p in self._peers_for(ip)))

    def ike_proposals(self, peer: Addr) -> list[IkeProposalSpec]:
        return self._cached(("proposals", peer[0]), lambda: self._find_proposals(peer))

    def _find_proposals(self, peer: Addr) -> list[IkeProposalSpec]:
        specs: list[IkeProposalSpec] = []
        for p in self._peers_for(peer[0]):
            for spec in translate.ike_proposal_specs(self._gw.config, p, self._version):
                if spec not in specs:
                    specs.append(spec)
        return specs

    def authenticate(self, peer: Addr, id_type: int, id_data: bytes) -> list[IkeSaConfig]:
        return self._cached(("auth", peer[0], id_type, id_data), lambda: self._find_auth(peer, id_type, id_data))

    def _find_auth(self, peer: Addr, id_type: int, id_data: bytes) -> list[IkeSaConfig]:
        """PSK peers whose ``remote-id`` is this ID (or who have none), and certificate peers, whose
        certificate check decides (the ID must be bound to the certificate, ``remote-id`` match it)."""
        out: list[IkeSaConfig] = []
        for p in self._peers_for(peer[0]):
            # One IkeSaConfig per ike peer and address family, shared by its PSK SAs (engines only read it): a
            # template peer meets a new identity with nearly every SA, and a copy each was 1 kB per SA.
            family = 6 if ":" in peer[0] else 4
            cfg = self._cached(("ike_config", p.name, family), functools.partial(self._peer_config, p, peer))
            if cfg.auth is None:
                if p.pre_shared_key is None:
                    continue
                if cfg.remote_id is not None and cfg.remote_id != (id_type, id_data):
                    continue
            else:
                cfg = self._peer_config(p, peer)  # certificate peers: their own, as before
            out.append(cfg)
        return out

    def _peer_config(self, p: IkePeer, peer: Addr) -> IkeSaConfig:
        gw = self._gw
        cfg = translate.ike_config(gw.config, p, None, ike_port=gw.ike_port, natt_port=gw.natt_port,
                                   retransmit_tries=gw.retransmit_tries, version=self._version)
        cfg.local_id = translate.local_identity(gw.config, p, self._local_for(peer)) or cfg.local_id
        return cfg

    def fragmentation(self, peer: Addr) -> FragmentationConfig | None:
        """The first peer at this address that fragments (certificate peers do by default)."""
        return self._cached(("fragmentation", peer[0]), lambda: next(
            (f for p in self._peers_for(peer[0]) if (f := translate.fragmentation(self._gw.config, p)) is not None),
            None))

    def announce(self, peer: Addr) -> Authenticator | None:
        return self._cached(("announce", peer[0]), lambda: self._find_announce(peer))

    def _find_announce(self, peer: Addr) -> Authenticator | None:
        """The first certificate peer's authenticator (the CAs, hence the CERTREQ, are the device's)."""
        return next((a for p in self._peers_for(peer[0]) if (a := translate.authenticator(self._gw.config, p))),
                    None)

    def _local_for(self, peer: Addr) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        addrs = self._gw.config.local_addresses()
        version = ipaddress.ip_address(peer[0]).version
        return next((a for a in addrs if a.version == version), None)

    def select_child(self, sa: Engine, tsi: list[TrafficSelector], tsr: list[TrafficSelector]) -> ChildSaConfig | None:
        gw = self._gw
        cfg = gw.config
        name = sa.config.name if sa.config else None
        # Site-to-site policies naming this peer first, then templates.
        for conn in gw._conns.values():
            if conn.peer.name != name:
                continue
            flow = _pick_flow(conn.flows, tsi, tsr)
            if flow is not None:
                return translate.child_config(cfg, conn.policy, flow)
        for tpl, flows in self._cached(("templates",), lambda: self._template_flows(cfg)):
            if tpl.ike_peer != name:
                continue
            if tpl.acl is None and tpl.acl6 is None:
                return translate.child_config(cfg, tpl, None, proposed=(list(tsr), list(tsi)))
            flow = _pick_flow(flows, tsi, tsr)
            if flow is not None:
                return self._cached(("child", tpl.name, tpl.seq, flow.rule),
                                    functools.partial(translate.child_config, cfg, tpl, flow))
        return None

    @staticmethod
    def _template_flows(cfg: Config) -> list[tuple[IpsecPolicyTemplate, list[Flow]]]:
        return [(tpl, translate.policy_flows(cfg, tpl)) for _policy, tpl, _itf in translate.templates(cfg)]


@dataclass(slots=True)
class _SnapshotResolver:
    """The importing gateway's names for a snapshot (``ike/core/snapshot.py``'s ``Resolver``)."""

    gw: Gateway
    policy: ResponderPolicy
    rng: Callable[[int], bytes] = os.urandom
    spi_allocator: Callable[[], int] | None = None

    def __post_init__(self) -> None:
        self.rng = self.gw._rng
        self.spi_allocator = self.gw._spi_alloc

    def ike_config(self, name: str, local: Addr, version: int) -> IkeSaConfig | None:
        return self.gw.ike_config(name, local, version)

    def child_config(self, sa: Engine, ts_local: list[TrafficSelector],
                     ts_remote: list[TrafficSelector]) -> ChildSaConfig | None:
        return self.gw.child_config(sa, ts_local, ts_remote)


def _pick_flow(flows: list[Flow], tsi: list[TrafficSelector], tsr: list[TrafficSelector]) -> Flow | None:
    """The first rule whose remote side meets the initiator's selectors and local side the responder's."""
    for flow in flows:
        if tsmod.narrow(tsi, [flow.remote]) and tsmod.narrow(tsr, [flow.local]):
            return flow
    return None


__all__ = ["Gateway", "GatewayStats", "struct"]

"""The Device seam: everything the management plane (CLI, control socket, SSH, metrics, the daemon) does
to the gateway, as one interface that carries plain data only.

Why a seam: the management plane used to reach into some 25 attributes of one ``Gateway`` object, and
``reset ike sa`` existed twice. Here it asks a :class:`Device`, and what crosses is data — a
:class:`Selection` in, SA database rows, counts, :class:`Statistics`, :class:`PingResult`, offline
records and configuration out — never an engine. Today one process implements it
(:class:`ikegate.gateway.local.LocalDevice`, which wraps the controller and its sockets); the workers
issue implements it by fanning out to placement workers, and the helpers at the end of this module
(:func:`merge_rows`, :meth:`Statistics.total`, :func:`merge_offline`) are how such an implementation
combines its workers' answers into exactly what one process would have said.

The module also describes the device *model* (which USG this gateway plays and where its SAs may live),
because the CLI's grammar depends on it (``slot … cpu …`` exists only on the multi-SPU models).

It imports no engine, controller or I/O module, so that the CLI client and the management code can
import it cheaply and a test can prove the management plane goes through nothing else
(tests/unit/test_layering_mgmt.py).
"""

from __future__ import annotations

import heapq
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any, Protocol

from ikegate.policy.model import Config
from ikegate.sad import DEFAULT_PLACEMENT, IpsecSaEntry, OfflineRecord, Placement, SaEntry

__all__ = [
    "ALL",
    "DEFAULT_MODEL",
    "DEFAULT_SLOT_PLACEMENTS",
    "SLOT_MODELS",
    "Device",
    "DeviceError",
    "DeviceModel",
    "GatewayStats",
    "LogSink",
    "OfflineRecord",
    "PingResult",
    "Selection",
    "Statistics",
    "WorkerInfo",
    "make_device",
    "merge_offline",
    "merge_rows",
    "no_log",
    "open_device",
    "open_local",
    "parse_placements",
]

# ----------------------------------------------------------------------------------------------------------
# The device model
# ----------------------------------------------------------------------------------------------------------

SLOT_MODELS = frozenset({"USG6635E", "USG6655E", "USG6680E", "USG6712E", "USG6716E"})
DEFAULT_MODEL = "USG6000V"
#: Placements a slot model gets when none are configured: two SPUs with two cores each.
DEFAULT_SLOT_PLACEMENTS = (Placement(1, 0), Placement(1, 1), Placement(3, 0), Placement(3, 1))


@dataclass(frozen=True)
class DeviceModel:
    """Which USG this gateway plays, and where (slot, cpu) its SAs may live.

    Only the USG6635E, USG6655E, USG6680E, USG6712E and USG6716E accept ``slot … cpu …`` in ``reset ike
    sa`` and ``display ike sa`` (the seed). Those models get a configured set of placements; every other
    model has the single placement (0, 0) and refuses the parameter.
    """

    model: str = DEFAULT_MODEL
    placements: tuple[Placement, ...] = field(default=(DEFAULT_PLACEMENT,))

    @property
    def has_slots(self) -> bool:
        return self.model in SLOT_MODELS

    def has_placement(self, slot: int, cpu: int) -> bool:
        return Placement(slot, cpu) in self.placements


def parse_placements(text: str) -> tuple[Placement, ...]:
    """``1/0,1/1,3/0`` -> placements; raises ValueError with a readable message."""
    out: list[Placement] = []
    for part in text.split(","):
        slot, sep, cpu = part.strip().partition("/")
        if not sep or not slot.isdigit() or not cpu.isdigit():
            raise ValueError(f"placement {part!r} is not SLOT/CPU")
        out.append(Placement(int(slot), int(cpu)))
    if not out or len(set(out)) != len(out):
        raise ValueError("placements must be distinct and at least one")
    return tuple(sorted(out))


def make_device(model: str | None, placements: str | None) -> DeviceModel:
    """The model named on the command line (``--model``, ``--placements``); ValueError when they clash."""
    model = (model or DEFAULT_MODEL).upper()
    if model in SLOT_MODELS:
        return DeviceModel(model, parse_placements(placements) if placements else DEFAULT_SLOT_PLACEMENTS)
    if placements:
        raise ValueError(f"model {model} has no slots; --placements needs one of {', '.join(sorted(SLOT_MODELS))}")
    return DeviceModel(model)


# ----------------------------------------------------------------------------------------------------------
# What crosses the seam
# ----------------------------------------------------------------------------------------------------------


class DeviceError(Exception):
    """The device cannot do what was asked in its present state (e.g. ``ping`` without live sockets).
    The message is a sentence for the operator, without the final full stop."""


@dataclass(frozen=True, slots=True)
class Selection:
    """Which SAs an operation is about: the parameters of ``display``/``reset ike sa``, ``reset ipsec sa``
    and the control socket's ``sas``/``reset`` requests, as plain data.

    Every field left ``None`` does not restrict. A fan-out implementation routes by it: ``conn_id`` goes
    to the worker owning that residue class, ``placement`` to that worker, anything else to all of them.

    - ``conn_id``: that one entry, whichever phase;
    - ``remote``: the SAs of that peer address (both phases unless ``phase`` says otherwise);
    - ``placement``: the SAs living on that (slot, cpu);
    - ``policy`` (and ``seq``): the SAs negotiated for that IPsec policy (and sequence number);
    - ``spi``: the one IPsec SA using that ESP SPI (ours first, then the peer's; ``remote`` disambiguates);
    - ``phase``: 1 for IKE SAs only, 2 for IPsec SAs only.
    """

    conn_id: int | None = None
    remote: str | None = None
    placement: Placement | None = None
    policy: str | None = None
    seq: int | None = None
    spi: int | None = None
    phase: int | None = None

    def __post_init__(self) -> None:
        if self.phase not in (None, 1, 2):
            raise ValueError(f"phase must be 1 or 2, not {self.phase!r}")
        if self.seq is not None and self.policy is None:
            raise ValueError("a sequence number needs a policy name")

    def as_record(self) -> dict[str, Any]:
        """JSON-ready: the fields that restrict (placement as ``slot``/``cpu``); the control socket's form."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, Placement):
                out["slot"], out["cpu"] = value.slot, value.cpu
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Selection:
        """The inverse of :meth:`as_record`; also takes the control socket's ``conn_id`` spelled as a
        string. Unknown keys are ignored (a request carries its operation name beside them); a wrong value
        raises ValueError."""

        def number(key: str) -> int | None:
            value = record.get(key)
            return None if value is None else int(value)

        slot, cpu = number("slot"), number("cpu")
        if (slot is None) != (cpu is None):
            raise ValueError("slot and cpu go together")
        remote, policy = record.get("remote"), record.get("policy")
        return cls(conn_id=number("conn_id"), remote=None if remote is None else str(remote),
                   placement=None if slot is None or cpu is None else Placement(slot, cpu),
                   policy=None if policy is None else str(policy), seq=number("seq"), spi=number("spi"),
                   phase=number("phase"))


#: Everything.
ALL = Selection()


@dataclass(slots=True)
class GatewayStats:
    """The controller's event counters. Declared here, with the seam, because they cross it as they are:
    the controller counts into one (``Gateway.stats``), and :class:`Statistics` is one plus the SA counts."""

    negotiations_started: int = 0
    negotiations_succeeded: int = 0
    negotiations_failed: dict[str, int] = field(default_factory=dict)  # by reason
    #: authentications that failed (ours of the peer or the peer's of us, either role), by kind
    #: (``ike.core.auth.AuthFailure.kind``: expired, revoked, untrusted, id-mismatch, bad-signature ...)
    auth_failure_reasons: dict[str, int] = field(default_factory=dict)
    deletes_sent: int = 0
    deletes_received: int = 0
    resets: int = 0
    cookies_sent: int = 0
    dropped: int = 0  # IKE datagrams dropped before or by an SA
    esp_dropped: int = 0
    lan_dropped: int = 0
    #: opening messages refused before any state: malformed, or over an admission limit, or from a
    #: source blocked after failed authentications
    openings_malformed: int = 0
    openings_refused: int = 0
    half_open_expired: int = 0
    auth_failures: int = 0
    sources_blocked: int = 0
    #: placement workers only: datagrams the kernel delivered to this worker although their SPI names
    #: another (zero while steering works), and protected-side packets handed to the worker owning them
    misrouted: int = 0
    handed_over: int = 0
    #: of ``handed_over``, the protected-side packets that came straight from another worker (the mesh of
    #: :mod:`ikegate.workers.mesh`, not through the supervisor); and those a worker dropped because the
    #: owner's mesh socket was full (it never blocks on a slow peer)
    handed_direct: int = 0
    handoff_dropped: int = 0
    #: protected-side packets a worker's TUN queue read for a flow another worker holds or owns (each one
    #: handed over; zero while the eBPF steering of :mod:`ikegate.workers.tunsteer` works), and the workers
    #: whose TUN queues that steering serves (each counts 1)
    lan_missteered: int = 0
    tun_steered: int = 0


@dataclass(slots=True)
class Statistics(GatewayStats):
    """The device's counters and SA counts at one moment (``display ike statistics``, the control socket's
    ``stats``, Prometheus): a copy of the controller's counters plus what the SA database and the
    dataplane count. Every field is a sum over placements, so :meth:`total` of the workers' parts is the
    device's — except ``resets``, which counts reset *commands*: a fan-out that runs one command on
    several workers reports how many commands it ran. A snapshot: nothing updates it after it is made."""

    ike_sas: Mapping[int, int] = field(default_factory=dict)  # phase-1 SAs by IKE version
    negotiating: Mapping[int, int] = field(default_factory=dict)  # of those, still negotiating (NEG)
    ipsec_sas: Mapping[int, int] = field(default_factory=dict)  # phase-2 SAs by IKE version
    engines: int = 0  # IKE engines alive (negotiating, up or deleting)
    #: The ESP dataplane's totals: ("packets" | "bytes", "in" | "out") and ("drops", reason).
    esp: Mapping[tuple[str, str], int] = field(default_factory=dict)
    #: processes holding SAs (each worker reports 1, so the total is the device's number of workers)
    workers: int = 1

    @classmethod
    def total(cls, parts: Iterable[Statistics]) -> Statistics:
        """The sum of several parts (one per worker); with one part, that part's values."""
        sums: dict[str, Any] = {}
        for part in parts:
            for f in fields(cls):
                value = getattr(part, f.name)
                if isinstance(value, int):
                    sums[f.name] = sums.get(f.name, 0) + value
                else:
                    acc: dict[Any, int] = sums.setdefault(f.name, {})
                    for key, n in value.items():
                        acc[key] = acc.get(key, 0) + n
        return cls(**sums)


@dataclass(frozen=True, slots=True)
class PingResult:
    """What ``ping`` measured: one round-trip time in milliseconds per echo request, None for a timeout
    (rendered by :mod:`ikegate.cli.render.ping`)."""

    destination: str
    size: int
    rtts: tuple[float | None, ...]

    @property
    def received(self) -> list[float]:
        return [t for t in self.rtts if t is not None]


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One process holding SAs (``workers`` control request): its index, placement, process id (None
    while restarting), how often it was restarted, a digest of its running configuration and how many IKE
    SAs it last reported to the supervisor (what ``offline-info`` records if it dies)."""

    index: int
    placement: Placement
    pid: int | None
    restarts: int
    config_digest: str | None
    reported_sas: int | None = None


class LogSink(Protocol):
    """Where the device writes its log records: the log buffer's arguments (module, severity, brief, text,
    then the text's arguments). With arguments the text is a ``%`` template, formatted only if a sink
    reads it (:class:`ikegate.cli.logbuffer.LogRecord`): a tunnel up or down then costs no formatting on a
    gateway whose log nobody reads. The arguments must be immutable values (str, int, addresses)."""

    def __call__(self, module: str, severity: int, brief: str, text: str, /, *args: object) -> None: ...


def no_log(module: str, severity: int, brief: str, text: str, /, *args: object) -> None:
    """The :class:`LogSink` of a gateway nobody listens to."""

#: The USG's answer to a backed-up command on the standby of a hot-standby pair (``hrp standby config
#: enable`` lifts it for configuration); ikegate gives it to ``reset ike sa`` / ``reset ipsec sa`` too.
HRP_STANDBY_ERROR = "Error: The device is in HRP standby state, so this command cannot be executed."


@dataclass(frozen=True, slots=True)
class VrrpGroupState:
    """One VRRP group as keepalived reports it (``display vrrp``)."""

    interface: str
    vrid: int
    state: str  # Master, Backup, Initialize (keepalived: MASTER, BACKUP, FAULT/STOP)
    virtual_ip: str
    priority: int
    configured_active: bool
    preempt: bool
    preempt_delay: int
    advert_interval: int


@dataclass(frozen=True, slots=True)
class HrpState:
    """Hot standby as ``display hrp state`` shows it; plain data across the seam. A fan-out device asks
    one worker for the roles and sums the counters of all (each worker syncs its own SAs)."""

    role: str  # active, standby, initial
    peer_role: str  # active, standby, unknown
    priority: int
    peer_priority: int
    link_up: bool
    stable_since: float | None  # device clock of the last role change
    last_change: str
    auto_sync: bool
    mirror_session: bool
    standby_config: bool
    preempt: bool
    preempt_delay: int
    counters: dict[str, int] = field(default_factory=dict)
    vrrp: tuple[VrrpGroupState, ...] = ()


class Device(Protocol):
    """What the management plane may ask of the device. Rows come back in display order (highest conn-id
    first); they are read-only snapshots as far as the caller is concerned (the in-process implementation
    hands out its live rows to keep 100,000-row displays cheap, so never modify them), and their
    ``handle`` field is not part of the contract."""

    @property
    def model(self) -> DeviceModel:
        """The USG model and placements (decides the CLI's ``slot … cpu …`` grammar)."""
        ...

    @property
    def config(self) -> Config:
        """The running configuration. Shells edit it in place; :meth:`apply_config` makes the change
        take effect."""
        ...

    def now(self) -> float:
        """The device's monotonic clock (SA ages, ``created`` fields and offline times are on it)."""
        ...

    def local_addresses(self) -> list[str]:
        """The public (IKE) addresses the device listens on."""
        ...

    def lan_addresses(self) -> list[str]:
        """The device's own protected-side addresses (``ping``'s default sources)."""
        ...

    def select(self, selection: Selection = ALL, *, counters: bool = False) -> list[SaEntry]:
        """The SA rows ``selection`` names, highest conn-id first; with ``counters``, the IPsec rows' traffic
        counters are brought up to date from the dataplane first (``display ipsec sa``)."""
        ...

    def ike_sa_table(self, selection: Selection = ALL) -> Iterator[list[str]]:
        """``display ike sa``'s table for ``selection`` (:func:`ikegate.cli.render.ike_sa.chunks` of
        :meth:`select`'s rows), a chunk of lines at a time; the rows are selected when this is called. Why
        on the device: a supervisor of worker processes has each worker render its own rows and merges
        the text by conn-id, which costs a fraction of carrying 100,000 SA rows between processes."""
        ...

    def children(self, conn_id: int) -> list[IpsecSaEntry]:
        """The IPsec SAs under IKE SA ``conn_id`` (``display ike sa verbose``)."""
        ...

    def reset_ike_sa(self, selection: Selection = ALL) -> int:
        """``reset ike sa``: delete the selected SAs (an IKE SA with its IPsec SAs), telling the peers, and
        re-establish what policy says; honours ``conn_id``, ``remote`` and ``placement``. Returns how many
        SAs went away."""
        ...

    def reset_ipsec_sa(self, selection: Selection = ALL) -> int:
        """``reset ipsec sa``: delete the selected IPsec SAs only; honours ``remote``, ``policy``/``seq`` and
        ``spi``. Returns how many SAs went away."""
        ...

    def statistics(self) -> Statistics:
        ...

    def offline(self, peer: str | None = None, placement: Placement | None = None) -> list[OfflineRecord]:
        """The tunnel deletion history, oldest first (``display ike offline-info``)."""
        ...

    def ping(self, source: str, destination: str, count: int, size: int) -> Awaitable[PingResult]:
        """Echo requests from protected-side address ``source`` through the SPD (a traffic-based policy
        negotiates on the first one). Raises :class:`DeviceError` at once when the device cannot send."""
        ...

    def inject(self, packets: Sequence[bytes]) -> int:
        """The packet API: IP packets into the protected side, as if from the LAN; returns how many."""
        ...

    def take_lan_output(self) -> list[bytes]:
        """The packet API: what came out on the protected side since the last call, oldest first."""
        ...

    def workers(self) -> list[WorkerInfo]:
        """The processes holding SAs: one for the single-process device, one per placement worker."""
        ...

    def worker_pids(self) -> list[tuple[int, Placement, int]]:
        """(index, placement, process id) of each running worker process, from what the device knows (no
        question to the workers: ``display cpu-usage``'s one-second sampling asks it); empty when the
        device is this one process."""
        ...

    def load(self, count: int, concurrency: int = 64) -> None:
        """Benchmark aid: negotiate ``count`` extra IKE SAs over the first site-to-site policy."""
        ...

    def apply_config(self, config: Config) -> None:
        """Take ``config`` as the running configuration: existing SAs stay, later decisions follow it, new
        auto policies start. All or nothing: a fan-out applies it to every worker before returning."""
        ...

    def hrp_state(self) -> HrpState | None:
        """Hot standby's roles, link and counters (``display hrp state``, ``display vrrp``); None when
        ``hrp enable`` is not configured (or the device is not open)."""
        ...

    def hrp_mirror(self, text: str, apply: Callable[[str], None]) -> None:
        """``hrp auto-sync``: on the active, ``text`` (the backed-up configuration) goes to the standby; on
        the standby, ``apply`` is called with each configuration the active sends. A no-op without HRP.
        A fan-out sends through one worker (the configuration is the same for all)."""
        ...

    async def open(self) -> None:
        """Bind the sockets and start the auto policies."""
        ...

    async def close(self, grace: float) -> None:
        """Shut down: delete every SA (peers get Deletes, nothing is re-established), wait up to ``grace``
        seconds for the answers, close the sockets."""
        ...


# ----------------------------------------------------------------------------------------------------------
# Construction and fan-out helpers
# ----------------------------------------------------------------------------------------------------------


def open_local(config: Config, model: DeviceModel | None = None, *, ike_port: int = 500, natt_port: int = 4500,
               retransmit_tries: int = 5, log: LogSink | None = None, tun: Mapping[str, str] | None = None,
               raw_esp: bool = True, keylog: str | None = None) -> Device:
    """The single-process device: a controller, its UDP (and raw ESP) sockets and TUN bridges, in this
    event loop. ``raw_esp=False`` is ``--force-udp-encap``; ``keylog`` is ``--keylog DIR``.

    The implementation is imported here, not at the top, so that importing the seam stays cheap and a
    management module never names the controller."""
    from ikegate.gateway.local import LocalDevice

    return LocalDevice.build(config, model or DeviceModel(), ike_port=ike_port, natt_port=natt_port,
                             retransmit_tries=retransmit_tries, log=log, tun=dict(tun or {}), raw_esp=raw_esp,
                             keylog=keylog)


def open_device(config: Config, model: DeviceModel, workers: int = 1, **options: Any) -> Device:
    """The device ``ikegate run`` manages: one process (:func:`open_local`) when ``workers`` is 1 on any
    model, else a supervisor of placement workers (:class:`ikegate.workers.fanout.FanoutDevice`; a
    multi-SPU model's placements are its workers). ``options`` are :func:`open_local`'s."""
    from ikegate.workers.fanout import FanoutDevice, worker_count

    tun_steering = options.pop("tun_steering", True)  # a single process has one queue to steer to
    if worker_count(model, workers) <= 1:
        return open_local(config, model, **options)
    options["tun_steering"] = tun_steering
    return FanoutDevice(config, model, workers=workers, **options)


def _display_key(entry: SaEntry) -> int:
    return -entry.conn_id


def merge_rows(parts: Iterable[Sequence[SaEntry]]) -> list[SaEntry]:
    """Several workers' answers to one selection, each in display order, as one list in display order
    (conn-ids are device-unique, so the result is what one process holding all the SAs would list)."""
    return list(heapq.merge(*parts, key=_display_key))


def merge_rendered(parts: Sequence[tuple[Sequence[int], Sequence[str]]]) -> list[str]:
    """Several workers' rendered rows (each: its conn-ids and their lines, in display order) as one list of
    lines in display order: :func:`merge_rows` for text. One sort of the indices (the parts are sorted
    runs, which the sort merges) beats ``heapq.merge``'s per-item Python calls several times over."""
    if len(parts) == 1:
        return list(parts[0][1])
    ids: list[int] = []
    lines: list[str] = []
    for part_ids, part_lines in parts:
        if len(part_ids) != len(part_lines):
            raise ValueError("a part's conn-ids and lines differ in number")
        ids += part_ids
        lines += part_lines
    order = sorted(range(len(ids)), key=ids.__getitem__, reverse=True)
    return [lines[i] for i in order]


def _offline_key(record: OfflineRecord) -> float:
    return record.time


def merge_offline(parts: Iterable[Sequence[OfflineRecord]], capacity: int | None = None) -> list[OfflineRecord]:
    """Several workers' offline histories (each oldest first) as one, oldest first, keeping only the
    newest ``capacity`` records when given (the device-wide log holds as many as one process's)."""
    merged = list(heapq.merge(*parts, key=_offline_key))
    return merged if capacity is None else merged[max(0, len(merged) - capacity):]


def merge_hrp(parts: Sequence[HrpState | None], vrrp: tuple[VrrpGroupState, ...] = (),
              keepalived_restarts: int = 0) -> HrpState | None:
    """Several workers' hot-standby states as the device's: roles, peer and link from the first worker
    that answered (the supervisor sets every worker's role at once), counters summed (each worker syncs its
    own SAs), VRRP groups and keepalived's restarts from the supervisor, which runs keepalived."""
    states = [p for p in parts if p is not None]
    if not states:
        return None
    counters: dict[str, int] = {}
    for st in states:
        for key, value in st.counters.items():
            counters[key] = counters.get(key, 0) + value
    counters["keepalived_restarts"] = keepalived_restarts
    return replace(states[0], counters=counters, vrrp=vrrp)

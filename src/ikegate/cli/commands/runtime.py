"""Runtime commands: ``display ike sa``, ``reset ike sa`` and their family, on the live device.

They ask the :class:`~ikegate.gateway.device.Device` (select, reset, statistics, ping) and render what it
answers; they never keep state of their own nor touch the controller. The ``slot … cpu …`` trailer
exists only on the models that have it (the seed), so the declarations are built per device model: on
other models the word ``slot`` is simply not a command word (Unrecognized), on slot models a slot or CPU
that does not exist is a Wrong parameter.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

from ikegate import __version__
from ikegate.cli.commands.ssh_blocks import SshBlocks
from ikegate.cli.context import CommandContext
from ikegate.cli.errors import CommandError, ParamError
from ikegate.cli.params import Integer, Ipv4, Ipv6, String
from ikegate.cli.render import hrp as hrp_render
from ikegate.cli.render import ike_info, ipsec_sa, usage, version
from ikegate.cli.render import ping as ping_render
from ikegate.cli.render.chunks import CHUNK_ROWS, Chunks, Records
from ikegate.cli.tree import MANAGE, MONITOR, VISIT, Command
from ikegate.cli.views import ALL_VIEWS, ViewKind
from ikegate.gateway.device import Device, DeviceError, DeviceModel, HrpState, PingResult, Selection
from ikegate.mgmt.records import entry_record
from ikegate.mgmt.usage import CpuSampler, CpuUsage, MemoryUsage, WorkerSamplers, process_rss, read_memory
from ikegate.sad import IkeSaEntry, IpsecSaEntry, Placement, SaEntry

USER = frozenset({ViewKind.USER})
NO_MATCH = "Info: No SA matches the specified conditions; nothing was deleted."


@dataclass
class Runtime:
    """What runtime commands reach through ``ctx.device``: the device, the wall clock, the SSH blocks."""

    device: Device
    wall: Callable[[], dt.datetime] = dt.datetime.now
    #: The SSH server's address blocks (``display ssh server ip-block``); the daemon supplies it.
    ssh: SshBlocks | None = None
    #: ``display version``'s uptime: the process's, on its own monotonic clock (the device's clock
    #: starts with the event loop and is stepped by in-memory tests).
    monotonic: Callable[[], float] = time.monotonic
    booted: float = field(default_factory=time.monotonic)

    #: The configuration file ``save`` writes (``display saved-configuration`` reads it back); None when
    #: the gateway runs without one.
    config_path: str | None = None
    #: ``display cpu-usage``: the process's CPU samples (the daemon's one-second tick feeds it);
    #: ``display memory-usage``: the memory figures now (``/proc``). Tests inject both.
    cpu: CpuSampler = field(default_factory=CpuSampler)
    memory: Callable[[], MemoryUsage] = read_memory
    #: With placement workers: each worker's CPU samples and the device's total (the same tick feeds them),
    #: and a worker's resident set by process id.
    workers_cpu: WorkerSamplers = field(default_factory=WorkerSamplers)
    worker_rss: Callable[[int], int] = process_rss

    def tick(self) -> None:
        """The one-second tick: CPU samples of this process and of the workers (see mgmt/usage.py)."""
        self.cpu.tick()
        pids = self.device.worker_pids()
        if pids or self.workers_cpu.samplers:
            self.workers_cpu.tick([pid for _, _, pid in pids])

    @property
    def model(self) -> DeviceModel:
        return self.device.model

    def uptime(self) -> float:
        return max(0.0, self.monotonic() - self.booted)

    def now(self) -> float:
        return self.device.now()


def _rt(ctx: CommandContext) -> Runtime:
    return cast(Runtime, ctx.device)


def _stamp(ctx: CommandContext) -> None:
    ctx.write(f"{_rt(ctx).wall():%Y-%m-%d %H:%M:%S.%f}"[:-3] + " ")


def _placement(ctx: CommandContext) -> Placement | None:
    slot = ctx.opt_number("slot")
    if slot is None:
        return None
    cpu = ctx.number("cpu")
    model = _rt(ctx).model
    if not any(p.slot == slot for p in model.placements):
        raise ParamError("slot")
    if not model.has_placement(slot, cpu):
        raise ParamError("cpu")
    return Placement(slot, cpu)


def _emit(ctx: CommandContext, data: Callable[[], Any], text: Callable[[], list[str]], stamp: bool = True,
          padded: bool = False) -> None:
    """Text for people, or the same records as JSON when the line ended with ``| json``; only the form
    asked for is built (100,000 rows are worth not rendering twice). Trailing spaces are cut unless the
    layout is ``padded`` (``display ike sa``'s 132 columns)."""
    if ctx.json:
        ctx.data = data()
        return
    if stamp:
        _stamp(ctx)
    for line in text():
        ctx.write(line if padded else line.rstrip())


def _emit_chunks(ctx: CommandContext, key: str, entries: Sequence[SaEntry], chunks: Callable[[], Chunks],
                 padded: bool = False) -> None:
    """:func:`_emit` for the SA tables, which may hold 100,000 rows: the text, or the records under ``key``,
    are made a chunk at a time while they are printed (:mod:`ikegate.cli.render.chunks`)."""
    if ctx.json:
        now = _rt(ctx).now()
        ctx.data = {key: Records(entries, lambda e: entry_record(e, now))}
        return
    _stamp(ctx)
    ctx.write_chunks(chunks() if padded else ([line.rstrip() for line in chunk] for chunk in chunks()))


def display_ike_sa(ctx: CommandContext) -> None:
    rt = _rt(ctx)
    selection = Selection(remote=_text(ctx.opt_ip("remote")), placement=_placement(ctx))
    # the text comes rendered from the device (a supervisor's workers render their own rows); ``| json``
    # needs the rows themselves
    entries = rt.device.select(selection) if ctx.json else []
    _emit_chunks(ctx, "ike_sa", entries, lambda: rt.device.ike_sa_table(selection), padded=True)


def display_ike_sa_verbose(ctx: CommandContext) -> None:
    rt = _rt(ctx)
    conn_id = ctx.opt_number("connection-id")
    # By conn-id: that SA whichever its phase; by remote: the peer's IKE SAs (their IPsec SAs under them).
    selection = Selection(conn_id=conn_id) if conn_id is not None else \
        Selection(remote=_text(ctx.opt_ip("remote")), phase=1)
    entries: list[SaEntry] = rt.device.select(selection, counters=True)
    now = rt.now()

    def chunks() -> Chunks:
        """:func:`ike_info.verbose` a few SAs at a time (their children looked up per chunk), one closing
        rule at the end instead of one per chunk."""
        size = CHUNK_ROWS // 25  # about 25 lines per SA
        for start in range(0, len(entries), size):
            part = entries[start:start + size]
            children = {e.conn_id: rt.device.children(e.conn_id) for e in part if isinstance(e, IkeSaEntry)}
            yield ike_info.verbose(part, children, now)[:-1]
        if entries:
            yield [ike_info.RULE]

    _emit_chunks(ctx, "ike_sa", entries, chunks)


def display_ipsec_sa(ctx: CommandContext) -> None:
    rt = _rt(ctx)
    policy = ctx.opt_string("policy-name")
    selection = Selection(policy=policy, seq=ctx.opt_number("seq"), phase=2) if policy is not None else \
        Selection(remote=_text(ctx.opt_ip("remote")), phase=2)
    entries = [e for e in rt.device.select(selection, counters=True) if isinstance(e, IpsecSaEntry)]
    now = rt.now()
    brief = ctx.keyword("brief")
    _emit_chunks(ctx, "ipsec_sa", entries,
                 lambda: ipsec_sa.brief_chunks(entries) if brief else ipsec_sa.chunks(entries, now))


def display_ike_proposal(ctx: CommandContext) -> None:
    number = ctx.opt_number("number")
    props = [p for p in ctx.config.ike_proposals.values() if number is None or p.number == number]
    data = {"ike_proposal": [{"number": p.number, "encryption": p.encryption, "dh": p.dh,
                              "authentication": p.authentication,
                              "authentication_method": p.authentication_method.value,
                              "integrity": p.integrity, "prf": p.prf, "duration": p.duration} for p in props]}
    _emit(ctx, lambda: data, lambda: ike_info.proposals(ctx.config, number), stamp=False)


def display_ike_peer(ctx: CommandContext) -> None:
    config = ctx.config
    name = ctx.opt_string("peer-name")
    peers = [p for p in config.ike_peers.values() if name is None or p.name == name]
    data = {"ike_peer": [{"name": p.name, "versions": sorted(p.versions), "exchange_mode": p.exchange_mode.value,
                          "proposals": p.ike_proposals, "remote_addresses": [str(a) for a in p.remote_addresses],
                          "id_type": p.local_id_type.value, "dpd": p.dpd.type.value,
                          "dependent": config.ike_dependent_for(p)} for p in peers]}
    if name is not None:
        text = ike_info.peer_detail(config, peers[0]) if peers else [f"Info: No IKE peer named {name}."]
    else:
        text = ike_info.peers_brief(config)
    _emit(ctx, lambda: data, lambda: text, stamp=False)


def display_ike_offline_info(ctx: CommandContext) -> None:
    rt = _rt(ctx)
    peer = ctx.opt_ip("peer")
    records = rt.device.offline(peer=_text(peer), placement=_placement(ctx))
    now, wall = rt.now(), rt.wall()
    data = {"offline": [{"peer": str(r.peer_address), "port": r.peer_port, "reason": r.reason,
                         "version": r.version, "time": (wall - dt.timedelta(seconds=now - r.time)).isoformat()}
                        for r in records]}
    _emit(ctx, lambda: data, lambda: ike_info.offline(records, now, wall), padded=True)


def display_ike_statistics(ctx: CommandContext) -> None:
    st = _rt(ctx).device.statistics()
    counts = ike_info.statistics_counts(st)
    data = {"statistics": {**counts, "negotiations_started": st.negotiations_started,
                           "negotiations_succeeded": st.negotiations_succeeded,
                           "negotiations_failed": dict(st.negotiations_failed), "deletes_sent": st.deletes_sent,
                           "deletes_received": st.deletes_received, "resets": st.resets,
                           "cookies_sent": st.cookies_sent, "dropped": st.dropped}}
    _emit(ctx, lambda: data, lambda: ike_info.statistics(st))


def display_version(ctx: CommandContext) -> None:
    rt = _rt(ctx)
    uptime = rt.uptime()
    data = {"version": {"model": rt.model.model, "vrp_version": version.VRP_VERSION,
                        "ikegate_version": __version__, "uptime_seconds": int(uptime)}}
    _emit(ctx, lambda: data, lambda: version.render(rt.model.model, uptime), stamp=False)


def _cpu_record(reading: CpuUsage) -> dict[str, int]:
    return {"five_seconds": round(reading.five_seconds), "one_minute": round(reading.one_minute),
            "five_minutes": round(reading.five_minutes), "max": round(reading.max)}


def _process_label(model: DeviceModel, index: int, placement: Placement) -> dict[str, Any]:
    out: dict[str, Any] = {"process": "worker", "index": index}
    if model.has_slots:
        out.update(slot=placement.slot, cpu=placement.cpu)
    return out


def display_cpu_usage(ctx: CommandContext) -> None:
    """One process: its figures. With placement workers: the device's (every process, as a share of the
    cores) in VRP's block, then one line per process (per placement on the slot models)."""
    rt = _rt(ctx)
    wall = rt.wall()
    pids = rt.device.worker_pids()
    if not pids:
        reading = rt.cpu.usage()
        _emit(ctx, lambda: {"cpu_usage": _cpu_record(reading)}, lambda: usage.cpu(reading, wall), stamp=False)
        return
    rt.workers_cpu.tick([pid for _, _, pid in pids])  # (a worker new since the last tick gets its sampler)
    total = rt.workers_cpu.total.usage()
    rows: list[tuple[dict[str, Any], CpuUsage]] = [({"process": "supervisor"}, rt.cpu.usage())]
    for index, placement, pid in pids:
        worker = rt.workers_cpu.usage(pid)
        if worker is not None:
            rows.append((_process_label(rt.model, index, placement), worker))
    data = {"cpu_usage": {**_cpu_record(total), "cores": rt.workers_cpu.cores,
                          "processes": [{**label, **_cpu_record(r)} for label, r in rows]}}
    _emit(ctx, lambda: data, lambda: usage.cpu(total, wall) + usage.cpu_processes(rows, rt.workers_cpu.cores),
          stamp=False)


def display_memory_usage(ctx: CommandContext) -> None:
    rt = _rt(ctx)
    try:
        figures = rt.memory()
    except (OSError, ValueError, KeyError) as exc:
        raise CommandError("Error: The memory figures of this system cannot be read.") from exc
    wall = rt.wall()
    rows: list[tuple[dict[str, Any], int]] = []
    for index, placement, pid in rt.device.worker_pids():
        try:
            rows.append((_process_label(rt.model, index, placement), rt.worker_rss(pid)))
        except (OSError, ValueError, KeyError):
            continue  # it ended since the device listed it (the supervisor restarts it)
    if rows:
        rows.insert(0, ({"process": "supervisor"}, figures.rss))
    record: dict[str, Any] = {"total": figures.total, "used": figures.used, "percent": figures.percent,
                              "process_rss": sum(r for _, r in rows) if rows else figures.rss}
    if rows:
        record["processes"] = [{**label, "rss": rss} for label, rss in rows]
    data = {"memory_usage": record}
    _emit(ctx, lambda: data, lambda: usage.memory(figures, wall, rows), stamp=False)


def display_device(ctx: CommandContext) -> None:
    model = _rt(ctx).model
    _emit(ctx, lambda: {"device": {"model": model.model, "boards": usage.device_rows(model)}},
          lambda: usage.device(model), stamp=False)


def display_saved_configuration(ctx: CommandContext) -> None:
    """The configuration file as ``save`` left it (what the next start loads), not the running one."""
    path = _rt(ctx).config_path
    if path is None:
        raise CommandError("Error: No configuration file is set for this device.")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError as exc:
        raise CommandError(f"Error: Failed to read the configuration file: {exc.strerror or exc}.") from exc
    for line in text.splitlines():
        ctx.write(line)


def reset_ike_sa(ctx: CommandContext) -> None:
    selection = Selection(conn_id=ctx.opt_number("conn-id"), remote=_text(ctx.opt_ip("remote")),
                          placement=_placement(ctx))
    try:
        deleted = _rt(ctx).device.reset_ike_sa(selection)
    except DeviceError as exc:  # the standby of a hot-standby pair
        raise CommandError(f"Error: {exc}.") from exc
    if not deleted:
        ctx.write(NO_MATCH)


def reset_ipsec_sa(ctx: CommandContext) -> None:
    selection = Selection(remote=_text(ctx.opt_ip("remote") or ctx.opt_ip("address")),
                          policy=ctx.opt_string("policy-name"), seq=ctx.opt_number("seq"), spi=ctx.opt_number("spi"))
    try:
        deleted = _rt(ctx).device.reset_ipsec_sa(selection)
    except DeviceError as exc:
        raise CommandError(f"Error: {exc}.") from exc
    if not deleted:
        ctx.write(NO_MATCH)


def _hrp_state(ctx: CommandContext) -> HrpState:
    st = _rt(ctx).device.hrp_state()
    if st is None:
        raise CommandError("Error: HRP is not enabled.")
    return st


def display_hrp_state(ctx: CommandContext) -> None:
    st, now = _hrp_state(ctx), _rt(ctx).now()
    verbose = ctx.keyword("verbose")
    _emit(ctx, lambda: {"hrp_state": {k: v for k, v in asdict(st).items() if k != "vrrp"}},
          lambda: hrp_render.state(st, now, verbose), stamp=False)


def display_vrrp(ctx: CommandContext) -> None:
    st = _hrp_state(ctx)
    _emit(ctx, lambda: {"vrrp": [asdict(g) for g in st.vrrp]}, lambda: hrp_render.vrrp(st.vrrp), stamp=False)


def ping(ctx: CommandContext) -> None:
    device = _rt(ctx).device
    destination = ctx.ip("destination")
    source = ctx.opt_ip("source")
    if source is None:
        lan = [a for a in device.lan_addresses() if (":" in a) == (destination.version == 6)]
        if not lan:
            raise CommandError("Error: No protected-side address to ping from; use -a SOURCE.")
        source_text = lan[0]
    else:
        if source.version != destination.version:
            raise ParamError("source")
        source_text = str(source)
    try:
        measured = device.ping(source_text, str(destination), ctx.opt_number("count") or 5,
                               ctx.opt_number("size") or 56)
    except DeviceError as exc:
        raise CommandError(f"Error: {exc}.") from exc
    ctx.pending = _ping_lines(measured)


async def _ping_lines(measured: Awaitable[PingResult]) -> list[str]:
    return ping_render.render(await measured)


def _text(address: object | None) -> str | None:
    return None if address is None else str(address)


def runtime_commands(model: DeviceModel) -> list[Command]:
    """The runtime command declarations for this device model."""
    addr = (Ipv4("IPv4 address"), Ipv6("IPv6 address"))
    params: dict[str, Any] = {
        "remote": addr,
        "peer": addr,
        "address": addr,
        "conn-id": Integer("Connection ID", 1, 4294967295),
        "connection-id": Integer("Connection ID", 1, 4294967295),
        "number": Integer("Proposal number", 1, 99),
        "peer-name": String("Name of the IKE peer", 1, 15),
        "policy-name": String("Name of the IPSec policy", 1, 15),
        "seq": Integer("Sequence number", 1, 10000),
        "spi": Integer("Security parameter index", 256, 4294967295),
        "slot": Integer("Slot ID", 0, 15),
        "source": addr,
        "destination": addr,
        "count": Integer("Number of echo requests", 1, 4294967295),
        "size": Integer("Data bytes in each request", 20, 9600),
        "cpu": Integer("CPU ID", 0, 15),
    }
    slot = " [ slot <slot> cpu <cpu> ]" if model.has_slots else ""
    help_words = {"verbose": "Display detailed information", "connection-id": "Specify the connection ID",
                  "brief": "Display brief information", "policy": "Specify an IPSec policy",
                  "offline-info": "Display the history of deleted tunnels", "peer": "Specify the peer",
                  "statistics": "Display statistics", "proposal": "Display IKE proposals",
                  "number": "Specify the proposal number", "name": "Specify the name",
                  "parameters": "Specify an SA by its parameters", "esp": "ESP protocol",
                  "ipsec": "IPSec module", "ike": "IKE module", "sa": "Security association",
                  "conn-id": "Specify the connection ID", "remote": "Specify the remote address",
                  "slot": "Specify the slot ID", "cpu": "Specify the CPU ID",
                  "ping": "Send ICMP echo requests through the tunnels", "-a": "Specify the source address",
                  "-c": "Specify the number of echo requests", "-s": "Specify the size of the data",
                  "version": "Display the software version and the uptime",
                  "cpu-usage": "Display the CPU usage", "memory-usage": "Display the memory usage",
                  "device": "Display the device status",
                  "saved-configuration": "Display the configuration saved for the next start",
                  "hrp": "Display hot standby information", "state": "Display the hot standby state",
                  "vrrp": "Display VRRP information"}

    def cmd(syntax: str, handler: Callable[[CommandContext], None], views: frozenset[ViewKind], level: int) -> Command:
        used = {k: v for k, v in params.items() if f"<{k}>" in syntax}
        return Command(syntax, handler, views, level=level, params=used, help=help_words)

    return [
        cmd(f"display ike sa [ remote <remote> ]{slot}", display_ike_sa, ALL_VIEWS, MONITOR),
        cmd("display ike sa verbose { remote <remote> | connection-id <connection-id> }", display_ike_sa_verbose,
            ALL_VIEWS, MONITOR),
        cmd("display ipsec sa [ brief | remote <remote> | policy <policy-name> [ <seq> ] ]", display_ipsec_sa,
            ALL_VIEWS, MONITOR),
        cmd("display ike proposal [ number <number> ]", display_ike_proposal, ALL_VIEWS, MONITOR),
        cmd("display ike peer [ brief | name <peer-name> ]", display_ike_peer, ALL_VIEWS, MONITOR),
        cmd(f"display ike offline-info [ peer <peer> ]{slot}", display_ike_offline_info, ALL_VIEWS, MONITOR),
        cmd("display ike statistics", display_ike_statistics, ALL_VIEWS, MONITOR),
        cmd("display version", display_version, ALL_VIEWS, MONITOR),
        cmd("display cpu-usage", display_cpu_usage, ALL_VIEWS, MONITOR),
        cmd("display memory-usage", display_memory_usage, ALL_VIEWS, MONITOR),
        cmd("display device", display_device, ALL_VIEWS, MONITOR),
        cmd("display saved-configuration", display_saved_configuration, ALL_VIEWS, MANAGE),
        cmd("display hrp state [ verbose ]", display_hrp_state, ALL_VIEWS, MONITOR),
        cmd("display vrrp", display_vrrp, ALL_VIEWS, MONITOR),
        cmd(f"reset ike sa [ conn-id <conn-id> | remote <remote> ]{slot}", reset_ike_sa, USER, MANAGE),
        cmd("reset ipsec sa [ remote <remote> | policy <policy-name> [ <seq> ] | parameters <address> esp <spi> ]",
            reset_ipsec_sa, USER, MANAGE),
        cmd("ping [ -a <source> ] [ -c <count> ] [ -s <size> ] <destination>", ping, USER, VISIT),
    ]

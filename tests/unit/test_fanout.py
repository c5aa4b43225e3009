"""The supervisor's fan-out rules without processes: routing by conn-id and placement, all-or-none
configuration (a worker refusing in the prepare phase means no worker commits), a silent worker taken
out of service. The channels are doubles; tests/system/test_workers.py runs the real processes."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Callable
from typing import Any, cast

import pytest

from ikegate.cli.render import ike_sa
from ikegate.cli.render.chunks import CHUNK_ROWS
from ikegate.gateway.controller import Gateway
from ikegate.gateway.device import (
    ALL,
    DeviceError,
    DeviceModel,
    HrpState,
    Selection,
    VrrpGroupState,
    make_device,
    merge_hrp,
    merge_rows,
)
from ikegate.gateway.local import LocalDevice
from ikegate.ha.sync import Role as HaRole
from ikegate.mgmt import pacing
from ikegate.mgmt.pacing import Pacer
from ikegate.sad import IkeSaEntry, IpsecSaEntry, Placement, Role, SaFlag
from ikegate.workers.fanout import FanoutDevice, worker_count
from ikegate.workers.rpc import AsyncChannel, Channel, WorkerGone, gather, read_frame
from ikegate.workers.steering import Steering, WorkerSlot, ike_spi_owner, peer_owner
from ikegate.workers.worker import PagedTables, _opening
from tests.protocol.netsim import lab_config

BR_HQ = "127.0.0.11"  # Branch1's peer in the lab configuration


class FakeChannel:
    """Answers like a worker's call channel; ``refuse`` makes ``prepare`` fail there, ``dead`` every call."""

    def __init__(self, index: int, refuse: bool = False, dead: bool = False,
                 answer: Callable[..., Any] | None = None) -> None:
        self.index, self.refuse, self.dead, self.answer = index, refuse, dead, answer
        self.calls: list[str] = []
        self._next: Any = None

    def send(self, op: str, *args: Any) -> None:
        if self.dead:
            raise WorkerGone("gone")
        self.calls.append(op)
        if self.answer is not None:
            self._next = self.answer(op, *args)
            return
        self._next = RuntimeError("ValueError: no") if op == "prepare" and self.refuse else {
            "prepare": True, "commit": True, "abort": None, "start": None,
            "select": [], "reset_ike": self.index + 1}.get(op)

    def receive(self, timeout: float = 0) -> Any:
        if isinstance(self._next, Exception):
            raise self._next
        return self._next


def _device(*channels: FakeChannel, model: DeviceModel | None = None) -> FanoutDevice:
    device = FanoutDevice(lab_config("hq"), model or DeviceModel(), workers=len(channels))
    for member, channel in zip(device.members, channels, strict=True):
        member.channel, member.up = cast(Channel, channel), True
    return device


def _changed(device: FanoutDevice) -> Any:
    config = device.config
    config.sysname = "Changed"
    config.touch()  # what the shell does after a configuration command
    return config


def test_configuration_is_committed_on_every_worker_after_all_prepared() -> None:
    a, b = FakeChannel(0), FakeChannel(1)
    device = _device(a, b)
    device.apply_config(_changed(device))
    assert a.calls == b.calls == ["prepare", "commit"]
    device.apply_config(device.config)  # unchanged: only the auto policies' check
    assert a.calls[-1] == b.calls[-1] == "start"


def test_an_unchanged_configuration_costs_no_work_proportional_to_its_size(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """After a display (or a navigation command) the device is asked again: one comparison of the
    generation, no pickling of the whole configuration, no prepare/commit."""
    a, b = FakeChannel(0), FakeChannel(1)
    device = _device(a, b)
    device.apply_config(_changed(device))

    def no_pickling(*_args: Any, **_kw: Any) -> bytes:
        raise AssertionError("the configuration was pickled")

    monkeypatch.setattr("ikegate.workers.fanout.pickle.dumps", no_pickling)
    for _ in range(3):
        device.apply_config(device.config)
    assert a.calls == b.calls == ["prepare", "commit", "start", "start", "start"]
    monkeypatch.undo()
    device.config.touch()  # edited in place again: a two-phase change, not taken as unchanged
    device.apply_config(device.config)
    assert a.calls[-2:] == b.calls[-2:] == ["prepare", "commit"]


def test_the_shell_bumps_the_generation_for_configuration_commands_only() -> None:
    from ikegate.cli.shell import Shell

    config = lab_config("hq")
    shell = Shell(config)
    seen = config.generation
    for line in ("display ike proposal", "system-view", "display current-configuration"):
        shell.run(line)
        assert config.generation == seen, line
    shell.run("ike proposal 77")  # creates the proposal and enters its view
    assert config.generation > seen
    seen = config.generation
    shell.run("quit")
    shell.run("return")
    assert config.generation == seen
    shell.run("system-view")
    shell.run("sysname Other")
    assert config.generation > seen and config.sysname == "Other"


def test_one_refusal_and_no_worker_commits() -> None:
    a, b, c = FakeChannel(0), FakeChannel(1, refuse=True), FakeChannel(2)
    device = _device(a, b, c)
    with pytest.raises(DeviceError, match="not applied"):
        device.apply_config(_changed(device))
    for channel in (a, b, c):
        assert channel.calls == ["prepare", "abort"], channel.index
    with pytest.raises(DeviceError):  # still not committed: tried again, not taken as unchanged
        device.apply_config(device.config)
    assert a.calls[-2:] == ["prepare", "abort"]


def test_conn_ids_and_placements_reach_their_owner_only() -> None:
    chans = [FakeChannel(i) for i in range(4)]
    model = make_device("USG6680E", "1/0,1/1,3/0,3/1")
    device = _device(*chans, model=model)
    assert device.reset_ike_sa(Selection(conn_id=7)) == 3  # (7 - 1) % 4 == 2: worker 2 answers 3
    assert [c.calls for c in chans] == [[], [], ["reset_ike"], []]
    device.select(Selection(placement=Placement(3, 1)))
    assert chans[3].calls == ["select"] and chans[0].calls == []
    assert device.reset_ike_sa() == 1 + 2 + 3 + 4 and device.statistics is not None


def test_a_worker_that_is_gone_is_taken_out_and_the_others_answer() -> None:
    a, b = FakeChannel(0), FakeChannel(1, dead=True)
    device = _device(a, b)
    assert device.reset_ike_sa() == 1
    assert [m.up for m in device.members] == [True, False]


def test_gather_reads_every_answer_before_reporting_a_failure() -> None:
    a, b, c = FakeChannel(0), FakeChannel(1, refuse=True), FakeChannel(2)
    with pytest.raises(RuntimeError):
        gather(cast(list[Channel], [a, b, c]), "prepare", None)
    assert c.calls == ["prepare"]


def test_slot_models_have_one_worker_per_placement_unless_one_process() -> None:
    model = make_device("USG6680E", "1/0,1/1,3/0")
    assert worker_count(model, 2) == 3 and worker_count(model, 1) == 1
    assert worker_count(DeviceModel(), 4) == 4
    with pytest.raises(ValueError, match="placements"):
        FanoutDevice(lab_config("hq"), make_device("USG6680E", "1/0,1/1"), workers=1)


# -- a worker's controller: its conn-ids, its SPIs, its peers -------------------------------------------


def _worker_gateway(index: int, workers: int = 4) -> Gateway:
    return Gateway(lab_config("branch1"), worker=WorkerSlot(Steering(workers, 0x5A5A), index))


def test_only_the_peers_owner_initiates_and_everything_it_allocates_names_it() -> None:
    owner = peer_owner(BR_HQ, 4)
    for index in range(4):
        gw = _worker_gateway(index)
        gw.start(1.0)
        entries = gw.sad.select(phase=1)
        if index != owner:
            assert entries == [] and gw.stats.negotiations_started == 0
            continue
        (entry,) = entries
        assert isinstance(entry, IkeSaEntry)
        assert (entry.conn_id - 1) % 4 == index
        assert ike_spi_owner(entry.spi_i, 0x5A5A, 4) == index  # the kernel steers its answers here
        (datagram, _local, _remote), *_ = gw.datagrams_to_send()
        assert datagram[:8] == entry.spi_i
        answer = entry.spi_i + b"\x77" * 8 + bytes([33, 0x20, 34, 0x20]) + bytes(12)  # I flag clear
        assert Steering(4, 0x5A5A).expected_worker(answer, natt=False) == index
        assert {gw._spi_alloc() >> 24 for _ in range(50)} == {index}


def test_openings_are_recognised_for_hand_over() -> None:
    header = bytearray(28)
    header[:8] = b"\x01" * 8
    header[17], header[19] = 0x20, 0x08  # IKEv2, I flag: an IKE_SA_INIT request
    assert _opening(bytes(header), natt=False)
    assert _opening(bytes(4) + bytes(header), natt=True)
    answer = bytearray(header)
    answer[19] = 0x20  # response, zero responder SPI (a COOKIE answer): ours to handle, not an opening
    assert not _opening(bytes(answer), natt=False)
    header[8:16] = b"\x02" * 8
    assert not _opening(bytes(header), natt=False)  # responder SPI set: an SA exists
    v1 = bytearray(28)
    v1[:8], v1[17] = b"\x03" * 8, 0x10  # Main Mode 1
    assert _opening(bytes(v1), natt=False)
    assert not _opening(b"\x00\x00\x01\x00" + bytes(40), natt=True)  # ESP
    assert not _opening(b"\xff", natt=True)


def test_peer_owner_is_stable_and_spreads() -> None:
    owners = {peer_owner(f"198.51.100.{i}", 4) for i in range(64)}
    assert owners == {0, 1, 2, 3}
    assert peer_owner("198.51.100.7", 4) == peer_owner("198.51.100.7", 4)
    assert WorkerSlot(Steering(4, 1), peer_owner("2001:db8::1", 4)).owns("2001:db8::1")


def test_posting_never_blocks_when_the_other_end_does_not_read() -> None:
    """A worker posting log records while the supervisor waits for its call answer (and so reads nothing)
    must go on: the records wait in the channel and all arrive, in order, once the other end reads."""
    async def main() -> list[object]:
        here, there = socket.socketpair()
        channel = AsyncChannel(here, lambda _i, _b: None)
        record = "x" * 1000
        for i in range(5000):  # ~5 MB: far beyond a socketpair's buffer
            channel.post(("log", i, record))  # returns at once; nobody reads yet
        got: list[object] = []
        there.setblocking(True)
        reader = asyncio.get_running_loop().run_in_executor(
            None, lambda: [read_frame(there, time.monotonic() + 30) for _ in range(5000)])
        await channel.drain(30)
        got = await reader
        channel.close()
        there.close()
        return got

    got = asyncio.run(main())
    assert [body[1] for _ident, body in got] == list(range(5000))  # type: ignore[index]


# -- display ike sa: each worker renders its rows, the supervisor merges the text ------------------------


def _filled(workers: int, per_worker: int) -> list[Gateway]:
    """``workers`` workers' controllers, each holding ``per_worker`` IKE SAs with an IPsec SA each; IPv4 and
    IPv6 peers, and some peer IDs too long for their column (rows that take the slow layout)."""
    gateways = [_worker_gateway(i, workers) for i in range(workers)]
    for n in range(workers * per_worker):
        gw = gateways[n % workers]
        peer = ipaddress.ip_address(0x0A000000 + n) if n % 3 else ipaddress.ip_address(f"2001:db8::{n:x}")
        ike = gw.sad.add_ike(IkeSaEntry(
            version=1 + n % 2, role=Role.RESPONDER, flags=SaFlag.RD | SaFlag.A, placement=gw.placements[0],
            local_address=ipaddress.ip_address("127.0.0.12"), peer_address=peer,
            peer_id=f"peer-{n}.example.com" if n % 5 == 0 else "", spi_i=(n + 1).to_bytes(8, "big"),
            spi_r=(n + 2).to_bytes(8, "big")))
        gw.sad.add_ipsec(IpsecSaEntry.from_parent(ike, flags=SaFlag.RD | SaFlag.A, spi_in=1000 + n,
                                                  spi_out=1000 + n))
    return gateways


def _paged_channels(tables: list[PagedTables]) -> list[FakeChannel]:
    """Call channels answering ``ike_sa_open``/``_page``/``_close`` as each worker's PagedTables does."""
    return [FakeChannel(i, answer=lambda op, *args, t=t: getattr(t, op.removeprefix("ike_sa_"))(*args))
            for i, t in enumerate(tables)]


def test_the_fanned_out_table_is_the_single_process_table() -> None:
    gateways = _filled(3, 300)  # 1,800 rows: several chunks, rows of every worker in each
    locals_ = [LocalDevice(gw) for gw in gateways]

    tables = [PagedTables(d.select, lambda: False) for d in locals_]  # the workers' side of the pages
    chans = _paged_channels(tables)
    device = _device(*chans)
    got = list(device.ike_sa_table(ALL))
    assert chans[0].calls == ["ike_sa_open", "ike_sa_page"]  # its 600 rows: the first page, then the rest
    assert not any(t._cursors for t in tables)  # every cursor closed at its end
    rows = merge_rows(d.select() for d in locals_)  # what one process holding every SA lists
    want = list(ike_sa.chunks(rows, ordered=True))
    assert got == want  # the same lines in the same chunks (the same pacing)
    assert len(rows) == 1800 and {(e.conn_id - 1) % 3 for e in rows} == {0, 1, 2}
    assert sum(len(c) for c in got[1:-1]) == 1800 and max(len(c) for c in got[1:-1]) == CHUNK_ROWS
    assert got[-1][1] == "  Number of IKE SA : 1800"
    assert [int(line.split()[0]) for line in got[1]] == [e.conn_id for e in rows[:CHUNK_ROWS]]
    # no rows anywhere: no table at all, as the single process
    empty = PagedTables(lambda selection: [], lambda: False)
    answer = lambda op, *args: getattr(empty, op.removeprefix("ike_sa_"))(*args)  # noqa: E731
    assert list(_device(FakeChannel(0, answer=answer)).ike_sa_table(ALL)) == []


def test_a_display_left_early_closes_the_workers_cursors_and_charges_their_cpu_to_the_pacer() -> None:
    gateways = _filled(2, 1500)
    tables = [PagedTables(LocalDevice(gw).select, lambda: True) for gw in gateways]
    chans = _paged_channels(tables)
    device = _device(*chans)

    async def show_two_chunks() -> Pacer:
        pace = pacing.pacer()
        output = device.ike_sa_table(ALL)
        for _ in range(2):
            async with pace.turn():
                next(output)
        output.close()  # the operator quit the pager
        return pace

    pace = asyncio.run(show_two_chunks())
    assert all(c.calls.count("ike_sa_page") <= 1 for c in chans)  # 3,000 rows each, a page or two taken
    assert all(c.calls[-1] == "ike_sa_close" for c in chans)
    assert not any(t._cursors for t in tables)
    assert pace._busy_until > 0  # busy workers: the next chunk is paced


class _FakeEvents:
    def __init__(self) -> None:
        self.posted: list[Any] = []

    def post(self, body: Any, ident: int = 0) -> None:
        self.posted.append(body)


class _FakeKeepalived:
    restarts = 3

    def groups(self) -> tuple[VrrpGroupState, ...]:
        return (VrrpGroupState("GigabitEthernet0/0/1", 1, "Master", "198.51.100.1", 120, True, True, 3, 1),)


def _hrp(role: str, **counters: int) -> HrpState:
    return HrpState(role=role, peer_role="standby", priority=120, peer_priority=100, link_up=True,
                    stable_since=None, last_change="", auto_sync=True, mirror_session=False, standby_config=False,
                    preempt=True, preempt_delay=3, counters=dict(counters))


def _ha_device(*roles: str) -> tuple[FanoutDevice, list[FakeChannel], list[_FakeEvents]]:
    channels = [FakeChannel(i, answer=lambda op, *_a, r=r, i=i: _hrp(r, sas=i + 1, sas_applied=2 * i)
                            if op == "hrp_state" else {"reset_ike": 1}.get(op)) for i, r in enumerate(roles)]
    device = _device(*channels)
    device._keepalived = cast(Any, _FakeKeepalived())
    events = [_FakeEvents() for _ in roles]
    for member, ev in zip(device.members, events, strict=True):
        member.events = cast(AsyncChannel, ev)
    return device, channels, events


def test_the_role_goes_to_every_running_worker_once_and_to_a_restarted_one() -> None:
    device, _, events = _ha_device("standby", "standby", "standby")
    device.members[2].up = False
    device._on_role(HaRole.ACTIVE)
    assert [e.posted for e in events] == [[("hrp_role", ("active",))]] * 2 + [[]]  # not to a stopped one
    device.members[2].up = True
    device._tell_role(device.members[2])  # what _spawn does once a worker is up
    assert events[2].posted == [("hrp_role", ("active",))]
    device._on_role(HaRole.STANDBY)
    assert all(e.posted[-1] == ("hrp_role", ("standby",)) for e in events)


def test_hrp_state_takes_the_role_from_a_worker_and_sums_the_counters() -> None:
    device, _, _ = _ha_device("active", "active")
    st = device.hrp_state()
    assert st is not None and st.role == "active" and st.peer_role == "standby"
    assert st.counters == {"sas": 1 + 2, "sas_applied": 0 + 2, "keepalived_restarts": 3}
    assert [g.state for g in st.vrrp] == ["Master"]  # the supervisor's keepalived, not the workers'
    assert merge_hrp([None, None]) is None
    assert _device(FakeChannel(0)).hrp_state() is None  # no hrp enable: no hot standby


def test_standby_refuses_resets_before_any_worker_is_asked() -> None:
    device, channels, _ = _ha_device("standby", "standby")
    for reset in (device.reset_ike_sa, device.reset_ipsec_sa):
        with pytest.raises(DeviceError, match="HRP standby state"):
            reset(ALL)
    assert all("reset_ike" not in c.calls and "reset_ipsec" not in c.calls for c in channels)
    active, _, _ = _ha_device("active", "active")
    assert active.reset_ike_sa(ALL) == 2


def test_load_lets_the_first_worker_announce_initial_contact_before_the_others_start() -> None:
    asked: list[tuple[int, tuple[Any, ...]]] = []

    def answer(index: int) -> Callable[..., Any]:
        def on(op: str, *args: Any) -> Any:
            asked.append((index, args))
            return index == 0  # worker 0's first SA carries INITIAL_CONTACT: the rest of the load waits
        return on

    chans = [FakeChannel(i, answer=answer(i)) for i in range(3)]
    device = _device(*chans)
    device.load(30, concurrency=60)
    assert asked == [(0, (10, 20, True))]
    device._on_event(device.members[0], ("load_open",))
    assert asked[1:] == [(1, (10, 20, False)), (2, (10, 20, False))]
    device._on_event(device.members[0], ("load_open",))  # told twice: nothing more starts
    assert len(asked) == 3


def test_a_worker_is_busy_for_the_pacer_when_it_worked_between_pages() -> None:
    (gw,) = _filled(1, 600)
    tables = PagedTables(LocalDevice(gw).select)
    cursor, ids, _, _, busy = tables.open(ALL, CHUNK_ROWS)
    assert len(ids) == CHUNK_ROWS and not busy  # (made just now: nothing else happened)
    *_, busy = tables.page(cursor, CHUNK_ROWS)
    assert not busy  # nothing between the two answers but the page itself
    start = time.thread_time()
    while time.thread_time() - start < 0.02:  # the loop negotiates between two pages
        sum(range(1000))
    *_, busy = tables.page(cursor, CHUNK_ROWS)
    assert busy


def test_display_output_is_paced_while_a_worker_reports_new_sas() -> None:
    gateways = _filled(2, 600)
    tables = [PagedTables(LocalDevice(gw).select, lambda: False) for gw in gateways]  # idle between pages
    chans = _paged_channels(tables)
    device = _device(*chans)

    async def first_chunks() -> Pacer:
        pace = pacing.pacer()
        output = device.ike_sa_table(ALL)
        async with pace.turn():
            next(output)
        assert pace._busy_until < 0  # idle workers: the output runs at full speed
        device._on_event(device.members[1], ("sas", [(99, ("192.0.2.1", 500, 2, device.members[1].placement))]))
        async with pace.turn():
            next(output)
        output.close()
        return pace

    assert asyncio.run(first_chunks())._busy_until > 0  # a worker negotiates: paced
    assert device.members[1].held == {99: ("192.0.2.1", 500, 2, device.members[1].placement)}


def test_pages_after_the_first_come_from_every_worker_at_once_until_all_are_shown(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ikegate.workers.fanout.PAGE_ROWS", 700)
    gateways = _filled(3, 700)  # 1,400 rows per worker: its first page, then 700 and 200
    locals_ = [LocalDevice(gw) for gw in gateways]
    tables = [PagedTables(d.select, lambda: False) for d in locals_]
    chans = _paged_channels(tables)
    got = list(_device(*chans).ike_sa_table(ALL))
    assert got == list(ike_sa.chunks(merge_rows(d.select() for d in locals_), ordered=True))
    assert all(c.calls == ["ike_sa_open", "ike_sa_page", "ike_sa_page"] for c in chans)
    assert not any(t._cursors for t in tables)

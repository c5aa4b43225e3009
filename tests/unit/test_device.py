"""The Device seam: its plain-data types, the fan-out helpers, and the in-process implementation over an
in-memory lab (HQ template responder, Branch1 auto, Branch2 traffic-based; time stepped explicitly)."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from collections.abc import Iterator
from typing import cast

import pytest

from ikegate.cli.commands.runtime import Runtime
from ikegate.cli.render import ike_sa
from ikegate.cli.render import ping as ping_render
from ikegate.cli.shell import Shell
from ikegate.dataplane.packet import build_ipv4, parse_ip
from ikegate.gateway.controller import Gateway
from ikegate.gateway.device import (
    ALL,
    Device,
    DeviceError,
    DeviceModel,
    PingResult,
    Selection,
    Statistics,
    merge_offline,
    merge_rendered,
    merge_rows,
    open_local,
)
from ikegate.gateway.local import LocalDevice
from ikegate.sad import IkeSaEntry, IpsecSaEntry, OfflineRecord, Placement, SaDatabase, SaEntry
from tests.conftest import device_shell, ok, runtime_tree
from tests.protocol.netsim import Net, lab, lab_config

HQ, BR1, BR2 = "127.0.0.11", "127.0.0.12", "127.0.0.13"


def _lab() -> tuple[Net, LocalDevice, LocalDevice, LocalDevice]:
    net, hq, b1, b2 = lab()
    net.step(1)
    devices = [LocalDevice(gw, clock=lambda: net.now) for gw in (hq, b1, b2)]
    return net, devices[0], devices[1], devices[2]


def _bring_up_branch2(net: Net, b2: LocalDevice) -> None:
    """Branch2's policy is traffic-based: a packet from its LAN to HQ's brings the tunnel up."""
    b2.inject([build_ipv4("10.1.2.5", "10.0.0.9", 17, bytes(8))])
    net.step(1)


def _ids(rows: list[SaEntry]) -> list[int]:
    return [e.conn_id for e in rows]


# -- plain data -------------------------------------------------------------------------------------


def test_local_device_satisfies_the_protocol() -> None:
    device: Device = LocalDevice(Gateway(lab_config("hq")))  # mypy checks the structural match
    assert device.model == DeviceModel() and device.select() == []


@pytest.mark.parametrize("sel", [
    Selection(),
    Selection(conn_id=7),
    Selection(remote="2001:db8::1", placement=Placement(3, 1), phase=2),
    Selection(policy="site", seq=10, spi=0x1234, phase=1),
])
def test_selection_is_plain_data_both_ways(sel: Selection) -> None:
    record = sel.as_record()
    assert all(isinstance(v, int | str) for v in record.values())
    assert Selection.from_record(record) == sel
    assert Selection.from_record({"op": "reset", **record}) == sel  # the control socket's request as is


@pytest.mark.parametrize("record", [{"slot": 1}, {"cpu": 0}, {"phase": 3}, {"seq": 10}, {"conn_id": "x"}])
def test_selection_refuses_what_cannot_select(record: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Selection.from_record(record)


def test_statistics_total_adds_every_field() -> None:
    a = Statistics(ike_sas={1: 1, 2: 3}, negotiating={2: 1}, ipsec_sas={2: 2}, engines=4, resets=1,
                   negotiations_failed={"AUTH": 1}, esp={("packets", "in"): 5})
    b = Statistics(ike_sas={2: 2}, ipsec_sas={1: 1, 2: 1}, engines=2, resets=2, dropped=7,
                   negotiations_failed={"AUTH": 2, "NO_PROPOSAL_CHOSEN": 1}, esp={("packets", "in"): 1,
                                                                                 ("drops", "icv"): 1})
    total = Statistics.total([a, b])
    assert total.ike_sas == {1: 1, 2: 5} and total.negotiating == {2: 1} and total.ipsec_sas == {1: 1, 2: 3}
    assert (total.engines, total.resets, total.dropped) == (6, 3, 7)
    assert total.negotiations_failed == {"AUTH": 3, "NO_PROPOSAL_CHOSEN": 1}
    assert total.esp == {("packets", "in"): 6, ("drops", "icv"): 1}
    assert Statistics.total([a]) == a and Statistics.total([]) == Statistics()
    every = {f.name for f in dataclasses.fields(Statistics)}
    assert every <= set(dataclasses.asdict(total))  # no field is left out of the sum


def test_merge_offline_keeps_time_order_and_the_newest() -> None:
    def rec(t: float) -> OfflineRecord:
        return OfflineRecord(ipaddress.ip_address("192.0.2.1"), 500, "dpd timeout", 2, t)

    merged = merge_offline([[rec(1), rec(4)], [rec(2), rec(3), rec(5)]])
    assert [r.time for r in merged] == [1, 2, 3, 4, 5]
    assert [r.time for r in merge_offline([[rec(1), rec(4)], [rec(2)]], capacity=2)] == [2, 4]
    assert merge_offline([[rec(1)]], capacity=0) == []


def test_ping_rendering_is_vrp_transcript() -> None:
    lines = ping_render.render(PingResult("10.0.0.1", 56, (1.4, None, 3.0)))
    assert lines == [
        "  PING 10.0.0.1: 56  data bytes, press CTRL_C to break",
        "    Reply from 10.0.0.1: bytes=56 Sequence=1 ttl=64 time=1 ms",
        "    Request time out",
        "    Reply from 10.0.0.1: bytes=56 Sequence=3 ttl=64 time=3 ms",
        "",
        "  --- 10.0.0.1 ping statistics ---",
        "    3 packet(s) transmitted",
        "    2 packet(s) received",
        "    33.33% packet loss",
        "    round-trip min/avg/max = 1/2/3 ms",
    ]
    lost = ping_render.render(PingResult("10.0.0.1", 56, (None,)))
    assert lost[-1] == "    100.00% packet loss" and not any("round-trip" in x for x in lost)


# -- the in-process implementation -------------------------------------------------------------------


def test_select_by_every_key_in_display_order() -> None:
    net, hq, b1, b2 = _lab()
    _bring_up_branch2(net, b2)
    rows = hq.select()
    assert len(rows) == 4 and _ids(rows) == sorted(_ids(rows), reverse=True)
    ike = [e for e in rows if isinstance(e, IkeSaEntry)]
    ipsec = [e for e in rows if isinstance(e, IpsecSaEntry)]
    assert len(ike) == len(ipsec) == 2
    assert hq.select(Selection(phase=1)) == sorted(ike, key=lambda e: -e.conn_id)
    assert hq.select(Selection(phase=2)) == sorted(ipsec, key=lambda e: -e.conn_id)
    by_br1 = hq.select(Selection(remote=BR1))
    assert {str(e.peer_address) for e in by_br1} == {BR1} and len(by_br1) == 2
    assert hq.select(Selection(conn_id=ipsec[0].conn_id)) == [ipsec[0]]
    assert hq.select(Selection(conn_id=10**6)) == []
    assert hq.select(Selection(placement=Placement(0, 0))) == rows
    assert hq.select(Selection(placement=Placement(1, 0))) == []
    # by policy (and seq), and by either ESP SPI of a pair
    assert hq.select(Selection(policy="hq", seq=10, phase=2)) == hq.select(Selection(phase=2))
    assert hq.select(Selection(policy="hq", seq=11)) == [] and hq.select(Selection(policy="nope")) == []
    child = ipsec[0]
    assert hq.select(Selection(spi=child.spi_in)) == [child] == hq.select(Selection(spi=child.spi_out))
    assert hq.select(Selection(spi=child.spi_in, remote=str(child.peer_address))) == [child]
    other = BR2 if str(child.peer_address) == BR1 else BR1
    assert hq.select(Selection(spi=child.spi_in, remote=other)) == []
    assert hq.select(Selection(spi=child.spi_in, phase=1)) == []
    assert hq.children(ike[0].conn_id) == [e for e in ipsec if e.parent == ike[0].conn_id]


def test_rows_merged_from_parts_are_the_whole() -> None:
    """What a fan-out device does with its workers' answers gives what one process lists."""
    net, hq, b1, b2 = _lab()
    _bring_up_branch2(net, b2)
    rows = hq.select()
    odd = [e for e in rows if e.conn_id % 2]
    even = [e for e in rows if not e.conn_id % 2]
    assert merge_rows([odd, even]) == rows == merge_rows([rows, []])


def test_counters_are_synced_only_when_asked() -> None:
    net, hq, b1, b2 = _lab()
    for seq in (1, 2, 3):
        b1.gateway.ping(net.now, "10.1.1.1", "10.0.0.1", 9, seq)
        net.pump()
    stale = b1.select(Selection(phase=2))
    assert isinstance(stale[0], IpsecSaEntry) and stale[0].packets_out == 0
    fresh = b1.select(Selection(phase=2), counters=True)
    assert isinstance(fresh[0], IpsecSaEntry) and (fresh[0].packets_out, fresh[0].packets_in) == (3, 3)


def test_reset_ike_sa_counts_children_and_policy_brings_it_back() -> None:
    net, hq, b1, b2 = _lab()
    old = set(_ids(b1.select()))
    ike = b1.select(Selection(phase=1))[0]
    assert b1.reset_ike_sa(Selection(conn_id=ike.conn_id)) == 2  # the IKE SA and its IPsec SA
    net.step(10)
    assert len(b1.select()) == 2 and not old & set(_ids(b1.select()))  # auto policy: re-established
    assert b1.reset_ike_sa(Selection(conn_id=10**6)) == 0
    assert b1.reset_ike_sa(Selection(remote="192.0.2.99")) == 0
    st = b1.statistics()
    assert st.resets == 3
    offline = b1.offline()
    assert offline and offline[-1].peer_address == ipaddress.ip_address(HQ)
    assert b1.offline(peer="192.0.2.99") == [] and b1.offline(placement=Placement(0, 0)) == offline


def test_reset_ipsec_sa_keeps_the_ike_sa() -> None:
    net, hq, b1, b2 = _lab()
    _bring_up_branch2(net, b2)
    child = hq.select(Selection(remote=BR2, phase=2))[0]
    assert isinstance(child, IpsecSaEntry)
    assert hq.reset_ipsec_sa(Selection(spi=child.spi_in)) == 1
    net.step(1)
    assert [e.phase for e in hq.select(Selection(remote=BR2))] == [1]
    assert len(hq.select(Selection(remote=BR1))) == 2  # the other branch is untouched
    assert hq.reset_ipsec_sa(Selection(policy="hq", seq=10)) == 1  # Branch1's
    assert hq.reset_ipsec_sa(ALL) == 0


@pytest.mark.parametrize(("op", "sel"), [
    ("reset_ike_sa", Selection(policy="hq")),
    ("reset_ike_sa", Selection(spi=300)),
    ("reset_ike_sa", Selection(phase=2)),
    ("reset_ipsec_sa", Selection(conn_id=1)),
    ("reset_ipsec_sa", Selection(placement=Placement(0, 0))),
])
def test_reset_refuses_selections_it_does_not_honour(op: str, sel: Selection) -> None:
    net, hq, b1, b2 = _lab()
    before = hq.select()
    with pytest.raises(ValueError, match="does not select by"):
        getattr(hq, op)(sel)
    assert hq.select() == before and hq.statistics().resets == 0


def test_statistics_carry_every_controller_counter() -> None:
    """Every counter of the controller reaches the management plane, copied (not shared)."""
    net, hq, b1, b2 = _lab()
    hq.gateway.stats.auth_failures = 3
    hq.gateway.stats.negotiations_failed["AUTHENTICATION_FAILED"] = 1
    st = hq.statistics()
    assert st.auth_failures == 3 and st.negotiations_failed == {"AUTHENTICATION_FAILED": 1}
    hq.gateway.stats.negotiations_failed["X"] = 1
    assert st.negotiations_failed == {"AUTHENTICATION_FAILED": 1}  # a snapshot, not a view


def test_statistics_match_the_rows() -> None:
    net, hq, b1, b2 = _lab()
    _bring_up_branch2(net, b2)
    st = hq.statistics()
    assert st.ike_sas == {1: 0, 2: 2} and st.ipsec_sas == {1: 0, 2: 2} and st.negotiating == {1: 0, 2: 0}
    assert st.engines == 2 and st.negotiations_succeeded == 2
    assert st.esp[("packets", "in")] == 1  # Branch2's trigger packet, decrypted at HQ


def test_inject_and_take_lan_output_carry_packets_through_the_tunnel() -> None:
    net, hq, b1, b2 = _lab()
    udp = build_ipv4("10.1.1.7", "10.0.0.20", 17, b"\x0f\xa0\x13\x88\x00\x0c\x00\x00abcd")
    assert b1.inject([udp, udp]) == 2
    net.pump()
    out = hq.take_lan_output()
    assert out == [udp, udp] and str(parse_ip(out[0]).dst_ip) == "10.0.0.20"
    assert hq.take_lan_output() == []  # taken means gone


def test_ping_needs_live_sockets() -> None:
    net, hq, b1, b2 = _lab()
    with pytest.raises(DeviceError, match="not available"):
        b1.ping("10.1.1.1", "10.0.0.1", 1, 56)
    shell = device_shell(b1.gateway, clock=lambda: net.now)
    assert shell.run("ping 10.0.0.1").error == "Error: ping is not available on this session."


def test_apply_config_takes_the_new_configuration() -> None:
    net, hq, b1, b2 = _lab()
    config = lab_config("branch1", {"sysname Branch1": "sysname Renamed"})
    b1.apply_config(config)
    assert b1.config is config and b1.gateway.config is config
    assert len(b1.select()) == 2  # existing SAs stay


def test_the_shell_reset_and_the_device_reset_are_one() -> None:
    """``reset ike sa`` typed at the CLI is the device's reset: same counts, same statistics."""
    net, hq, b1, b2 = _lab()
    shell = device_shell(b1.gateway, clock=lambda: net.now)
    conn = b1.select(Selection(phase=1))[0].conn_id
    assert ok(shell, f"reset ike sa conn-id {conn}") == []
    assert b1.select(Selection(conn_id=conn)) == [] and b1.statistics().resets == 1
    assert ok(shell, "reset ike sa conn-id 4000") == ["Info: No SA matches the specified conditions; "
                                                      "nothing was deleted."]


def test_open_local_builds_an_unopened_in_process_device() -> None:
    model = DeviceModel("USG6680E", (Placement(1, 0), Placement(3, 1)))
    device = open_local(lab_config("hq"), model, ike_port=20500, natt_port=20501)
    assert isinstance(device, LocalDevice) and device.model is model
    assert device.gateway.placements == [Placement(1, 0), Placement(3, 1)] and device.gateway.ike_port == 20500
    assert device.local_addresses() == [HQ] and device.lan_addresses() == ["10.0.0.1"]
    assert device.now() == 0.0
    asyncio.run(device.close(0.1))  # closing what was never opened is harmless


# -- a fan-out over two workers: the interface composes ------------------------------------------------


class _FanOut:
    """What the workers issue builds, reduced to the routing and merging rules of the seam: workers own
    conn-id residue classes; a conn-id goes to its owner, everything else to every worker, and the answers
    are merged with the seam's helpers. (A test double: the real one talks to processes.)"""

    def __init__(self, workers: list[LocalDevice]) -> None:
        self.workers = workers
        self.resets = 0  # commands, however many workers each one asked

    def now(self) -> float:
        return self.workers[0].now()

    @property
    def model(self) -> DeviceModel:
        return self.workers[0].model

    def _owner(self, conn_id: int) -> LocalDevice:
        return self.workers[(conn_id - 1) % len(self.workers)]

    def _targets(self, sel: Selection) -> list[LocalDevice]:
        return [self._owner(sel.conn_id)] if sel.conn_id is not None else self.workers

    def select(self, selection: Selection = ALL, *, counters: bool = False) -> list[SaEntry]:
        return merge_rows(w.select(selection, counters=counters) for w in self._targets(selection))

    def ike_sa_table(self, selection: Selection = ALL) -> Iterator[list[str]]:
        return ike_sa.rendered_chunks(merge_rendered([ike_sa.rendered(w.select(selection))
                                                      for w in self._targets(selection)]))

    def reset_ike_sa(self, selection: Selection = ALL) -> int:
        self.resets += 1
        return sum(w.reset_ike_sa(selection) for w in self._targets(selection))

    def statistics(self) -> Statistics:
        return dataclasses.replace(Statistics.total(w.statistics() for w in self.workers), resets=self.resets)

    def offline(self, peer: str | None = None, placement: Placement | None = None) -> list[OfflineRecord]:
        return merge_offline([w.offline(peer, placement) for w in self.workers])


def _workers() -> tuple[Net, LocalDevice, _FanOut]:
    """HQ, and Branch1 + Branch2 standing in for two workers of one device (ids 1, 3, 5… and 2, 4, 6…)."""
    net = Net()
    hq = net.add(Gateway(lab_config("hq")))
    workers = []
    for k, name in enumerate(("branch1", "branch2")):
        gw = Gateway(lab_config(name))
        gw.sad = SaDatabase(conn_id_offset=k, conn_id_stride=2)
        workers.append(LocalDevice(net.add(gw), clock=lambda: net.now))
    for gw in (hq, *(w.gateway for w in workers)):
        gw.start(net.now)
    net.step(1)
    _bring_up_branch2(net, workers[1])
    return net, LocalDevice(hq, clock=lambda: net.now), _FanOut(workers)


def test_a_fan_out_merges_rows_routes_conn_ids_and_sums_resets() -> None:
    net, hq, device = _workers()
    b1, b2 = device.workers
    rows = device.select()
    assert len(rows) == 4 and _ids(rows) == sorted(_ids(rows), reverse=True)
    assert {e.conn_id % 2 for e in b1.select()} == {1} and {e.conn_id % 2 for e in b2.select()} == {0}
    assert device.select(Selection(phase=2)) == merge_rows([b1.select(Selection(phase=2)),
                                                            b2.select(Selection(phase=2))])
    st = device.statistics()
    assert st.ike_sas[2] == 2 and st.ipsec_sas[2] == 2 and st.engines == 2
    # a conn-id reaches its owner only; the other worker is not even asked
    target = b2.select(Selection(phase=1))[0].conn_id
    assert device.select(Selection(conn_id=target)) == b2.select(Selection(conn_id=target))
    assert device.reset_ike_sa(Selection(conn_id=target)) == 2
    assert (b1.statistics().resets, b2.statistics().resets) == (0, 1)
    net.step(1)
    assert len(b1.select()) == 2 and b2.select() == []  # Branch2's policy waits for traffic again
    # everything: every worker, counts summed, offline histories merged in time order
    net.step(10)
    assert device.reset_ike_sa() == 2 and device.statistics().resets == 2  # two commands
    assert sum(w.statistics().resets for w in device.workers) == 3  # three worker operations
    offline = device.offline()
    assert len(offline) == len(b1.offline()) + len(b2.offline()) == 4  # each tunnel: its IKE and IPsec SA
    assert [r.time for r in offline] == sorted(r.time for r in offline) and offline[0].time < offline[-1].time


def test_the_cli_runs_unchanged_on_a_fan_out() -> None:
    """``display ike sa`` through the fan-out lists what each worker holds, in one table."""
    net, hq, device = _workers()
    shell = Shell(lab_config("branch1"), tree=runtime_tree(DeviceModel()),
                  device=Runtime(cast(Device, device)))
    text = ok(shell, "display ike sa")
    for e in device.select():
        assert any(line.split()[:1] == [str(e.conn_id)] for line in text), e.conn_id
    assert ok(shell, "display ike statistics")[4].split()[-3:] == ["0", "/", "2"]

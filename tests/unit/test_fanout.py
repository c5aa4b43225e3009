"""The supervisor's fan-out rules without processes: routing by conn-id and placement, all-or-none
configuration (a worker refusing in the prepare phase means no worker commits), a silent worker taken
out of service. The channels are doubles; tests/system/test_workers.py runs the real processes."""

from __future__ import annotations

from typing import Any, cast

import pytest

from ikegate.gateway.device import DeviceError, DeviceModel, Selection, make_device
from ikegate.sad import Placement
from ikegate.workers.fanout import FanoutDevice, worker_count
from ikegate.workers.rpc import Channel, WorkerGone, gather
from tests.protocol.netsim import lab_config


class FakeChannel:
    """Answers like a worker's call channel; ``refuse`` makes ``prepare`` fail there, ``dead`` every call."""

    def __init__(self, index: int, refuse: bool = False, dead: bool = False) -> None:
        self.index, self.refuse, self.dead = index, refuse, dead
        self.calls: list[str] = []
        self._next: Any = None

    def send(self, op: str, *args: Any) -> None:
        if self.dead:
            raise WorkerGone("gone")
        self.calls.append(op)
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
    return config


def test_configuration_is_committed_on_every_worker_after_all_prepared() -> None:
    a, b = FakeChannel(0), FakeChannel(1)
    device = _device(a, b)
    device.apply_config(_changed(device))
    assert a.calls == b.calls == ["prepare", "commit"]
    device.apply_config(device.config)  # unchanged: only the auto policies' check
    assert a.calls[-1] == b.calls[-1] == "start"


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

"""Golden: the supervisor's CLI prints exactly what one process holding the same SAs prints.

A two-worker :class:`FanoutDevice` (real worker processes, real loopback sockets) in this event loop with
a Branch1 peer beside it; its rows are then copied, under their conn-ids, into a single-process device's
SA database, and the same commands on both must print the same lines (the wall clock is pinned)."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import random

import pytest

from ikegate.cli.commands.runtime import Runtime
from ikegate.cli.loader import load_config
from ikegate.cli.shell import Shell
from ikegate.gateway.controller import Gateway
from ikegate.gateway.device import DeviceModel, Selection, open_local
from ikegate.gateway.local import LocalDevice
from ikegate.sad import IkeSaEntry, IpsecSaEntry
from ikegate.workers.fanout import FanoutDevice
from tests.conftest import ok, runtime_tree
from tests.system.procs import free_port_pair, lab_text
from tests.waiting import until

pytestmark = pytest.mark.system

WALL = dt.datetime(2026, 1, 2, 3, 4, 5, 678000)


def test_fan_out_cli_output_is_the_single_process_output() -> None:
    port = free_port_pair()
    n = random.randrange(20, 120)
    hq_addr, br_addr = f"127.0.2.{n}", f"127.0.2.{n + 100}"
    hq_config, errors = load_config(lab_text("hq", **{"127.0.0.11": hq_addr}).replace(
        "#\nreturn", "#\nike call admission limit in-negotiation-sa per-address 100000\n#\nreturn"))
    assert errors == []
    br_config, errors = load_config(lab_text("branch1", **{"127.0.0.11": hq_addr, "127.0.0.12": br_addr}))
    assert errors == []
    model = DeviceModel()
    fan = FanoutDevice(hq_config, model, workers=2, ike_port=port, natt_port=port + 1)
    br = open_local(br_config, model, ike_port=port, natt_port=port + 1)
    commands = ["display ike sa", f"display ike sa remote {br_addr}", "display ipsec sa brief",
                "display ike sa | include RD", "display ike sa | count"]

    async def main() -> tuple[list[list[str]], list[list[str]], list[int]]:
        await fan.open()
        await br.open()
        try:
            await until(lambda: len(br.select(Selection(phase=2))) == 1, what="the auto tunnel")
            br.load(11)
            await until(lambda: len(fan.select(Selection(phase=2))) == 12, what="the loaded SAs")
            rows = fan.select()
            reference = Gateway(hq_config, ike_port=port, natt_port=port + 1)
            for entry in sorted(rows, key=lambda e: (e.phase, e.conn_id)):
                if isinstance(entry, IkeSaEntry):
                    reference.sad.add_ike(dataclasses.replace(entry, child_ids=[]))
                else:
                    assert isinstance(entry, IpsecSaEntry)
                    reference.sad.add_ipsec(dataclasses.replace(entry))
            one = LocalDevice(reference, model, clock=fan.now)
            shells = [Shell(hq_config, tree=runtime_tree(model), device=Runtime(d, wall=lambda: WALL))
                      for d in (fan, one)]
            got = [ok(shells[0], c) for c in commands]
            want = [ok(shells[1], c) for c in commands]
            return got, want, [e.conn_id for e in rows]
        finally:
            await br.close(3.0)
            await fan.close(3.0)

    got, want, ids = asyncio.run(main())
    assert {(i - 1) % 2 for i in ids} == {0, 1}, "rows from both workers"
    for command, g, w in zip(commands, got, want, strict=True):
        assert g == w, command
    assert any(str(max(ids)) in line for line in got[0])

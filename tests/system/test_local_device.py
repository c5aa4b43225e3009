"""The in-process Device over real loopback sockets: open binds and starts the auto policy, ``ping`` is
measured through the tunnel, ``close`` deletes every SA (the peer hears it) and frees the ports."""

from __future__ import annotations

import asyncio
import random
import socket

import pytest

from ikegate.cli.loader import load_config
from ikegate.gateway.device import Device, DeviceModel, Selection, open_local
from tests.system.procs import free_port_pair, lab_text
from tests.waiting import until

pytestmark = pytest.mark.system


def _device(text: str, port: int) -> Device:
    config, errors = load_config(text)
    assert errors == [], errors
    return open_local(config, DeviceModel(), ike_port=port, natt_port=port + 1)


def test_open_ping_close_over_loopback() -> None:
    port = free_port_pair()
    n = random.randrange(20, 120)
    hq_addr, br_addr = f"127.0.8.{n}", f"127.0.8.{n + 100}"
    hq = _device(lab_text("hq", **{"127.0.0.11": hq_addr}), port)
    br = _device(lab_text("branch1", **{"127.0.0.11": hq_addr, "127.0.0.12": br_addr}), port)

    async def main() -> None:
        await hq.open()
        await br.open()
        try:
            await until(lambda: len(br.select(Selection(phase=2))) == 1, what="Branch1's auto tunnel")
            result = await br.ping("10.1.1.1", "10.0.0.1", 2, 64)
            assert result.destination == "10.0.0.1" and result.size == 64 and len(result.rtts) == 2
            assert all(t is not None and t >= 0 for t in result.rtts), result
            st = br.statistics()
            assert st.esp[("packets", "out")] >= 2 and st.esp[("packets", "in")] >= 2
            await until(lambda: len(hq.select()) == 2, what="HQ's side of the tunnel")
        finally:
            await br.close(3.0)
        # Branch1's Delete reached HQ: its SAs went, nothing came back (a shutdown re-establishes nothing)
        await until(lambda: hq.select() == [], what="HQ to hear the Deletes")
        assert br.select() == [] and br.statistics().engines == 0
        await hq.close(3.0)

    asyncio.run(main())
    for address in (hq_addr, br_addr):  # both devices let go of their sockets
        for p in (port, port + 1):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((address, p))

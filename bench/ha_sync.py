"""Hot-standby sync cost, in memory (issue 17): the active's set-up rate with the sync stream on versus a
single node, the rate at which a standby applies the stream, and a bulk sync of N SAs.

Branch1 loads N IKE SAs (each with a Child SA) onto HQ, stepping a clock by hand (tests/protocol/netsim.py).
HQ's own work is timed (process time inside its gateway calls and its sync node); the standby's apply work
is timed apart, as it runs on the other machine in a real pair. Issue 17 asks the active's set-up rate not to
fall below 80 % of a single node's.

    python bench/ha_sync.py [-n 2000] [--bulk 10000]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.protocol.netsim import Net, lab_config

from ikegate.gateway.controller import Gateway
from ikegate.ha.channel import Channel
from ikegate.ha.sync import Role, SyncNode

KEY = b"bench-key"


class Clocked:
    """Process time spent inside the wrapped callables."""

    def __init__(self) -> None:
        self.cpu = 0.0

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kw: Any) -> Any:
            t0 = time.process_time()
            try:
                return fn(*args, **kw)
            finally:
                self.cpu += time.process_time() - t0
        return timed


def build(sync: bool) -> tuple[Net, Gateway, Gateway, Clocked, SyncNode | None, SyncNode | None, Clocked]:
    net = Net()
    hq = Gateway(lab_config("hq"))
    hq.config.ike_admission.per_address = 100000
    hq.config.ike_admission.in_negotiation = 100000
    branch = net.add(Gateway(lab_config("branch1")))
    active_clock, standby_clock = Clocked(), Clocked()
    active = standby = None
    if sync:
        active = SyncNode(hq, Channel(KEY))
        standby = SyncNode(Gateway(lab_config("hq")), Channel(KEY))
        active.set_role(Role.ACTIVE, net.now)
        standby.set_role(Role.STANDBY, net.now)
        link(active, standby, net.now, standby_clock)
    for name in ("receive_datagram", "handle_timer"):
        setattr(hq, name, active_clock.wrap(getattr(hq, name)))
    net.add(hq)
    return net, hq, branch, active_clock, active, standby, standby_clock


def link(active: SyncNode, standby: SyncNode, now: float, standby_clock: Clocked) -> None:
    """Carry the sync datagrams both ways until quiet; the standby's part is timed apart."""
    for _ in range(1000):
        out_a = active.datagrams_to_send()
        out_b = standby.datagrams_to_send()
        if not out_a and not out_b:
            return
        t0 = time.process_time()
        for data in out_a:
            standby.receive(data, now)
        standby_clock.cpu += time.process_time() - t0
        for data in out_b:
            active.receive(data, now)


def run_setups(n: int, sync: bool) -> tuple[float, float, float, int]:
    """(wall seconds, active CPU seconds, standby CPU seconds, SAs on the standby) for n set-ups."""
    net, hq, branch, clock, active, standby, standby_clock = build(sync)
    branch.load(net.now, n, concurrency=64)
    start = time.perf_counter()
    for _ in range(100000):
        net.pump()
        if active is not None and standby is not None:
            t0 = time.process_time()
            active.flush(net.now)
            clock.cpu += time.process_time() - t0
            link(active, standby, net.now, standby_clock)
        if sum(1 for sa in hq.engines() if sa.established) >= n:
            break
        net.step(0.01)
    wall = time.perf_counter() - start
    synced = sum(1 for sa in standby.gw.engines() if sa.established) if standby is not None else 0
    return wall, clock.cpu, standby_clock.cpu, synced


def bulk(n: int) -> tuple[float, float, int, int]:
    """A standby joining a node that holds n SAs: (active's CPU to send, standby's CPU to apply, bytes, SAs)."""
    net, hq, branch, _clock, _a, _s, _sc = build(False)
    branch.load(net.now, n, concurrency=128)
    for _ in range(100000):
        net.pump()
        if sum(1 for sa in hq.engines() if sa.established) >= n:
            break
        net.step(0.01)
    active = SyncNode(hq, Channel(KEY))
    standby = SyncNode(Gateway(lab_config("hq")), Channel(KEY))
    active.set_role(Role.ACTIVE, net.now)
    standby.set_role(Role.STANDBY, net.now)
    hello_b = standby.datagrams_to_send()
    for data in active.datagrams_to_send():  # the active's hello: the standby learns its life
        standby.receive(data, net.now)
    hello_b += standby.datagrams_to_send()
    t0 = time.process_time()
    for data in hello_b:  # the standby asks; the active answers with everything
        active.receive(data, net.now)
    stream = active.datagrams_to_send()
    t_send = time.process_time() - t0
    t0 = time.process_time()
    for data in stream:
        standby.receive(data, net.now)
    t_apply = time.process_time() - t0
    synced = sum(1 for sa in standby.gw.engines() if sa.established)
    return t_send, t_apply, sum(map(len, stream)), synced


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=2000, help="IKE SAs set up per run (default %(default)s)")
    ap.add_argument("--bulk", type=int, default=10000, help="SAs in the bulk sync (default %(default)s)")
    args = ap.parse_args()
    _, single_cpu, _, _ = run_setups(args.n, sync=False)
    _, pair_cpu, standby_cpu, synced = run_setups(args.n, sync=True)
    print(f"set-up of {args.n} IKE SAs + Child SAs on the responder (HQ), in memory, process time")
    print(f"  single node            : {single_cpu:6.2f} s CPU  -> {args.n / single_cpu:7.0f} SAs/s")
    print(f"  active with sync       : {pair_cpu:6.2f} s CPU  -> {args.n / pair_cpu:7.0f} SAs/s "
          f"({100 * single_cpu / pair_cpu:.0f} % of single; issue 17 asks >= 80 %)")
    print(f"  standby applying stream: {standby_cpu:6.2f} s CPU  -> {args.n / max(standby_cpu, 1e-9):7.0f} SAs/s "
          f"({synced} SAs held)")
    t_send, t_apply, size, held = bulk(args.bulk)
    print(f"bulk sync of {args.bulk} SAs to a joining standby")
    print(f"  active builds+seals    : {t_send:6.2f} s CPU ({size / 1e6:.1f} MB on the link)")
    print(f"  standby opens+applies  : {t_apply:6.2f} s CPU ({held} SAs held)")


if __name__ == "__main__":
    main()

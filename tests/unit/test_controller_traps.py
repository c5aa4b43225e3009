"""The controller arms the traps of traffic-based policies through the dataplane: armed with the
configuration, armed again after every deletion (the seed's ARM_TRAP), disarmed only at shutdown. One
mechanism: the dataplane's SPD holds what the controller told it (it is built with ``arm_traps=False``)."""

from __future__ import annotations

from ikegate.sad import IkeSaEntry
from tests.protocol.netsim import lab

SITE = ("site", 10)  # Branch2's traffic-based policy


def test_traffic_based_policy_is_armed_by_the_controller_and_auto_is_not() -> None:
    net, hq, b1, b2 = lab()
    assert b2.dataplane.spd.armed(SITE)
    assert not any(b1.dataplane.spd.armed(key) for key in [("map", 10), ("site", 10)])
    b2.reload(b2.config)  # a configuration change keeps the trap armed
    assert b2.dataplane.spd.armed(SITE)


def test_reset_leaves_the_trap_armed_and_traffic_brings_the_tunnel_back() -> None:
    net, hq, b1, b2 = lab()
    b2.ping(net.now, "10.1.2.1", "10.0.0.1", 9, 1)
    net.pump()
    assert sorted(e.phase for e in b2.sad.entries()) == [1, 2]
    assert b2.reset_ike_sa(net.now) == 2
    net.step(30)
    assert list(b2.sad.entries()) == []  # traffic-based: nothing comes back by itself
    assert b2.dataplane.spd.armed(SITE)
    b2.ping(net.now, "10.1.2.1", "10.0.0.1", 9, 2)
    net.pump()
    assert sorted(e.phase for e in b2.sad.entries()) == [1, 2]


def test_shutdown_disarms_so_traffic_starts_nothing() -> None:
    net, hq, b1, b2 = lab()
    b2.shutdown(net.now)
    assert not b2.dataplane.spd.armed(SITE)
    started = b2.stats.negotiations_started
    b2.ping(net.now, "10.1.2.1", "10.0.0.1", 9, 1)
    net.pump()
    assert b2.stats.negotiations_started == started
    assert not any(isinstance(e, IkeSaEntry) for e in b2.sad.entries())

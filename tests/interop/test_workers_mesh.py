"""LAN packets read by a worker that does not own their flow's SA reach the owner straight over the workers'
mesh (``ikegate.workers.mesh``), not through the supervisor; a restarted owner gets its inbox back.

    hostA -- gwA [ikegate --workers 2, multi-queue TUN] == WAN == gwB [ikegate, template] -- hostB

One site-to-site tunnel is one peer, so its SAs live on one worker of gwA (``peer_owner``); every new UDP
flow from hostA lands on the TUN queue the kernel's flow hash picks (``--tun-steering hash``: the eBPF
steering of test_workers_tunsteer.py would put them all on the owner's), so some land on the other worker's.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from ikegate.workers.steering import peer_owner
from tests.interop.netns import (
    HOST_B,
    SITE_A_V4,
    SITE_B_V4,
    WAN_B,
    Lab,
    Site,
    two_sites,
)
from tests.interop.test_ikegate_pair import _pair, _probe, _serve
from tests.interop.vrp import acl_rule, ipsec_sas
from tests.system.procs import Proc
from tests.waiting import wait_for

pytestmark = pytest.mark.interop

PORT = 7001


def _stats(proc: Proc) -> dict[str, Any]:
    return proc.call("stats")["stats"]


def _direct_after_new_flows(site: Site, gw: Proc) -> bool:
    """One more UDP flow (a new source port: a new hash) through the tunnel, then: has any LAN packet
    arrived at the owner over the mesh?"""
    assert _probe(site, "udp", HOST_B[4], PORT)
    return int(_stats(gw)["handed_direct"]) > 0


def test_non_owner_hands_lan_packets_straight_to_the_owner_and_again_after_its_restart(lab: Lab) -> None:
    a, b = two_sites(lab)
    gw_a, gw_b = _pair(lab, a, b, 4, [acl_rule(5, SITE_A_V4, SITE_B_V4)], [acl_rule(5, SITE_B_V4, SITE_A_V4)],
                       "auto", extra_a=("--workers", "2", "--tun-steering", "hash"), extra_b=("--workers", "1"))
    wait_for(lambda: bool(ipsec_sas(gw_a)) and bool(ipsec_sas(gw_b)), what="the auto tunnel")
    _serve(lab, b, PORT)

    # Flows until one was read by the worker not owning the tunnel: it reached the owner by the mesh.
    wait_for(lambda: _direct_after_new_flows(a, gw_a), 120, what="a LAN packet handed over by the mesh")
    st = _stats(gw_a)
    # (``handed_over`` also counts what still goes through the supervisor: packets no policy covers, such
    # as the TUN's own IPv6 chatter, read by any worker)
    assert 0 < st["handed_direct"] <= st["handed_over"], st
    assert st["handoff_dropped"] == 0 and st["misrouted"] == 0, st

    # The owner dies: restarted, it re-establishes the tunnel and receives on its old inbox again.
    owner = peer_owner(WAN_B[4], 2)
    pid = next(w["pid"] for w in gw_a.call("workers")["workers"] if w["index"] == owner)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: all(w["pid"] not in (None, pid) for w in gw_a.call("workers")["workers"]),
             what="the owner to come back")
    wait_for(lambda: bool(ipsec_sas(gw_a)) and _probe(a, "udp", HOST_B[4], PORT, timeout=5), 120,
             what="the tunnel again")
    # its counters start at zero: any direct hand-over counted now arrived on the restarted worker's inbox
    wait_for(lambda: _direct_after_new_flows(a, gw_a), 120, what="a hand-over by the mesh after the restart")

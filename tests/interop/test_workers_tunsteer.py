"""With workers, the kernel puts each LAN packet on the TUN queue of the worker holding its flow's SA
(``ikegate.workers.tunsteer``: an eBPF program on the TUN reading an LPM trie the workers fill), so no
packet is handed over: neither a site-to-site flow (its peer's owner) nor a dial-up one (the worker the
template SA landed on).

    hostA -- gwA [--workers 2, site-to-site, auto] == WAN == gwB [--workers 2, template] -- hostB

gwA has two peers, gwB's IPv4 and its IPv6 address, owned by different workers (``peer_owner``): IPv4
inside goes through the first, IPv6 inside through the second. Every probe is a new UDP flow (a new source
port): without the steering, the kernel's flow hash puts about half of them on the wrong worker's queue
(tests/interop/test_workers_mesh.py shows that path).
"""

from __future__ import annotations

import os
import signal

import pytest

from ikegate.workers.steering import peer_owner
from tests.interop.netns import (
    GW_A_LAN,
    GW_B_LAN,
    HOST_A,
    HOST_B,
    SITE_A_V4,
    SITE_A_V6,
    SITE_B_V4,
    SITE_B_V6,
    WAN_A,
    WAN_B,
    Lab,
    Site,
    route_into_tun,
    two_sites,
)
from tests.interop.test_ikegate_pair import PSK, _probe, _serve
from tests.interop.test_workers_mesh import _stats
from tests.interop.vrp import GatewayConfig, TwoPeersConfig, acl_rule, ipsec_sas, start_ikegate
from tests.system.procs import Proc
from tests.waiting import wait_for

pytestmark = pytest.mark.interop

PORT = 7002
FLOWS = 8


def test_lan_packets_reach_the_owning_worker_without_hand_over(lab: Lab) -> None:
    assert peer_owner(WAN_B[4], 2) != peer_owner(WAN_B[6], 2)  # two peers, one per worker
    a, b = two_sites(lab)
    cfg_b = GatewayConfig("GwB", WAN_B, {4: f"{GW_B_LAN[4]}/26", 6: f"{GW_B_LAN[6]}/64"}, None, PSK,
                          rules=[acl_rule(5, SITE_B_V4, SITE_A_V4)],
                          rules6=[f"rule 5 permit ipv6 source {SITE_B_V6} destination {SITE_A_V6}"])
    cfg_a = TwoPeersConfig("GwA", WAN_A, {4: f"{GW_A_LAN[4]}/26", 6: f"{GW_A_LAN[6]}/64"}, WAN_B[4], PSK,
                      rules=[acl_rule(5, SITE_A_V4, SITE_B_V4)])
    gw_b = start_ikegate(lab, b.gw, "gwb", cfg_b, "--workers", "2")
    route_into_tun(b.gw, [SITE_A_V4, SITE_A_V6])
    gw_a = start_ikegate(lab, a.gw, "gwa", cfg_a, "--workers", "2")
    route_into_tun(a.gw, [SITE_B_V4, SITE_B_V6])
    wait_for(lambda: len(ipsec_sas(gw_a)) == 2 and len(ipsec_sas(gw_b)) == 2, what="both auto tunnels")
    assert {r["peer_address"] for r in ipsec_sas(gw_a)} == {WAN_B[4], WAN_B[6]}
    for gw in (gw_a, gw_b):
        assert _stats(gw)["tun_steered"] == 2, _stats(gw)  # both workers' queues steered by the program
    _serve(lab, b, PORT)
    _serve(lab, a, PORT + 1)
    esp_before = {gw.name: _stats(gw)["esp_packets_out"] for gw in (gw_a, gw_b)}

    _flows_without_hand_over(a, b, gw_a, gw_b, esp_before)

    # gwA's owning worker dies: its successor reads the same queue (the supervisor keeps the queues in
    # worker order), re-establishes the tunnel, and gwB's dial-up SA is replaced (on whichever worker the
    # new opening reaches, which publishes it, while the old SA's entries go): still no hand-over.
    owner = peer_owner(WAN_B[4], 2)
    pid = next(w["pid"] for w in gw_a.call("workers")["workers"] if w["index"] == owner)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: all(w["pid"] not in (None, pid) for w in gw_a.call("workers")["workers"]),
             what="the owner to come back")
    wait_for(lambda: len(ipsec_sas(gw_a)) == 2 and _probe(a, "udp", HOST_B[4], PORT, timeout=5), 120,
             what="the tunnel again")
    _flows_without_hand_over(a, b, gw_a, gw_b, {gw.name: _stats(gw)["esp_packets_out"] for gw in (gw_a, gw_b)})


def _flows_without_hand_over(a: Site, b: Site, gw_a: Proc, gw_b: Proc, esp_before: dict[str, int]) -> None:
    for _ in range(FLOWS):
        # gwA: each peer's owner; replies: the worker holding gwB's dial-up SA of that peer
        assert _probe(a, "udp", HOST_B[4], PORT)
        assert _probe(a, "udp", HOST_B[6], PORT)
        # gwB: the dial-up SAs' workers; replies: gwA's owners
        assert _probe(b, "udp", HOST_A[4], PORT + 1)
        assert _probe(b, "udp", HOST_A[6], PORT + 1)
    for gw in (gw_a, gw_b):
        st = _stats(gw)
        assert st["lan_missteered"] == 0 and st["handed_direct"] == 0 and st["handoff_dropped"] == 0, st
        assert st["esp_packets_out"] >= esp_before[gw.name] + 4 * FLOWS, st

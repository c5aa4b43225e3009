"""TUN offload end to end (``IKEGATE_TUN_OFFLOAD=1``): TCP through two ikegate gateways (default workers)
arrives byte for byte.

    hostA -- gwA [ikegate, TUN with virtio-net header] == WAN == gwB [ikegate, TUN] -- hostB

With offload the kernel hands the encrypting gateway TCP super-packets (TSO through the TUN), which it
cuts into segments before ESP, and the decrypting gateway writes merged runs back (GRO in userspace). The
TUNs' own counters prove both happened: a TUN counts a super-packet as one packet, so its bytes per
packet exceed the MTU only when super-packets crossed it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.netns import (
    HOST_B,
    SITE_A_V4,
    SITE_A_V6,
    SITE_B_V4,
    SITE_B_V6,
    TUN,
    Lab,
    Netns,
    Site,
    two_sites,
)
from tests.interop.test_ikegate_pair import _pair
from tests.interop.vrp import acl_rule, ipsec_sas
from tests.system.procs import Proc
from tests.waiting import wait_for

pytestmark = pytest.mark.interop

BULK = str(Path(__file__).with_name("bulk.py"))
PORT = 5301
SIZE = 3_000_001  # odd: the last segment is short and odd


@pytest.fixture(scope="module")
def tunnel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, Site, Proc, Proc]]:
    lab = Lab(tmp_path_factory.mktemp("tunoff"))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("IKEGATE_TUN_OFFLOAD", "1")  # opt-in (io/tun.py says why)
        yield from _tunnel(lab)


def _tunnel(lab: Lab) -> Iterator[tuple[Site, Site, Proc, Proc]]:
    try:
        a, b = two_sites(lab)
        gw_a, gw_b = _pair(lab, a, b, 4, [acl_rule(5, SITE_A_V4, SITE_B_V4)], [acl_rule(5, SITE_B_V4, SITE_A_V4)],
                           "auto", rules6_a=[f"rule 5 permit ipv6 source {SITE_A_V6} destination {SITE_B_V6}"],
                           rules6_b=[f"rule 5 permit ipv6 source {SITE_B_V6} destination {SITE_A_V6}"])
        wait_for(lambda: len(ipsec_sas(gw_a)) >= 2 and len(ipsec_sas(gw_b)) >= 2, what="both tunnels")
        log = lab.workdir / "bulk.log"
        lab.spawn(b.host, [sys.executable, BULK, "serve", str(PORT)], log)
        wait_for(lambda: "ready" in log.read_text(), what="the bulk server")
        yield a, b, gw_a, gw_b
    finally:
        lab.close()


def _tun_counters(ns: Netns) -> dict[str, int]:
    [link] = json.loads(ns.exec("ip", "-s", "-j", "link", "show", TUN).stdout)
    return {f"{d}_{k}": link["stats64"][d][k] for d in ("rx", "tx") for k in ("bytes", "packets")}


def _bulk(site: Site, op: str, dst: str) -> str:
    out = site.host.exec(sys.executable, BULK, op, dst, str(PORT), str(SIZE), check=False, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.mark.parametrize("family", [4, 6])
def test_tcp_through_offloading_tuns_is_byte_exact(tunnel: tuple[Site, Site, Proc, Proc], family: int) -> None:
    a, b, _gw_a, _gw_b = tunnel
    before_a, before_b = _tun_counters(a.gw), _tun_counters(b.gw)
    _bulk(a, "put", HOST_B[family])  # hostA -> hostB: gwA segments, gwB merges
    _bulk(a, "get", HOST_B[family])  # hostB -> hostA: the other way round
    after_a, after_b = _tun_counters(a.gw), _tun_counters(b.gw)

    def per_packet(after: dict[str, int], before: dict[str, int], way: str) -> float:
        packets = after[f"{way}_packets"] - before[f"{way}_packets"]
        return (after[f"{way}_bytes"] - before[f"{way}_bytes"]) / max(1, packets)

    # tx: what the kernel gave the gateway (super-packets from the host's TSO); rx: what the gateway wrote.
    for name, after, before in (("gwA", after_a, before_a), ("gwB", after_b, before_b)):
        assert per_packet(after, before, "tx") > 1500, (name, before, after)
        assert per_packet(after, before, "rx") > 1500, (name, before, after)

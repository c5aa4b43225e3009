"""Two ikegate gateways between real hosts: TUN dataplane, kernel routing, ping, TCP and UDP.

    hostA (192.0.2.10) -- gwA [ikegate, TUN] == WAN 198.51.100.0/24 | 2001:db8:ff::/64 == gwB [ikegate, TUN] -- hostB

gwA runs a site-to-site policy (auto or traffic-based), gwB a template. The hosts are ordinary namespaces
with a default route to their gateway; the gateways' kernels route the remote site into the TUN.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.interop.capture import Capture, start_capture, tshark_fields
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
from tests.interop.vrp import GatewayConfig, acl_rule, ike_sas, ipsec_sas, start_ikegate
from tests.system.procs import Proc
from tests.waiting import wait_for

pytestmark = pytest.mark.interop

PSK = "ikegate-interop-psk-0123"
FLOWS = str(Path(__file__).with_name("flows.py"))
ROW = "ikegate<->ikegate (TUN, hosts)"


def _pair(lab: Lab, a: Site, b: Site, family: int, rules_a: list[str] | None, rules_b: list[str] | None,
          trigger: str, rules6_a: list[str] | None = None, rules6_b: list[str] | None = None,
          extra_a: tuple[str, ...] = (), extra_b: tuple[str, ...] = ()) -> tuple[Proc, Proc]:
    cfg_b = GatewayConfig("GwB", WAN_B, {4: f"{GW_B_LAN[4]}/26", 6: f"{GW_B_LAN[6]}/64"}, None, PSK, rules=rules_b,
                          rules6=rules6_b or [])
    cfg_a = GatewayConfig("GwA", WAN_A, {4: f"{GW_A_LAN[4]}/26", 6: f"{GW_A_LAN[6]}/64"}, WAN_B[family], PSK,
                          rules=rules_a, trigger=trigger, rules6=rules6_a or [])
    gw_b = start_ikegate(lab, b.gw, "gwb", cfg_b, *extra_b)
    route_into_tun(b.gw, [SITE_A_V4, SITE_A_V6])
    gw_a = start_ikegate(lab, a.gw, "gwa", cfg_a, *extra_a)
    route_into_tun(a.gw, [SITE_B_V4, SITE_B_V6])
    return gw_a, gw_b


def _ping(site: Site, dst: str, count: int = 3) -> tuple[int, str]:
    out = site.host.exec("ping", "-c", str(count), "-i", "0.2", "-W", "10", dst, check=False, timeout=60)
    return out.returncode, out.stdout + out.stderr


def _probe(site: Site, proto: str, dst: str, port: int, timeout: float = 30.0) -> bool:
    """True when the flow server's echo came back within ``timeout`` s. A probe that must fail is given a
    short ``timeout``: a failure takes that long, and a success would only come sooner."""
    out = site.host.exec(sys.executable, FLOWS, "probe", proto, dst, str(port), str(timeout), check=False,
                         timeout=timeout + 10)
    return out.returncode == 0


def _serve(lab: Lab, site: Site, *ports: int) -> None:
    log = lab.workdir / f"flows-{site.host.name}.log"
    lab.spawn(site.host, [sys.executable, FLOWS, "serve", *map(str, ports)], log)
    wait_for(lambda: "ready" in log.read_text(), what="the flow server")


def _counted(records: list[dict[str, object]], packets: int) -> bool:
    return any(int(r["packets_out"]) >= packets and int(r["packets_in"]) >= packets for r in records)  # type: ignore[call-overload]


@pytest.mark.parametrize("family", [
    pytest.param(4, marks=pytest.mark.cell(ROW, "P", "ping, auto policy, IPv4 outer")),
    pytest.param(6, marks=pytest.mark.cell(ROW, "p", "ping, auto policy, IPv6 outer")),
])
def test_ping_through_auto_tunnel(lab: Lab, family: int) -> None:
    a, b = two_sites(lab)
    gw_a, gw_b = _pair(lab, a, b, family, [acl_rule(5, SITE_A_V4, SITE_B_V4)], [acl_rule(5, SITE_B_V4, SITE_A_V4)],
                       "auto")
    wait_for(lambda: bool(ipsec_sas(gw_a)) and bool(ipsec_sas(gw_b)), what="the auto tunnel")
    rc, out = _ping(a, HOST_B[4])
    assert rc == 0 and " 0% packet loss" in out, out
    rc, out = _ping(b, HOST_A[4])  # and the other way round, through the same SA pair
    assert rc == 0, out
    # Six echo requests and six replies crossed each gateway's SA pair.
    for gw in (gw_a, gw_b):
        sas = ipsec_sas(gw)
        assert _counted(sas, 6), sas
        assert {s["peer_address"] for s in sas} == {WAN_B[family] if gw is gw_a else WAN_A[family]}
    # The gateway's own LAN address answers from the far side too (userspace, through the tunnel).
    rc, out = _ping(b, GW_A_LAN[4], count=1)
    assert rc == 0, out


@pytest.mark.cell(ROW, "T", "traffic-based: TCP dst 8080 triggers and passes, 9090 gets no tunnel")
def test_tcp_port_rule_triggers_traffic_based_policy(lab: Lab) -> None:
    a, b = two_sites(lab)
    rules_a = [acl_rule(5, SITE_A_V4, SITE_B_V4, "tcp", dport=8080),
               acl_rule(10, SITE_A_V4, SITE_B_V4, "udp", dport=5000)]
    rules_b = [acl_rule(5, SITE_B_V4, SITE_A_V4, "tcp", sport=8080),
               acl_rule(10, SITE_B_V4, SITE_A_V4, "udp", sport=5000)]
    _serve(lab, b, 8080, 9090, 5000, 5001)
    gw_a, gw_b = _pair(lab, a, b, 4, rules_a, rules_b, "traffic-based")
    assert ike_sas(gw_a) == [] and ipsec_sas(gw_a) == []  # nothing until traffic
    # A port no rule permits: dropped at the gateway (no clear-text routing), and no negotiation.
    assert not _probe(a, "tcp", HOST_B[4], 9090, timeout=3)
    assert ike_sas(gw_a) == []
    # The permitted port: the SYN is trapped, the tunnel comes up, the held SYN (or its retry) goes through.
    assert _probe(a, "tcp", HOST_B[4], 8080)
    sas = ipsec_sas(gw_a)
    assert len(sas) == 1 and sas[0]["local_selectors"][0].endswith("6/0-65535"), sas
    assert sas[0]["remote_selectors"][0].endswith("6/8080-8080"), sas
    # Still no tunnel for the other port, and the established one does not carry it.
    assert not _probe(a, "tcp", HOST_B[4], 9090, timeout=3)
    assert len(ipsec_sas(gw_a)) == 1


@pytest.mark.cell(ROW, "U", "traffic-based: UDP dst 5000 passes, 5001 gets no tunnel")
def test_udp_port_rule(lab: Lab) -> None:
    a, b = two_sites(lab)
    rules_a = [acl_rule(5, SITE_A_V4, SITE_B_V4, "udp", dport=5000)]
    rules_b = [acl_rule(5, SITE_B_V4, SITE_A_V4, "udp", sport=5000)]
    _serve(lab, b, 5000, 5001)
    gw_a, gw_b = _pair(lab, a, b, 4, rules_a, rules_b, "traffic-based")
    assert not _probe(a, "udp", HOST_B[4], 5001, timeout=2)
    assert ike_sas(gw_a) == []
    assert _probe(a, "udp", HOST_B[4], 5000)
    sas = ipsec_sas(gw_a)
    assert len(sas) == 1 and sas[0]["remote_selectors"][0].endswith("17/5000-5000"), sas
    assert _counted(ipsec_sas(gw_b), 1)
    assert not _probe(a, "udp", HOST_B[4], 5001, timeout=2)


@pytest.mark.cell(ROW, "B", "traffic-based ICMP: first ping triggers, tunnel carries the rest, IPv6 outer")
def test_ping_triggers_traffic_based_policy_over_ipv6(lab: Lab) -> None:
    a, b = two_sites(lab)
    gw_a, gw_b = _pair(lab, a, b, 6, [acl_rule(5, SITE_A_V4, SITE_B_V4, "icmp")],
                       [acl_rule(5, SITE_B_V4, SITE_A_V4, "icmp")], "traffic-based")
    assert ike_sas(gw_a) == []
    # The first echo requests trigger; they may be held or lost while negotiating, however long that takes.
    a.host.exec("ping", "-c", "2", "-i", "0.3", "-W", "2", HOST_B[4], check=False, timeout=60)
    wait_for(lambda: bool(ipsec_sas(gw_a)) and bool(ipsec_sas(gw_b)), what="the triggered tunnel")
    rc, out = _ping(a, HOST_B[4])  # then the tunnel carries the rest
    assert rc == 0 and " 0% packet loss" in out, out
    assert len(ike_sas(gw_a)) == 1 and ike_sas(gw_a)[0]["peer_address"] == WAN_B[6]


@pytest.mark.parametrize(("family", "trigger"), [
    pytest.param(4, "auto", marks=pytest.mark.cell(ROW, "6", "IPv6 hosts ping each other (acl ipv6), IPv4 outer")),
    pytest.param(6, "traffic-based", marks=pytest.mark.cell(
        ROW, "V", "IPv6 hosts (acl ipv6 only): first ping6 triggers, IPv6 outer")),
])
def test_ipv6_hosts_through_two_ikegates(lab: Lab, family: int, trigger: str) -> None:
    a, b = two_sites(lab)
    rule_a = f"rule 5 permit ipv6 source {SITE_A_V6} destination {SITE_B_V6}"
    rule_b = f"rule 5 permit ipv6 source {SITE_B_V6} destination {SITE_A_V6}"
    # IPv4 outer: beside an (empty) IPv4 ACL of the same number; IPv6 outer: the IPv6 ACL alone.
    rules4: list[str] | None = [] if family == 4 else None
    gw_a, gw_b = _pair(lab, a, b, family, rules4, rules4, trigger, [rule_a], [rule_b])
    if trigger == "traffic-based":
        assert ike_sas(gw_a) == []
        a.host.exec("ping", "-c", "2", "-i", "0.3", "-W", "2", HOST_B[6], check=False, timeout=60)  # triggers
        wait_for(lambda: bool(ipsec_sas(gw_a)) and bool(ipsec_sas(gw_b)), what="the triggered tunnel")
    rc, out = _ping(a, HOST_B[6])
    assert rc == 0, out
    rc, out = _ping(b, HOST_A[6])
    assert rc == 0, out
    sas = ipsec_sas(gw_a)
    assert len(sas) == 1 and ":" in sas[0]["local_selectors"][0] and sas[0]["peer_address"] == WAN_B[family], sas
    assert _counted(sas, 6), sas


def _captured_ping(lab: Lab, family: int, name: str, *extra_a: str) -> tuple[Capture, Proc, Proc]:
    """An auto tunnel over the ``family`` outer addresses, dumpcap on gwB's WAN side, three pings through."""
    a, b = two_sites(lab)
    capture = start_capture(lab, b.gw, "wan0", name)
    gw_a, gw_b = _pair(lab, a, b, family, [acl_rule(5, SITE_A_V4, SITE_B_V4)], [acl_rule(5, SITE_B_V4, SITE_A_V4)],
                       "auto", extra_a=extra_a)
    wait_for(lambda: bool(ipsec_sas(gw_a)) and bool(ipsec_sas(gw_b)), what="the auto tunnel")
    rc, out = _ping(a, HOST_B[4])
    assert rc == 0 and " 0% packet loss" in out, out
    return capture, gw_a, gw_b


@pytest.mark.parametrize("family", [
    pytest.param(4, marks=pytest.mark.cell(ROW, "R", "no NAT: raw ESP (IP protocol 50) on the wire, IPv4 outer")),
    pytest.param(6, marks=pytest.mark.cell(ROW, "r", "no NAT: raw ESP (next header 50) on the wire, IPv6 outer")),
])
def test_raw_esp_without_nat(lab: Lab, family: int) -> None:
    capture, gw_a, gw_b = _captured_ping(lab, family, f"raw-esp-{family}")
    proto = "ip.proto" if family == 4 else "ipv6.nxt"
    capture.wait_for(f"{proto} == 50", 6, "six raw ESP packets in the capture")
    path = capture.stop()
    esp = tshark_fields(path, ["esp.spi", "esp.sequence"], f"{proto} == 50")
    assert len(esp) >= 6, esp  # three echo requests and three replies, each as raw ESP
    assert tshark_fields(path, ["frame.number"], "udp.port == 4500") == []  # nothing in UDP, IKE stayed on 500
    assert tshark_fields(path, ["frame.number"], "isakmp && udp.port == 500")
    for gw in (gw_a, gw_b):
        assert all(not s["udp_encap"] for s in ipsec_sas(gw)), ipsec_sas(gw)  # displayed as carried
    spis = {int(s["spi_out"]) for s in ipsec_sas(gw_a)} | {int(s["spi_in"]) for s in ipsec_sas(gw_a)}
    assert {int(spi, 16) for spi, _seq in esp} == spis


@pytest.mark.parametrize("family", [
    pytest.param(4, marks=pytest.mark.cell(ROW, "E", "one end forces UDP encapsulation: both do, ESP checksum zero")),
    pytest.param(6, marks=pytest.mark.cell(ROW, "e", "forced UDP encapsulation, IPv6 outer: checksums kept")),
])
def test_forced_udp_encapsulation_checksums(lab: Lab, family: int) -> None:
    capture, gw_a, gw_b = _captured_ping(lab, family, f"forced-encap-{family}", "--force-udp-encap")
    capture.wait_for("udp.port == 4500 && esp", 6, "six ESP-in-UDP packets in the capture")
    path = capture.stop()
    ip = "ip" if family == 4 else "ipv6"
    assert tshark_fields(path, ["frame.number"], "ip.proto == 50 || ipv6.nxt == 50") == []
    esp = tshark_fields(path, [f"{ip}.src", "udp.checksum"], "udp.port == 4500 && esp")
    # Both directions carry ESP in UDP (gwB encapsulates because gwA's faked NAT-D told it so), and
    # RFC 3948 §3.1: the UDP checksum of ESP-in-UDP over IPv4 is zero; over IPv6 a checksum is mandatory.
    assert {src for src, _c in esp} == {WAN_A[family], WAN_B[family]}, esp
    assert all((int(c, 16) == 0) == (family == 4) for _s, c in esp), esp
    # IKE on the same socket keeps its checksum.
    ike = tshark_fields(path, ["udp.checksum"], "udp.port == 4500 && isakmp")
    assert ike and all(int(c, 16) != 0 for (c,) in ike), ike
    for gw in (gw_a, gw_b):
        assert all(s["udp_encap"] for s in ipsec_sas(gw))

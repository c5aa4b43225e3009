"""Security policy database: policy order, deny rules, ports and protocols, IPv6, traps, the inbound check."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable
from types import FrameType

import pytest

from ikegate.cli.loader import load_config
from ikegate.dataplane.packet import ICMP, TCP, UDP, IpInfo
from ikegate.dataplane.spd import DYNAMIC_RULE, Spd, SpdMatch, Trap, _covers
from ikegate.gateway import translate
from ikegate.ike.core.ts import from_network
from ikegate.ike.wire.v2 import TrafficSelector
from ikegate.policy.model import (
    V6_RULE_BASE,
    Acl,
    AclAddress,
    AclRule,
    Config,
    Interface,
    IpsecPolicy,
    IpsecPolicyTemplate,
    PortRange,
    TriggerMode,
)

WAN = "GigabitEthernet0/0/1"


def a(text: str) -> AclAddress:
    """``10.1.0.0 0.0.255.255`` as in ``rule permit ip source 10.1.0.0 0.0.255.255``."""
    addr, wildcard = text.split()
    return AclAddress(ipaddress.ip_address(addr), ipaddress.ip_address(wildcard))


def ts(net: str, proto: int = 0, low: int = 0, high: int = 65535) -> TrafficSelector:
    return from_network(ipaddress.ip_network(net), proto, low, high)


def pkt(src: str, dst: str, proto: int = UDP, sport: int = 1000, dport: int = 2000) -> IpInfo:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    ported = proto in (TCP, UDP)
    return IpInfo(s.version, int(s), int(d), proto, sport if ported else 0, dport if ported else 0,
                  8 if proto == ICMP else 0, 20 if s.version == 4 else 40, 100)


def make_config(policies: list[IpsecPolicy], acls: list[Acl], templates: list[IpsecPolicyTemplate] = (),  # type: ignore[assignment]
                group: str = "map") -> Config:
    cfg = Config()
    cfg.interfaces[WAN] = Interface(WAN, ipv4=[ipaddress.IPv4Interface("192.0.2.1/24")], ipsec_policy=group)
    cfg.interfaces["GigabitEthernet0/0/2"] = Interface("GigabitEthernet0/0/2")  # no policy: ignored
    cfg.acls = {acl.number: acl for acl in acls}
    cfg.ipsec_policies = {(p.name, p.seq): p for p in policies}
    cfg.ipsec_templates = {(t.name, t.seq): t for t in templates}
    return cfg


def site_to_site(acl_rules: list[AclRule], trigger: TriggerMode = TriggerMode.TRAFFIC_BASED) -> Config:
    return make_config([IpsecPolicy("map", 10, acl=3000, ike_peer="b", trigger_mode=trigger)],
                       [Acl(3000, acl_rules)])


A_TO_B = AclRule(5, source=a("10.1.0.0 0.0.255.255"), destination=a("10.2.0.0 0.0.255.255"))


# ---------------------------------------------------------------------------------------- matching


def test_sequence_order_wins() -> None:
    broad = IpsecPolicy("map", 20, acl=3001)
    narrow = IpsecPolicy("map", 10, acl=3002)
    cfg = make_config(
        [broad, narrow],  # inserted out of order on purpose
        [Acl(3001, [AclRule(5, source=a("10.1.0.0 0.0.255.255"), destination=a("10.2.0.0 0.0.255.255"))]),
         Acl(3002, [AclRule(7, source=a("10.1.1.0 0.0.0.255"), destination=a("10.2.0.0 0.0.255.255"))])],
    )
    spd: Spd[str] = Spd(cfg)
    m = spd.lookup(pkt("10.1.1.5", "10.2.0.1"))
    assert m is not None and (m.policy, m.rule) == (("map", 10), 7)
    m = spd.lookup(pkt("10.1.2.5", "10.2.0.1"))
    assert m is not None and (m.policy, m.rule) == (("map", 20), 5)
    assert spd.lookup(pkt("10.3.0.1", "10.2.0.1")) is None
    assert spd.lookup(pkt("10.2.0.1", "10.1.1.5")) is None  # the reverse direction is not outbound traffic
    assert spd.outbound(pkt("10.3.0.1", "10.2.0.1")) is None  # no policy: in clear


def test_rule_order_and_deny_skips_to_next_policy() -> None:
    cfg = make_config(
        [IpsecPolicy("map", 10, acl=3000), IpsecPolicy("map", 20, acl=3001)],
        [Acl(3000, [AclRule(5, "deny", source=a("10.1.1.0 0.0.0.255")),
                    AclRule(10, source=a("10.1.0.0 0.0.255.255"), destination=a("10.2.0.0 0.0.255.255")),
                    AclRule(15, "deny", source=a("10.1.2.0 0.0.0.255"))]),
         Acl(3001, [AclRule(1, source=a("10.1.0.0 0.0.255.255"))])],
    )
    spd: Spd[str] = Spd(cfg)
    m = spd.lookup(pkt("10.1.1.5", "10.2.0.1"))
    assert m is not None and (m.policy, m.rule) == (("map", 20), 1)  # denied by 10, taken by 20
    m = spd.lookup(pkt("10.1.2.5", "10.2.0.1"))
    assert m is not None and (m.policy, m.rule) == (("map", 10), 10)  # the later deny never gets a say
    m = spd.lookup(pkt("10.1.2.5", "10.9.0.1"))
    assert m is not None and m.policy == ("map", 20)


def test_ports_and_protocol() -> None:
    web = AclRule(5, protocol="tcp", source=a("10.1.0.0 0.0.255.255"), destination=a("10.2.0.10 0.0.0.0"),
                  destination_port=PortRange(80, 80))
    icmp = AclRule(10, protocol="icmp", destination=a("10.2.0.0 0.0.255.255"))
    dns = AclRule(15, protocol="udp", source_port=PortRange(1024, 65535), destination_port=PortRange(53, 53))
    spd: Spd[str] = Spd(site_to_site([web, icmp, dns]))

    def rule(info: IpInfo) -> int | None:
        m = spd.lookup(info)
        return m.rule if m else None

    assert rule(pkt("10.1.0.1", "10.2.0.10", TCP, 40000, 80)) == 5
    assert rule(pkt("10.1.0.1", "10.2.0.10", TCP, 40000, 443)) is None
    assert rule(pkt("10.1.0.1", "10.2.0.11", TCP, 40000, 80)) is None
    assert rule(pkt("10.1.0.1", "10.2.0.10", UDP, 40000, 80)) is None
    assert rule(pkt("10.9.0.1", "10.2.0.10", ICMP)) == 10
    assert rule(pkt("10.9.0.1", "10.3.0.10", ICMP)) is None
    assert rule(pkt("10.9.0.1", "8.8.8.8", UDP, 5353, 53)) == 15
    assert rule(pkt("10.9.0.1", "8.8.8.8", UDP, 53, 53)) is None
    m = spd.lookup(pkt("10.1.0.1", "10.2.0.10", TCP, 40000, 80))
    assert m is not None
    assert m.local == ts("10.1.0.0/16", TCP) and m.remote == ts("10.2.0.10/32", TCP, 80, 80)


def test_ipv6_rules_and_address_less_rules() -> None:
    v6 = AclRule(5, source=a("2001:db8:1:: ::ffff:ffff:ffff:ffff"), destination=a("2001:db8:2:: ::ffff"))
    anything = AclRule(10, protocol="icmpv6")
    spd: Spd[str] = Spd(site_to_site([v6, anything]))
    m = spd.lookup(pkt("2001:db8:1::5", "2001:db8:2::abcd"))
    assert m is not None and m.rule == 5
    assert m.local == ts("2001:db8:1::/64") and m.remote == ts("2001:db8:2::/112")
    assert spd.lookup(pkt("2001:db8:1::5", "2001:db8:2::1:0")) is None  # outside the /112
    assert spd.lookup(pkt("10.1.0.1", "10.2.0.1")) is None
    m = spd.lookup(pkt("2001:db8:9::1", "2001:db8:8::1", 58))
    assert m is not None and m.rule == 10 and m.remote == ts("::/0", 58)
    assert spd.lookup(pkt("10.0.0.1", "10.0.0.2", 58)) is not None  # address-less: either family


# IPv4 ACL 3000 and IPv6 ACL 3000 (separate number spaces) on one policy, an IPv6 ACL alone on the next.
DUAL = """\
acl number 3000
 rule 5 permit ip source 10.1.0.0 0.0.255.255 destination 10.2.0.0 0.0.255.255
acl ipv6 number 3000
 rule 1 deny ipv6 source 2001:db8:1:9::/64
 rule 5 permit ipv6 source 2001:db8:1::/48 destination 2001:db8:2::/48
 rule 10 permit tcp destination 2001:db8:3::/64 destination-port eq 443
acl ipv6 number 3001
 rule 5 permit icmpv6
ike peer b
ipsec policy map 10 isakmp
 security acl 3000
 security acl ipv6 3000
 ike-peer b
ipsec policy map 20 isakmp
 security acl ipv6 3001
 ike-peer b
interface GigabitEthernet0/0/1
 ip address 192.0.2.1 255.255.255.0
 ipsec policy map
"""


def dual_config() -> Config:
    cfg, errors = load_config(DUAL)
    assert errors == []
    return cfg


def test_ipv6_acl_rules_follow_the_ipv4_ones() -> None:
    spd: Spd[str] = Spd(dual_config())
    m = spd.lookup(pkt("10.1.0.1", "10.2.0.1"))
    assert m is not None and (m.policy, m.rule) == (("map", 10), 5)
    m = spd.lookup(pkt("2001:db8:1::5", "2001:db8:2::7"))
    assert m is not None and (m.policy, m.rule) == (("map", 10), 5 + V6_RULE_BASE)  # not IPv4 rule 5
    assert m.local == ts("2001:db8:1::/48") and m.remote == ts("2001:db8:2::/48")
    m = spd.lookup(pkt("2001:db8:7::1", "2001:db8:3::1", TCP, 40000, 443))
    assert m is not None and m.rule == 10 + V6_RULE_BASE and m.remote == ts("2001:db8:3::/64", TCP, 443, 443)
    assert m.local == ts("::/0", TCP)  # ``any`` in an IPv6 ACL is all of IPv6
    # rule 1 denies: on to policy 20, whose address-less IPv6 rule takes ICMPv6 but never IPv4 ICMP
    m = spd.lookup(pkt("2001:db8:1:9::5", "2001:db8:2::7", 58))
    assert m is not None and (m.policy, m.rule) == (("map", 20), 5 + V6_RULE_BASE)
    assert m.local == ts("::/0", 58) and m.remote == ts("::/0", 58)
    assert spd.lookup(pkt("2001:db8:1:9::5", "2001:db8:2::7", UDP)) is None
    assert spd.lookup(pkt("10.9.0.1", "10.8.0.1", ICMP)) is None
    assert spd.lookup(pkt("10.9.0.1", "10.8.0.1", 58)) is None


def test_ipv6_traps_and_sas() -> None:
    spd: Spd[str] = Spd(dual_config())
    info = pkt("2001:db8:1::5", "2001:db8:2::7")
    trap = spd.outbound(info, b"v6", now=0.0)
    assert isinstance(trap, Trap) and trap.acquire and trap.held
    assert trap.match.rule == 5 + V6_RULE_BASE and trap.match.remote == ts("2001:db8:2::/48")
    assert spd.held(("map", 10), 5 + V6_RULE_BASE) == 1 and spd.held(("map", 10), 5) == 0
    released = spd.install("sa6", [ts("2001:db8:1::/48")], [ts("2001:db8:2::/48")], "SA6", now=0.5)
    assert released == [b"v6"]
    assert spd.outbound(info) == "SA6"
    assert isinstance(spd.outbound(pkt("10.1.0.1", "10.2.0.1"), b"v4", now=0.6), Trap)  # IPv4 needs its own SA
    assert spd.inbound_allowed("sa6", pkt("2001:db8:2::7", "2001:db8:1::5"))
    assert not spd.inbound_allowed("sa6", pkt("10.2.0.1", "10.1.0.1"))


def test_spd_and_negotiation_take_the_same_selectors_from_a_rule() -> None:
    cfg = dual_config()
    spd: Spd[str] = Spd(cfg)
    flows = translate.policy_flows(cfg, cfg.ipsec_policies[("map", 10)])
    assert [f.rule for f in flows] == [5, 5 + V6_RULE_BASE, 10 + V6_RULE_BASE]  # IPv4 rules, then IPv6 ones
    for flow, packet in zip(flows, [pkt("10.1.0.1", "10.2.0.1"), pkt("2001:db8:1::5", "2001:db8:2::7"),
                                    pkt("2001:db8:7::1", "2001:db8:3::1", TCP, 40000, 443)], strict=True):
        m = spd.lookup(packet)
        assert m is not None and (m.rule, m.local, m.remote) == (flow.rule, flow.local, flow.remote)
    (only,) = translate.policy_flows(cfg, cfg.ipsec_policies[("map", 20)])
    assert only.local == ts("::/0", 58)  # an address-less IPv6 rule is negotiated as IPv6


def test_interface_filter_and_unbound_groups() -> None:
    cfg = site_to_site([A_TO_B])
    cfg.ipsec_policies[("other", 1)] = IpsecPolicy("other", 1, acl=3000)  # a group bound nowhere
    spd: Spd[str] = Spd(cfg)
    info = pkt("10.1.0.1", "10.2.0.1")
    m = spd.lookup(info, WAN)
    assert m is not None and m.interface == WAN and m.policy == ("map", 10)
    assert spd.lookup(info, "GigabitEthernet0/0/2") is None


# ------------------------------------------------------------------------------- installed SAs


def test_installed_sa_is_used_and_selectors_must_cover() -> None:
    spd: Spd[str] = Spd(site_to_site([A_TO_B]))
    spd.install("sa1", [ts("10.1.0.0/24")], [ts("10.2.0.0/24")], "SA-1")  # the peer narrowed the flow
    assert spd.outbound(pkt("10.1.0.1", "10.2.0.1")) == "SA-1"
    trap = spd.outbound(pkt("10.1.5.1", "10.2.0.1"), b"p", now=0.0)
    assert isinstance(trap, Trap) and trap.acquire and trap.match.rule == 5  # needs its own SA
    assert "sa1" in spd and len(spd) == 1 and spd.get("sa1") == "SA-1"
    assert spd.remove("sa1") == "SA-1" and spd.remove("sa1") is None
    assert isinstance(spd.outbound(pkt("10.1.0.1", "10.2.0.1")), Trap)


def test_covering_says_what_covered_and_lookup_say_cached_or_not() -> None:
    spd: Spd[str] = Spd(site_to_site([A_TO_B]))
    changes: list[tuple[list[TrafficSelector], int]] = []
    spd.on_change = lambda sel, delta: changes.append((sel, delta))
    inside, outside, clear = pkt("10.1.0.1", "10.2.0.1"), pkt("10.1.5.1", "10.2.0.1"), pkt("10.9.0.1", "10.8.0.1")
    spd.install("sa1", [ts("10.1.0.0/24")], [ts("10.2.0.0/24")], "SA-1")
    assert changes == [([ts("10.2.0.0/24")], 1)]
    for _ in range(2):  # the second time through the flow cache that outbound filled
        for info in (inside, outside, clear):
            covered, match = spd.covering(info)
            assert covered == spd.covered(info)
            assert match == (None if covered else spd.lookup(info))
            spd.outbound(info)
    assert spd.covering(inside) == (True, None) and spd.covering(clear) == (False, None)
    assert spd.covering(outside)[1] is not None
    spd.remove("sa1")
    assert changes[-1] == ([ts("10.2.0.0/24")], -1)
    assert spd.covering(inside)[0] is False  # the cache went with the SA


def test_newest_sa_wins_during_rekey() -> None:
    spd: Spd[str] = Spd(site_to_site([A_TO_B]))
    flow = ([ts("10.1.0.0/16")], [ts("10.2.0.0/16")])
    spd.install("old", *flow, "OLD")
    spd.install("new", *flow, "NEW")
    info = pkt("10.1.0.1", "10.2.0.1")
    assert spd.outbound(info) == "NEW"
    spd.remove("new")
    assert spd.outbound(info) == "OLD"
    spd.install("old", *flow, "OLD-REPLACED")
    assert spd.outbound(info) == "OLD-REPLACED" and len(spd) == 1


def test_sa_with_ports_and_protocol() -> None:
    spd: Spd[str] = Spd(site_to_site([A_TO_B]))
    spd.install("web", [ts("10.1.0.0/16", TCP)], [ts("10.2.0.0/16", TCP, 443, 443)], "WEB")
    assert spd.outbound(pkt("10.1.0.1", "10.2.0.1", TCP, 5000, 443)) == "WEB"
    assert isinstance(spd.outbound(pkt("10.1.0.1", "10.2.0.1", TCP, 5000, 80)), Trap)
    assert isinstance(spd.outbound(pkt("10.1.0.1", "10.2.0.1", UDP, 5000, 443)), Trap)


def test_many_sas_in_one_template_are_indexed() -> None:
    """Site-to-multisite: thousands of branches behind one template, each packet finds its own SA."""
    cfg = make_config([IpsecPolicy("map", 10, template="tpl")], [], [IpsecPolicyTemplate("tpl", 1)])
    spd: Spd[int] = Spd(cfg)
    hq = ts("10.0.0.0/16")
    for i in range(3000):
        spd.install(i, [hq], [ts(f"172.{16 + i // 256}.{i % 256}.0/24")], i)
    spd.install("wide", [hq], [ts("192.168.0.0/16")], -1)
    for i in (0, 1, 255, 256, 1777, 2999):
        assert spd.outbound(pkt("10.0.0.1", f"172.{16 + i // 256}.{i % 256}.77")) == i
        assert spd.inbound_allowed(i, pkt(f"172.{16 + i // 256}.{i % 256}.77", "10.0.0.1"))
    assert spd.outbound(pkt("10.0.0.1", "192.168.44.1")) == -1
    assert spd.outbound(pkt("10.0.0.1", "172.31.0.1")) is None  # dynamic template, nothing covers: clear
    m = spd.lookup(pkt("10.0.0.1", "172.16.0.9"))
    assert m is not None and m.rule == DYNAMIC_RULE and m.template
    spd.remove(1777)
    assert spd.outbound(pkt("10.0.0.1", "172.22.241.77")) is None


def test_template_with_acl_never_acquires() -> None:
    cfg = make_config([IpsecPolicy("map", 10, template="tpl")], [Acl(3000, [A_TO_B])],
                      [IpsecPolicyTemplate("tpl", 1, acl=3000)])
    spd: Spd[str] = Spd(cfg)
    trap = spd.outbound(pkt("10.1.0.1", "10.2.0.1"), b"x", 0.0)
    assert isinstance(trap, Trap) and not trap.acquire and not trap.held and trap.match.template
    assert spd.no_sa_drops == 1
    spd.install("t", [ts("10.1.0.0/16")], [ts("10.2.3.0/24")], "T")
    assert spd.outbound(pkt("10.1.0.1", "10.2.3.1")) == "T"


def test_policy_hint_restricts_placement() -> None:
    cfg = make_config([IpsecPolicy("map", 10, acl=3000), IpsecPolicy("map", 20, acl=3000)], [Acl(3000, [A_TO_B])])
    spd: Spd[str] = Spd(cfg)
    spd.install("s20", [ts("10.1.0.0/16")], [ts("10.2.0.0/16")], "S20", policy=("map", 20))
    # Packets hit policy 10 first; an SA that belongs to policy 20 does not serve it.
    trap = spd.outbound(pkt("10.1.0.1", "10.2.0.1"))
    assert isinstance(trap, Trap) and trap.match.policy == ("map", 10)
    spd.install("s10", [ts("10.1.0.0/16")], [ts("10.2.0.0/16")], "S10", policy=("map", 10))
    assert spd.outbound(pkt("10.1.0.1", "10.2.0.1")) == "S10"


# ---------------------------------------------------------------------------------------- traps


def test_trap_rate_limit_queue_and_release() -> None:
    spd: Spd[str] = Spd(site_to_site([A_TO_B, AclRule(9, source=a("10.5.0.0 0.0.255.255"))]))
    info = pkt("10.1.0.1", "10.2.0.1")
    results = [spd.outbound(info, f"p{i}".encode(), now=0.1 * i) for i in range(6)]
    assert all(isinstance(r, Trap) for r in results)
    traps = [r for r in results if isinstance(r, Trap)]
    assert [t.acquire for t in traps] == [True, False, False, False, False, False]
    assert [t.held for t in traps] == [True, True, True, True, False, False]
    assert spd.hold_drops == 2 and spd.held(("map", 10), 5) == 4
    expected = SpdMatch(("map", 10), 5, TriggerMode.TRAFFIC_BASED, False, ts("10.1.0.0/16"), ts("10.2.0.0/16"), WAN)
    assert traps[0].match == expected
    other = spd.outbound(pkt("10.5.0.1", "10.9.0.1"), b"o", now=0.2)
    assert isinstance(other, Trap) and other.acquire  # its own rule, its own rate limit
    again = spd.outbound(info, b"p6", now=1.0)
    assert isinstance(again, Trap) and again.acquire and not again.held
    assert spd.acquires == 3
    released = spd.install("sa", [ts("10.1.0.0/16")], [ts("10.2.0.0/16")], "SA", now=1.5)
    assert released == [b"p0", b"p1", b"p2", b"p3"]
    assert spd.held(("map", 10), 5) == 0 and spd.held(("map", 10), 9) == 1
    assert spd.outbound(info, b"p7", now=1.6) == "SA"


def test_release_only_what_the_sa_covers_and_expire_old() -> None:
    spd: Spd[str] = Spd(site_to_site([A_TO_B]), hold_time=5.0)
    spd.outbound(pkt("10.1.0.1", "10.2.0.1"), b"old", now=0.0)
    spd.outbound(pkt("10.1.0.1", "10.2.9.1"), b"elsewhere", now=4.0)
    spd.outbound(pkt("10.1.0.1", "10.2.0.2"), b"fresh", now=4.5)
    released = spd.install("sa", [ts("10.1.0.0/16")], [ts("10.2.0.0/24")], "SA", now=6.0)
    assert released == [b"fresh"]  # "old" waited longer than hold_time
    assert spd.held(("map", 10), 5) == 1 and spd.hold_drops == 1


def test_auto_policy_holds_but_does_not_acquire() -> None:
    spd: Spd[str] = Spd(site_to_site([A_TO_B], TriggerMode.AUTO))
    trap = spd.outbound(pkt("10.1.0.1", "10.2.0.1"), b"x", 0.0)
    assert isinstance(trap, Trap) and not trap.acquire and trap.held
    assert trap.match.trigger_mode is TriggerMode.AUTO


def test_arm_and_disarm() -> None:
    spd: Spd[str] = Spd(site_to_site([A_TO_B]), arm_traps=False)
    assert not spd.armed(("map", 10))
    first = spd.outbound(pkt("10.1.0.1", "10.2.0.1"), b"x", 0.0)
    assert isinstance(first, Trap) and not first.acquire
    spd.arm_trap(("map", 10))
    armed = spd.outbound(pkt("10.1.0.1", "10.2.0.1"), b"x", 0.0)
    assert isinstance(armed, Trap) and armed.acquire
    spd.disarm_trap(("map", 10))
    later = spd.outbound(pkt("10.1.0.1", "10.2.0.1"), b"x", 10.0)
    assert isinstance(later, Trap) and not later.acquire


# -------------------------------------------------------------------------------- inbound check


def test_inbound_selector_check() -> None:
    spd: Spd[str] = Spd(site_to_site([A_TO_B]))
    spd.install("sa", [ts("10.1.0.0/16")], [ts("10.2.0.0/24", UDP, 53, 53)], "SA")
    assert spd.inbound_allowed("sa", pkt("10.2.0.7", "10.1.3.3", UDP, 53, 40000))
    assert not spd.inbound_allowed("sa", pkt("10.2.0.7", "10.1.3.3", UDP, 54, 40000))  # wrong source port
    assert not spd.inbound_allowed("sa", pkt("10.2.1.7", "10.1.3.3", UDP, 53, 40000))  # outside the remote TS
    assert not spd.inbound_allowed("sa", pkt("10.2.0.7", "10.3.0.1", UDP, 53, 40000))  # not to our side
    assert not spd.inbound_allowed("sa", pkt("10.2.0.7", "10.1.3.3", TCP, 53, 40000))
    assert not spd.inbound_allowed("sa", pkt("10.1.3.3", "10.2.0.7", UDP, 40000, 53))  # outbound direction
    assert not spd.inbound_allowed("unknown", pkt("10.2.0.7", "10.1.3.3", UDP, 53, 40000))


def test_inbound_check_multiple_selectors_and_v6() -> None:
    spd: Spd[str] = Spd()
    spd.install("sa", [ts("10.1.0.0/16"), ts("2001:db8:1::/48")], [ts("10.2.0.0/16"), ts("2001:db8:2::/48")], "SA")
    assert spd.inbound_allowed("sa", pkt("2001:db8:2::1", "2001:db8:1::1"))
    assert spd.inbound_allowed("sa", pkt("10.2.0.1", "10.1.0.1"))
    assert not spd.inbound_allowed("sa", pkt("2001:db8:3::1", "2001:db8:1::1"))
    assert spd.outbound(pkt("10.1.0.1", "10.2.0.1")) is None  # no policy at all: nothing is protected


def test_reload_keeps_installed_sas() -> None:
    spd: Spd[str] = Spd(site_to_site([A_TO_B]))
    spd.install("sa", [ts("10.1.0.0/16")], [ts("10.2.0.0/16")], "SA")
    spd.reload(make_config([IpsecPolicy("map", 30, acl=3000)], [Acl(3000, [A_TO_B])]))
    assert spd.outbound(pkt("10.1.0.1", "10.2.0.1")) == "SA"  # re-attached to the new rule
    m = spd.lookup(pkt("10.1.0.1", "10.2.0.1"))
    assert m is not None and m.policy == ("map", 30)


@pytest.mark.parametrize("trigger", list(TriggerMode))
def test_policy_without_acl_protects_nothing(trigger: TriggerMode) -> None:
    cfg = make_config([IpsecPolicy("map", 10, trigger_mode=trigger)], [])
    assert Spd(cfg).lookup(pkt("10.1.0.1", "10.2.0.1")) is None


def test_flow_cache_is_bounded_and_follows_changes() -> None:
    spd: Spd[str] = Spd(site_to_site([A_TO_B]))
    spd.flow_cache_size = 3
    spd.install("sa", [ts("10.1.0.0/16")], [ts("10.2.0.0/16")], "SA")
    flows = [pkt("10.1.0.1", f"10.2.0.{i}") for i in range(1, 10)] + [pkt("10.9.0.1", "10.2.0.1")]
    for _ in range(2):
        assert [spd.outbound(f) for f in flows] == ["SA"] * 9 + [None]
    spd.remove("sa")
    assert all(isinstance(spd.outbound(f), Trap) for f in flows[:9])
    spd.install("sa2", [ts("10.1.0.0/16")], [ts("10.2.0.0/16")], "SA2")
    assert spd.outbound(flows[0]) == "SA2"
    spd.reload(make_config([], []))
    assert spd.outbound(flows[0]) is None  # no policy any more: in clear, whatever is installed


# -------------------------------------------------------------------------------- the SA index


def test_index_agrees_with_a_scan_of_every_sa() -> None:
    """Prefixes, odd ranges, hosts, duplicates and IPv6 against a brute-force "newest covering SA"."""
    import random

    from ikegate.ike.wire.registry import TsType

    rng = random.Random(13)
    cfg = make_config([IpsecPolicy("map", 10, template="tpl")], [], [IpsecPolicyTemplate("tpl", 1)])
    spd: Spd[int] = Spd(cfg)
    hq = [ts("10.0.0.0/8"), ts("2001:db8::/32")]
    live: dict[int, TrafficSelector] = {}
    for i in range(600):
        if i % 5 == 0 and live:
            spd.remove(victim := rng.choice(sorted(live)))
            del live[victim]
        shape = rng.randrange(4)
        if shape == 0:
            remote = ts(f"172.16.{rng.randrange(4)}.{rng.randrange(0, 256, 16)}/28")
        elif shape == 1:
            lo = int(ipaddress.ip_address("172.16.0.0")) + rng.randrange(1024)
            hi = lo + rng.randrange(300)
            remote = TrafficSelector(TsType.TS_IPV4_ADDR_RANGE, 0, 0, 65535, ipaddress.IPv4Address(lo),
                                     ipaddress.IPv4Address(hi))
        elif shape == 2:
            remote = ts(f"172.16.{rng.randrange(4)}.{rng.randrange(256)}/32", UDP, 53, 53)
        else:
            remote = ts(f"2001:db8:{rng.randrange(4)}::/{rng.choice((48, 64, 128))}")
        spd.install(i, hq, [remote], i)
        live[i] = remote
    for _ in range(2000):
        if rng.random() < 0.8:
            dst = f"172.16.{rng.randrange(5)}.{rng.randrange(256)}"
            info = pkt("10.0.0.1", dst, UDP, 1000, rng.choice((53, 2000)))
        else:
            info = pkt("2001:db8::1", f"2001:db8:{rng.randrange(5)}::{rng.randrange(3)}")
        expected = max((i for i, r in live.items() if int(r.start_addr) <= info.dst <= int(r.end_addr)
                        and r.ts_type == (TsType.TS_IPV4_ADDR_RANGE if info.version == 4 else TsType.TS_IPV6_ADDR_RANGE)
                        and (not r.ip_protocol or (r.ip_protocol == info.protocol
                                                   and r.start_port <= info.dst_port <= r.end_port))),
                       default=None)
        assert spd.outbound(info) == expected


def _spd_lines(action: Callable[[], object]) -> int:
    """How many lines of spd.py run during ``action``: a loop over the SAs would show here as lines."""
    import sys

    from ikegate.dataplane import spd as module

    count = 0

    def trace(frame: FrameType, event: str, arg: object) -> Callable[..., object] | None:
        nonlocal count
        if frame.f_code.co_filename != module.__file__:
            return None
        if event == "line":
            count += 1
        return trace

    sys.settrace(trace)
    try:
        action()
    finally:
        sys.settrace(None)
    return count


def test_install_remove_and_lookup_cost_the_same_with_100000_selectors() -> None:
    """Counted, not timed: lines of spd.py executed per install, lookup and remove at 100, 10,000 and
    100,000 installed selectors. The index keeps only dicts, so the lines are all its work."""
    from ikegate.ike.wire.registry import TsType

    cfg = make_config([IpsecPolicy("map", 10, template="tpl")], [], [IpsecPolicyTemplate("tpl", 1)])
    spd: Spd[int] = Spd(cfg)
    hq = [ts("10.0.0.0/16")]
    base = int(ipaddress.ip_address("100.64.0.0"))

    def remote(i: int) -> list[TrafficSelector]:
        """A /28, a host, an unaligned range or (1 in 5) the selector every load-test SA shares."""
        kind, lo = i % 5, base + 16 * i
        if kind == 4:
            return [ts("198.51.100.1/32")]
        hi = lo + (15, 0, 9, 15)[kind]
        lo += (0, 0, 3, 0)[kind]
        addr = ipaddress.IPv4Address
        return [TrafficSelector(TsType.TS_IPV4_ADDR_RANGE, UDP if kind == 3 else 0, 0, 65535, addr(lo), addr(hi))]

    def install_upto(n: int) -> None:
        for i in range(len(spd), n):
            spd.install(i, hq, remote(i), i)

    def costs(probe: int) -> tuple[int, ...]:
        """Install, look up (hit and miss) and remove one SA of each shape, counting lines."""
        out = []
        for kind in range(5):
            key = probe + kind
            out.append(_spd_lines(lambda key=key: spd.install(key, hq, remote(key), key)))
            dst = str(ipaddress.IPv4Address(int(remote(key)[0].start_addr)))
            out.append(_spd_lines(lambda dst=dst, key=key: assert_is(spd.outbound(pkt("10.0.0.1", dst)), key)))
            out.append(_spd_lines(lambda: spd.outbound(pkt("10.0.0.1", "100.127.0.1"))))
            out.append(_spd_lines(lambda key=key: spd.remove(key)))
        return tuple(out)

    def assert_is(got: object, want: int) -> None:
        assert got == want

    probe = 1_000_000  # keys (and address blocks) beyond the installed ones
    install_upto(100)
    small = costs(probe)
    install_upto(10_000)
    assert costs(probe) == small
    install_upto(100_000)
    assert len(spd) == 100_000
    assert costs(probe) == small
    assert spd.outbound(pkt("10.0.0.1", "198.51.100.1")) == 99_999  # the newest of 20,000 sharing a selector
    # delete-all is linear: every remove costs what one costs at 100 SAs (kinds cycle, so compare per shape)
    removes = [small[4 * kind + 3] for kind in range(5)]
    for i in range(100_000):
        if i % 9973 == 0:
            assert _spd_lines(lambda i=i: spd.remove(i)) <= max(removes)
        else:
            spd.remove(i)
    assert len(spd) == 0 and spd.outbound(pkt("10.0.0.1", "198.51.100.1")) is None


def test_inbound_check_agrees_with_the_selector_rule() -> None:
    """``covers_in`` is written out as loops for speed: it must decide as ``_covers`` does on each side,
    whatever the family, protocol and ports (random packets against selectors with and without them)."""
    rng = random.Random(13)
    spd: Spd[str] = Spd()
    local = [ts("10.1.0.0/16"), ts("10.9.0.0/24", TCP, 80, 443), ts("2001:db8:1::/48", UDP, 53, 53)]
    remote = [ts("10.2.0.0/24", UDP, 1000, 2000), ts("10.3.0.0/16", ICMP), ts("2001:db8:2::/48")]
    spd.install("sa", local, remote, "SA")
    inst = spd._installed["sa"]
    v4 = ["10.1.2.3", "10.9.0.1", "10.2.0.9", "10.3.4.5", "10.4.0.1"]
    v6 = ["2001:db8:1::5", "2001:db8:2::7", "2001:db8:3::1"]
    allowed = 0
    for _ in range(3000):
        addrs = rng.choice([v4, v6])
        info = pkt(rng.choice(addrs), rng.choice(addrs), rng.choice([UDP, TCP, ICMP, 47]),
                   rng.choice([53, 80, 443, 999, 1000, 1500, 2000, 2001]), rng.choice([53, 80, 443, 1500, 8080]))
        v, p = info.version, info.protocol
        expected = any(_covers(s, v, info.src, p, info.src_port) for s in inst.remote) and any(
            _covers(s, v, info.dst, p, info.dst_port) for s in inst.local)
        assert spd.inbound_allowed("sa", info) is expected, info
        allowed += expected
    assert 0 < allowed < 3000  # both answers were exercised

"""IPv6 host traffic between two ikegates: `acl ipv6 number`, `security acl ipv6`, IPv6 pings."""

from __future__ import annotations

import pytest

from ikegate.cli.loader import load_config
from ikegate.cli.render.config import render_config
from ikegate.gateway.controller import Gateway
from ikegate.sad import IpsecSaEntry
from tests.protocol.netsim import Net, lab_config

HQ6 = {
    "#\nipsec policy-template branches 1": "#\nacl ipv6 number 3000\n rule 5 permit ipv6 source 2001:db8::/64 "
                                          "destination 2001:db8:1::/48\n#\nipsec policy-template branches 1",
    " security acl 3000\n": " security acl 3000\n security acl ipv6 3000\n",
    " ip address 10.0.0.1 255.255.255.0\n": " ip address 10.0.0.1 255.255.255.0\n ipv6 enable\n"
                                           " ipv6 address 2001:db8::1/64\n",
}


def branch6(n: int) -> dict[str, str]:
    return {
        "#\nipsec policy site 10 isakmp": f"#\nacl ipv6 number 3001\n rule 5 permit ipv6 source 2001:db8:1:{n}::/64 "
                                          "destination 2001:db8::/64\n#\nipsec policy site 10 isakmp",
        " security acl 3001\n": " security acl 3001\n security acl ipv6 3001\n",
        f" ip address 10.1.{n}.1 255.255.255.0\n": f" ip address 10.1.{n}.1 255.255.255.0\n ipv6 enable\n"
                                                  f" ipv6 address 2001:db8:1:{n}::1/64\n",
    }


def _lab() -> tuple[Net, Gateway, Gateway, Gateway]:
    net = Net()
    hq = net.add(Gateway(lab_config("hq", HQ6)))
    b1 = net.add(Gateway(lab_config("branch1", branch6(1))))
    b2 = net.add(Gateway(lab_config("branch2", branch6(2))))
    for gw in (hq, b1, b2):
        gw.start(net.now)
    net.pump()
    return net, hq, b1, b2


def test_ipv6_acl_round_trip() -> None:
    config = lab_config("branch1", branch6(1))
    assert config.acls6[3001].rules[0].source is not None
    text = "\n".join(render_config(config))
    assert "acl ipv6 number 3001\n rule 5 permit ipv6 source 2001:db8:1:1::/64 destination 2001:db8::/64" in text
    assert " security acl ipv6 3001" in text
    again, errors = load_config(text)
    assert not errors and render_config(again) == render_config(config)


def test_auto_policy_negotiates_both_families_and_ipv6_ping_works() -> None:
    net, hq, b1, b2 = _lab()
    children = sorted((e.acl_number, e.acl_rule, str(e.local_selectors[0].start))
                      for e in b1.sad.entries() if isinstance(e, IpsecSaEntry))
    assert children == [(3001, 5, "10.1.1.0"), (3001, 5, "2001:db8:1:1::")]
    got: list[int] = []
    b1.on_echo_reply = lambda ident, seq, now: got.append(seq)
    b1.ping(net.now, "2001:db8:1:1::1", "2001:db8::1", 4, 1)
    b1.ping(net.now, "10.1.1.1", "10.0.0.1", 4, 2)
    net.pump()
    assert got == [1, 2]


def test_ipv6_traffic_triggers_the_ipv6_rule_only() -> None:
    net, hq, b2_unused, b2 = _lab()
    got: list[int] = []
    b2.on_echo_reply = lambda ident, seq, now: got.append(seq)
    b2.ping(net.now, "2001:db8:1:2::1", "2001:db8::1", 9, 1)
    net.pump()
    assert got == [1]
    children = [e for e in b2.sad.entries() if isinstance(e, IpsecSaEntry)]
    assert len(children) == 1 and str(children[0].remote_selectors[0].start) == "2001:db8::"
    b2.ping(net.now, "2001:db8:1:2::1", "2001:db8:99::1", 9, 2)  # matches no rule: nothing more
    net.pump()
    assert len([e for e in b2.sad.entries() if isinstance(e, IpsecSaEntry)]) == 1


def test_ipv6_acl_cli_errors_and_bound_rule() -> None:
    from ikegate.cli.shell import Shell

    config = lab_config("branch1", branch6(1))
    shell = Shell(config)
    shell.run("system-view")
    out = shell.run("acl ipv6 number 3001")
    assert out.error is None and shell.prompt == "[USG6000-acl6-adv-3001]".replace("USG6000", config.sysname)
    bad = shell.run("rule 7 permit ipv6 source 2001:db8:zz::/64")
    assert bad.error == "Error: Wrong parameter found at '^' position."
    assert bad.lines[0].index("^") == len(shell.prompt) + len("rule 7 permit ipv6 source ")
    refused = shell.run("rule 9 permit ipv6 source 2001:db8:1:9::/64")  # bound through policy site
    assert refused.error is not None and "IPv6 ACL 3001" in refused.error
    assert [r.rule_id for r in config.acls6[3001].rules] == [5]


# HQ (2001:db8::/64) and Branch1 (2001:db8:1::/64) with IPv6 ACLs only, over either outer family. The IPv6
# outer addresses sit outside both protected prefixes.
WAN6 = {"127.0.0.11": "2001:db8:ff::11", "127.0.0.12": "2001:db8:ff::12"}


def _outer6() -> dict[str, str]:
    out = {f"ip address {v4} 255.0.0.0": f"ipv6 enable\n ipv6 address {v6}/64" for v4, v6 in WAN6.items()}
    out["remote-address 127.0.0.11"] = f"remote-address {WAN6['127.0.0.11']}"
    return out


def _pair(outer: int, trigger: str) -> tuple[Net, Gateway, Gateway]:
    hq = {
        "#\nipsec policy-template branches 1": "#\nacl ipv6 number 3000\n rule 5 permit ipv6 source 2001:db8::/64 "
                                              "destination 2001:db8:1::/64\n#\nipsec policy-template branches 1",
        " security acl 3000\n": " security acl ipv6 3000\n",
        " ip address 10.0.0.1 255.255.255.0\n": " ip address 10.0.0.1 255.255.255.0\n ipv6 enable\n"
                                               " ipv6 address 2001:db8::1/64\n",
    }
    b1 = {
        "#\nipsec policy site 10 isakmp": "#\nacl ipv6 number 3001\n rule 5 permit ipv6 source 2001:db8:1::/64 "
                                         "destination 2001:db8::/64\n#\nipsec policy site 10 isakmp",
        " security acl 3001\n": " security acl ipv6 3001\n",
        " sa trigger-mode auto\n": " sa trigger-mode auto\n" if trigger == "auto" else "",
        " ip address 10.1.1.1 255.255.255.0\n": " ip address 10.1.1.1 255.255.255.0\n ipv6 enable\n"
                                               " ipv6 address 2001:db8:1::1/64\n",
    }
    if outer == 6:
        hq, b1 = {**hq, **_outer6()}, {**b1, **_outer6()}
    net = Net()
    gw_hq = net.add(Gateway(lab_config("hq", hq)))
    gw_b1 = net.add(Gateway(lab_config("branch1", b1)))
    assert gw_b1.config.ipsec_policies[("site", 10)].acl is None and gw_b1.config.acls6[3001].rules
    for gw in (gw_hq, gw_b1):
        gw.start(net.now)
    net.pump()
    return net, gw_hq, gw_b1


@pytest.mark.parametrize("trigger", ["auto", "traffic-based"])
@pytest.mark.parametrize("outer", [4, 6])
def test_ipv6_ping_between_branch1_and_hq(outer: int, trigger: str) -> None:
    net, hq, b1 = _pair(outer, trigger)
    assert len([e for e in b1.sad.entries() if isinstance(e, IpsecSaEntry)]) == (1 if trigger == "auto" else 0)
    got: list[tuple[int, int]] = []
    b1.on_echo_reply = lambda ident, seq, now: got.append((ident, seq))
    for seq in (1, 2, 3):
        b1.ping(net.now, "2001:db8:1::1", "2001:db8::1", 6, seq)  # the first one may start the negotiation
        net.pump()
    assert got == [(6, 1), (6, 2), (6, 3)]
    (child,) = [e for e in b1.sad.entries() if isinstance(e, IpsecSaEntry)]
    assert (child.acl_number, child.acl_rule) == (3001, 5)
    assert [str(s.network) for s in (*child.local_selectors, *child.remote_selectors)] == [
        "2001:db8:1::/64", "2001:db8::/64"]
    assert child.peer_address.version == outer
    b1.sync_counters()
    assert (child.packets_out, child.packets_in) == (3, 3)
    esp = [(src, dst) for data, src, dst in net.seen if src[1] == 4500 and data[:4] != bytes(4)]
    assert len(esp) == 6 and all((":" in src[0]) == (outer == 6) for src, _dst in esp)
    b1.ping(net.now, "10.1.1.1", "10.0.0.1", 6, 4)  # no IPv4 ACL on either side: not protected, not sent
    net.pump()
    assert got[-1] == (6, 3) and len([e for e in b1.sad.entries() if isinstance(e, IpsecSaEntry)]) == 1

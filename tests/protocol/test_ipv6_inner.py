"""IPv6 host traffic between two ikegates: `acl ipv6 number`, `security acl ipv6`, IPv6 pings."""

from __future__ import annotations

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

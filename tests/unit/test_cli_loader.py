"""Loading configuration text through the engine, and the canonical rendering's round trip."""

from __future__ import annotations

from ikegate.cli.loader import load_config
from ikegate.cli.render.config import render_config
from ikegate.cli.shell import Shell
from ikegate.policy import secret
from ikegate.policy.model import TriggerMode

HQ_KEY = "HQ-branch-key!1"
V2_KEY = "v2-peer-key"
DYN_KEY = "dial-in-key"

# Written the way an operator might type it (with quit lines, abbreviations, odd order), not canonically.
SAMPLE = f"""\
#
sysname HQ-FW
ikev1 phase1-phase2 sa dependent
#
acl number 3000
 rule 5 permit ip source 10.1.0.0 0.0.255.255 destination 10.2.0.0 0.0.255.255
 rule permit tcp source 10.1.1.0 0.0.0.255 source-port range 1024 65535 destination 10.2.1.10 0 destination-port eq 443
 quit
acl 3001
 rule 10 permit udp source any destination 10.3.0.0 0.0.255.255 destination-port range 5000 5100
 rule 20 deny icmp
acl ipv6 number 3001
 rule permit ipv6 source 2001:db8:1::9 48 destination 2001:db8:2::/64
 rule 3 deny icmpv6
acl ipv6 number 3000
 rule 1 permit tcp source any destination 2001:db8:2::10/128 destination-port eq 443
#
ike proposal 20
 encryption-algorithm aes-gcm-256
 dh group19
 prf hmac-sha2-384
 integrity-algorithm hmac-sha2-384
#
ike proposal 10
 encryption-algorithm aes-256 aes-128
 dh group14 group5
 authentication-algorithm sha2-256 sha1
 sa duration 28800
#
ipsec proposal p-strong
 esp encryption-algorithm aes-gcm-256
 esp authentication-algorithm sha2-512
#
ipsec proposal p-legacy
 transform esp
 encapsulation-mode tunnel
 esp encryption-algorithm aes-128
 esp authentication-algorithm sha1
#
ike peer branch1
 undo version 2
 exchange-mode main
 pre-shared-key {HQ_KEY}
 ike-proposal 10
 remote-address 198.51.100.2
 dpd type on-demand
 dpd idle-time 60
 ikev1 phase1-phase2 sa dependent
#
ike peer branch2
 undo version 1
 pre-shared-key {secret.encrypt_secret(V2_KEY)}
 ike-proposal 20
 ike-proposal 10
 remote-address 2001:db8:2::2
 remote-address 203.0.113.2
 local-id-type fqdn
 local-id hq.example.net
 remote-id-type fqdn
 remote-id branch2.example.net
 dpd retry-limit 5
 undo nat traversal
#
ike peer dialin
 pre-shared-key {DYN_KEY}
 ike-proposal 20
 remote-id-type user-fqdn
#
ipsec policy-template dyn 1
 security acl ipv6 3000
 security acl 3001
 ike-peer dialin
 proposal p-strong
 pfs dh-group19
 sa duration time-based 1800
#
ipsec policy vpn 10 isakmp
 security acl 3000
 security acl ipv6 3001
 ike-peer branch1
 proposal p-legacy
 sa trigger-mode auto
#
ipsec policy vpn 20 isakmp
 security acl 3001
 ike-peer branch2
 proposal p-strong p-legacy
 sa trigger-mode traffic-based
 pfs dh-group14
 sa duration traffic-based 200000
#
ipsec policy vpn 100 isakmp template dyn
#
interface GigabitEthernet0/0/2
 ip address 10.1.0.1 255.255.0.0
#
interface GigabitEthernet0/0/1
 ip address 192.0.2.1 24
 ipv6 enable
 ipv6 address 2001:db8:1::1/64
 ipsec policy vpn
#
return
"""


def test_sample_loads_without_errors() -> None:
    config, errors = load_config(SAMPLE)
    assert errors == []
    assert config.sysname == "HQ-FW"
    assert config.ikev1_dependent
    assert sorted(config.interfaces) == ["GigabitEthernet0/0/1", "GigabitEthernet0/0/2"]
    assert [r.rule_id for r in config.acls[3000].rules] == [5, 10]
    assert [r.rule_id for r in config.acls6[3001].rules] == [3, 5]  # its own numbering and number space
    source = config.acls6[3001].rules[1].source
    assert source is not None and str(source.network) == "2001:db8:1::/48"  # host bits cleared
    assert config.ike_peers["branch1"].versions == {1}
    assert config.ike_peers["branch2"].pre_shared_key == V2_KEY
    assert config.ike_peers["dialin"].remote_addresses == []
    group = config.policy_group("vpn")
    assert [p.seq for p in group] == [10, 20, 100]
    assert group[0].trigger_mode is TriggerMode.AUTO
    assert group[1].trigger_mode is TriggerMode.TRAFFIC_BASED
    assert group[2].template == "dyn"
    assert (group[0].acl, group[0].acl6, group[1].acl, group[1].acl6) == (3000, 3001, 3001, None)
    assert config.ipsec_templates[("dyn", 1)].acl6 == 3000
    assert config.interfaces["GigabitEthernet0/0/1"].ipsec_policy == "vpn"


def test_round_trip_is_a_fixed_point() -> None:
    first, errors = load_config(SAMPLE)
    assert errors == []
    text1 = "\n".join(render_config(first))
    second, errors = load_config(text1)
    assert errors == []
    text2 = "\n".join(render_config(second))
    assert text1 == text2
    assert first == second


def test_canonical_text() -> None:
    config, _ = load_config(SAMPLE)
    lines = render_config(config)
    assert lines[:4] == ["#", " sysname HQ-FW", " ikev1 phase1-phase2 sa dependent", "#"]
    text = "\n".join(lines)
    # sections in dependency order, objects sorted, defaults left out
    order = [
        "acl number 3000",
        "acl number 3001",
        "acl ipv6 number 3000",
        "acl ipv6 number 3001",
        "ipsec proposal p-legacy",
        "ipsec proposal p-strong",
        "ike proposal 10",
        "ike proposal 20",
        "ike peer branch1",
        "ike peer branch2",
        "ike peer dialin",
        "ipsec policy-template dyn 1",
        "ipsec policy vpn 10 isakmp",
        "ipsec policy vpn 20 isakmp",
        "ipsec policy vpn 100 isakmp template dyn",
        "interface GigabitEthernet0/0/1",
        "interface GigabitEthernet0/0/2",
    ]
    positions = [lines.index(header) for header in order]
    assert positions == sorted(positions)
    assert (
        " rule 10 permit tcp source 10.1.1.0 0.0.0.255 source-port range 1024 65535 destination "
        "10.2.1.10 0 destination-port eq 443" in lines
    )
    assert " rule 10 permit udp destination 10.3.0.0 0.0.255.255 destination-port range 5000 5100" in lines
    assert " ip address 192.0.2.1 255.255.255.0" in lines
    v6 = lines[lines.index("acl ipv6 number 3001"):lines.index("ipsec proposal p-legacy")]
    assert v6 == ["acl ipv6 number 3001", " rule 3 deny icmpv6",
                  " rule 5 permit ipv6 source 2001:db8:1::/48 destination 2001:db8:2::/64", "#"]
    assert " rule 1 permit tcp destination 2001:db8:2::10/128 destination-port eq 443" in lines
    template = lines[lines.index("ipsec policy-template dyn 1"):lines.index("ipsec policy vpn 10 isakmp")]
    assert template[1:3] == [" security acl 3001", " security acl ipv6 3000"]  # IPv4 first, as typed or not
    assert " sa trigger-mode auto" in lines
    assert "sa trigger-mode traffic-based" not in text  # the default
    assert "transform esp" not in text and "encapsulation-mode" not in text
    assert "exchange-mode main" not in text
    assert lines[-2:] == ["#", "return"]
    peer = lines[lines.index("ike peer branch2") : lines.index("ike peer dialin")]
    assert peer[:3] == ["ike peer branch2", " undo version 1", f" pre-shared-key {secret.encrypt_secret(V2_KEY)}"]


def test_no_key_in_clear_anywhere_in_the_rendering() -> None:
    config, _ = load_config(SAMPLE)
    text = "\n".join(render_config(config))
    for key in (HQ_KEY, V2_KEY, DYN_KEY):
        assert key not in text
    shell = Shell(config)
    shell.execute("system-view")
    shell.execute("ike peer branch1")
    this = shell.execute("display this").text
    assert HQ_KEY not in this and "pre-shared-key %^%#" in this


def test_bad_lines_are_reported_with_their_numbers_and_the_rest_loads() -> None:
    text = "\n".join(
        [
            "sysname EDGE",  # 1
            "ike proposal 10",  # 2
            " dh group14",  # 3
            " dh group99",  # 4  unknown group
            " sa duration 10",  # 5  out of range
            "ike peer p",  # 6
            " pre-shared-key secret-1",  # 7
            " frobnicate now",  # 8  unknown
            " remote-address 192.0.2.1",  # 9
            "acl 3000",  # 10
            " rule 5 permit ip source 10.0.0.0 0.255.0.255",  # 11 non-contiguous wildcard
            " rule 10 permit ip",  # 12
            "return",  # 13
            "interface GigabitEthernet0/0/1",  # 14 (after return: still loads)
        ]
    )
    config, errors = load_config(text)
    assert [e.line_number for e in errors] == [4, 5, 8, 11]
    assert errors[0].line == " dh group99"
    assert errors[1].message == "Error: Wrong parameter found at '^' position."
    assert "line 8: frobnicate now: Error: Unrecognized command" in str(errors[2])
    assert config.sysname == "EDGE"
    assert config.ike_proposals[10].dh == ["group14"]
    assert config.ike_peers["p"].pre_shared_key == "secret-1"
    assert [str(a) for a in config.ike_peers["p"].remote_addresses] == ["192.0.2.1"]
    assert [r.rule_id for r in config.acls[3000].rules] == [10]
    assert "GigabitEthernet0/0/1" in config.interfaces


def test_loading_skips_reference_checks_and_the_bound_rule() -> None:
    # binding first, objects later; and an ACL changed after its group is bound
    text = "\n".join(
        [
            "interface GigabitEthernet0/0/1",
            " ipsec policy vpn",
            "ipsec policy vpn 10 isakmp",
            " security acl 3000",
            " ike-peer later",
            "acl 3000",
            " rule 5 permit ip",
            "ike peer later",
            " pre-shared-key k",
        ]
    )
    config, errors = load_config(text)
    assert errors == []
    assert config.ike_peers["later"].pre_shared_key == "k"
    assert config.acls[3000].rules[0].rule_id == 5


def test_a_loaded_config_is_editable_with_the_rule_enforced() -> None:
    config, _ = load_config(SAMPLE)
    shell = Shell(config)
    shell.execute("system-view")
    shell.execute("acl 3000")
    assert "cannot be modified" in (shell.execute("rule 99 permit ip").error or "")
    shell.execute("quit")
    shell.execute("acl ipv6 number 3001")  # bound through policy vpn 10
    assert "IPv6 ACL 3001 is referenced" in (shell.execute("rule 99 permit ipv6").error or "")
    shell.execute("quit")
    shell.execute("acl ipv6 number 3005")  # referenced by no policy: free to change
    assert shell.execute("rule 99 permit ipv6").ok

"""Every configuration command and its ``undo``, by their effect on the model."""

from __future__ import annotations

import ipaddress

import pytest

from ikegate.cli.shell import Shell
from ikegate.policy import secret
from ikegate.policy.model import (
    AclAddress,
    Config,
    DpdType,
    EncapsulationMode,
    ExchangeMode,
    IdType,
    IkePeer,
    IkeProposal,
    IpsecPolicy,
    IpsecProposal,
    PortRange,
    TriggerMode,
)
from tests.conftest import config_tree, fails, system_shell

TREE = config_tree()
run = system_shell


# --- system view ----------------------------------------------------------------------------------
def test_sysname_and_undo() -> None:
    shell = run("sysname HQ-FW")
    assert shell.config.sysname == "HQ-FW"
    assert shell.prompt == "[HQ-FW]"
    shell.execute("undo sysname")
    assert shell.config.sysname == Config().sysname


def test_global_ikev1_dependent_and_undo() -> None:
    shell = run("ikev1 phase1-phase2 sa dependent")
    assert shell.config.ikev1_dependent is True
    run("undo ikev1 phase1-phase2 sa dependent", config=shell.config)
    assert shell.config.ikev1_dependent is False


@pytest.mark.parametrize(
    ("typed", "name"),
    [
        ("GigabitEthernet0/0/1", "GigabitEthernet0/0/1"),
        ("gigabitethernet1/0/2", "GigabitEthernet1/0/2"),
        ("GE0/0/3", "GigabitEthernet0/0/3"),
        ("LoopBack0", "LoopBack0"),
        ("loop1", "LoopBack1"),
        ("Tunnel7", "Tunnel7"),
    ],
)
def test_interface_names(typed: str, name: str) -> None:
    shell = run(f"interface {typed}")
    assert name in shell.config.interfaces
    assert shell.prompt == f"[USG6000-{name}]"


@pytest.mark.parametrize("typed", ["GigabitEthernet0/1", "Serial0/0/0", "LoopBack0/1", "Tunnel"])
def test_bad_interface_names(typed: str) -> None:
    assert "Wrong parameter" in fails(run(), f"interface {typed}")


def test_undo_interface() -> None:
    shell = run("interface LoopBack0", "quit", "undo interface LoopBack0")
    assert shell.config.interfaces == {}
    assert "does not exist" in fails(shell, "undo interface LoopBack0")


def test_interface_addresses_and_undo() -> None:
    shell = run("interface GigabitEthernet0/0/1", "ip address 10.1.1.1 255.255.255.0")
    itf = shell.config.interfaces["GigabitEthernet0/0/1"]
    assert itf.ipv4 == [ipaddress.IPv4Interface("10.1.1.1/24")]
    run("interface GigabitEthernet0/0/1", "ip address 10.2.2.2 30", config=shell.config)
    assert itf.ipv4 == [ipaddress.IPv4Interface("10.2.2.2/30")]
    assert "Wrong parameter" in fails(shell, "ip address 10.1.1.1 255.0.255.0")
    assert "Wrong parameter" in fails(shell, "ip address 10.1.1.1 33")
    shell.execute("undo ip address")
    assert itf.ipv4 == []
    shell.execute("ipv6 enable")
    assert itf.ipv6_enabled
    shell.execute("ipv6 address 2001:db8::1/64")
    shell.execute("ipv6 address 2001:db8:1::1/64")
    assert [str(a) for a in itf.ipv6] == ["2001:db8::1/64", "2001:db8:1::1/64"]
    assert shell.execute("undo ipv6 address 2001:db8::1/64").ok
    assert [str(a) for a in itf.ipv6] == ["2001:db8:1::1/64"]
    shell.execute("undo ipv6 address")
    assert itf.ipv6 == []
    shell.execute("undo ipv6 enable")
    assert not itf.ipv6_enabled
    assert "Wrong parameter" in fails(shell, "ipv6 address 2001:db8::1")


def test_interface_policy_binding() -> None:
    shell = run("ipsec policy map 10 isakmp", "interface GigabitEthernet0/0/1", "ipsec policy map")
    assert shell.config.interfaces["GigabitEthernet0/0/1"].ipsec_policy == "map"
    assert "does not exist" in fails(shell, "ipsec policy nosuch")
    shell2 = run("interface GigabitEthernet0/0/2", config=shell.config)
    assert "already applied" in fails(shell2, "ipsec policy map")
    shell.execute("undo ipsec policy")
    assert shell.config.interfaces["GigabitEthernet0/0/1"].ipsec_policy is None


# --- ike proposal ---------------------------------------------------------------------------------
def test_ike_proposal_settings_and_undo() -> None:
    shell = run(
        "ike proposal 10",
        "encryption-algorithm aes-gcm-256 aes-256 aes-256",
        "dh group19 group14",
        "authentication-algorithm sha2-512 sha1",
        "authentication-method pre-share",
        "integrity-algorithm hmac-sha2-512",
        "prf hmac-sha2-384 hmac-sha1",
        "sa duration 3600",
    )
    p = shell.config.ike_proposals[10]
    assert p.encryption == ["aes-gcm-256", "aes-256"]  # duplicates dropped, order kept
    assert p.dh == ["group19", "group14"]
    assert p.authentication == ["sha2-512", "sha1"]
    assert p.integrity == ["hmac-sha2-512"]
    assert p.prf == ["hmac-sha2-384", "hmac-sha1"]
    assert p.duration == 3600
    for keyword in (
        "encryption-algorithm",
        "dh",
        "authentication-algorithm",
        "authentication-method",
        "integrity-algorithm",
        "prf",
        "sa duration",
    ):
        assert shell.execute(f"undo {keyword}").ok
    assert p == IkeProposal(10)
    assert "Wrong parameter" in fails(shell, "sa duration 59")
    assert "Ambiguous" in fails(shell, "dh group1")  # group14/15/16: choice words abbreviate like keywords
    assert "Unrecognized" in fails(shell, "dh group7")


def test_undo_ike_proposal() -> None:
    shell = run("ike proposal 10", "quit", "undo ike proposal 10")
    assert shell.config.ike_proposals == {}
    assert "does not exist" in fails(shell, "undo ike proposal 10")
    assert "Wrong parameter" in fails(shell, "ike proposal 0")


# --- ike peer -------------------------------------------------------------------------------------
def test_ike_peer_settings_and_undo() -> None:
    shell = run(
        "ike proposal 5",
        "ike peer B",
        "pre-shared-key Key-1",
        "ike-proposal 5",
        "remote-address 192.0.2.1",
        "remote-address 2001:db8::2",
        "undo version 2",
        "exchange-mode aggressive",
        "local-id-type fqdn",
        "local-id hq.example.com",
        "remote-id-type user-fqdn",
        "remote-id vpn@example.com",
        "dpd type on-demand",
        "dpd idle-time 20",
        "dpd retransmit-interval 5",
        "dpd retry-limit 4",
        "ikev1 phase1-phase2 sa dependent",
        "undo nat traversal",
    )
    peer = shell.config.ike_peers["B"]
    assert peer.pre_shared_key == "Key-1"
    assert peer.ike_proposals == [5]
    assert [str(a) for a in peer.remote_addresses] == ["192.0.2.1", "2001:db8::2"]
    assert peer.versions == {1}
    assert peer.exchange_mode is ExchangeMode.AGGRESSIVE
    assert (peer.local_id_type, peer.local_id) == (IdType.FQDN, "hq.example.com")
    assert (peer.remote_id_type, peer.remote_id) == (IdType.USER_FQDN, "vpn@example.com")
    assert (peer.dpd.type, peer.dpd.idle_time, peer.dpd.retransmit_interval, peer.dpd.retry_limit) == (
        DpdType.ON_DEMAND,
        20,
        5,
        4,
    )
    assert peer.ikev1_dependent is True
    assert peer.nat_traversal is False

    assert "At least one IKE version" in fails(shell, "undo version 1")
    for line in ("version 2", "undo version 1"):
        assert shell.execute(line).ok
    assert peer.versions == {2}
    shell.execute("version 1")
    for line in (
        "undo pre-shared-key",
        "undo ike-proposal 5",
        "undo remote-address 192.0.2.1",
        "undo remote-address",
        "undo exchange-mode",
        "undo local-id-type",
        "undo local-id",
        "undo remote-id-type",
        "undo remote-id",
        "undo dpd type",
        "undo dpd idle-time",
        "undo dpd retransmit-interval",
        "undo dpd retry-limit",
        "nat traversal",
    ):
        assert shell.execute(line).ok, line
    assert shell.execute("undo ikev1 phase1-phase2 sa dependent").ok
    assert peer.ikev1_dependent is False  # explicitly off, overriding the global setting
    peer.ikev1_dependent = None
    assert peer == IkePeer("B")


def test_ike_peer_references_and_ranges() -> None:
    shell = run("ike peer B")
    assert "IKE proposal 7 does not exist" in fails(shell, "ike-proposal 7")
    assert "Wrong parameter" in fails(shell, "dpd idle-time 3601")
    assert "Wrong parameter" in fails(shell, "dpd retry-limit 2")
    assert "Wrong parameter" in fails(shell, "pre-shared-key " + "k" * 128)
    assert "Wrong parameter" in fails(shell, "pre-shared-key %^%#garbage%^%#")
    assert "Unrecognized" in fails(shell, "version 3")  # an enumerated word, not a number


def test_pre_shared_key_accepts_the_cipher_form() -> None:
    shell = run("ike peer B", f"pre-shared-key {secret.encrypt_secret('from-cipher')}")
    assert shell.config.ike_peers["B"].pre_shared_key == "from-cipher"


def test_undo_ike_peer() -> None:
    shell = run("ike peer B", "quit", "undo ike peer B")
    assert shell.config.ike_peers == {}


# --- ipsec proposal -------------------------------------------------------------------------------
def test_ipsec_proposal_settings_and_undo() -> None:
    shell = run(
        "ipsec proposal ts",
        "transform esp",
        "esp encryption-algorithm aes-128 aes-gcm-128",
        "esp authentication-algorithm sha2-384",
        "encapsulation-mode transport",
    )
    p = shell.config.ipsec_proposals["ts"]
    assert (p.esp_encryption, p.esp_authentication) == (["aes-128", "aes-gcm-128"], ["sha2-384"])
    assert p.encapsulation_mode is EncapsulationMode.TRANSPORT
    for line in (
        "undo transform",
        "undo esp encryption-algorithm",
        "undo esp authentication-algorithm",
        "undo encapsulation-mode",
    ):
        assert shell.execute(line).ok
    assert p == IpsecProposal("ts")
    shell.execute("quit")
    shell.execute("undo ipsec proposal ts")
    assert shell.config.ipsec_proposals == {}


# --- acl -----------------------------------------------------------------------------------------
def test_acl_rules_auto_numbering_and_undo() -> None:
    shell = run(
        "acl number 3000",
        "rule permit ip source 10.1.1.7 0.0.0.255 destination 10.2.0.0 0.0.255.255",
        "rule 7 deny icmp",
        "rule permit tcp source any source-port eq 80 destination 192.0.2.1 0 destination-port range 1000 2000",
        "rule permit udp",
    )
    acl = shell.config.acls[3000]
    assert [r.rule_id for r in acl.rules] == [5, 7, 10, 15]
    first = acl.rules[0]
    assert first.action == "permit" and first.protocol == "ip"
    assert first.source == AclAddress(ipaddress.IPv4Address("10.1.1.0"), ipaddress.IPv4Address("0.0.0.255"))
    assert first.destination is not None and str(first.destination.network) == "10.2.0.0/16"
    third = acl.rules[2]
    assert third.source is None
    assert third.source_port == PortRange(80, 80)
    assert third.destination_port == PortRange(1000, 2000)
    assert third.destination == AclAddress(ipaddress.IPv4Address("192.0.2.1"), ipaddress.IPv4Address(0))
    assert acl.rules[1].action == "deny"
    shell.execute("rule 7 permit ip")  # same id: replaced
    assert [r.action for r in acl.rules if r.rule_id == 7] == ["permit"]
    shell.execute("undo rule 7")
    assert [r.rule_id for r in acl.rules] == [5, 10, 15]
    assert "does not exist" in fails(shell, "undo rule 7")
    shell.execute("quit")
    run("acl 3001", config=shell.config)
    assert 3001 in shell.config.acls
    shell.execute("undo acl 3001")
    shell.execute("undo acl number 3000")
    assert shell.config.acls == {}
    assert "Wrong parameter" in fails(shell, "acl 2999")


def test_ipv6_acl_rules_both_prefix_forms_and_undo() -> None:
    shell = run(
        "acl ipv6 number 3000",
        "rule permit ipv6 source 2001:db8:1::7 64 destination 2001:db8::/64",
        "rule 7 deny icmpv6",
        "rule permit tcp source any source-port eq 80 destination 2001:db8::1/128 destination-port range 1000 2000",
        "rule permit udp",
    )
    assert shell.prompt == "[USG6000-acl6-adv-3000]"
    acl = shell.config.acls6[3000]
    assert acl.ipv6 and shell.config.acls == {}  # its own number space
    assert [r.rule_id for r in acl.rules] == [5, 7, 10, 15]
    first = acl.rules[0]
    assert (first.action, first.protocol) == ("permit", "ipv6")
    host_bits = ipaddress.IPv6Address("::ffff:ffff:ffff:ffff")
    assert first.source == AclAddress(ipaddress.IPv6Address("2001:db8:1::"), host_bits)  # 2001:db8:1::7 64
    assert first.destination is not None and str(first.destination.network) == "2001:db8::/64"
    third = acl.rules[2]
    assert third.source is None and third.protocol == "tcp"
    assert (third.source_port, third.destination_port) == (PortRange(80, 80), PortRange(1000, 2000))
    assert third.destination == AclAddress(ipaddress.IPv6Address("2001:db8::1"), ipaddress.IPv6Address(0))
    assert (acl.rules[1].action, acl.rules[1].ip_protocol) == ("deny", 58)
    shell.execute("undo rule 7")
    assert [r.rule_id for r in acl.rules] == [5, 10, 15]
    assert fails(shell, "undo rule 7") == "Error: The rule 7 does not exist in IPv6 ACL 3000."
    shell.execute("quit")
    run("acl number 3000", "rule permit ip", config=shell.config)
    assert [r.rule_id for r in shell.config.acls[3000].rules] == [5] and len(acl.rules) == 3
    assert shell.execute("undo acl ipv6 number 3000").ok
    assert shell.config.acls6 == {} and 3000 in shell.config.acls
    assert fails(shell, "undo acl ipv6 number 3000") == "Error: The IPv6 ACL 3000 does not exist."
    assert "Wrong parameter" in fails(shell, "acl ipv6 number 2999")
    assert "Unrecognized" in fails(shell, "acl ipv6 3000")  # ``number`` is required for IPv6


@pytest.mark.parametrize(
    ("line", "error", "at"),
    [
        ("rule permit ipv6 source 2001:db8:zz::/64", "Wrong parameter", "2001:db8:zz::/64"),
        ("rule permit ipv6 source 2001:db8::/129", "Wrong parameter", "2001:db8::/129"),
        ("rule permit ipv6 destination 2001:db8:: 129", "Wrong parameter", "129"),
        ("rule permit ipv6 source 10.1.1.0 0.0.0.255", "Wrong parameter", "10.1.1.0"),
        ("rule permit ipv6 source 2001:db8::1/64 source-port eq 80", "Too many parameters", "source-port"),
        ("rule permit tcp destination any source-port eq 80", "Too many parameters", "source-port"),
        ("rule permit udp destination-port range 90 80", "Wrong parameter", "80"),
    ],
)
def test_ipv6_acl_rule_errors_put_the_caret_under_the_bad_token(line: str, error: str, at: str) -> None:
    shell = run("acl ipv6 number 3000")
    outcome = shell.execute(line)
    assert outcome.error == f"Error: {error} found at '^' position."
    assert outcome.lines[0].index("^") == len(shell.prompt) + line.rindex(at)
    assert shell.config.acls6[3000].rules == []


def test_ipv6_acl_rule_incomplete_prefix() -> None:
    shell = run("acl ipv6 number 3000")
    line = "rule permit ipv6 source 2001:db8::"
    outcome = shell.execute(line)
    assert outcome.error == "Error: Incomplete command found at '^' position."
    assert outcome.lines[0].index("^") == len(shell.prompt) + len(line)


# --- ipsec policy / template ----------------------------------------------------------------------
def make_refs(*extra: str) -> Shell:
    return run(
        "acl 3000", "quit", "ike peer B", "quit", "ipsec proposal p1", "quit", "ipsec proposal p2", "quit", *extra
    )


def test_ipsec_policy_settings_and_undo() -> None:
    shell = make_refs(
        "ipsec policy map 10 isakmp",
        "security acl 3000",
        "ike-peer B",
        "proposal p2 p1",
        "sa trigger-mode auto",
        "sa duration time-based 7200",
        "sa duration traffic-based 50000",
        "pfs dh-group14",
    )
    policy = shell.config.ipsec_policies[("map", 10)]
    assert (policy.acl, policy.ike_peer, policy.proposals) == (3000, "B", ["p2", "p1"])
    assert policy.trigger_mode is TriggerMode.AUTO
    assert (policy.sa_duration_time, policy.sa_duration_traffic, policy.pfs) == (7200, 50000, "dh-group14")
    for line in (
        "undo security acl",
        "undo ike-peer",
        "undo proposal",
        "undo sa trigger-mode",
        "undo sa duration time-based",
        "undo sa duration traffic-based",
        "undo pfs",
    ):
        assert shell.execute(line).ok, line
    assert policy == IpsecPolicy("map", 10)
    assert "ACL 3999 does not exist" in fails(shell, "security acl 3999")
    assert "IKE peer X does not exist" in fails(shell, "ike-peer X")
    assert "Wrong parameter" in fails(shell, "sa duration time-based 119")


def test_policy_and_template_reference_an_ipv4_and_an_ipv6_acl() -> None:
    shell = make_refs("acl ipv6 number 3000", "quit", "acl ipv6 number 3001", "quit",
                      "ipsec policy map 10 isakmp", "security acl 3000", "security acl ipv6 3001")
    policy = shell.config.ipsec_policies[("map", 10)]
    assert (policy.acl, policy.acl6) == (3000, 3001)
    assert [a.ipv6 for a in shell.config.acls_of(policy)] == [False, True]  # IPv4 first
    assert shell.execute("undo security acl ipv6").ok
    assert (policy.acl, policy.acl6) == (3000, None)
    assert shell.execute("security acl ipv6 3000").ok and shell.execute("undo security acl").ok
    assert (policy.acl, policy.acl6) == (None, 3000)  # an IPv6 ACL alone is enough
    assert "IPv6 ACL 3999 does not exist" in fails(shell, "security acl ipv6 3999")
    assert "Wrong parameter" in fails(shell, "security acl ipv6 2000")
    run("ipsec policy-template dyn 1", "security acl ipv6 3001", config=shell.config)
    assert shell.config.ipsec_templates[("dyn", 1)].acl6 == 3001


def test_proposal_list_is_limited_to_twelve() -> None:
    names = [f"p{n}" for n in range(13)]
    shell = run(*[line for n in names for line in (f"ipsec proposal {n}", "quit")], "ipsec policy m 1 isakmp")
    assert shell.execute("proposal " + " ".join(names[:12])).ok
    prompt = shell.prompt
    outcome = shell.execute("proposal " + " ".join(names))
    assert outcome.error == "Error: Too many parameters found at '^' position."
    assert outcome.lines[0].index("^") == len(prompt) + len("proposal " + " ".join(names[:12]) + " ")


def test_policy_needs_isakmp_to_be_created_and_reenters_without() -> None:
    shell = run()
    assert "does not exist" in fails(shell, "ipsec policy m 10")
    run("ipsec policy m 10 isakmp", "quit", "ipsec policy m 10", config=shell.config)
    assert "Wrong parameter" in fails(shell, "ipsec policy m 10001 isakmp")


def test_template_and_template_policy() -> None:
    shell = make_refs(
        "ipsec policy-template dyn 1",
        "ike-peer B",
        "proposal p1",
        "security acl 3000",
        "pfs dh-group19",
        "sa duration time-based 1800",
    )
    template = shell.config.ipsec_templates[("dyn", 1)]
    assert (template.ike_peer, template.proposals, template.acl, template.pfs) == ("B", ["p1"], 3000, "dh-group19")
    assert "Unrecognized" in fails(shell, "sa trigger-mode auto")  # policies only
    run("ipsec policy map 20 isakmp template dyn", config=shell.config)
    policy = shell.config.ipsec_policies[("map", 20)]
    assert policy.template == "dyn"
    assert "only one template-based" in fails(shell, "ipsec policy map 30 isakmp template dyn")
    assert "template nosuch does not exist" in fails(shell, "ipsec policy map 40 isakmp template nosuch")
    shell.execute("undo ipsec policy map 20")
    assert ("map", 20) not in shell.config.ipsec_policies
    shell.execute("undo ipsec policy-template dyn")
    assert shell.config.ipsec_templates == {}


def test_undo_ipsec_policy_group() -> None:
    shell = run("ipsec policy m 1 isakmp", "ipsec policy m 2 isakmp", "ipsec policy n 1 isakmp", "quit")
    shell.execute("undo ipsec policy m")
    assert list(shell.config.ipsec_policies) == [("n", 1)]


# --- the bound-policy rule ------------------------------------------------------------------------
def bound() -> Shell:
    return make_refs(
        "acl 3001",
        "quit",
        "acl ipv6 number 3000",
        "quit",
        "acl ipv6 number 3002",
        "quit",
        "ike peer T",
        "quit",
        "ipsec policy-template dyn2 1",
        "security acl 3001",
        "security acl ipv6 3002",
        "ike-peer T",
        "ipsec policy map 10 isakmp",
        "security acl 3000",
        "security acl ipv6 3000",
        "ike-peer B",
        "ipsec policy map 20 isakmp template dyn2",
        "interface GigabitEthernet0/0/1",
        "ipsec policy map",
        "quit",
    )


@pytest.mark.parametrize(
    ("view", "line"),
    [
        ("acl 3000", "rule permit ip"),
        ("acl 3001", "rule permit ip"),  # reached through the template policy
        ("acl ipv6 number 3000", "rule permit ipv6"),
        ("acl ipv6 number 3000", "undo rule 5"),
        ("acl ipv6 number 3002", "rule permit icmpv6"),  # through the template policy
        ("ike peer B", "pre-shared-key new-key"),
        ("ike peer B", "remote-address 192.0.2.9"),
        ("ike peer T", "undo dpd type"),
        ("ike peer B", "undo version 2"),
    ],
)
def test_bound_policy_refuses_changes_to_its_acl_and_peer(view: str, line: str) -> None:
    shell = bound()
    before = repr(shell.config)
    run(view, config=shell.config)
    shell2 = run(view, config=shell.config)
    error = fails(shell2, line)
    assert error.startswith("Error: The ")
    assert "applied to interface GigabitEthernet0/0/1" in error
    assert repr(shell.config) == before


def test_bound_policy_refuses_deleting_its_acl_peer_and_group() -> None:
    shell = bound()
    for line in ("undo acl 3000", "undo acl ipv6 number 3000", "undo acl ipv6 number 3002", "undo ike peer B",
                 "undo ipsec policy map"):
        assert "cannot be modified" in fails(shell, line)
    assert shell.execute("undo ipsec policy map 20").ok  # one member of the group may go


def test_ipv4_and_ipv6_acl_numbers_are_bound_separately() -> None:
    shell = bound()  # IPv4 ACL 3001 is bound, IPv6 ACL 3001 does not exist; IPv6 ACL 3000 is bound
    assert run("acl ipv6 number 3001", "rule permit ipv6", "quit", "undo acl ipv6 number 3001", config=shell.config)
    assert "The IPv6 ACL 3000 is referenced by IPSec policy map" in fails(shell, "undo acl ipv6 number 3000")


def test_unbound_acl_and_peer_may_change_again() -> None:
    shell = bound()
    run("interface GigabitEthernet0/0/1", "undo ipsec policy", config=shell.config)
    assert run("acl 3000", "rule permit ip", "ike peer B", "pre-shared-key k", config=shell.config)

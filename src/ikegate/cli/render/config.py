"""Canonical configuration text: ``display current-configuration``, ``display this`` and the saved file.

Canonical means: one fixed section order, objects sorted by their key, sub-commands in one fixed order
with one-space indent, default values left out, and the pre-shared key only in its cipher form. The
section order also puts every referenced object before its users (ACLs and proposals before peers and
policies, templates before the policies naming them, policies before the interfaces binding them), so a
file read back in top-down order never refers forward. ``load -> render -> load -> render`` is a fixed
point, which the round-trip test checks.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ikegate.cli.views import ViewFrame, ViewKind
from ikegate.pki.store import PkiStore
from ikegate.policy import secret
from ikegate.policy.model import (
    SYSLOG_PORT,
    Acl,
    AclAddress,
    AclRule,
    Config,
    DpdSettings,
    Hrp,
    IkeAdmission,
    IkePeer,
    IkeProposal,
    Interface,
    IpsecPolicy,
    IpsecPolicySettings,
    IpsecPolicyTemplate,
    IpsecProposal,
    PortRange,
    TriggerMode,
)
from ikegate.policy.users import LocalUser, PeerPublicKey, ServiceType, SshServerSettings, VtySettings

# ``dpd <keyword> N`` and the DpdSettings attribute it sets (shared with the peer commands).
DPD_FIELDS = (
    ("idle-time", "idle_time"),
    ("retransmit-interval", "retransmit_interval"),
    ("retry-limit", "retry_limit"),
)

# ``ike call admission limit <keyword> N`` and the IkeAdmission attribute it sets (shared with its commands).
ADMISSION_PREFIX = "ike call admission limit"
ADMISSION_FIELDS = (
    ("in-negotiation-sa", "in_negotiation"),
    ("in-negotiation-sa per-address", "per_address"),
    ("authentication-failure", "authentication_failures"),
)

_IKE_DEFAULT = IkeProposal(0)
_PEER_DEFAULT = IkePeer("")
_DPD_DEFAULT = DpdSettings()
_ADMISSION_DEFAULT = IkeAdmission()
_IPSEC_DEFAULT = IpsecProposal("")
_POLICY_DEFAULT = IpsecPolicySettings("", 0)


def system_lines(config: Config) -> list[str]:
    lines = [f" sysname {config.sysname}"]
    if config.ikev1_dependent:
        lines.append(" ikev1 phase1-phase2 sa dependent")
    return lines + admission_lines(config) + loghost_lines(config) + hrp_lines(config)


_HRP_DEFAULT = Hrp()


def hrp_lines(config: Config) -> list[str]:
    """``hrp ...``: the settings that differ from their defaults, the key only in cipher form."""
    hrp, d = config.hrp, _HRP_DEFAULT
    lines: list[str] = []
    if hrp.interface is not None and hrp.remote is not None:
        lines.append(f" hrp interface {hrp.interface} remote {hrp.remote}")
    if hrp.key is not None:
        lines.append(f" hrp authentication-key {secret.encrypt_secret(hrp.key)}")
    if hrp.auto_sync != d.auto_sync:
        lines.append(" undo hrp auto-sync")
    if hrp.mirror_session:
        lines.append(" hrp mirror session enable")
    if hrp.standby_config:
        lines.append(" hrp standby config enable")
    if not hrp.preempt:
        lines.append(" undo hrp preempt")
    elif hrp.preempt_delay != d.preempt_delay:
        lines.append(f" hrp preempt delay {hrp.preempt_delay}")
    if hrp.enabled:
        lines.append(" hrp enable")
    return lines


def admission_lines(config: Config) -> list[str]:
    """``ike call admission limit ...`` settings that differ from their defaults."""
    return [f" {ADMISSION_PREFIX} {keyword} {getattr(config.ike_admission, attr)}" for keyword, attr in ADMISSION_FIELDS
            if getattr(config.ike_admission, attr) != getattr(_ADMISSION_DEFAULT, attr)]


def loghost_lines(config: Config) -> list[str]:
    """``info-center loghost``: IPv4 hosts, then IPv6 ones, each by address; the default port left out."""
    lines: list[str] = []
    for host in sorted(config.loghosts.values(), key=lambda h: (h.address.version, int(h.address))):
        family = "ipv6 " if host.address.version == 6 else ""
        port = f" port {host.port}" if host.port != SYSLOG_PORT else ""
        lines.append(f" info-center loghost {family}{host.address}{port}")
    return lines


def _listed(keyword: str, values: list[str], default: list[str]) -> list[str]:
    return [] if values == default else [f" {keyword} {' '.join(values)}"]


def ike_proposal_lines(p: IkeProposal) -> list[str]:
    d = _IKE_DEFAULT
    lines = [f"ike proposal {p.number}"]
    lines += _listed("encryption-algorithm", p.encryption, d.encryption)
    lines += _listed("dh", p.dh, d.dh)
    lines += _listed("authentication-algorithm", p.authentication, d.authentication)
    if p.authentication_method != d.authentication_method:
        lines.append(f" authentication-method {p.authentication_method.value}")
    lines += _listed("integrity-algorithm", p.integrity, d.integrity)
    lines += _listed("prf", p.prf, d.prf)
    if p.duration != d.duration:
        lines.append(f" sa duration {p.duration}")
    return lines


def ike_peer_lines(p: IkePeer) -> list[str]:
    lines = [f"ike peer {p.name}"]
    lines += [f" undo version {v}" for v in (1, 2) if v not in p.versions]
    if p.exchange_mode != _PEER_DEFAULT.exchange_mode:
        lines.append(f" exchange-mode {p.exchange_mode.value}")
    if p.pre_shared_key is not None:
        lines.append(f" pre-shared-key {secret.encrypt_secret(p.pre_shared_key)}")
    lines += [f" ike-proposal {n}" for n in p.ike_proposals]
    if p.local_id_type != _PEER_DEFAULT.local_id_type:
        lines.append(f" local-id-type {p.local_id_type.value}")
    if p.local_id is not None:
        lines.append(f" local-id {p.local_id}")
    if p.remote_id_type is not None:
        lines.append(f" remote-id-type {p.remote_id_type.value}")
    if p.remote_id is not None:
        lines.append(f" remote-id {p.remote_id}")
    lines += [f" remote-address {a}" for a in p.remote_addresses]
    if p.dpd.type != _DPD_DEFAULT.type:
        lines.append(f" dpd type {p.dpd.type.value}")
    for keyword, attr in DPD_FIELDS:
        if getattr(p.dpd, attr) != getattr(_DPD_DEFAULT, attr):
            lines.append(f" dpd {keyword} {getattr(p.dpd, attr)}")
    if p.ikev1_dependent is not None:
        lines.append(f" {'' if p.ikev1_dependent else 'undo '}ikev1 phase1-phase2 sa dependent")
    if not p.nat_traversal:
        lines.append(" undo nat traversal")
    if p.certificate_local is not None:
        lines.append(f" certificate local-filename {p.certificate_local}")
    if p.send_chain:
        lines.append(" certificate send-chain")
    if p.ikev2_fragmentation is not None:
        lines.append(" ikev2 fragmentation" + (f" mtu {p.ikev2_fragmentation}" if p.ikev2_fragmentation else ""))
    return lines


def pki_lines(store: PkiStore) -> list[str]:
    """The PKI imports, in the order a load needs (key pairs before the certificates that use them):
    file names and the key file's password in cipher form, never key material."""
    lines: list[str] = []
    for key in store.keys.values():
        password = f" password {secret.encrypt_secret(key.password)}" if key.password is not None else ""
        lines.append(f"pki import {key.kind.value}-key-pair {key.name} {key.encoding.value} "
                     f"filename {key.filename}{password}")
    lines += [f"pki import-certificate ca filename {name}" for name in store.cas]
    lines += [f"pki import-certificate local filename {name}" for name in store.locals]
    lines += [f"pki import-crl filename {name}" for name in store.crls]
    return lines


def ipsec_proposal_lines(p: IpsecProposal) -> list[str]:
    d = _IPSEC_DEFAULT
    lines = [f"ipsec proposal {p.name}"]
    if p.transform != d.transform:
        lines.append(f" transform {p.transform}")
    if p.encapsulation_mode != d.encapsulation_mode:
        lines.append(f" encapsulation-mode {p.encapsulation_mode.value}")
    lines += _listed("esp authentication-algorithm", p.esp_authentication, d.esp_authentication)
    lines += _listed("esp encryption-algorithm", p.esp_encryption, d.esp_encryption)
    return lines


def _address(keyword: str, address: AclAddress | None) -> str:
    if address is None:
        return ""
    if address.address.version == 6:
        return f" {keyword} {address.network}"
    wildcard = "0" if int(address.wildcard) == 0 else str(address.wildcard)
    return f" {keyword} {address.address} {wildcard}"


def _ports(keyword: str, ports: PortRange) -> str:
    if ports.any:
        return ""
    if ports.low == ports.high:
        return f" {keyword} eq {ports.low}"
    return f" {keyword} range {ports.low} {ports.high}"


def acl_rule_text(rule: AclRule) -> str:
    """``rule 5 permit tcp source A W source-port eq P destination any ...`` (``any`` left out)."""
    return (
        f"rule {rule.rule_id} {rule.action} {rule.protocol}"
        + _address("source", rule.source)
        + _ports("source-port", rule.source_port)
        + _address("destination", rule.destination)
        + _ports("destination-port", rule.destination_port)
    )


def acl_lines(acl: Acl) -> list[str]:
    head = f"acl ipv6 number {acl.number}" if acl.ipv6 else f"acl number {acl.number}"
    return [head] + [f" {acl_rule_text(r)}" for r in sorted(acl.rules, key=lambda r: r.rule_id)]


def _settings_lines(s: IpsecPolicySettings, trigger: TriggerMode | None = None) -> list[str]:
    """Sub-commands shared by policies and templates; ``trigger`` is the policy's non-default mode."""
    lines: list[str] = []
    if s.acl is not None:
        lines.append(f" security acl {s.acl}")
    if s.acl6 is not None:
        lines.append(f" security acl ipv6 {s.acl6}")
    if s.ike_peer is not None:
        lines.append(f" ike-peer {s.ike_peer}")
    if s.proposals:
        lines.append(f" proposal {' '.join(s.proposals)}")
    if trigger is not None:
        lines.append(f" sa trigger-mode {trigger.value}")
    if s.pfs is not None:
        lines.append(f" pfs {s.pfs}")
    if s.sa_duration_time != _POLICY_DEFAULT.sa_duration_time:
        lines.append(f" sa duration time-based {s.sa_duration_time}")
    if s.sa_duration_traffic != _POLICY_DEFAULT.sa_duration_traffic:
        lines.append(f" sa duration traffic-based {s.sa_duration_traffic}")
    return lines


def template_lines(t: IpsecPolicyTemplate) -> list[str]:
    return [f"ipsec policy-template {t.name} {t.seq}", *_settings_lines(t)]


def policy_lines(p: IpsecPolicy) -> list[str]:
    if p.template is not None:
        return [f"ipsec policy {p.name} {p.seq} isakmp template {p.template}"]
    trigger = None if p.trigger_mode is TriggerMode.TRAFFIC_BASED else p.trigger_mode
    return [f"ipsec policy {p.name} {p.seq} isakmp", *_settings_lines(p, trigger)]


def interface_lines(itf: Interface) -> list[str]:
    lines = [f"interface {itf.name}"]
    lines += [f" ip address {i.ip} {i.netmask}" for i in itf.ipv4]
    if itf.ipv6_enabled:
        lines.append(" ipv6 enable")
    lines += [f" ipv6 address {i.with_prefixlen}" for i in itf.ipv6]
    for vrid, group in sorted(itf.vrrp.items()):
        lines.append(f" vrrp vrid {vrid} virtual-ip {group.virtual_ip} {'active' if group.active else 'standby'}")
    if itf.ipsec_policy is not None:
        lines.append(f" ipsec policy {itf.ipsec_policy}")
    return lines


_SSH_DEFAULT = SshServerSettings()
_VTY_DEFAULT = VtySettings()


def peer_key_lines(key: PeerPublicKey) -> list[str]:
    """``rsa|ecc peer-public-key NAME`` with its one-line OpenSSH key (see cli/commands/access.py)."""
    lines = [f"{key.kind.value} peer-public-key {key.name}"]
    if key.openssh is not None:
        lines.append(f" public-key {key.openssh}")
    lines.append(" peer-public-key end")
    return lines


def local_user_lines(user: LocalUser) -> list[str]:
    lines: list[str] = []
    if user.password is not None:
        lines.append(f" local-user {user.name} password irreversible-cipher {user.password.cipher_text()}")
    if user.level is not None:
        lines.append(f" local-user {user.name} level {user.level}")
    if user.service_types:
        words = " ".join(t.value for t in ServiceType if t in user.service_types)
        lines.append(f" local-user {user.name} service-type {words}")
    return lines


def aaa_lines(config: Config) -> list[str]:
    """The ``aaa`` view; its section is printed even when empty (``display this`` inside it)."""
    lines = ["aaa"]
    for name in sorted(config.local_users):
        lines += local_user_lines(config.local_users[name])
    return lines


def ssh_lines(config: Config) -> list[str]:
    """The SSH server and SSH users: system-view lines, after the keys the users are assigned."""
    server = config.ssh_server
    lines: list[str] = []
    if server.stelnet:
        lines.append("stelnet server enable")
    if server.port != _SSH_DEFAULT.port:
        lines.append(f"ssh server port {server.port}")
    lines += [f"ssh server listen-address {a}" for a in server.listen_addresses]
    if server.authentication_retries != _SSH_DEFAULT.authentication_retries:
        lines.append(f"ssh server authentication-retries {server.authentication_retries}")
    if not server.ip_block:
        lines.append("ssh server ip-block disable")
    for name in sorted(config.ssh_users):
        user = config.ssh_users[name]
        lines.append(f"ssh user {name}")
        if user.authentication_type is not None:
            lines.append(f"ssh user {name} authentication-type {user.authentication_type.value}")
        if user.rsa_key is not None:
            lines.append(f"ssh user {name} assign rsa-key {user.rsa_key}")
        if user.ecc_key is not None:
            lines.append(f"ssh user {name} assign ecc-key {user.ecc_key}")
        if user.service_type is not None:
            lines.append(f"ssh user {name} service-type {user.service_type}")
    return lines


def vty_lines(vty: VtySettings) -> list[str]:
    lines = ["user-interface vty 0 4"]
    if vty.authentication_aaa:
        lines.append(" authentication-mode aaa")
    if vty.privilege_level != _VTY_DEFAULT.privilege_level:
        lines.append(f" user privilege level {vty.privilege_level}")
    if vty.idle_timeout != _VTY_DEFAULT.idle_timeout:
        lines.append(f" idle-timeout {vty.idle_timeout // 60} {vty.idle_timeout % 60}")
    return lines


def user_interface_lines(config: Config) -> list[str]:
    lines: list[str] = []
    if config.ssh_server.max_vty != _SSH_DEFAULT.max_vty:
        lines.append(f"user-interface maximum-vty {config.ssh_server.max_vty}")
    vty = vty_lines(config.vty)
    return lines + vty if len(vty) > 1 else lines


def interface_sort_key(name: str) -> tuple[str, tuple[int, ...]]:
    """``GigabitEthernet0/0/10`` after ``GigabitEthernet0/0/2``: type, then numbers as numbers."""
    found = re.match(r"^(\D+)([\d/]*)$", name)
    if found is None:
        return name, ()
    return found.group(1), tuple(int(n) for n in found.group(2).split("/") if n)


def config_sections(config: Config) -> list[list[str]]:
    """The sections of the configuration, each one block between ``#`` separators."""
    sections = [system_lines(config)]
    sections += [peer_key_lines(config.rsa_peer_keys[n]) for n in sorted(config.rsa_peer_keys)]
    sections += [peer_key_lines(config.ecc_peer_keys[n]) for n in sorted(config.ecc_peer_keys)]
    sections += [lines for lines in (pki_lines(config.pki),) if lines]
    sections += [acl_lines(config.acls[n]) for n in sorted(config.acls)]
    sections += [acl_lines(config.acls6[n]) for n in sorted(config.acls6)]
    sections += [ipsec_proposal_lines(config.ipsec_proposals[n]) for n in sorted(config.ipsec_proposals)]
    sections += [ike_proposal_lines(config.ike_proposals[n]) for n in sorted(config.ike_proposals)]
    sections += [ike_peer_lines(config.ike_peers[n]) for n in sorted(config.ike_peers)]
    sections += [template_lines(config.ipsec_templates[k]) for k in sorted(config.ipsec_templates)]
    sections += [policy_lines(config.ipsec_policies[k]) for k in sorted(config.ipsec_policies)]
    sections += [interface_lines(config.interfaces[n]) for n in sorted(config.interfaces, key=interface_sort_key)]
    # Management access last, as VRP prints it: aaa, then the SSH lines, then the user interfaces.
    if config.local_users:
        sections.append(aaa_lines(config))
    sections += [lines for lines in (ssh_lines(config), user_interface_lines(config)) if lines]
    return sections


def _framed(sections: list[list[str]]) -> list[str]:
    lines: list[str] = []
    for section in sections:
        lines.append("#")
        lines.extend(section)
    lines += ["#", "return"]
    return lines


def render_config(config: Config) -> list[str]:
    """``display current-configuration`` (and the text ``save`` writes)."""
    return _framed(config_sections(config))


_SECTION_OF: dict[ViewKind, Callable[[Config, object], list[str]]] = {}


def _of(kind: ViewKind, cls: type, render: Callable[..., list[str]]) -> None:
    def section(config: Config, target: object) -> list[str]:
        return render(target) if isinstance(target, cls) else []

    _SECTION_OF[kind] = section


_of(ViewKind.IKE_PROPOSAL, IkeProposal, ike_proposal_lines)
_of(ViewKind.IKE_PEER, IkePeer, ike_peer_lines)
_of(ViewKind.IPSEC_PROPOSAL, IpsecProposal, ipsec_proposal_lines)
_of(ViewKind.ACL, Acl, acl_lines)
_of(ViewKind.ACL6, Acl, acl_lines)
_of(ViewKind.IPSEC_POLICY, IpsecPolicy, policy_lines)
_of(ViewKind.IPSEC_TEMPLATE, IpsecPolicyTemplate, template_lines)
_of(ViewKind.INTERFACE, Interface, interface_lines)
_of(ViewKind.RSA_PUBLIC_KEY, PeerPublicKey, peer_key_lines)
_of(ViewKind.ECC_PUBLIC_KEY, PeerPublicKey, peer_key_lines)
_of(ViewKind.USER_INTERFACE, VtySettings, vty_lines)
_SECTION_OF[ViewKind.AAA] = lambda config, _target: aaa_lines(config)
_SECTION_OF[ViewKind.SYSTEM] = lambda config, _target: system_lines(config)
_SECTION_OF[ViewKind.USER] = lambda _config, _target: []


def render_this(config: Config, frame: ViewFrame) -> list[str]:
    """``display this``: the current view's own section, framed like the full configuration."""
    section = _SECTION_OF[frame.kind](config, frame.target)
    return _framed([section] if section else [])

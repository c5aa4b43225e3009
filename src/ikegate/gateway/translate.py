"""From the VRP configuration model to engine parameters.

The engines speak transform IDs, selectors and seconds; the configuration speaks ``aes-256``,
``group14`` and ACL rules. Everything that turns one into the other lives here, so the controller only
decides *when* to negotiate, never *how* a keyword maps to the wire.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

from ikegate.ike.core.auth import Authenticator
from ikegate.ike.core.config import ChildSaConfig, EspProposalSpec, IkeProposalSpec, IkeSaConfig, Mode
from ikegate.ike.crypto import UnsupportedTransform, encr_alg
from ikegate.ike.fragments import FragmentationConfig
from ikegate.ike.v1.options import DpdType as V1DpdType
from ikegate.ike.v1.options import ExchangeMode as V1Mode
from ikegate.ike.v1.options import V1Options
from ikegate.ike.wire.registry import PrfId
from ikegate.ike.wire.v2 import TrafficSelector
from ikegate.pki.auth import AuthSettings, CertificateAuthenticator, LocalCredential
from ikegate.pki.names import encode_dn
from ikegate.policy import algorithms as alg
from ikegate.policy.model import (
    DEFAULT_IKE_PROPOSAL,
    Acl,
    AclRule,
    Config,
    DpdType,
    EncapsulationMode,
    ExchangeMode,
    IdType,
    IkePeer,
    IpsecPolicy,
    IpsecPolicySettings,
    IpsecPolicyTemplate,
    TriggerMode,
    rule_key,
)
from ikegate.policy.selectors import rule_family, rule_selectors

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

class PolicyKind(enum.Enum):
    """The three behaviours of the seed's matrix."""

    TEMPLATE = "template"
    AUTO = "auto"
    TRAFFIC_BASED = "traffic-based"


@dataclass(frozen=True, slots=True)
class Flow:
    """One ACL permit rule as a pair of selector lists (local side = rule source)."""

    rule: int
    local: TrafficSelector
    remote: TrafficSelector


@dataclass(slots=True)
class Connection:
    """A site-to-site policy this gateway initiates: one IPsec policy, its peer and its addresses."""

    policy: IpsecPolicy
    peer: IkePeer
    interface: str
    local: IPAddress
    remote: IPAddress
    flows: list[Flow]

    @property
    def key(self) -> tuple[str, int]:
        return (self.policy.name, self.policy.seq)

    @property
    def kind(self) -> PolicyKind:
        return PolicyKind.AUTO if self.policy.trigger_mode is TriggerMode.AUTO else PolicyKind.TRAFFIC_BASED


def _split_aead(encr: tuple[tuple[int, int | None], ...]) -> tuple[tuple[tuple[int, int | None], ...], ...]:
    """IKEv2 forbids mixing AEAD and non-AEAD ciphers in one proposal (RFC 5282 §8): split them."""

    def aead(e: tuple[int, int | None]) -> bool:
        try:
            return encr_alg(*e).aead
        except UnsupportedTransform:
            return False

    plain = tuple(e for e in encr if not aead(e))
    gcm = tuple(e for e in encr if aead(e))
    return tuple(x for x in (plain, gcm) if x)


#: IKEv1 has no separate PRF: ``authentication-algorithm`` names the hash its HMAC PRF is built on.
V1_PRF_FROM_AUTHENTICATION: dict[str, int] = {"sha1": PrfId.HMAC_SHA1, "sha2-256": PrfId.HMAC_SHA2_256,
                              "sha2-384": PrfId.HMAC_SHA2_384, "sha2-512": PrfId.HMAC_SHA2_512}


def ike_proposal_specs(config: Config, peer: IkePeer, version: int = 2) -> list[IkeProposalSpec]:
    """The peer's IKE proposals as engine specs; for IKEv1 the PRF comes from ``authentication-algorithm``."""
    numbers = peer.ike_proposals or []
    proposals = [config.ike_proposals[n] for n in numbers if n in config.ike_proposals] or [DEFAULT_IKE_PROPOSAL]
    specs: list[IkeProposalSpec] = []
    for prop in proposals:
        encr = tuple(alg.ENCRYPTION[e] for e in prop.encryption if e in alg.ENCRYPTION)
        if version == 1:
            prf: tuple[int, ...] = tuple(V1_PRF_FROM_AUTHENTICATION[a] for a in prop.authentication
                                         if a in V1_PRF_FROM_AUTHENTICATION)
        else:
            prf = tuple(alg.PRF[p] for p in prop.prf if p in alg.PRF)
        integ = tuple(alg.INTEGRITY[i] for i in prop.integrity if i in alg.INTEGRITY)
        dh = tuple(alg.DH[d] for d in prop.dh if d in alg.DH)
        for group in _split_aead(encr):
            is_aead = encr_alg(*group[0]).aead
            specs.append(IkeProposalSpec(group, prf, () if is_aead else integ, dh))
    return specs


def esp_proposal_specs(config: Config, settings: IpsecPolicySettings) -> list[EspProposalSpec]:
    pfs = (alg.PFS[settings.pfs],) if settings.pfs in alg.PFS else ()
    specs: list[EspProposalSpec] = []
    names = settings.proposals or list(config.ipsec_proposals)[:1]
    for name in names:
        prop = config.ipsec_proposals.get(name)
        if prop is None:
            continue
        encr = tuple(alg.ENCRYPTION[e] for e in prop.esp_encryption if e in alg.ENCRYPTION)
        integ = tuple(alg.AUTHENTICATION[a] for a in prop.esp_authentication if a in alg.AUTHENTICATION)
        for group in _split_aead(encr):
            is_aead = encr_alg(*group[0]).aead
            specs.append(EspProposalSpec(group, () if is_aead else integ, pfs))
    return specs


def ike_lifetime(config: Config, peer: IkePeer) -> int:
    numbers = [n for n in peer.ike_proposals if n in config.ike_proposals]
    return config.ike_proposals[numbers[0]].duration if numbers else DEFAULT_IKE_PROPOSAL.duration


def identity(id_type: IdType, value: str | None, address: IPAddress | None) -> tuple[int, bytes] | None:
    """An IKEv2 identity (type, data) from ``local-id-type``/``local-id`` or an address."""
    if id_type is IdType.DN:
        try:
            return (9, encode_dn(value)) if value else None
        except ValueError:
            return None
    if id_type is IdType.IP:
        if value:
            address = ipaddress.ip_address(value)
        if address is None:
            return None
        return (1 if address.version == 4 else 5, address.packed)
    if not value:
        return None
    return (2 if id_type is IdType.FQDN else 3, value.encode())


def local_identity(config: Config, peer: IkePeer, local: IPAddress | None) -> tuple[int, bytes] | None:
    """Our IKE ID: ``local-id-type dn`` without a ``local-id`` is the subject of our certificate."""
    if peer.local_id_type is IdType.DN and not peer.local_id:
        credential = local_credential(config, peer)
        return (9, credential.certificate.subject.public_bytes()) if credential is not None else None
    return identity(peer.local_id_type, peer.local_id, local)


def local_credential(config: Config, peer: IkePeer) -> LocalCredential | None:
    """The peer's ``certificate local-filename`` with its imported key pair and the CA certificates
    above it; None when the certificate or its key is missing."""
    store = config.pki
    entry = store.local_certificate(peer.certificate_local) if peer.certificate_local else None
    key = store.key_for(entry.cert) if entry is not None else None
    if entry is None or key is None:
        return None
    return LocalCredential(entry.cert, key.key, tuple(store.chain_of(entry.cert)))


def auth_settings(config: Config, peer: IkePeer) -> AuthSettings:
    """How a peer authenticates (see ikegate.pki.auth): the method of its first IKE proposal (USG
    proposals of one peer share it), its PSK or certificate, the CAs, CRLs and ``remote-id`` its
    certificate is checked against. The engines' authenticator consumes this value."""
    numbers = [n for n in peer.ike_proposals if n in config.ike_proposals]
    method = (config.ike_proposals[numbers[0]] if numbers else DEFAULT_IKE_PROPOSAL).authentication_method
    remote = (peer.remote_id_type, peer.remote_id) if peer.remote_id_type and peer.remote_id else None
    return AuthSettings(
        method=method,
        psk=peer.pre_shared_key.encode() if peer.pre_shared_key is not None else None,
        local=local_credential(config, peer) if method.is_signature else None,
        send_chain=peer.send_chain,
        cas=tuple(config.pki.ca_certificates),
        crls=tuple(config.pki.crl_list),
        remote_id=remote if method.is_signature else None,
    )


def ike_config(config: Config, peer: IkePeer, local: IPAddress | None, *, ike_port: int, natt_port: int,
               retransmit_tries: int = 5, version: int = 2) -> IkeSaConfig:
    local_id = local_identity(config, peer, local) or (1, bytes(4))
    # A ``dn`` remote-id is matched against the peer's certificate (AuthSettings), not byte for byte:
    # the same DN has several DER encodings.
    remote_id = identity(peer.remote_id_type, peer.remote_id, None) if peer.remote_id_type not in (
        None, IdType.DN) else None
    dpd = peer.dpd
    return IkeSaConfig(
        proposals=ike_proposal_specs(config, peer, version),
        psk=(peer.pre_shared_key or "").encode(),
        local_id=local_id,
        remote_id=remote_id,
        lifetime=float(ike_lifetime(config, peer)),
        retransmit_tries=retransmit_tries,
        # Every ``dpd`` setting, as IKEv1 takes them (v1_options): the idle time, on-demand (probe only
        # while we send ESP) or periodic, and the round of retry-limit probes retransmit-interval apart.
        dpd_interval=float(dpd.idle_time) if dpd.enabled else None,
        dpd_on_demand=dpd.type is DpdType.ON_DEMAND,
        dpd_retransmit=float(dpd.retransmit_interval),
        dpd_retries=dpd.retry_limit,
        nat_traversal=peer.nat_traversal,
        ike_port=ike_port,
        natt_port=natt_port,
        name=peer.name,
        handle=peer.name,
        auth=authenticator(config, peer),
        fragmentation=fragmentation(config, peer),
    )


def fragmentation(config: Config, peer: IkePeer) -> FragmentationConfig | None:
    """``ikev2 fragmentation [ mtu N ]`` (USG, IKE peer view): RFC 7383 with N-byte datagrams, or the
    family's safe minimum (576 IPv4 / 1280 IPv6, the USG's defaults) without ``mtu``. Off on the USG when
    not configured; here on by default for certificate peers, whose IKE_AUTH rarely fits a datagram
    (see docs/fragmentation.md)."""
    if peer.ikev2_fragmentation is not None:
        return FragmentationConfig(enabled=True, fragment_size=peer.ikev2_fragmentation)
    if auth_settings(config, peer).uses_certificates:
        return FragmentationConfig(enabled=True, fragment_size=0)
    return None


def authenticator(config: Config, peer: IkePeer) -> Authenticator | None:
    """The certificate authenticator of a signature peer; None for a PSK peer (the engine uses its key)."""
    settings = auth_settings(config, peer)
    return CertificateAuthenticator(settings) if settings.uses_certificates else None


def v1_options(config: Config, peer: IkePeer) -> V1Options:
    """The IKEv1-only settings of a peer: exchange mode, phase1-phase2 dependency (the peer's setting over
    the global one) and DPD."""
    dpd = peer.dpd
    dpd_type = V1DpdType.NONE if not dpd.enabled else (
        V1DpdType.PERIODIC if dpd.type is DpdType.PERIODIC else V1DpdType.ON_DEMAND)
    mode = V1Mode.AGGRESSIVE if peer.exchange_mode is ExchangeMode.AGGRESSIVE else V1Mode.MAIN
    return V1Options(mode=mode, dependent=config.ike_dependent_for(peer), dpd_type=dpd_type,
                     dpd_idle=float(dpd.idle_time), dpd_retransmit=float(dpd.retransmit_interval),
                     dpd_retries=dpd.retry_limit)


def acl_flows(acl: Acl | None) -> list[Flow]:
    """The permit rules of an ACL as flows, in rule order (deny rules carve nothing out here)."""
    if acl is None:
        return []
    flows: list[Flow] = []
    for rule in sorted(acl.rules, key=lambda r: r.rule_id):
        if rule.action != "permit":
            continue
        flows.append(rule_flow(rule, acl))
    return flows


def policy_flows(config: Config, settings: IpsecPolicySettings) -> list[Flow]:
    """The flows of a policy or template: its IPv4 ACL's permit rules, then its IPv6 ACL's."""
    return [flow for acl in config.acls_of(settings) for flow in acl_flows(acl)]


def rule_flow(rule: AclRule, acl: Acl | None = None) -> Flow:
    """One rule as the flow a policy proposes; an address-less IPv4 rule proposes IPv4 (see
    :func:`~ikegate.policy.selectors.rule_family`). Rules of an IPv6 ACL are keyed apart from IPv4 ones
    (:func:`~ikegate.policy.model.rule_key`) since a policy may carry both."""
    local, remote = rule_selectors(rule, rule_family(acl, rule) or 4)
    return Flow(rule_key(acl, rule) if acl is not None else rule.rule_id, local, remote)


def child_config(config: Config, settings: IpsecPolicySettings, flow: Flow | None,
                 proposed: tuple[list[TrafficSelector], list[TrafficSelector]] | None = None) -> ChildSaConfig:
    """The Child SA parameters of one policy flow (or, for a template without ACL, of what was proposed)."""
    if flow is not None:
        local_ts, remote_ts = [flow.local], [flow.remote]
    else:
        assert proposed is not None
        local_ts, remote_ts = proposed
    mode = Mode.TUNNEL
    for name in settings.proposals:
        prop = config.ipsec_proposals.get(name)
        if prop is not None and prop.encapsulation_mode is EncapsulationMode.TRANSPORT:
            mode = Mode.TRANSPORT
        break
    return ChildSaConfig(
        name=settings.name,
        seq=settings.seq,
        proposals=esp_proposal_specs(config, settings),
        local_ts=local_ts,
        remote_ts=remote_ts,
        mode=mode,
        lifetime=float(settings.sa_duration_time),
        lifetime_kb=settings.sa_duration_traffic,
        template=settings.name if isinstance(settings, IpsecPolicyTemplate) else None,
        handle=(settings, flow.rule if flow else None),
    )


def connections(config: Config) -> list[Connection]:
    """Every site-to-site (non-template) policy bound to an interface, with the addresses to use."""
    out: list[Connection] = []
    for itf in config.interfaces.values():
        if itf.ipsec_policy is None:
            continue
        for policy in config.policy_group(itf.ipsec_policy):
            if policy.is_template or policy.ike_peer is None:
                continue
            peer = config.ike_peers.get(policy.ike_peer)
            if peer is None or not peer.remote_addresses:
                continue
            remote = peer.remote_addresses[0]
            locals_ = config.ipv4_of(itf) if remote.version == 4 else [i.ip for i in itf.ipv6]
            if not locals_:
                continue
            out.append(Connection(policy, peer, itf.name, locals_[0], remote, policy_flows(config, policy)))
    return out


def templates(config: Config) -> list[tuple[IpsecPolicy, IpsecPolicyTemplate, str]]:
    """Bound template policies: (the policy naming the template, a template entry, interface)."""
    out: list[tuple[IpsecPolicy, IpsecPolicyTemplate, str]] = []
    for itf in config.interfaces.values():
        if itf.ipsec_policy is None:
            continue
        for policy in config.policy_group(itf.ipsec_policy):
            if policy.template is None:
                continue
            for tpl in config.template_group(policy.template):
                out.append((policy, tpl, itf.name))
    return out

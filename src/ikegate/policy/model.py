"""The configuration model: what a USG configuration says, as plain data.

The VRP configuration text (``display current-configuration``) is parsed into these records by the CLI
engine, and the gateway reads them to decide whom to talk to and with what. Nothing here knows about
sockets or the shell; values are kept in the vocabulary of the VRP commands (``aes-256``, ``group14``)
and translated to IANA transform IDs in :mod:`ikegate.policy.algorithms`.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field

from ikegate.pki.store import PkiStore
from ikegate.policy.users import KeyKind, LocalUser, PeerPublicKey, SshServerSettings, SshUser, VtySettings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class TriggerMode(enum.Enum):
    """``sa trigger-mode``: who starts an ISAKMP policy's tunnel (USG default: traffic-based)."""

    AUTO = "auto"
    TRAFFIC_BASED = "traffic-based"


class ExchangeMode(enum.Enum):
    """``exchange-mode`` of an IKEv1 peer."""

    MAIN = "main"
    AGGRESSIVE = "aggressive"
    AUTO = "auto"


class DpdType(enum.Enum):
    PERIODIC = "periodic"
    ON_DEMAND = "on-demand"


class IdType(enum.Enum):
    """``local-id-type`` / ``remote-id-type`` of an IKE peer."""

    IP = "ip"
    FQDN = "fqdn"
    USER_FQDN = "user-fqdn"
    DN = "dn"  # the certificate's subject DN (ID_DER_ASN1_DN): certificate authentication only


class AuthenticationMethod(enum.Enum):
    """``authentication-method`` of an IKE proposal. ``rsa-signature`` and ``ecdsa-signature`` are
    certificate authentication with the key type of the local certificate (IKEv2 signs with RFC 7427
    digital signatures when the peer announces SIGNATURE_HASH_ALGORITHMS, else with AUTH method 1 or
    9/10/11; IKEv1 with the RSA/ECDSA signature method)."""

    PRE_SHARE = "pre-share"
    RSA_SIGNATURE = "rsa-signature"
    ECDSA_SIGNATURE = "ecdsa-signature"

    @property
    def is_signature(self) -> bool:
        return self is not AuthenticationMethod.PRE_SHARE


class EncapsulationMode(enum.Enum):
    TUNNEL = "tunnel"
    TRANSPORT = "transport"


@dataclass
class IkeProposal:
    """``ike proposal N``. Lists keep the order the operator gave (first = preferred)."""

    number: int
    encryption: list[str] = field(default_factory=lambda: ["aes-256"])
    dh: list[str] = field(default_factory=lambda: ["group14"])
    authentication: list[str] = field(default_factory=lambda: ["sha2-256"])
    authentication_method: AuthenticationMethod = AuthenticationMethod.PRE_SHARE
    integrity: list[str] = field(default_factory=lambda: ["hmac-sha2-256"])
    prf: list[str] = field(default_factory=lambda: ["hmac-sha2-256"])
    duration: int = 86400


#: USG's built-in lowest-priority IKE proposal (usg-cli a.7), used when a peer names none. A fact of the
#: configuration model: the negotiation (gateway/translate.py) proposes it, ``display ike proposal`` lists it.
DEFAULT_IKE_PROPOSAL = IkeProposal(
    number=0,
    encryption=["aes-256", "aes-192", "aes-128"],
    dh=["group14"],
    integrity=["hmac-sha2-256"],
    prf=["hmac-sha2-256"],
)


@dataclass
class IkeAdmission:
    """``ike call admission limit ...`` (system view): how much unauthenticated negotiation state the
    gateway keeps. ``in_negotiation`` is USG's limit of half-open IKE SAs (USG: up to 800 per CPU; ikegate
    runs one placement for many, so its default is higher); ``per_address`` bounds what a single source
    address may hold of it before it proves the address (an IKEv2 COOKIE per SA, or an IKEv1 SA that
    authenticated; then up to half of ``in_negotiation``; see :mod:`ikegate.gateway.admission`); a source with more than
    ``authentication_failures`` failed authentications within a minute is refused for a minute."""

    in_negotiation: int = 5000
    per_address: int = 32
    authentication_failures: int = 10


@dataclass
class DpdSettings:
    """``dpd`` settings of an IKE peer (USG defaults: on-demand; idle 30 s, retransmit 15 s, 3 tries).

    On-demand DPD only probes a peer silent (no IKE, no ESP) for ``idle_time`` while we send it ESP;
    ``dpd type periodic`` probes any peer silent for ``idle_time``, traffic or not. A round is
    ``retry_limit`` probes ``retransmit_interval`` apart; unanswered, the peer is dead
    ``idle_time + retry_limit * retransmit_interval`` after its last sign of life (IKEv1 and IKEv2 alike).
    """

    type: DpdType = DpdType.ON_DEMAND
    enabled: bool = True
    idle_time: int = 30
    retransmit_interval: int = 15
    retry_limit: int = 3


@dataclass
class IkePeer:
    """``ike peer NAME``. ``pre_shared_key`` holds the clear key; it is only ever shown ciphered.

    ``certificate_local`` names the imported local certificate (``certificate local-filename``) a
    certificate peer authenticates with; ``send_chain`` (``certificate send-chain``) sends the CA
    certificates above it too, for peers that hold only the root.
    """

    name: str
    pre_shared_key: str | None = None
    ike_proposals: list[int] = field(default_factory=list)
    remote_addresses: list[IPAddress] = field(default_factory=list)
    versions: set[int] = field(default_factory=lambda: {1, 2})
    exchange_mode: ExchangeMode = ExchangeMode.MAIN
    local_id_type: IdType = IdType.IP
    local_id: str | None = None
    remote_id_type: IdType | None = None
    remote_id: str | None = None
    dpd: DpdSettings = field(default_factory=DpdSettings)
    ikev1_dependent: bool | None = None  # None: follow the global setting
    nat_traversal: bool = True
    certificate_local: str | None = None
    send_chain: bool = False
    #: ``ikev2 fragmentation [ mtu N ]``: None when not configured, else N (0: no ``mtu``, the default)
    ikev2_fragmentation: int | None = None

    @property
    def preferred_version(self) -> int:
        """The version this peer initiates with: IKEv2 unless ``undo version 2``."""
        return 2 if 2 in self.versions else 1


@dataclass
class IpsecProposal:
    """``ipsec proposal NAME`` (ESP only)."""

    name: str
    transform: str = "esp"
    esp_encryption: list[str] = field(default_factory=lambda: ["aes-256"])
    esp_authentication: list[str] = field(default_factory=lambda: ["sha2-256"])
    encapsulation_mode: EncapsulationMode = EncapsulationMode.TUNNEL


@dataclass
class PortRange:
    low: int = 0
    high: int = 65535

    @property
    def any(self) -> bool:
        return self.low == 0 and self.high == 65535


@dataclass
class AclAddress:
    """An address with a VRP wildcard (inverse) mask; ``None`` in a rule means ``any``."""

    address: IPAddress
    wildcard: IPAddress

    @property
    def network(self) -> IPNetwork:
        """The prefix this address/wildcard pair denotes (wildcards that are not contiguous are refused
        by the CLI, so this is exact)."""
        bits = self.address.max_prefixlen
        host_bits = int(self.wildcard).bit_length()
        return ipaddress.ip_network(f"{self.address}/{bits - host_bits}", strict=False)


#: A rule of an IPv6 ACL is keyed ``rule id + V6_RULE_BASE`` wherever the flows of a policy are listed
#: together: IPv4 and IPv6 ACLs number their rules independently, and a policy may reference one of each.
V6_RULE_BASE = 1 << 32


def rule_key(acl: Acl, rule: AclRule) -> int:
    """The key that names a rule's flow among all the flows of a policy (see :data:`V6_RULE_BASE`)."""
    return rule.rule_id + (V6_RULE_BASE if acl.ipv6 else 0)


ACL_PROTOCOLS: dict[str, int] = {"ip": 0, "icmp": 1, "tcp": 6, "udp": 17, "ipv6": 0, "icmpv6": 58}


@dataclass
class AclRule:
    rule_id: int
    action: str = "permit"  # permit | deny
    protocol: str = "ip"
    source: AclAddress | None = None
    destination: AclAddress | None = None
    source_port: PortRange = field(default_factory=PortRange)
    destination_port: PortRange = field(default_factory=PortRange)

    @property
    def ip_protocol(self) -> int:
        return ACL_PROTOCOLS.get(self.protocol, 0)


@dataclass
class Acl:
    """``acl number 3000..3999`` (advanced ACL). Rules are kept sorted by rule id."""

    number: int
    rules: list[AclRule] = field(default_factory=list)
    ipv6: bool = False  # ``acl ipv6 number N``: a separate number space from the IPv4 ACLs


@dataclass
class IpsecPolicySettings:
    """What an ISAKMP policy and a policy template have in common."""

    name: str
    seq: int
    acl: int | None = None
    acl6: int | None = None  # ``security acl ipv6 N``
    ike_peer: str | None = None
    proposals: list[str] = field(default_factory=list)
    pfs: str | None = None  # a DH group name (``dh-group14``) or None
    sa_duration_time: int = 3600
    sa_duration_traffic: int = 10485760  # kilobytes


@dataclass
class IpsecPolicy(IpsecPolicySettings):
    """``ipsec policy NAME SEQ isakmp [template T]``; with ``template`` it is site-to-multisite."""

    template: str | None = None
    trigger_mode: TriggerMode = TriggerMode.TRAFFIC_BASED

    @property
    def is_template(self) -> bool:
        return self.template is not None


@dataclass
class IpsecPolicyTemplate(IpsecPolicySettings):
    """``ipsec policy-template NAME SEQ``: the responder-only side of site-to-multisite."""


@dataclass(frozen=True)
class VrrpGroup:
    """``vrrp vrid N virtual-ip ADDRESS active|standby`` on an interface: the address that moves between
    the two nodes of a hot-standby pair (keepalived runs the VRRP); ``active`` starts with the higher
    priority. With HRP enabled the tunnel endpoint of the interface's IPsec policy is this address."""

    vrid: int
    virtual_ip: ipaddress.IPv4Address
    active: bool


@dataclass
class Interface:
    name: str
    ipv4: list[ipaddress.IPv4Interface] = field(default_factory=list)
    ipv6: list[ipaddress.IPv6Interface] = field(default_factory=list)
    ipsec_policy: str | None = None
    ipv6_enabled: bool = False  # ``ipv6 enable``
    vrrp: dict[int, VrrpGroup] = field(default_factory=dict)  # by VRID


#: The UDP port of the HRP heartbeat and backup channel (the USG's; ikegate carries its SA sync there).
HRP_PORT = 18514


@dataclass
class Hrp:
    """Hot standby (``hrp ...`` in the system view, see docs/ha.md): the heartbeat link, what is
    synchronised, and the key that protects the sync channel (``hrp authentication-key``: ikegate's,
    since the sync never goes in clear; the USG derives its own)."""

    enabled: bool = False  # ``hrp enable``
    interface: str | None = None  # ``hrp interface IFNAME remote ADDRESS``
    remote: IPAddress | None = None
    key: str | None = None
    auto_sync: bool = True  # ``hrp auto-sync`` (config and state), on by default as on the USG
    mirror_session: bool = False  # ``hrp mirror session enable``
    preempt: bool = True  # ``hrp preempt [delay N]`` (USG default: on, 60 s)
    preempt_delay: int = 60
    standby_config: bool = False  # ``hrp standby config enable``


SYSLOG_PORT = 514
MAX_LOGHOSTS = 8


@dataclass(frozen=True)
class LogHost:
    """``info-center loghost [ipv6] ADDRESS [port P]``: a syslog receiver (RFC 5424 over UDP).

    One per address, as on VRP: configuring the same address again replaces its port.
    """

    address: IPAddress
    port: int = SYSLOG_PORT


@dataclass
class Config:
    """A whole device configuration."""

    sysname: str = "USG6000"
    interfaces: dict[str, Interface] = field(default_factory=dict)
    ike_proposals: dict[int, IkeProposal] = field(default_factory=dict)
    ike_peers: dict[str, IkePeer] = field(default_factory=dict)
    ipsec_proposals: dict[str, IpsecProposal] = field(default_factory=dict)
    acls: dict[int, Acl] = field(default_factory=dict)
    acls6: dict[int, Acl] = field(default_factory=dict)
    ipsec_policies: dict[tuple[str, int], IpsecPolicy] = field(default_factory=dict)
    ipsec_templates: dict[tuple[str, int], IpsecPolicyTemplate] = field(default_factory=dict)
    ikev1_dependent: bool = False
    ike_admission: IkeAdmission = field(default_factory=IkeAdmission)
    loghosts: dict[IPAddress, LogHost] = field(default_factory=dict)  # ``info-center loghost``
    # Management access (see ikegate.policy.users): the SSH server, users, their keys, the VTY lines.
    ssh_server: SshServerSettings = field(default_factory=SshServerSettings)
    local_users: dict[str, LocalUser] = field(default_factory=dict)
    ssh_users: dict[str, SshUser] = field(default_factory=dict)
    rsa_peer_keys: dict[str, PeerPublicKey] = field(default_factory=dict)
    ecc_peer_keys: dict[str, PeerPublicKey] = field(default_factory=dict)
    vty: VtySettings = field(default_factory=VtySettings)
    #: ``pki import-certificate`` / ``pki import rsa-key-pair|ecc-key-pair`` / ``pki import-crl``: the
    #: files (rendered) and what they hold (never rendered), see ikegate.pki.store.
    pki: PkiStore = field(default_factory=PkiStore)
    hrp: Hrp = field(default_factory=Hrp)
    #: Bumped by whatever may have edited this configuration in place (:meth:`touch`: the shell after a
    #: configuration command, the hot-standby merge), so that a device can tell "unchanged since I applied
    #: it" by one comparison instead of comparing the whole configuration on every command. Not part of the
    #: configuration itself (never compared, shown or rendered).
    generation: int = field(default=0, compare=False, repr=False)

    def touch(self) -> None:
        """Say that this configuration may have changed (see :attr:`generation`)."""
        self.generation += 1

    def peer_keys(self, kind: KeyKind) -> dict[str, PeerPublicKey]:
        """``rsa peer-public-key`` and ``ecc peer-public-key`` names are separate name spaces."""
        return self.rsa_peer_keys if kind is KeyKind.RSA else self.ecc_peer_keys

    def interface_addresses(self) -> list[IPAddress]:
        """Every address of every interface (where the SSH server listens unless told otherwise)."""
        out: list[IPAddress] = []
        for itf in self.interfaces.values():
            out.extend(i.ip for i in itf.ipv4)
            out.extend(i.ip for i in itf.ipv6)
        return out

    def acls_of(self, settings: IpsecPolicySettings) -> list[Acl]:
        """The ACLs a policy or template references: its IPv4 ACL, then its IPv6 ACL (each optional)."""
        out: list[Acl] = []
        if settings.acl is not None and settings.acl in self.acls:
            out.append(self.acls[settings.acl])
        if settings.acl6 is not None and settings.acl6 in self.acls6:
            out.append(self.acls6[settings.acl6])
        return out

    def ike_dependent_for(self, peer: IkePeer) -> bool:
        """The effective ``ikev1 phase1-phase2 sa dependent`` for a peer: its own, else the global one."""
        return self.ikev1_dependent if peer.ikev1_dependent is None else peer.ikev1_dependent

    def local_addresses(self) -> list[IPAddress]:
        """Addresses of interfaces that carry an IPsec policy: where the gateway listens for IKE (with hot
        standby, the interface's VRRP virtual addresses instead of its own IPv4 ones)."""
        out: list[IPAddress] = []
        for itf in self.interfaces.values():
            if itf.ipsec_policy is None:
                continue
            out.extend(self.ipv4_of(itf))
            out.extend(i.ip for i in itf.ipv6)
        return out

    def ipv4_of(self, itf: Interface) -> list[IPAddress]:
        """The IPv4 addresses IKE uses on ``itf``: its VRRP virtual addresses when hot standby is on and
        it has any (the tunnel endpoint moves with them), else its own."""
        if self.hrp.enabled and itf.vrrp:
            return [g.virtual_ip for _, g in sorted(itf.vrrp.items())]
        return [i.ip for i in itf.ipv4]

    def if_index(self, name: str) -> int:
        """The interface's IfIndex in logs (``IPSEC_TUNNEL_TEARED_DOWN``): VRP numbers interfaces as they
        are created, so ikegate counts them in configuration order from 1; 0 for an unknown name."""
        for index, itf in enumerate(self.interfaces, 1):
            if itf == name:
                return index
        return 0

    def policy_group(self, name: str) -> list[IpsecPolicy]:
        """The policies of one group, in ascending sequence order (the order packets are matched)."""
        return sorted((p for (n, _), p in self.ipsec_policies.items() if n == name), key=lambda p: p.seq)

    def template_group(self, name: str) -> list[IpsecPolicyTemplate]:
        return sorted((t for (n, _), t in self.ipsec_templates.items() if n == name), key=lambda t: t.seq)

"""IKEv1 SA payloads: building our offers and choosing from the peer's (RFC 2409 §5, App. A; RFC 2407 §4.5).

In IKEv1 a transform is a complete suite (cipher, hash, group, lifetime in one set of attributes), so the
IKEv2-shaped configuration (``IkeProposalSpec`` / ``EspProposalSpec``: independent lists per transform
type) is expanded here into the cross product, first preferred, and a peer's transform is judged by
whether one of our specs covers all of its attributes. Both sides use the same judging functions, so the
initiator checks the responder's single answer with the very rules the responder applied.

Lifetimes follow the common practice (strongSwan, Cisco, USG): the responder accepts the initiator's
lifetime when it is not longer than its own and otherwise keeps its own, telling the initiator with a
RESPONDER-LIFETIME notify in quick mode (RFC 2407 §4.6.3.1).

Also here: the conversion between IKEv1 phase-2 IDs (IDci/IDcr, RFC 2407 §4.6.2) and the traffic
selectors the rest of ikegate uses.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ikegate.ike.core.config import EspProposalSpec, IkeProposalSpec
from ikegate.ike.core.negotiated import Chosen, transform_text
from ikegate.ike.crypto import EncrAlg, IntegAlg, UnsupportedTransform, encr_alg, integ_alg
from ikegate.ike.v1.registry import (
    ESP_AUTH_FROM_V2,
    ESP_AUTH_TO_V2,
    KEY_IKE,
    P1_ENCR_FROM_V2,
    P1_ENCR_TO_V2,
    P1_HASH_FROM_INTEG,
    P1_HASH_FROM_PRF,
    P1_HASH_TO_INTEG,
    P1_HASH_TO_PRF,
    AuthMethod,
    EncapMode,
    IdType,
    IpsecAttr,
    IpsecAuth,
    LifeType,
    Phase1Attr,
    Phase1Encr,
    Phase1Hash,
    ProtocolId,
)
from ikegate.ike.v1.wire import SA, Attribute, Identification, Proposal, Transform, attr
from ikegate.ike.wire.registry import EncrId, TransformType, TsType
from ikegate.ike.wire.v2 import TrafficSelector

__all__ = [
    "PSK_ONLY",
    "EspChoice",
    "Phase1Choice",
    "answer_sa",
    "choose_esp",
    "choose_phase1",
    "esp_sa",
    "host_ts",
    "id_to_ts",
    "is_single",
    "lifetime_attrs",
    "offered_group",
    "offered_text",
    "phase1_sa",
    "ts_to_id",
]

_KNOWN_P1_ATTRS = frozenset({Phase1Attr.ENCRYPTION, Phase1Attr.HASH, Phase1Attr.AUTH_METHOD, Phase1Attr.GROUP,
                             Phase1Attr.LIFE_TYPE, Phase1Attr.LIFE_DURATION, Phase1Attr.KEY_LENGTH})
_KNOWN_ESP_ATTRS = frozenset({IpsecAttr.SA_LIFE_TYPE, IpsecAttr.SA_LIFE_DURATION, IpsecAttr.GROUP_DESCRIPTION,
                              IpsecAttr.ENCAPSULATION_MODE, IpsecAttr.AUTH_ALGORITHM, IpsecAttr.KEY_LENGTH})
_TUNNEL_MODES = frozenset({EncapMode.TUNNEL, EncapMode.UDP_TUNNEL, EncapMode.UDP_TUNNEL_DRAFT})
_TRANSPORT_MODES = frozenset({EncapMode.TRANSPORT, EncapMode.UDP_TRANSPORT, EncapMode.UDP_TRANSPORT_DRAFT})
_UDP_MODES = frozenset({EncapMode.UDP_TUNNEL, EncapMode.UDP_TRANSPORT, EncapMode.UDP_TUNNEL_DRAFT,
                        EncapMode.UDP_TRANSPORT_DRAFT})


def _lifetimes(t: Transform, type_attr: int, duration_attr: int) -> tuple[int | None, int | None, bool]:
    """(seconds, kilobytes, well-formed) from the Life Type / Life Duration pairs of a transform."""
    seconds: int | None = None
    kilobytes: int | None = None
    pending: int | None = None
    for a in t.attributes:
        if a.type == type_attr:
            pending = a.number
        elif a.type == duration_attr:
            if pending == LifeType.SECONDS:
                seconds = a.number
            elif pending == LifeType.KILOBYTES:
                kilobytes = a.number
            else:
                return None, None, False
            pending = None
    return seconds, kilobytes, pending is None


# ------------------------------------------------------------------------------------------- phase 1


@dataclass(frozen=True, slots=True)
class Phase1Choice:
    """One acceptable phase-1 transform, decoded; ``transform`` is what the responder echoes."""

    proposal: int
    transform: Transform
    encryption: int
    key_bits: int | None
    hash: int
    group: int
    life_seconds: int | None
    auth_method: int = AuthMethod.PRE_SHARED

    def chosen(self) -> Chosen:
        """The same choice in IKEv2 transform IDs, which is what ``display`` and the gateway read."""
        return Chosen(self.proposal, b"", P1_ENCR_TO_V2[self.encryption], self.key_bits,
                      P1_HASH_TO_PRF[self.hash], P1_HASH_TO_INTEG[self.hash], self.group)


def _spec_hashes(spec: IkeProposalSpec) -> list[int]:
    hashes = [P1_HASH_FROM_PRF[p] for p in spec.prf if p in P1_HASH_FROM_PRF]
    if not hashes:
        hashes = [P1_HASH_FROM_INTEG[i] for i in spec.integ if i in P1_HASH_FROM_INTEG]
    return hashes


def phase1_sa(specs: list[IkeProposalSpec], lifetime: float, group: int | None = None,
              auth_method: int = AuthMethod.PRE_SHARED) -> SA:
    """Our phase-1 offer: one ISAKMP proposal, one transform per (cipher, hash, group), all with
    ``auth_method`` (PSK, or the signature method of our key: one credential, one method).

    ``group`` restricts the offer to one DH group, as aggressive mode must (its KE goes in message 1).
    """
    transforms: list[Transform] = []
    for spec in specs:
        for encr_id, bits in spec.encr:
            v1_encr = P1_ENCR_FROM_V2.get(encr_id)
            if v1_encr is None:
                continue  # AEAD and other IKEv2-only ciphers have no IKEv1 phase-1 form
            for h in _spec_hashes(spec):
                for g in spec.dh:
                    if group is not None and g != group:
                        continue
                    attrs = [Attribute(Phase1Attr.ENCRYPTION, v1_encr)]
                    if v1_encr == Phase1Encr.AES_CBC and bits is not None:
                        attrs.append(Attribute(Phase1Attr.KEY_LENGTH, bits))
                    attrs += [Attribute(Phase1Attr.HASH, h), Attribute(Phase1Attr.AUTH_METHOD, auth_method),
                              Attribute(Phase1Attr.GROUP, g), Attribute(Phase1Attr.LIFE_TYPE, LifeType.SECONDS),
                              attr(Phase1Attr.LIFE_DURATION, int(lifetime))]
                    transforms.append(Transform(len(transforms) + 1, KEY_IKE, attrs))
    if not transforms:
        raise ValueError("no IKEv1-capable IKE proposal (phase 1 needs AES-CBC or 3DES with an HMAC hash)")
    return SA([Proposal(1, ProtocolId.ISAKMP, b"", transforms)])


#: What the responder accepts when it is not told otherwise: pre-shared keys.
PSK_ONLY = frozenset({int(AuthMethod.PRE_SHARED)})


def _judge_phase1(number: int, t: Transform, specs: list[IkeProposalSpec],
                  methods: frozenset[int] = PSK_ONLY) -> Phase1Choice | None:
    if t.transform_id != KEY_IKE or any(a.type not in _KNOWN_P1_ATTRS for a in t.attributes):
        return None
    values = {a.type: a.number for a in t.attributes if a.type not in (Phase1Attr.LIFE_TYPE, Phase1Attr.LIFE_DURATION)}
    seconds, _kb, ok = _lifetimes(t, Phase1Attr.LIFE_TYPE, Phase1Attr.LIFE_DURATION)
    encryption = values.get(Phase1Attr.ENCRYPTION)
    hash_id = values.get(Phase1Attr.HASH)
    group = values.get(Phase1Attr.GROUP)
    if not ok or encryption not in P1_ENCR_TO_V2 or hash_id not in P1_HASH_TO_PRF or group is None:
        return None
    method = values.get(Phase1Attr.AUTH_METHOD)
    if method not in methods:
        return None
    bits = values.get(Phase1Attr.KEY_LENGTH)
    if encryption == Phase1Encr.AES_CBC:
        bits = bits or 128
    elif bits is not None:
        return None
    v2_encr = P1_ENCR_TO_V2[encryption]
    for spec in specs:
        offered_bits = None if v2_encr == EncrId.TRIPLE_DES else bits
        tdes_192 = v2_encr == EncrId.TRIPLE_DES and (v2_encr, 192) in spec.encr
        if (v2_encr, offered_bits) not in spec.encr and not tdes_192:
            continue
        if hash_id not in _spec_hashes(spec) or group not in spec.dh:
            continue
        return Phase1Choice(number, t, encryption, offered_bits, hash_id, group, seconds, method)
    return None


def choose_phase1(offered: SA, specs: list[IkeProposalSpec],
                  methods: frozenset[int] = PSK_ONLY) -> Phase1Choice | None:
    """The first offered phase-1 transform one of our specs covers with an authentication method in
    ``methods`` (the initiator's preference)."""
    for prop in offered.proposals:
        if prop.protocol != ProtocolId.ISAKMP:
            continue
        for t in prop.transforms:
            choice = _judge_phase1(prop.number, t, specs, methods)
            if choice is not None:
                return choice
    return None


def answer_sa(offered: SA, proposal: int, transform: Transform, protocol: int, spi: bytes) -> SA:
    """The responder's SA payload: the chosen proposal with the one chosen transform."""
    return SA([Proposal(proposal, protocol, spi, [transform])], offered.doi, offered.situation)


def is_single(sa: SA) -> bool:
    return len(sa.proposals) == 1 and len(sa.proposals[0].transforms) == 1


# ------------------------------------------------------------------------------------------- phase 2


@dataclass(frozen=True, slots=True)
class EspChoice:
    """One acceptable ESP transform, decoded."""

    proposal: int
    spi: bytes
    transform: Transform
    encr: int  # ESP transform ID == IKEv2 ENCR ID
    key_bits: int | None
    integ: int | None  # IKEv2 INTEG ID
    encap: int
    group: int | None
    life_seconds: int | None
    life_kb: int | None

    def encr_alg(self) -> EncrAlg:
        return encr_alg(self.encr, self.key_bits)

    def integ_alg(self) -> IntegAlg | None:
        return integ_alg(self.integ) if self.integ is not None else None

    @property
    def udp(self) -> bool:
        return self.encap in _UDP_MODES

    @property
    def transport(self) -> bool:
        return self.encap in _TRANSPORT_MODES


def esp_sa(specs: list[EspProposalSpec], spi: bytes, encap: int, lifetime: float, lifetime_kb: int,
           group: int | None) -> SA:
    """Our quick-mode offer: one ESP proposal, one transform per (cipher, integrity)."""
    transforms: list[Transform] = []
    for spec in specs:
        for encr_id, bits in spec.encr:
            try:
                aead = encr_alg(encr_id, bits).aead
            except UnsupportedTransform:
                continue
            integs: list[int | None] = [None] if aead else [i for i in spec.integ if i in ESP_AUTH_FROM_V2]
            for integ in integs:
                attrs = [Attribute(IpsecAttr.SA_LIFE_TYPE, LifeType.SECONDS),
                         attr(IpsecAttr.SA_LIFE_DURATION, int(lifetime))]
                if lifetime_kb:
                    attrs += [Attribute(IpsecAttr.SA_LIFE_TYPE, LifeType.KILOBYTES),
                              attr(IpsecAttr.SA_LIFE_DURATION, int(lifetime_kb))]
                if group is not None:
                    attrs.append(Attribute(IpsecAttr.GROUP_DESCRIPTION, group))
                attrs.append(Attribute(IpsecAttr.ENCAPSULATION_MODE, encap))
                if integ is not None:
                    attrs.append(Attribute(IpsecAttr.AUTH_ALGORITHM, ESP_AUTH_FROM_V2[integ]))
                if encr_id != EncrId.TRIPLE_DES and bits is not None:
                    attrs.append(Attribute(IpsecAttr.KEY_LENGTH, bits))
                transforms.append(Transform(len(transforms) + 1, encr_id, attrs))
    if not transforms:
        raise ValueError("no ESP transform can be offered")
    return SA([Proposal(1, ProtocolId.ESP, spi, transforms)])


def _judge_esp(prop: Proposal, t: Transform, specs: list[EspProposalSpec], *, modes: frozenset[int],
               pfs: int | None) -> EspChoice | None:
    if any(a.type not in _KNOWN_ESP_ATTRS for a in t.attributes):
        return None
    values = {a.type: a.number for a in t.attributes
              if a.type not in (IpsecAttr.SA_LIFE_TYPE, IpsecAttr.SA_LIFE_DURATION)}
    seconds, kilobytes, ok = _lifetimes(t, IpsecAttr.SA_LIFE_TYPE, IpsecAttr.SA_LIFE_DURATION)
    encap = values.get(IpsecAttr.ENCAPSULATION_MODE, EncapMode.TUNNEL)
    if not ok or encap not in modes:
        return None
    group = values.get(IpsecAttr.GROUP_DESCRIPTION)
    if group != pfs:
        return None
    bits = values.get(IpsecAttr.KEY_LENGTH)
    if t.transform_id == EncrId.AES_CBC and bits is None:
        bits = 128  # RFC 3602 §5: absent means 128 in practice (strongSwan, Cisco)
    auth = values.get(IpsecAttr.AUTH_ALGORITHM)
    integ = ESP_AUTH_TO_V2.get(auth) if auth is not None else None
    if auth is not None and integ is None:
        return None
    try:
        alg = encr_alg(t.transform_id, bits)
    except UnsupportedTransform:
        return None
    if alg.aead != (integ is None):
        return None  # CBC needs an authentication algorithm, an AEAD must not have one
    for spec in specs:
        if (t.transform_id, bits) not in spec.encr and not (
                t.transform_id == EncrId.TRIPLE_DES and ((3, None) in spec.encr or (3, 192) in spec.encr)):
            continue
        if integ is not None and integ not in spec.integ:
            continue
        if (pfs is not None and pfs not in spec.dh) or (pfs is None and spec.dh):
            continue  # PFS must be configured alike on both ends
        key_bits = None if t.transform_id == EncrId.TRIPLE_DES else bits
        return EspChoice(prop.number, prop.spi, t, t.transform_id, key_bits, integ, encap, group, seconds, kilobytes)
    return None


def choose_esp(offered: SA, specs: list[EspProposalSpec], *, transport: bool, nat: bool,
               pfs: int | None) -> EspChoice | None:
    """The first offered ESP transform one of ours covers.

    ``transport``/``nat`` give the encapsulation modes we accept (UDP-encapsulated ones only when a NAT
    was detected); ``pfs`` is the group the KE payload carried (None: no KE, so no group may be named).
    Proposals sharing a number with another (AH+ESP or IPComp bundles) are not supported and skipped.
    """
    numbers = [p.number for p in offered.proposals]
    base = _TRANSPORT_MODES if transport else _TUNNEL_MODES
    modes = frozenset(m for m in base if nat or m not in _UDP_MODES)
    for prop in offered.proposals:
        if prop.protocol != ProtocolId.ESP or len(prop.spi) != 4 or numbers.count(prop.number) != 1:
            continue
        for t in prop.transforms:
            choice = _judge_esp(prop, t, specs, modes=modes, pfs=pfs)
            if choice is not None:
                return choice
    return None


def offered_group(offered: SA) -> int | None:
    """The PFS group an ESP offer names (the first one), or None."""
    for prop in offered.proposals:
        for t in prop.transforms:
            a = t.get(IpsecAttr.GROUP_DESCRIPTION)
            if a is not None:
                return a.number
    return None


def lifetime_attrs(seconds: int, kilobytes: int | None) -> bytes:
    """Notification data of RESPONDER-LIFETIME: the lifetime attributes we actually use."""
    out = Attribute(IpsecAttr.SA_LIFE_TYPE, LifeType.SECONDS).encode() + attr(IpsecAttr.SA_LIFE_DURATION,
                                                                              seconds).encode()
    if kilobytes:
        out += Attribute(IpsecAttr.SA_LIFE_TYPE, LifeType.KILOBYTES).encode()
        out += attr(IpsecAttr.SA_LIFE_DURATION, kilobytes).encode()
    return out


# ------------------------------------------------------------------------------ phase-2 identities


def ts_to_id(ts: TrafficSelector) -> Identification:
    """The narrowest ID payload for a selector: a host, a subnet, else a range.

    IKEv1 carries one port, not a range: a full range becomes 0 (any), a single port itself, and any
    other range widens to 0 (the peer narrows; the state machine checks the result against policy).
    """
    start, end = ts.start_addr, ts.end_addr
    v4 = start.version == 4
    port = ts.start_port if ts.start_port == ts.end_port else 0
    if start == end:
        return Identification(IdType.ID_IPV4_ADDR if v4 else IdType.ID_IPV6_ADDR, start.packed, ts.ip_protocol, port)
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = list(
        ipaddress.summarize_address_range(start, end))
    if len(nets) == 1:
        net = nets[0]
        return Identification(IdType.ID_IPV4_ADDR_SUBNET if v4 else IdType.ID_IPV6_ADDR_SUBNET,
                              net.network_address.packed + net.netmask.packed, ts.ip_protocol, port)
    return Identification(IdType.ID_IPV4_ADDR_RANGE if v4 else IdType.ID_IPV6_ADDR_RANGE,
                          start.packed + end.packed, ts.ip_protocol, port)


def id_to_ts(idp: Identification) -> TrafficSelector | None:
    """The selector an ID payload names, or None for IDs that are not addresses (or a bad mask)."""
    t, data = idp.id_type, idp.data
    low, high = (idp.port, idp.port) if idp.port else (0, 65535)
    try:
        if t in (IdType.ID_IPV4_ADDR, IdType.ID_IPV6_ADDR):
            a = ipaddress.ip_address(data)
            start, end = a, a
        elif t in (IdType.ID_IPV4_ADDR_SUBNET, IdType.ID_IPV6_ADDR_SUBNET):
            half = len(data) // 2
            addr = ipaddress.ip_address(data[:half])
            mask = ipaddress.ip_address(data[half:])
            net = ipaddress.ip_network(f"{addr}/{mask}", strict=False)
            start, end = net.network_address, net.broadcast_address
        elif t in (IdType.ID_IPV4_ADDR_RANGE, IdType.ID_IPV6_ADDR_RANGE):
            half = len(data) // 2
            start, end = ipaddress.ip_address(data[:half]), ipaddress.ip_address(data[half:])
            if int(start) > int(end):
                return None
        else:
            return None
    except ValueError:
        return None
    ts_type = TsType.TS_IPV4_ADDR_RANGE if start.version == 4 else TsType.TS_IPV6_ADDR_RANGE
    return TrafficSelector(ts_type, idp.protocol, low, high, start, end)


def host_ts(address: str) -> TrafficSelector:
    """The selector of one host: what a quick mode without client IDs implies (RFC 2409 §5.5)."""
    a = ipaddress.ip_address(address)
    ts_type = TsType.TS_IPV4_ADDR_RANGE if a.version == 4 else TsType.TS_IPV6_ADDR_RANGE
    return TrafficSelector(ts_type, 0, 0, 65535, a, a)


# ------------------------------------------------------------------------- received proposals, as text


def _transform_text(protocol: int, t: Transform) -> str:
    """One IKEv1 transform in the IKEv2 names strongSwan logs (an IKEv1 suite is one transform)."""
    values = {a.type: a.number for a in t.attributes}
    if protocol == ProtocolId.ISAKMP:
        encr = values.get(Phase1Attr.ENCRYPTION, 0)
        hash_id = values.get(Phase1Attr.HASH, 0)
        bits = values.get(Phase1Attr.KEY_LENGTH)
        parts = [transform_text(TransformType.ENCR, P1_ENCR_TO_V2[encr], bits) if encr in P1_ENCR_TO_V2
                 else Phase1Encr.text(encr)]
        if hash_id in P1_HASH_TO_INTEG:
            parts += [transform_text(TransformType.INTEG, P1_HASH_TO_INTEG[hash_id]),
                      transform_text(TransformType.PRF, P1_HASH_TO_PRF[hash_id])]
        else:
            parts.append(Phase1Hash.text(hash_id))
        if Phase1Attr.GROUP in values:
            parts.append(transform_text(TransformType.DH, values[Phase1Attr.GROUP]))
        if values.get(Phase1Attr.AUTH_METHOD, AuthMethod.PRE_SHARED) != AuthMethod.PRE_SHARED:
            parts.append(AuthMethod.text(values[Phase1Attr.AUTH_METHOD]))
        return "IKE:" + "/".join(parts)
    parts = [transform_text(TransformType.ENCR, t.transform_id, values.get(IpsecAttr.KEY_LENGTH))]
    auth = values.get(IpsecAttr.AUTH_ALGORITHM)
    if auth is not None:
        parts.append(transform_text(TransformType.INTEG, ESP_AUTH_TO_V2[auth]) if auth in ESP_AUTH_TO_V2
                     else IpsecAuth.text(auth))
    if IpsecAttr.GROUP_DESCRIPTION in values:
        parts.append(transform_text(TransformType.DH, values[IpsecAttr.GROUP_DESCRIPTION]))
    parts.append(EncapMode.text(values.get(IpsecAttr.ENCAPSULATION_MODE, EncapMode.TUNNEL)))
    return f"{ProtocolId.text(protocol)}:" + "/".join(parts)


def offered_text(offered: SA) -> str:
    """Every transform of a peer's SA payload, for the log line of a NO_PROPOSAL_CHOSEN (as strongSwan's
    "received proposals": the operator compares it with the other end's configuration)."""
    return ", ".join(_transform_text(p.protocol, t) for p in offered.proposals for t in p.transforms) or "none"


"""SA payload construction and selection (RFC 7296 §2.7, §3.3).

The initiator lists its proposals; the responder picks the first offered proposal that one of its own
proposals fully covers, taking for each transform type the first offered value it accepts (the
initiator's preference). The initiator checks the answer with the same function, so the rules live once.
"""

from __future__ import annotations

from ikegate.ike.core.config import EspProposalSpec, IkeProposalSpec
from ikegate.ike.core.negotiated import Chosen, transform_text
from ikegate.ike.crypto import UnsupportedTransform, encr_alg
from ikegate.ike.wire.registry import DhId, EsnId, IntegId, ProtocolId, TransformType
from ikegate.ike.wire.v2 import SA, Proposal, Transform


def _is_aead(encr: int, bits: int | None) -> bool:
    try:
        return encr_alg(encr, bits).aead
    except UnsupportedTransform:
        return False


def ike_sa_payload(specs: list[IkeProposalSpec], spi: bytes = b"", dh_first: int | None = None) -> SA:
    """Our IKE proposals. ``dh_first`` moves the group we sent a KE for to the front (RFC 7296 §1.2)."""
    props = []
    for n, spec in enumerate(specs, 1):
        tr = [Transform(TransformType.ENCR, e, k) for e, k in spec.encr]
        tr += [Transform(TransformType.PRF, p) for p in spec.prf]
        tr += [Transform(TransformType.INTEG, i) for i in spec.integ]
        groups = list(spec.dh)
        if dh_first in groups:
            groups.remove(dh_first)
            groups.insert(0, dh_first)
        tr += [Transform(TransformType.DH, g) for g in groups]
        props.append(Proposal(n, ProtocolId.IKE, spi, tr))
    return SA(props)


def esp_sa_payload(specs: list[EspProposalSpec], spi: bytes, with_dh: bool) -> SA:
    """Our ESP proposals; DH transforms only where a KE goes along (CREATE_CHILD_SA with PFS)."""
    props = []
    for n, spec in enumerate(specs, 1):
        tr = [Transform(TransformType.ENCR, e, k) for e, k in spec.encr]
        tr += [Transform(TransformType.INTEG, i) for i in spec.integ]
        if with_dh:
            tr += [Transform(TransformType.DH, g) for g in spec.dh]
        tr.append(Transform(TransformType.ESN, EsnId.NO_ESN))
        props.append(Proposal(n, ProtocolId.ESP, spi, tr))
    return SA(props)


# Plain ints for the selection loops: an enum member lookup costs several times an int comparison, and
# these run per offered transform of every proposal received.
_ENCR, _PRF, _INTEG = int(TransformType.ENCR), int(TransformType.PRF), int(TransformType.INTEG)
_DH, _ESN = int(TransformType.DH), int(TransformType.ESN)
_INTEG_NONE, _DH_NONE, _NO_ESN = int(IntegId.NONE), int(DhId.NONE), int(EsnId.NO_ESN)
_P_IKE, _P_ESP = int(ProtocolId.IKE), int(ProtocolId.ESP)


def _first(offered: list[Transform], ttype: int, accepted: tuple[int, ...]) -> int | None:
    for t in offered:
        if t.type == ttype and t.id in accepted:
            return t.id
    return None


def _match(prop: Proposal, encr: tuple[tuple[int, int | None], ...], prf: tuple[int, ...],
           integ: tuple[int, ...], dh: tuple[int, ...], *, ike: bool, skip_dh: bool) -> Chosen | None:
    tr = prop.transforms
    chosen_encr: tuple[int, int | None] | None = None
    for t in tr:
        if t.type == _ENCR and (t.id, t.key_length) in encr:
            chosen_encr = (t.id, t.key_length)
            break
    if chosen_encr is None:
        return None
    aead = _is_aead(*chosen_encr)
    chosen_prf: int | None = None
    if ike:
        chosen_prf = _first(tr, _PRF, prf)
        if chosen_prf is None:
            return None
    offered_integ = [t.id for t in tr if t.type == _INTEG and t.id != _INTEG_NONE]
    chosen_integ: int | None = None
    if aead:
        if offered_integ:
            return None  # an AEAD cipher never comes with a separate integrity transform
    else:
        chosen_integ = _first(tr, _INTEG, integ)
        if chosen_integ is None:
            return None
    offered_dh = [t.id for t in tr if t.type == _DH and t.id != _DH_NONE]
    chosen_dh: int | None = None
    if ike or (not skip_dh and (offered_dh or dh)):
        chosen_dh = _first(tr, _DH, dh)
        if chosen_dh is None:
            return None
    esn = 0
    if not ike:
        offered_esn = [t.id for t in tr if t.type == _ESN]
        if offered_esn and _NO_ESN not in offered_esn:
            return None
    return Chosen(prop.number, prop.spi, chosen_encr[0], chosen_encr[1], chosen_prf, chosen_integ, chosen_dh, esn)


def choose_ike(offered: SA, specs: list[IkeProposalSpec]) -> Chosen | None:
    """The first offered IKE proposal one of ours covers, or None (NO_PROPOSAL_CHOSEN)."""
    for prop in offered.proposals:
        if prop.protocol != _P_IKE:
            continue
        for spec in specs:
            c = _match(prop, spec.encr, spec.prf, spec.integ, spec.dh, ike=True, skip_dh=False)
            if c is not None:
                return c
    return None


def choose_esp(offered: SA, specs: list[EspProposalSpec], *, skip_dh: bool) -> Chosen | None:
    """The first offered ESP proposal one of ours covers. ``skip_dh`` in IKE_AUTH, where no KE travels."""
    for prop in offered.proposals:
        if prop.protocol != _P_ESP or len(prop.spi) != 4:
            continue
        for spec in specs:
            c = _match(prop, spec.encr, (), spec.integ, () if skip_dh else spec.dh, ike=False, skip_dh=skip_dh)
            if c is not None:
                return c
    return None


def is_single(sa: SA) -> bool:
    """A responder's answer holds exactly one proposal with at most one transform per type."""
    if len(sa.proposals) != 1:
        return False
    types = [t.type for t in sa.proposals[0].transforms]
    return len(types) == len(set(types))


# ------------------------------------------------------------------------- received proposals, as text

def suite_text(protocol: int, transforms: list[tuple[int, int, int | None]]) -> str:
    """``IKE:AES_CBC_256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048``: one proposal on one line, as in
    strongSwan's "received proposals" (the operator compares it with what the other end shows)."""
    label = "IKE" if protocol == ProtocolId.IKE else ProtocolId.text(protocol)
    order: dict[int, int] = {TransformType.ENCR: 0, TransformType.INTEG: 1, TransformType.PRF: 2, TransformType.DH: 3}
    ordered = sorted(transforms, key=lambda t: order.get(t[0], 9))
    return f"{label}:" + "/".join(transform_text(*t) for t in ordered if (t[0], t[1]) != (TransformType.INTEG, 0))


def offered_text(offered: SA) -> str:
    """Every proposal of a peer's SA payload, for the log line of a NO_PROPOSAL_CHOSEN."""
    return ", ".join(suite_text(p.protocol, [(t.type, t.id, t.key_length) for t in p.transforms])
                     for p in offered.proposals) or "none"


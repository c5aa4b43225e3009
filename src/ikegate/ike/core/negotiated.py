"""What a negotiation settled on, in IKEv2 transform IDs whichever version negotiated it.

IKEv1 maps its attribute values onto the IKEv2 registry (``ike/v1/registry.py``) so that the SA database,
``display`` and the dataplane read one record for both versions.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ikegate.ike.crypto import EncrAlg, encr_alg
from ikegate.ike.wire.registry import DhId, EncrId, EsnId, IntegId, PrfId, ProtocolId, Registry, TransformType
from ikegate.ike.wire.v2 import Proposal, Transform


@dataclass(frozen=True, slots=True)
class Chosen:
    """One value per transform type: the outcome of a negotiation."""

    number: int
    spi: bytes
    encr: int
    key_bits: int | None
    prf: int | None
    integ: int | None
    dh: int | None
    esn: int = 0

    def encr_alg(self) -> EncrAlg:
        return encr_alg(self.encr, self.key_bits)

    def to_proposal(self, protocol: int, spi: bytes) -> Proposal:
        """The single-transform proposal a responder answers with."""
        esn = self.esn if protocol == ProtocolId.ESP else None
        return Proposal(self.number, protocol, spi,
                        list(_answer_transforms(self.encr, self.key_bits, self.prf, self.integ, self.dh, esn)))


@functools.lru_cache(maxsize=256)
def _answer_transforms(encr: int, key_bits: int | None, prf: int | None, integ: int | None, dh: int | None,
                       esn: int | None) -> tuple[Transform, ...]:
    """The transforms of an answer, built once per suite (a responder answers with the same few in SA after
    SA). The Transform objects are shared and never modified; the values are ones we accept, so bounded."""
    tr = [Transform(TransformType.ENCR, encr, key_bits)]
    if prf is not None:
        tr.append(Transform(TransformType.PRF, prf))
    if integ is not None:
        tr.append(Transform(TransformType.INTEG, integ))
    if dh is not None:
        tr.append(Transform(TransformType.DH, dh))
    if esn is not None:
        tr.append(Transform(TransformType.ESN, esn))
    return tuple(tr)


_NAMES: dict[int, tuple[type[Registry], str]] = {
    TransformType.ENCR: (EncrId, ""), TransformType.PRF: (PrfId, "PRF_"), TransformType.INTEG: (IntegId, ""),
    TransformType.DH: (DhId, ""), TransformType.ESN: (EsnId, ""),
}


def transform_text(ttype: int, tid: int, bits: int | None = None) -> str:
    """One transform as strongSwan names it in its logs (``AES_CBC_256``, ``PRF_HMAC_SHA2_256``)."""
    registry, prefix = _NAMES.get(ttype, (TransformType, f"T{ttype}_"))
    name = prefix + registry.text(tid)
    return f"{name}_{bits}" if bits else name

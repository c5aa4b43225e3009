"""IKEv1-only settings of a peer (what ``ike peer`` adds for IKEv1), with the USG defaults."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ikegate.ike.fragments import FragmentationConfig


class ExchangeMode(enum.Enum):
    MAIN = "main"
    AGGRESSIVE = "aggressive"


class DpdType(enum.Enum):
    """USG ``dpd type``: periodic probes an idle peer; on-demand only when we send but hear nothing."""

    NONE = "none"
    ON_DEMAND = "on-demand"
    PERIODIC = "periodic"


@dataclass(frozen=True, slots=True)
class V1Options:
    """IKEv1-only settings of one IKE peer, with USG defaults.

    ``dependent`` is ``ikev1 phase1-phase2 sa dependent`` (default off). DPD follows RFC 3706 and the USG
    ``dpd`` command: probe after ``dpd_idle`` seconds of silence, retransmit every ``dpd_retransmit``
    seconds, ``dpd_retries`` R-U-THEREs in all; unanswered ``dpd_retries * dpd_retransmit`` seconds after
    the first, the peer is dead (gone ``idle + retries * retransmit`` after it fell silent). Probes go
    only to a peer that announced the DPD vendor ID; we always announce it, and always answer R-U-THERE.
    ``fragmentation``: the FRAGMENTATION vendor extension (``ike/v1/fragments.py``): announced, and Main
    and Aggressive Mode messages larger than the fragment size are sent in fragments once the peer
    announced it too (strongSwan's ``fragmentation = yes``).
    """

    mode: ExchangeMode = ExchangeMode.MAIN
    dependent: bool = False
    dpd_type: DpdType = DpdType.ON_DEMAND
    dpd_idle: float = 30.0
    dpd_retransmit: float = 15.0
    dpd_retries: int = 3
    fragmentation: FragmentationConfig = field(default_factory=FragmentationConfig)


__all__ = ["DpdType", "ExchangeMode", "V1Options"]

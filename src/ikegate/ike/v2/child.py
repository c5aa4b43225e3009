"""A Child SA pair (one inbound and one outbound ESP SA) as the IKEv2 engine negotiated it.

Keys are oriented from this gateway's point of view (``*_in`` decrypts what the peer sends), so the
dataplane never has to know who initiated the exchange that made the pair.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from ikegate.ike.crypto import EncrAlg, IntegAlg
from ikegate.ike.v2.config import ChildSaConfig, Mode
from ikegate.ike.wire.v2 import TrafficSelector


def soft_lifetime(hard: float, initiator: bool, rng: Callable[[int], bytes], ratio: float = 0.9) -> float:
    """Where to rekey an SA whose hard lifetime is ``hard`` (seconds, or kilobytes of traffic).

    The initiator of the pair rekeys at ``ratio`` of it and the responder halfway between that and the end,
    each less a random margin of up to 3% of the lifetime (strongSwan's rand_time / rand_bytes), so the
    two ends of a pair do not start rekeying it at the same moment -- or, for kilobytes, on the same
    packet, as both count the same traffic.
    """
    frac = ratio if initiator else (1.0 + ratio) / 2
    return hard * frac - hard * 0.03 * int.from_bytes(rng(2), "big") / 65535.0


class ChildState(enum.Enum):
    INSTALLED = "installed"
    REKEYING = "rekeying"
    REKEYED = "rekeyed"
    DELETING = "deleting"
    DELETED = "deleted"


@dataclass(slots=True, eq=False)
class ChildSa:
    spi_in: int
    spi_out: int
    config: ChildSaConfig
    encr: EncrAlg
    integ: IntegAlg | None
    encr_key_in: bytes = field(repr=False)
    integ_key_in: bytes = field(repr=False)
    encr_key_out: bytes = field(repr=False)
    integ_key_out: bytes = field(repr=False)
    ts_local: list[TrafficSelector]
    ts_remote: list[TrafficSelector]
    mode: Mode
    initiator: bool
    created: float
    rekey_at: float | None
    expire_at: float
    dh: int | None = None
    udp_encap: bool = False
    state: ChildState = ChildState.INSTALLED
    handle: object = None
    #: RFC 7296 §2.8.1: while our rekey of this pair is under way, the pair the peer's crossing rekey
    #: created and the lowest nonce of that exchange; our exchange's outcome decides which survives.
    collision: tuple[ChildSa, bytes] | None = None
    #: Our pair that lost that comparison: deleted when the peer deletes this one, as by then the peer
    #: has stopped sending on it (deleting it at once would drop the packets still on their way).
    redundant: ChildSa | None = None

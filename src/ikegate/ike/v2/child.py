"""A Child SA pair (one inbound and one outbound ESP SA) as the IKEv2 engine negotiated it.

Keys are oriented from this gateway's point of view (``*_in`` decrypts what the peer sends), so the
dataplane never has to know who initiated the exchange that made the pair.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ikegate.ike.crypto import EncrAlg, IntegAlg
from ikegate.ike.v2.config import ChildSaConfig, Mode
from ikegate.ike.wire.v2 import TrafficSelector


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

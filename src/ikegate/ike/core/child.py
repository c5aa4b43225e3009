"""A Child SA pair (one inbound and one outbound ESP SA) as either engine negotiated it.

Keys are oriented from this gateway's point of view (``*_in`` decrypts what the peer sends), so the
dataplane never has to know who initiated the exchange that made the pair.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ikegate.ike.core.config import ChildSaConfig, Mode
from ikegate.ike.core.table import Table
from ikegate.ike.crypto import EncrAlg, IntegAlg
from ikegate.ike.wire.v2 import TrafficSelector


class ChildState(enum.Enum):
    INSTALLED = "installed"
    REKEYING = "rekeying"
    REKEYED = "rekeyed"
    DELETING = "deleting"
    DELETED = "deleted"


class ChildTrigger(enum.Enum):
    REKEY = "rekey"  # our rekey of the pair starts
    RESTORE = "restore"  # that rekey failed or was abandoned: the pair serves on
    REPLACED = "replaced"  # a new pair took over (our rekey or the peer's); the peer deletes this one
    DELETE = "delete"  # a Delete for the pair is on its way (ours or the peer's)
    DROP = "drop"  # the pair is gone from the engine


#: The life of a Child SA pair, the same in IKEv2 and IKEv1 (h11 ``_state.py`` style).
CHILD_TABLE: Table[ChildState, ChildTrigger] = Table(
    "Child SA",
    {
        (ChildState.INSTALLED, ChildTrigger.REKEY): ChildState.REKEYING,
        (ChildState.REKEYING, ChildTrigger.RESTORE): ChildState.INSTALLED,
        (ChildState.INSTALLED, ChildTrigger.RESTORE): ChildState.INSTALLED,
        # A rekey answered after the pair's Delete began (TEMPORARY_FAILURE, §2.25.1): it stays going.
        (ChildState.DELETING, ChildTrigger.RESTORE): ChildState.DELETING,
        (ChildState.DELETED, ChildTrigger.RESTORE): ChildState.DELETED,
        (ChildState.INSTALLED, ChildTrigger.REPLACED): ChildState.REKEYED,
        (ChildState.REKEYING, ChildTrigger.REPLACED): ChildState.REKEYED,
        (ChildState.REKEYED, ChildTrigger.REPLACED): ChildState.REKEYED,
        (ChildState.INSTALLED, ChildTrigger.DELETE): ChildState.DELETING,
        (ChildState.REKEYING, ChildTrigger.DELETE): ChildState.DELETING,
        (ChildState.REKEYED, ChildTrigger.DELETE): ChildState.DELETING,
        (ChildState.DELETING, ChildTrigger.DELETE): ChildState.DELETING,
    },
    anywhere={ChildTrigger.DROP: ChildState.DELETED},
)


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

    def move(self, trigger: ChildTrigger) -> None:
        """The one way the pair changes state (:data:`CHILD_TABLE`)."""
        self.state = CHILD_TABLE.move(self.state, trigger)

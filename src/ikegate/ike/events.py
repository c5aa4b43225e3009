"""What the sans-I/O IKE engines tell their owner.

One small vocabulary for IKEv2 and IKEv1 (hypercorn's ``events.py`` is the model): the gateway
reads these from ``next_event()`` after feeding bytes or time, and updates the SA database and the
dataplane from them. Events carry the engine objects, never copies of their state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ikegate.ike.core.child import ChildSa
    from ikegate.ike.core.engine import Engine


class DeleteReason(enum.Enum):
    """Why an SA went away, worded as USG's ``display ike offline-info`` prints it."""

    MANUAL = "config modify or manual offline"
    PEER_REQUEST = "peer request"
    DPD_TIMEOUT = "dpd timeout"
    PHASE1_HARD_EXPIRY = "phase1 hard expiry"
    PHASE2_HARD_EXPIRY = "phase2 hard expiry"
    PHASE1_REPLACED = "phase1 sa replace"
    REKEYED = "phase2 sa replace"
    NEGOTIATION_FAILED = "negotiation failed"
    INITIAL_CONTACT = "initial contact"
    SHUTDOWN = "system shutdown"
    PARENT_DELETED = "phase1 sa delete"


@dataclass(slots=True)
class IkeSaEstablished:
    sa: Engine


@dataclass(slots=True)
class IkeSaRekeyed:
    """The IKE SA now runs under new SPIs and keys; ``old_spis`` are retired."""

    sa: Engine
    old_spis: tuple[bytes, bytes]


@dataclass(slots=True)
class IkeSaDeleted:
    sa: Engine
    reason: DeleteReason


@dataclass(slots=True)
class ChildSaEstablished:
    """A Child SA pair is ready: keys and selectors are on ``child``; ``replaces`` is set on a rekey."""

    sa: Engine
    child: ChildSa
    replaces: ChildSa | None = None


@dataclass(slots=True)
class ChildSaDeleted:
    sa: Engine
    child: ChildSa
    reason: DeleteReason


@dataclass(slots=True)
class NegotiationFailed:
    """An exchange failed: ``notify`` is the IKEv2 Notify type received or sent (0: timeout/local)."""

    sa: Engine
    notify: int
    detail: str
    child_only: bool = False
    #: For an authentication failure, its kind (``ike.core.auth.AuthFailure.kind``): the metrics label.
    auth_failure: str = ""


@dataclass(slots=True)
class InitialContact:
    """The peer says it has no other SA with us: older SAs of the same identity may be dropped."""

    sa: Engine


IkeEvent = (
    IkeSaEstablished
    | IkeSaRekeyed
    | IkeSaDeleted
    | ChildSaEstablished
    | ChildSaDeleted
    | NegotiationFailed
    | InitialContact
)

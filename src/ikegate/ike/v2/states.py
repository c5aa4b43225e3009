"""The IKEv2 IKE SA's states and the table of its moves (h11's ``_state.py``): the engine in ``sa.py``
changes ``state`` only through :data:`TRANSITIONS`, and drops requests its state does not accept."""

from __future__ import annotations

import enum

from ikegate.ike.core.table import Table
from ikegate.ike.wire.registry import ExchangeType


class State(enum.Enum):
    NEW = "new"
    INIT_SENT = "init-sent"
    AUTH_SENT = "auth-sent"
    INIT_DONE = "init-done"
    ESTABLISHED = "established"
    DELETING = "deleting"
    DEAD = "dead"


class Trigger(enum.Enum):
    INITIATE = "initiate"
    INIT_RESPONSE = "init-response"
    AUTH_RESPONSE = "auth-response"
    INIT_REQUEST = "init-request"
    AUTH_REQUEST = "auth-request"
    DELETE = "delete"
    DIE = "die"


#: The whole life of an IKE SA (h11's ``_state.py`` style): (state, trigger) -> next state; DIE goes to
#: DEAD from everywhere. :meth:`IkeSa._move` is the only writer of ``state``.
TRANSITIONS: Table[State, Trigger] = Table(
    "IKE SA",
    {
        (State.NEW, Trigger.INITIATE): State.INIT_SENT,
        (State.INIT_SENT, Trigger.INITIATE): State.INIT_SENT,  # cookie / INVALID_KE retry
        (State.INIT_SENT, Trigger.INIT_RESPONSE): State.AUTH_SENT,
        (State.AUTH_SENT, Trigger.AUTH_RESPONSE): State.ESTABLISHED,
        (State.NEW, Trigger.INIT_REQUEST): State.INIT_DONE,
        (State.INIT_DONE, Trigger.AUTH_REQUEST): State.ESTABLISHED,
        (State.NEW, Trigger.DELETE): State.DELETING,
        (State.INIT_SENT, Trigger.DELETE): State.DELETING,
        (State.AUTH_SENT, Trigger.DELETE): State.DELETING,
        (State.INIT_DONE, Trigger.DELETE): State.DELETING,
        (State.ESTABLISHED, Trigger.DELETE): State.DELETING,
    },
    anywhere={Trigger.DIE: State.DEAD},
)

#: Which requests the peer may send us in each state; anything else is dropped.
ACCEPTED_REQUESTS: dict[State, frozenset[int]] = {
    State.INIT_DONE: frozenset({ExchangeType.IKE_AUTH}),
    State.ESTABLISHED: frozenset({ExchangeType.CREATE_CHILD_SA, ExchangeType.INFORMATIONAL}),
    State.DELETING: frozenset({ExchangeType.INFORMATIONAL}),
}


__all__ = ["ACCEPTED_REQUESTS", "TRANSITIONS", "State", "Trigger"]

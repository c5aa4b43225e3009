"""IKEv1 phase-1 and Quick Mode states and the tables of their moves (h11's ``_state.py``): the engine in
``sa.py`` changes a phase 1's or a Quick Mode's ``state`` only through these tables."""

from __future__ import annotations

import enum

from ikegate.ike.core.table import Table
from ikegate.ike.v1.registry import ExchangeType


class State(enum.Enum):
    """Phase-1 states; the ``-sent-N`` name says which message we sent last."""

    NEW = "new"
    MM_SENT1 = "mm-sent-1"
    MM_SENT2 = "mm-sent-2"
    MM_SENT3 = "mm-sent-3"
    MM_SENT4 = "mm-sent-4"
    MM_SENT5 = "mm-sent-5"
    AM_SENT1 = "am-sent-1"
    AM_SENT2 = "am-sent-2"
    ESTABLISHED = "established"
    DEAD = "dead"


class Trigger(enum.Enum):
    START_MAIN = "start-main"
    START_AGGRESSIVE = "start-aggressive"
    MM1 = "mm1"
    MM2 = "mm2"
    MM3 = "mm3"
    MM4 = "mm4"
    MM5 = "mm5"
    MM6 = "mm6"
    AM1 = "am1"
    AM2 = "am2"
    AM3 = "am3"


#: Phase 1 (h11 ``_state.py`` style): (state, trigger) -> next state. Triggers are "message N arrived"
#: or a local start; anything not listed is dropped. Death is possible from everywhere.
TRANSITIONS: Table[State, Trigger] = Table(
    "IKEv1 phase 1",
    {
        (State.NEW, Trigger.START_MAIN): State.MM_SENT1,
        (State.MM_SENT1, Trigger.MM2): State.MM_SENT3,
        (State.MM_SENT3, Trigger.MM4): State.MM_SENT5,
        (State.MM_SENT5, Trigger.MM6): State.ESTABLISHED,
        (State.NEW, Trigger.MM1): State.MM_SENT2,
        (State.MM_SENT2, Trigger.MM3): State.MM_SENT4,
        (State.MM_SENT4, Trigger.MM5): State.ESTABLISHED,
        (State.NEW, Trigger.START_AGGRESSIVE): State.AM_SENT1,
        (State.AM_SENT1, Trigger.AM2): State.ESTABLISHED,
        (State.NEW, Trigger.AM1): State.AM_SENT2,
        (State.AM_SENT2, Trigger.AM3): State.ESTABLISHED,
    },
)

#: The phase-1 message each state waits for: (exchange type, trigger it fires).
EXPECTED: dict[State, tuple[int, Trigger]] = {
    State.MM_SENT1: (ExchangeType.ID_PROT, Trigger.MM2),
    State.MM_SENT2: (ExchangeType.ID_PROT, Trigger.MM3),
    State.MM_SENT3: (ExchangeType.ID_PROT, Trigger.MM4),
    State.MM_SENT4: (ExchangeType.ID_PROT, Trigger.MM5),
    State.MM_SENT5: (ExchangeType.ID_PROT, Trigger.MM6),
    State.AM_SENT1: (ExchangeType.AGGRESSIVE, Trigger.AM2),
    State.AM_SENT2: (ExchangeType.AGGRESSIVE, Trigger.AM3),
}


#: What a phase-1 retransmission timeout most likely means, for the log (the peer says nothing: strongSwan,
#: like us, drops an MM5 that does not decrypt rather than answer an unauthenticated peer).
TIMEOUT_HINTS: dict[State, str] = {
    State.MM_SENT1: "no answer to MM1: the peer is unreachable, or IKEv1 is not enabled there",
    State.MM_SENT3: "no answer to MM3: the peer refused our key exchange or is unreachable",
    State.MM_SENT5: "no answer to MM5: the peer probably has a different pre-shared key (or expects another "
                    "identity)",
    State.AM_SENT1: "no answer to AM1: the peer is unreachable, refuses Aggressive Mode, or does not know our "
                    "identity",
}


class QuickState(enum.Enum):
    NEW = "new"
    SENT1 = "qm-sent-1"  # initiator, waiting for QM2
    SENT2 = "qm-sent-2"  # responder, waiting for QM3
    DONE = "done"


class QuickTrigger(enum.Enum):
    SEND_QM1 = "send-qm1"
    QM1 = "qm1"
    QM2 = "qm2"
    QM3 = "qm3"


#: One Quick Mode exchange: (state, trigger) -> next state.
QUICK_TRANSITIONS: Table[QuickState, QuickTrigger] = Table(
    "Quick Mode",
    {
        (QuickState.NEW, QuickTrigger.SEND_QM1): QuickState.SENT1,
        (QuickState.NEW, QuickTrigger.QM1): QuickState.SENT2,
        (QuickState.SENT1, QuickTrigger.QM2): QuickState.DONE,
        (QuickState.SENT2, QuickTrigger.QM3): QuickState.DONE,
    },
)


__all__ = ["EXPECTED", "QUICK_TRANSITIONS", "TIMEOUT_HINTS", "TRANSITIONS", "QuickState", "QuickTrigger", "State",
           "Trigger"]

"""A move the engine's own table forbids is a bug and must surface, never pass for a dropped packet.

The engines swallow bad input (``ParseError``, ``CryptoError``, ``ValueError`` ...) in
``receive_datagram``; ``ProtocolViolation`` is none of those. These tests take a move out of a table (a
stand-in for a state-machine bug) and feed the engine a valid message: the violation must reach the
caller, and the stats must not count a dropped packet.
"""

from __future__ import annotations

import pytest

from ikegate.ike.core.errors import ProtocolViolation
from ikegate.ike.v1 import states as v1sa
from ikegate.ike.v2 import states as v2sa
from tests.protocol import harness, harness_v1


def test_v2_violation_surfaces_from_receive_datagram(monkeypatch: pytest.MonkeyPatch) -> None:
    pair = harness.make_pair()
    monkeypatch.delitem(v2sa.TRANSITIONS.moves, (v2sa.State.NEW, v2sa.Trigger.INIT_REQUEST))
    pair.initiator.initiate(pair.now, harness.child())
    (init, local, peer), = pair.initiator.datagrams_to_send()
    with pytest.raises(ProtocolViolation, match="init-request is not allowed in state new"):
        pair.responder.receive_datagram(init, local, pair.now, local=peer)
    assert pair.responder.stats.dropped == 0


def test_v1_violation_surfaces_from_receive_datagram(monkeypatch: pytest.MonkeyPatch) -> None:
    pair = harness_v1.make_pair()
    monkeypatch.delitem(v1sa.TRANSITIONS.moves, (v1sa.State.NEW, v1sa.Trigger.MM1))
    pair.initiator.initiate(pair.now, harness_v1.child())
    (mm1, local, peer), = pair.initiator.datagrams_to_send()
    assert pair.r.factory is not None
    responder = pair.r.factory(peer, local, pair.now)
    with pytest.raises(ProtocolViolation, match="mm1 is not allowed in state new"):
        responder.receive_datagram(mm1, local, pair.now, local=peer)
    assert responder.stats.dropped == 0 and responder.stats.malformed == 0


def test_v2_illegal_command_is_a_violation() -> None:
    """Asking an IKE SA for a move its table lacks (here: a second IKE_SA_INIT answer) raises at once."""
    pair = harness.establish(harness.make_pair())
    with pytest.raises(ProtocolViolation):
        pair.initiator._move(v2sa.Trigger.INIT_RESPONSE)
    assert pair.initiator.state is v2sa.State.ESTABLISHED

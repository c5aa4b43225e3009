"""A Child SA the peer proposes on an IKE SA that we initiated.

strongSwan (or another gateway) may open a further Child SA under an IKE SA we started, say when its own
traffic-based trigger fires. The initiating engine once had no responder policy and hit an assertion:
an exception out of ``receive_datagram`` instead of an answer.
"""

from __future__ import annotations

from ikegate.ike.events import ChildSaEstablished
from ikegate.sad import IpsecSaEntry
from tests.protocol.harness import child, establish, make_pair
from tests.protocol.netsim import lab


def test_gateway_answers_a_child_sa_the_peer_opens_on_our_ike_sa() -> None:
    net, hq, b1, _b2 = lab()
    (engine,) = hq.engines()  # HQ responded to Branch1's IKE SA
    assert not engine.initiator
    (first,) = engine.children.values()
    engine.create_child(first.config, net.now)  # HQ, the responder, proposes one more Child SA
    hq._service(engine, net.now)
    net.pump()
    for gw in (hq, b1):
        assert sum(isinstance(e, IpsecSaEntry) for e in gw.sad.entries()) == 2
    (ours,) = b1.engines()
    assert ours.initiator and ours.established and len(ours.children) == 2


def test_engine_without_policy_refuses_a_peer_child_sa_and_lives() -> None:
    pair = establish(make_pair())
    pair.responder.create_child(child("10.2.1.0/24", "10.1.1.0/24"), pair.now)
    pair.transfer()  # would raise if the initiator could not answer
    assert pair.initiator.established and pair.responder.established
    assert len(pair.initiator.children) == 1 and len(pair.responder.children) == 1
    assert len(pair.events("r", ChildSaEstablished)) == 1  # only the first one, from IKE_AUTH

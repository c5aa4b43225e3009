"""INFORMATIONAL requests a peer sends on its own, as strongSwan does.

A MOBIKE peer (strongSwan with ``mobike = yes``) announces its addresses in INFORMATIONAL requests with
ADDITIONAL_IP4/IP6_ADDRESS notifies when its interfaces change (RFC 4555 §3.6). ikegate does not support
MOBIKE, so strongSwan only sends them to a peer that announced MOBIKE_SUPPORTED -- the namespace test
cannot provoke them -- but any such request must still be answered, or the peer declares us dead.
"""

from __future__ import annotations

from ikegate.ike.events import IkeSaDeleted
from ikegate.ike.v2.sa import State
from ikegate.ike.wire.registry import ExchangeType, NotifyType
from ikegate.ike.wire.v2 import Notify, Payload
from tests.protocol.harness import establish, make_pair


def test_additional_address_notifies_are_answered_and_change_nothing() -> None:
    pair = establish(make_pair())
    answers: list[list[Payload]] = []
    peer = pair.responder  # strongSwan as the responder of our initiation, speaking first
    notifies: list[Payload] = [Notify(NotifyType.ADDITIONAL_IP4_ADDRESS, data=bytes([198, 51, 100, 9])),
                               Notify(NotifyType.ADDITIONAL_IP6_ADDRESS, data=bytes(15) + b"\x09")]
    for _ in range(2):  # and the next one, with the next message ID
        peer._send_request(ExchangeType.INFORMATIONAL, notifies, lambda p, n: answers.append(p), None, pair.now)
        pair.transfer()
    assert answers == [[], []]
    assert pair.initiator.state is State.ESTABLISHED and pair.responder.state is State.ESTABLISHED
    assert pair.initiator.peer == ("198.51.100.1", 500)  # no address update without MOBIKE
    assert not pair.events("i", IkeSaDeleted)

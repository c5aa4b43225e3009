"""Message IDs as RFC 7296 §2.2 numbers them: found against strongSwan, which ignored our IKE_AUTH.

IKE_SA_INIT is request 0 of the initiator's window, so IKE_AUTH must be request 1 ("received message ID
0, expected 1, ignored" was strongSwan's answer when ikegate sent it as 0). Two ikegates agreed with each
other on the wrong number, so only a check of the wire values catches it.
"""

from __future__ import annotations

import struct

from ikegate.ike.events import IkeSaEstablished
from ikegate.ike.wire.registry import ExchangeType
from tests.protocol.harness import establish, make_pair

_FLAG_R = 0x20


def _ids(sent: list[bytes], *, responses: bool) -> list[tuple[int, int]]:
    """(exchange, message ID) of each request (or response) in ``sent``, marker-free IKE headers."""
    out = []
    for data in sent:
        if len(data) < 28:
            continue  # a keepalive
        exchange, flags = data[18], data[19]
        if bool(flags & _FLAG_R) == responses:
            out.append((exchange, struct.unpack_from("!I", data, 20)[0]))
    return out


def test_ike_auth_is_message_id_1_and_windows_are_independent() -> None:
    pair = establish(make_pair())
    assert pair.events("i", IkeSaEstablished) and pair.events("r", IkeSaEstablished)
    assert _ids(pair.sent_i, responses=False) == [(ExchangeType.IKE_SA_INIT, 0), (ExchangeType.IKE_AUTH, 1)]
    assert _ids(pair.sent_r, responses=True) == [(ExchangeType.IKE_SA_INIT, 0), (ExchangeType.IKE_AUTH, 1)]
    # The initiator's next request continues its window; the responder's first request opens its own at 0.
    pair.initiator.liveness_check(pair.now)
    pair.transfer()
    pair.responder.liveness_check(pair.now)
    pair.transfer()
    assert _ids(pair.sent_i, responses=False)[-1] == (ExchangeType.INFORMATIONAL, 2)
    assert _ids(pair.sent_r, responses=False) == [(ExchangeType.INFORMATIONAL, 0)]
    assert _ids(pair.sent_i, responses=True) == [(ExchangeType.INFORMATIONAL, 0)]


def test_ike_auth_with_message_id_0_is_not_accepted() -> None:
    """A responder expecting 1 must not take a request numbered 0 as the IKE_AUTH."""
    pair = make_pair()
    pair.initiator.initiate(pair.now, None)

    def renumber(data: bytes, who: str) -> bool:
        if who == "i" and data[18] == ExchangeType.IKE_AUTH:
            forged = data[:20] + struct.pack("!I", 0) + data[24:]
            pair.responder.receive_datagram(forged, ("192.0.2.1", 500), pair.now)
            return True
        return False

    pair.transfer(drop=renumber)
    assert not pair.events("r", IkeSaEstablished)

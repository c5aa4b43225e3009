"""A cached answer goes out again only for a byte-identical copy of the request it answered.

The forged "retransmission" of issue 10 item 15: a 28-byte header with the live SPIs and the message ID of
an answered request, no payload, no ICV. Taking it for a retransmission would make the responder resend
its cached IKE_AUTH (or any cached) answer to whoever sends such headers; only a copy of the peer's own
bytes may bring the answer back (strongSwan compares a hash of the whole message).
"""

from __future__ import annotations

import struct

from ikegate.ike.v1.registry import ExchangeType as V1Exchange
from ikegate.ike.wire.registry import ExchangeType
from tests.protocol import harness, harness_v1

_FLAG_R = 0x20


def _header_only(request: bytes) -> bytes:
    """The request's IKE header alone: same SPIs, exchange, flags and message ID; no payload; length 28."""
    return request[:16] + b"\x00" + request[17:24] + struct.pack("!I", 28)


def _tampered(request: bytes) -> bytes:
    """The request with its last byte (inside the ICV or the last encrypted block) changed."""
    return request[:-1] + bytes([request[-1] ^ 0x01])


def _requests(sent: list[bytes], exchange: int) -> list[bytes]:
    return [d for d in sent if len(d) >= 28 and d[18] == exchange and not d[19] & _FLAG_R]


def _responses(sent: list[bytes], exchange: int) -> list[bytes]:
    return [d for d in sent if len(d) >= 28 and d[18] == exchange and d[19] & _FLAG_R]


def test_v2_forged_header_does_not_bring_back_the_cached_ike_auth_answer() -> None:
    pair = harness.establish(harness.make_pair())
    r = pair.responder
    (auth,) = _requests(pair.sent_i, ExchangeType.IKE_AUTH)
    (answer,) = _responses(pair.sent_r, ExchangeType.IKE_AUTH)
    dropped = r.stats.dropped
    for forged in (_header_only(auth), _tampered(auth), auth + b"\x00"):
        r.receive_datagram(forged, harness.I_ADDR, pair.now)
        assert r.datagrams_to_send() == []
    assert r.stats.dropped == dropped + 3 and r.established
    # the initiator's own bytes again (its answer was lost): the very same answer
    r.receive_datagram(auth, harness.I_ADDR, pair.now)
    assert [d for d, _, _ in r.datagrams_to_send()] == [answer]


def test_v2_informational_retransmission_answered_forgery_not() -> None:
    pair = harness.establish(harness.make_pair())
    pair.initiator.liveness_check(pair.now)
    pair.transfer()
    (info,) = _requests(pair.sent_i, ExchangeType.INFORMATIONAL)
    (answer,) = _responses(pair.sent_r, ExchangeType.INFORMATIONAL)
    r = pair.responder
    r.receive_datagram(_header_only(info), harness.I_ADDR, pair.now)
    assert r.datagrams_to_send() == []
    r.receive_datagram(info, harness.I_ADDR, pair.now)
    assert [d for d, _, _ in r.datagrams_to_send()] == [answer]
    # and the exchange after it still works: the forgery moved no message ID
    pair.initiator.liveness_check(pair.now)
    pair.transfer()
    assert len(_responses(pair.sent_r, ExchangeType.INFORMATIONAL)) == 2 and pair.initiator.established


def test_v1_forged_duplicate_of_mm5_is_not_answered_with_mm6() -> None:
    pair = harness_v1.establish(harness_v1.make_pair())
    r = pair.responder
    mm5 = [d for d in pair.sent_i if d[18] == V1Exchange.ID_PROT][2]
    mm6 = [d for d in pair.sent_r if d[18] == V1Exchange.ID_PROT][2]
    duplicates = r.stats.duplicates
    for forged in (_header_only(mm5), _tampered(mm5)):
        r.receive_datagram(forged, harness_v1.I_ADDR, pair.now)
        assert r.datagrams_to_send() == []
    assert r.stats.duplicates == duplicates and r.established
    r.receive_datagram(mm5, harness_v1.I_ADDR, pair.now)
    assert [d for d, _, _ in r.datagrams_to_send()] == [mm6]
    assert r.stats.duplicates == duplicates + 1


def test_v1_forged_duplicate_of_quick_mode_1_is_not_answered() -> None:
    pair = harness_v1.make_pair()
    pair.initiator.initiate(pair.now, harness_v1.child())
    # QM3 lost: the responder still holds QM2 for a duplicate QM1
    pair.transfer(lambda d, who: who == "i" and d[18] == V1Exchange.QUICK
                  and len([x for x in pair.sent_i if x[18] == V1Exchange.QUICK]) == 2)
    r = pair.responder
    children = len(r.children)
    qm1 = next(d for d in pair.sent_i if d[18] == V1Exchange.QUICK)
    qm2 = next(d for d in pair.sent_r if d[18] == V1Exchange.QUICK)
    for forged in (_header_only(qm1), _tampered(qm1)):
        r.receive_datagram(forged, harness_v1.I_ADDR, pair.now)
        assert r.datagrams_to_send() == []
    r.receive_datagram(qm1, harness_v1.I_ADDR, pair.now)
    assert [d for d, _, _ in r.datagrams_to_send()] == [qm2]
    assert len(r.children) == children  # nothing negotiated twice

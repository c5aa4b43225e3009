"""Message IDs as RFC 7296 §2.2 numbers them: found against strongSwan, which ignored our IKE_AUTH.

IKE_SA_INIT is request 0 of the initiator's window, so IKE_AUTH must be request 1 ("received message ID
0, expected 1, ignored" was strongSwan's answer when ikegate sent it as 0). Two ikegates agreed with each
other on the wrong number, so only a check of the wire values catches it.
"""

from __future__ import annotations

import struct

from ikegate.ike.events import IkeSaEstablished, IkeSaRekeyed
from ikegate.ike.v2.sa import State
from ikegate.ike.wire.registry import ExchangeType
from tests.protocol.harness import establish, ike, make_pair

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


def _on_sa(sent: list[bytes], spi_i: bytes, spi_r: bytes, *, responses: bool) -> list[tuple[int, int]]:
    """(exchange, message ID) of the requests (or responses) in ``sent`` that travel on one IKE SA."""
    return _ids([d for d in sent if d[:8] == spi_i and d[8:16] == spi_r], responses=responses)


def _rekey_then_talk(rekeyer: str) -> None:
    """``rekeyer`` rekeys the IKE SA; then both ends send requests on the new SA (RFC 7296 §2.18: the
    new SA's counters start at 0 in both windows, whoever initiated the rekey or the original SA)."""
    pair = establish(make_pair(i_cfg=ike(dpd_interval=0.0), r_cfg=ike(local_id="198.51.100.1")))
    a, b = (pair.initiator, pair.responder) if rekeyer == "i" else (pair.responder, pair.initiator)
    sent_a, sent_b = (pair.sent_i, pair.sent_r) if rekeyer == "i" else (pair.sent_r, pair.sent_i)
    a.rekey_ike(pair.now)
    pair.transfer()
    assert pair.events("i", IkeSaRekeyed) and pair.events("r", IkeSaRekeyed)
    spis = (a.spi_i, a.spi_r)
    assert spis == (b.spi_i, b.spi_r) and a.is_initiator and not b.is_initiator
    before_a, before_b = len(sent_a), len(sent_b)
    # The rekeyer (initiator of the new SA) sends DPD, a Child SA rekey (and the Delete of the replaced
    # pair that follows it), and a Child SA Delete; the other end a DPD of its own in between.
    a.liveness_check(pair.now)
    pair.transfer()
    (first,) = a.children.values()
    a.rekey_child(first, pair.now)
    pair.transfer()
    b.liveness_check(pair.now)
    pair.transfer()
    (second,) = a.children.values()
    assert second is not first
    a.delete_child(second, pair.now)
    pair.transfer()
    assert not a.children and not b.children
    ex = ExchangeType
    got_a = _on_sa(sent_a[before_a:], *spis, responses=False)
    # The rekey's Delete of the old SA went on the old SPIs, so the first request here is the DPD.
    assert got_a == [(ex.INFORMATIONAL, 0), (ex.CREATE_CHILD_SA, 1), (ex.INFORMATIONAL, 2),
                     (ex.INFORMATIONAL, 3)]
    assert _on_sa(sent_b[before_b:], *spis, responses=True) == got_a  # every request answered, same IDs
    assert _on_sa(sent_b[before_b:], *spis, responses=False) == [(ex.INFORMATIONAL, 0)]
    assert _on_sa(sent_a[before_a:], *spis, responses=True) == [(ex.INFORMATIONAL, 0)]
    assert a.state is State.ESTABLISHED and b.state is State.ESTABLISHED
    # A second rekey, by the other end this time, starts at 0 again.
    b.rekey_ike(pair.now)
    pair.transfer()
    spis2 = (b.spi_i, b.spi_r)
    assert spis2 != spis and spis2 == (a.spi_i, a.spi_r)
    mark_a, mark_b = len(sent_a), len(sent_b)
    a.liveness_check(pair.now)
    pair.transfer()
    b.liveness_check(pair.now)
    pair.transfer()
    assert _on_sa(sent_a[mark_a:], *spis2, responses=False) == [(ex.INFORMATIONAL, 0)]
    assert _on_sa(sent_b[mark_b:], *spis2, responses=False) == [(ex.INFORMATIONAL, 0)]
    assert _on_sa(sent_a[mark_a:], *spis2, responses=True) == [(ex.INFORMATIONAL, 0)]
    assert _on_sa(sent_b[mark_b:], *spis2, responses=True) == [(ex.INFORMATIONAL, 0)]


def test_message_ids_restart_at_0_after_ike_rekey_by_original_initiator() -> None:
    _rekey_then_talk("i")


def test_message_ids_restart_at_0_after_ike_rekey_by_original_responder() -> None:
    _rekey_then_talk("r")


def test_rekey_request_on_new_sa_numbered_1_is_not_accepted() -> None:
    """The peer of a rekey expects 0 on the new SA: a first request numbered 1 (the old bug) is dropped."""
    pair = establish(make_pair())
    pair.initiator.rekey_ike(pair.now)
    pair.transfer()
    pair.initiator.liveness_check(pair.now)
    (dpd, _, _), = pair.initiator.datagrams_to_send()
    assert struct.unpack_from("!I", dpd, 20)[0] == 0
    forged = dpd[:20] + struct.pack("!I", 1) + dpd[24:]
    dropped = pair.responder.stats.dropped
    pair.responder.receive_datagram(forged, ("192.0.2.1", 500), pair.now)
    assert pair.responder.stats.dropped == dropped + 1 and not pair.responder.datagrams_to_send()

"""Loss, retransmission, rekeys, deletes and liveness, stepping the clock by hand."""

from __future__ import annotations

import struct

from ikegate.ike.core.child import ChildState
from ikegate.ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    DeleteReason,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaRekeyed,
)
from ikegate.ike.v2.sa import State
from ikegate.ike.wire.registry import ExchangeType
from tests.protocol.harness import child, establish, ike, make_pair


def _exchange(data: bytes) -> int:
    return data[18]


def _is_response(data: bytes) -> bool:
    return bool(data[19] & 0x20)


def test_lost_init_request_is_retransmitted_with_backoff() -> None:
    pair = make_pair()
    pair.initiator.initiate(pair.now, child())
    dropped: list[float] = []

    def drop_first_two(data: bytes, who: str) -> bool:
        if who == "i" and _exchange(data) == ExchangeType.IKE_SA_INIT and len(dropped) < 2:
            dropped.append(pair.now)
            return True
        return False

    pair.transfer(drop_first_two)
    assert pair.initiator.get_timer() == 1.0
    pair.step(0.5, drop_first_two)
    assert pair.initiator.state is State.INIT_SENT
    pair.step(10, drop_first_two)
    assert pair.initiator.state is State.ESTABLISHED
    assert dropped == [0.0, 1.0]  # sent at 0, retransmitted at 1, then at 1 + 2 = 3 it got through
    assert pair.initiator.stats.retransmits == 2


def test_lost_auth_response_answered_from_cache() -> None:
    pair = make_pair()
    pair.initiator.initiate(pair.now, child())
    lost: list[bytes] = []

    def drop_auth_response(data: bytes, who: str) -> bool:
        if who == "r" and _exchange(data) == ExchangeType.IKE_AUTH and not lost:
            lost.append(data)
            return True
        return False

    pair.transfer(drop_auth_response)
    assert pair.responder.state is State.ESTABLISHED
    assert pair.initiator.state is State.AUTH_SENT
    pair.step(2, drop_auth_response)
    assert pair.initiator.state is State.ESTABLISHED
    # The responder answered the retransmission with the very same bytes, and established only once.
    auth_responses = [d for d in pair.sent_r if _exchange(d) == ExchangeType.IKE_AUTH]
    assert auth_responses[0] == auth_responses[1] == lost[0]
    assert len(pair.events("r", IkeSaEstablished)) == 1
    assert len(pair.events("r", ChildSaEstablished)) == 1


def test_peer_silent_declares_sa_dead_after_retry_limit() -> None:
    pair = make_pair(i_cfg=ike(retransmit_tries=3))
    pair.initiator.initiate(pair.now, child())
    pair.transfer(lambda d, w: w == "i")
    pair.step(100, lambda d, w: w == "i")
    assert pair.initiator.finished
    sent = [d for d in pair.sent_i if _exchange(d) == ExchangeType.IKE_SA_INIT]
    assert len(sent) == 4  # first try + 3 retransmissions at 1, 3 and 7 s
    assert pair.events("i", IkeSaDeleted)


def test_duplicate_and_out_of_window_requests_are_dropped() -> None:
    pair = establish(make_pair())
    pair.initiator.liveness_check(pair.now)
    pair.transfer()
    request = [d for d in pair.sent_i if _exchange(d) == ExchangeType.INFORMATIONAL][-1]
    before = len(pair.sent_r)
    pair.responder.receive_datagram(request, ("192.0.2.1", 500), pair.now)
    resent = pair.responder.datagrams_to_send()
    assert len(resent) == 1 and resent[0][0] == pair.sent_r[before - 1]  # cached response again
    future = bytearray(request)
    future[20:24] = struct.pack("!I", 7)
    pair.responder.receive_datagram(bytes(future), ("192.0.2.1", 500), pair.now)
    assert pair.responder.datagrams_to_send() == []
    assert pair.responder.state is State.ESTABLISHED


def test_create_additional_child_with_pfs() -> None:
    from ikegate.ike.core.config import EspProposalSpec
    from tests.protocol.harness import ESP_GCM

    pfs = EspProposalSpec(ESP_GCM.encr, ESP_GCM.integ, (31,))
    r2 = child("10.2.1.0/24", "10.1.1.0/24", proposals=[pfs])
    pair = establish(make_pair(r_children=[child("10.2.0.0/24", "10.1.0.0/24"), r2]))
    pair.initiator.create_child(child("10.1.1.0/24", "10.2.1.0/24", proposals=[pfs]), pair.now)
    pair.transfer()
    ups = pair.events("i", ChildSaEstablished)
    assert len(ups) == 2 and ups[1].child.dh == 31
    assert len(pair.initiator.children) == 2 and len(pair.responder.children) == 2


def test_child_rekey_is_make_before_break() -> None:
    pair = establish(make_pair(), child(lifetime=100))
    old = pair.events("i", ChildSaEstablished)[0].child
    pair.step(99)
    ups = pair.events("i", ChildSaEstablished)
    assert len(ups) == 2 and ups[1].replaces is old
    downs = pair.events("i", ChildSaDeleted)
    assert [d.reason for d in downs] == [DeleteReason.REKEYED]
    assert old.spi_in not in pair.initiator.children
    assert len(pair.initiator.children) == 1 and len(pair.responder.children) == 1
    new = ups[1].child
    peer_new = pair.responder.children[new.spi_out]
    assert peer_new.encr_key_in == new.encr_key_out


def test_ike_rekey_moves_children_and_keeps_working() -> None:
    pair = establish(make_pair(i_cfg=ike(lifetime=1000)))
    old_spis = (pair.initiator.spi_i, pair.initiator.spi_r)
    pair.step(960)
    assert pair.events("i", IkeSaRekeyed) and pair.events("r", IkeSaRekeyed)
    assert (pair.initiator.spi_i, pair.initiator.spi_r) != old_spis
    assert pair.initiator.spi_i == pair.responder.spi_i and pair.initiator.spi_r == pair.responder.spi_r
    assert len(pair.initiator.children) == 1
    pair.initiator.liveness_check(pair.now)
    pair.transfer()
    assert pair.initiator.state is State.ESTABLISHED and pair.responder.state is State.ESTABLISHED
    assert pair.responder.local_spis == [pair.responder.spi_r]  # the old generation was deleted


def test_delete_ike_sa_tells_peer() -> None:
    pair = establish(make_pair())
    pair.initiator.delete(pair.now)
    pair.drain()
    assert pair.events("i", IkeSaDeleted)[0].reason is DeleteReason.MANUAL  # reported at once
    pair.transfer()
    assert pair.initiator.finished and pair.responder.finished
    assert pair.events("r", IkeSaDeleted)[0].reason is DeleteReason.PEER_REQUEST


def test_delete_child_tells_peer_and_keeps_ike_sa() -> None:
    pair = establish(make_pair())
    ch = pair.events("i", ChildSaEstablished)[0].child
    pair.initiator.delete_child(ch, pair.now)
    pair.transfer()
    assert pair.events("r", ChildSaDeleted)[0].reason is DeleteReason.PEER_REQUEST
    assert not pair.responder.children and not pair.initiator.children
    assert pair.initiator.state is State.ESTABLISHED and pair.responder.state is State.ESTABLISHED
    assert ch.state is ChildState.DELETING


def test_dpd_detects_dead_peer() -> None:
    pair = establish(make_pair(i_cfg=ike(dpd_interval=30.0, retransmit_tries=2)))
    pair.step(29)
    assert pair.initiator.state is State.ESTABLISHED
    pair.step(100, lambda d, w: True)  # the peer vanished
    downs = pair.events("i", IkeSaDeleted)
    assert downs and downs[0].reason is DeleteReason.DPD_TIMEOUT


def test_dpd_answered_keeps_sa() -> None:
    pair = establish(make_pair(i_cfg=ike(dpd_interval=30.0)))
    pair.step(200)
    assert pair.initiator.state is State.ESTABLISHED
    infos = [d for d in pair.sent_i if _exchange(d) == ExchangeType.INFORMATIONAL and not _is_response(d)]
    assert len(infos) >= 5


def test_hard_expiry_deletes_ike_sa() -> None:
    pair = establish(make_pair(i_cfg=ike(lifetime=1000, dpd_interval=None)))
    pair.step(1200, lambda d, w: w == "r" and _exchange(d) == ExchangeType.CREATE_CHILD_SA)
    downs = pair.events("i", IkeSaDeleted)
    assert downs and downs[0].reason in (DeleteReason.PHASE1_HARD_EXPIRY, DeleteReason.DPD_TIMEOUT)

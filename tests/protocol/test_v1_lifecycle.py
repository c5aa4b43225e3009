"""IKEv1 loss, retransmission, duplicates, deletes, DPD, the phase1-phase2 dependency and rekeys."""

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
    NegotiationFailed,
)
from ikegate.ike.v1.registry import ExchangeType, Flag
from ikegate.ike.v1.sa import DpdType, State, V1Options
from tests.protocol.harness_v1 import AGGRESSIVE, Pair, child, establish, ike, make_pair


def _ex(data: bytes) -> int:
    return data[18]


def _encrypted(data: bytes) -> bool:
    return bool(data[19] & Flag.ENCRYPTION)


def _nth(pair: Pair, who: str, exchange: int, index: int) -> bytes:
    sent = pair.sent_i if who == "i" else pair.sent_r
    return [d for d in sent if _ex(d) == exchange][index]


class DropOnce:
    """Drop the first datagram that matches, once."""

    def __init__(self, who: str, exchange: int, nth: int = 0, encrypted: bool | None = None) -> None:
        self.who, self.exchange, self.nth, self.encrypted = who, exchange, nth, encrypted
        self.seen = 0
        self.dropped: list[bytes] = []

    def __call__(self, data: bytes, who: str) -> bool:
        if self.dropped or who != self.who or _ex(data) != self.exchange:
            return False
        if self.encrypted is not None and _encrypted(data) != self.encrypted:
            return False
        self.seen += 1
        if self.seen - 1 == self.nth:
            self.dropped.append(data)
            return True
        return False


# ------------------------------------------------------------------------------------ loss in phase 1


def test_lost_mm1_is_retransmitted_with_backoff() -> None:
    pair = make_pair()
    pair.initiator.initiate(pair.now, child())
    drops: list[float] = []

    def drop_two(data: bytes, who: str) -> bool:
        if who == "i" and _ex(data) == ExchangeType.ID_PROT and len(drops) < 2:
            drops.append(pair.now)
            return True
        return False

    pair.transfer(drop_two)
    assert pair.initiator.get_timer() == 1.0
    pair.step(10, drop_two)
    assert pair.initiator.established and pair.responder.established
    assert drops == [0.0, 1.0]  # sent at 0, again at 1, then at 1 + 2 = 3 it got through
    assert pair.initiator.stats.retransmits == 2


def test_lost_mm2_answered_from_cache() -> None:
    pair = make_pair()
    pair.initiator.initiate(pair.now, child())
    drop = DropOnce("r", ExchangeType.ID_PROT, 0)
    pair.transfer(drop)
    assert drop.dropped and pair.responder.state is State.MM_SENT2
    pair.step(2, drop)
    assert pair.initiator.established
    mm2 = [d for d in pair.sent_r if _ex(d) == ExchangeType.ID_PROT][:2]
    assert mm2[0] == mm2[1] == drop.dropped[0]
    assert pair.responder.stats.duplicates == 1


def test_lost_last_main_mode_message() -> None:
    pair = make_pair()
    pair.initiator.initiate(pair.now, child())
    drop = DropOnce("r", ExchangeType.ID_PROT, 2)  # MM6
    pair.transfer(drop)
    assert drop.dropped and _encrypted(drop.dropped[0])
    assert pair.responder.established and pair.initiator.state is State.MM_SENT5
    pair.step(2, drop)
    assert pair.initiator.established
    assert len(pair.events("r", IkeSaEstablished)) == 1 and len(pair.events("i", IkeSaEstablished)) == 1
    mm6 = [d for d in pair.sent_r if _ex(d) == ExchangeType.ID_PROT][2:]
    assert mm6[0] == mm6[1]  # the very same bytes: the IV chain did not move for the duplicate MM5
    assert len(pair.events("i", ChildSaEstablished)) == 1 and len(pair.events("r", ChildSaEstablished)) == 1


def test_lost_mm5_retransmitted() -> None:
    pair = make_pair()
    pair.initiator.initiate(pair.now, child())
    drop = DropOnce("i", ExchangeType.ID_PROT, 2)
    pair.transfer(drop)
    pair.step(2, drop)
    assert pair.initiator.established and pair.responder.established


def test_lost_aggressive_mode_message_3() -> None:
    pair = make_pair(i_opts=AGGRESSIVE, r_opts=AGGRESSIVE)
    pair.initiator.initiate(pair.now, child())
    drop = DropOnce("i", ExchangeType.AGGRESSIVE, 1)  # AM3
    pair.transfer(drop)
    assert pair.initiator.established and pair.responder.state is State.AM_SENT2
    pair.step(5, drop)
    assert pair.responder.established
    am2 = [d for d in pair.sent_r if _ex(d) == ExchangeType.AGGRESSIVE]
    assert len(am2) == 2 and am2[0] == am2[1]  # the responder repeated AM2, the initiator resent AM3
    assert len(pair.events("i", ChildSaEstablished)) == 1 and len(pair.events("r", ChildSaEstablished)) == 1


def test_silent_peer_fails_negotiation() -> None:
    pair = make_pair(ike(retransmit_tries=3))
    pair.initiator.initiate(pair.now, child())
    pair.step(100, lambda d, w: w == "i")
    assert pair.initiator.finished
    sent = [d for d in pair.sent_i if _ex(d) == ExchangeType.ID_PROT]
    assert len(sent) == 4  # first try + 3 retransmissions at 1, 3 and 7 s
    (fail,) = pair.events("i", NegotiationFailed)
    assert fail.notify == 0 and not fail.child_only
    assert pair.events("i", IkeSaDeleted)[0].reason is DeleteReason.NEGOTIATION_FAILED


def test_half_open_responder_times_out() -> None:
    pair = make_pair()
    pair.initiator.initiate(pair.now, child())
    pair.transfer(lambda d, w: w == "i" and d[18] == 2 and d[8:16] != bytes(8))  # only MM1 gets through
    assert pair.responder.state is State.MM_SENT2
    pair.step(60, lambda d, w: True)
    assert pair.responder.finished and pair.events("r", NegotiationFailed)


# ------------------------------------------------------------------------------------ loss in phase 2


def test_lost_qm2_answered_from_cache() -> None:
    pair = make_pair()
    drop = DropOnce("r", ExchangeType.QUICK)
    pair.initiator.initiate(pair.now, child())
    pair.transfer(drop)
    assert drop.dropped and not pair.initiator.children
    pair.step(2, drop)
    assert len(pair.initiator.children) == 1 and len(pair.responder.children) == 1
    qm2 = [d for d in pair.sent_r if _ex(d) == ExchangeType.QUICK]
    assert qm2[0] == qm2[1]


def test_lost_qm3_responder_repeats_qm2() -> None:
    pair = make_pair()
    drop = DropOnce("i", ExchangeType.QUICK, 1)
    pair.initiator.initiate(pair.now, child())
    pair.transfer(drop)
    assert drop.dropped and len(pair.initiator.children) == 1 and not pair.responder.children
    pair.step(2, drop)
    assert len(pair.responder.children) == 1
    qm3 = [d for d in pair.sent_i if _ex(d) == ExchangeType.QUICK][1:]
    assert len(qm3) == 2 and qm3[0] == qm3[1]
    assert len(pair.events("i", ChildSaEstablished)) == 1 and len(pair.events("r", ChildSaEstablished)) == 1


def test_quick_mode_timeout_ends_the_isakmp_sa() -> None:
    """An unanswered Quick Mode means the peer lost the ISAKMP SA (or is gone): it ends, IPsec SAs too."""
    pair = establish(make_pair(ike(retransmit_tries=2)))
    pair.initiator.create_child(child("10.1.5.0/24", "10.2.5.0/24"), pair.now)
    pair.step(30, lambda d, w: w == "r")
    fails = pair.events("i", NegotiationFailed)
    assert fails and fails[-1].child_only and fails[-1].notify == 0
    assert not pair.initiator.established and pair.initiator.finished
    assert pair.events("i", IkeSaDeleted)[-1].reason is DeleteReason.DPD_TIMEOUT
    assert not pair.responder.established  # it was told (its answers were the ones lost)


def test_duplicates_and_replays() -> None:
    pair = make_pair()
    drop = DropOnce("i", ExchangeType.QUICK, 1)  # hold QM3 back so the responder still waits
    pair.initiator.initiate(pair.now, child())
    pair.transfer(drop)
    r = pair.responder
    mm3 = _nth(pair, "i", ExchangeType.ID_PROT, 1)
    r.receive_datagram(mm3, ("192.0.2.1", 500), pair.now)  # an old phase-1 message after establishment
    assert r.datagrams_to_send() == [] and r.established
    qm1 = _nth(pair, "i", ExchangeType.QUICK, 0)
    r.receive_datagram(qm1, ("192.0.2.1", 500), pair.now)  # QM1 again while waiting for QM3: QM2 again
    (resent, _l, _p), = r.datagrams_to_send()
    assert resent == _nth(pair, "r", ExchangeType.QUICK, 0)
    pair.step(2, drop)  # QM2 is repeated by the responder's timer, QM3 comes back
    assert len(r.children) == 1 and len(pair.events("r", ChildSaEstablished)) == 1
    r.receive_datagram(qm1, ("192.0.2.1", 500), pair.now)  # after QM3 a stale QM1 is ignored
    assert r.datagrams_to_send() == []
    qm3 = _nth(pair, "i", ExchangeType.QUICK, 1)
    r.receive_datagram(qm3, ("192.0.2.1", 500), pair.now)  # and a duplicate QM3 has no answer
    assert r.datagrams_to_send() == [] and len(r.children) == 1
    assert r.stats.duplicates >= 2


def test_garbage_never_raises_and_is_counted() -> None:
    pair = establish(make_pair())
    i, r = pair.initiator, pair.responder
    qm1 = bytearray(_nth(pair, "i", ExchangeType.QUICK, 0))
    qm1[20:24] = struct.pack("!I", 0x01020304)  # a new message ID: decrypts to garbage under another IV
    before = r.stats.dropped
    r.receive_datagram(bytes(qm1), ("192.0.2.1", 500), pair.now)
    r.receive_datagram(b"\x00" * 10, ("192.0.2.1", 500), pair.now)
    r.receive_datagram(bytes(qm1[:40]), ("192.0.2.1", 500), pair.now)
    assert r.stats.dropped >= before + 3 and r.established and i.established
    assert r.datagrams_to_send() == []


# ------------------------------------------------------------------------------------ deletes


def test_delete_esp_sa_from_initiator() -> None:
    pair = establish(make_pair())
    c = next(iter(pair.initiator.children.values()))
    pair.initiator.delete_child(c, pair.now)
    pair.transfer()
    (di,) = pair.events("i", ChildSaDeleted)
    (dr,) = pair.events("r", ChildSaDeleted)
    assert di.reason is DeleteReason.MANUAL and dr.reason is DeleteReason.PEER_REQUEST
    assert dr.child.spi_out == c.spi_in
    assert not pair.initiator.children and not pair.responder.children
    assert pair.initiator.established and pair.responder.established
    info = [d for d in pair.sent_i if _ex(d) == ExchangeType.INFORMATIONAL]
    assert len(info) == 1 and _encrypted(info[0])


def test_delete_esp_sa_from_responder() -> None:
    pair = establish(make_pair())
    c = next(iter(pair.responder.children.values()))
    pair.responder.delete_child(c, pair.now)
    pair.transfer()
    assert pair.events("i", ChildSaDeleted)[0].reason is DeleteReason.PEER_REQUEST
    assert not pair.initiator.children and pair.initiator.established


def _delete_order(pair: Pair, who: str) -> list[str]:
    """What the informational messages of one side said, decrypted with the receiver's view of events."""
    return [e.__class__.__name__ for e in (pair.r_events if who == "i" else pair.i_events)
            if isinstance(e, ChildSaDeleted | IkeSaDeleted)]


def test_local_delete_takes_children_and_tells_peer_esp_first() -> None:
    for who in ("i", "r"):
        pair = establish(make_pair())  # both ends without dependency (the USG default)
        local = pair.initiator if who == "i" else pair.responder
        remote = pair.responder if who == "i" else pair.initiator
        local.delete(pair.now)
        pair.transfer()
        assert local.finished and not local.orphans_survive
        assert remote.finished and not remote.children and not remote.orphans_survive
        events = pair.i_events if who == "i" else pair.r_events
        assert [e.reason for e in events if isinstance(e, ChildSaDeleted)] == [DeleteReason.MANUAL]
        assert [e.reason for e in events if isinstance(e, IkeSaDeleted)] == [DeleteReason.MANUAL]
        # Two informational messages: the ESP Delete first, the ISAKMP Delete second; the peer's events
        # show that order (its IPsec SA went before its ISAKMP SA).
        info = [d for d in (pair.sent_i if who == "i" else pair.sent_r) if _ex(d) == ExchangeType.INFORMATIONAL]
        assert len(info) == 2
        assert _delete_order(pair, who) == ["ChildSaDeleted", "IkeSaDeleted"]
        peer_events = pair.r_events if who == "i" else pair.i_events
        assert [e.reason for e in peer_events if isinstance(e, ChildSaDeleted)] == [DeleteReason.PEER_REQUEST]
        assert [e.reason for e in peer_events if isinstance(e, IkeSaDeleted)] == [DeleteReason.PEER_REQUEST]


def test_peer_deletes_only_isakmp_sa_without_dependency_leaves_orphans() -> None:
    # The responder's shorter phase-1 lifetime expires first; it has no dependency, so it deletes only
    # its ISAKMP SA and tells the peer just that.
    pair = make_pair(ike(lifetime=1000), ike(local_id="198.51.100.1", lifetime=500))
    establish(pair)
    pair.step(501)
    r, i = pair.responder, pair.initiator
    assert [e.reason for e in pair.events("r", IkeSaDeleted)] == [DeleteReason.PHASE1_HARD_EXPIRY]
    assert [e.reason for e in pair.events("i", IkeSaDeleted)] == [DeleteReason.PEER_REQUEST]
    assert not pair.events("r", ChildSaDeleted) and not pair.events("i", ChildSaDeleted)
    for sa in (r, i):
        assert sa.orphans_survive and not sa.finished and len(sa.children) == 1 and sa.state is State.DEAD
        assert next(iter(sa.children.values())).rekey_at is None
    # The orphans live until their own hard expiry; no Delete can be sent for them any more.
    sent_before = len(pair.sent_i) + len(pair.sent_r)
    pair.step(3600)
    assert [e.reason for e in pair.events("i", ChildSaDeleted)] == [DeleteReason.PHASE2_HARD_EXPIRY]
    assert [e.reason for e in pair.events("r", ChildSaDeleted)] == [DeleteReason.PHASE2_HARD_EXPIRY]
    assert i.finished and r.finished and not i.orphans_survive
    assert len(pair.sent_i) + len(pair.sent_r) == sent_before


def test_orphan_can_be_reset() -> None:
    pair = make_pair(ike(lifetime=1000), ike(local_id="198.51.100.1", lifetime=500))
    establish(pair)
    pair.step(501)
    i = pair.initiator
    i.delete(pair.now)  # reset ike sa on a dead ISAKMP SA: its orphans go
    pair.transfer()
    assert i.finished and pair.events("i", ChildSaDeleted)[-1].reason is DeleteReason.MANUAL


def test_dependency_on_both_ends() -> None:
    dep = V1Options(dependent=True)
    pair = make_pair(ike(lifetime=1000), ike(local_id="198.51.100.1", lifetime=500), i_opts=dep, r_opts=dep)
    establish(pair)
    pair.step(501)
    assert [e.reason for e in pair.events("r", ChildSaDeleted)] == [DeleteReason.PARENT_DELETED]
    # The expiring end took its IPsec SAs along and told the peer (ESP Delete, then ISAKMP Delete).
    assert [e.reason for e in pair.events("i", ChildSaDeleted)] == [DeleteReason.PEER_REQUEST]
    assert pair.initiator.finished and pair.responder.finished
    assert not pair.initiator.orphans_survive


def test_dependency_only_on_the_receiving_end() -> None:
    pair = make_pair(ike(lifetime=1000), ike(local_id="198.51.100.1", lifetime=500),
                     i_opts=V1Options(dependent=True))
    establish(pair)
    pair.step(501)
    assert pair.responder.orphans_survive  # no dependency there: its IPsec SA stays
    assert [e.reason for e in pair.events("i", ChildSaDeleted)] == [DeleteReason.PARENT_DELETED]
    assert [e.reason for e in pair.events("i", IkeSaDeleted)] == [DeleteReason.PEER_REQUEST]
    assert pair.initiator.finished


# ------------------------------------------------------------------------------------ DPD


def test_dpd_alive() -> None:
    periodic = V1Options(dpd_type=DpdType.PERIODIC)
    pair = establish(make_pair(i_opts=periodic))
    assert pair.initiator.peer_supports_dpd
    pair.step(95)
    assert pair.initiator.stats.dpd_sent == 3  # at 30, 60 and 90 s of silence, each answered
    assert pair.initiator.established and pair.responder.established
    assert pair.initiator.last_received >= 90


def test_dpd_dead_peer() -> None:
    periodic = V1Options(dpd_type=DpdType.PERIODIC, dpd_idle=30, dpd_retransmit=15, dpd_retries=3)
    pair = establish(make_pair(i_opts=periodic))
    pair.step(74.9, lambda d, w: w == "r")
    i = pair.initiator
    assert i.established and i.stats.dpd_sent == 3
    pair.step(0.1, lambda d, w: w == "r")
    (gone,) = pair.events("i", IkeSaDeleted)
    assert gone.reason is DeleteReason.DPD_TIMEOUT
    assert [e.reason for e in pair.events("i", ChildSaDeleted)] == [DeleteReason.DPD_TIMEOUT]
    assert i.finished and not i.orphans_survive
    # idle 30 s, then retry-limit R-U-THEREs 15 s apart (at 30, 45, 60) and death at 30 + 3 x 15 = 75.
    assert i.stats.dpd_sent == periodic.dpd_retries


def test_dpd_on_demand_probes_only_with_outbound_traffic() -> None:
    pair = establish(make_pair())  # the USG default: on-demand
    pair.step(120)
    assert pair.initiator.stats.dpd_sent == 0
    pair.initiator.note_outbound(pair.now)
    pair.step(40)
    assert pair.initiator.stats.dpd_sent == 1 and pair.initiator.established
    pair.initiator.note_inbound(pair.now)


def test_liveness_check_and_no_dpd_when_disabled() -> None:
    pair = establish(make_pair(i_opts=V1Options(dpd_type=DpdType.NONE)))
    pair.step(500)
    assert pair.initiator.stats.dpd_sent == 0
    pair.initiator.liveness_check(pair.now)
    pair.transfer()
    assert pair.initiator.stats.dpd_sent == 1 and pair.initiator.established


# ------------------------------------------------------------------------------------ rekey


def test_phase2_rekey_make_before_break() -> None:
    pair = establish(make_pair(), child(lifetime=100))
    old_i = next(iter(pair.initiator.children.values()))
    pair.step(95)
    ups_i = pair.events("i", ChildSaEstablished)
    ups_r = pair.events("r", ChildSaEstablished)
    assert len(ups_i) == 2 and ups_i[1].replaces is old_i
    assert len(ups_r) == 2 and ups_r[1].replaces is ups_r[0].child  # recognised by policy and selectors
    assert [e.reason for e in pair.events("i", ChildSaDeleted)] == [DeleteReason.REKEYED]
    assert [e.reason for e in pair.events("r", ChildSaDeleted)] == [DeleteReason.REKEYED]
    assert len(pair.initiator.children) == 1 and len(pair.responder.children) == 1
    new_i = next(iter(pair.initiator.children.values()))
    assert new_i.state is ChildState.INSTALLED and new_i.spi_in != old_i.spi_in
    pair.step(300)
    assert len(pair.events("i", ChildSaEstablished)) >= 4  # it keeps going
    assert not [e for e in pair.events("i", ChildSaDeleted) if e.reason is not DeleteReason.REKEYED]


def test_phase1_rekey_by_a_new_main_mode() -> None:
    pair = make_pair(ike(lifetime=100), ike(local_id="198.51.100.1", lifetime=200))
    establish(pair)
    old_spis = (pair.initiator.spi_i, pair.initiator.spi_r)
    child_before = next(iter(pair.initiator.children.values()))
    pair.step(95)
    i = pair.initiator
    (rekeyed,) = pair.events("i", IkeSaRekeyed)
    assert rekeyed.old_spis == old_spis and (i.spi_i, i.spi_r) != old_spis
    assert i.established and i.children == {child_before.spi_in: child_before}
    # The peer side saw a new Main Mode: a new responder object, which adopted the IPsec SA; the old one
    # then got the Delete for the old ISAKMP SA and went without taking anything along.
    assert len(pair.r.engines) == 2
    old_r, new_r = pair.r.engines
    assert new_r.established and len(new_r.children) == 1 and not old_r.children
    assert old_r.finished and [e.reason for e in pair.events("r", IkeSaDeleted)] == [DeleteReason.PEER_REQUEST]
    assert not pair.events("r", ChildSaDeleted) and not pair.events("i", ChildSaDeleted)
    # Quick modes run under the new ISAKMP SA.
    new_r.policy.children.append(child("10.2.7.0/24", "10.1.7.0/24"))  # type: ignore[union-attr]
    i.create_child(child("10.1.7.0/24", "10.2.7.0/24"), pair.now)
    pair.transfer()
    assert len(i.children) == 2 and len(new_r.children) == 2


def test_aggressive_mode_loss_of_am2() -> None:
    pair = make_pair(i_opts=AGGRESSIVE, r_opts=AGGRESSIVE)
    pair.initiator.initiate(pair.now, child())
    drop = DropOnce("r", ExchangeType.AGGRESSIVE, 0)
    pair.transfer(drop)
    pair.step(5, drop)
    assert pair.initiator.established and pair.responder.established


def test_commit_bit_from_peer_is_tolerated() -> None:
    pair = make_pair()

    def set_commit(data: bytes, who: str) -> bytes:
        if who == "i" and _ex(data) == ExchangeType.QUICK:
            return data[:19] + bytes([data[19] | Flag.COMMIT]) + data[20:]
        return data

    pair.mangle = set_commit
    establish(pair)
    assert len(pair.initiator.children) == 1 and len(pair.responder.children) == 1

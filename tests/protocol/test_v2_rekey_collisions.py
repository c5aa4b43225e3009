"""Simultaneous rekeys (RFC 7296 §2.8.1, §2.8.2): both exchanges complete and one SA survives, no gap.

Both ends rekeying the same Child SA (or the IKE SA) at once used to be answered with TEMPORARY_FAILURE on
both sides; then the hard limit came, with crossing Deletes and a fresh CREATE_CHILD_SA: a gap in traffic.
Each case runs with several random nonce draws, so each side wins the nonce comparison in some of them.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import pytest

from ikegate.dataplane.esp import ChildSaPair
from ikegate.gateway.controller import Gateway
from ikegate.ike.core.child import ChildSa, ChildState
from ikegate.ike.events import ChildSaDeleted, ChildSaEstablished, DeleteReason, IkeSaRekeyed, NegotiationFailed
from ikegate.ike.v2.protect import open_sk
from ikegate.ike.v2.sa import NONCE_SIZE, IkeSa, State
from ikegate.ike.wire.registry import ExchangeType, NotifyType
from ikegate.ike.wire.v2 import Notify, decode_message
from ikegate.sad import IkeSaEntry, IpsecSaEntry
from tests.protocol.harness import Pair, child, establish, make_pair
from tests.protocol.netsim import Net, lab_config
from tests.protocol.test_v2_message_ids import _on_sa

ROUNDS = range(8)


def _sending(sa: IkeSa) -> ChildSa:
    """The pair the dataplane sends on: the newest installed one (the SPD's newest SA wins)."""
    live = [c for c in sa.children.values() if c.state is not ChildState.DELETING]
    assert live, "no Child SA to send on"
    return live[-1]


def _transfer_checking(pair: Pair) -> None:
    """Move the IKE messages until quiet, with a ping each way between every two of them.

    Each end's link is a FIFO: a ping leaves on whatever pair that end sends on at that moment and is
    lost if, when it arrives, the other end no longer (or not yet) holds that inbound SPI.
    """
    links: dict[str, list[tuple[bytes, Any, Any] | int]] = {"i": [], "r": []}
    lost: list[int] = []
    pings = 0
    for _ in range(2000):
        for who, sa in (("i", pair.initiator), ("r", pair.responder)):
            for data, local, peer in sa.datagrams_to_send():
                links[who].append((data, local, peer))
                (pair.sent_i if who == "i" else pair.sent_r).append(data)
            links[who].append(_sending(sa).spi_out)
            pings += 1
        if all(isinstance(x, int) for q in links.values() for x in q):
            break
        for who, dst in (("i", pair.responder), ("r", pair.initiator)):
            item = links[who].pop(0)
            if isinstance(item, int):
                if item not in dst.children:
                    lost.append(item)
            else:
                data, local, peer = item
                dst.receive_datagram(data, local, pair.now, local=peer)
        pair.drain()
    else:
        raise AssertionError("endless exchange")
    for who, dst in (("i", pair.responder), ("r", pair.initiator)):
        lost += [spi for spi in links[who] if isinstance(spi, int) and spi not in dst.children]
    assert pings > 10 and not lost, f"{len(lost)} of {pings} pings lost"


def _answer_notifies(pair: Pair, gens: tuple[Any, Any] | None = None) -> list[list[int]]:
    """The Notify types of each CREATE_CHILD_SA answer sent on the IKE SA generation ``gens`` (the
    engines' current one by default), decrypted with the receiving end's keys."""
    gi, gr = gens or (pair.initiator._gen, pair.responder._gen)  # type: ignore[attr-defined]
    out = []
    for sent, reader in ((pair.sent_r, gi), (pair.sent_i, gr)):
        for data in sent:
            if len(data) < 28 or data[18] != ExchangeType.CREATE_CHILD_SA or not data[19] & 0x20:
                continue
            if data[:16] == reader.spi_i + reader.spi_r:
                payloads = open_sk(reader.inp, decode_message(data), data)
                out.append([p.notify_type for p in payloads if isinstance(p, Notify)])
    return out


def _no_failures(pair: Pair, gens: tuple[Any, Any] | None = None, answers: int | None = None) -> None:
    """No exchange failed, and no CREATE_CHILD_SA was answered with an error Notify (a TEMPORARY_FAILURE
    is retried quietly, so it is looked for in the decrypted answers)."""
    assert not pair.events("i", NegotiationFailed) and not pair.events("r", NegotiationFailed)
    notes = _answer_notifies(pair, gens)
    assert notes and not [n for ns in notes for n in ns if NotifyType.is_error(n)], notes
    assert answers is None or len(notes) == answers


def _one_pair_left(pair: Pair) -> ChildSa:
    (ci,) = pair.initiator.children.values()
    (cr,) = pair.responder.children.values()
    assert (ci.spi_in, ci.spi_out) == (cr.spi_out, cr.spi_in) and ci.encr_key_out == cr.encr_key_in
    return ci


@pytest.mark.parametrize("round_", ROUNDS)
def test_simultaneous_child_rekey_keeps_one_pair_and_traffic(round_: int) -> None:
    pair = establish(make_pair())
    first = _one_pair_left(pair)
    ri = pair.initiator.children[first.spi_in]
    rr = pair.responder.children[first.spi_out]
    # Both ends decide to rekey in the same step (as both soft limits firing on one packet did).
    pair.initiator.rekey_child(ri, pair.now)
    pair.responder.rekey_child(rr, pair.now)
    _transfer_checking(pair)
    _no_failures(pair, answers=2)
    survivor = _one_pair_left(pair)
    assert survivor.spi_in != first.spi_in and survivor.spi_out != first.spi_out
    # Each side made one new pair (two in all); one of them was redundant and deleted as a rekey.
    made = len(pair.events("i", ChildSaEstablished)) - 1
    assert made == 2 and len(pair.events("r", ChildSaEstablished)) - 1 == 2
    for who in ("i", "r"):
        downs = pair.events(who, ChildSaDeleted)
        assert len(downs) == 2 and all(d.reason in (DeleteReason.REKEYED, DeleteReason.PEER_REQUEST) for d in downs)
    # The survivor works for the next rekey too, by either end.
    pair.responder.rekey_child(pair.responder.children[survivor.spi_out], pair.now)
    _transfer_checking(pair)
    _no_failures(pair)
    assert _one_pair_left(pair).spi_in != survivor.spi_in


@pytest.mark.parametrize("round_", ROUNDS)
def test_simultaneous_child_rekey_by_time(round_: int) -> None:
    """Both rekey timers fire in the same step (equal lifetimes, an unlucky jitter), then the old pair's
    hard expiry passes: one pair, no failure, no second round of rekeys."""
    pair = establish(make_pair(), child(lifetime=100))
    ri = next(iter(pair.initiator.children.values()))
    rr = pair.responder.children[ri.spi_out]
    ri.rekey_at = rr.rekey_at = 80.0
    pair.step(79.0)
    assert _one_pair_left(pair) is ri
    pair.now = 80.0
    pair.initiator.handle_timer(pair.now)
    pair.responder.handle_timer(pair.now)
    _transfer_checking(pair)
    _no_failures(pair, answers=2)
    survivor = _one_pair_left(pair)
    assert survivor.spi_in not in (ri.spi_in, rr.spi_in)
    assert ri.spi_in not in pair.initiator.children and rr.spi_in not in pair.responder.children
    pair.step(25.0)  # past the old pair's hard expiry (100 s): nothing left to expire, nothing rekeyed
    assert _one_pair_left(pair) is survivor
    _no_failures(pair)


@pytest.mark.parametrize("round_", ROUNDS)
def test_simultaneous_ike_rekey_keeps_one_ike_sa(round_: int) -> None:
    pair = establish(make_pair())
    old = (pair.initiator.spi_i, pair.initiator.spi_r)
    gens = (pair.initiator._gen, pair.responder._gen)  # type: ignore[attr-defined]
    pair.initiator.rekey_ike(pair.now)
    pair.responder.rekey_ike(pair.now)
    _transfer_checking(pair)
    _no_failures(pair, gens, answers=2)  # both rekeys were answered as usual
    i, r = pair.initiator, pair.responder
    assert (i.spi_i, i.spi_r) == (r.spi_i, r.spi_r) != old
    assert len(i.local_spis) == 1 and len(r.local_spis) == 1  # the old and the redundant SA are deleted
    assert pair.events("i", IkeSaRekeyed) and pair.events("r", IkeSaRekeyed)
    assert i.state is State.ESTABLISHED and r.state is State.ESTABLISHED
    # The surviving SA works: requests both ways from message ID 0, a Child SA rekey keyed from its SK_d.
    mark_i, mark_r = len(pair.sent_i), len(pair.sent_r)
    i.liveness_check(pair.now)
    pair.transfer()
    r.liveness_check(pair.now)
    pair.transfer()
    spis = (i.spi_i, i.spi_r)
    assert _on_sa(pair.sent_i[mark_i:], *spis, responses=False)[0][1] == 0
    assert _on_sa(pair.sent_r[mark_r:], *spis, responses=False)[0][1] == 0
    ci = _one_pair_left(pair)
    i.rekey_child(ci, pair.now)
    _transfer_checking(pair)
    _no_failures(pair)
    assert _one_pair_left(pair).spi_in != ci.spi_in


def test_child_rekey_while_ike_rekey_under_way_is_temporary_failure() -> None:
    """§2.25.2: Child SA work during our IKE SA rekey is refused with TEMPORARY_FAILURE (and retried)."""
    pair = establish(make_pair())
    ci = _one_pair_left(pair)
    gens = (pair.initiator._gen, pair.responder._gen)  # type: ignore[attr-defined]
    pair.initiator.rekey_ike(pair.now)
    ike_rekey = pair.initiator.datagrams_to_send()
    cr = pair.responder.children[ci.spi_out]
    pair.responder.rekey_child(cr, pair.now)
    pair.transfer()  # the responder's CREATE_CHILD_SA meets our IKE rekey in flight
    failed = pair.events("r", NegotiationFailed)
    assert not failed  # a TEMPORARY_FAILURE is not reported as a failure: the rekey is retried later
    assert cr.state is ChildState.INSTALLED and cr.rekey_at is not None
    for data, local, peer in ike_rekey:
        pair.responder.receive_datagram(data, local, pair.now, local=peer)
    pair.transfer()
    assert sorted(_answer_notifies(pair, gens)) == [[], [NotifyType.TEMPORARY_FAILURE]]  # the IKE rekey; refused
    pair.step(10.0)
    _no_failures(pair, answers=1)  # the retried Child SA rekey, on the new IKE SA
    assert pair.events("i", IkeSaRekeyed) and _one_pair_left(pair).spi_in != ci.spi_in


def test_byte_soft_limits_of_the_two_ends_differ() -> None:
    """Both ends count the same packets: their soft byte limits are offset by role and a random margin."""
    pair = establish(make_pair(), child())
    ci = _one_pair_left(pair)
    cr = pair.responder.children[ci.spi_out]
    for c in (ci, cr):
        c.config = dataclasses.replace(c.config, lifetime_kb=10000)
    soft_i = {ChildSaPair.from_child(ci).outbound._soft_at for _ in range(20)}
    soft_r = {ChildSaPair.from_child(cr).outbound._soft_at for _ in range(20)}
    assert len(soft_i) > 1 and len(soft_r) > 1  # randomised
    assert max(soft_i) < min(soft_r)  # the pair's initiator always goes first
    assert all(0.85 * 10000 * 1024 <= s <= 0.9 * 10000 * 1024 for s in soft_i)
    assert all(0.9 * 10000 * 1024 < s <= 0.95 * 10000 * 1024 for s in soft_r)


# ----------------------------------------------------------------------- whole gateways, real ESP

_KB = {name: (f" ike-peer {peer}\n proposal esp1\n",
              f" ike-peer {peer}\n proposal esp1\n sa duration traffic-based 256\n")
       for name, peer in (("hq", "branches"), ("branch1", "hq"))}


def _gateways() -> tuple[Net, Gateway, Gateway]:
    net = Net()
    hq = net.add(Gateway(lab_config("hq", dict([_KB["hq"]]))))
    b1 = net.add(Gateway(lab_config("branch1", dict([_KB["branch1"]]))))
    for gw in (hq, b1):
        gw.start(net.now)
    net.pump()
    return net, hq, b1


def _children(gw: Gateway) -> list[IpsecSaEntry]:
    return [e for e in gw.sad.entries() if isinstance(e, IpsecSaEntry)]


def _ping_through(net: Net, hq: Gateway, b1: Gateway, count: int, size: int = 1300,
                  until: Any = lambda: True) -> tuple[int, int]:
    """Rounds of: a ping each way, then every datagram already on the wire delivered in order (what they
    cause goes out in the next round), for ``count`` rounds and on until ``until()``, then until quiet.
    Returns (pings sent, replies received)."""
    got: list[tuple[int, int]] = []
    b1.on_echo_reply = lambda ident, seq, now: got.append((ident, seq))
    hq.on_echo_reply = lambda ident, seq, now: got.append((ident, seq))
    sent = 0
    for n in range(2000):
        if n < count or not until():
            b1.ping(net.now, "10.1.1.1", "10.0.0.1", 1, n, size)
            hq.ping(net.now, "10.0.0.1", "10.1.1.1", 2, n, size)
            sent += 2
        wire = b1.datagrams_to_send() + hq.datagrams_to_send()
        if not wire:
            return sent, len(got)
        for data, local, remote in wire:
            net.seen.append((data, local, remote))
            net.gateways[remote[0]].receive_datagram(data, remote, local, net.now)
    raise AssertionError("never quiet")


def _replaced(hq: Gateway, b1: Gateway, first: IpsecSaEntry) -> bool:
    """The rekey is over: one pair on each side, not the first one."""
    c1, ch = _children(b1), _children(hq)
    return len(c1) == 1 and len(ch) == 1 and c1[0].spi_in != first.spi_in


def _one_child_each(hq: Gateway, b1: Gateway) -> IpsecSaEntry:
    (c1,), (ch,) = _children(b1), _children(hq)
    assert (c1.spi_in, c1.spi_out) == (ch.spi_out, ch.spi_in)
    return c1


def test_byte_lifetime_rekey_through_gateways_loses_no_ping() -> None:
    net, hq, b1 = _gateways()
    first = _one_child_each(hq, b1)
    sent, answered = _ping_through(net, hq, b1, 60, until=lambda: _replaced(hq, b1, first))
    assert answered == sent  # past the soft limit (~230 KB of 256 KB each way), a rekey, nothing lost
    assert _one_child_each(hq, b1).spi_in != first.spi_in
    assert not hq.stats.negotiations_failed and not b1.stats.negotiations_failed
    assert not [r.reason for gw in (hq, b1) for r in gw.sad.offline.entries()]


@pytest.mark.parametrize("round_", range(4))
def test_byte_soft_limits_hit_by_the_same_packet_at_both_ends(round_: int) -> None:
    """Force what the role offset and random margin now prevent: both soft limits on one packet."""
    net, hq, b1 = _gateways()
    first = _one_child_each(hq, b1)
    out_b1 = b1.dataplane.sa(first.spi_in)
    in_hq = hq.dataplane.sa(first.spi_out)
    assert out_b1 is not None and in_hq is not None
    limit = 50 * 1024
    for esp in (out_b1.outbound, in_hq.inbound):  # b1's outbound and hq's inbound count the same packets
        esp._soft_at = limit  # type: ignore[attr-defined]
    sent, answered = _ping_through(net, hq, b1, 80, until=lambda: _replaced(hq, b1, first))
    assert out_b1.outbound.soft_expired and in_hq.inbound.soft_expired
    assert answered == sent
    survivor = _one_child_each(hq, b1)
    assert survivor.spi_in != first.spi_in
    assert not hq.stats.negotiations_failed and not b1.stats.negotiations_failed
    # Both ends started a rekey (two CREATE_CHILD_SA requests), and no third one followed a refusal.
    ike = [d if dst[1] == 500 else d[4:] for d, src, dst in net.seen if dst[1] == 500 or d[:4] == bytes(4)]
    requests = [d for d in ike if len(d) >= 28 and d[18] == ExchangeType.CREATE_CHILD_SA and not d[19] & 0x20]
    assert len(requests) == 2, len(requests)
    # Every pair that went away was a rekey's: nothing is recorded as a lost tunnel.
    assert not [r.reason for gw in (hq, b1) for r in gw.sad.offline.entries()]


# ----------------------------------------------------------------- who wins: the nonces decide

def _nonces_from(sa: IkeSa, *firsts: int) -> None:
    """The nonces ``sa`` draws from now on start with the octets ``firsts`` in turn (the last one then
    for good); the rest of each nonce stays random."""
    left = list(firsts)

    def rng(n: int) -> bytes:
        if n != NONCE_SIZE:
            return os.urandom(n)
        octet = left.pop(0) if len(left) > 1 else left[0]
        return bytes([octet]) + os.urandom(n - 1)

    sa._rng = rng  # type: ignore[attr-defined]


def _lowest_in_exchange_of(pair: Pair, low: str) -> None:
    """Nonces such that the lowest of the four is the one ``low`` sends as the initiator of its rekey
    (its first draw); its answer to the other end's rekey draws a middling one, the other end high ones."""
    lo, hi = (pair.initiator, pair.responder) if low == "i" else (pair.responder, pair.initiator)
    _nonces_from(lo, 0x00, 0x80)
    _nonces_from(hi, 0xFF)


@pytest.mark.parametrize("low", ["i", "r"])
def test_child_collision_lowest_nonce_loses(low: str) -> None:
    """§2.8.1: the exchange holding the lowest of the four nonces made the redundant pair; the survivor
    is the pair the other end initiated."""
    pair = establish(make_pair())
    _lowest_in_exchange_of(pair, low)
    first = _one_pair_left(pair)
    pair.initiator.rekey_child(first, pair.now)
    pair.responder.rekey_child(pair.responder.children[first.spi_out], pair.now)
    _transfer_checking(pair)
    _no_failures(pair, answers=2)
    survivor = _one_pair_left(pair)
    winner = pair.responder if low == "i" else pair.initiator
    assert winner.children[survivor.spi_in if winner is pair.initiator else survivor.spi_out].initiator
    # Each end deleted what RFC 7296 gives it: the loser its redundant pair, the winner the old one.
    for who in ("i", "r"):
        downs = pair.events(who, ChildSaDeleted)
        assert len(downs) == 2 and all(d.reason is DeleteReason.REKEYED for d in downs)


@pytest.mark.parametrize("low", ["i", "r"])
def test_ike_collision_lowest_nonce_loses(low: str) -> None:
    pair = establish(make_pair())
    _lowest_in_exchange_of(pair, low)
    pair.initiator.rekey_ike(pair.now)
    pair.responder.rekey_ike(pair.now)
    _transfer_checking(pair)
    i, r = pair.initiator, pair.responder
    assert (i.spi_i, i.spi_r) == (r.spi_i, r.spi_r)
    assert len(i.local_spis) == 1 and len(r.local_spis) == 1
    # The surviving IKE SA is the one the end with the higher nonces initiated.
    assert i.is_initiator is (low == "r") and r.is_initiator is (low == "i")
    i.liveness_check(pair.now)
    r.liveness_check(pair.now)
    pair.transfer()
    assert i.state is State.ESTABLISHED and r.state is State.ESTABLISHED
    assert not pair.events("i", NegotiationFailed) and not pair.events("r", NegotiationFailed)


def test_rekey_of_a_pair_being_deleted_is_temporary_failure() -> None:
    """§2.25.1: a rekey request for a pair whose Delete is on its way gets TEMPORARY_FAILURE (not
    CHILD_SA_NOT_FOUND); the rekeyer waits, the Delete removes the pair, nothing is re-created."""
    pair = establish(make_pair())
    ci = _one_pair_left(pair)
    cr = pair.responder.children[ci.spi_out]
    pair.initiator.delete_child(ci, pair.now)
    pair.responder.rekey_child(cr, pair.now)
    pair.transfer()
    assert _answer_notifies(pair) == [[NotifyType.TEMPORARY_FAILURE]]
    assert not pair.initiator.children and not pair.responder.children
    pair.step(30.0)
    assert not pair.initiator.children and not pair.responder.children
    assert not pair.events("i", NegotiationFailed) and not pair.events("r", NegotiationFailed)
    assert pair.initiator.state is State.ESTABLISHED and pair.responder.state is State.ESTABLISHED


#: The same lab over IKEv1 (Main Mode, MODP-2048, AES-CBC + SHA-256 for phase 1 and ESP).
_V1 = {" encryption-algorithm aes-gcm-256\n dh group31\n prf hmac-sha2-256\n":
       " encryption-algorithm aes-256\n authentication-algorithm sha2-256\n dh group14\n",
       " ike-proposal 10\n": " ike-proposal 10\n undo version 2\n exchange-mode main\n",
       " esp encryption-algorithm aes-gcm-256\n":
       " esp encryption-algorithm aes-256\n esp authentication-algorithm sha2-256\n"}


def test_v1_quick_mode_rekey_by_bytes_loses_no_ping_and_the_old_pair_goes_after_the_overlap() -> None:
    """IKEv1 make-before-break: the Quick Mode initiator switches at QM2, the responder at QM3; what the
    responder sent under the old pair in between must still be received, so the old pair's inbound side
    lives on for REKEY_OVERLAP and is deleted (with a Delete to the peer) only then."""
    from ikegate.ike.v1.quick import REKEY_OVERLAP

    net = Net()
    hq = net.add(Gateway(lab_config("hq", {**dict([_KB["hq"]]), **_V1})))
    b1 = net.add(Gateway(lab_config("branch1", {**dict([_KB["branch1"]]), **_V1})))
    for gw in (hq, b1):
        gw.start(net.now)
    net.pump()
    assert {e.version for gw in (hq, b1) for e in gw.sad.entries() if isinstance(e, IkeSaEntry)} == {1}
    first = _one_child_each(hq, b1)
    out_b1 = b1.dataplane.sa(first.spi_in)
    assert out_b1 is not None
    out_b1.outbound._soft_at = 50 * 1024  # type: ignore[attr-defined]  # Branch1 rekeys first, as it would
    sent, answered = _ping_through(net, hq, b1, 80)
    assert answered == sent  # nothing lost across the rekey (4 of 240 were lost when QM2 retired the pair)
    assert {c.spi_in for c in _children(b1)} >= {first.spi_in}  # the old pair still receives, for now
    net.step(REKEY_OVERLAP + 1)
    survivor = _one_child_each(hq, b1)
    assert survivor.spi_in != first.spi_in
    assert not hq.stats.negotiations_failed and not b1.stats.negotiations_failed
    assert not [r.reason for gw in (hq, b1) for r in gw.sad.offline.entries()]  # a rekey is no teardown

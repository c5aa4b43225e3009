"""The IKEv1 FRAGMENTATION extension wired into Main Mode, in memory: certificate chains make MM5 and MM6
larger than the fragment size, so they travel in fragments; lost, reordered and duplicated fragments
still make the message; bogus fragments are counted and dropped without touching the negotiation."""

from __future__ import annotations

from collections.abc import Callable

from ikegate.ike.events import IkeSaEstablished
from ikegate.ike.fragments import FragmentationConfig, FragmentLimits, message_budget
from ikegate.ike.v1.registry import VID_FRAGMENTATION, ExchangeType, PayloadType
from ikegate.ike.v1.sa import IsakmpSa, V1Options
from ikegate.ike.v1.wire import Fragment, Header, VendorId, decode_message, encode_message
from tests.protocol.harness_v1 import I_ADDR, R_ADDR, Pair, Side, child
from tests.protocol.test_v1_certs import I_RSA, R_RSA, Policy, cert_ike, pair_with, run

BUDGET = message_budget(1280, 4, natt=False)


def _cert_pair(i_opts: V1Options | None = None, r_opts: V1Options | None = None) -> Pair:
    pair = pair_with(cert_ike(I_RSA, I_ADDR[0]), [cert_ike(R_RSA, R_ADDR[0])])
    if i_opts is not None:
        pair.i.engines[0] = IsakmpSa(cert_ike(I_RSA, I_ADDR[0]), initiator=True, local=I_ADDR, peer=R_ADDR,
                                     now=0.0, v1=i_opts)
    if r_opts is not None:
        policy = Policy([cert_ike(R_RSA, R_ADDR[0])])

        def r_factory(local: tuple[str, int], remote: tuple[str, int], t: float) -> IsakmpSa:
            return IsakmpSa(None, initiator=False, local=local, peer=remote, now=t, policy=policy, v1=r_opts)

        pair.r = Side("r", [], r_factory)
    return pair


def _is_fragment(d: bytes) -> bool:
    return d[16] == PayloadType.FRAGMENT


def _holding(held: list[bytes]) -> Callable[[bytes, str], bool]:
    """A drop rule for ``Pair.transfer`` that keeps the initiator's fragments in ``held`` instead."""
    def hold(data: bytes, who: str) -> bool:
        if who == "i" and _is_fragment(data):
            held.append(data)
            return True
        return False
    return hold


def _fragment_number(d: bytes) -> int:
    return d[28 + 6]


def test_mm5_and_mm6_travel_in_fragments() -> None:
    pair = run(_cert_pair())
    assert pair.events("i", IkeSaEstablished) and pair.events("r", IkeSaEstablished)
    for sent in (pair.sent_i, pair.sent_r):
        frags = [d for d in sent if _is_fragment(d)]
        assert len(frags) >= 2 and all(len(d) <= BUDGET for d in frags)
        assert all(decode_message(d).header.exchange == ExchangeType.ID_PROT for d in frags)
        assert all(len(d) <= BUDGET for d in sent)
    # Both ends announced it: MM1 and MM2 carry the Vendor ID with the Main/Aggressive capability.
    for first in (pair.sent_i[0], pair.sent_r[0]):
        vids = [p.data for p in decode_message(first).payloads if isinstance(p, VendorId)]
        assert VID_FRAGMENTATION + bytes.fromhex("80000000") in vids
    assert pair.responder._p1.frags is not None and pair.responder._p1.frags.stats.reassembled == 1


def test_not_announced_not_fragmented() -> None:
    """A peer with fragmentation off: the responder does not announce it back and nobody fragments (the
    large MM5 goes whole, left to IP fragmentation)."""
    off = V1Options(fragmentation=FragmentationConfig(enabled=False))
    pair = run(_cert_pair(i_opts=off))
    assert pair.events("r", IkeSaEstablished)
    assert not any(_is_fragment(d) for d in pair.sent_i + pair.sent_r)
    mm2 = decode_message(pair.sent_r[0])
    assert not any(isinstance(p, VendorId) and p.data[:16] == VID_FRAGMENTATION for p in mm2.payloads)
    assert max(len(d) for d in pair.sent_i) > BUDGET


def test_lost_fragment_recovered_by_retransmission() -> None:
    pair = _cert_pair()
    dropped: list[bytes] = []

    def drop(data: bytes, who: str) -> bool:
        if who == "i" and _is_fragment(data) and _fragment_number(data) == 2 and not dropped:
            dropped.append(data)
            return True
        return False

    pair.initiator.initiate(pair.now, child())
    pair.step(10.0, drop)
    assert dropped and pair.events("i", IkeSaEstablished) and pair.events("r", IkeSaEstablished)
    assert pair.initiator.stats.retransmits >= 1


def test_reordered_and_duplicated_fragments() -> None:
    pair = _cert_pair()
    held: list[bytes] = []
    hold = _holding(held)
    pair.initiator.initiate(pair.now, child())
    pair.transfer(hold)
    assert len(held) >= 2 and not pair.events("r", IkeSaEstablished)
    responder = pair.responder
    for data in [held[-1], *reversed(held), held[0]]:  # last first, every one twice or more
        responder.receive_datagram(data, R_ADDR, pair.now, local=I_ADDR)
    pair.transfer()
    assert pair.events("r", IkeSaEstablished) and pair.events("i", IkeSaEstablished)
    frags = responder._p1.frags
    assert frags is not None and frags.stats.reassembled == 1 and frags.stats.duplicate + frags.stats.late >= 1


def test_bogus_fragments_counted_dropped_and_bounded() -> None:
    """Forged fragments with the SA's cookies (anyone on the path knows them): every kind is dropped and
    counted, the memory held stays under the limit, and the real negotiation completes."""
    limits = FragmentLimits(max_fragments=16, max_held=8 * 1024)
    opts = V1Options(fragmentation=FragmentationConfig(limits=limits))
    pair = _cert_pair(r_opts=opts)
    held: list[bytes] = []
    hold = _holding(held)
    pair.initiator.initiate(pair.now, child())
    pair.transfer(hold)
    responder = pair.responder
    h = decode_message(held[0]).header

    def forged(fragment_id: int, number: int, last: bool, data: bytes) -> bytes:
        return encode_message(Header(h.cky_i, h.cky_r, 0, ExchangeType.ID_PROT, 0, 0),
                              [Fragment(fragment_id, number, last, data)])

    junk = [forged(7, 0, False, b"x" * 100),  # number 0
            forged(7, 200, False, b"x" * 100),  # beyond max_fragments
            forged(8, 2, True, b"x" * 100), forged(8, 5, False, b"x"),  # beyond the last
            *[forged(9 + i, 1, False, b"y" * 1000) for i in range(40)],  # many messages: eviction, bounded
            forged(60, 1, True, b"not an ISAKMP message of this SA")]  # completes to garbage
    before = responder.stats.dropped
    for data in junk:
        responder.receive_datagram(data, R_ADDR, pair.now, local=I_ADDR)
        frags = responder._p1.frags
        assert frags is not None and frags.held <= limits.max_held and frags.pending <= limits.max_pending
    frags = responder._p1.frags
    assert frags is not None
    assert frags.stats.malformed >= 3 and frags.stats.over_limit >= 1 and frags.stats.evicted >= 30
    assert responder.stats.dropped - before >= 4
    assert not pair.events("r", IkeSaEstablished)
    for data in held:  # the real MM5 still reassembles and authenticates
        responder.receive_datagram(data, R_ADDR, pair.now, local=I_ADDR)
    pair.transfer()
    assert pair.events("r", IkeSaEstablished) and pair.events("i", IkeSaEstablished)


def test_fragments_dropped_when_fragmentation_is_off() -> None:
    """A responder with fragmentation off keeps nothing of a fragment, even with the right cookies."""
    off = V1Options(fragmentation=FragmentationConfig(enabled=False))
    pair = _cert_pair(r_opts=off)
    pair.initiator.initiate(pair.now, child())
    pair.transfer()
    assert pair.events("r", IkeSaEstablished)  # unfragmented (the responder did not announce)
    responder = pair.responder
    piece = encode_message(Header(responder.spi_i, responder.spi_r, 0, ExchangeType.ID_PROT, 0, 0),
                           [Fragment(1, 1, False, b"z" * 500)])
    before = responder.stats.dropped
    responder.receive_datagram(piece, R_ADDR, pair.now, local=I_ADDR)
    assert responder.stats.dropped == before + 1 and responder._p1.frags is None


def test_unfinished_fragments_time_out_on_the_engine_timer() -> None:
    """A message whose last fragment never comes is discarded at the reassembly deadline, through the
    engine's own timer (nothing is held afterwards)."""
    limits = FragmentLimits(timeout=5.0)
    pair = _cert_pair(r_opts=V1Options(fragmentation=FragmentationConfig(limits=limits)))
    held: list[bytes] = []
    pair.initiator.initiate(pair.now, child())
    pair.transfer(_holding(held))
    responder = pair.responder
    responder.receive_datagram(held[0], R_ADDR, pair.now, local=I_ADDR)  # the first piece only
    frags = responder._p1.frags
    assert frags is not None and frags.pending == 1 and frags.held > 0
    timer = responder.get_timer()
    assert timer is not None and timer <= pair.now + limits.timeout
    responder.handle_timer(pair.now + limits.timeout)
    assert frags.pending == 0 and frags.held == 0 and frags.stats.timed_out == 1

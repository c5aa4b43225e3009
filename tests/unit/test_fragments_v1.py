"""IKEv1 fragmentation (the FRAGMENTATION vendor extension): a Main Mode message with certificates,
encrypted under phase-1 keys derived as the engine derives them, is split, shuffled, lost, duplicated,
reassembled and decrypted; hostile fragments are counted and never hold more than the bound."""

from __future__ import annotations

import hashlib
import os
import random

import pytest

from ikegate.ike.crypto import dh_group
from ikegate.ike.crypto.transforms import _TRIPLE_DES
from ikegate.ike.fragments import ENTRY_COST, FragmentLimits, message_budget
from ikegate.ike.v1.crypto import IvChain, Suite, derive_phase1, phase1_iv, skeyid_sig
from ikegate.ike.v1.fragments import Reassembler, fragment, peer_supports, vendor_id
from ikegate.ike.v1.registry import (
    VID_DPD,
    VID_FRAGMENTATION,
    ExchangeType,
    Flag,
    IdType,
    PayloadType,
    Phase1Encr,
    Phase1Hash,
    vendor_name,
)
from ikegate.ike.v1.wire import (
    HEADER_LEN,
    Cert,
    Fragment,
    Header,
    Identification,
    Payload,
    Signature,
    VendorId,
    decode_chain,
    decode_message,
    encode_header,
    encode_message,
    encode_payloads,
)

CKY_I, CKY_R = os.urandom(8), os.urandom(8)


class Phase1:
    """Both ends' phase-1 encryption after a real MODP-2048 exchange (signature authentication)."""

    def __init__(self, encryption: int = Phase1Encr.AES_CBC, bits: int | None = 256,
                 hash_id: int = Phase1Hash.SHA2_256) -> None:
        group = dh_group(14)
        a, b = group.generate(), group.generate()
        g_xy = a.shared(b.public)
        self.suite = Suite.from_attributes(encryption, bits, hash_id)
        ni, nr = os.urandom(32), os.urandom(32)
        keys = derive_phase1(self.suite.prf, skeyid_sig(self.suite.prf, ni, nr, g_xy), g_xy, CKY_I, CKY_R,
                             self.suite.encr.key_size)
        iv = phase1_iv(self.suite, a.public, b.public)
        self.sender = IvChain(self.suite.encr, keys.enc_key, iv)
        self.receiver = IvChain(self.suite.encr, keys.enc_key, iv)


def mm5(p1: Phase1, cert_bytes: int = 4000, exchange: int = ExchangeType.ID_PROT) -> tuple[bytes, list[Payload]]:
    """An encrypted MM5 with ID, two certificates and a signature: the datagram and its payloads."""
    payloads: list[Payload] = [
        Identification(IdType.ID_DER_ASN1_DN, os.urandom(80)),
        Cert(4, os.urandom(cert_bytes // 2)),
        Cert(4, os.urandom(cert_bytes - cert_bytes // 2)),
        Signature(os.urandom(384)),
    ]
    first, body = encode_payloads(payloads)
    ct = p1.sender.encrypt(body)
    header = Header(CKY_I, CKY_R, first, exchange, Flag.ENCRYPTION, 0)
    return encode_header(header, HEADER_LEN + len(ct)) + ct, payloads


def opened(p1: Phase1, datagram: bytes) -> list[Payload]:
    msg = decode_message(datagram)
    assert msg.encrypted is not None
    return decode_chain(msg.header.next_payload, p1.receiver.decrypt(msg.encrypted))[0]


def feed(reasm: Reassembler, datagrams: list[bytes], now: float = 0.0) -> list[bytes]:
    done = []
    for d in datagrams:
        whole = reasm.add(decode_message(d), now)
        if whole is not None:
            done.append(whole)
    return done


def frag_msg(fragment_id: int, number: int, last: bool, data: bytes, cky_r: bytes = CKY_R,
             extra: list[Payload] | None = None) -> bytes:
    return encode_message(Header(CKY_I, cky_r, 0, ExchangeType.ID_PROT, 0, 0),
                          [Fragment(fragment_id, number, last, data), *(extra or [])])


# ----------------------------------------------------------------------------------- negotiation


def test_vendor_id_is_what_strongswan_sends_and_accepts() -> None:
    assert hashlib.md5(b"FRAGMENTATION").digest() == VID_FRAGMENTATION
    assert vendor_id().data == VID_FRAGMENTATION + bytes.fromhex("80000000")
    assert vendor_name(vendor_id().data) == "FRAGMENTATION"
    assert peer_supports([VendorId(VID_DPD), VendorId(VID_FRAGMENTATION)])  # Windows: no flags
    assert peer_supports([VendorId(VID_FRAGMENTATION + bytes.fromhex("c0000000"))])  # Cisco
    assert peer_supports([vendor_id()])
    assert not peer_supports([VendorId(VID_FRAGMENTATION + bytes.fromhex("40000000"))])  # base mode only
    assert not peer_supports([VendorId(VID_FRAGMENTATION + b"\x80")])
    assert not peer_supports([VendorId(VID_DPD)])


# --------------------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("suite", [
    (Phase1Encr.AES_CBC, 128, Phase1Hash.SHA),
    (Phase1Encr.AES_CBC, 256, Phase1Hash.SHA2_256),
    pytest.param((Phase1Encr.TRIPLE_DES_CBC, None, Phase1Hash.MD5),
                 marks=pytest.mark.skipif(_TRIPLE_DES is None, reason="no 3DES in this cryptography")),
])
@pytest.mark.parametrize(("fragment_size", "family", "natt"), [
    (1280, 4, False), (1280, 6, True), (0, 4, True), (0, 6, False), (1500, 4, False),
])
def test_main_mode_message_round_trip(suite: tuple[int, int | None, int], fragment_size: int, family: int,
                                      natt: bool) -> None:
    p1 = Phase1(*suite)
    datagram, payloads = mm5(p1)
    budget = message_budget(fragment_size, family, natt=natt)
    frags = fragment(datagram, budget)
    assert len(frags) == -(-len(datagram) // (budget - HEADER_LEN - 8))
    assert all(len(f) <= budget for f in frags)
    for number, f in enumerate(frags, 1):
        msg = decode_message(f)
        h = msg.header
        assert (h.cky_i, h.cky_r, h.next_payload, h.exchange, h.flags, h.message_id) == (
            CKY_I, CKY_R, PayloadType.FRAGMENT, ExchangeType.ID_PROT, 0, 0)
        (payload,) = msg.payloads
        assert isinstance(payload, Fragment)
        assert (payload.fragment_id, payload.number, payload.last) == (1, number, number == len(frags))
    reasm = Reassembler()
    assert feed(reasm, frags) == [datagram]
    assert opened(p1, datagram) == payloads
    assert reasm.held == 0 and reasm.stats.reassembled == 1 and reasm.stats.dropped == 0


def test_a_message_that_fits_is_sent_whole() -> None:
    datagram, _ = mm5(Phase1(), cert_bytes=200)
    assert fragment(datagram, 1252) == [datagram]


def test_exchange_type_of_the_fragments() -> None:
    p1 = Phase1()
    aggressive, _ = mm5(p1, exchange=ExchangeType.AGGRESSIVE)
    assert {decode_message(f).header.exchange for f in fragment(aggressive, 600)} == {ExchangeType.AGGRESSIVE}
    quick, _ = mm5(p1, exchange=ExchangeType.QUICK)
    assert {decode_message(f).header.exchange for f in fragment(quick, 600)} == {ExchangeType.ID_PROT}
    ids = {p.fragment_id for f in fragment(quick, 600, fragment_id=9) for p in decode_message(f).payloads
           if isinstance(p, Fragment)}
    assert ids == {9}


def test_impossible_budgets_are_refused() -> None:
    datagram, _ = mm5(Phase1())
    with pytest.raises(ValueError, match="no room"):
        fragment(datagram, HEADER_LEN + 8)
    with pytest.raises(ValueError, match="one-octet"):
        fragment(datagram, HEADER_LEN + 8 + 16)  # 4 KB in 16-byte pieces: more than 255


# ------------------------------------------------------------------------- loss, dups, reordering


def test_reordered_and_duplicated_fragments() -> None:
    p1 = Phase1()
    datagram, payloads = mm5(p1)
    frags = fragment(datagram, 500)
    delivery = frags + frags[:3]
    random.Random(3).shuffle(delivery)
    reasm = Reassembler()
    done = []
    for d in delivery:  # stop at completion: afterwards a duplicate starts a new (partial) message
        whole = reasm.add(decode_message(d), 0.0)
        if whole is not None:
            done.append(whole)
            break
    assert done == [datagram]
    assert opened(p1, datagram) == payloads
    assert reasm.stats.kept == len(frags)


def test_loss_then_retransmission_and_a_second_retransmission() -> None:
    p1 = Phase1()
    datagram, payloads = mm5(p1)
    frags = fragment(datagram, 700)
    reasm = Reassembler()
    assert feed(reasm, frags[:-2] + frags[-1:]) == []  # one lost
    assert reasm.pending == 1
    assert feed(reasm, frags, now=2.0) == [datagram]  # the peer resends all fragments
    assert reasm.stats.duplicate == len(frags) - 2  # all but the lost one and the one after it
    assert reasm.pending == 1  # the tail of the retransmission after completion: a new partial message
    # Our answer was lost, the peer retransmits again: the same bytes come out, for the engine's
    # byte-identical retransmission check to answer.
    assert feed(reasm, frags, now=6.0) == [datagram]
    assert opened(p1, datagram) == payloads


def test_two_fragment_ids_interleaved() -> None:
    p1 = Phase1()
    a, _ = mm5(p1, cert_bytes=3000)
    b, _ = mm5(p1, cert_bytes=3500)
    fa, fb = fragment(a, 600, fragment_id=1), fragment(b, 600, fragment_id=2)
    mixed = [x for pair in zip(fa, fb, strict=False) for x in pair] + fa[len(fb):] + fb[len(fa):]
    assert sorted(feed(Reassembler(), mixed)) == sorted([a, b])


# -------------------------------------------------------------------------------- hostile fragments


@pytest.mark.parametrize(("sequence", "reason"), [
    ([(1, 0, False)], "malformed"),  # numbers start at 1
    ([(1, 3, True), (1, 2, True)], "malformed"),  # a second "last" elsewhere
    ([(1, 3, True), (1, 4, False)], "malformed"),  # beyond the last
    ([(1, 3, True), (1, 3, False)], "malformed"),  # the last number without the flag
    ([(1, 5, False), (1, 3, True)], "malformed"),  # "last" before a fragment already held
    ([(1, 2, False), (1, 2, False)], "duplicate"),
    ([(1, 65, False)], "over_limit"),  # more fragments than a message may have
])
def test_inconsistent_fragments_are_dropped(sequence: list[tuple[int, int, bool]], reason: str) -> None:
    reasm = Reassembler()
    assert feed(reasm, [frag_msg(i, n, last, b"z" * 50) for i, n, last in sequence]) == []
    assert getattr(reasm.stats, reason) == 1 and reasm.stats.dropped == 1
    assert reasm.held <= (len(sequence) - 1) * (50 + ENTRY_COST)


def test_fragment_must_be_alone_in_its_message() -> None:
    reasm = Reassembler()
    assert feed(reasm, [frag_msg(1, 1, True, b"x" * 40, extra=[VendorId(b"v")])]) == []
    assert reasm.stats.malformed == 1 and reasm.held == 0


@pytest.mark.parametrize(("inner", "why"), [
    (lambda d: d.replace(CKY_R, os.urandom(8), 1), "another SA's message"),
    (lambda d: frag_msg(1, 1, True, d), "a fragment inside a fragment"),
    (lambda d: os.urandom(len(d)), "not ISAKMP at all"),
])
def test_reassembled_datagram_must_be_a_message_of_this_sa(inner: object, why: str) -> None:
    datagram, _ = mm5(Phase1())
    assert callable(inner)
    bogus = inner(datagram)
    reasm = Reassembler()
    assert feed(reasm, fragment_raw(bogus, 600)) == [], why
    assert reasm.stats.malformed == 1 and reasm.stats.reassembled == 0 and reasm.held == 0


def fragment_raw(data: bytes, budget: int) -> list[bytes]:
    """Split any bytes the way the extension does, under this SA's cookies (fragment() reads a header)."""
    room = budget - HEADER_LEN - 8
    pieces = [data[i : i + room] for i in range(0, len(data), room)]
    return [frag_msg(1, n, n == len(pieces), p) for n, p in enumerate(pieces, 1)]


def test_message_over_the_size_limit_is_discarded() -> None:
    datagram, _ = mm5(Phase1(), cert_bytes=8000)
    limits = FragmentLimits(max_message=4000)
    reasm = Reassembler(limits)
    peak = 0
    for d in fragment(datagram, 1000):
        assert reasm.add(decode_message(d), 0.0) is None
        peak = max(peak, reasm.held)
    assert peak <= 4000 + 8 * ENTRY_COST
    assert reasm.stats.over_limit >= 1 and reasm.stats.reassembled == 0


def test_flood_of_forged_fragments_stays_within_the_bound() -> None:
    """Unauthenticated fragments for this SA's cookies, with every ID and number: bounded memory, and
    the genuine message still gets through once its sender retransmits."""
    limits = FragmentLimits()
    reasm = Reassembler(limits)
    r = random.Random(5)
    peak_held = peak_pending = 0
    for i in range(20_000):
        d = frag_msg(r.randrange(0, 0x10000), r.randrange(0, 256), r.random() < 0.05, r.randbytes(r.randrange(0, 1400)))
        reasm.add(decode_message(d), i / 1000)
        peak_held = max(peak_held, reasm.held)
        peak_pending = max(peak_pending, reasm.pending)
    assert peak_held <= limits.max_held and peak_pending <= limits.max_pending
    assert reasm.stats.received == 20_000 and reasm.stats.reassembled <= 20
    p1 = Phase1()
    datagram, payloads = mm5(p1)
    frags = fragment(datagram, 1252, fragment_id=0x7777)
    assert feed(reasm, frags, now=100.0) == [datagram]
    assert opened(p1, datagram) == payloads


def test_reassembly_times_out() -> None:
    datagram, _ = mm5(Phase1())
    frags = fragment(datagram, 800)
    reasm = Reassembler(FragmentLimits(timeout=20.0))
    feed(reasm, frags[:2], now=50.0)
    assert reasm.next_deadline() == 70.0
    reasm.expire(69.0)
    assert reasm.pending == 1
    reasm.expire(70.0)
    assert reasm.pending == 0 and reasm.held == 0 and reasm.stats.timed_out == 1
    assert feed(reasm, frags[2:], now=71.0) == []  # the rest alone does not make a message
    assert feed(reasm, frags, now=72.0) == [datagram]  # the retransmission does

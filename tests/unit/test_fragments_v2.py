"""IKEv2 fragmentation (RFC 7383): SKF fragments built and reassembled with keys derived the way the
engine derives them (real DH, prf+, AES-CBC/HMAC, AES-GCM, 3DES), under loss, duplication, reordering and
hostile fragments, with the reassembler's memory bound checked."""

from __future__ import annotations

import os
import random
import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ikegate.ike.crypto import CryptoError, derive_ike_keys, dh_group, encr_alg, integ_alg, prf_alg, skeyseed
from ikegate.ike.crypto.transforms import _TRIPLE_DES
from ikegate.ike.fragments import ENTRY_COST, FragmentLimits, message_budget
from ikegate.ike.v2.fragments import (
    FRAGMENTATION_SUPPORTED,
    Reassembled,
    Reassembler,
    announced,
    fragment,
    open_fragment,
    protect,
    supported_notify,
    triggers_retransmit,
)
from ikegate.ike.v2.protect import SkContext, encrypt_after, open_sk, padded, sealed_size
from ikegate.ike.wire.registry import (
    AuthMethod,
    DhId,
    EncrId,
    ExchangeType,
    IdType,
    IntegId,
    NotifyType,
    PayloadType,
    PrfId,
)
from ikegate.ike.wire.v2 import (
    AUTH,
    HEADER_LEN,
    SKF,
    Header,
    IDi,
    Message,
    Nonce,
    Notify,
    ParseError,
    Payload,
    Unknown,
    decode_message,
    encode_payloads,
    skf_header,
)

SUITES = [
    pytest.param((EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128), id="aes128-sha256"),
    pytest.param((EncrId.AES_GCM_16, 256, None), id="aes256gcm16"),
    pytest.param((EncrId.TRIPLE_DES, None, IntegId.HMAC_SHA1_96), id="3des-sha1",
                 marks=pytest.mark.skipif(_TRIPLE_DES is None, reason="no 3DES in this cryptography")),
]
Keys = tuple[SkContext, SkContext]  # (the sender's outbound context, the receiver's inbound context)


def derive(encr_id: int, bits: int | None, integ_id: int | None) -> Keys:
    """SK_ei/SK_ai from a real ECP-256 exchange, nonces and SPIs, as IKE_SA_INIT leaves them; the sender
    and the receiver each build their own context from them."""
    group = dh_group(DhId.ECP_256)
    a, b = group.generate(), group.generate()
    g_ir = a.shared(b.public)
    assert g_ir == b.shared(a.public)
    prf = prf_alg(PrfId.HMAC_SHA2_256)
    encr = encr_alg(encr_id, bits)
    integ = integ_alg(integ_id) if integ_id is not None else None
    ni, nr = os.urandom(32), os.urandom(32)
    keys = derive_ike_keys(prf, encr, integ, skeyseed(prf, ni, nr, g_ir), ni, nr, SPI_I, SPI_R)
    return (SkContext.build(encr, integ, keys.sk_ei, keys.sk_ai),
            SkContext.build(encr, integ, keys.sk_ei, keys.sk_ai))


SPI_I, SPI_R = b"\x11" * 8, b"\x22" * 8


@pytest.fixture(params=SUITES)
def keys(request: pytest.FixtureRequest) -> Keys:
    return derive(*request.param)


@pytest.fixture
def gcm() -> Keys:
    return derive(EncrId.AES_GCM_16, 128, None)


def auth_header(mid: int = 1, response: bool = False) -> Header:
    return Header(SPI_I, SPI_R, 0, ExchangeType.IKE_AUTH, 0x08 | (0x20 if response else 0), mid)


def ike_auth(cert_bytes: int = 5000) -> list[Payload]:
    """An IKE_AUTH request carrying a certificate chain: far larger than one datagram."""
    return [
        IDi(IdType.ID_DER_ASN1_DN, os.urandom(90)),
        Unknown(PayloadType.CERT, b"\x04" + os.urandom(cert_bytes // 2)),
        Unknown(PayloadType.CERT, b"\x04" + os.urandom(cert_bytes - cert_bytes // 2)),
        Notify(NotifyType.INITIAL_CONTACT),
        AUTH(AuthMethod.RSA_SIG, os.urandom(384)),
    ]


def rng(n: int) -> bytes:
    return os.urandom(n)


def feed(reasm: Reassembler, ctx: SkContext, datagrams: list[bytes], now: float = 0.0) -> list[Reassembled]:
    """Offer each datagram as the engine would (decoded first); every completed message."""
    done = []
    for d in datagrams:
        result = reasm.add(ctx, decode_message(d), d, now)
        if result is not None:
            done.append(result)
    return done


def forge(ctx: SkContext, header: Header, first: int, number: int, total: int, content: bytes) -> bytes:
    """An SKF message with any numbers at all, protected with the right keys: what a peer holding the
    keys (an authenticated but misbehaving one) can send."""
    plaintext = padded(ctx, content)
    size = sealed_size(ctx, len(plaintext))
    h = Header(header.spi_i, header.spi_r, PayloadType.SKF, header.exchange, header.flags, header.message_id,
               HEADER_LEN + 8 + size)
    return encrypt_after(ctx, h.pack() + skf_header(first, number, total, size), plaintext, rng)


# ------------------------------------------------------------------------------------------ sizes


def test_message_budget_per_family_and_port() -> None:
    assert message_budget(1280, 4, natt=False) == 1280 - 20 - 8
    assert message_budget(1280, 6, natt=False) == 1280 - 40 - 8
    assert message_budget(1280, 4, natt=True) == 1280 - 20 - 8 - 4
    assert message_budget(0, 4, natt=False) == 576 - 28  # RFC 7383 §2.5.1's safe IPv4 size
    assert message_budget(0, 6, natt=True) == 1280 - 48 - 4
    assert message_budget(1500, 6, natt=False) == 1452
    with pytest.raises(ValueError):
        message_budget(40, 6, natt=False)
    with pytest.raises(ValueError):
        message_budget(1280, 5, natt=False)


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("natt", [False, True])
@pytest.mark.parametrize("fragment_size", [1280, 0, 1500])
def test_round_trip_fits_every_budget(keys: Keys, family: int, natt: bool, fragment_size: int) -> None:
    out, inp = keys
    budget = message_budget(fragment_size, family, natt=natt)
    payloads = ike_auth()
    frags = fragment(out, auth_header(), payloads, rng, budget)
    assert len(frags) > 1
    assert all(len(f) <= budget for f in frags)
    # No space wasted: every fragment but the last is within one cipher block of the budget.
    assert all(len(f) > budget - out.encr.block_size for f in frags[:-1])
    for number, f in enumerate(frags, 1):
        msg = decode_message(f)
        skf = msg.payloads[-1]
        assert isinstance(skf, SKF) and len(msg.payloads) == 1
        assert (skf.number, skf.total) == (number, len(frags))
        assert skf.first_payload == (PayloadType.IDi if number == 1 else 0)  # §2.5: only fragment 1
        assert msg.header.next_payload == PayloadType.SKF
        assert (msg.header.message_id, msg.header.exchange, msg.header.flags) == (1, ExchangeType.IKE_AUTH, 0x08)
    reasm = Reassembler()
    done = feed(reasm, inp, frags)
    assert len(done) == 1
    assert done[0].payloads() == payloads
    assert done[0].first_fragment == frags[0]
    assert reasm.held == 0 and reasm.pending == 0
    assert reasm.stats.reassembled == 1 and reasm.stats.kept == len(frags) and reasm.stats.dropped == 0


def test_fragment_count_follows_the_family(gcm: Keys) -> None:
    out, _ = gcm
    payloads = ike_auth(8000)
    v4_small = fragment(out, auth_header(), payloads, rng, message_budget(0, 4, natt=True))
    v6 = fragment(out, auth_header(), payloads, rng, message_budget(0, 6, natt=True))
    assert all(len(f) + 20 + 8 + 4 <= 576 for f in v4_small)
    assert all(len(f) + 40 + 8 + 4 <= 1280 for f in v6)
    assert len(v4_small) > 2 * len(v6) - 2


def test_budget_without_room_is_refused(gcm: Keys) -> None:
    out, _ = gcm
    with pytest.raises(ValueError, match="no room"):
        fragment(out, auth_header(), ike_auth(), rng, HEADER_LEN + 8 + 8 + 16)


def test_protect_sends_one_sk_message_when_it_fits(keys: Keys) -> None:
    out, inp = keys
    small: list[Payload] = [Notify(NotifyType.INITIAL_CONTACT), IDi(IdType.ID_FQDN, b"a.example")]
    (packet,) = protect(out, auth_header(), small, rng, 1252)
    assert open_sk(inp, decode_message(packet), packet) == small
    (unbounded,) = protect(out, auth_header(), ike_auth(), rng, None)  # fragmentation not negotiated
    assert len(unbounded) > 1252
    frags = protect(out, auth_header(), ike_auth(), rng, 1252)
    assert len(frags) > 1 and all(len(f) <= 1252 for f in frags)


# ------------------------------------------------------------------------- loss, dups, reordering


def test_reordered_and_duplicated_fragments(keys: Keys) -> None:
    out, inp = keys
    payloads = ike_auth()
    frags = fragment(out, auth_header(), payloads, rng, 600)
    shuffled = frags + frags[1:4]
    random.Random(7).shuffle(shuffled)
    reasm = Reassembler()
    done = feed(reasm, inp, shuffled)
    assert len(done) == 1 and done[0].payloads() == payloads
    assert reasm.stats.duplicate + reasm.stats.late == 3 and reasm.stats.kept == len(frags)
    assert reasm.held == 0 and reasm.pending == 0


def test_loss_is_made_good_by_the_retransmission(keys: Keys) -> None:
    out, inp = keys
    payloads = ike_auth()
    frags = fragment(out, auth_header(), payloads, rng, 700)
    reasm = Reassembler()
    assert feed(reasm, inp, frags[:2] + frags[3:]) == []  # fragment 3 lost
    assert reasm.pending == 1 and reasm.held > 0
    done = feed(reasm, inp, frags, now=4.0)  # §2.6.1: the sender retransmits every fragment
    assert len(done) == 1 and done[0].payloads() == payloads
    assert reasm.stats.duplicate == 2  # fragments 1 and 2 again; 3 completed it
    assert reasm.stats.late == len(frags) - 3  # 4.. came after: dropped, not a new reassembly
    assert reasm.held == 0 and reasm.pending == 0


FIXED_KEYS = derive(EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_512_256)
FIXED_PAYLOADS = ike_auth(4000)
FIXED_FRAGS = fragment(FIXED_KEYS[0], auth_header(), FIXED_PAYLOADS, rng, 600)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, 99), max_size=60) | st.permutations(list(range(100))))
def test_any_delivery_order_completes_exactly_when_all_arrived(deliveries: list[int]) -> None:
    _, inp = FIXED_KEYS
    frags = FIXED_FRAGS
    assert len(frags) >= 8
    reasm = Reassembler()
    seen: set[int] = set()
    for i in (d % len(frags) for d in deliveries):
        result = reasm.add(inp, decode_message(frags[i]), frags[i], 0.0)
        seen.add(i)
        if len(seen) == len(frags):
            assert result is not None and result.payloads() == FIXED_PAYLOADS
            return
        assert result is None
    assert reasm.pending == (1 if seen else 0)
    assert reasm.held == sum(len(open_fragment(inp, decode_message(frags[i]), frags[i]).plaintext) + ENTRY_COST
                             for i in seen)


# -------------------------------------------------------------------------------- hostile fragments


def test_bad_icv_is_counted_and_never_kept(keys: Keys) -> None:
    out, inp = keys
    payloads = ike_auth()
    frags = fragment(out, auth_header(), payloads, rng, 800)
    reasm = Reassembler()
    feed(reasm, inp, frags[:1])
    held = reasm.held
    bad = bytearray(frags[1])
    bad[-20] ^= 1
    assert feed(reasm, inp, [bytes(bad)]) == []
    assert reasm.stats.bad_icv == 1 and reasm.held == held
    # The fragment numbers are covered by the ICV too (§2.5.3): a Total Fragments raised in transit
    # must not restart the reassembly in progress.
    raised = bytearray(frags[2])
    msg = decode_message(frags[2])
    assert msg.sk_offset is not None
    struct.pack_into("!H", raised, msg.sk_offset + 6, len(frags) + 1)
    assert feed(reasm, inp, [bytes(raised)]) == []
    assert reasm.stats.bad_icv == 2 and reasm.stats.restarted == 0 and reasm.held == held
    done = feed(reasm, inp, frags[1:])
    assert len(done) == 1 and done[0].payloads() == payloads


def test_other_keys_do_not_verify(gcm: Keys) -> None:
    out, _ = gcm
    _, stranger = derive(EncrId.AES_GCM_16, 128, None)
    frags = fragment(out, auth_header(), ike_auth(), rng, 1000)
    reasm = Reassembler()
    assert feed(reasm, stranger, frags) == []
    assert reasm.stats.bad_icv == len(frags) and reasm.held == 0 and reasm.pending == 0


@pytest.mark.parametrize(("number", "total", "reason"), [
    (0, 3, "malformed"),  # fragment numbers start at 1
    (4, 3, "malformed"),  # beyond Total Fragments
    (0, 0, "malformed"),  # Total Fragments zero
    (1, 65, "over_limit"),  # more fragments than we would ever hold
    (70, 70, "over_limit"),
])
def test_inconsistent_numbers_are_dropped(keys: Keys, number: int, total: int, reason: str) -> None:
    out, inp = keys
    d = forge(out, auth_header(), PayloadType.IDi, number, total, b"x" * 100)
    reasm = Reassembler()
    assert feed(reasm, inp, [d]) == []
    assert getattr(reasm.stats, reason) == 1 and reasm.stats.dropped == 1
    assert reasm.held == 0 and reasm.pending == 0


def test_larger_total_restarts_smaller_total_is_stale(keys: Keys) -> None:
    out, inp = keys
    payloads = ike_auth()
    big = fragment(out, auth_header(), payloads, rng, 1400)
    small = fragment(out, auth_header(), payloads, rng, 600)  # the sender went to smaller fragments
    assert len(small) > len(big) >= 3
    reasm = Reassembler()
    feed(reasm, inp, big[:2])
    assert feed(reasm, inp, small[:1]) == []
    assert reasm.stats.restarted == 1 and reasm.held == len(open_fragment(
        inp, decode_message(small[0]), small[0]).plaintext) + ENTRY_COST
    assert feed(reasm, inp, big[2:]) == []  # §2.6: fewer Total Fragments than in progress: dropped
    assert reasm.stats.stale == len(big) - 2
    done = feed(reasm, inp, small[1:])
    assert len(done) == 1 and done[0].payloads() == payloads


def test_message_over_the_size_limit_is_discarded(gcm: Keys) -> None:
    out, inp = gcm
    limits = FragmentLimits(max_message=3000)
    frags = fragment(out, auth_header(), ike_auth(6000), rng, 1000)
    reasm = Reassembler(limits)
    peak = 0
    for d in frags:
        assert reasm.add(inp, decode_message(d), d, 0.0) is None
        peak = max(peak, reasm.held)
    assert peak <= 3000 + 4 * ENTRY_COST
    assert reasm.stats.over_limit >= 1 and reasm.stats.reassembled == 0


def test_flood_of_bogus_fragments_holds_nothing(gcm: Keys) -> None:
    """Fragments from someone without the keys: each costs one failed AEAD check and is counted."""
    _, inp = gcm
    reasm = Reassembler()
    r = random.Random(1)
    n = 5000
    started = time.perf_counter()
    for i in range(n):
        d = forge_random(r, i)
        reasm.add(inp, decode_message(d), d, i / 1000)
    elapsed = time.perf_counter() - started
    assert reasm.stats.bad_icv == n and reasm.stats.received == n
    assert reasm.held == 0 and reasm.pending == 0
    print(f"{n} bogus fragments rejected in {elapsed:.3f} s ({n / elapsed:.0f}/s)")


def forge_random(r: random.Random, i: int) -> bytes:
    content = r.randbytes(r.randrange(24, 1200))
    total = r.randrange(1, 64)
    h = Header(SPI_I, SPI_R, PayloadType.SKF, ExchangeType.IKE_AUTH, 0x08, r.randrange(0, 2**32),
               HEADER_LEN + 8 + len(content))
    return h.pack() + skf_header(PayloadType.IDi, r.randrange(1, total + 1), total, len(content)) + content


def test_flood_with_the_keys_stays_within_the_bound(gcm: Keys) -> None:
    """A peer that holds the keys (IKE_AUTH is not yet authenticated) opens message after message and
    never completes one: memory stays under max_held, reassemblies under max_pending."""
    out, inp = gcm
    limits = FragmentLimits()
    reasm = Reassembler(limits)
    peak_held = peak_pending = 0
    for mid in range(300):
        for number in range(1, 40):
            d = forge(out, auth_header(mid), PayloadType.IDi, number, 40, os.urandom(1100))
            reasm.add(inp, decode_message(d), d, mid * 0.01)
            peak_held = max(peak_held, reasm.held)
            peak_pending = max(peak_pending, reasm.pending)
    assert peak_held <= limits.max_held
    assert peak_pending <= limits.max_pending
    assert reasm.stats.reassembled == 0
    assert reasm.stats.over_limit + reasm.stats.evicted > 0


def test_reassembly_times_out(gcm: Keys) -> None:
    out, inp = gcm
    payloads = ike_auth()
    frags = fragment(out, auth_header(), payloads, rng, 900)
    reasm = Reassembler(FragmentLimits(timeout=30.0))
    feed(reasm, inp, frags[:2], now=100.0)
    assert reasm.next_deadline() == 130.0
    reasm.expire(129.9)
    assert reasm.pending == 1
    reasm.expire(130.0)
    assert reasm.pending == 0 and reasm.held == 0 and reasm.stats.timed_out == 1
    assert reasm.next_deadline() is None
    # A late fragment finds no stale state: it starts a new reassembly, the retransmission completes it.
    feed(reasm, inp, frags[:2], now=140.0)
    assert feed(reasm, inp, frags[2:], now=180.0) == []  # ... unless it trickles in past the deadline
    assert reasm.stats.timed_out == 2
    done = feed(reasm, inp, frags, now=200.0)
    assert len(done) == 1 and done[0].payloads() == payloads


def test_requests_and_responses_with_one_message_id_stay_apart(gcm: Keys) -> None:
    out, inp = gcm
    req, resp = ike_auth(3000), ike_auth(3500)
    a = fragment(out, auth_header(1), req, rng, 800)
    b = fragment(out, auth_header(1, response=True), resp, rng, 800)
    reasm = Reassembler()
    done = feed(reasm, inp, [x for pair in zip(a, b, strict=False) for x in pair] + a[len(b):] + b[len(a):])
    assert sorted(len(d.plaintext) for d in done) == sorted(len(encode_payloads(p)[1]) for p in (req, resp))
    assert {d.header.is_response: d.payloads() == (resp if d.header.is_response else req) for d in done} == {
        False: True, True: True}


def test_malformed_inner_chain_surfaces_as_parse_error(gcm: Keys) -> None:
    out, inp = gcm
    frags = fragment(out, auth_header(), [Unknown(PayloadType.CERT, os.urandom(3000)), Nonce(b"short")], rng, 800)
    (done,) = feed(Reassembler(), inp, frags)
    with pytest.raises(ParseError):
        done.payloads()


def test_unprotected_payloads_travel_in_fragment_one(keys: Keys) -> None:
    out, inp = keys
    payloads = ike_auth()
    clear = Notify(NotifyType.COOKIE, data=b"c" * 16)
    frags = fragment(out, auth_header(), payloads, rng, 900, unprotected=[clear])
    first = decode_message(frags[0])
    assert first.header.next_payload == PayloadType.NOTIFY and first.payloads[0] == clear
    assert all(len(decode_message(f).payloads) == 1 for f in frags[1:])
    assert all(len(f) <= 900 for f in frags)
    tampered = frags[0].replace(b"c" * 16, b"d" * 16)
    reasm = Reassembler()
    assert feed(reasm, inp, [tampered]) == [] and reasm.stats.bad_icv == 1  # covered by the ICV too
    (done,) = feed(reasm, inp, frags)
    assert done.unprotected == [clear] and done.payloads() == payloads


def test_retransmission_trigger_is_fragment_one_only(gcm: Keys) -> None:
    out, _ = gcm
    frags = fragment(out, auth_header(), ike_auth(), rng, 900)
    assert [triggers_retransmit(decode_message(f)) for f in frags] == [True] + [False] * (len(frags) - 1)
    (whole,) = protect(out, auth_header(), [Notify(NotifyType.INITIAL_CONTACT)], rng, 900)
    assert triggers_retransmit(decode_message(whole))


def test_open_fragment_verifies_a_single_fragment(gcm: Keys) -> None:
    out, inp = gcm
    frags = fragment(out, auth_header(), ike_auth(), rng, 900)
    piece = open_fragment(inp, decode_message(frags[0]), frags[0])
    assert (piece.number, piece.first_payload) == (1, PayloadType.IDi)
    with pytest.raises(CryptoError):
        open_fragment(inp, Message(auth_header(), []), b"")


def test_negotiation_notify() -> None:
    n = supported_notify()
    assert n == Notify(16430) and n.notify_type == FRAGMENTATION_SUPPORTED
    assert n.body() == b"\x00\x00" + struct.pack("!H", 16430)  # protocol 0, no SPI, no data (§2.3)
    assert announced([Nonce(b"n" * 16), Notify(16430)])
    assert not announced([Notify(NotifyType.NAT_DETECTION_SOURCE_IP, data=b"x" * 20)])


def test_a_single_fragment_message_is_a_whole_message(gcm: Keys) -> None:
    out, inp = gcm
    payloads: list[Payload] = [Notify(NotifyType.INITIAL_CONTACT), IDi(IdType.ID_FQDN, b"gw.example")]
    first, body = encode_payloads(payloads)
    (done,) = feed(Reassembler(), inp, [forge(out, auth_header(), first, 1, 1, body)])
    assert done.payloads() == payloads


def test_discard_and_clear_release_everything(gcm: Keys) -> None:
    out, inp = gcm
    a = fragment(out, auth_header(1), ike_auth(), rng, 900)
    b = fragment(out, auth_header(1, response=True), ike_auth(), rng, 900)
    reasm = Reassembler()
    feed(reasm, inp, a[:2] + b[:2])
    assert reasm.pending == 2
    reasm.discard(1, response=False)
    assert reasm.pending == 1 and reasm.held == sum(
        len(open_fragment(inp, decode_message(f), f).plaintext) + ENTRY_COST for f in b[:2])
    reasm.clear()
    assert reasm.pending == 0 and reasm.held == 0 and reasm.next_deadline() is None

"""ESP (RFC 4303) round trips, refusals with their reasons, lifetimes, and the RFC 3948 helpers."""

from __future__ import annotations

import ipaddress
import os
import struct

import pytest

from ikegate.dataplane.esp import (
    KEEPALIVE,
    NON_ESP_MARKER,
    SEQ_SOFT_LIMIT,
    ChildSaPair,
    EspError,
    InboundEsp,
    OutboundEsp,
    classify_4500,
    ike_encapsulate,
    is_keepalive,
    udp_encapsulate,
)
from ikegate.dataplane.packet import TCP, UDP, build_ipv4, build_ipv6, parse_ip
from ikegate.dataplane.replay import MAX_SEQ
from ikegate.ike.core.child import ChildSa
from ikegate.ike.core.config import ChildSaConfig, Mode
from ikegate.ike.core.ts import from_network
from ikegate.ike.crypto import EncrAlg, IntegAlg, encr_alg, integ_alg
from ikegate.ike.wire.registry import EncrId, IntegId

SPI = 0xC0FFEE01

SUITES: list[tuple[str, int, int, int | None]] = [
    ("gcm128", EncrId.AES_GCM_16, 128, None),
    ("gcm256", EncrId.AES_GCM_16, 256, None),
    ("cbc128-sha1", EncrId.AES_CBC, 128, IntegId.HMAC_SHA1_96),
    ("cbc128-sha256", EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128),
    ("cbc256-sha256", EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_256_128),
    ("cbc256-sha384", EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_384_192),
    ("cbc256-sha512", EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_512_256),
    ("cbc128-sha512", EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_512_256),
]
SUITE_IDS = [s[0] for s in SUITES]


def make_pair(encr_id: int, bits: int, integ_id: int | None, *, spi: int = SPI, window: int = 1024,
              soft_kb: int | None = None, hard_kb: int | None = None) -> tuple[OutboundEsp, InboundEsp]:
    """An outbound SA and the inbound SA that receives it (same keys: the two ends of one direction)."""
    encr = encr_alg(encr_id, bits)
    integ = integ_alg(integ_id) if integ_id is not None else None
    ek = os.urandom(encr.keymat_size)
    ik = os.urandom(integ.key_size) if integ else b""
    out = OutboundEsp(spi, encr, integ, ek, ik, soft_kb=soft_kb, hard_kb=hard_kb)
    inb = InboundEsp(spi, encr, integ, ek, ik, window, soft_kb=soft_kb, hard_kb=hard_kb)
    return out, inb


def v4_packet(size: int = 84, proto: int = UDP) -> bytes:
    payload = struct.pack("!HHHH", 1234, 53, size - 28, 0) + bytes(range(256)) * 8
    return build_ipv4("10.1.0.1", "10.2.0.1", proto, payload[: size - 20])


def v6_packet(size: int = 104) -> bytes:
    payload = struct.pack("!HHHH", 1234, 53, size - 48, 0) + bytes(range(256)) * 8
    return build_ipv6("2001:db8:1::1", "2001:db8:2::1", UDP, payload[: size - 40])


# ------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(("name", "encr_id", "bits", "integ_id"), SUITES, ids=SUITE_IDS)
@pytest.mark.parametrize("size", [20, 21, 64, 83, 1400])
def test_tunnel_v4_round_trip(name: str, encr_id: int, bits: int, integ_id: int | None, size: int) -> None:
    out, inb = make_pair(encr_id, bits, integ_id)
    inner = v4_packet(max(size, 28))
    packet = out.seal(inner, 4)
    assert packet[:8] == struct.pack("!II", SPI, 1)
    assert inb.open(packet) == (4, inner)


@pytest.mark.parametrize(("name", "encr_id", "bits", "integ_id"), SUITES, ids=SUITE_IDS)
def test_tunnel_v6_round_trip(name: str, encr_id: int, bits: int, integ_id: int | None) -> None:
    out, inb = make_pair(encr_id, bits, integ_id)
    for size in (48, 49, 50, 1280):
        inner = v6_packet(size)
        assert inb.open(out.seal(inner, 41)) == (41, inner)


@pytest.mark.parametrize(("name", "encr_id", "bits", "integ_id"), SUITES, ids=SUITE_IDS)
def test_transport_round_trip(name: str, encr_id: int, bits: int, integ_id: int | None) -> None:
    out, inb = make_pair(encr_id, bits, integ_id)
    ip = v4_packet(200, TCP)
    info = parse_ip(ip)
    upper = ip[info.header_len :]
    assert inb.open(out.seal(upper, TCP)) == (TCP, upper)
    assert inb.open(out.seal(b"", 59)) == (59, b"")  # an empty TFC dummy is still well-formed


@pytest.mark.parametrize(("name", "encr_id", "bits", "integ_id"), SUITES, ids=SUITE_IDS)
def test_layout_padding_and_alignment(name: str, encr_id: int, bits: int, integ_id: int | None) -> None:
    """RFC 4303 §2.4: ciphertext a multiple of the block size and of 4; counting sequence numbers."""
    encr = encr_alg(encr_id, bits)
    icv = encr.icv_size if integ_id is None else integ_alg(integ_id).icv_size
    out, inb = make_pair(encr_id, bits, integ_id)
    for n in range(0, 40):
        packet = out.seal(bytes(n), 17)
        ct_len = len(packet) - 8 - encr.iv_size - icv
        assert ct_len % max(encr.block_size, 4) == 0
        assert n + 2 <= ct_len < n + 2 + max(encr.block_size, 4)
        assert struct.unpack_from("!I", packet, 4)[0] == n + 1
        assert inb.open(packet) == (17, bytes(n))
    assert out.seq == 40 and inb.highest_seq == 40


def test_gcm_iv_is_the_sequence_number() -> None:
    out, _ = make_pair(EncrId.AES_GCM_16, 256, None)
    for seq in (1, 2, 3):
        packet = out.seal(b"x", 4)
        assert packet[8:16] == struct.pack("!Q", seq)


def test_cbc_iv_is_the_cipher_of_the_sequence_number() -> None:
    """The chained CBC context yields IV = AES_K(seq) (NIST SP 800-38A App. C), and standard CBC under it."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    encr, integ = encr_alg(EncrId.AES_CBC, 256), integ_alg(IntegId.HMAC_SHA2_256_128)
    ek, ik = os.urandom(32), os.urandom(32)
    out = OutboundEsp(SPI, encr, integ, ek, ik)
    for seq in range(1, 6):
        inner = os.urandom(37 * seq)
        packet = out.seal(inner, 4)
        ecb = Cipher(algorithms.AES(ek), modes.ECB()).encryptor()
        iv = ecb.update(seq.to_bytes(16, "big"))
        assert packet[8:24] == iv
        assert encr.keyed(ek).decrypt(iv, packet[24:-16])[: len(inner)] == inner


def test_chained_contexts_survive_reordering_and_garbage() -> None:
    out, inb = make_pair(EncrId.AES_CBC, 128, IntegId.HMAC_SHA1_96, window=64)
    inners = [os.urandom(i) for i in range(1, 41)]
    packets = [out.seal(x, 4) for x in inners]
    order = list(range(40))
    order[::2], order[1::2] = order[1::2], order[::2]
    for i in order:
        with pytest.raises(EspError):
            inb.open(packets[i][:-1] + bytes([packets[i][-1] ^ 0x80]))
        assert inb.open(packets[i]) == (4, inners[i])


def test_generic_cipher_path_triple_des() -> None:
    try:
        encr = encr_alg(EncrId.TRIPLE_DES, None)
    except Exception:  # pragma: no cover - 3DES missing from this cryptography build
        pytest.skip("3DES not available")
    integ = integ_alg(IntegId.HMAC_SHA1_96)
    ek, ik = os.urandom(24), os.urandom(20)
    out, inb = OutboundEsp(SPI, encr, integ, ek, ik), InboundEsp(SPI, encr, integ, ek, ik)
    for n in (0, 1, 7, 8, 100):
        packet = out.seal(bytes(n), 4)
        assert (len(packet) - 8 - 8 - 12) % 8 == 0
        assert inb.open(packet) == (4, bytes(n))


# ---------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(("name", "encr_id", "bits", "integ_id"), SUITES, ids=SUITE_IDS)
def test_every_single_bit_flip_is_an_icv_error(name: str, encr_id: int, bits: int, integ_id: int | None) -> None:
    """Past SPI and sequence number (which select the SA and the window) any flipped bit fails the ICV."""
    out, inb = make_pair(encr_id, bits, integ_id)
    packet = out.seal(v4_packet(60), 4)
    for bit in range(8 * 4, 8 * len(packet)):
        if bit < 64 and bit >= 32:
            continue  # flipping the sequence number is tested below (it is still authenticated)
        tampered = bytearray(packet)
        tampered[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(EspError) as err:
            inb.open(bytes(tampered))
        assert err.value.reason == "icv", bit
    assert inb.drops["icv"] == 8 * len(packet) - 64
    assert inb.packets == 0 and inb.highest_seq == 0
    assert inb.open(packet)[0] == 4  # the genuine packet still passes: no tampered one moved the window


@pytest.mark.parametrize(("name", "encr_id", "bits", "integ_id"), SUITES, ids=SUITE_IDS)
def test_sequence_number_is_authenticated(name: str, encr_id: int, bits: int, integ_id: int | None) -> None:
    out, inb = make_pair(encr_id, bits, integ_id)
    packet = bytearray(out.seal(b"abc", 4))
    packet[7] ^= 0x02  # seq 1 -> 3: fresh for the window, but the ICV covers it
    with pytest.raises(EspError) as err:
        inb.open(bytes(packet))
    assert err.value.reason == "icv"
    assert inb.highest_seq == 0


@pytest.mark.parametrize(("name", "encr_id", "bits", "integ_id"), SUITES[:3], ids=SUITE_IDS[:3])
def test_replayed_packet(name: str, encr_id: int, bits: int, integ_id: int | None) -> None:
    out, inb = make_pair(encr_id, bits, integ_id, window=64)
    first = out.seal(b"one", 4)
    packets = [out.seal(b"p", 4) for _ in range(100)]
    inb.open(packets[-1])
    with pytest.raises(EspError) as err:
        inb.open(packets[-1])
    assert err.value.reason == "replay"
    with pytest.raises(EspError) as err:
        inb.open(first)  # seq 1 while the top is 101: left of a 64-packet window
    assert err.value.reason == "replay"
    assert inb.open(packets[-10]) == (4, b"p")  # late but inside the window
    assert inb.drops["replay"] == 2 and inb.packets == 2


def test_unknown_spi_and_short() -> None:
    out, inb = make_pair(EncrId.AES_GCM_16, 128, None)
    other, _ = make_pair(EncrId.AES_GCM_16, 128, None, spi=SPI + 1)
    with pytest.raises(EspError) as err:
        inb.open(other.seal(b"x", 4))
    assert err.value.reason == "spi"
    packet = out.seal(b"x", 4)
    for n in (0, 7, 8, 35):
        with pytest.raises(EspError) as err:
            inb.open(packet[:n])
        assert err.value.reason == "short"
    assert inb.drops == {"spi": 1, "short": 4}


def test_cbc_ragged_ciphertext_is_decrypt_error() -> None:
    out, inb = make_pair(EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128)
    packet = out.seal(bytes(40), 4)
    ragged = packet[:-16] + b"\x00" + packet[-16:]  # one byte more ciphertext
    with pytest.raises(EspError) as err:
        inb.open(ragged)
    assert err.value.reason == "decrypt"


def _forge(encr: EncrAlg, integ: IntegAlg | None, ek: bytes, ik: bytes, seq: int, plaintext: bytes) -> bytes:
    """An ESP packet with a correct ICV around an arbitrary (mis-padded) plaintext."""
    header = struct.pack("!II", SPI, seq)
    cipher = encr.keyed(ek)
    if integ is None:
        iv = struct.pack("!Q", seq)
        return header + iv + cipher.encrypt(iv, plaintext, header)
    iv = os.urandom(encr.iv_size)
    body = header + iv + cipher.encrypt(iv, plaintext)
    return body + integ.keyed(ik).sign(body)


@pytest.mark.parametrize(("name", "encr_id", "bits", "integ_id"), SUITES[:4], ids=SUITE_IDS[:4])
def test_bad_padding_with_good_icv(name: str, encr_id: int, bits: int, integ_id: int | None) -> None:
    encr = encr_alg(encr_id, bits)
    integ = integ_alg(integ_id) if integ_id is not None else None
    ek = os.urandom(encr.keymat_size)
    ik = os.urandom(integ.key_size) if integ else b""
    inb = InboundEsp(SPI, encr, integ, ek, ik)
    good = b"payload." + bytes([1, 2, 3, 4, 5, 6]) + bytes([6, 4])  # 16 bytes, padding 1..6
    assert inb.open(_forge(encr, integ, ek, ik, 1, good)) == (4, b"payload.")
    wrong_bytes = b"payload." + bytes([1, 2, 3, 4, 0, 6]) + bytes([6, 4])
    too_long = b"payload." + bytes(6) + bytes([200, 4])  # pad length beyond the plaintext
    for seq, plaintext in ((2, wrong_bytes), (3, too_long)):
        with pytest.raises(EspError) as err:
            inb.open(_forge(encr, integ, ek, ik, seq, plaintext))
        assert err.value.reason == "padding"
    assert inb.highest_seq == 1  # refused packets never move the window
    assert inb.open(_forge(encr, integ, ek, ik, 2, good)) == (4, b"payload.")


def test_sequence_number_overflow_refuses_to_send() -> None:
    out, inb = make_pair(EncrId.AES_GCM_16, 128, None)
    out.seq = MAX_SEQ - 2
    assert not out.soft_expired
    last = [out.seal(b"a", 4), out.seal(b"b", 4)]
    assert out.seq == MAX_SEQ and out.soft_expired and not out.hard_expired
    with pytest.raises(EspError) as err:
        out.seal(b"c", 4)
    assert err.value.reason == "seqno"
    assert out.hard_expired and out.seq == MAX_SEQ and out.packets == 2
    with pytest.raises(EspError) as err:
        out.seal(b"c", 4)
    assert err.value.reason == "expired"
    assert [inb.open(p)[1] for p in last] == [b"a", b"b"]
    assert inb.highest_seq == MAX_SEQ


def test_seq_soft_limit() -> None:
    out, _ = make_pair(EncrId.AES_GCM_16, 128, None)
    out.seq = SEQ_SOFT_LIMIT - 2
    out.seal(b"", 4)
    assert not out.soft_expired
    out.seal(b"", 4)
    assert out.soft_expired and not out.hard_expired


def test_kilobyte_lifetimes() -> None:
    out, inb = make_pair(EncrId.AES_GCM_16, 256, None, soft_kb=2, hard_kb=3)
    inner = bytes(512)
    for i in range(1, 7):
        assert inb.open(out.seal(inner, 4)) == (4, inner)
        assert out.bytes == inb.bytes == 512 * i
        assert out.soft_expired is inb.soft_expired is (i >= 4)
        assert out.hard_expired is inb.hard_expired is (i >= 6)
    with pytest.raises(EspError) as err:
        out.seal(inner, 4)
    assert err.value.reason == "expired"
    assert out.drops["expired"] == 1 and out.packets == 6


def test_inbound_past_hard_lifetime_refuses() -> None:
    encr = encr_alg(EncrId.AES_GCM_16, 128)
    key = os.urandom(encr.keymat_size)
    out = OutboundEsp(SPI, encr, None, key)
    inb = InboundEsp(SPI, encr, None, key, hard_kb=1)
    inb.open(out.seal(bytes(1024), 4))
    assert inb.hard_expired
    with pytest.raises(EspError) as err:
        inb.open(out.seal(b"x", 4))
    assert err.value.reason == "expired"


def test_counters() -> None:
    out, inb = make_pair(EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_256_128)
    for n in (10, 20, 30):
        inb.open(out.seal(bytes(n), 4))
    assert (out.packets, out.bytes, out.seq) == (3, 60, 3)
    assert (inb.packets, inb.bytes, inb.highest_seq) == (3, 60, 3)
    assert not inb.drops and not out.drops


def test_constructor_checks() -> None:
    gcm = encr_alg(EncrId.AES_GCM_16, 128)
    cbc = encr_alg(EncrId.AES_CBC, 128)
    sha = integ_alg(IntegId.HMAC_SHA2_256_128)
    with pytest.raises(ValueError):
        OutboundEsp(SPI, gcm, sha, bytes(20), bytes(32))
    with pytest.raises(ValueError):
        OutboundEsp(SPI, cbc, None, bytes(16))
    with pytest.raises(ValueError):
        InboundEsp(0, gcm, None, bytes(20))
    assert OutboundEsp(SPI, gcm, None, bytes(20)).overhead == 8 + 8 + 3 + 2 + 16


# --------------------------------------------------------------------------------- RFC 3948 helpers


def test_classify_4500() -> None:
    out, _ = make_pair(EncrId.AES_GCM_16, 128, None)
    esp = out.seal(b"x", 4)
    assert classify_4500(udp_encapsulate(esp)) == "esp"
    assert udp_encapsulate(esp) == esp  # ESP-in-UDP is the bare ESP packet (RFC 3948 §2.1)
    assert classify_4500(ike_encapsulate(bytes(28))) == "ike"
    assert ike_encapsulate(b"IKE")[:4] == NON_ESP_MARKER
    assert classify_4500(KEEPALIVE) == "keepalive" and is_keepalive(b"\xff")
    assert not is_keepalive(b"\xff\xff") and not is_keepalive(b"")
    assert classify_4500(b"") == "bad"
    assert classify_4500(b"\x00\x00\x00") == "bad"
    assert classify_4500(b"\x00\x00\x00\x07" + bytes(20)) == "bad"  # SPI 1-255 is reserved
    assert classify_4500(b"\x00\x00\x01\x00" + bytes(4)) == "esp"
    assert classify_4500(b"\x12\x34\x56\x78\x00") == "bad"  # shorter than SPI + sequence number
    with pytest.raises(ValueError):
        udp_encapsulate(bytes(12))


# ------------------------------------------------------------------------------------ ChildSaPair


def make_child(encr: EncrAlg, integ: IntegAlg | None, *, lifetime_kb: int = 10485760,
               mode: Mode = Mode.TUNNEL) -> tuple[ChildSa, ChildSa]:
    """Two ends of one negotiated Child SA, with mirrored SPIs and keys (gateway A and gateway B)."""
    keys = [os.urandom(encr.keymat_size) for _ in range(2)]
    ikeys = [os.urandom(integ.key_size) if integ else b"" for _ in range(2)]
    net_a = from_network(ipaddress.ip_network("10.1.0.0/16"))
    net_b = from_network(ipaddress.ip_network("10.2.0.0/16"))
    cfg = ChildSaConfig("p", 10, [], [net_a], [net_b], lifetime_kb=lifetime_kb, mode=mode)

    def child(spi_in: int, spi_out: int, k_in: int, k_out: int, local: list, remote: list) -> ChildSa:  # type: ignore[type-arg]
        return ChildSa(spi_in, spi_out, cfg, encr, integ, keys[k_in], ikeys[k_in], keys[k_out], ikeys[k_out],
                       local, remote, mode, True, 0.0, None, 3600.0, udp_encap=True)

    return child(0x1001, 0x2002, 0, 1, [net_a], [net_b]), child(0x2002, 0x1001, 1, 0, [net_b], [net_a])


@pytest.mark.parametrize(("name", "encr_id", "bits", "integ_id"), SUITES, ids=SUITE_IDS)
def test_child_sa_pair_talks_to_its_mirror(name: str, encr_id: int, bits: int, integ_id: int | None) -> None:
    a, b = make_child(encr_alg(encr_id, bits), integ_alg(integ_id) if integ_id is not None else None)
    pa, pb = ChildSaPair.from_child(a), ChildSaPair.from_child(b)
    assert (pa.spi_in, pa.spi_out) == (0x1001, 0x2002) and pa.udp_encap and pa.mode is Mode.TUNNEL
    inner = v4_packet()
    assert pb.inbound.open(pa.outbound.seal(inner, 4)) == (4, inner)
    assert pa.inbound.open(pb.outbound.seal(inner, 4)) == (4, inner)
    assert pa.inbound.replay.size == 1024


def test_child_sa_pair_lifetimes() -> None:
    a, _ = make_child(encr_alg(EncrId.AES_GCM_16, 128), None, lifetime_kb=1000)
    pair = ChildSaPair.from_child(a, replay_window=64, soft_ratio=0.5)
    assert pair.inbound.replay.size == 64
    pair.outbound.seal(bytes(500 * 1024), 4)
    assert pair.outbound.soft_expired and not pair.outbound.hard_expired
    a0, _ = make_child(encr_alg(EncrId.AES_GCM_16, 128), None, lifetime_kb=0)
    unlimited = ChildSaPair.from_child(a0)
    unlimited.outbound.seal(bytes(60000), 4)
    assert not unlimited.outbound.soft_expired


def test_gcm_contexts_are_made_by_the_first_packet_in_each_direction() -> None:
    """An AES-GCM context holds 2.5 kB of OpenSSL memory and many SAs never carry a packet (issue 13):
    none exists until the first packet, then it is the SA's for good."""
    import gc

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    def contexts(sa: object) -> int:
        return sum(isinstance(o, AESGCM) for o in gc.get_referents(sa))

    out, inb = make_pair(EncrId.AES_GCM_16, 256, None)
    assert contexts(out) == contexts(inb) == 0
    packets = [out.seal(v4_packet(), 4) for _ in range(3)]
    assert [inb.open(p)[1] for p in packets] == [v4_packet()] * 3
    assert contexts(out) == contexts(inb) == 0  # held through the bound method, not as a field
    assert isinstance(getattr(out._gcm_encrypt, "__self__", None), AESGCM)
    assert isinstance(getattr(inb._gcm_decrypt, "__self__", None), AESGCM)
    with pytest.raises(EspError):
        inb.open(packets[0])  # replayed: the window still works after the switch

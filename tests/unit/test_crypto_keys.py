"""IKEv2 key derivation against NIST CAVP SP 800-135 answers, and AUTH/key layout by construction."""

from __future__ import annotations

import hmac

import pytest

from ikegate.ike.crypto import (
    ChildKeys,
    IkeKeys,
    derive_child_keys,
    derive_ike_keys,
    encr_alg,
    integ_alg,
    prf_alg,
    psk_auth,
    rekey_skeyseed,
    signed_octets,
    skeyseed,
)
from ikegate.ike.wire.registry import EncrId, IntegId, PrfId

H = bytes.fromhex

# ---------------------------------------------------------------------------------------------------
# NIST CAVP, SP 800-135 "IKEv2 KDF" component test (ikev2.rsp).
#
# SHA-1: [SHA-1] [Ni length = 64] [Nr length = 64] [g^ir length = 256] [DKM length = 1056]
#        [Child SA DKM length = 1056], COUNT = 0. The same record appears in libreswan's CAVP test
#        (programs/cavp, "CAVP: IKEv2 key derivation with HMAC-SHA1") and in NSS's gtests IKE vectors.
# SHA-256: the [SHA-256] record with 64-bit nonces and a 256-bit g^ir as carried by NSS's gtests
#        (ike_sha256_vectors.h, "from NIST samples"): SKEYSEED, DKM and SKEYSEED(Rekey).
# ---------------------------------------------------------------------------------------------------
NIST_SHA1 = dict(
    ni="32b50d5f4a3763f3",
    nr="9206a04b26564cb1",
    gir="4b2c1f971981a8ad8d0abeafabf38cf75fc8349c148142465ed9c8b516b8be52",
    gir_new="863f3c9d06efd39d2b907b97f8699e5dd5251ef64a2a176f36ee40c87d4f9330",
    spii="34c9e7c188868785",
    spir="3ff77d760d2b2199",
    skeyseed="a9a7b222b59f8f48645f28a1db5b5f5d7479cba7",
    dkm="a14293677cc80ff8f9cc0eee30d895da9d8f405666e30ef0dfcb63c634a46002"
    "a2a63080e514a062768b76606f9fa5e992204fc5a670bde3f10d6b027113936a"
    "5c55b648a194ae587b0088d52204b702c979fa280870d2ed41efa9c549fd1119"
    "8af1670b143d384bd275c5f594cf266b05ebadca855e4249520a441a81157435"
    "a7a56cc4",
    dkm_child="8059e3ee8810e6c3a91bc8bcd2a7a41151b8d0e6ae239c7b38093ad85ef4c581"
    "1a8e7b5d1cdabd9560b2d5e092d1f24e2d4b85eccdf0ad0dc9abd94b51ee7181"
    "4ca6dbc8bb51b6309f5b9545c7eb35cf5580b1e521a8fe20754a2d883ba0c2cf"
    "285f524aea6545b33106bc03e614296d319d41d4b50b3f510b1c0a22f3e66499"
    "4d234cb4",
    dkm_child_dh="bb43244c1860ad65ee1e211ffe8bb3661750c8f89cb9f547df7f4fa61d373016"
    "28190e38c66232eab4b3ab14c400a5197dd3730ed4820a8a10394d51e1c04000"
    "52f63ebd36b0e7ef53aaed31eba4a5080d7d4b5666023a8bbb5ffb7857240f9a"
    "05884d1b7d2f933708450b7b3288f1fc863ab49fa901227cffc06e27899c7054"
    "d56fd74c",
    skeyseed_rekey="63e81194946ebd05df7df5ebf5d8750056bf1f1d",
)

NIST_SHA256 = dict(
    ni="3f302be1abcb28e1",
    nr="8c332ee006064c9b",
    gir="0f4d257d7a58fc4545c7d7a88119eee5d5c9690c5b4c989171d3abbfd99d1d29",
    gir_new="25f3b12d6f282739256e39bf54eda53b60ffcf379bb7bcc90c27b4c4c578616c",
    spii="40dac39e1e1a8640",
    spir="8619a1cf9a6e4c07",
    skeyseed="5f00d1bd2c58ec224b1e6b71fa0f19a1faa7a193952c444411b47c1a9d8ba6fe",
    dkm="0b137d669b0947d7d026d593f0305ad401ff0c471357d695778a9c7f4b4869ec"
    "e98aca531188d16041b3bb936d2dbb3b4993a6e768a809160de45d0283f273a6"
    "cdf6854379e31be72b8d3d1fa990cf9c5b015ca9f918a7df6253c958114a09d4"
    "e1c19bdcd4db14b29d98db1a74ad405c588662c14a04d0d36aa4ab55e90f8986"
    "d12d4aad",
    skeyseed_rekey="2d63f6debc92048b4fef3889c4c99ca67d6496e0fac14a2bca9a2d6566ff2398",
)


def _fields(keys: IkeKeys) -> list[bytes]:
    return [keys.sk_d, keys.sk_ai, keys.sk_ar, keys.sk_ei, keys.sk_er, keys.sk_pi, keys.sk_pr]


def test_nist_vectors_are_well_formed() -> None:
    for vector in (NIST_SHA1, NIST_SHA256):
        assert len(H(vector["dkm"])) == 132  # DKM length = 1056 bits
        assert len(H(vector["gir"])) == 32
    assert len(H(NIST_SHA1["dkm_child"])) == len(H(NIST_SHA1["dkm_child_dh"])) == 132


def test_nist_sha1_ike_sa() -> None:
    v = {k: H(s) for k, s in NIST_SHA1.items()}
    prf = prf_alg(PrfId.HMAC_SHA1)
    seed = skeyseed(prf, v["ni"], v["nr"], v["gir"])
    assert seed == v["skeyseed"]
    assert prf.plus(seed, v["ni"] + v["nr"] + v["spii"] + v["spir"], 132) == v["dkm"]

    # AES-CBC-128 with HMAC-SHA1-96 needs 3*20 + 2*20 + 2*16 = 132 bytes: exactly the NIST DKM.
    keys = derive_ike_keys(
        prf,
        encr_alg(EncrId.AES_CBC, 128),
        integ_alg(IntegId.HMAC_SHA1_96),
        seed,
        v["ni"],
        v["nr"],
        v["spii"],
        v["spir"],
    )
    assert [len(f) for f in _fields(keys)] == [20, 20, 20, 16, 16, 20, 20]
    assert b"".join(_fields(keys)) == v["dkm"]
    assert keys.sk_d == v["dkm"][:20]
    assert keys.sk_pr == v["dkm"][-20:]


def test_nist_sha1_child_sa_and_rekey() -> None:
    v = {k: H(s) for k, s in NIST_SHA1.items()}
    prf = prf_alg(PrfId.HMAC_SHA1)
    sk_d = v["dkm"][:20]
    assert prf.plus(sk_d, v["ni"] + v["nr"], 132) == v["dkm_child"]
    assert prf.plus(sk_d, v["gir_new"] + v["ni"] + v["nr"], 132) == v["dkm_child_dh"]

    encr, integ = encr_alg(EncrId.AES_CBC, 256), integ_alg(IntegId.HMAC_SHA1_96)
    child = derive_child_keys(prf, sk_d, encr, integ, v["ni"], v["nr"])
    assert child.encr_i + child.integ_i + child.encr_r + child.integ_r == v["dkm_child"][:104]
    assert (child.encr_i, child.integ_i) == (v["dkm_child"][:32], v["dkm_child"][32:52])
    assert (child.encr_r, child.integ_r) == (v["dkm_child"][52:84], v["dkm_child"][84:104])

    pfs = derive_child_keys(prf, sk_d, encr, integ, v["ni"], v["nr"], g_ir=v["gir_new"])
    assert pfs.encr_i + pfs.integ_i + pfs.encr_r + pfs.integ_r == v["dkm_child_dh"][:104]

    assert rekey_skeyseed(prf, sk_d, v["gir_new"], v["ni"], v["nr"]) == v["skeyseed_rekey"]


def test_nist_sha256_ike_sa_and_rekey() -> None:
    v = {k: H(s) for k, s in NIST_SHA256.items()}
    prf = prf_alg(PrfId.HMAC_SHA2_256)
    seed = skeyseed(prf, v["ni"], v["nr"], v["gir"])
    assert seed == v["skeyseed"]
    assert prf.plus(seed, v["ni"] + v["nr"] + v["spii"] + v["spir"], 132) == v["dkm"]

    keys = derive_ike_keys(
        prf,
        encr_alg(EncrId.AES_CBC, 128),
        integ_alg(IntegId.HMAC_SHA2_256_128),
        seed,
        v["ni"],
        v["nr"],
        v["spii"],
        v["spir"],
    )
    concatenated = b"".join(_fields(keys))
    assert len(concatenated) == 3 * 32 + 2 * 32 + 2 * 16
    assert concatenated[:132] == v["dkm"]  # prf+ output is a prefix-stable stream
    assert rekey_skeyseed(prf, keys.sk_d, v["gir_new"], v["ni"], v["nr"]) == v["skeyseed_rekey"]


# ---------------------------------------------------------------------------------------------------
# By construction: layout of the key streams, AEAD key sizes, AUTH
# ---------------------------------------------------------------------------------------------------
def _prf_plus_loop(hash_name: str, key: bytes, seed: bytes, length: int) -> bytes:
    """RFC 7296 §2.13 spelled out: T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n)."""
    stream, block, counter = b"", b"", 1
    while len(stream) < length:
        block = hmac.new(key, block + seed + bytes([counter]), hash_name).digest()
        stream += block
        counter += 1
    return stream[:length]


NI, NR = b"\x11" * 32, b"\x22" * 32
SPI_I, SPI_R = bytes.fromhex("0102030405060708"), bytes.fromhex("f1f2f3f4f5f6f7f8")


@pytest.mark.parametrize("bits", [128, 192, 256])
def test_gcm_ike_keys_include_salt_and_no_integrity_keys(bits: int) -> None:
    prf = prf_alg(PrfId.HMAC_SHA2_384)
    encr = encr_alg(EncrId.AES_GCM_16, bits)
    seed = b"S" * 48
    keys = derive_ike_keys(prf, encr, None, seed, NI, NR, SPI_I, SPI_R)
    key_size = bits // 8
    assert encr.keymat_size == key_size + 4
    assert (keys.sk_ai, keys.sk_ar) == (b"", b"")
    assert [len(f) for f in _fields(keys)] == [48, 0, 0, key_size + 4, key_size + 4, 48, 48]
    stream = _prf_plus_loop("sha384", seed, NI + NR + SPI_I + SPI_R, 3 * 48 + 2 * (key_size + 4))
    assert b"".join(_fields(keys)) == stream
    assert keys.sk_ei == stream[48 : 48 + key_size + 4]
    # The keymat is usable as is: key | salt.
    sealed = encr.keyed(keys.sk_ei).encrypt(b"\0" * 8, b"payload")
    assert encr.keyed(keys.sk_ei).decrypt(b"\0" * 8, sealed) == b"payload"


def test_ike_keys_order_with_integrity() -> None:
    prf = prf_alg(PrfId.HMAC_SHA2_256)
    encr, integ = encr_alg(EncrId.AES_CBC, 256), integ_alg(IntegId.HMAC_SHA2_512_256)
    seed = b"\x5a" * 32
    keys = derive_ike_keys(prf, encr, integ, seed, NI, NR, SPI_I, SPI_R)
    stream = _prf_plus_loop("sha256", seed, NI + NR + SPI_I + SPI_R, 32 + 64 + 64 + 32 + 32 + 32 + 32)
    expected = [stream[0:32], stream[32:96], stream[96:160], stream[160:192], stream[192:224]]
    expected += [stream[224:256], stream[256:288]]
    assert _fields(keys) == expected
    assert len(set(_fields(keys))) == 7


@pytest.mark.parametrize("with_pfs", [False, True])
def test_child_keys_order_and_gcm_salt(with_pfs: bool) -> None:
    prf = prf_alg(PrfId.HMAC_SHA2_256)
    sk_d = b"\x33" * 32
    g_ir = b"\x44" * 256 if with_pfs else None
    gcm = encr_alg(EncrId.AES_GCM_16, 256)
    child = derive_child_keys(prf, sk_d, gcm, None, NI, NR, g_ir=g_ir)
    stream = _prf_plus_loop("sha256", sk_d, (g_ir or b"") + NI + NR, 72)
    assert child == ChildKeys(stream[:36], b"", stream[36:], b"")

    cbc, integ = encr_alg(EncrId.AES_CBC, 128), integ_alg(IntegId.HMAC_SHA2_256_128)
    child = derive_child_keys(prf, sk_d, cbc, integ, NI, NR, g_ir=g_ir)
    stream = _prf_plus_loop("sha256", sk_d, (g_ir or b"") + NI + NR, 2 * (16 + 32))
    # RFC 7296 §2.17: initiator->responder first, encryption key before integrity key.
    assert child == ChildKeys(stream[:16], stream[16:48], stream[48:64], stream[64:96])


def test_pfs_changes_child_keys() -> None:
    prf = prf_alg(PrfId.HMAC_SHA2_256)
    encr = encr_alg(EncrId.AES_GCM_16, 128)
    plain = derive_child_keys(prf, b"d" * 32, encr, None, NI, NR)
    pfs = derive_child_keys(prf, b"d" * 32, encr, None, NI, NR, g_ir=b"\x01" * 32)
    assert plain != pfs


def test_skeyseed_by_construction() -> None:
    prf = prf_alg(PrfId.HMAC_SHA2_512)
    g_ir = b"\x07" * 256
    assert skeyseed(prf, NI, NR, g_ir) == hmac.new(NI + NR, g_ir, "sha512").digest()
    sk_d = b"\x08" * 64
    assert rekey_skeyseed(prf, sk_d, g_ir, NI, NR) == hmac.new(sk_d, g_ir + NI + NR, "sha512").digest()
    assert skeyseed(prf, NR, NI, g_ir) != skeyseed(prf, NI, NR, g_ir)  # nonce order matters


def test_psk_auth_and_signed_octets_by_construction() -> None:
    prf = prf_alg(PrfId.HMAC_SHA2_256)
    psk = b"correct horse battery staple"
    init_msg = b"IKE_SA_INIT request bytes" * 4
    nonce_r = b"\x99" * 32
    sk_pi = bytes(range(32))
    id_body = b"\x01\x00\x00\x00" + bytes([192, 0, 2, 1])  # ID_IPV4_ADDR, RESERVED, 192.0.2.1

    octets = signed_octets(init_msg, nonce_r, prf, sk_pi, id_body)
    assert octets == init_msg + nonce_r + hmac.new(sk_pi, id_body, "sha256").digest()

    auth = psk_auth(prf, psk, octets)
    pad_key = hmac.new(psk, b"Key Pad for IKEv2", "sha256").digest()
    assert auth == hmac.new(pad_key, octets, "sha256").digest()
    assert len(auth) == 32

    # The responder recomputes the same value; any change in the inputs breaks it.
    assert psk_auth(prf, psk, signed_octets(init_msg, nonce_r, prf, sk_pi, id_body)) == auth
    assert psk_auth(prf, psk + b"!", octets) != auth
    assert psk_auth(prf, psk, signed_octets(init_msg, nonce_r[:-1] + b"\0", prf, sk_pi, id_body)) != auth
    assert psk_auth(prf, psk, signed_octets(init_msg, nonce_r, prf, sk_pi[::-1], id_body)) != auth
    assert psk_auth(prf, psk, signed_octets(init_msg, nonce_r, prf, sk_pi, id_body + b"\0")) != auth


def test_key_containers_do_not_print_secrets() -> None:
    keys = IkeKeys(b"\xde\xad", b"", b"", b"", b"", b"", b"")
    assert "dead" not in repr(keys) and "\\xde" not in repr(keys)
    assert "\\x" not in repr(ChildKeys(b"\x01", b"\x02", b"\x03", b"\x04"))

"""Encryption transforms: AES-CBC and AES-GCM known answers, AEAD tamper checks, 3DES round trip."""

from __future__ import annotations

import pytest

from ikegate.ike.crypto import CryptoError, UnsupportedTransform, encr_alg
from ikegate.ike.wire.registry import EncrId

H = bytes.fromhex

# RFC 3602 §4, Cases #1-#3 (AES-128-CBC, no padding involved).
_RFC3602 = [
    (
        "06a9214036b8a15b512e03d534120006",
        "3dafba429d9eb430b422da802c9fac41",
        b"Single block msg".hex(),
        "e353779c1079aeb82708942dbe77181a",
    ),
    (
        "c286696d887c9aa0611bbb3e2025a45a",
        "562e17996d093d28ddb3ba695a2e6f58",
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "d296cd94c2cccf8a3a863028b5e1dc0a7586602d253cfff91b8266bea6d61ab1",
    ),
    (
        "56e47a38c5598974bc46903dba290349",
        "8ce82eefbea0da3c44699ed7db51b7d9",
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
        "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf",
        "c30e32ffedc0774e6aff6af0869f71aa0f3af07a9a31a9c684db207eb0ef8e4e"
        "35907aa632c3ffdf868bb7b29d3d46ad83ce9f9a102ee99d49a53e87f4c3da55",
    ),
]


@pytest.mark.parametrize(("key", "iv", "plain", "cipher"), _RFC3602)
def test_aes_cbc_matches_rfc3602(key: str, iv: str, plain: str, cipher: str) -> None:
    c = encr_alg(EncrId.AES_CBC, 128).keyed(H(key))
    assert c.encrypt(H(iv), H(plain)) == H(cipher)
    assert c.decrypt(H(iv), H(cipher)) == H(plain)


# McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)" (NIST submission, 2005), Appendix B
# test cases 3, 4 (AES-128), 9 (AES-192), 15, 16 (AES-256). Their 96-bit IV cafebabe facedbaddecaf888
# splits into the RFC 4106 salt (cafebabe, the last 4 bytes of the keymat) and the 8-byte ESP/IKE IV.
_GCM_KEY = "feffe9928665731c6d6a8f9467308308"
_GCM_SALT = "cafebabe"
_GCM_IV = "facedbaddecaf888"
_GCM_PLAIN = (
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255"
)
_GCM_AAD = "feedfacedeadbeeffeedfacedeadbeefabaddad2"
_GCM_CASES = [
    (  # test case 3
        128,
        _GCM_KEY,
        _GCM_PLAIN,
        "",
        "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
        "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985"
        "4d5c2af327cd64a62cf35abd2ba6fab4",
    ),
    (  # test case 4
        128,
        _GCM_KEY,
        _GCM_PLAIN[:120],
        _GCM_AAD,
        "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
        "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091"
        "5bc94fbc3221a5db94fae95ae7121a47",
    ),
    (  # test case 9
        192,
        _GCM_KEY + _GCM_KEY[:16],
        _GCM_PLAIN,
        "",
        "3980ca0b3c00e841eb06fac4872a2757859e1ceaa6efd984628593b40ca1e19c"
        "7d773d00c144c525ac619d18c84a3f4718e2448b2fe324d9ccda2710acade256"
        "9924a7c8587336bfb118024db8674a14",
    ),
    (  # test case 15
        256,
        _GCM_KEY * 2,
        _GCM_PLAIN,
        "",
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad"
        "b094dac5d93471bdec1a502270e3cc6c",
    ),
    (  # test case 16
        256,
        _GCM_KEY * 2,
        _GCM_PLAIN[:120],
        _GCM_AAD,
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
        "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
        "76fc6ece0f4e1768cddf8853bb2d551b",
    ),
]


@pytest.mark.parametrize(("bits", "key", "plain", "aad", "sealed"), _GCM_CASES)
def test_aes_gcm_matches_mcgrew_viega(bits: int, key: str, plain: str, aad: str, sealed: str) -> None:
    alg = encr_alg(EncrId.AES_GCM_16, bits)
    c = alg.keyed(H(key + _GCM_SALT))
    assert c.encrypt(H(_GCM_IV), H(plain), H(aad)) == H(sealed)
    assert c.decrypt(H(_GCM_IV), H(sealed), H(aad)) == H(plain)


@pytest.mark.parametrize("bits", [128, 192, 256])
def test_gcm_salt_and_iv_form_the_nonce(bits: int) -> None:
    alg = encr_alg(EncrId.AES_GCM_16, bits)
    keymat = bytes(range(alg.keymat_size))
    c = alg.keyed(keymat)
    iv, aad, plain = b"\x01" * 8, b"IKE header", b"inner payloads" * 7
    sealed = c.encrypt(iv, plain, aad)
    assert len(sealed) == len(plain) + 16
    assert c.decrypt(iv, sealed, aad) == plain
    # A second object with the same keymat opens it (no hidden per-object state) ...
    assert alg.keyed(keymat).decrypt(iv, sealed, aad) == plain
    # ... but another salt, another IV or other AAD do not: all three feed the nonce or the tag.
    other_salt = keymat[:-1] + bytes([keymat[-1] ^ 1])
    with pytest.raises(CryptoError):
        alg.keyed(other_salt).decrypt(iv, sealed, aad)
    with pytest.raises(CryptoError):
        c.decrypt(b"\x02" * 8, sealed, aad)
    with pytest.raises(CryptoError):
        c.decrypt(iv, sealed, aad + b"!")


def test_gcm_tag_or_ciphertext_tamper_is_rejected() -> None:
    c = encr_alg(EncrId.AES_GCM_16, 256).keyed(bytes(36))
    iv = bytes(8)
    sealed = c.encrypt(iv, b"x" * 40)
    for index in (0, 39, 40, len(sealed) - 1):  # ciphertext bytes and tag bytes
        tampered = bytearray(sealed)
        tampered[index] ^= 0x80
        with pytest.raises(CryptoError):
            c.decrypt(iv, bytes(tampered))
    with pytest.raises(CryptoError):
        c.decrypt(iv, sealed[:-1])
    with pytest.raises(CryptoError):
        c.decrypt(iv, sealed[:15])  # shorter than the ICV
    with pytest.raises(CryptoError):
        c.encrypt(bytes(12), b"data")  # a full 12-byte nonce is not an IV


@pytest.mark.parametrize(("encr_id", "bits"), [(EncrId.AES_CBC, 256), (EncrId.TRIPLE_DES, None)])
def test_cbc_refuses_partial_blocks_and_bad_iv(encr_id: int, bits: int | None) -> None:
    alg = encr_alg(encr_id, bits)
    c = alg.keyed(bytes(alg.keymat_size))
    iv = bytes(alg.iv_size)
    for size in (1, alg.block_size - 1, alg.block_size + 1):
        with pytest.raises(CryptoError):
            c.encrypt(iv, bytes(size))
        with pytest.raises(CryptoError):
            c.decrypt(iv, bytes(size))
    with pytest.raises(CryptoError):
        c.encrypt(iv[:-1], bytes(alg.block_size))


def test_triple_des_round_trip() -> None:
    alg = encr_alg(EncrId.TRIPLE_DES, None)
    assert alg is encr_alg(EncrId.TRIPLE_DES, 192)
    key = bytes.fromhex("0123456789abcdef23456789abcdef01456789abcdef0123")
    c = alg.keyed(key)
    iv, plain = bytes.fromhex("1234567890abcdef"), b"IKEv2 SK payload, 32 bytes long!"
    sealed = c.encrypt(iv, plain)
    assert len(sealed) == len(plain) and sealed != plain
    assert c.decrypt(iv, sealed) == plain
    assert c.encrypt(bytes(8), plain) != sealed  # the IV matters
    assert alg.keyed(key[::-1]).decrypt(iv, sealed) != plain  # so does the key


def test_cbc_chains_blocks() -> None:
    # Equal plaintext blocks must give different ciphertext blocks (CBC, not ECB).
    c = encr_alg(EncrId.AES_CBC, 128).keyed(bytes(16))
    out = c.encrypt(bytes(16), bytes(32))
    assert out[:16] != out[16:]


_SIZES = [
    # id, bits, name, key, salt, keymat, iv, block, icv, aead
    (EncrId.AES_CBC, 128, "AES-CBC-128", 16, 0, 16, 16, 16, 0, False),
    (EncrId.AES_CBC, 192, "AES-CBC-192", 24, 0, 24, 16, 16, 0, False),
    (EncrId.AES_CBC, 256, "AES-CBC-256", 32, 0, 32, 16, 16, 0, False),
    (EncrId.AES_GCM_16, 128, "AES-GCM-16-128", 16, 4, 20, 8, 1, 16, True),
    (EncrId.AES_GCM_16, 192, "AES-GCM-16-192", 24, 4, 28, 8, 1, 16, True),
    (EncrId.AES_GCM_16, 256, "AES-GCM-16-256", 32, 4, 36, 8, 1, 16, True),
    (EncrId.TRIPLE_DES, None, "3DES-CBC", 24, 0, 24, 8, 8, 0, False),
]


@pytest.mark.parametrize(
    ("encr_id", "bits", "name", "key", "salt", "keymat", "iv", "block", "icv", "aead"), _SIZES
)
def test_encr_attributes(
    encr_id: int,
    bits: int | None,
    name: str,
    key: int,
    salt: int,
    keymat: int,
    iv: int,
    block: int,
    icv: int,
    aead: bool,
) -> None:
    alg = encr_alg(encr_id, bits)
    assert (alg.id, alg.key_bits, alg.name) == (encr_id, bits or 192, name)
    assert (alg.key_size, alg.salt_size, alg.keymat_size) == (key, salt, keymat)
    assert (alg.iv_size, alg.block_size, alg.icv_size, alg.aead) == (iv, block, icv, aead)
    assert encr_alg(encr_id, bits) is alg
    with pytest.raises(CryptoError):
        alg.keyed(bytes(keymat - 1))
    with pytest.raises(CryptoError):
        alg.keyed(bytes(keymat + 1))


@pytest.mark.parametrize(
    ("encr_id", "bits"),
    [
        (EncrId.AES_CBC, None),
        (EncrId.AES_CBC, 64),
        (EncrId.AES_GCM_16, 512),
        (EncrId.AES_GCM_8, 128),
        (EncrId.AES_CTR, 128),
        (EncrId.CHACHA20_POLY1305, 256),  # supported without a Key Length only (RFC 7634 §4)
        (EncrId.DES, None),
        (EncrId.NULL, None),
        (EncrId.TRIPLE_DES, 128),
        (999, 128),
    ],
)
def test_unsupported_encr(encr_id: int, bits: int | None) -> None:
    with pytest.raises(UnsupportedTransform):
        encr_alg(encr_id, bits)

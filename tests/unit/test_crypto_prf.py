"""PRF, prf+ and integrity transforms against published HMAC vectors and the RFC 7296 definition."""

from __future__ import annotations

import hmac

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from ikegate.ike.crypto import CryptoError, UnsupportedTransform, integ_alg, prf_alg
from ikegate.ike.wire.registry import IntegId, PrfId

H = bytes.fromhex

# ---------------------------------------------------------------------------------------------------
# RFC 4231 §4.2-§4.8 test cases 1, 2, 3, 4, 6, 7 (case 5 tests output truncation, not a PRF).
# RFC 4868 §2.7.1 reuses exactly these inputs as PRF-1..PRF-6 for PRF_HMAC_SHA2_256/384/512.
# ---------------------------------------------------------------------------------------------------
_LONG_KEY = b"\xaa" * 131
_RFC4231_INPUTS = {
    1: (b"\x0b" * 20, b"Hi There"),
    2: (b"Jefe", b"what do ya want for nothing?"),
    3: (b"\xaa" * 20, b"\xdd" * 50),
    4: (H("0102030405060708090a0b0c0d0e0f10111213141516171819"), b"\xcd" * 50),
    6: (_LONG_KEY, b"Test Using Larger Than Block-Size Key - Hash Key First"),
    7: (
        _LONG_KEY,
        b"This is a test using a larger than block-size key and a larger than block-size data. "
        b"The key needs to be hashed before being used by the HMAC algorithm.",
    ),
}
_RFC4231_OUTPUTS = {
    PrfId.HMAC_SHA2_256: {
        1: "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        2: "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        3: "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
        4: "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
        6: "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        7: "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
    },
    PrfId.HMAC_SHA2_384: {
        1: "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6",
        2: "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649",
        3: "88062608d3e6ad8a0aa2ace014c8a86f0aa635d947ac9febe83ef4e55966144b2a5ab39dc13814b94e3ab6e101a34f27",
        4: "3e8a69b7783c25851933ab6290af6ca77a9981480850009cc5577c6e1f573b4e6801dd23c4a7d679ccf8a386c674cffb",
        6: "4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c60c2ef6ab4030fe8296248df163f44952",
        7: "6617178e941f020d351e2f254e8fd32c602420feb0b8fb9adccebb82461e99c5a678cc31e799176d3860e6110c46523e",
    },
    PrfId.HMAC_SHA2_512: {
        1: "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
        "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
        2: "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
        "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
        3: "fa73b0089d56a284efb0f0756c890be9b1b5dbdd8ee81a3655f83e33b2279d39"
        "bf3e848279a722c806b485a47e67c807b946a337bee8942674278859e13292fb",
        4: "b0ba465637458c6990e5a8c5f61d4af7e576d97ff94b872de76f8050361ee3db"
        "a91ca5c11aa25eb4d679275cc5788063a5f19741120c4f2de2adebeb10a298dd",
        6: "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f352"
        "6b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598",
        7: "e37b6a775dc87dbaa4dfa9f96e5e3ffddebd71f8867289865df5a32d20cdc944"
        "b6022cac3c4982b10d5eeb55c3e4de15134676fb6de0446065c97440fa8c6a58",
    },
}
_RFC4231_CASES = [
    (prf_id, case, out) for prf_id, outputs in _RFC4231_OUTPUTS.items() for case, out in outputs.items()
]


@pytest.mark.parametrize(("prf_id", "case", "expected"), _RFC4231_CASES)
def test_hmac_sha2_prf_matches_rfc4231(prf_id: PrfId, case: int, expected: str) -> None:
    key, data = _RFC4231_INPUTS[case]
    assert prf_alg(prf_id).compute(key, data) == H(expected)


# RFC 2202 §3 (HMAC-SHA-1) test cases 1, 2, 3, 4, 6, 7 and §2 (HMAC-MD5) cases 1, 2.
_RFC2202_SHA1 = [
    (b"\x0b" * 20, b"Hi There", "b617318655057264e28bc0b6fb378c8ef146be00"),
    (b"Jefe", b"what do ya want for nothing?", "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
    (b"\xaa" * 20, b"\xdd" * 50, "125d7342b9ac11cd91a39af48aa17b4f63f175d3"),
    (H("0102030405060708090a0b0c0d0e0f10111213141516171819"), b"\xcd" * 50,
     "4c9007f4026250c6bc8414f9bf50c86c2d7235da"),
    (b"\xaa" * 80, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "aa4ae5e15272d00e95705637ce8a3b55ed402112"),
    (b"\xaa" * 80, b"Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data",
     "e8e99d0f45237d786d6bbaa7965c7808bbff1a91"),
]  # fmt: skip


@pytest.mark.parametrize(("key", "data", "expected"), _RFC2202_SHA1)
def test_hmac_sha1_prf_matches_rfc2202(key: bytes, data: bytes, expected: str) -> None:
    assert prf_alg(PrfId.HMAC_SHA1).compute(key, data) == H(expected)


def test_hmac_md5_prf_matches_rfc2202() -> None:
    prf = prf_alg(PrfId.HMAC_MD5)
    assert prf.compute(b"\x0b" * 16, b"Hi There") == H("9294727a3638bb1c13f48ef8158bfc9d")
    assert prf.compute(b"Jefe", b"what do ya want for nothing?") == H("750c783e6ab0b503eaa86e310a5db738")


# ---------------------------------------------------------------------------------------------------
# RFC 4868 §2.7.2: the truncated authenticators, keys of exactly the hash size.
# AUTH256-1..3 (§2.7.2.1), AUTH384-1..3 (§2.7.2.2), AUTH512-1..3 (§2.7.2.3).
# ---------------------------------------------------------------------------------------------------
def _auth_inputs(size: int) -> list[tuple[bytes, bytes]]:
    return [
        (b"\x0b" * size, b"Hi There"),
        ((b"Jefe" * 16)[:size], b"what do ya want for nothing?"),
        (b"\xaa" * size, b"\xdd" * 50),
    ]


_RFC4868_AUTH = {
    IntegId.HMAC_SHA2_256_128: (
        32,
        [
            "198a607eb44bfbc69903a0f1cf2bbdc5",
            "167f928588c5cc2eef8e3093caa0e87c",
            "cdcb1220d1ecccea91e53aba3092f962",
        ],
    ),
    IntegId.HMAC_SHA2_384_192: (
        48,
        [
            "b6a8d5636f5c6a7224f9977dcf7ee6c7fb6d0c48cbdee973",
            "2c7353974f1842fd66d53c452ca42122b28c0b594cfb184d",
            "809f439be00274321d4a538652164b53554a508184a0c316",
        ],
    ),
    IntegId.HMAC_SHA2_512_256: (
        64,
        [
            "637edc6e01dce7e6742a99451aae82df23da3e92439e590e43e761b33e910fb8",
            "cb370917ae8a7ce28cfd1d8f4705d6141c173b2a9362c15df235dfb251b15454",
            "2ee7acd783624ca9398710f3ee05ae41b9f9b0510c87e49e586cc9bf961733d8",
        ],
    ),
}
_AUTH_CASES = [
    (integ_id, key, data, icv)
    for integ_id, (size, icvs) in _RFC4868_AUTH.items()
    for (key, data), icv in zip(_auth_inputs(size), icvs, strict=True)
]


@pytest.mark.parametrize(("integ_id", "key", "data", "icv"), _AUTH_CASES)
def test_truncated_authenticator_matches_rfc4868(
    integ_id: IntegId, key: bytes, data: bytes, icv: str
) -> None:
    mac = integ_alg(integ_id).keyed(key)
    assert mac.sign(data) == H(icv)
    assert mac.verify(data, H(icv))


def test_hmac_sha1_96_is_rfc2202_truncated() -> None:
    # RFC 2404 §2.2: HMAC-SHA-1-96 keeps the first 96 bits; RFC 2202 §3 cases 1 and 3 (20-byte keys).
    alg = integ_alg(IntegId.HMAC_SHA1_96)
    assert (alg.key_size, alg.icv_size) == (20, 12)
    assert alg.keyed(b"\x0b" * 20).sign(b"Hi There") == H("b617318655057264e28bc0b6")
    assert alg.keyed(b"\xaa" * 20).sign(b"\xdd" * 50) == H("125d7342b9ac11cd91a39af4")


_INTEG_HASH = {
    IntegId.HMAC_SHA1_96: "sha1",
    IntegId.HMAC_SHA2_256_128: "sha256",
    IntegId.HMAC_SHA2_384_192: "sha384",
    IntegId.HMAC_SHA2_512_256: "sha512",
}


@pytest.mark.parametrize("integ_id", list(_INTEG_HASH))
def test_verify_rejects_flipped_bit_and_wrong_length(integ_id: IntegId) -> None:
    alg = integ_alg(integ_id)
    mac = alg.keyed(bytes(range(alg.key_size)))
    data = b"IKE message body" * 5
    icv = mac.sign(data)
    assert len(icv) == alg.icv_size
    assert mac.verify(data, icv)
    for bit in (0, 7, 8 * alg.icv_size - 1):
        flipped = bytearray(icv)
        flipped[bit // 8] ^= 1 << (bit % 8)
        assert not mac.verify(data, bytes(flipped))
    assert not mac.verify(data + b"x", icv)
    assert not mac.verify(data, icv[:-1])
    assert not mac.verify(data, icv + b"\0")
    full = hmac.digest(bytes(range(alg.key_size)), data, _INTEG_HASH[integ_id])
    assert not mac.verify(data, full)  # the untruncated HMAC is not a valid ICV


def test_integ_key_must_have_transform_length() -> None:
    with pytest.raises(CryptoError):
        integ_alg(IntegId.HMAC_SHA2_256_128).keyed(b"\0" * 31)


# ---------------------------------------------------------------------------------------------------
# prf+ (RFC 7296 §2.13)
# ---------------------------------------------------------------------------------------------------
def _prf_plus_by_the_book(hash_name: str, key: bytes, seed: bytes, length: int) -> bytes:
    """T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n), written as plainly as the RFC states it."""
    out = b""
    t = b""
    n = 1
    while len(out) < length:
        t = hmac.new(key, t + seed + bytes([n]), hash_name).digest()
        out += t
        n += 1
    return out[:length]


_HASHES = {
    PrfId.HMAC_MD5: ("md5", hashes.MD5()),
    PrfId.HMAC_SHA1: ("sha1", hashes.SHA1()),
    PrfId.HMAC_SHA2_256: ("sha256", hashes.SHA256()),
    PrfId.HMAC_SHA2_384: ("sha384", hashes.SHA384()),
    PrfId.HMAC_SHA2_512: ("sha512", hashes.SHA512()),
}


@pytest.mark.parametrize("prf_id", list(_HASHES))
@pytest.mark.parametrize("length", [1, 20, 32, 33, 132, 200, 1000])
def test_prf_plus_matches_definition_and_hkdf_expand(prf_id: PrfId, length: int) -> None:
    prf = prf_alg(prf_id)
    hash_name, lib_hash = _HASHES[prf_id]
    key = bytes(range(prf.key_size))
    seed = b"Ni" * 16 + b"Nr" * 16 + bytes(16)
    derived = prf.plus(key, seed, length)
    assert len(derived) == length
    assert derived == _prf_plus_by_the_book(hash_name, key, seed, length)
    if length <= 255 * prf.output_size:
        assert derived == HKDFExpand(lib_hash, length, seed).derive(key)


def test_prf_plus_prefix_is_stable_and_limit_enforced() -> None:
    prf = prf_alg(PrfId.HMAC_SHA2_256)
    key, seed = b"k" * 32, b"seed"
    assert prf.plus(key, seed, 0) == b""
    with pytest.raises(CryptoError):
        prf.plus(key, seed, -1)
    assert prf.plus(key, seed, 100)[:40] == prf.plus(key, seed, 40)
    assert len(prf.plus(key, seed, 255 * 32)) == 255 * 32
    with pytest.raises(CryptoError):
        prf.plus(key, seed, 255 * 32 + 1)


def test_prf_attributes() -> None:
    sizes = {
        PrfId.HMAC_SHA1: ("HMAC-SHA1", 20),
        PrfId.HMAC_SHA2_256: ("HMAC-SHA2-256", 32),
        PrfId.HMAC_SHA2_384: ("HMAC-SHA2-384", 48),
        PrfId.HMAC_SHA2_512: ("HMAC-SHA2-512", 64),
    }
    for prf_id, (name, size) in sizes.items():
        prf = prf_alg(prf_id)
        assert (prf.id, prf.name, prf.key_size, prf.output_size) == (prf_id, name, size, size)
        assert prf_alg(prf_id) is prf  # cached, not rebuilt per negotiation


def test_integ_attributes() -> None:
    expected = {
        IntegId.HMAC_SHA1_96: ("HMAC-SHA1-96", 20, 12),
        IntegId.HMAC_SHA2_256_128: ("HMAC-SHA2-256-128", 32, 16),
        IntegId.HMAC_SHA2_384_192: ("HMAC-SHA2-384-192", 48, 24),
        IntegId.HMAC_SHA2_512_256: ("HMAC-SHA2-512-256", 64, 32),
    }
    for integ_id, (name, key_size, icv_size) in expected.items():
        alg = integ_alg(integ_id)
        assert (alg.id, alg.name, alg.key_size, alg.icv_size) == (integ_id, name, key_size, icv_size)


@pytest.mark.parametrize("prf_id", [PrfId.AES128_XCBC, PrfId.AES128_CMAC, 0, 999])
def test_unknown_prf_is_unsupported(prf_id: int) -> None:
    with pytest.raises(UnsupportedTransform):
        prf_alg(prf_id)


@pytest.mark.parametrize("integ_id", [IntegId.NONE, IntegId.AES_XCBC_96, 999])
def test_unknown_integ_is_unsupported(integ_id: int) -> None:
    with pytest.raises(UnsupportedTransform):
        integ_alg(integ_id)

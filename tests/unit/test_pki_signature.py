"""Signature primitives for IKE AUTH: known-answer vectors (RFC 4754, RFC 7427 Appendix A), round trips
for every method, and cross-checks with ``cryptography``'s own verifiers."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from ikegate.ike.wire.registry import AuthMethod
from ikegate.pki.signature import (
    HashAlgorithm,
    Scheme,
    SchemeKind,
    SignatureError,
    auth_sign,
    auth_verify,
    choose_method,
    decode_hash_algorithms,
    encode_hash_algorithms,
    ikev1_auth_method,
    ikev1_rsa_sign,
    ikev1_rsa_verify,
    ikev1_sign,
    ikev1_verify,
    parse_algorithm_identifier,
)
from tests.unit.pki_factory import ec_key, rsa_key

# RFC 7427 Appendix A: the AlgorithmIdentifier octets of AUTH method 14, as printed there.
RFC7427_A = {
    Scheme(SchemeKind.RSA_PKCS1, HashAlgorithm.SHA1): "300d06092a864886f70d0101050500",
    Scheme(SchemeKind.RSA_PKCS1, HashAlgorithm.SHA2_256): "300d06092a864886f70d01010b0500",
    Scheme(SchemeKind.RSA_PKCS1, HashAlgorithm.SHA2_384): "300d06092a864886f70d01010c0500",
    Scheme(SchemeKind.RSA_PKCS1, HashAlgorithm.SHA2_512): "300d06092a864886f70d01010d0500",
    Scheme(SchemeKind.ECDSA, HashAlgorithm.SHA1): "300906072a8648ce3d0401",
    Scheme(SchemeKind.ECDSA, HashAlgorithm.SHA2_256): "300a06082a8648ce3d040302",
    Scheme(SchemeKind.ECDSA, HashAlgorithm.SHA2_384): "300a06082a8648ce3d040303",
    Scheme(SchemeKind.ECDSA, HashAlgorithm.SHA2_512): "300a06082a8648ce3d040304",
    # A.4.3: RSASSA-PSS with SHA-256, MGF1 with SHA-256, salt length 32.
    Scheme(SchemeKind.RSA_PSS, HashAlgorithm.SHA2_256): (
        "304106092a864886f70d01010a3034a00f300d06096086480165030402010500a11c301a06092a864886f70d010108"
        "300d06096086480165030402010500a203020120"),
}


@pytest.mark.parametrize("scheme", list(RFC7427_A), ids=lambda s: s.name)
def test_algorithm_identifiers_are_rfc7427_appendix_a(scheme: Scheme) -> None:
    encoded = scheme.algorithm_identifier()
    assert encoded.hex() == RFC7427_A[scheme]
    parsed = parse_algorithm_identifier(encoded)
    assert (parsed.kind, parsed.hash) == (scheme.kind, scheme.hash)


def test_pss_with_empty_parameters_means_sha1_defaults() -> None:
    # RFC 7427 A.4.1: RSASSA-PSS with empty parameters (SHA-1, MGF1-SHA-1, salt 20).
    parsed = parse_algorithm_identifier(bytes.fromhex("300d06092a864886f70d01010a3000"))
    assert parsed == Scheme(SchemeKind.RSA_PSS, HashAlgorithm.SHA1, HashAlgorithm.SHA1, 20)


def test_unknown_and_malformed_identifiers_are_refused_with_a_reason() -> None:
    with pytest.raises(SignatureError, match=r"unknown signature algorithm 1\.2\.840\.10040\.4\.3"):
        parse_algorithm_identifier(bytes.fromhex("300906072a8648ce380403"))  # dsa-with-sha1
    with pytest.raises(SignatureError, match="unreadable"):
        parse_algorithm_identifier(bytes.fromhex("300d0609"))


# RFC 4754 §8.1: ECDSA-256 test case (message "abc").
W = 0xDC51D3866A15BACDE33D96F992FCA99DA7E6EF0934E7097559C27F1614C88A7F
GWX = 0x2442A5CC0ECD015FA3CA31DC8E2BBC70BF42D60CBCA20085E0822CB04235E970
GWY = 0x6FC98BD7E50211A4A27102FA3549DF79EBCB4BF246B80945CDDFE7D509BBFD7D
R = "CB28E0999B9C7715FD0A80D8E47A77079716CBBF917DD72E97566EA1C066957C"
S = "86FA3BB4E26CAD5BF90B7F81899256CE7594BB1EA0C89212748BFF3B3D5B0315"


def test_rfc4754_ecdsa_256_vector_verifies_as_auth_method_9() -> None:
    public = ec.EllipticCurvePublicNumbers(GWX, GWY, ec.SECP256R1()).public_key()
    assert ec.derive_private_key(W, ec.SECP256R1()).public_key().public_numbers() == public.public_numbers()
    signature = bytes.fromhex(R + S)
    assert auth_verify(AuthMethod.ECDSA_SHA256_P256, public, b"abc", signature) is None
    tampered = signature[:-1] + bytes([signature[-1] ^ 1])
    with pytest.raises(SignatureError, match="does not verify"):
        auth_verify(AuthMethod.ECDSA_SHA256_P256, public, b"abc", tampered)
    with pytest.raises(SignatureError, match="does not verify"):
        auth_verify(AuthMethod.ECDSA_SHA256_P256, public, b"abd", signature)


# RFC 4754 §8.2 (ECDSA-384) and §8.3 (ECDSA-521): public key x || y, then r || s; message "abc".
RFC4754_384 = (
    "96281BF8DD5E0525CA049C048D345D3082968D10FEDF5C5ACA0C64E6465A97EA5CE10C9DFEC21797415710721F437922"
    "447688BA94708EB6E2E4D59F6AB6D7EDFF9301D249FE49C33096655F5D502FAD3D383B91C5E7EDAA2B714CC99D5743CA",
    "FB017B914E29149432D8BAC29A514640B46F53DDAB2C69948084E2930F1C8F7E08E07C9C63F2D21A07DCB56A6AF56EB3"
    "B263A1305E057F984D38726A1B46874109F417BCA112674C528262A40A629AF1CBB9F516CE0FA7D2FF630863A00E8B9F",
)
RFC4754_521 = (
    "0151518F1AF0F563517EDD5485190DF95A4BF57B5CBA4CF2A9A3F6474725A35F7AFE0A6DDEB8BEDBCD6A197E592D40188901CECD65"
    "0699C9B5E456AEA5ADD19052A8006F3B142EA1BFFF7E2837AD44C9E4FF6D2D34C73184BBAD90026DD5E6E85317D9DF45CAD7803C6C"
    "20035B2F3FF63AFF4E1BA64D1C077577DA3F4286C58F0AEAE643",
    "0154FD3836AF92D0DCA57DD5341D3053988534FDE8318FC6AAAAB68E2E6F4339B19F2F281A7E0B22C269D93CF8794A9278880ED7DB"
    "B8D9362CAEACEE544320552251017705A7030290D1CEB605A9A1BB03FF9CDD521E87A696EC926C8C10C8362DF4975367101F67D1CF"
    "9BCCBF2F3D239534FA509E70AAC851AE01AAC68D62F866472660",
)


@pytest.mark.parametrize(("method", "curve", "vector"), [
    (AuthMethod.ECDSA_SHA384_P384, ec.SECP384R1(), RFC4754_384),
    (AuthMethod.ECDSA_SHA512_P521, ec.SECP521R1(), RFC4754_521),
], ids=["ECDSA-384", "ECDSA-521"])
def test_rfc4754_vectors_verify_as_auth_methods_10_and_11(method: AuthMethod, curve: ec.EllipticCurve,
                                                           vector: tuple[str, str]) -> None:
    point, signature = bytes.fromhex(vector[0]), bytes.fromhex(vector[1])
    public = ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + point)
    auth_verify(method, public, b"abc", signature)
    with pytest.raises(SignatureError, match="does not verify"):
        auth_verify(method, public, b"abd", signature)


@pytest.mark.parametrize(("method", "curve", "size"), [
    (AuthMethod.ECDSA_SHA256_P256, "secp256r1", 64),
    (AuthMethod.ECDSA_SHA384_P384, "secp384r1", 96),
    (AuthMethod.ECDSA_SHA512_P521, "secp521r1", 132),
])
def test_ecdsa_methods_sign_raw_r_s_that_cryptography_verifies(method: AuthMethod, curve: str, size: int) -> None:
    key = ec_key(curve)
    octets = b"signed octets" * 5
    data = auth_sign(method, key, octets)
    assert len(data) == size
    half = size // 2
    digest = {64: hashes.SHA256(), 96: hashes.SHA384(), 132: hashes.SHA512()}[size]
    der = encode_dss_signature(int.from_bytes(data[:half], "big"), int.from_bytes(data[half:], "big"))
    key.public_key().verify(der, octets, ec.ECDSA(digest))  # cross-check: raises if wrong
    auth_verify(method, key.public_key(), octets, data)


def test_ecdsa_method_and_curve_must_agree() -> None:
    with pytest.raises(SignatureError, match="needs an ECDSA key on secp384r1"):
        auth_sign(AuthMethod.ECDSA_SHA384_P384, ec_key("secp256r1"), b"x")
    data = auth_sign(AuthMethod.ECDSA_SHA256_P256, ec_key("secp256r1"), b"x")
    with pytest.raises(SignatureError, match="certificate holds secp384r1"):
        auth_verify(AuthMethod.ECDSA_SHA256_P256, ec_key("secp384r1").public_key(), b"x", data)
    with pytest.raises(SignatureError, match="64 expected"):
        auth_verify(AuthMethod.ECDSA_SHA256_P256, ec_key("secp256r1").public_key(), b"x", data[:-1])


def test_rsa_method_1_is_pkcs1_v1_5_with_sha1() -> None:
    key = rsa_key()
    data = auth_sign(AuthMethod.RSA_SIG, key, b"octets")
    key.public_key().verify(data, b"octets", padding.PKCS1v15(), hashes.SHA1())
    auth_verify(AuthMethod.RSA_SIG, key.public_key(), b"octets", data)
    with pytest.raises(SignatureError, match="AUTH method 1"):
        auth_verify(AuthMethod.RSA_SIG, key.public_key(), b"octetz", data)
    with pytest.raises(SignatureError, match="holds an ECDSA key"):
        auth_verify(AuthMethod.RSA_SIG, ec_key().public_key(), b"octets", data)


SCHEMES_14 = [
    (Scheme(SchemeKind.RSA_PKCS1, h), "rsa") for h in (HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384,
                                                       HashAlgorithm.SHA2_512)
] + [
    (Scheme(SchemeKind.RSA_PSS, h), "rsa") for h in (HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384,
                                                     HashAlgorithm.SHA2_512)
] + [
    (Scheme(SchemeKind.ECDSA, HashAlgorithm.SHA2_256), "secp256r1"),
    (Scheme(SchemeKind.ECDSA, HashAlgorithm.SHA2_384), "secp384r1"),
    (Scheme(SchemeKind.ECDSA, HashAlgorithm.SHA2_512), "secp521r1"),
    (Scheme(SchemeKind.ECDSA, HashAlgorithm.SHA2_384), "secp256r1"),
]


@pytest.mark.parametrize(("scheme", "keytype"), SCHEMES_14, ids=lambda v: v.name if isinstance(v, Scheme) else v)
def test_method_14_round_trip_and_cross_check(scheme: Scheme, keytype: str) -> None:
    key = rsa_key() if keytype == "rsa" else ec_key(keytype)
    octets = b"IKE_SA_INIT message | nonce | prf(SK_p, ID)"
    data = auth_sign(AuthMethod.DIGITAL_SIGNATURE, key, octets, scheme)
    identifier = scheme.algorithm_identifier()
    assert data[0] == len(identifier) and data[1:1 + data[0]] == identifier
    signature = data[1 + data[0]:]
    digest = {HashAlgorithm.SHA2_256: hashes.SHA256(), HashAlgorithm.SHA2_384: hashes.SHA384(),
              HashAlgorithm.SHA2_512: hashes.SHA512()}[scheme.hash]
    # Cross-check with cryptography's verifiers: PKCS#1 v1.5, PSS (salt = hash length), DER ECDSA.
    if scheme.kind is SchemeKind.ECDSA:
        key.public_key().verify(signature, octets, ec.ECDSA(digest))  # type: ignore[call-arg,arg-type]
    elif scheme.kind is SchemeKind.RSA_PSS:
        key.public_key().verify(signature, octets,  # type: ignore[call-arg]
                                padding.PSS(padding.MGF1(digest), digest.digest_size), digest)
    else:
        key.public_key().verify(signature, octets, padding.PKCS1v15(), digest)  # type: ignore[call-arg]
    assert auth_verify(AuthMethod.DIGITAL_SIGNATURE, key.public_key(), octets, data) == parse_algorithm_identifier(
        identifier)
    with pytest.raises(SignatureError, match="does not verify"):
        auth_verify(AuthMethod.DIGITAL_SIGNATURE, key.public_key(), octets + b"!", data)


def test_method_14_refuses_a_hash_we_did_not_announce_and_a_key_of_the_other_type() -> None:
    key = rsa_key()
    sha1 = auth_sign(AuthMethod.DIGITAL_SIGNATURE, key, b"x", Scheme(SchemeKind.RSA_PKCS1, HashAlgorithm.SHA1))
    with pytest.raises(SignatureError, match="a hash we did not announce"):
        auth_verify(AuthMethod.DIGITAL_SIGNATURE, key.public_key(), b"x", sha1)
    ecdsa = auth_sign(AuthMethod.DIGITAL_SIGNATURE, ec_key(), b"x", Scheme(SchemeKind.ECDSA, HashAlgorithm.SHA2_256))
    with pytest.raises(SignatureError, match="certificate holds an RSA key"):
        auth_verify(AuthMethod.DIGITAL_SIGNATURE, key.public_key(), b"x", ecdsa)
    with pytest.raises(SignatureError, match="too short"):
        auth_verify(AuthMethod.DIGITAL_SIGNATURE, key.public_key(), b"x", b"\x40\x30")


def test_signature_hash_algorithms_notify() -> None:
    assert encode_hash_algorithms() == bytes.fromhex("000200030004")
    assert decode_hash_algorithms(bytes.fromhex("0001000200050007")) == [1, 2, 5, 7]
    with pytest.raises(SignatureError, match="odd length"):
        decode_hash_algorithms(b"\x00\x02\x00")


def test_choose_method_prefers_rfc7427_with_a_common_hash_else_the_classic_method() -> None:
    assert choose_method(rsa_key(), [1, 2, 3]) == (AuthMethod.DIGITAL_SIGNATURE,
                                                   Scheme(SchemeKind.RSA_PKCS1, HashAlgorithm.SHA2_256))
    assert choose_method(rsa_key(), [4], pss=True) == (AuthMethod.DIGITAL_SIGNATURE,
                                                       Scheme(SchemeKind.RSA_PSS, HashAlgorithm.SHA2_512))
    assert choose_method(ec_key("secp384r1"), [2, 3]) == (AuthMethod.DIGITAL_SIGNATURE,
                                                          Scheme(SchemeKind.ECDSA, HashAlgorithm.SHA2_384))
    assert choose_method(rsa_key(), None) == (AuthMethod.RSA_SIG, None)
    assert choose_method(rsa_key(), [1, 5]) == (AuthMethod.RSA_SIG, None)  # only SHA-1/identity in common
    assert choose_method(ec_key("secp384r1"), []) == (AuthMethod.ECDSA_SHA384_P384, None)


def test_ikev1_rsa_signature_has_no_digestinfo() -> None:
    key = rsa_key()
    hash_i = bytes(range(32))
    signature = ikev1_rsa_sign(key, hash_i)
    assert len(signature) == 256
    # Cross-check: cryptography recovers exactly the bare hash (no DigestInfo) from the signature.
    assert key.public_key().recover_data_from_signature(signature, padding.PKCS1v15(), None) == hash_i
    ikev1_rsa_verify(key.public_key(), hash_i, signature)
    with pytest.raises(SignatureError, match="does not verify"):
        ikev1_rsa_verify(key.public_key(), bytes(32), signature)
    with pytest.raises(SignatureError, match="256 expected"):
        ikev1_rsa_verify(key.public_key(), hash_i, signature[1:])
    # A PKCS#1 v1.5 *signature* (with DigestInfo) is not an IKEv1 signature of the hash.
    with pytest.raises(InvalidSignature):
        key.public_key().verify(signature, hash_i, padding.PKCS1v15(), hashes.SHA256())


def test_ikev1_rsa_signature_is_the_textbook_type1_block() -> None:
    """Against an independent reference: the signature is (00 01 FF.. 00 || hash)^d mod n, computed here
    with Python integers from the key's numbers (deterministic, so the two must be equal)."""
    key = rsa_key()
    numbers = key.private_numbers()
    n, size = numbers.public_numbers.n, 256
    for hash_value in (b"\x01" * 20, bytes(range(32)), bytes(range(64))):
        block = b"\x00\x01" + b"\xff" * (size - 3 - len(hash_value)) + b"\x00" + hash_value
        expected = pow(int.from_bytes(block, "big"), numbers.d, n).to_bytes(size, "big")
        assert ikev1_rsa_sign(key, hash_value) == expected
    with pytest.raises(SignatureError, match="do not fit"):
        ikev1_rsa_sign(key, bytes(246))


def test_ikev1_authentication_method_attribute() -> None:
    assert ikev1_auth_method(rsa_key()) == 3
    assert [ikev1_auth_method(ec_key(c).public_key()) for c in ("secp256r1", "secp384r1", "secp521r1")] == [9, 10, 11]


@pytest.mark.parametrize("keytype", ["rsa", "secp256r1", "secp384r1"])
def test_ikev1_sign_verify_both_key_types(keytype: str) -> None:
    key = rsa_key() if keytype == "rsa" else ec_key(keytype)
    hash_r, hash_i = b"HASH_R__" * 4, b"HASH_I__" * 4  # a SHA-256 PRF's output length
    signature = ikev1_sign(key, hash_r)
    ikev1_verify(key.public_key(), hash_r, signature)
    with pytest.raises(SignatureError):
        ikev1_verify(key.public_key(), hash_i, signature)
    if keytype != "rsa":  # the hash is the digest (strongSwan's ECDSA_WITH_NULL), r || s
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        size = (key.curve.key_size + 7) // 8
        der = encode_dss_signature(int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big"))
        key.public_key().verify(der, hash_r, ec.ECDSA(Prehashed(hashes.SHA256())))
        with pytest.raises(SignatureError, match="no ECDSA digest of 24 octets"):
            ikev1_sign(key, bytes(24))

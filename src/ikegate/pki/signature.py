"""The signature schemes IKE authenticates with, as sign and verify functions over octets.

IKEv2 AUTH methods (RFC 7296 §3.8, RFC 4754, RFC 7427):

* 1 — RSA Digital Signature: RSASSA-PKCS1-v1_5 with SHA-1 (what strongSwan and every peer without
  RFC 7427 sign and expect);
* 9, 10, 11 — ECDSA with SHA-256 on P-256, SHA-384 on P-384, SHA-512 on P-521; the signature is the
  fixed-length ``r || s`` of RFC 4754, not DER, and the curve must be the method's;
* 14 — Digital Signature (RFC 7427): the AUTH data is a one-octet length, the ASN.1 AlgorithmIdentifier
  of the scheme, then the signature — RSASSA-PKCS1-v1_5 or RSASSA-PSS with SHA-256/384/512, or ECDSA
  (DER ``ECDSA-Sig-Value``) with SHA-256/384/512 on any of the three curves.

The SIGNATURE_HASH_ALGORITHMS notify (RFC 7427 §4) carries 16-bit hash identifiers; a peer that sent
one may be answered with method 14 using a hash from it (:func:`choose_method`), else the classic method
of the key's type is used.

IKEv1 (RFC 2409 §5.1) signs HASH_I / HASH_R with RSA as "a private key encryption in PKCS #1 format":
block type 1 padding of the bare hash, without the DigestInfo a PKCS#1 signature would carry (what
strongSwan, Cisco and racoon send). ``cryptography`` (48 and later) does exactly that with
``PKCS1v15()`` and ``NoDigestInfo()``: OpenSSL's blinded, constant-time private operation, about 0.3 ms
for RSA-2048, where the pure-Python blinded exponentiation it replaced took 9-14 ms and left the
exponentiation itself (Python's ``pow``) variable-time. IKEv1 ECDSA (methods 9/10/11, RFC 4754 §3)
signs HASH_I / HASH_R itself as the digest, ``r || s`` (see :func:`ikev1_ecdsa_sign`).

Every verification failure raises :class:`SignatureError` with a reason fit for a log line.
"""

from __future__ import annotations

import enum
import hmac
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    NoDigestInfo,
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)

from ikegate.ike.wire.registry import AuthMethod
from ikegate.pki.der import NULL, oid, oid_text, read_tlv, seq, tlv
from ikegate.pki.store import PrivateKey, PublicKey


class SignatureError(Exception):
    """A signature that does not verify, or AUTH data that cannot be one; ``str()`` is the reason."""


class HashAlgorithm(enum.IntEnum):
    """IANA "IKEv2 Hash Algorithms" (RFC 7427 §4), the values of SIGNATURE_HASH_ALGORITHMS."""

    SHA1 = 1
    SHA2_256 = 2
    SHA2_384 = 3
    SHA2_512 = 4
    IDENTITY = 5  # RFC 8420 (EdDSA); never chosen here


#: What we announce in SIGNATURE_HASH_ALGORITHMS and accept in method 14: SHA-2 only.
ANNOUNCED_HASHES = (HashAlgorithm.SHA2_256, HashAlgorithm.SHA2_384, HashAlgorithm.SHA2_512)

_HASHES: dict[HashAlgorithm, type[hashes.HashAlgorithm]] = {
    HashAlgorithm.SHA1: hashes.SHA1,
    HashAlgorithm.SHA2_256: hashes.SHA256,
    HashAlgorithm.SHA2_384: hashes.SHA384,
    HashAlgorithm.SHA2_512: hashes.SHA512,
}


def encode_hash_algorithms(algorithms: tuple[HashAlgorithm, ...] = ANNOUNCED_HASHES) -> bytes:
    """The notification data of SIGNATURE_HASH_ALGORITHMS."""
    return b"".join(int(a).to_bytes(2, "big") for a in algorithms)


def decode_hash_algorithms(data: bytes) -> list[int]:
    """The 16-bit identifiers a peer announced (unknown values kept, to be ignored by the chooser)."""
    if len(data) % 2:
        raise SignatureError(f"SIGNATURE_HASH_ALGORITHMS data of odd length {len(data)}")
    return [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]


_OID_RSA_PSS = "1.2.840.113549.1.1.10"
_OID_MGF1 = "1.2.840.113549.1.1.8"
_HASH_OIDS: dict[HashAlgorithm, str] = {
    HashAlgorithm.SHA1: "1.3.14.3.2.26",
    HashAlgorithm.SHA2_256: "2.16.840.1.101.3.4.2.1",
    HashAlgorithm.SHA2_384: "2.16.840.1.101.3.4.2.2",
    HashAlgorithm.SHA2_512: "2.16.840.1.101.3.4.2.3",
}
_RSA_PKCS1_OIDS: dict[HashAlgorithm, str] = {
    HashAlgorithm.SHA1: "1.2.840.113549.1.1.5",
    HashAlgorithm.SHA2_256: "1.2.840.113549.1.1.11",
    HashAlgorithm.SHA2_384: "1.2.840.113549.1.1.12",
    HashAlgorithm.SHA2_512: "1.2.840.113549.1.1.13",
}
_ECDSA_OIDS: dict[HashAlgorithm, str] = {
    HashAlgorithm.SHA1: "1.2.840.10045.4.1",
    HashAlgorithm.SHA2_256: "1.2.840.10045.4.3.2",
    HashAlgorithm.SHA2_384: "1.2.840.10045.4.3.3",
    HashAlgorithm.SHA2_512: "1.2.840.10045.4.3.4",
}


class SchemeKind(enum.Enum):
    RSA_PKCS1 = "RSASSA-PKCS1-v1_5"
    RSA_PSS = "RSASSA-PSS"
    ECDSA = "ECDSA"


@dataclass(frozen=True)
class Scheme:
    """One RFC 7427 signature scheme: its kind and hash (PSS: MGF1 with the same hash, salt = hash
    length, as RFC 7427 A.4.3 and strongSwan use when signing)."""

    kind: SchemeKind
    hash: HashAlgorithm
    mgf_hash: HashAlgorithm | None = None
    salt_length: int | None = None

    @property
    def name(self) -> str:
        digest = self.hash.name.replace("SHA2_", "SHA-").replace("SHA1", "SHA-1")
        return f"{self.kind.value} with {digest}"

    def algorithm_identifier(self) -> bytes:
        """The DER AlgorithmIdentifier that prefixes the signature in AUTH method 14."""
        if self.kind is SchemeKind.ECDSA:
            return seq(oid(_ECDSA_OIDS[self.hash]))
        if self.kind is SchemeKind.RSA_PKCS1:
            return seq(oid(_RSA_PKCS1_OIDS[self.hash]), NULL)
        mgf_hash = self.mgf_hash or self.hash
        salt = self.salt_length if self.salt_length is not None else _digest_size(self.hash)
        params = seq(
            tlv(0xA0, seq(oid(_HASH_OIDS[self.hash]), NULL)),
            tlv(0xA1, seq(oid(_OID_MGF1), seq(oid(_HASH_OIDS[mgf_hash]), NULL))),
            tlv(0xA2, tlv(0x02, salt.to_bytes(max(1, (salt.bit_length() + 7) // 8), "big"))),
        )
        return seq(oid(_OID_RSA_PSS), params)


def _known_identifiers() -> dict[bytes, Scheme]:
    known: dict[bytes, Scheme] = {}
    for digest in _HASHES:
        for kind in (SchemeKind.RSA_PKCS1, SchemeKind.ECDSA):
            scheme = Scheme(kind, digest)
            known[scheme.algorithm_identifier()] = scheme
            if kind is SchemeKind.RSA_PKCS1:  # the NULL parameters are sometimes left out
                known[seq(oid(_RSA_PKCS1_OIDS[digest]))] = scheme
    return known


_KNOWN = _known_identifiers()
_HASH_BY_OID = {v: k for k, v in _HASH_OIDS.items()}



def _hash_of(identifier: bytes) -> HashAlgorithm:
    """The hash an AlgorithmIdentifier (``SEQUENCE { OID, NULL? }``) names."""
    _, body, _ = read_tlv(identifier)
    tag, oid_bytes, _ = read_tlv(body)
    if tag != 0x06 or oid_text(oid_bytes) not in _HASH_BY_OID:
        raise ValueError("unknown hash algorithm")
    return _HASH_BY_OID[oid_text(oid_bytes)]


def _parse_pss(params: bytes) -> Scheme:
    """RSASSA-PSS-params (RFC 4055): each field optional, defaults SHA-1 / MGF1-SHA-1 / salt 20."""
    digest, mgf_hash, salt = HashAlgorithm.SHA1, HashAlgorithm.SHA1, 20
    pos = 0
    while pos < len(params):
        tag, content, pos = read_tlv(params, pos)
        if tag == 0xA0:
            digest = _hash_of(content)
        elif tag == 0xA1:
            _, mgf, _ = read_tlv(content)
            oid_tag, oid_bytes, after = read_tlv(mgf)
            if oid_tag != 0x06 or oid_text(oid_bytes) != _OID_MGF1:
                raise ValueError("mask generation function is not MGF1")
            mgf_hash = _hash_of(mgf[after:])
        elif tag == 0xA2:
            _, number, _ = read_tlv(content)
            salt = int.from_bytes(number, "big")
        elif tag == 0xA3:
            _, number, _ = read_tlv(content)
            if int.from_bytes(number, "big") != 1:
                raise ValueError("trailer field is not 1")
    return Scheme(SchemeKind.RSA_PSS, digest, mgf_hash, salt)


def parse_algorithm_identifier(identifier: bytes) -> Scheme:
    """The scheme an AUTH method 14 AlgorithmIdentifier names; SignatureError if unknown."""
    if identifier in _KNOWN:
        return _KNOWN[identifier]
    try:
        tag, body, end = read_tlv(identifier)
        if tag != 0x30 or end != len(identifier):
            raise ValueError("not a SEQUENCE")
        oid_tag, oid_bytes, pos = read_tlv(body)
        if oid_tag == 0x06 and oid_text(oid_bytes) == _OID_RSA_PSS:
            if pos == len(body):
                return Scheme(SchemeKind.RSA_PSS, HashAlgorithm.SHA1, HashAlgorithm.SHA1, 20)
            params_tag, params, _ = read_tlv(body, pos)
            if params_tag != 0x30:
                raise ValueError("PSS parameters are not a SEQUENCE")
            return _parse_pss(params)
        name = oid_text(oid_bytes) if oid_tag == 0x06 else "?"
    except (ValueError, IndexError) as exc:
        raise SignatureError(f"unreadable signature AlgorithmIdentifier ({exc})") from None
    raise SignatureError(f"unknown signature algorithm {name}")


# --- the primitives -----------------------------------------------------------------------------------
#: AUTH methods 9-11: the curve (by its ``cryptography`` name) and hash each one fixes.
_CURVE_OF_METHOD: dict[int, tuple[str, HashAlgorithm]] = {
    AuthMethod.ECDSA_SHA256_P256: ("secp256r1", HashAlgorithm.SHA2_256),
    AuthMethod.ECDSA_SHA384_P384: ("secp384r1", HashAlgorithm.SHA2_384),
    AuthMethod.ECDSA_SHA512_P521: ("secp521r1", HashAlgorithm.SHA2_512),
}
_METHOD_OF_CURVE = {curve: method for method, (curve, _) in _CURVE_OF_METHOD.items()}


def _digest_size(digest: HashAlgorithm) -> int:
    return _HASHES[digest]().digest_size


def _field_bytes(curve: ec.EllipticCurve) -> int:
    return (curve.key_size + 7) // 8


def ecdsa_raw_sign(key: ec.EllipticCurvePrivateKey, digest: HashAlgorithm, data: bytes) -> bytes:
    """ECDSA over ``data`` as RFC 4754's fixed-length ``r || s``."""
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(_HASHES[digest]())))
    size = _field_bytes(key.curve)
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def ecdsa_raw_verify(key: ec.EllipticCurvePublicKey, digest: HashAlgorithm, data: bytes, signature: bytes) -> None:
    size = _field_bytes(key.curve)
    if len(signature) != 2 * size:
        raise SignatureError(f"ECDSA signature of {len(signature)} octets, {2 * size} expected for {key.curve.name}")
    r, s = int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
    try:
        key.verify(encode_dss_signature(r, s), data, ec.ECDSA(_HASHES[digest]()))
    except InvalidSignature:
        raise SignatureError("ECDSA signature does not verify") from None


def scheme_sign(key: PrivateKey, scheme: Scheme, data: bytes) -> bytes:
    """A bare signature (no AlgorithmIdentifier) under ``scheme``."""
    algorithm = _HASHES[scheme.hash]()
    if scheme.kind is SchemeKind.ECDSA:
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise SignatureError("an ECDSA scheme needs an ECDSA key")
        return key.sign(data, ec.ECDSA(algorithm))
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SignatureError(f"{scheme.kind.value} needs an RSA key")
    return key.sign(data, _rsa_padding(scheme), algorithm)


def _rsa_padding(scheme: Scheme) -> padding.AsymmetricPadding:
    if scheme.kind is SchemeKind.RSA_PKCS1:
        return padding.PKCS1v15()
    mgf_hash = _HASHES[scheme.mgf_hash or scheme.hash]()
    salt = scheme.salt_length if scheme.salt_length is not None else _digest_size(scheme.hash)
    return padding.PSS(mgf=padding.MGF1(mgf_hash), salt_length=salt)


def scheme_verify(key: PublicKey, scheme: Scheme, data: bytes, signature: bytes) -> None:
    algorithm = _HASHES[scheme.hash]()
    try:
        if scheme.kind is SchemeKind.ECDSA:
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise SignatureError(f"peer signed with {scheme.name} but its certificate holds an RSA key")
            key.verify(signature, data, ec.ECDSA(algorithm))
            return
        if not isinstance(key, rsa.RSAPublicKey):
            raise SignatureError(f"peer signed with {scheme.name} but its certificate holds an ECDSA key")
        key.verify(signature, data, _rsa_padding(scheme), algorithm)
    except InvalidSignature:
        raise SignatureError(f"{scheme.name} signature does not verify") from None
    except ValueError as exc:  # e.g. a PSS salt longer than the key allows
        raise SignatureError(f"{scheme.name} signature cannot be checked: {exc}") from None


# --- IKEv2 AUTH payload data ------------------------------------------------------------------------
def auth_sign(method: AuthMethod, key: PrivateKey, octets: bytes, scheme: Scheme | None = None) -> bytes:
    """The AUTH payload data (after the method octet and reserved bytes) signing ``octets``.

    ``scheme`` is required for method 14 and ignored otherwise.
    """
    if method == AuthMethod.RSA_SIG:
        if not isinstance(key, rsa.RSAPrivateKey):
            raise SignatureError("AUTH method 1 needs an RSA key")
        return key.sign(octets, padding.PKCS1v15(), hashes.SHA1())
    if method in _CURVE_OF_METHOD:
        curve, digest = _CURVE_OF_METHOD[method]
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != curve:
            raise SignatureError(f"AUTH method {int(method)} needs an ECDSA key on {curve}")
        return ecdsa_raw_sign(key, digest, octets)
    if method == AuthMethod.DIGITAL_SIGNATURE:
        if scheme is None:
            raise SignatureError("AUTH method 14 needs a signature scheme")
        identifier = scheme.algorithm_identifier()
        return bytes([len(identifier)]) + identifier + scheme_sign(key, scheme, octets)
    raise SignatureError(f"AUTH method {int(method)} is not a signature method")


def auth_verify(method: int, key: PublicKey, octets: bytes, data: bytes,
                accepted: tuple[HashAlgorithm, ...] = ANNOUNCED_HASHES) -> Scheme | None:
    """Check AUTH data against the peer's public key; return the RFC 7427 scheme for method 14.

    ``accepted`` are the hashes method 14 may use (those we announced). Raises SignatureError.
    """
    if method == AuthMethod.RSA_SIG:
        if not isinstance(key, rsa.RSAPublicKey):
            raise SignatureError("peer uses RSA signature (AUTH method 1) but its certificate holds an ECDSA key")
        try:
            key.verify(data, octets, padding.PKCS1v15(), hashes.SHA1())
        except InvalidSignature:
            raise SignatureError("RSA signature (AUTH method 1) does not verify") from None
        return None
    if method in _CURVE_OF_METHOD:
        curve, digest = _CURVE_OF_METHOD[method]
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != curve:
            held = key.curve.name if isinstance(key, ec.EllipticCurvePublicKey) else "an RSA key"
            raise SignatureError(f"peer uses AUTH method {method} ({curve}) but its certificate holds {held}")
        ecdsa_raw_verify(key, digest, octets, data)
        return None
    if method == AuthMethod.DIGITAL_SIGNATURE:
        if not data or data[0] == 0 or 1 + data[0] > len(data):
            raise SignatureError("AUTH method 14 data too short for its AlgorithmIdentifier")
        scheme = parse_algorithm_identifier(data[1:1 + data[0]])
        if scheme.hash not in accepted:
            raise SignatureError(f"peer signed with {scheme.name}, a hash we did not announce")
        scheme_verify(key, scheme, octets, data[1 + data[0]:])
        return scheme
    raise SignatureError(f"AUTH method {method} is not a signature method")


def classic_method(key: PrivateKey | PublicKey) -> AuthMethod:
    """The pre-RFC 7427 method for a key: 1 for RSA, 9/10/11 by the ECDSA curve."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return AuthMethod.RSA_SIG
    method = _METHOD_OF_CURVE.get(key.curve.name)
    if method is None:
        raise SignatureError(f"no IKEv2 AUTH method for ECDSA on {key.curve.name}")
    return AuthMethod(method)


def choose_method(key: PrivateKey, peer_hashes: list[int] | None, *,
                  pss: bool = False) -> tuple[AuthMethod, Scheme | None]:
    """How to sign with ``key``: method 14 with a hash the peer announced (an ECDSA key's own hash
    first, else SHA-256, 384, 512), or the classic method when it announced none we use."""
    if peer_hashes:
        preferred = list(ANNOUNCED_HASHES)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            method = _METHOD_OF_CURVE.get(key.curve.name)
            if method is not None:
                own = _CURVE_OF_METHOD[method][1]
                preferred.remove(own)
                preferred.insert(0, own)
        for digest in preferred:
            if int(digest) in peer_hashes:
                if isinstance(key, ec.EllipticCurvePrivateKey):
                    kind = SchemeKind.ECDSA
                else:
                    kind = SchemeKind.RSA_PSS if pss else SchemeKind.RSA_PKCS1
                return AuthMethod.DIGITAL_SIGNATURE, Scheme(kind, digest)
    return classic_method(key), None


# --- IKEv1 (RFC 2409 §5.1) ---------------------------------------------------------------------------
def ikev1_rsa_sign(key: rsa.RSAPrivateKey, hash_value: bytes) -> bytes:
    """PKCS#1 block type 1 "private key encryption" of HASH_I/HASH_R, with no DigestInfo."""
    size = (key.key_size + 7) // 8
    if len(hash_value) > size - 11:
        raise SignatureError(f"{len(hash_value)} octets do not fit a {size * 8}-bit RSA signature")
    return key.sign(hash_value, padding.PKCS1v15(), NoDigestInfo())


def ikev1_rsa_verify(key: rsa.RSAPublicKey, hash_value: bytes, signature: bytes) -> None:
    size = (key.key_size + 7) // 8
    if len(signature) != size:
        raise SignatureError(f"RSA signature of {len(signature)} octets, {size} expected")
    try:  # (verify() takes no NoDigestInfo: recover the padded data and compare it)
        recovered = key.recover_data_from_signature(signature, padding.PKCS1v15(), None)
    except InvalidSignature:
        raise SignatureError("RSA signature does not verify") from None
    if not hmac.compare_digest(recovered, hash_value):
        raise SignatureError("RSA signature does not verify")


#: IKEv1 phase 1 Authentication Method attribute values (RFC 2409 Appendix A; RFC 4754 §3 for ECDSA).
IKEV1_RSA_SIG = 3
IKEV1_ECDSA = {"secp256r1": 9, "secp384r1": 10, "secp521r1": 11}


def ikev1_auth_method(key: PrivateKey | PublicKey) -> int:
    """The phase 1 Authentication Method attribute to offer or accept for a key: 3 for RSA, 9/10/11
    for ECDSA on P-256/P-384/P-521."""
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return IKEV1_RSA_SIG
    if key.curve.name not in IKEV1_ECDSA:
        raise SignatureError(f"no IKEv1 authentication method for ECDSA on {key.curve.name}")
    return IKEV1_ECDSA[key.curve.name]


#: A prehashed ECDSA input is announced by its length: HASH_I / HASH_R is as long as the PRF's output.
_PREHASH_BY_SIZE: dict[int, type[hashes.HashAlgorithm]] = {
    20: hashes.SHA1, 28: hashes.SHA224, 32: hashes.SHA256, 48: hashes.SHA384, 64: hashes.SHA512}


def _prehashed(hash_value: bytes) -> ec.ECDSA:
    algorithm = _PREHASH_BY_SIZE.get(len(hash_value))
    if algorithm is None:
        raise SignatureError(f"no ECDSA digest of {len(hash_value)} octets")
    return ec.ECDSA(Prehashed(algorithm()))


def ikev1_ecdsa_sign(key: ec.EllipticCurvePrivateKey, hash_value: bytes) -> bytes:
    """IKEv1 ECDSA: HASH_I / HASH_R *is* the digest that is signed (not hashed again), and the SIG
    payload holds the fixed-length ``r || s`` — what strongSwan signs and expects (its "ECDSA with
    NULL" scheme), where a reading of RFC 4754 would hash once more with the curve's hash."""
    r, s = decode_dss_signature(key.sign(hash_value, _prehashed(hash_value)))
    size = _field_bytes(key.curve)
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def ikev1_ecdsa_verify(key: ec.EllipticCurvePublicKey, hash_value: bytes, signature: bytes) -> None:
    size = _field_bytes(key.curve)
    if len(signature) != 2 * size:
        raise SignatureError(f"ECDSA signature of {len(signature)} octets, {2 * size} expected for {key.curve.name}")
    r, s = int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
    try:
        key.verify(encode_dss_signature(r, s), hash_value, _prehashed(hash_value))
    except InvalidSignature:
        raise SignatureError("ECDSA signature does not verify") from None


def ikev1_sign(key: PrivateKey, hash_value: bytes) -> bytes:
    """IKEv1 SIG payload data: RSA and ECDSA over the bare HASH_I / HASH_R, as above."""
    if isinstance(key, rsa.RSAPrivateKey):
        return ikev1_rsa_sign(key, hash_value)
    return ikev1_ecdsa_sign(key, hash_value)


def ikev1_verify(key: PublicKey, hash_value: bytes, signature: bytes) -> None:
    if isinstance(key, rsa.RSAPublicKey):
        ikev1_rsa_verify(key, hash_value, signature)
        return
    ikev1_ecdsa_verify(key, hash_value, signature)

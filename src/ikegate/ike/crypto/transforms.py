"""PRF, integrity and encryption transforms of IKEv2 and ESP.

Every algorithm is described once, in module-level tables built at import, so negotiating a proposal
costs a dict lookup and never builds objects. HMAC runs through the stdlib's one-shot ``hmac.digest``
(OpenSSL underneath, and cheaper per call than an ``HMAC`` object); ciphers come from ``cryptography``.
An AEAD cipher keeps one ``AESGCM`` object for the life of the SA, because that object is the fast path;
CBC has to build a ``Cipher`` per call anyway (the IV changes), so it only keeps the key object.
"""

from __future__ import annotations

import hmac
import importlib
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher as _LibCipher
from cryptography.hazmat.primitives.ciphers import CipherAlgorithm, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from ikegate.ike.crypto.errors import CryptoError, UnsupportedTransform
from ikegate.ike.wire.registry import EncrId, IntegId, PrfId

__all__ = [
    "Cipher",
    "EncrAlg",
    "IntegAlg",
    "Mac",
    "PrfAlg",
    "encr_alg",
    "integ_alg",
    "prf_alg",
]

_digest = hmac.digest
_compare = hmac.compare_digest


# --------------------------------------------------------------------------------------------- PRF


@dataclass(frozen=True, slots=True)
class PrfAlg:
    """A pseudo-random function of RFC 7296 §3.3.2; all of ours are HMACs."""

    id: int
    name: str
    key_size: int  # preferred key length (RFC 7296 §2.13: the PRF's output size for HMAC)
    output_size: int
    _hash: str = field(repr=False)
    _lib_hash: hashes.HashAlgorithm = field(repr=False, compare=False)

    def compute(self, key: bytes, data: bytes) -> bytes:
        """prf(key, data)."""
        return _digest(key, data, self._hash)

    def plus(self, key: bytes, seed: bytes, length: int) -> bytes:
        """prf+ of RFC 7296 §2.13: T1 | T2 | ..., cut to ``length`` bytes.

        For an HMAC PRF this is byte for byte HKDF-Expand (RFC 5869 §2.3) with info = seed, which
        ``cryptography`` runs in one native call, about three times faster than a Python loop over
        seven blocks; a single block is cheaper as one ``hmac.digest``. The counter is one octet, so
        at most 255 blocks exist; asking for more is a caller bug and raises rather than wrapping.
        """
        if length <= self.output_size:
            if length < 0:
                raise CryptoError(f"prf+ cannot produce {length} bytes")
            return _digest(key, seed + b"\x01", self._hash)[:length]
        if length > 255 * self.output_size:
            raise CryptoError(f"prf+ cannot produce {length} bytes with {self.name}")
        return HKDFExpand(self._lib_hash, length, seed).derive(key)


def _prf(prf_id: PrfId, name: str, hash_name: str, lib_hash: hashes.HashAlgorithm) -> PrfAlg:
    size = lib_hash.digest_size
    return PrfAlg(int(prf_id), name, size, size, hash_name, lib_hash)


_PRFS: dict[int, PrfAlg] = {
    alg.id: alg
    for alg in (
        _prf(PrfId.HMAC_MD5, "HMAC-MD5", "md5", hashes.MD5()),
        _prf(PrfId.HMAC_SHA1, "HMAC-SHA1", "sha1", hashes.SHA1()),
        _prf(PrfId.HMAC_SHA2_256, "HMAC-SHA2-256", "sha256", hashes.SHA256()),
        _prf(PrfId.HMAC_SHA2_384, "HMAC-SHA2-384", "sha384", hashes.SHA384()),
        _prf(PrfId.HMAC_SHA2_512, "HMAC-SHA2-512", "sha512", hashes.SHA512()),
    )
}


def prf_alg(prf_id: int) -> PrfAlg:
    """The PRF for a transform ID, or ``UnsupportedTransform``."""
    try:
        return _PRFS[prf_id]
    except KeyError:
        raise UnsupportedTransform(f"PRF {PrfId.text(prf_id)} is not supported") from None


# --------------------------------------------------------------------------------------- integrity


class Mac:
    """An integrity transform bound to one key: what an SA keeps per direction."""

    __slots__ = ("_hash", "_icv_size", "_key")

    def __init__(self, key: bytes, hash_name: str, icv_size: int) -> None:
        self._key = key
        self._hash = hash_name
        self._icv_size = icv_size

    def sign(self, data: bytes) -> bytes:
        """The ICV of ``data``: the HMAC truncated to the transform's length (RFC 4868 §2.1)."""
        return _digest(self._key, data, self._hash)[: self._icv_size]

    def verify(self, data: bytes, icv: bytes) -> bool:
        """Whether ``icv`` authenticates ``data``, compared in constant time."""
        if len(icv) != self._icv_size:
            return False
        return _compare(_digest(self._key, data, self._hash)[: self._icv_size], icv)


@dataclass(frozen=True, slots=True)
class IntegAlg:
    """An HMAC integrity transform of RFC 7296 §3.3.2 (truncated per RFC 2404/4868)."""

    id: int
    name: str
    key_size: int
    icv_size: int
    _hash: str = field(repr=False)

    def keyed(self, key: bytes) -> Mac:
        """Bind a key; its length is fixed by the transform (RFC 4868 §2.1.1), so others are a bug."""
        if len(key) != self.key_size:
            raise CryptoError(f"{self.name} needs a {self.key_size}-byte key, got {len(key)}")
        return Mac(key, self._hash, self.icv_size)


_INTEGS: dict[int, IntegAlg] = {
    alg.id: alg
    for alg in (
        IntegAlg(int(IntegId.HMAC_MD5_96), "HMAC-MD5-96", 16, 12, "md5"),
        IntegAlg(int(IntegId.HMAC_SHA1_96), "HMAC-SHA1-96", 20, 12, "sha1"),
        IntegAlg(int(IntegId.HMAC_SHA2_256_128), "HMAC-SHA2-256-128", 32, 16, "sha256"),
        IntegAlg(int(IntegId.HMAC_SHA2_384_192), "HMAC-SHA2-384-192", 48, 24, "sha384"),
        IntegAlg(int(IntegId.HMAC_SHA2_512_256), "HMAC-SHA2-512-256", 64, 32, "sha512"),
    )
}


def integ_alg(integ_id: int) -> IntegAlg:
    """The integrity transform for a transform ID, or ``UnsupportedTransform``."""
    try:
        return _INTEGS[integ_id]
    except KeyError:
        raise UnsupportedTransform(f"integrity {IntegId.text(integ_id)} is not supported") from None


# -------------------------------------------------------------------------------------- encryption


class Cipher(ABC):
    """An encryption transform bound to its keying material: what an SA keeps per direction."""

    __slots__ = ()

    @abstractmethod
    def encrypt(self, iv: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
        """AEAD: ciphertext | tag. CBC: ``plaintext`` must already be padded to the block size."""

    @abstractmethod
    def decrypt(self, iv: bytes, data: bytes, aad: bytes = b"") -> bytes:
        """Inverse of ``encrypt``; an AEAD tag mismatch raises ``CryptoError``."""


class _AeadCipher(Cipher):
    """An AEAD with a 16-byte ICV and nonce = 4-byte salt | 8-byte IV: AES-GCM (RFC 4106 §4, RFC 5282
    §4) and ChaCha20-Poly1305 (RFC 7634 §2, the same construction with RFC 8439's AEAD)."""

    __slots__ = ("_aead", "_name", "_salt")

    def __init__(self, aead: AESGCM | ChaCha20Poly1305, salt: bytes, name: str) -> None:
        self._aead = aead
        self._salt = salt
        self._name = name

    def encrypt(self, iv: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
        if len(iv) != 8:
            raise CryptoError(f"{self._name} needs an 8-byte IV, got {len(iv)}")
        return self._aead.encrypt(self._salt + iv, plaintext, aad or None)

    def decrypt(self, iv: bytes, data: bytes, aad: bytes = b"") -> bytes:
        if len(iv) != 8:
            raise CryptoError(f"{self._name} needs an 8-byte IV, got {len(iv)}")
        if len(data) < 16:
            raise CryptoError(f"{self._name} data shorter than its ICV")
        try:
            return self._aead.decrypt(self._salt + iv, data, aad or None)
        except InvalidTag:
            raise CryptoError(f"{self._name} ICV mismatch") from None


class _CbcCipher(Cipher):
    """A block cipher in CBC mode; padding is the caller's (IKE and ESP pad differently)."""

    __slots__ = ("_algorithm", "_block")

    def __init__(self, algorithm: CipherAlgorithm, block: int) -> None:
        self._algorithm = algorithm
        self._block = block

    def _check(self, iv: bytes, data: bytes) -> None:
        if len(iv) != self._block:
            raise CryptoError(f"CBC needs a {self._block}-byte IV, got {len(iv)}")
        if len(data) % self._block:
            raise CryptoError(f"CBC data of {len(data)} bytes is not a multiple of {self._block}")

    def encrypt(self, iv: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
        self._check(iv, plaintext)
        ctx = _LibCipher(self._algorithm, modes.CBC(iv)).encryptor()
        return ctx.update(plaintext) + ctx.finalize()

    def decrypt(self, iv: bytes, data: bytes, aad: bytes = b"") -> bytes:
        self._check(iv, data)
        ctx = _LibCipher(self._algorithm, modes.CBC(iv)).decryptor()
        return ctx.update(data) + ctx.finalize()


def _load_triple_des() -> Callable[[bytes], CipherAlgorithm] | None:
    """TripleDES from ``decrepit`` (its home since cryptography 43), else the old location, else None.

    Imported by name and with warnings silenced: the old location warns on access, and a gateway that
    still has to speak 3DES to legacy peers should not print that at every start.
    """
    for module in (
        "cryptography.hazmat.decrepit.ciphers.algorithms",
        "cryptography.hazmat.primitives.ciphers.algorithms",
    ):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cls: Any = importlib.import_module(module).TripleDES
        except (ImportError, AttributeError):
            continue
        return cast("Callable[[bytes], CipherAlgorithm]", cls)
    return None


_TRIPLE_DES = _load_triple_des()


@dataclass(frozen=True, slots=True)
class EncrAlg:
    """An encryption transform with the sizes the KDF, the SK payload and ESP need."""

    id: int
    key_bits: int
    name: str
    key_size: int  # cipher key, without salt
    salt_size: int  # 4 for GCM (RFC 4106 §8.1, RFC 5282 §7.1), 0 otherwise
    keymat_size: int  # what the KDF must produce: key_size + salt_size
    iv_size: int
    block_size: int  # padding alignment of the SK payload / ESP trailer
    icv_size: int
    aead: bool
    _make: Callable[[bytes, bytes], Cipher] = field(repr=False, compare=False)

    def keyed(self, keymat: bytes) -> Cipher:
        """Bind keying material (key | salt, as the KDF produced it) to a reusable cipher."""
        if len(keymat) != self.keymat_size:
            raise CryptoError(f"{self.name} needs {self.keymat_size} bytes of keymat, got {len(keymat)}")
        return self._make(keymat[: self.key_size], keymat[self.key_size :])


def _aes_cbc(key: bytes, _salt: bytes) -> Cipher:
    return _CbcCipher(algorithms.AES(key), 16)


def _aes_gcm(key: bytes, salt: bytes) -> Cipher:
    return _AeadCipher(AESGCM(key), salt, "AES-GCM")


def _chacha20_poly1305(key: bytes, salt: bytes) -> Cipher:
    return _AeadCipher(ChaCha20Poly1305(key), salt, "ChaCha20-Poly1305")


def _triple_des(key: bytes, _salt: bytes) -> Cipher:
    assert _TRIPLE_DES is not None  # the transform is only registered when the class exists
    return _CbcCipher(_TRIPLE_DES(key), 8)


def _build_encr_table() -> dict[tuple[int, int | None], EncrAlg]:
    table: dict[tuple[int, int | None], EncrAlg] = {}
    for bits in (128, 192, 256):
        size = bits // 8
        cbc = EncrAlg(int(EncrId.AES_CBC), bits, f"AES-CBC-{bits}", size, 0, size, 16, 16, 0, False, _aes_cbc)
        gcm = EncrAlg(
            int(EncrId.AES_GCM_16), bits, f"AES-GCM-16-{bits}", size, 4, size + 4, 8, 1, 16, True, _aes_gcm
        )
        table[(cbc.id, bits)] = cbc
        table[(gcm.id, bits)] = gcm
    # RFC 7634: a 256-bit key and a 4-byte salt from the KDF, no Key Length attribute, 8-byte IV, 16-byte
    # ICV; no block alignment of its own (ESP still pads to 4).
    chacha = EncrAlg(int(EncrId.CHACHA20_POLY1305), 256, "CHACHA20-POLY1305", 32, 4, 36, 8, 1, 16, True,
                     _chacha20_poly1305)
    table[(chacha.id, None)] = chacha
    if _TRIPLE_DES is not None:
        tdes = EncrAlg(int(EncrId.TRIPLE_DES), 192, "3DES-CBC", 24, 0, 24, 8, 8, 0, False, _triple_des)
        # 3DES has a fixed key, so proposals carry no Key Length attribute (RFC 7296 §3.3.5).
        table[(tdes.id, None)] = tdes
        table[(tdes.id, 192)] = tdes
    return table


_ENCRS = _build_encr_table()


def encr_alg(encr_id: int, key_bits: int | None) -> EncrAlg:
    """The encryption transform for an ID and Key Length attribute, or ``UnsupportedTransform``."""
    try:
        return _ENCRS[(encr_id, key_bits)]
    except KeyError:
        raise UnsupportedTransform(
            f"encryption {EncrId.text(encr_id)} with key length {key_bits} is not supported"
        ) from None

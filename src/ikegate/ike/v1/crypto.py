"""IKEv1 key derivation and message protection (RFC 2409 §5, §5.5, §5.7, Appendix B).

Pure functions of bytes, so the NIST SP 800-135 IKEv1 answers and hand computations can be checked
against them directly, and the state machine never does slicing arithmetic. The PRF of IKEv1 is the HMAC
of the negotiated hash (nobody negotiates the PRF attribute); the *bare* hash serves the IV derivation
and NAT-D. Both come from the one :class:`Suite` built from the negotiated attributes.

What makes IKEv1 protection unlike IKEv2's SK payload:

* no integrity check on the ciphertext: a wrong key shows up as garbage that fails to parse or a HASH
  that does not verify, so decryption here never judges the plaintext;
* the IV is a *chain*: phase 1 starts from hash(g^xi | g^xr); each message's IV is the previous
  message's last ciphertext block; each quick mode / informational exchange starts its own chain from
  hash(last phase-1 block | M-ID). :class:`IvChain` keeps that state per exchange.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from ikegate.ike.core.auth import PskAuthenticator
from ikegate.ike.crypto import CryptoError, EncrAlg, PrfAlg, encr_alg, prf_alg
from ikegate.ike.crypto.transforms import Cipher
from ikegate.ike.v1.registry import P1_ENCR_TO_V2, P1_HASH_NAME, P1_HASH_TO_PRF, Phase1Encr

__all__ = [
    "IvChain",
    "Phase1Keys",
    "Suite",
    "derive_phase1",
    "expand_key",
    "hash_i",
    "hash_r",
    "info_hash",
    "keymat",
    "message_iv",
    "phase1_iv",
    "qm_hash1",
    "qm_hash2",
    "qm_hash3",
    "skeyid_psk",
    "skeyid_sig",
]


@dataclass(frozen=True, slots=True)
class Suite:
    """The negotiated phase-1 algorithms: PRF (HMAC), bare hash and the CBC cipher."""

    prf: PrfAlg
    hash_name: str
    encr: EncrAlg

    @classmethod
    def from_attributes(cls, encryption: int, key_bits: int | None, hash_id: int) -> Suite:
        """From RFC 2409 App. A values; ``UnsupportedTransform`` (a ``CryptoError``) when not ours."""
        try:
            prf = prf_alg(P1_HASH_TO_PRF[hash_id])
            name = P1_HASH_NAME[hash_id]
            v2_encr = P1_ENCR_TO_V2[encryption]
        except KeyError:
            raise CryptoError(f"phase 1 encryption {encryption} / hash {hash_id} not supported") from None
        if encryption == Phase1Encr.TRIPLE_DES_CBC:
            key_bits = None
        return cls(prf, name, encr_alg(v2_encr, key_bits))

    def digest(self, data: bytes) -> bytes:
        return hashlib.new(self.hash_name, data).digest()


def skeyid_psk(prf: PrfAlg, psk: bytes, ni_b: bytes, nr_b: bytes) -> bytes:
    """SKEYID = prf(pre-shared-key, Ni_b | Nr_b) (RFC 2409 §5); the engine reaches it through the
    authenticator seam (``ike.core.auth``), this name serves the RFC test vectors."""
    return PskAuthenticator(psk).skeyid(prf, ni_b, nr_b, b"")


def skeyid_sig(prf: PrfAlg, ni_b: bytes, nr_b: bytes, g_xy: bytes) -> bytes:
    """SKEYID = prf(Ni_b | Nr_b, g^xy) for signature authentication (RFC 2409 §5)."""
    return prf.compute(ni_b + nr_b, g_xy)


@dataclass(frozen=True, slots=True)
class Phase1Keys:
    skeyid: bytes = field(repr=False)
    skeyid_d: bytes = field(repr=False)
    skeyid_a: bytes = field(repr=False)
    skeyid_e: bytes = field(repr=False)
    enc_key: bytes = field(repr=False)

    def __repr__(self) -> str:  # keep key material out of logs and tracebacks
        return "Phase1Keys(<redacted>)"


def expand_key(prf: PrfAlg, skeyid_e: bytes, length: int) -> bytes:
    """The phase-1 cipher key from SKEYID_e (RFC 2409 §5.3 and Appendix B).

    When SKEYID_e is long enough its first bytes are the key; otherwise Ka = K1 | K2 | ... with
    K1 = prf(SKEYID_e, 0) (a single zero octet) and Kn = prf(SKEYID_e, Kn-1).
    """
    if len(skeyid_e) >= length:
        return skeyid_e[:length]
    out = b""
    block = b"\x00"
    while len(out) < length:
        block = prf.compute(skeyid_e, block)
        out += block
    return out[:length]


def derive_phase1(prf: PrfAlg, skeyid: bytes, g_xy: bytes, cky_i: bytes, cky_r: bytes, key_size: int) -> Phase1Keys:
    """SKEYID_d, SKEYID_a, SKEYID_e (RFC 2409 §5) and the expanded cipher key."""
    d = prf.compute(skeyid, g_xy + cky_i + cky_r + b"\x00")
    a = prf.compute(skeyid, d + g_xy + cky_i + cky_r + b"\x01")
    e = prf.compute(skeyid, a + g_xy + cky_i + cky_r + b"\x02")
    return Phase1Keys(skeyid, d, a, e, expand_key(prf, e, key_size))


def phase1_iv(suite: Suite, g_xi: bytes, g_xr: bytes) -> bytes:
    """The first phase-1 IV: hash(g^xi | g^xr) cut to the block size (RFC 2409 Appendix B)."""
    return suite.digest(g_xi + g_xr)[: suite.encr.block_size]


def message_iv(suite: Suite, last_phase1_block: bytes, message_id: int) -> bytes:
    """The first IV of a quick mode or informational exchange: hash(last phase-1 block | M-ID)."""
    return suite.digest(last_phase1_block + message_id.to_bytes(4, "big"))[: suite.encr.block_size]


def hash_i(prf: PrfAlg, skeyid: bytes, g_xi: bytes, g_xr: bytes, cky_i: bytes, cky_r: bytes, sai_b: bytes,
           idii_b: bytes) -> bytes:
    """HASH_I = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b) (RFC 2409 §5)."""
    return prf.compute(skeyid, g_xi + g_xr + cky_i + cky_r + sai_b + idii_b)


def hash_r(prf: PrfAlg, skeyid: bytes, g_xi: bytes, g_xr: bytes, cky_i: bytes, cky_r: bytes, sai_b: bytes,
           idir_b: bytes) -> bytes:
    """HASH_R = prf(SKEYID, g^xr | g^xi | CKY-R | CKY-I | SAi_b | IDir_b) (RFC 2409 §5)."""
    return prf.compute(skeyid, g_xr + g_xi + cky_r + cky_i + sai_b + idir_b)


def qm_hash1(prf: PrfAlg, skeyid_a: bytes, message_id: int, rest: bytes) -> bytes:
    """HASH(1) = prf(SKEYID_a, M-ID | SA | Ni [| KE] [| IDci | IDcr]) (RFC 2409 §5.5)."""
    return prf.compute(skeyid_a, message_id.to_bytes(4, "big") + rest)


def qm_hash2(prf: PrfAlg, skeyid_a: bytes, message_id: int, ni_b: bytes, rest: bytes) -> bytes:
    """HASH(2) = prf(SKEYID_a, M-ID | Ni_b | SA | Nr [| KE] [| IDci | IDcr])."""
    return prf.compute(skeyid_a, message_id.to_bytes(4, "big") + ni_b + rest)


def qm_hash3(prf: PrfAlg, skeyid_a: bytes, message_id: int, ni_b: bytes, nr_b: bytes) -> bytes:
    """HASH(3) = prf(SKEYID_a, 0 | M-ID | Ni_b | Nr_b)."""
    return prf.compute(skeyid_a, b"\x00" + message_id.to_bytes(4, "big") + ni_b + nr_b)


def info_hash(prf: PrfAlg, skeyid_a: bytes, message_id: int, rest: bytes) -> bytes:
    """Informational HASH(1) = prf(SKEYID_a, M-ID | N/D) (RFC 2409 §5.7)."""
    return prf.compute(skeyid_a, message_id.to_bytes(4, "big") + rest)


def keymat(prf: PrfAlg, skeyid_d: bytes, protocol: int, spi: bytes, ni_b: bytes, nr_b: bytes, length: int,
           g_qm: bytes | None = None) -> bytes:
    """KEYMAT for one direction of an IPsec SA (RFC 2409 §5.5).

    K1 = prf(SKEYID_d, [g(qm)^xy |] protocol | SPI | Ni_b | Nr_b), Kn = prf(SKEYID_d, Kn-1 | same seed),
    concatenated to ``length``. ``spi`` is the SPI of the SA being keyed, i.e. the one its *receiver*
    chose, which is why the two directions differ.
    """
    seed = (g_qm or b"") + bytes([protocol]) + spi + ni_b + nr_b
    out = b""
    block = b""
    while len(out) < length:
        block = prf.compute(skeyid_d, block + seed)
        out += block
    return out[:length]


class IvChain:
    """CBC under IKEv1's IV chaining for one exchange (phase 1, or one M-ID in phase 2).

    ``encrypt`` pads with zeros to the block size (RFC 2409 leaves the pad content open and receivers
    find the end from the payload chain), and both directions advance the chain to the last ciphertext
    block. A retransmission is the same ciphertext again, so the chain must not move for it: callers
    recognise duplicates before decrypting.
    """

    __slots__ = ("_block", "_cipher", "iv")

    def __init__(self, encr: EncrAlg, key: bytes, iv: bytes) -> None:
        self._cipher: Cipher = encr.keyed(key)
        self._block = encr.block_size
        self.iv = iv

    def encrypt(self, plaintext: bytes) -> bytes:
        pad = -len(plaintext) % self._block
        data = self._cipher.encrypt(self.iv, plaintext + bytes(pad))
        self.iv = data[-self._block :]
        return data

    def decrypt(self, ciphertext: bytes) -> bytes:
        if not ciphertext or len(ciphertext) % self._block:
            raise CryptoError(f"ciphertext of {len(ciphertext)} bytes is not a whole number of blocks")
        plain = self._cipher.decrypt(self.iv, ciphertext)
        self.iv = ciphertext[-self._block :]
        return plain

    def fork(self, iv: bytes) -> IvChain:
        """Another chain under the same key (a new exchange)."""
        other = IvChain.__new__(IvChain)
        other._cipher = self._cipher
        other._block = self._block
        other.iv = iv
        return other


def compare(a: bytes, b: bytes) -> bool:
    """Constant-time equality for HASH values."""
    return hmac.compare_digest(a, b)

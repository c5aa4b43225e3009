"""IKEv2 key derivation (RFC 7296 §2.13-§2.18) and the shared-key AUTH value (§2.15).

Pure functions of bytes in, bytes out, so the state machines stay free of slicing arithmetic and the
NIST SP 800-135 known answers can be checked directly.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ikegate.ike.crypto.transforms import EncrAlg, IntegAlg, PrfAlg

__all__ = [
    "ChildKeys",
    "IkeKeys",
    "derive_child_keys",
    "derive_ike_keys",
    "psk_auth",
    "rekey_skeyseed",
    "signed_octets",
    "skeyseed",
]

_KEY_PAD = b"Key Pad for IKEv2"  # RFC 7296 §2.15


@dataclass(frozen=True, slots=True)
class IkeKeys:
    """The seven secrets of an IKE SA; ``sk_ai``/``sk_ar`` are empty with an AEAD cipher."""

    sk_d: bytes
    sk_ai: bytes
    sk_ar: bytes
    sk_ei: bytes
    sk_er: bytes
    sk_pi: bytes
    sk_pr: bytes

    def __repr__(self) -> str:  # keep key material out of logs and tracebacks
        return "IkeKeys(<redacted>)"


@dataclass(frozen=True, slots=True)
class ChildKeys:
    """Keys of a Child SA pair; ``_i`` protect initiator-to-responder traffic, ``_r`` the reverse."""

    encr_i: bytes
    integ_i: bytes
    encr_r: bytes
    integ_r: bytes

    def __repr__(self) -> str:
        return "ChildKeys(<redacted>)"


def skeyseed(prf: PrfAlg, ni: bytes, nr: bytes, g_ir: bytes) -> bytes:
    """SKEYSEED = prf(Ni | Nr, g^ir) for a new IKE SA (RFC 7296 §2.14)."""
    return prf.compute(ni + nr, g_ir)


def rekey_skeyseed(prf: PrfAlg, sk_d_old: bytes, g_ir: bytes, ni: bytes, nr: bytes) -> bytes:
    """SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr) when rekeying an IKE SA (RFC 7296 §2.18)."""
    return prf.compute(sk_d_old, g_ir + ni + nr)


def derive_ike_keys(
    prf: PrfAlg,
    encr: EncrAlg,
    integ: IntegAlg | None,
    seed: bytes,
    ni: bytes,
    nr: bytes,
    spi_i: bytes,
    spi_r: bytes,
) -> IkeKeys:
    """{SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr).

    SK_d, SK_pi and SK_pr take the PRF's preferred key length; SK_e includes the GCM salt
    (RFC 5282 §7.1), which is why it is ``encr.keymat_size`` and not the bare key size.
    """
    d = prf.key_size
    a = integ.key_size if integ is not None else 0
    e = encr.keymat_size
    keymat = prf.plus(seed, ni + nr + spi_i + spi_r, 3 * d + 2 * a + 2 * e)
    cut = (d, a, a, e, e, d, d)
    parts: list[bytes] = []
    offset = 0
    for size in cut:
        parts.append(keymat[offset : offset + size])
        offset += size
    return IkeKeys(*parts)


def derive_child_keys(
    prf: PrfAlg,
    sk_d: bytes,
    encr: EncrAlg,
    integ: IntegAlg | None,
    ni: bytes,
    nr: bytes,
    g_ir: bytes | None = None,
) -> ChildKeys:
    """KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr) (RFC 7296 §2.17).

    Initiator-to-responder keys come first, encryption before integrity in each direction. Pass
    ``g_ir`` only for a CREATE_CHILD_SA that carried KE payloads (PFS).
    """
    e = encr.keymat_size
    a = integ.key_size if integ is not None else 0
    seed = (g_ir or b"") + ni + nr
    keymat = prf.plus(sk_d, seed, 2 * (e + a))
    return ChildKeys(
        encr_i=keymat[:e],
        integ_i=keymat[e : e + a],
        encr_r=keymat[e + a : 2 * e + a],
        integ_r=keymat[2 * e + a :],
    )


def psk_auth(prf: PrfAlg, psk: bytes, signed_octets: bytes) -> bytes:
    """AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>) (RFC 7296 §2.15)."""
    return prf.compute(_padded_psk(prf, psk), signed_octets)


@functools.lru_cache(maxsize=256)
def _padded_psk(prf: PrfAlg, psk: bytes) -> bytes:
    """The inner prf depends only on the key and the PRF: computed once per configured key, not twice
    per SA (each side's AUTH). Holds what the configuration already holds."""
    return prf.compute(psk, _KEY_PAD)


def signed_octets(message: bytes, nonce: bytes, prf: PrfAlg, sk_p: bytes, id_payload_body: bytes) -> bytes:
    """RealMessage | NonceData | prf(SK_px, RestOfIDPayload) (RFC 7296 §2.15).

    ``message`` is the sender's own IKE_SA_INIT message as sent, ``nonce`` the peer's nonce data, and
    ``id_payload_body`` the ID payload without its generic payload header (ID type, reserved, data).
    """
    return message + nonce + prf.compute(sk_p, id_payload_body)

"""The authenticator seam: how an end proves who it is, the same object for both IKE versions.

Today every peer authenticates with a pre-shared key; the certificates issue plugs RSA / ECDSA
signatures in here (a second implementation of :class:`Authenticator` chosen by
:func:`authenticator_for` from the peer configuration) without touching the exchanges.

- IKEv2 (RFC 7296 §2.15): AUTH is ``sign(prf, signed octets)``; a received AUTH is checked with
  ``verify``. For a PSK both are ``prf(prf(PSK, "Key Pad for IKEv2"), octets)``, compared in constant time.
- IKEv1 (RFC 2409 §5): the method decides how SKEYID is made (``skeyid``); with a PSK the key enters
  SKEYID and HASH_I / HASH_R prove it, with signatures SKEYID comes from the nonces and DH secret and
  the hashes are signed (``sign`` / ``verify``).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

from ikegate.ike.core.config import IkeSaConfig
from ikegate.ike.crypto import PrfAlg, psk_auth
from ikegate.ike.wire.registry import AuthMethod


class Authenticator(Protocol):
    """One end's credentials, as the exchanges use them."""

    @property
    def method(self) -> int:
        """The IKEv2 Authentication Method (RFC 7296 §3.8) this authenticator produces."""
        ...

    def sign(self, prf: PrfAlg, octets: bytes) -> bytes:
        """The AUTH data proving ``octets`` (IKEv2 signed octets, IKEv1 HASH_I/R input)."""
        ...

    def verify(self, prf: PrfAlg, octets: bytes, auth: bytes) -> bool:
        """True when ``auth`` proves ``octets``; constant-time for shared secrets."""
        ...

    def skeyid(self, prf: PrfAlg, ni_b: bytes, nr_b: bytes, g_xy: bytes) -> bytes:
        """IKEv1 SKEYID for this authentication method (RFC 2409 §5)."""
        ...


@dataclass(frozen=True, slots=True)
class PskAuthenticator:
    """Pre-shared key authentication; the key never appears in a repr or a log."""

    psk: bytes = field(repr=False)
    method: ClassVar[int] = AuthMethod.SHARED_KEY_MIC

    def sign(self, prf: PrfAlg, octets: bytes) -> bytes:
        return psk_auth(prf, self.psk, octets)

    def verify(self, prf: PrfAlg, octets: bytes, auth: bytes) -> bool:
        return hmac.compare_digest(self.sign(prf, octets), auth)

    def skeyid(self, prf: PrfAlg, ni_b: bytes, nr_b: bytes, g_xy: bytes) -> bytes:
        """SKEYID = prf(pre-shared-key, Ni_b | Nr_b)."""
        return prf.compute(self.psk, ni_b + nr_b)


def authenticator_for(cfg: IkeSaConfig) -> Authenticator:
    """The authenticator a peer configuration asks for (a PSK today)."""
    return PskAuthenticator(cfg.psk)


__all__ = ["Authenticator", "PskAuthenticator", "authenticator_for"]

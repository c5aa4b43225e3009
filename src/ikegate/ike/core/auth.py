"""The authenticator seam: how an end proves who it is, the same object for both IKE versions.

An :class:`Authenticator` is one peer configuration's credentials, as the exchanges use them. Two
implementations exist: :class:`PskAuthenticator` here (pre-shared keys) and the certificate one outside
the engines (``ikegate.pki.authenticator``: RSA / ECDSA signatures, chain and CRL checks, identity
binding), which the gateway puts in :attr:`IkeSaConfig.auth`. The engines never see a certificate
object or a clock: they pass octets and the peer's CERT payloads (DER) in, and get AUTH bytes or a
verdict out. :func:`authenticator_for` picks the one a configuration asks for.

- IKEv2 (RFC 7296 §2.15, RFC 7427): ``sign(prf, octets, peer_hashes)`` gives the AUTH method and data
  for the signed octets; ``verify(prf, octets, method, data, peer)`` checks the peer's AUTH payload and,
  for certificates, its chain and that its IKE ID is bound to the certificate. ``certreq()``,
  ``hash_algorithms()`` and ``certificates(certreq)`` are the CERTREQ, SIGNATURE_HASH_ALGORITHMS and
  CERT contents (empty for a PSK).
- IKEv1 (RFC 2409 §5): ``skeyid`` is per method (a PSK enters SKEYID; signatures do not);
  ``sign_hash(hash)`` / ``verify_hash(hash, signature, peer)`` are the SIG payload over HASH_I / HASH_R.

A refusal is an :class:`AuthFailure`: ``str()`` is the reason for the log line and the offline record,
``kind`` a short stable label for the metrics; the engine answers AUTHENTICATION_FAILED.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

from ikegate.ike.crypto import PrfAlg, psk_auth
from ikegate.ike.wire.registry import AuthMethod

if TYPE_CHECKING:  # pragma: no cover
    from ikegate.ike.core.config import IkeSaConfig

#: How reasons and displays name an AUTH method (IKEv2 numbers; IKEv1 maps onto them).
METHOD_NAMES: dict[int, str] = {
    AuthMethod.RSA_SIG: "RSA signature",
    AuthMethod.SHARED_KEY_MIC: "pre-shared key",
    AuthMethod.DSS_SIG: "DSS signature",
    AuthMethod.ECDSA_SHA256_P256: "ECDSA signature",
    AuthMethod.ECDSA_SHA384_P384: "ECDSA signature",
    AuthMethod.ECDSA_SHA512_P521: "ECDSA signature",
    AuthMethod.DIGITAL_SIGNATURE: "digital signature",
}


def method_name(method: int) -> str:
    return METHOD_NAMES.get(method, f"method {method}")


class AuthFailure(Exception):
    """The peer is not authenticated (or we cannot authenticate): ``str()`` is the reason, ``kind`` the
    metrics label (``bad-signature``, ``method-not-configured``, ``expired``, ``revoked`` ...)."""

    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.kind = kind


def method_not_configured(method: int) -> AuthFailure:
    """The refusal of a peer that authenticates with the other kind of method than we configured."""
    return AuthFailure(f"peer uses an authentication method not configured: {method_name(method)}",
                       "method-not-configured")


@dataclass(frozen=True, slots=True)
class PeerCredentials:
    """What the peer presented about itself: its IKE ID and its CERT payloads (X.509 DER, its own
    certificate first; empty for a PSK peer)."""

    id_type: int
    id_data: bytes
    certificates: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Verdict:
    """An authenticated peer, for displays: the AUTH method it used, for RFC 7427 the signature scheme
    (``ECDSA with SHA-256``), for certificates its subject."""

    method: int
    subject: str = ""
    scheme: str = ""

    @property
    def text(self) -> str:
        """``PRE_SHARED``, ``RSA_SIG``, ``ECDSA_SIG``, ``DIGITAL_SIG (RSASSA-PSS with SHA-256)``."""
        name = DISPLAY_NAMES.get(self.method, f"METHOD_{self.method}")
        return f"{name} ({self.scheme})" if self.scheme else name


#: ``display ike sa verbose`` names of the AUTH methods (the USG's ``PRE_SHARED`` style).
DISPLAY_NAMES: dict[int, str] = {
    AuthMethod.RSA_SIG: "RSA_SIG",
    AuthMethod.SHARED_KEY_MIC: "PRE_SHARED",
    AuthMethod.DSS_SIG: "DSS_SIG",
    AuthMethod.ECDSA_SHA256_P256: "ECDSA_SIG",
    AuthMethod.ECDSA_SHA384_P384: "ECDSA_SIG",
    AuthMethod.ECDSA_SHA512_P521: "ECDSA_SIG",
    AuthMethod.DIGITAL_SIGNATURE: "DIGITAL_SIG",
}


class Authenticator(Protocol):
    """One end's credentials and trust, as the exchanges use them."""

    @property
    def method(self) -> int:
        """The configured method, as an IKEv2 AUTH method: 2 for a PSK, the classic signature method of our
        key (1, 9, 10, 11) for certificates."""
        ...

    @property
    def uses_certificates(self) -> bool: ...

    def certreq(self) -> bytes:
        """CERTREQ data to send (X.509 signature encoding): SHA-1 of our CAs' public keys; b"" for none."""
        ...

    def hash_algorithms(self) -> bytes:
        """SIGNATURE_HASH_ALGORITHMS notify data to announce (RFC 7427 §4); b"" to announce nothing."""
        ...

    def ca_subjects(self) -> list[bytes]:
        """IKEv1 CERTREQ contents: the DER subjects of the CAs we trust (IKEv1 names CAs by DN)."""
        ...

    def certificates(self, certreq: bytes) -> list[bytes]:
        """Our CERT payloads' certificates (DER, ours first), cut to what the peer's CERTREQ asks for."""
        ...

    def sign(self, prf: PrfAlg, octets: bytes, peer_hashes: Sequence[int] | None = None) -> tuple[int, bytes]:
        """IKEv2: (AUTH method, AUTH data) over the signed octets; ``peer_hashes`` what the peer announced
        in SIGNATURE_HASH_ALGORITHMS (None: nothing)."""
        ...

    def verify(self, prf: PrfAlg, octets: bytes, method: int, data: bytes, peer: PeerCredentials) -> Verdict:
        """IKEv2: the peer's AUTH payload (and certificate, and ID binding); :class:`AuthFailure` if not."""
        ...

    def sign_hash(self, hash_value: bytes) -> bytes:
        """IKEv1 SIG payload data over HASH_I / HASH_R (signature methods only)."""
        ...

    def verify_hash(self, hash_value: bytes, signature: bytes, peer: PeerCredentials) -> Verdict:
        """IKEv1: the peer's SIG payload, certificate and ID binding; :class:`AuthFailure` if not."""
        ...

    def skeyid(self, prf: PrfAlg, ni_b: bytes, nr_b: bytes, g_xy: bytes) -> bytes:
        """IKEv1 SKEYID for this authentication method (RFC 2409 §5)."""
        ...


@dataclass(frozen=True, slots=True)
class PskAuthenticator:
    """Pre-shared key authentication; the key never appears in a repr or a log."""

    psk: bytes = field(repr=False)
    method: ClassVar[int] = AuthMethod.SHARED_KEY_MIC
    uses_certificates: ClassVar[bool] = False

    def certreq(self) -> bytes:
        return b""

    def hash_algorithms(self) -> bytes:
        return b""

    def ca_subjects(self) -> list[bytes]:
        return []

    def certificates(self, certreq: bytes) -> list[bytes]:
        return []

    def mac(self, prf: PrfAlg, octets: bytes) -> bytes:
        """prf(prf(PSK, "Key Pad for IKEv2"), octets)."""
        return psk_auth(prf, self.psk, octets)

    def sign(self, prf: PrfAlg, octets: bytes, peer_hashes: Sequence[int] | None = None) -> tuple[int, bytes]:
        return self.method, self.mac(prf, octets)

    def verify(self, prf: PrfAlg, octets: bytes, method: int, data: bytes, peer: PeerCredentials) -> Verdict:
        if method != self.method:
            raise method_not_configured(method)
        if not hmac.compare_digest(self.mac(prf, octets), data):
            raise AuthFailure("peer AUTH does not verify (different pre-shared key?)", "bad-psk")
        return Verdict(method)

    def sign_hash(self, hash_value: bytes) -> bytes:
        raise AuthFailure("no local certificate and key configured for signature authentication", "no-credential")

    def verify_hash(self, hash_value: bytes, signature: bytes, peer: PeerCredentials) -> Verdict:
        raise method_not_configured(AuthMethod.RSA_SIG)

    def skeyid(self, prf: PrfAlg, ni_b: bytes, nr_b: bytes, g_xy: bytes) -> bytes:
        """SKEYID = prf(pre-shared-key, Ni_b | Nr_b)."""
        return prf.compute(self.psk, ni_b + nr_b)


def authenticator_for(cfg: IkeSaConfig) -> Authenticator:
    """The authenticator a peer configuration asks for: its own (certificates) or its PSK."""
    return cfg.auth if cfg.auth is not None else PskAuthenticator(cfg.psk)


__all__ = ["AuthFailure", "Authenticator", "PeerCredentials", "PskAuthenticator", "Verdict", "authenticator_for",
           "method_name", "method_not_configured"]

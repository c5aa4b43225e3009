"""What an IKE SA needs to authenticate itself and its peer: one immutable value per peer.

:func:`ikegate.gateway.translate.auth_settings` builds an :class:`AuthSettings` from the configuration
(the peer's ``authentication-method``, ``certificate local-filename``, ``certificate send-chain``,
``remote-id-type``/``remote-id`` and the device PKI). The engines' authenticator (ike/core) consumes it
through the few methods below, so wiring certificates into IKEv2 IKE_AUTH and IKEv1 MM5/MM6 is a matter
of calling them at the right step:

* ``certreq()`` — the CERTREQ data to send (IKE_SA_INIT, IKEv1 MM3/MM4 or AM);
* ``certificates_to_send(certreq)`` — our CERT payloads, trimmed to what the peer's CERTREQ needs;
* ``sign(octets, peer_hashes)`` / ``sign_v1(hash)`` — our AUTH / SIG payload;
* ``check_method(method)`` — refuse a peer that authenticates with a method we did not configure;
* ``verify_peer(cert, sent, id_type, id_data, now)`` then ``verify_signature(...)`` — the peer's.

Every refusal raises :class:`AuthError` with the reason for the log line and the offline record, and a
:class:`~ikegate.pki.verify.Failure` kind for the metrics label; the engine answers AUTHENTICATION_FAILED.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ikegate.ike.core.auth import AuthFailure, PeerCredentials, Verdict, method_not_configured
from ikegate.ike.crypto import PrfAlg
from ikegate.ike.wire.registry import AuthMethod
from ikegate.pki.names import dn_text
from ikegate.pki.signature import (
    ANNOUNCED_HASHES,
    Scheme,
    SignatureError,
    auth_sign,
    auth_verify,
    choose_method,
    classic_method,
    encode_hash_algorithms,
    ikev1_sign,
    ikev1_verify,
)
from ikegate.pki.store import PrivateKey
from ikegate.pki.verify import (
    CertificateError,
    Failure,
    VerifiedChain,
    certreq_data,
    chain_for_certreq,
    check_identity,
    check_remote_id,
    split_certreq,
    verify_chain,
)
from ikegate.policy.model import AuthenticationMethod, IdType


class AuthError(AuthFailure):
    """The peer is not authenticated; ``str()`` is the reason, ``kind`` the metrics label."""

    kind: Failure

    def __init__(self, reason: str, kind: Failure) -> None:
        super().__init__(reason, kind)


_NO_CREDENTIAL = "no local certificate and key configured for signature authentication"


@dataclass(frozen=True)
class LocalCredential:
    """Our certificate, its private key, and the CA certificates we send above it."""

    certificate: x509.Certificate
    key: PrivateKey = field(repr=False)
    chain: tuple[x509.Certificate, ...] = ()


@dataclass(frozen=True)
class AuthSettings:
    method: AuthenticationMethod
    psk: bytes | None = field(default=None, repr=False)
    local: LocalCredential | None = None
    send_chain: bool = False
    cas: tuple[x509.Certificate, ...] = ()
    crls: tuple[x509.CertificateRevocationList, ...] = ()
    remote_id: tuple[IdType, str] | None = None
    rsa_pss: bool = False  # sign RFC 7427 RSA with PSS instead of PKCS#1 v1.5

    @property
    def uses_certificates(self) -> bool:
        return self.method.is_signature

    # -- what we send -----------------------------------------------------------------------------
    def certreq(self) -> bytes:
        """CERTREQ data (X.509 signature encoding): hashes of the CAs we trust; empty for PSK."""
        return certreq_data(self.cas) if self.uses_certificates else b""

    def signature_hash_algorithms(self) -> bytes:
        """SIGNATURE_HASH_ALGORITHMS notify data (RFC 7427 §4) we announce."""
        return encode_hash_algorithms(ANNOUNCED_HASHES)

    def certificates_to_send(self, certreq: bytes | None = None) -> list[x509.Certificate]:
        """Our certificate, then (with ``certificate send-chain``) the CA certificates above it, cut
        to what reaches a CA the peer's CERTREQ named (all of them when it named none we know)."""
        if self.local is None:
            return []
        chain = list(self.local.chain) if self.send_chain else []
        if chain and certreq:
            trimmed = chain_for_certreq(self.local.certificate, chain, self.cas, split_certreq(certreq))
            if trimmed is not None:
                chain = trimmed
        return [self.local.certificate, *chain]

    def sign(self, octets: bytes, peer_hashes: list[int] | None) -> tuple[AuthMethod, bytes, Scheme | None]:
        """IKEv2 AUTH: (method, data, scheme) over ``octets`` (RFC 7296 §2.15 signed octets)."""
        if self.local is None:
            raise AuthError(_NO_CREDENTIAL, Failure.NO_CREDENTIAL)
        method, scheme = choose_method(self.local.key, peer_hashes, pss=self.rsa_pss)
        return method, auth_sign(method, self.local.key, octets, scheme), scheme

    def sign_v1(self, hash_value: bytes) -> bytes:
        """IKEv1 SIG payload data over HASH_I / HASH_R."""
        if self.local is None:
            raise AuthError(_NO_CREDENTIAL, Failure.NO_CREDENTIAL)
        return ikev1_sign(self.local.key, hash_value)

    # -- what the peer sends ----------------------------------------------------------------------
    def check_method(self, method: int) -> None:
        """A peer authenticating with PSK where we configured signatures (or the reverse) is refused."""
        peer_signs = method != AuthMethod.SHARED_KEY_MIC
        if peer_signs != self.uses_certificates:
            raise AuthError(str(method_not_configured(method)), Failure.METHOD)

    def verify_peer(self, cert_der: bytes, sent_der: Sequence[bytes], id_type: int, id_data: bytes,
                    now: datetime) -> VerifiedChain:
        """The peer's CERT payloads against our CAs and CRLs, its IKE ID against the certificate and
        the configured ``remote-id``."""
        try:
            cert = x509.load_der_x509_certificate(cert_der)
            sent = [x509.load_der_x509_certificate(d) for d in sent_der]
        except ValueError as exc:
            raise AuthError(f"peer certificate cannot be parsed: {exc}", Failure.BAD_CERTIFICATE) from None
        try:
            verified = verify_chain(cert, sent, self.cas, self.crls, now)
            check_identity(cert, id_type, id_data)
            if self.remote_id is not None:
                check_remote_id(cert, *self.remote_id)
        except CertificateError as exc:
            raise AuthError(str(exc), exc.kind) from None
        return verified

    def verify_signature(self, verified: VerifiedChain, method: int, octets: bytes, data: bytes) -> Scheme | None:
        """The peer's AUTH payload (IKEv2) against its verified certificate's key; the RFC 7427 scheme
        it used (None for the classic methods)."""
        self.check_method(method)
        try:
            return auth_verify(method, verified.certificate.public_key(), octets, data)  # type: ignore[arg-type]
        except SignatureError as exc:
            raise AuthError(f"peer AUTH does not verify: {exc}", Failure.SIGNATURE) from None

    def verify_signature_v1(self, verified: VerifiedChain, hash_value: bytes, signature: bytes) -> None:
        try:
            ikev1_verify(verified.certificate.public_key(), hash_value, signature)  # type: ignore[arg-type]
        except SignatureError as exc:
            raise AuthError(f"peer SIG does not verify: {exc}", Failure.SIGNATURE) from None


def _wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class CertificateAuthenticator:
    """A certificate peer's :class:`~ikegate.ike.core.auth.Authenticator`: the engines' calls mapped onto
    :class:`AuthSettings`. ``clock`` is the wall time certificates are valid at (the engines keep only a
    monotonic ``now``); tests pass their own."""

    settings: AuthSettings
    clock: Callable[[], datetime] = _wall_clock

    @property
    def method(self) -> int:
        local = self.settings.local
        if local is not None:
            return int(classic_method(local.key))
        return int(AuthMethod.ECDSA_SHA256_P256 if self.settings.method is AuthenticationMethod.ECDSA_SIGNATURE
                   else AuthMethod.RSA_SIG)

    @property
    def uses_certificates(self) -> bool:
        return True

    def certreq(self) -> bytes:
        return self.settings.certreq()

    def hash_algorithms(self) -> bytes:
        return self.settings.signature_hash_algorithms()

    def ca_subjects(self) -> list[bytes]:
        return [ca.subject.public_bytes() for ca in self.settings.cas]

    def certificates(self, certreq: bytes) -> list[bytes]:
        return [c.public_bytes(Encoding.DER) for c in self.settings.certificates_to_send(certreq or None)]

    def sign(self, prf: PrfAlg, octets: bytes, peer_hashes: Sequence[int] | None = None) -> tuple[int, bytes]:
        method, data, _ = self.settings.sign(octets, list(peer_hashes) if peer_hashes else None)
        return int(method), data

    def _peer_chain(self, peer: PeerCredentials) -> VerifiedChain:
        if not peer.certificates:
            raise AuthError("peer sent no certificate", Failure.NO_CERTIFICATE)
        return self.settings.verify_peer(peer.certificates[0], peer.certificates[1:], peer.id_type, peer.id_data,
                                         self.clock())

    def verify(self, prf: PrfAlg, octets: bytes, method: int, data: bytes, peer: PeerCredentials) -> Verdict:
        self.settings.check_method(method)
        verified = self._peer_chain(peer)
        scheme = self.settings.verify_signature(verified, method, octets, data)
        return Verdict(method, dn_text(verified.certificate.subject), scheme.name if scheme is not None else "")

    def sign_hash(self, hash_value: bytes) -> bytes:
        return self.settings.sign_v1(hash_value)

    def verify_hash(self, hash_value: bytes, signature: bytes, peer: PeerCredentials) -> Verdict:
        verified = self._peer_chain(peer)
        self.settings.verify_signature_v1(verified, hash_value, signature)
        return Verdict(self.method, dn_text(verified.certificate.subject))

    def skeyid(self, prf: PrfAlg, ni_b: bytes, nr_b: bytes, g_xy: bytes) -> bytes:
        """SKEYID = prf(Ni_b | Nr_b, g^xy) for signature authentication (RFC 2409 §5)."""
        return prf.compute(ni_b + nr_b, g_xy)

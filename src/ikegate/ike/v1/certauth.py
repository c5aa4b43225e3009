"""Certificate authentication of IKEv1 phase 1 (RFC 2409 §5.1), as Main and Aggressive Mode use it.

With signatures the phase-1 keys do not depend on who the peer is (SKEYID = prf(Ni_b | Nr_b, g^xy)),
so a Main Mode responder decrypts MM5 once and then looks for the configured peer whose CAs, CRLs and
``remote-id`` accept the certificate it carries. What travels:

* the Authentication Method attribute of every phase-1 transform is the one of our key: 3 (RSA
  signature) or 9/10/11 (ECDSA on P-256/P-384/P-521, RFC 4754 §3) — one credential, one method; the
  responder accepts the methods of the peers configured for the source address;
* CERTREQ (MM3/MM4, AM1/AM2), one per trusted CA, naming it by its DER subject as IKEv1 does (IKEv2
  sends key hashes); a peer's CERTREQ does not change what we send;
* our CERT payloads (X.509 signature encoding): our certificate, then with ``certificate send-chain``
  the CA certificates above it, and the SIG payload over HASH_I / HASH_R (:mod:`ikegate.pki.signature`
  says how each key type signs).

Verification is :meth:`ikegate.pki.auth.AuthSettings.verify_peer` (chain, dates, key usage, CRL, the
IKE ID bound to the certificate, ``remote-id``) and then the SIG; a certificate whose key type is not
the negotiated method's is refused before the signature is looked at. Failures are
:class:`~ikegate.pki.auth.AuthError` with the reason for the log and the offline record; the engine
answers INVALID-SIGNATURE for a bad signature and AUTHENTICATION-FAILED otherwise (:func:`notify_for`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ikegate.ike.core.config import IkeSaConfig
from ikegate.ike.v1.registry import CERT_X509_SIGNATURE, AuthMethod, NotifyType
from ikegate.ike.v1.wire import Cert, CertReq, Identification, Payload, Signature
from ikegate.pki.auth import AuthError, method_name
from ikegate.pki.names import dn_text
from ikegate.pki.signature import SignatureError, ikev1_auth_method
from ikegate.pki.verify import Failure

PRE_SHARED = int(AuthMethod.PRE_SHARED)
_V1_NAMES = {int(AuthMethod.RSA_SIG): "RSA signature", int(AuthMethod.ECDSA_256): "ECDSA signature",
             int(AuthMethod.ECDSA_384): "ECDSA signature", int(AuthMethod.ECDSA_521): "ECDSA signature",
             PRE_SHARED: "pre-shared key"}


def v1_method_name(method: int) -> str:
    return _V1_NAMES.get(method) or method_name(method)


def signs(cfg: IkeSaConfig | None) -> bool:
    return cfg is not None and cfg.auth is not None and cfg.auth.uses_certificates


def method_of(cfg: IkeSaConfig) -> int:
    """The phase-1 Authentication Method this peer configuration uses; AuthError when it signs but has no
    certificate and key to sign with."""
    auth = cfg.auth
    if auth is None or not auth.uses_certificates:
        return PRE_SHARED
    if auth.local is None:
        raise AuthError("no local certificate and key configured for signature authentication",
                        Failure.NO_CREDENTIAL)
    try:
        return ikev1_auth_method(auth.local.key)
    except SignatureError as exc:
        raise AuthError(str(exc), Failure.NO_CREDENTIAL) from None


def accepted_methods(candidates: Iterable[IkeSaConfig]) -> frozenset[int]:
    """The methods a responder accepts from the peers configured for an address (those without a usable
    credential add nothing)."""
    methods: set[int] = set()
    for cfg in candidates:
        try:
            methods.add(method_of(cfg))
        except AuthError:
            continue
    return frozenset(methods)


def uses_method(cfg: IkeSaConfig, method: int) -> bool:
    try:
        return method_of(cfg) == method
    except AuthError:
        return False


def certreqs(cfg: IkeSaConfig) -> list[Payload]:
    """One CERTREQ per CA we trust (an empty one, "any CA", when none is imported)."""
    cas = cfg.auth.cas if cfg.auth is not None else ()
    if not cas:
        return [CertReq(CERT_X509_SIGNATURE, b"")]
    return [CertReq(CERT_X509_SIGNATURE, ca.subject.public_bytes()) for ca in cas]


def proof(cfg: IkeSaConfig, hash_value: bytes) -> list[Payload]:
    """Our CERT payloads and the SIG payload over ``hash_value`` (HASH_I or HASH_R)."""
    assert cfg.auth is not None
    certs: list[Payload] = [Cert(CERT_X509_SIGNATURE, c.public_bytes(Encoding.DER))
                            for c in cfg.auth.certificates_to_send()]
    return [*certs, Signature(cfg.auth.sign_v1(hash_value))]


def verify(cfg: IkeSaConfig, method: int, payloads: list[Payload], peer_id: Identification,
           hash_value: bytes, now: datetime | None = None) -> x509.Certificate:
    """The peer's CERT and SIG payloads against ``cfg``; its verified certificate, or AuthError."""
    auth = cfg.auth
    assert auth is not None
    certs = [p.data for p in payloads if isinstance(p, Cert) and p.encoding == CERT_X509_SIGNATURE]
    sig = next((p for p in payloads if isinstance(p, Signature)), None)
    if not certs:
        raise AuthError("peer sent no X.509 certificate", Failure.BAD_CERTIFICATE)
    if sig is None:
        raise AuthError("peer sent no SIG payload", Failure.SIGNATURE)
    verified = auth.verify_peer(certs[0], certs[1:], peer_id.id_type, peer_id.data, now or datetime.now(UTC))
    try:
        held = ikev1_auth_method(verified.certificate.public_key())  # type: ignore[arg-type]
    except SignatureError as exc:
        raise AuthError(f"peer certificate key cannot sign IKEv1: {exc}", Failure.METHOD) from None
    if held != method:
        raise AuthError(f"peer certificate holds a key for {v1_method_name(held)} but the negotiated method is "
                        f"{v1_method_name(method)}", Failure.METHOD)
    auth.verify_signature_v1(verified, hash_value, sig.data)
    return verified.certificate


def subject_of(cert: x509.Certificate) -> str:
    return dn_text(cert.subject)


def notify_for(exc: AuthError) -> int:
    return int(NotifyType.INVALID_SIGNATURE if exc.kind is Failure.SIGNATURE else NotifyType.AUTHENTICATION_FAILED)


__all__ = ["PRE_SHARED", "accepted_methods", "certreqs", "method_of", "notify_for", "proof", "signs",
           "subject_of", "uses_method", "v1_method_name", "verify"]

"""Certificate authentication of IKEv1 phase 1 (RFC 2409 §5.1), as Main and Aggressive Mode use it,
through the version-neutral :class:`~ikegate.ike.core.auth.Authenticator` seam (``IkeSaConfig.auth``).

With signatures the phase-1 keys do not depend on who the peer is (SKEYID = prf(Ni_b | Nr_b, g^xy),
``Authenticator.skeyid``), so a Main Mode responder decrypts MM5 once and then looks for the configured
peer whose CAs, CRLs and ``remote-id`` accept the certificate it carries. What travels:

* the Authentication Method attribute of every phase-1 transform is the one of our key: 3 (RSA
  signature) or 9/10/11 (ECDSA on P-256/P-384/P-521, RFC 4754 §3) — one credential, one method; the
  responder accepts the methods of the peers configured for the source address;
* CERTREQ (MM3/MM4, AM1/AM2), one per trusted CA, naming it by its DER subject as IKEv1 does (IKEv2
  sends key hashes); a peer's CERTREQ does not change what we send;
* our CERT payloads (X.509 signature encoding): our certificate, then with ``certificate send-chain``
  the CA certificates above it, and the SIG payload over HASH_I / HASH_R (``Authenticator.sign_hash``;
  ``ikegate.pki.signature`` says how each key type signs).

Verification is ``Authenticator.verify_hash`` (chain, dates, key usage, CRL, the IKE ID bound to the
certificate, ``remote-id``, then the SIG); a certificate whose key type is not the negotiated method's is
refused before that. Failures are :class:`~ikegate.ike.core.auth.AuthFailure` with the reason for the log
and the offline record and ``kind`` for the metrics; the engine answers INVALID-SIGNATURE for a bad
signature and AUTHENTICATION-FAILED otherwise (:func:`notify_for`).
"""

from __future__ import annotations

from collections.abc import Iterable

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ikegate.ike.core.auth import AuthFailure, PeerCredentials, Verdict
from ikegate.ike.core.config import IkeSaConfig
from ikegate.ike.v1.registry import CERT_X509_SIGNATURE, AuthMethod, NotifyType
from ikegate.ike.v1.wire import Cert, CertReq, Identification, Payload, Signature
from ikegate.ike.wire.registry import AuthMethod as V2Method

PRE_SHARED = int(AuthMethod.PRE_SHARED)
#: The seam speaks IKEv2 AUTH method numbers; IKEv1's phase-1 attribute differs only for RSA.
_V1_OF_V2 = {int(V2Method.RSA_SIG): int(AuthMethod.RSA_SIG), int(V2Method.ECDSA_SHA256_P256): int(AuthMethod.ECDSA_256),
             int(V2Method.ECDSA_SHA384_P384): int(AuthMethod.ECDSA_384),
             int(V2Method.ECDSA_SHA512_P521): int(AuthMethod.ECDSA_521)}
_V1_OF_CURVE = {"secp256r1": int(AuthMethod.ECDSA_256), "secp384r1": int(AuthMethod.ECDSA_384),
                "secp521r1": int(AuthMethod.ECDSA_521)}
_V1_NAMES = {int(AuthMethod.RSA_SIG): "RSA signature", int(AuthMethod.ECDSA_256): "ECDSA signature",
             int(AuthMethod.ECDSA_384): "ECDSA signature", int(AuthMethod.ECDSA_521): "ECDSA signature",
             PRE_SHARED: "pre-shared key", int(AuthMethod.DSS_SIG): "DSS signature"}
#: The metrics label of a signature that does not verify (``pki.verify.Failure.SIGNATURE``).
BAD_SIGNATURE = "bad-signature"
_NO_CREDENTIAL = "no local certificate and key configured for signature authentication"


def v1_method_name(method: int) -> str:
    return _V1_NAMES.get(method, f"method {method}")


def signs(cfg: IkeSaConfig | None) -> bool:
    return cfg is not None and cfg.auth is not None and cfg.auth.uses_certificates


def method_of(cfg: IkeSaConfig) -> int:
    """The phase-1 Authentication Method this peer configuration uses; AuthFailure when it signs but has
    no certificate and key to sign with."""
    auth = cfg.auth
    if auth is None or not auth.uses_certificates:
        return PRE_SHARED
    if not auth.certificates(b""):
        raise AuthFailure(_NO_CREDENTIAL, "no-credential")
    method = _V1_OF_V2.get(auth.method)
    if method is None:
        raise AuthFailure(f"no IKEv1 authentication method for {v1_method_name(auth.method)}", "no-credential")
    return method


def accepted_methods(candidates: Iterable[IkeSaConfig]) -> frozenset[int]:
    """The methods a responder accepts from the peers configured for an address (those without a usable
    credential add nothing)."""
    methods: set[int] = set()
    for cfg in candidates:
        try:
            methods.add(method_of(cfg))
        except AuthFailure:
            continue
    return frozenset(methods)


def uses_method(cfg: IkeSaConfig, method: int) -> bool:
    try:
        return method_of(cfg) == method
    except AuthFailure:
        return False


def certreqs(cfg: IkeSaConfig) -> list[Payload]:
    """One CERTREQ per CA we trust (an empty one, "any CA", when none is imported)."""
    subjects = cfg.auth.ca_subjects() if cfg.auth is not None else []
    return [CertReq(CERT_X509_SIGNATURE, s) for s in subjects] or [CertReq(CERT_X509_SIGNATURE, b"")]


def proof(cfg: IkeSaConfig, hash_value: bytes) -> list[Payload]:
    """Our CERT payloads and the SIG payload over ``hash_value`` (HASH_I or HASH_R)."""
    assert cfg.auth is not None
    certs: list[Payload] = [Cert(CERT_X509_SIGNATURE, der) for der in cfg.auth.certificates(b"")]
    return [*certs, Signature(cfg.auth.sign_hash(hash_value))]


def _key_method(der: bytes) -> int | None:
    """The IKEv1 method a certificate's key signs with (None: unparsable or unknown key type; the full
    check of the certificate then says why)."""
    try:
        key = x509.load_der_x509_certificate(der).public_key()
    except ValueError:
        return None
    if isinstance(key, rsa.RSAPublicKey):
        return int(AuthMethod.RSA_SIG)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return _V1_OF_CURVE.get(key.curve.name)
    return None


def verify(cfg: IkeSaConfig, method: int, payloads: list[Payload], peer_id: Identification,
           hash_value: bytes) -> Verdict:
    """The peer's CERT and SIG payloads against ``cfg``: its verdict (with the certificate subject), or
    AuthFailure."""
    auth = cfg.auth
    assert auth is not None
    certs = tuple(p.data for p in payloads if isinstance(p, Cert) and p.encoding == CERT_X509_SIGNATURE)
    sig = next((p for p in payloads if isinstance(p, Signature)), None)
    if sig is None:
        raise AuthFailure("peer sent no SIG payload", BAD_SIGNATURE)
    held = _key_method(certs[0]) if certs else None
    if held is not None and held != method:
        raise AuthFailure(f"peer certificate holds a key for {v1_method_name(held)} but the negotiated method is "
                          f"{v1_method_name(method)}", "method-not-configured")
    return auth.verify_hash(hash_value, sig.data, PeerCredentials(peer_id.id_type, peer_id.data, certs))


def notify_for(exc: AuthFailure) -> int:
    return int(NotifyType.INVALID_SIGNATURE if str(exc.kind) == BAD_SIGNATURE else NotifyType.AUTHENTICATION_FAILED)


__all__ = ["BAD_SIGNATURE", "PRE_SHARED", "accepted_methods", "certreqs", "method_of", "notify_for", "proof",
           "signs", "uses_method", "v1_method_name", "verify"]

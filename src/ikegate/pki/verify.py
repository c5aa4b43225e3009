"""Is this peer certificate good, and is it the peer's? One verdict, one readable reason.

:func:`verify_chain` builds the path from the peer's certificate to a configured CA through the
intermediates the peer sent (CERT payloads) and the CA certificates we hold, and checks on the way,
as strongSwan does:

* every signature on the path, and that the path ends at an imported CA certificate;
* validity dates of every certificate on the path, at ``now`` (a parameter: no clock in here);
* each issuer is a CA (basicConstraints CA:TRUE, its pathLenConstraint respected) and, where it has a
  keyUsage extension, may sign certificates (keyCertSign);
* the peer certificate, where it has keyUsage, allows signatures (digitalSignature or nonRepudiation);
  where it has extendedKeyUsage, that includes one IKE may use: id-kp-ipsecIKE (RFC 4945 §5.1.3.12),
  serverAuth, clientAuth or anyExtendedKeyUsage (strongSwan's profile);
* no certificate on the path is listed in a CRL we hold from its issuer (a CRL whose signature does not
  verify with that issuer's key is ignored; without a CRL the certificate passes, as strongSwan's
  default ``strictness=no``).

:func:`check_identity` binds the peer's IKE ID to the certificate: ID_DER_ASN1_DN to the subject,
ID_FQDN / ID_RFC822_ADDR / ID_IPV4_ADDR / ID_IPV6_ADDR to a subjectAltName; :func:`check_remote_id`
compares the certificate with the ``remote-id-type`` / ``remote-id`` the operator configured.

CERTREQ (RFC 7296 §3.7): :func:`certreq_data` is the concatenated SHA-1 hashes of our CAs'
SubjectPublicKeyInfo; :func:`chain_for_certreq` trims our chain to what reaches a CA the peer named.

Each failure is a :class:`CertificateError` whose ``str()`` is the reason for the log and the offline
record ("peer certificate expired on 2026-11-27 09:00:00 UTC", "issuer not trusted: CN=Rogue CA",
"revoked (CRL of CN=Test CA, serial 0A:1B)", "ID fqdn:x does not match certificate subject …").
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, ObjectIdentifier

from ikegate.ike.wire.registry import IdType as WireIdType
from ikegate.pki.der import oid_text, read_tlv
from ikegate.pki.names import dn_matches, dn_text
from ikegate.pki.store import find_issuer, is_self_signed, spki
from ikegate.policy.model import IdType

MAX_PATH = 8  # certificates between the peer's and the anchor: more is refused
ID_KP_IPSEC_IKE = ObjectIdentifier("1.3.6.1.5.5.7.3.17")
_IKE_EKUS = frozenset({ID_KP_IPSEC_IKE, ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH,
                       ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE})


class Failure(enum.StrEnum):
    """What kind of refusal: a stable label for metrics (``str()`` of the error is for people)."""

    UNTRUSTED = "untrusted"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    CONSTRAINTS = "ca-constraints"
    KEY_USAGE = "key-usage"
    REVOKED = "revoked"
    ID_MISMATCH = "id-mismatch"
    REMOTE_ID_MISMATCH = "remote-id-mismatch"
    BAD_CERTIFICATE = "bad-certificate"
    METHOD = "method-not-configured"
    SIGNATURE = "bad-signature"
    NO_CREDENTIAL = "no-credential"
    NO_CERTIFICATE = "no-certificate"


class CertificateError(Exception):
    """The peer's certificate (or chain, or identity) is refused; ``str()`` says why, ``kind`` what."""

    def __init__(self, reason: str, kind: Failure) -> None:
        super().__init__(reason)
        self.kind = kind


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def serial_text(serial: int) -> str:
    """``0A:1B:2C`` — how displays and reasons print a serial number."""
    raw = serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big")
    return ":".join(f"{b:02X}" for b in raw)


def _ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _check_dates(cert: x509.Certificate, now: datetime, what: str) -> None:
    if now < cert.not_valid_before_utc:
        raise CertificateError(f"{what} not valid before {_when(cert.not_valid_before_utc)}", Failure.NOT_YET_VALID)
    if now > cert.not_valid_after_utc:
        raise CertificateError(f"{what} expired on {_when(cert.not_valid_after_utc)}", Failure.EXPIRED)


def _check_issuer_role(issuer: x509.Certificate, below: int) -> None:
    """``issuer`` signs a path with ``below`` CA certificates under it (pathLenConstraint counts those)."""
    name = dn_text(issuer.subject)
    constraints = _ext(issuer, x509.BasicConstraints)
    if not isinstance(constraints, x509.BasicConstraints) or not constraints.ca:
        raise CertificateError(f"issuer {name} is not a CA (basicConstraints CA:TRUE missing)", Failure.CONSTRAINTS)
    if constraints.path_length is not None and below > constraints.path_length:
        raise CertificateError(f"path too long for CA {name} (pathLenConstraint {constraints.path_length})",
                               Failure.CONSTRAINTS)
    usage = _ext(issuer, x509.KeyUsage)
    if isinstance(usage, x509.KeyUsage) and not usage.key_cert_sign:
        raise CertificateError(f"CA {name} may not sign certificates (keyUsage without keyCertSign)",
                               Failure.CONSTRAINTS)


def _check_end_entity_usage(cert: x509.Certificate) -> None:
    usage = _ext(cert, x509.KeyUsage)
    if isinstance(usage, x509.KeyUsage) and not (usage.digital_signature or usage.content_commitment):
        raise CertificateError("peer certificate key usage does not allow signatures "
                               "(keyUsage without digitalSignature)", Failure.KEY_USAGE)
    extended = _ext(cert, x509.ExtendedKeyUsage)
    if isinstance(extended, x509.ExtendedKeyUsage) and not _IKE_EKUS.intersection(extended):
        names = ", ".join(getattr(oid, "_name", oid.dotted_string) for oid in extended)
        raise CertificateError(f"peer certificate extended key usage does not allow IKE ({names})", Failure.KEY_USAGE)


def _check_revocation(cert: x509.Certificate, issuer: x509.Certificate,
                      crls: Sequence[x509.CertificateRevocationList]) -> None:
    for crl in crls:
        if crl.issuer != issuer.subject:
            continue
        try:
            if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
                continue
        except (TypeError, ValueError):
            continue
        if crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
            serial = serial_text(cert.serial_number)
            raise CertificateError(f"revoked (CRL of {dn_text(issuer.subject)}, serial {serial})", Failure.REVOKED)


def _who(index: int, cert: x509.Certificate) -> str:
    return "peer certificate" if index == 0 else f"CA certificate {dn_text(cert.subject)}"


@dataclass(frozen=True)
class VerifiedChain:
    """A path that passed: the peer's certificate first, the trusted CA certificate last."""

    path: tuple[x509.Certificate, ...]

    @property
    def certificate(self) -> x509.Certificate:
        return self.path[0]

    @property
    def anchor(self) -> x509.Certificate:
        return self.path[-1]


def verify_chain(peer: x509.Certificate, sent: Sequence[x509.Certificate], cas: Sequence[x509.Certificate],
                 crls: Sequence[x509.CertificateRevocationList], now: datetime) -> VerifiedChain:
    """The checks of the module doc, in path order; CertificateError on the first failure."""
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    trusted = list(cas)
    path = [peer]
    current = peer
    while True:
        if current in trusted:
            break  # a CA we hold (the peer's certificate may itself be one we imported)
        anchor = find_issuer(current, trusted)
        if anchor is not None:
            path.append(anchor)
            break
        if is_self_signed(current):
            raise CertificateError(f"issuer not trusted: {dn_text(current.issuer)} (self-signed, not imported)",
                                   Failure.UNTRUSTED)
        step = find_issuer(current, [c for c in sent if c not in path])
        if step is None:
            raise CertificateError(f"issuer not trusted: {dn_text(current.issuer)}", Failure.UNTRUSTED)
        if len(path) > MAX_PATH:
            raise CertificateError(f"certificate path longer than {MAX_PATH}", Failure.UNTRUSTED)
        path.append(step)
        current = step
    for index, cert in enumerate(path):
        _check_dates(cert, now, _who(index, cert))
    for index in range(1, len(path)):
        _check_issuer_role(path[index], below=index - 1)
    _check_end_entity_usage(peer)
    for index in range(len(path) - 1):
        _check_revocation(path[index], path[index + 1], crls)
    return VerifiedChain(tuple(path))


# --- the IKE ID and the certificate ----------------------------------------------------------------
def _sans(cert: x509.Certificate) -> x509.SubjectAlternativeName | None:
    value = _ext(cert, x509.SubjectAlternativeName)
    return value if isinstance(value, x509.SubjectAlternativeName) else None


def _san_values(cert: x509.Certificate, kind: type[x509.DNSName] | type[x509.RFC822Name] | type[x509.IPAddress],
                ) -> list[object]:
    sans = _sans(cert)
    return [g.value for g in sans if isinstance(g, kind)] if sans is not None else []


def certificate_names(cert: x509.Certificate) -> str:
    """The subject and the subjectAltNames, for a reason that says what the certificate does name."""
    text = dn_text(cert.subject)
    sans = _sans(cert)
    if sans is None:
        return text
    parts = []
    for general in sans:
        if isinstance(general, x509.DNSName):
            parts.append(f"fqdn:{general.value}")
        elif isinstance(general, x509.RFC822Name):
            parts.append(f"user-fqdn:{general.value}")
        elif isinstance(general, x509.IPAddress):
            parts.append(f"ip:{general.value}")
    return f"{text} (subjectAltName {', '.join(parts)})" if parts else text


def id_text(id_type: int, data: bytes) -> str:
    """An IKE ID as the reasons print it: ``fqdn:gw.example``, ``ip:192.0.2.1``, ``dn:CN=gw``."""
    try:
        if id_type == WireIdType.ID_IPV4_ADDR and len(data) == 4:
            return f"ip:{ipaddress.IPv4Address(data)}"
        if id_type == WireIdType.ID_IPV6_ADDR and len(data) == 16:
            return f"ip:{ipaddress.IPv6Address(data)}"
        if id_type == WireIdType.ID_FQDN:
            return f"fqdn:{data.decode('ascii', 'replace')}"
        if id_type == WireIdType.ID_RFC822_ADDR:
            return f"user-fqdn:{data.decode('ascii', 'replace')}"
        if id_type == WireIdType.ID_DER_ASN1_DN:
            return f"dn:{dn_of_der(data) or data.hex()}"
    except ValueError:
        pass
    return f"type {id_type}:{data.hex()}"


def dn_of_der(data: bytes) -> str | None:
    """The text of a DER-encoded Name (an ID_DER_ASN1_DN), or None if it is not a well-formed Name."""
    name = _parse_name(data)
    return dn_text(name) if name is not None else None


def _parse_name(data: bytes) -> x509.Name | None:
    """A DER ``Name`` (SEQUENCE OF SET OF AttributeTypeAndValue) as an x509.Name, or None."""
    try:
        tag, body, end = read_tlv(data)
        if tag != 0x30 or end != len(data):
            return None
        rdns: list[x509.RelativeDistinguishedName] = []
        pos = 0
        while pos < len(body):
            set_tag, rdn_body, pos = read_tlv(body, pos)
            if set_tag != 0x31:
                return None
            attrs: list[x509.NameAttribute[str]] = []
            inner = 0
            while inner < len(rdn_body):
                seq_tag, atv, inner = read_tlv(rdn_body, inner)
                oid_tag, oid, after = read_tlv(atv)
                value_tag, value, _ = read_tlv(atv, after)
                if seq_tag != 0x30 or oid_tag != 0x06:
                    return None
                text = value.decode("utf-16-be") if value_tag == 0x1E else value.decode("utf-8")
                # (the string type is not kept: Names compare by attribute and value)
                attrs.append(x509.NameAttribute(ObjectIdentifier(oid_text(oid)), text))
            rdns.append(x509.RelativeDistinguishedName(attrs))
        return x509.Name(rdns)
    except (ValueError, IndexError, UnicodeDecodeError):
        return None


def check_identity(cert: x509.Certificate, id_type: int, data: bytes) -> None:
    """The peer's IKE ID must be what the certificate certifies (module doc); CertificateError if not."""
    ok = False
    if id_type == WireIdType.ID_DER_ASN1_DN:
        name = _parse_name(data)
        ok = data == cert.subject.public_bytes() or (name is not None and name == cert.subject)
    elif id_type == WireIdType.ID_FQDN:
        wanted = data.decode("ascii", "replace").rstrip(".").lower()
        ok = any(str(v).rstrip(".").lower() == wanted for v in _san_values(cert, x509.DNSName))
    elif id_type == WireIdType.ID_RFC822_ADDR:
        wanted = data.decode("ascii", "replace").lower()
        ok = any(str(v).lower() == wanted for v in _san_values(cert, x509.RFC822Name))
    elif id_type in (WireIdType.ID_IPV4_ADDR, WireIdType.ID_IPV6_ADDR) and len(data) in (4, 16):
        ok = ipaddress.ip_address(data) in _san_values(cert, x509.IPAddress)
    if not ok:
        raise CertificateError(f"ID {id_text(id_type, data)} does not match certificate subject "
                               f"{certificate_names(cert)}", Failure.ID_MISMATCH)


def check_remote_id(cert: x509.Certificate, id_type: IdType, value: str) -> None:
    """``remote-id-type`` / ``remote-id`` of the peer against its certificate: ``dn`` the subject,
    ``fqdn`` / ``user-fqdn`` / ``ip`` a subjectAltName."""
    if id_type is IdType.DN:
        ok = dn_matches(value, cert.subject)
    elif id_type is IdType.FQDN:
        ok = any(str(v).lower() == value.lower() for v in _san_values(cert, x509.DNSName))
    elif id_type is IdType.USER_FQDN:
        ok = any(str(v).lower() == value.lower() for v in _san_values(cert, x509.RFC822Name))
    else:
        try:
            ok = ipaddress.ip_address(value) in _san_values(cert, x509.IPAddress)
        except ValueError:
            ok = False
    if not ok:
        raise CertificateError(f"remote-id {id_type.value}:{value} does not match certificate subject "
                               f"{certificate_names(cert)}", Failure.REMOTE_ID_MISMATCH)


def own_identity(cert: x509.Certificate) -> tuple[int, bytes]:
    """The IKE ID a certificate peer sends when ``local-id-type dn``: its subject as ID_DER_ASN1_DN."""
    return int(WireIdType.ID_DER_ASN1_DN), cert.subject.public_bytes()


# --- CERTREQ ---------------------------------------------------------------------------------------
def ca_key_hash(cert: x509.Certificate) -> bytes:
    """SHA-1 of the CA's SubjectPublicKeyInfo: one "Certification Authority" entry of CERTREQ."""
    return hashlib.sha1(spki(cert.public_key())).digest()  # RFC 7296 §3.7 fixes SHA-1


def certreq_data(cas: Iterable[x509.Certificate]) -> bytes:
    """The CERTREQ payload's data (encoding 4, X.509 signature): our trusted CAs' key hashes."""
    seen: list[bytes] = []
    for cert in cas:
        digest = ca_key_hash(cert)
        if digest not in seen:
            seen.append(digest)
    return b"".join(seen)


def split_certreq(data: bytes) -> list[bytes]:
    """The 20-octet hashes of a received CERTREQ (a trailing partial hash is ignored)."""
    return [data[i:i + 20] for i in range(0, len(data) - len(data) % 20, 20)]


def chain_for_certreq(cert: x509.Certificate, chain: Sequence[x509.Certificate], cas: Sequence[x509.Certificate],
                      requested: Iterable[bytes]) -> list[x509.Certificate] | None:
    """The intermediates to send after ``cert`` so that the peer reaches a CA it asked for: ``chain``
    (as :meth:`PkiStore.chain_of` builds it) cut below the first certificate whose issuer's key hash
    was requested. None when no requested CA is on our path (the caller then sends the whole chain,
    as strongSwan does, and lets the peer decide)."""
    wanted = set(requested)
    top = chain[-1] if chain else cert
    root = find_issuer(top, list(cas))
    issuers = [*chain, *([root] if root is not None else [])]  # issuers[i] signed ([cert, *chain])[i]
    for index, issuer in enumerate(issuers):
        if ca_key_hash(issuer) in wanted:
            return list(chain[:index])
    return None

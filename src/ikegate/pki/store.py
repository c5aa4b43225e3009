"""The device PKI: what ``pki import-certificate``, ``pki import rsa-key-pair|ecc-key-pair`` and
``pki import-crl`` loaded, and from which files.

Files are named relative to the directory of the configuration file (``directory``; the working
directory when there is none), as a USG names them on its storage: a name, not a path. Each import
parses the whole file first and only then records it, so a file that does not parse leaves the store
exactly as it was and the error names the file and the reason. The records keep the file names (and a
key file's password), which is what ``display current-configuration`` shows; the key material itself is
never rendered.

CA certificates are trust anchors, roots and intermediates alike (as strongSwan's ``x509ca``
directory): a peer chain may end at any of them, and our own chain is built from them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, load_der_private_key

from ikegate.policy.users import KeyKind  # rsa|ecc: the VRP key families, as for peer-public-key

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

MAX_FILE_SIZE = 2 * 1024 * 1024  # as the USG: a PKI file over 2 MB is refused
RSA_BITS = (2048, 4096)
#: What ``verify_directly_issued_by`` raises when a certificate was not signed by the candidate.
_NOT_ISSUED = (InvalidSignature, ValueError, TypeError)
DEVICE_CURVES: tuple[type[ec.EllipticCurve], ...] = (ec.SECP256R1, ec.SECP384R1)


class PkiError(Exception):
    """A file that cannot be imported: ``str()`` names the file and says why."""

    def __init__(self, filename: str, reason: str) -> None:
        super().__init__(f"{filename}: {reason}")
        self.filename = filename
        self.reason = reason


class CertRole(enum.Enum):
    """``pki import-certificate ca|local``."""

    CA = "ca"
    LOCAL = "local"


class KeyEncoding(enum.Enum):
    PEM = "pem"
    DER = "der"


# The configuration travels between the supervisor and its worker processes (pickled over their own
# socketpairs, see ikegate.workers.rpc); cryptography's objects cannot be pickled, so entries travel as DER.


def _cert_entry(filename: str, der: bytes) -> CertEntry:
    return CertEntry(filename, x509.load_der_x509_certificate(der))


def _key_entry(
    name: str, kind: KeyKind, encoding: KeyEncoding, filename: str, password: str | None, der: bytes
) -> KeyEntry:
    return KeyEntry(name, kind, encoding, filename, password, check_device_key(load_der_private_key(der, None)))


def _crl_entry(filename: str, der: bytes) -> CrlEntry:
    return CrlEntry(filename, x509.load_der_x509_crl(der))


@dataclass(frozen=True)
class CertEntry:
    filename: str
    cert: x509.Certificate

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _cert_entry, (self.filename, self.cert.public_bytes(Encoding.DER))


@dataclass(frozen=True)
class KeyEntry:
    name: str
    kind: KeyKind
    encoding: KeyEncoding
    filename: str
    password: str | None  # the clear password of an encrypted key file; shown only in cipher form
    key: PrivateKey = field(repr=False)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        der = self.key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
        return _key_entry, (self.name, self.kind, self.encoding, self.filename, self.password, der)


@dataclass(frozen=True)
class CrlEntry:
    filename: str
    crl: x509.CertificateRevocationList

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _crl_entry, (self.filename, self.crl.public_bytes(Encoding.DER))


def _is_pem(data: bytes) -> bool:
    return b"-----BEGIN " in data


def key_description(key: PublicKey | PrivateKey) -> str:
    """``RSA 2048 bits`` / ``ECDSA secp256r1`` — what a display shows of a key."""
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return f"RSA {key.key_size} bits"
    return f"ECDSA {key.curve.name}"


def check_device_key(key: object) -> PrivateKey:
    """The key, if it is one the device may hold: RSA 2048..4096 bits or ECDSA P-256/P-384."""
    if isinstance(key, rsa.RSAPrivateKey):
        if not RSA_BITS[0] <= key.key_size <= RSA_BITS[1]:
            raise ValueError(f"RSA key of {key.key_size} bits (the device holds 2048 to 4096 bits)")
        return key
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, DEVICE_CURVES):
            raise ValueError(f"ECDSA key on {key.curve.name} (the device holds secp256r1 and secp384r1)")
        return key
    raise ValueError(f"{type(key).__name__.lstrip('_')} is neither an RSA nor an ECDSA key")


def parse_certificate(data: bytes) -> x509.Certificate:
    """One X.509 certificate, PEM or DER. A PEM file must hold exactly one (as on the USG)."""
    if _is_pem(data):
        certs = x509.load_pem_x509_certificates(data)
        if len(certs) != 1:
            raise ValueError(f"the file holds {len(certs)} certificates; import one certificate per file")
        return certs[0]
    return x509.load_der_x509_certificate(data)


def parse_crl(data: bytes) -> x509.CertificateRevocationList:
    if _is_pem(data):
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


def parse_private_key(data: bytes, encoding: KeyEncoding, password: str | None) -> PrivateKey:
    secret = password.encode() if password is not None else None
    if encoding is KeyEncoding.PEM:
        if not _is_pem(data):
            raise ValueError("not a PEM file (no -----BEGIN line)")
        key = serialization.load_pem_private_key(data, secret)
    else:
        key = serialization.load_der_private_key(data, secret)
    return check_device_key(key)


def _reason(exc: Exception) -> str:
    """A one-line reason from whatever the parser raised (cryptography's messages can be long)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "Password was not given" in text:
        return "the key file is encrypted and no password was given"
    if "Bad decrypt" in text or "Incorrect password" in text:
        return "wrong password for the key file"
    if "Unable to load" in text or "Could not deserialize" in text or "error parsing asn1" in text.lower():
        return f"not a valid PEM or DER file ({text})"
    return text


@dataclass
class PkiStore:
    """The device's PKI material and the files it came from (see the module doc)."""

    directory: Path | None = None
    cas: dict[str, CertEntry] = field(default_factory=dict)  # by file name, in import order
    locals: dict[str, CertEntry] = field(default_factory=dict)
    keys: dict[str, KeyEntry] = field(default_factory=dict)  # by key-pair name
    crls: dict[str, CrlEntry] = field(default_factory=dict)

    # -- reading files -------------------------------------------------------------------------------
    def path(self, filename: str) -> Path:
        """Where ``filename`` lives: a bare name in the configuration's directory."""
        if not filename or "/" in filename or "\\" in filename or filename in (".", ".."):
            raise PkiError(filename, "a file name, not a path, is expected (files live next to the configuration)")
        return (self.directory or Path.cwd()) / filename

    def read(self, filename: str) -> bytes:
        path = self.path(filename)
        try:
            size = path.stat().st_size
            if size > MAX_FILE_SIZE:
                raise PkiError(filename, f"the file is {size} bytes; the limit is {MAX_FILE_SIZE} bytes")
            return path.read_bytes()
        except FileNotFoundError:
            raise PkiError(filename, f"no such file in {path.parent}") from None
        except IsADirectoryError:
            raise PkiError(filename, "is a directory") from None
        except PermissionError:
            raise PkiError(filename, "permission denied") from None

    def _parse(self, filename: str, what: str, parse: object) -> object:
        data = self.read(filename)
        if not data.strip():
            raise PkiError(filename, "the file is empty")
        try:
            return parse(data)  # type: ignore[operator]
        except PkiError:
            raise
        except (ValueError, TypeError) as exc:
            raise PkiError(filename, f"not a valid {what}: {_reason(exc)}") from None

    # -- imports (parse everything first, then record) ----------------------------------------------
    def import_certificate(self, role: CertRole, filename: str) -> CertEntry:
        cert = self._parse(filename, "X.509 certificate", parse_certificate)
        assert isinstance(cert, x509.Certificate)
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
            raise PkiError(filename, f"the certificate's key ({type(key).__name__}) is neither RSA nor ECDSA")
        if role is CertRole.CA and not is_ca(cert):
            raise PkiError(filename, "not a CA certificate (basicConstraints CA:TRUE is missing)")
        entry = CertEntry(filename, cert)
        (self.cas if role is CertRole.CA else self.locals)[filename] = entry
        return entry

    def import_key(self, name: str, kind: KeyKind, encoding: KeyEncoding, filename: str,
                   password: str | None = None) -> KeyEntry:
        key = self._parse(filename, f"{encoding.value.upper()} private key",
                          lambda data: parse_private_key(data, encoding, password))
        assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
        is_rsa = isinstance(key, rsa.RSAPrivateKey)
        if (kind is KeyKind.RSA) != is_rsa:
            held = "an RSA" if is_rsa else "an ECDSA"
            raise PkiError(filename, f"holds {held} key; use pki import {'rsa' if is_rsa else 'ecc'}-key-pair")
        entry = KeyEntry(name, kind, encoding, filename, password, key)
        self.keys[name] = entry
        return entry

    def import_crl(self, filename: str) -> CrlEntry:
        crl = self._parse(filename, "CRL", parse_crl)
        assert isinstance(crl, x509.CertificateRevocationList)
        entry = CrlEntry(filename, crl)
        self.crls[filename] = entry
        return entry

    def remove(self, table: dict[str, CertEntry] | dict[str, KeyEntry] | dict[str, CrlEntry], key: str) -> bool:
        return table.pop(key, None) is not None

    # -- queries -------------------------------------------------------------------------------------
    @property
    def ca_certificates(self) -> list[x509.Certificate]:
        return [e.cert for e in self.cas.values()]

    @property
    def crl_list(self) -> list[x509.CertificateRevocationList]:
        return [e.crl for e in self.crls.values()]

    def key_for(self, cert: x509.Certificate) -> KeyEntry | None:
        """The imported key pair whose public half is the certificate's key."""
        wanted = spki(cert.public_key())
        for entry in self.keys.values():
            if spki(entry.key.public_key()) == wanted:
                return entry
        return None

    def local_certificate(self, filename: str) -> CertEntry | None:
        return self.locals.get(filename)

    def chain_of(self, cert: x509.Certificate) -> list[x509.Certificate]:
        """The CA certificates above ``cert`` up to, not including, a self-signed root: what
        ``certificate send-chain`` sends after the certificate itself."""
        chain: list[x509.Certificate] = []
        current = cert
        for _ in range(8):
            issuer = find_issuer(current, self.ca_certificates)
            if issuer is None or is_self_signed(issuer) or issuer in chain:
                break
            chain.append(issuer)
            current = issuer
        return chain


def spki(key: PublicKey | object) -> bytes:
    """The DER SubjectPublicKeyInfo of a public key."""
    assert isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def is_self_signed(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except _NOT_ISSUED:
        return False
    return True


def find_issuer(cert: x509.Certificate, candidates: list[x509.Certificate]) -> x509.Certificate | None:
    """The candidate whose subject is ``cert``'s issuer and whose key verifies its signature."""
    for candidate in candidates:
        if candidate.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(candidate)
        except _NOT_ISSUED:
            continue
        return candidate
    return None

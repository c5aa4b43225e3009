"""Test certificates made at test time with ``cryptography`` (no private key is committed).

A small CA toolkit: keys, certificates with the extensions verification looks at, CRLs, and writing them
as PEM or DER files. Keys are cached per process (RSA generation is the slow part).
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


@functools.cache
def rsa_key(bits: int = 2048, index: int = 0) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, bits)


@functools.cache
def ec_key(curve: str = "secp256r1", index: int = 0) -> ec.EllipticCurvePrivateKey:
    curves: dict[str, ec.EllipticCurve] = {"secp256r1": ec.SECP256R1(), "secp384r1": ec.SECP384R1(),
                                            "secp521r1": ec.SECP521R1()}
    return ec.generate_private_key(curves[curve])


def name(cn: str, org: str | None = "ikegate") -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "CN")]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


@dataclass
class Issued:
    cert: x509.Certificate
    key: Key


def certificate(cn: str, key: Key, issuer: Issued | None = None, *, ca: bool = False, path_length: int | None = None,
                not_before: datetime | None = None, not_after: datetime | None = None, serial: int | None = None,
                sans: list[x509.GeneralName] | None = None, key_usage: x509.KeyUsage | None = None,
                eku: list[x509.ObjectIdentifier] | None = None, subject: x509.Name | None = None) -> Issued:
    subject = subject or name(cn)
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(issuer.cert.subject if issuer else subject)
               .public_key(key.public_key())
               .serial_number(serial if serial is not None else x509.random_serial_number())
               .not_valid_before(not_before or NOW - timedelta(days=1))
               .not_valid_after(not_after or NOW + timedelta(days=365)))
    # Key identifiers as real CAs write them (strongSwan finds a certificate's CRL through them).
    builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
        (issuer.key if issuer else key).public_key()), critical=False)
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    signer = issuer.key if issuer else key
    algorithm = hashes.SHA256()
    return Issued(builder.sign(signer, algorithm), key)


def key_usage(*, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False,
              key_encipherment: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=digital_signature, content_commitment=False,
                         key_encipherment=key_encipherment, data_encipherment=False, key_agreement=False,
                         key_cert_sign=key_cert_sign, crl_sign=crl_sign, encipher_only=False, decipher_only=False)


def crl(issuer: Issued, revoked: list[int], *, last: datetime | None = None) -> x509.CertificateRevocationList:
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(issuer.cert.subject)
               .last_update(last or NOW - timedelta(hours=1))
               .next_update((last or NOW) + timedelta(days=7))
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
                              critical=False)
               .add_extension(x509.CRLNumber(1), critical=False))
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(NOW - timedelta(minutes=30)).build())
    return builder.sign(issuer.key, hashes.SHA256())


def dns(value: str) -> x509.GeneralName:
    return x509.DNSName(value)


def email(value: str) -> x509.GeneralName:
    return x509.RFC822Name(value)


def ip(value: str) -> x509.GeneralName:
    return x509.IPAddress(ipaddress.ip_address(value))


SERVER = [ExtendedKeyUsageOID.SERVER_AUTH]


@dataclass
class Pki:
    """root -> intermediate -> gateway (RSA), plus an ECDSA gateway under the root."""

    root: Issued
    intermediate: Issued
    gateway: Issued
    ecdsa: Issued


def standard_pki() -> Pki:
    root = certificate("Test Root CA", rsa_key(2048, 1), ca=True,
                       key_usage=key_usage(key_cert_sign=True, crl_sign=True))
    intermediate = certificate("Test Intermediate CA", rsa_key(2048, 2), root, ca=True, path_length=0,
                               key_usage=key_usage(key_cert_sign=True, crl_sign=True))
    gateway = certificate("gw1.example", rsa_key(2048, 3), intermediate, serial=0x1A2B,
                          sans=[dns("gw1.example"), email("vpn@gw1.example"), ip("192.0.2.1"), ip("2001:db8::1")],
                          key_usage=key_usage(digital_signature=True), eku=SERVER)
    ecdsa = certificate("gw2.example", ec_key(), root, sans=[dns("gw2.example")])
    return Pki(root, intermediate, gateway, ecdsa)


def write_cert(path: Path, cert: x509.Certificate, der: bool = False) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM))
    return path


def write_key(path: Path, key: Key, der: bool = False, password: str | None = None) -> Path:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption())
    path.write_bytes(key.private_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8, encryption))
    return path


def write_crl(path: Path, crl_: x509.CertificateRevocationList, der: bool = False) -> Path:
    path.write_bytes(crl_.public_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM))
    return path

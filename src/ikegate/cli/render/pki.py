"""``display pki certificate ca|local`` and ``display pki crl``: what the device PKI holds.

The layout follows the USG's (OpenSSL-like ``Certificate: / Data: / Issuer: / Validity`` blocks, one per
imported file), reduced to what an operator checks: subject, issuer, validity, serial, the key, the
subjectAltNames and the SHA-256 fingerprint. A private key is never shown: a local certificate says only
which imported key pair matches it. The same facts are the JSON records (``| json``).
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ikegate.pki.names import dn_text
from ikegate.pki.store import CertEntry, CrlEntry, PkiStore, key_description
from ikegate.pki.verify import certificate_names, serial_text


def _time(moment: datetime) -> str:
    return moment.strftime("%b %d %H:%M:%S %Y GMT")


def fingerprint(data: x509.Certificate | x509.CertificateRevocationList) -> str:
    return ":".join(f"{b:02X}" for b in data.fingerprint(hashes.SHA256()))


def _signature_algorithm(cert: x509.Certificate | x509.CertificateRevocationList) -> str:
    oid = cert.signature_algorithm_oid
    return getattr(oid, "_name", oid.dotted_string)


def certificate_record(entry: CertEntry, store: PkiStore) -> dict[str, object]:
    cert = entry.cert
    key = store.key_for(cert)
    return {
        "filename": entry.filename,
        "subject": dn_text(cert.subject),
        "issuer": dn_text(cert.issuer),
        "serial": serial_text(cert.serial_number),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "key": key_description(cert.public_key()),  # type: ignore[arg-type]
        "signature_algorithm": _signature_algorithm(cert),
        "names": certificate_names(cert),
        "fingerprint_sha256": fingerprint(cert),
        "key_pair": key.name if key is not None else None,
    }


def certificate_lines(entry: CertEntry, store: PkiStore, local: bool) -> list[str]:
    record = certificate_record(entry, store)
    cert = entry.cert
    lines = [
        f"The x509 object type is certificate (file {entry.filename}):",
        "Certificate:",
        "    Data:",
        f"        Version: {cert.version.value + 1} (0x{cert.version.value:x})",
        f"        Serial Number: {record['serial']}",
        f"    Signature Algorithm: {record['signature_algorithm']}",
        f"        Issuer: {record['issuer']}",
        "        Validity",
        f"            Not Before: {_time(cert.not_valid_before_utc)}",
        f"            Not After : {_time(cert.not_valid_after_utc)}",
        f"        Subject: {record['subject']}",
        f"        Subject Public Key: {record['key']}",
    ]
    names = str(record["names"])
    if "(subjectAltName " in names:
        lines.append(f"        Subject Alternative Name: {names.split('(subjectAltName ', 1)[1].rstrip(')')}")
    lines.append(f"    Fingerprint (SHA-256): {record['fingerprint_sha256']}")
    if local:
        pair = record["key_pair"]
        lines.append(f"    Key pair: {pair if pair is not None else 'none imported for this certificate'}")
    return lines


def certificates(store: PkiStore, local: bool, filename: str | None = None) -> list[str]:
    table = store.locals if local else store.cas
    entries = [e for name, e in table.items() if filename is None or name == filename]
    if not entries:
        what = "local" if local else "CA"
        return [f"Info: No {what} certificate{' ' + filename if filename else ''} is imported."]
    lines: list[str] = []
    for entry in entries:
        if lines:
            lines.append("")
        lines += certificate_lines(entry, store, local)
    return lines


def crl_record(entry: CrlEntry) -> dict[str, object]:
    crl = entry.crl
    return {
        "filename": entry.filename,
        "issuer": dn_text(crl.issuer),
        "last_update": crl.last_update_utc.isoformat(),
        "next_update": crl.next_update_utc.isoformat() if crl.next_update_utc else None,
        "signature_algorithm": _signature_algorithm(crl),
        "fingerprint_sha256": fingerprint(crl),
        "revoked": [{"serial": serial_text(r.serial_number), "date": r.revocation_date_utc.isoformat()}
                    for r in crl],
    }


def crls(store: PkiStore, filename: str | None = None) -> list[str]:
    entries = [e for name, e in store.crls.items() if filename is None or name == filename]
    if not entries:
        return [f"Info: No CRL{' ' + filename if filename else ''} is imported."]
    lines: list[str] = []
    for entry in entries:
        crl = entry.crl
        if lines:
            lines.append("")
        lines += [
            f"The x509 object type is CRL (file {entry.filename}):",
            "Certificate Revocation List (CRL):",
            f"    Signature Algorithm: {_signature_algorithm(crl)}",
            f"    Issuer: {dn_text(crl.issuer)}",
            f"    Last Update: {_time(crl.last_update_utc)}",
            f"    Next Update: {_time(crl.next_update_utc) if crl.next_update_utc else 'none'}",
        ]
        revoked = sorted(crl, key=lambda r: r.serial_number)
        if not revoked:
            lines.append("No Revoked Certificates.")
        else:
            lines.append("Revoked Certificates:")
            for item in revoked:
                lines += [f"    Serial Number: {serial_text(item.serial_number)}",
                          f"        Revocation Date: {_time(item.revocation_date_utc)}"]
        lines.append(f"    Fingerprint (SHA-256): {fingerprint(crl)}")
    return lines

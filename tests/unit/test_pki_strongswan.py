"""Interop of the device PKI with strongSwan's ``pki`` tool (Debian package ``strongswan-pki``): files it
makes import and verify here, and its verdicts on our chains agree with ours. Skipped without the tool."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from ikegate.cli.commands import default_tree
from ikegate.cli.shell import Shell
from ikegate.ike.wire.registry import AuthMethod
from ikegate.ike.wire.registry import IdType as Wire
from ikegate.pki.signature import auth_sign, auth_verify
from ikegate.pki.verify import CertificateError, check_identity, verify_chain
from ikegate.policy.model import Config
from tests.unit import pki_factory as f

pytestmark = pytest.mark.skipif(shutil.which("pki") is None, reason="strongSwan's pki tool (strongswan-pki) missing")


def pki(*args: str, out: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(["pki", *args], capture_output=True, timeout=120, check=False)
    if out is not None:
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        out.write_bytes(done.stdout)
    return done


@pytest.fixture(scope="module")
def swan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("swan")
    pki("--gen", "--type", "rsa", "--size", "3072", "--outform", "pem", out=d / "ca.key")
    pki("--self", "--ca", "--lifetime", "3650", "--in", str(d / "ca.key"), "--dn", "C=CH, O=swan, CN=swan CA",
        "--outform", "pem", out=d / "ca.pem")
    pki("--gen", "--type", "ecdsa", "--size", "256", out=d / "moon.key")  # DER (SEC1)
    pki("--issue", "--cacert", str(d / "ca.pem"), "--cakey", str(d / "ca.key"), "--type", "priv", "--in",
        str(d / "moon.key"), "--dn", "C=CH, O=swan, CN=moon", "--san", "moon.example", "--san", "192.0.2.5",
        "--flag", "serverAuth", "--lifetime", "30", out=d / "moon.der")
    pki("--gen", "--type", "rsa", "--size", "2048", out=d / "sun.key")
    pki("--issue", "--cacert", str(d / "ca.pem"), "--cakey", str(d / "ca.key"), "--type", "priv", "--in",
        str(d / "sun.key"), "--dn", "C=CH, O=swan, CN=sun", "--san", "sun.example", "--serial", "0bad",
        out=d / "sun.der")
    pki("--signcrl", "--cacert", str(d / "ca.pem"), "--cakey", str(d / "ca.key"), "--reason", "key-compromise",
        "--cert", str(d / "sun.der"), out=d / "ca.crl")
    return d


def test_strongswan_files_import_and_verify(swan: Path) -> None:
    config = Config()
    config.pki.directory = swan
    shell = Shell(config, tree=default_tree())
    shell.execute("system-view")
    for line in ("pki import ecc-key-pair moon der filename moon.key",
                 "pki import rsa-key-pair sun der filename sun.key", "pki import-certificate ca filename ca.pem",
                 "pki import-certificate local filename moon.der",
                 "pki import-certificate local filename sun.der", "pki import-crl filename ca.crl"):
        outcome = shell.execute(line)
        assert outcome.ok, f"{line}: {outcome.text}"
    store = config.pki
    moon, sun = store.locals["moon.der"].cert, store.locals["sun.der"].cert
    now = datetime.now(UTC)
    verified = verify_chain(moon, [], store.ca_certificates, store.crl_list, now)
    assert verified.anchor == store.cas["ca.pem"].cert
    check_identity(moon, Wire.ID_FQDN, b"moon.example")
    check_identity(moon, Wire.ID_IPV4_ADDR, bytes([192, 0, 2, 5]))
    with pytest.raises(CertificateError, match=r"^revoked \(CRL of C=CH, O=swan, CN=swan CA, serial 0B:AD\)$"):
        verify_chain(sun, [], store.ca_certificates, store.crl_list, now)
    with pytest.raises(CertificateError, match=r"^peer certificate expired on "):
        verify_chain(moon, [], store.ca_certificates, store.crl_list, now + timedelta(days=31))
    key = store.key_for(moon)
    assert key is not None and key.name == "moon"
    data = auth_sign(AuthMethod.ECDSA_SHA256_P256, key.key, b"octets")
    auth_verify(AuthMethod.ECDSA_SHA256_P256, moon.public_key(), b"octets", data)  # type: ignore[arg-type]
    text = shell.execute("display pki certificate local filename moon.der").text
    assert "Subject: C=CH, O=swan, CN=moon" in text and "ECDSA secp256r1" in text


def _swan_verdict(directory: Path, leaf: x509.Certificate, cas: list[x509.Certificate],
                  crls: list[x509.CertificateRevocationList]) -> bool:
    args = ["--verify", "--in", str(f.write_cert(directory / "leaf.der", leaf, der=True))]
    for index, ca in enumerate(cas):
        args += ["--cacert", str(f.write_cert(directory / f"ca{index}.der", ca, der=True))]
    for index, crl in enumerate(crls):
        args += ["--crl", str(f.write_crl(directory / f"crl{index}.der", crl, der=True))]
    return pki(*args).returncode == 0


def _our_verdict(leaf: x509.Certificate, cas: list[x509.Certificate],
                 crls: list[x509.CertificateRevocationList]) -> bool:
    try:
        verify_chain(leaf, [], cas, crls, datetime.now(UTC))
    except CertificateError:
        return False
    return True


def test_strongswan_agrees_with_our_verdicts(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    root = f.certificate("Agree Root", f.rsa_key(2048, 1), ca=True, not_before=now - timedelta(days=1))
    other = f.certificate("Other Root", f.rsa_key(2048, 9), ca=True, not_before=now - timedelta(days=1))
    leaf = f.certificate("leaf", f.ec_key(), root, serial=0x42, not_before=now - timedelta(days=1))
    revoked = f.crl(root, [0x42], last=now)
    cases = [
        ([root.cert], [], True),
        ([other.cert], [], False),
        ([root.cert], [revoked], False),
    ]
    for cas, crls, expected in cases:
        assert _our_verdict(leaf.cert, cas, crls) is expected
        assert _swan_verdict(tmp_path, leaf.cert, cas, crls) is expected

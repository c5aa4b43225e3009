"""IKEv1 Main Mode with certificates against strongSwan (issue 15): one lab for the whole module.

    hostA -- gwA [ikegate] == WAN 198.51.100.0/24 | 2001:db8:ff::/64 == sw [charon]

strongSwan's ``pki`` tool (Debian ``strongswan-pki``) makes, at test time: an RSA-3072 root CA, two
RSA-3072 intermediates below it, RSA-3072 and ECDSA-P256 end entities for both gateways (subjectAltNames
with both WAN addresses, which are the IKE IDs), a revoked strongSwan certificate with the CRL listing
it, and an expired ikegate certificate. ikegate imports them with the VRP ``pki import…`` lines and
sends its chain (``certificate send-chain``: leaf + two intermediates + a 384-octet signature make
MM5 about 4 kB, larger than a 1,500-byte path; strongSwan's log tells how it arrived).

Each test restarts ikegate with the configuration it needs and reloads charon's connection; charon
itself and the namespaces live for the module.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.interop.netns import (
    GW_A_LAN,
    SITE_A_V4,
    WAN_A,
    WAN_B,
    Lab,
    route_into_tun,
)
from tests.interop.netns import skip_reason as netns_skip_reason
from tests.interop.test_strongswan import IKG_LAN, SW_LAN, V1, Bed, make_bed, show_logs
from tests.interop.vrp import GatewayConfig, acl_rule, start_ikegate
from tests.waiting import wait_for

pytestmark = pytest.mark.interop
CONN, CHILD = "ikg", "net"


def _pki(*args: str, out: Path) -> None:
    done = subprocess.run(["pki", *args], capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    out.write_bytes(done.stdout)


def _sans(addrs: dict[int, str]) -> list[str]:
    return [arg for family in (4, 6) for arg in ("--san", addrs[family])]


def make_pki(d: Path) -> None:
    """The files named in the module docstring, PEM, in ``d``."""
    def key(name: str, kind: str = "rsa", size: str = "3072") -> Path:
        _pki("--gen", "--type", kind, "--size", size, "--outform", "pem", out=d / f"{name}.key")
        return d / f"{name}.key"

    def issue(name: str, ca: str, dn: str, *extra: str, kind: str = "rsa", size: str = "3072") -> None:
        k = key(name, kind, size)
        _pki("--issue", "--cacert", str(d / f"{ca}.pem"), "--cakey", str(d / f"{ca}.key"), "--type", "priv",
             "--in", str(k), "--dn", dn, "--outform", "pem", *extra, out=d / f"{name}.pem")

    key("root")
    _pki("--self", "--ca", "--lifetime", "3650", "--in", str(d / "root.key"), "--dn", "C=CH, O=ikg, CN=Root CA",
         "--outform", "pem", out=d / "root.pem")
    issue("int1", "root", "C=CH, O=ikg, CN=Intermediate 1", "--ca", "--flag", "crlSign")
    issue("int2", "int1", "C=CH, O=ikg, CN=Intermediate 2", "--ca", "--flag", "crlSign")
    issue("ikg", "int2", "C=CH, O=ikg, CN=ikegate", *_sans(WAN_A), "--flag", "serverAuth")
    issue("sw", "int2", "C=CH, O=ikg, CN=strongswan", *_sans(WAN_B), "--flag", "serverAuth")
    issue("ikg-ec", "root", "C=CH, O=ikg, CN=ikegate ecdsa", *_sans(WAN_A), kind="ecdsa", size="256")
    issue("sw-ec", "root", "C=CH, O=ikg, CN=strongswan ecdsa", *_sans(WAN_B), kind="ecdsa", size="256")
    issue("sw-revoked", "int2", "C=CH, O=ikg, CN=strongswan revoked", *_sans(WAN_B), "--serial", "0bad")
    issue("ikg-expired", "int2", "C=CH, O=ikg, CN=ikegate expired", *_sans(WAN_A), "--dateform", "%Y-%m-%d",
          "--not-before", "2020-01-01", "--not-after", "2021-01-01")
    _pki("--signcrl", "--cacert", str(d / "int2.pem"), "--cakey", str(d / "int2.key"), "--reason",
         "key-compromise", "--cert", str(d / "sw-revoked.pem"), "--outform", "pem", out=d / "int2.crl")


@dataclass
class CertBed:
    bed: Bed
    files: Path

    def swan_conf(self, family: int, cert: str, aggressive: bool) -> str:
        return f"""connections {{
  {CONN} {{
    version = 1
    aggressive = {"yes" if aggressive else "no"}
    local_addrs = {WAN_B[family]}
    remote_addrs = {WAN_A[family]}
    proposals = {V1.ike}
    fragmentation = yes
    local {{
      auth = pubkey
      certs = {cert}.pem
      id = {WAN_B[family]}
    }}
    remote {{
      auth = pubkey
      id = {WAN_A[family]}
    }}
    children {{
      {CHILD} {{
        local_ts = {SW_LAN[4]}
        remote_ts = {IKG_LAN[4]}
        esp_proposals = {V1.esp}
      }}
    }}
  }}
}}
"""

    def start(self, *, family: int, initiator: bool, ours: str = "ikg", theirs: str = "sw",
              method: str = "rsa-signature", aggressive: bool = False) -> None:
        b = self.bed
        if b.gw is not None:
            b.lab.stop(b.gw.popen)  # type: ignore[arg-type]
            b.gw = None
        b.charon.terminate("--ike", CONN)
        wait_for(lambda: not b.charon.sas(), what="charon without IKE SAs")
        b.family = family
        sw = b.charon.run / "swanctl"
        for name in ("root", "int1", "int2"):
            (sw / "x509ca" / f"{name}.pem").write_bytes((self.files / f"{name}.pem").read_bytes())
        (sw / "x509crl" / "int2.crl").write_bytes((self.files / "int2.crl").read_bytes())
        for old in (sw / "x509").iterdir():
            old.unlink()
        for old in (sw / "private").iterdir():
            old.unlink()
        (sw / "x509" / f"{theirs}.pem").write_bytes((self.files / f"{theirs}.pem").read_bytes())
        (sw / "private" / f"{theirs}.key").write_bytes((self.files / f"{theirs}.key").read_bytes())
        b.charon.load(self.swan_conf(family, theirs, aggressive))
        for name in ("root", "int1", "int2", "int2.crl", ours):
            src = self.files / (name if name.endswith(".crl") else f"{name}.pem")
            (b.lab.workdir / src.name).write_bytes(src.read_bytes())
        (b.lab.workdir / f"{ours}.key").write_bytes((self.files / f"{ours}.key").read_bytes())
        kind = "ecc-key-pair" if "-ec" in ours else "rsa-key-pair"
        pki_lines = [f"pki import {kind} gwkey pem filename {ours}.key",
                     "pki import-certificate ca filename root.pem", "pki import-certificate ca filename int1.pem",
                     "pki import-certificate ca filename int2.pem", f"pki import-certificate local filename {ours}.pem",
                     "pki import-crl filename int2.crl"]
        config = CertConfig("GwA", WAN_A, {4: f"{GW_A_LAN[4]}/26", 6: f"{GW_A_LAN[6]}/64"},
                            WAN_B[family] if initiator else None, "unused-psk", suite=V1.vrp,
                            rules=[acl_rule(5, SITE_A_V4, SW_LAN[4])],
                            dpd=[f"certificate local-filename {ours}.pem", "certificate send-chain"],
                            pki=pki_lines, method=method, aggressive=aggressive)
        b.gw = start_ikegate(b.lab, b.site.gw, "gwa", config)
        route_into_tun(b.site.gw, [SW_LAN[4], SW_LAN[6]])


@dataclass
class CertConfig(GatewayConfig):
    pki: list[str] | None = None
    method: str = "rsa-signature"
    aggressive: bool = False

    def text(self) -> str:
        text = super().text()
        text = text.replace(f" pre-shared-key {self.psk}\n", "")
        if self.aggressive:
            text = text.replace(" exchange-mode main\n", " exchange-mode aggressive\n")
        return text.replace("#\nike proposal 10\n", "#\n" + "\n".join(self.pki or []) + "\n#\nike proposal 10\n"
                            f" authentication-method {self.method}\n", 1)


@pytest.fixture(scope="module")
def cert_bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CertBed]:
    reason = netns_skip_reason()
    if reason:
        pytest.skip(reason)
    if shutil.which("pki") is None:
        pytest.skip("strongSwan's pki tool (strongswan-pki) missing")
    files = tmp_path_factory.mktemp("pki")
    make_pki(files)
    lab = Lab(tmp_path_factory.mktemp("lab"))
    bed = None
    try:
        bed = make_bed(lab)  # test_strongswan.py's topology and charon, once for the module
        yield CertBed(bed, files)
    finally:
        if bed is not None:
            show_logs(bed)
        lab.close()


def _traffic(cb: CertBed, initiator: bool) -> None:
    b = cb.bed
    if not initiator:
        answer = b.charon.initiate(CHILD)
        assert answer.returncode == 0, answer.stdout + answer.stderr
    b.wait_up()
    out = b.ping_from_ikegate_side()
    assert out.returncode == 0, out.stdout + out.stderr
    b.assert_counted(3)


@pytest.mark.cell("v1 certificates", "I", "RSA-3072, ikegate initiates, IPv4, chain of 3 (MM5 ~4 kB), reset ike sa")
def test_rsa_ikegate_initiates_v4_and_reset(cert_bed: CertBed) -> None:
    cert_bed.start(family=4, initiator=True)
    _traffic(cert_bed, True)
    log = cert_bed.bed.charon.log()
    assert "authentication of '198.51.100.1' with RSA_EMSA_PKCS1_NULL successful" in log
    assert "received end entity cert \"C=CH, O=ikg, CN=ikegate\"" in log
    assert "received issuer cert \"C=CH, O=ikg, CN=Intermediate 2\"" in log
    # MM5 (leaf + 2 intermediates + SIG, ~3.8 kB) went as IKEv1 fragments that strongSwan put together.
    assert re.search(r"received fragment #\d+, reassembled fragmented IKE message \(3\d{3} bytes\)", log), log
    # reset ike sa on a certificate tunnel: the ISAKMP SA goes on both sides, the auto policy brings a new one.
    b = cert_bed.bed
    assert b.gw is not None
    (old,) = [sa.raw["initiator-spi"] for sa in b.sw_ike()]
    b.gw.call("shell", lines=["reset ike sa"])
    wait_for(lambda: old not in [sa.raw["initiator-spi"] for sa in b.sw_ike()], what="strongSwan deleted the SA")
    wait_for(lambda: len(b.sw_ike()) == 1, what="the auto policy's new ISAKMP SA")
    b.wait_up()


@pytest.mark.cell("v1 certificates", "r", "RSA-3072, IPv6 outer: strongSwan initiates, then ikegate")
def test_rsa_both_roles_v6(cert_bed: CertBed) -> None:
    cert_bed.start(family=6, initiator=False)
    _traffic(cert_bed, False)
    log = cert_bed.bed.charon.log()
    assert "authentication of '2001:db8:ff::1' with RSA_EMSA_PKCS1_NULL successful" in log
    # Its MM5 (leaf + SIG, ~1.7 kB) is split for the 1,280-byte IPv6 minimum: ikegate reassembled it.
    assert re.search(r"splitting IKE message \(1\d{3} bytes\) into \d fragments", log), log
    cert_bed.start(family=6, initiator=True)
    _traffic(cert_bed, True)
    assert cert_bed.bed.sw_ike()[0].raw.get("remote-host") == WAN_A[6]


@pytest.mark.cell("v1 certificates", "E", "ECDSA-P256 both ways (strongSwan initiates, then ikegate), IPv4")
def test_ecdsa_both_roles(cert_bed: CertBed) -> None:
    cert_bed.start(family=4, initiator=False, ours="ikg-ec", theirs="sw-ec", method="ecdsa-signature")
    _traffic(cert_bed, False)
    assert "with ECDSA_WITH_NULL successful" in cert_bed.bed.charon.log()
    cert_bed.start(family=4, initiator=True, ours="ikg-ec", theirs="sw-ec", method="ecdsa-signature")
    _traffic(cert_bed, True)


@pytest.mark.cell("v1 certificates", "A", "Aggressive Mode, RSA-3072: strongSwan initiates, then ikegate (IPv4)")
def test_aggressive_mode_both_roles(cert_bed: CertBed) -> None:
    cert_bed.start(family=4, initiator=False, aggressive=True)
    _traffic(cert_bed, False)
    assert "initiating Aggressive Mode IKE_SA" in cert_bed.bed.charon.log()
    cert_bed.start(family=4, initiator=True, aggressive=True)
    _traffic(cert_bed, True)
    log = cert_bed.bed.charon.log()
    assert "parsed AGGRESSIVE request 0 [ SA KE No ID CERTREQ" in log, log[-3000:]


@pytest.mark.cell("v1 certificates", "X", "revoked strongSwan certificate / expired ikegate certificate refused")
def test_revoked_and_expired_refused(cert_bed: CertBed) -> None:
    b = cert_bed.bed
    log = b.lab.workdir / "gwa.log"
    cert_bed.start(family=4, initiator=False, theirs="sw-revoked")
    answer = b.charon.initiate(CHILD, timeout=15)
    assert answer.returncode != 0
    wait_for(lambda: "Reason=revoked (CRL of C=CH, O=ikg, CN=Intermediate 2, serial 0B:AD)" in log.read_text(),
             what="ikegate's log line naming the revocation")
    assert "received AUTHENTICATION_FAILED error notify" in b.charon.log()
    cert_bed.start(family=4, initiator=True, ours="ikg-expired")
    wait_for(lambda: "Reason=peer refused phase 1: AUTHENTICATION_FAILED" in log.read_text(),
             what="ikegate's log line of strongSwan's refusal")
    assert "subject certificate invalid (valid from Jan 01" in b.charon.log()

"""Certificate authentication against strongSwan (IKEv2), with the PKI made by strongSwan's own ``pki`` tool.

One lab for the module (the topology of test_strongswan.py; one charon, reloaded per case, restarted once for
the classic-methods case):

    hostA -- gwA [ikegate] == WAN (IPv4 / IPv6) == sw [charon]

    Interop Root CA (RSA-3072) -> Interop Intermediate CA (RSA-3072) -> ikg-rsa (RSA-3072), ikg-ecdsa (P-256),
    sw-ecdsa (P-256), sw-rsa (RSA-3072), sw-revoked (P-256, in the intermediate's CRL), ikg-expired (RSA-3072)

ikegate sends its certificate and the intermediate (``certificate send-chain``) with ``ikev2 fragmentation``, so
its IKE_AUTH goes as SKF fragments (strongSwan's log shows it reassembling them); strongSwan's RSA IKE_AUTH to
ikegate over IPv6 is larger than its 1280-byte fragments, so ikegate reassembles too. Each case checks both
daemons' views: how the peer authenticated, traffic through the tunnel, and for refusals the reason in both
logs.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.interop import swan
from tests.interop.netns import WAN_A, WAN_B, Lab, route_into_tun
from tests.interop.test_strongswan import CHILD, CONN, DEFAULT, IKG_LAN, SW_LAN, Bed, make_bed
from tests.interop.vrp import GatewayConfig, acl_rule, display_json, start_ikegate
from tests.waiting import DEADLINE, wait_for

pytestmark = pytest.mark.interop
ROW = "certificates (IKEv2)"
DN = "C=CN, O=ikegate, CN="
CRL_PLUGINS = f"    load = {swan.PLUGINS} revocation constraints\n"


def _pki(*args: str, stdin: bytes | None = None) -> bytes:
    out = subprocess.run(["pki", *args], input=stdin, capture_output=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    return out.stdout


@dataclass
class Pki:
    """Files of the module's PKI, all in the lab's work directory (where ikegate's configuration lives)."""

    dir: Path

    def key(self, name: str, kind: str) -> Path:
        path = self.dir / f"{name}.key"
        size = "3072" if kind == "rsa" else "256"
        path.write_bytes(_pki("--gen", "--type", kind, "--size", size, "--outform", "pem"))
        return path

    def issue(self, name: str, kind: str, issuer: str | None, *, ca: bool = False, san: list[str] | None = None,
              window: tuple[datetime, datetime] | None = None) -> Path:
        key = self.key(name, kind)
        args = ["--outform", "pem", "--dn", DN + name]
        if ca:
            args += ["--ca"]
        for value in san or []:
            args += ["--san", value]
        if window is not None:
            fmt = "%Y-%m-%d %H:%M:%S"
            args += ["--dateform", fmt, "--not-before", window[0].strftime(fmt), "--not-after",
                     window[1].strftime(fmt)]
        if issuer is None:
            out = _pki("--self", "--in", str(key), "--type", kind, "--lifetime", "3650", *args)
        else:
            public = _pki("--pub", "--in", str(key), "--type", kind)
            args += ["--cacert", str(self.dir / f"{issuer}.pem"), "--cakey", str(self.dir / f"{issuer}.key")]
            if not ca:
                args += ["--flag", "serverAuth", "--flag", "clientAuth"]
            out = _pki("--issue", "--type", "pub", "--lifetime", "365", *args, stdin=public)
        path = self.dir / f"{name}.pem"
        path.write_bytes(out)
        return path

    def crl(self, issuer: str, revoked: list[str]) -> Path:
        args = ["--signcrl", "--cacert", str(self.dir / f"{issuer}.pem"), "--cakey", str(self.dir / f"{issuer}.key"),
                "--lifetime", "30", "--outform", "pem"]
        for name in revoked:
            args += ["--reason", "key-compromise", "--cert", str(self.dir / f"{name}.pem")]
        path = self.dir / f"{issuer}.crl"
        path.write_bytes(_pki(*args))
        return path


def make_pki(directory: Path) -> Pki:
    pki = Pki(directory)
    now = datetime.now(UTC)
    pki.issue("root", "rsa", None, ca=True)
    pki.issue("inter", "rsa", "root", ca=True)
    sans = [WAN_A[4], WAN_A[6], "ikg.example"]
    pki.issue("ikg-rsa", "rsa", "inter", san=sans)
    pki.issue("ikg-ecdsa", "ecdsa", "inter", san=sans)
    pki.issue("ikg-expired", "rsa", "inter", san=sans, window=(now - timedelta(days=60), now - timedelta(days=30)))
    sw_sans = [WAN_B[4], WAN_B[6], "sw.example"]
    pki.issue("sw-ecdsa", "ecdsa", "inter", san=sw_sans)
    pki.issue("sw-rsa", "rsa", "inter", san=sw_sans)
    pki.issue("sw-revoked", "ecdsa", "inter", san=sw_sans)
    pki.crl("inter", ["sw-revoked"])
    return pki


# ----------------------------------------------------------------------------------------------- the lab


@dataclass
class CertBed:
    bed: Bed
    pki: Pki


@pytest.fixture(scope="module")
def cert_bed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CertBed]:
    reason = swan.skip_reason()
    if reason or subprocess.run(["which", "pki"], capture_output=True).returncode:
        pytest.skip(reason or "strongSwan's pki tool is missing (strongswan-pki)")
    lab = Lab(tmp_path_factory.mktemp("certs"))
    try:
        pki = make_pki(lab.workdir)
        bed = make_bed(lab, CRL_PLUGINS)
        yield CertBed(bed, pki)
    finally:
        lab.close()


@pytest.fixture
def cb(cert_bed: CertBed) -> Iterator[CertBed]:
    """The module's lab with no ikegate running and strongSwan's connections cleared after each case."""
    yield cert_bed
    bed = cert_bed.bed
    log = bed.lab.workdir / "gwa.log"
    sys.stderr.write(f"\n--- ikegate log ---\n{log.read_text()[-3000:] if log.exists() else ''}")
    sys.stderr.write(f"\n--- charon log ---\n{bed.charon.log()[-4000:]}\n")
    if bed.gw is not None:
        bed.lab.stop(bed.gw.popen)
        bed.gw = None
    bed.charon.terminate("--ike", CONN)
    bed.charon.load("")


def _ikegate(cb: CertBed, cert: str, *, initiator: bool, kind: str = "rsa", fragmentation: bool = True) -> None:
    bed = cb.bed
    method = "rsa-signature" if kind == "rsa" else "ecdsa-signature"
    config = GatewayConfig("GwA", WAN_A, {4: "192.0.2.1/26", 6: "2001:db8:a::1/64"},
                           bed.sw_wan if initiator else None, "unused-psk", suite=DEFAULT.vrp,
                           rules=[acl_rule(5, IKG_LAN[4], SW_LAN[4])])
    key_kind = "rsa-key-pair" if kind == "rsa" else "ecc-key-pair"
    imports = [f"pki import {key_kind} ikg pem filename {cert}.key", "pki import-certificate ca filename root.pem",
               "pki import-certificate ca filename inter.pem", f"pki import-certificate local filename {cert}.pem",
               "pki import-crl filename inter.crl"]
    peer = [" certificate local-filename " + cert + ".pem", " certificate send-chain", " local-id-type dn",
            " remote-id-type fqdn", " remote-id sw.example"]
    if fragmentation:
        peer.append(" ikev2 fragmentation")
    text = config.text().replace(" pre-shared-key unused-psk\n", "\n".join(peer) + "\n")
    text = text.replace(" dh group31\n", f" dh group31\n authentication-method {method}\n")
    bed.gw = start_ikegate(bed.lab, bed.site.gw, "gwa", _Text("\n".join(imports) + "\n" + text))
    route_into_tun(bed.site.gw, [SW_LAN[4], SW_LAN[6]])


@dataclass
class _Text:
    """A configuration written out as text (start_ikegate only asks for ``text()``)."""

    body: str

    def text(self) -> str:
        return self.body


def _swan(cb: CertBed, cert: str, family: int) -> None:
    bed = cb.bed
    bed.family = family
    swanctl = bed.charon.run / "swanctl"
    for sub in ("x509", "x509ca", "x509crl", "private"):
        for old in (swanctl / sub).glob("*"):
            old.unlink()
    (swanctl / "x509ca" / "root.pem").write_bytes((cb.pki.dir / "root.pem").read_bytes())
    (swanctl / "x509ca" / "inter.pem").write_bytes((cb.pki.dir / "inter.pem").read_bytes())
    (swanctl / "x509crl" / "inter.crl").write_bytes((cb.pki.dir / "inter.crl").read_bytes())
    (swanctl / "x509" / f"{cert}.pem").write_bytes((cb.pki.dir / f"{cert}.pem").read_bytes())
    (swanctl / "private" / f"{cert}.key").write_bytes((cb.pki.dir / f"{cert}.key").read_bytes())
    bed.charon.load(f"""connections {{
  {CONN} {{
    version = 2
    local_addrs = {bed.sw_wan}
    remote_addrs = {bed.ikg_wan}
    proposals = {DEFAULT.ike}
    mobike = no
    fragmentation = yes
    local {{
      auth = pubkey
      certs = {cert}.pem
      id = sw.example
    }}
    remote {{
      auth = pubkey
      id = %any
      cacerts = root.pem
    }}
    children {{
      {CHILD} {{
        local_ts = {SW_LAN[4]}
        remote_ts = {IKG_LAN[4]}
        esp_proposals = {DEFAULT.esp}
      }}
    }}
  }}
}}
""")


def _our_sa(cb: CertBed) -> dict[str, object]:
    assert cb.bed.gw is not None
    return next(r for r in display_json(cb.bed.gw, "display ike sa verbose remote " + cb.bed.sw_wan)["ike_sa"]
                if r["phase"] == 1)


def _up_and_pinging(cb: CertBed) -> None:
    bed = cb.bed
    bed.wait_up()
    out = bed.ping_from_ikegate_side()
    assert out.returncode == 0, out.stdout + out.stderr
    bed.assert_counted(3)


# ------------------------------------------------------------------------------------------------ cases


@pytest.mark.cell(ROW, "F", "ikegate RSA-3072 initiates (RFC 7427, chain in SKF fragments), IPv4; reset ike sa")
def test_rsa_initiator_fragmented_rfc7427_and_reset(cb: CertBed) -> None:
    _swan(cb, "sw-ecdsa", 4)
    _ikegate(cb, "ikg-rsa", initiator=True)
    _up_and_pinging(cb)
    ours = _our_sa(cb)
    assert ours["auth_method"] == "DIGITAL_SIG (ECDSA with SHA-256)"
    assert ours["peer_certificate"] == DN + "sw-ecdsa"
    log = cb.bed.charon.log()
    waiting = re.findall(r"received fragment #(\d+) of (\d+), waiting for complete IKE message", log)
    assert waiting and int(waiting[0][1]) >= 4, waiting  # 2 RSA-3072 certificates at 576 bytes a fragment
    assert "reassembled fragmented IKE message" in log
    assert re.search(r"authentication of '" + re.escape(DN) + r"ikg-rsa' with RSA_EMSA_PKCS1_SHA2_256 successful",
                     log), log[-3000:]
    # reset ike sa on a certificate tunnel: what it does on PSK ones (test_strongswan.py::_reset_phase1).
    bed = cb.bed
    assert bed.gw is not None
    old = bed.sw_ike()[0].uniqueid
    out = subprocess.run([sys.executable, "-m", "ikegate", "cli", "--control", bed.gw.control, "-c",
                          "reset ike sa"], capture_output=True, text=True, timeout=DEADLINE)
    assert out.returncode == 0, out.stdout + out.stderr
    wait_for(lambda: all(sa.uniqueid != old for sa in bed.charon.sas()), what="the Delete at strongSwan")
    assert f"received DELETE for IKE_SA {CONN}[{old}]" in bed.charon.log()
    wait_for(lambda: any(sa.uniqueid != old for sa in bed.sw_ike()), what="the auto policy re-established")
    _up_and_pinging(cb)
    assert _our_sa(cb)["peer_certificate"] == DN + "sw-ecdsa"


@pytest.mark.cell(ROW, "r", "strongSwan RSA-3072 initiates to ikegate ECDSA-P256 (RFC 7427), IPv6, its IKE_AUTH "
                  "fragmented")
def test_ecdsa_responder_ipv6_reassembles(cb: CertBed) -> None:
    _swan(cb, "sw-rsa", 6)
    _ikegate(cb, "ikg-ecdsa", initiator=False, kind="ecdsa")
    answer = cb.bed.charon.initiate(CHILD)
    assert answer.returncode == 0, answer.stdout + answer.stderr
    _up_and_pinging(cb)
    ours = _our_sa(cb)
    assert str(ours["auth_method"]).startswith("DIGITAL_SIG (RSA"), ours
    assert ours["peer_certificate"] == DN + "sw-rsa"
    log = cb.bed.charon.log()
    assert re.search(r"splitting IKE message \(\d+ bytes\) into \d+ fragments", log), log[-3000:]
    assert re.search(r"authentication of '" + re.escape(DN) + r"ikg-ecdsa' with ECDSA.*successful", log)


@pytest.mark.cell(ROW, "C", "classic AUTH methods (strongSwan without RFC 7427): RSA SHA-1 and ECDSA P-256, IPv4")
def test_classic_methods(cb: CertBed) -> None:
    bed = cb.bed
    bed.lab.stop(bed.charon.popen)
    bed.charon = swan.Charon(bed.lab, bed.sw, bed.lab.workdir / "swan-classic",
                             settings=CRL_PLUGINS + "    signature_authentication = no\n")
    bed.charon.start()
    try:
        _swan(cb, "sw-ecdsa", 4)
        _ikegate(cb, "ikg-rsa", initiator=True)
        _up_and_pinging(cb)
        assert _our_sa(cb)["auth_method"] == "ECDSA_SIG"
        assert re.search(r"authentication of '" + re.escape(DN) + r"ikg-rsa' with RSA signature successful",
                         bed.charon.log()), bed.charon.log()[-3000:]
    finally:
        if bed.gw is not None:
            bed.lab.stop(bed.gw.popen)
            bed.gw = None
        bed.lab.stop(bed.charon.popen)
        bed.charon = swan.Charon(bed.lab, bed.sw, bed.lab.workdir / "swan-7427", settings=CRL_PLUGINS)
        bed.charon.start()


@pytest.mark.parametrize("ikegate_initiates", [
    pytest.param(False, id="as-responder",
                 marks=pytest.mark.cell(ROW, "V", "a revoked strongSwan certificate is refused by ikegate as "
                                        "responder (both logs say why)")),
    pytest.param(True, id="as-initiator",
                 marks=pytest.mark.cell(ROW, "v", "the same with ikegate initiating: its INFORMATIONAL "
                                        "AUTHENTICATION_FAILED reaches strongSwan")),
])
def test_revoked_peer_refused(cb: CertBed, ikegate_initiates: bool) -> None:
    _swan(cb, "sw-revoked", 4)
    _ikegate(cb, "ikg-rsa", initiator=ikegate_initiates)
    if not ikegate_initiates:
        answer = cb.bed.charon.initiate(CHILD, timeout=20)
        assert answer.returncode != 0
    assert cb.bed.gw is not None
    gw = cb.bed.gw

    def reasons() -> list[str]:
        return [r["reason"] for r in display_json(gw, "display ike offline-info")["offline"]]

    wait_for(lambda: any(r.startswith(f"revoked (CRL of {DN}inter, serial ") for r in reasons()),
             what="the revocation in ikegate's offline history")
    gw_log = (cb.bed.lab.workdir / "gwa.log").read_text()
    assert "Reason=revoked (CRL of" in gw_log
    wait_for(lambda: "received AUTHENTICATION_FAILED notify error" in cb.bed.charon.log(),
             what="AUTHENTICATION_FAILED in strongSwan's log")
    stats = gw.call("stats")["stats"]
    assert stats["auth_failure_reasons"].get("revoked", 0) >= 1, stats


@pytest.mark.cell(ROW, "X", "an expired ikegate certificate is refused by strongSwan (both logs say why)")
def test_expired_certificate_refused_by_strongswan(cb: CertBed) -> None:
    _swan(cb, "sw-ecdsa", 4)
    _ikegate(cb, "ikg-expired", initiator=True)
    assert cb.bed.gw is not None
    gw_log = cb.bed.lab.workdir / "gwa.log"
    wait_for(lambda: "Reason=peer refused IKE_AUTH: AUTHENTICATION_FAILED" in gw_log.read_text(),
             what="strongSwan's AUTHENTICATION_FAILED in ikegate's log")
    log = cb.bed.charon.log()
    assert re.search(r"subject certificate invalid \(valid from .* to .*\)", log), log[-3000:]
    assert f"no trusted RSA public key found for '{DN}ikg-expired'" in log
    offline = [r["reason"] for r in display_json(cb.bed.gw, "display ike offline-info")["offline"]]
    assert offline == [], offline  # refused by the peer: nothing of ours went down
    assert cb.bed.sw_ike() == []

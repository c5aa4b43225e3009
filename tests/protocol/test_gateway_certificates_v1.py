"""Whole gateways in memory, IKEv1: test_gateway_certificates.py's lab with every peer on IKEv1 Main Mode
(AES-CBC phase 1, ``undo version 2``). HQ's template PSK peer and its RSA certificate peer for Branch1
live side by side; the Main Mode responder finds the candidates by address and the certificate in MM5
decides. Refusals reach the log, the offline history and the metrics with their reason."""

from __future__ import annotations

from pathlib import Path

from ikegate.cli.logbuffer import record_text
from ikegate.gateway.controller import Gateway
from ikegate.sad import IkeSaEntry
from tests.protocol.netsim import Net, lab_config
from tests.protocol.test_gateway_certificates import LOGS, _b1_text, _certificates, _hq_text, _load, phases
from tests.unit import pki_factory as f

_V1 = {" encryption-algorithm aes-gcm-256\n dh": " encryption-algorithm aes-256\n dh",
       " prf hmac-sha2-256\n": " authentication-algorithm sha2-256\n",
       " ike-proposal 10\n": " ike-proposal 10\n undo version 2\n",
       " ike-proposal 20\n": " ike-proposal 20\n undo version 2\n"}


def _v1(text: str) -> str:
    for old, new in _V1.items():
        text = text.replace(old, new)
    return text


def _lab(directory: Path, **kw: bool) -> tuple[Net, Gateway, Gateway, Gateway]:
    _certificates(directory, **kw)
    # IKEv1 has one method for both ends: HQ signs with RSA too (test_gateway_certificates uses ECDSA).
    pki = f.standard_pki()
    hq_cert = f.certificate("hq.example", f.rsa_key(2048, 4), pki.root, sans=[f.dns("hq.example")])
    f.write_cert(directory / "hq.pem", hq_cert.cert)
    f.write_key(directory / "hq.key", hq_cert.key)
    hq_text = _v1(_hq_text()).replace("pki import ecc-key-pair hq", "pki import rsa-key-pair hq").replace(
        "authentication-method ecdsa-signature", "authentication-method rsa-signature")
    net = Net()
    LOGS.clear()

    def log(name: str):  # type: ignore[no-untyped-def]
        return lambda module, severity, brief, text, *args: LOGS.setdefault(name, []).append(
            f"{brief}:{record_text(text, args)}")

    hq = net.add(Gateway(_load(hq_text, directory), log=log("hq")))
    b1 = net.add(Gateway(_load(_v1(_b1_text()), directory), log=log("b1")))
    b2 = net.add(Gateway(lab_config("branch2", {"trigger-mode traffic-based": "trigger-mode auto", **_V1})))
    for gw in (hq, b1, b2):
        gw.start(net.now)
    net.pump()
    return net, hq, b1, b2


def test_v1_psk_and_certificate_peers_side_by_side(tmp_path: Path) -> None:
    net, hq, b1, b2 = _lab(tmp_path)
    assert phases(b1) == [1, 2] and phases(b2) == [1, 2]
    ikes = {e.peer_address.exploded: e for e in hq.sad.entries() if isinstance(e, IkeSaEntry)}
    assert set(ikes) == {"127.0.0.12", "127.0.0.13"}
    cert, psk = ikes["127.0.0.12"], ikes["127.0.0.13"]
    assert cert.handle.version == 1 and cert.handle.config.name == "b1"
    assert (cert.auth_method, cert.peer_certificate) == ("RSA_SIG", "C=CN, O=ikegate, CN=b1.example")
    assert psk.handle.config.name == "branches" and psk.auth_method == "PRE_SHARED"
    b1_entry = next(e for e in b1.sad.entries() if isinstance(e, IkeSaEntry))
    assert b1_entry.peer_certificate == "C=CN, O=ikegate, CN=hq.example"
    assert hq.stats.auth_failure_reasons == {}


def test_v1_reset_on_a_certificate_tunnel(tmp_path: Path) -> None:
    net, hq, b1, _ = _lab(tmp_path)
    ike = next(e for e in b1.sad.entries() if isinstance(e, IkeSaEntry))
    old = {e.conn_id for e in b1.sad.entries()}
    assert b1.reset_ike_sa(net.now, conn_id=ike.conn_id) == 2
    net.pump()
    net.step(2.0)
    assert phases(b1) == [1, 2] and not {e.conn_id for e in b1.sad.entries()} & old


def test_v1_revoked_certificate_refused_with_reason(tmp_path: Path) -> None:
    net, hq, b1, _ = _lab(tmp_path, revoke_b1=True)
    assert phases(b1) == []
    assert hq.stats.auth_failure_reasons.get("revoked", 0) >= 1, hq.stats.auth_failure_reasons
    reasons = [r.reason for r in hq.sad.offline.entries()]
    assert "revoked (CRL of C=CN, O=ikegate, CN=Test Intermediate CA, serial 51:51)" in reasons, reasons
    assert any("Reason=peer refused phase 1: AUTHENTICATION_FAILED" in line for line in LOGS["b1"]), LOGS["b1"]

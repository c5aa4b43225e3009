"""Whole gateways in memory with certificates: the HQ template holds a PSK peer and a certificate peer
side by side; Branch1 authenticates with an RSA certificate (and its chain), Branch2 with the PSK. The
responder's candidate search picks the peer by what verifies; refusals reach the log, the offline
history and the metrics with their reason; `reset ike sa` on a certificate tunnel is what it is on PSK."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ikegate.cli.loader import load_config
from ikegate.cli.logbuffer import record_text
from ikegate.cli.render import ike_info
from ikegate.gateway.controller import Gateway
from ikegate.ike.core.config import Addr
from ikegate.mgmt.records import entry_record
from ikegate.sad import IkeSaEntry
from tests.protocol.netsim import Net, ike_view, lab_config
from tests.unit import pki_factory as f

PSK_LAB = " pre-shared-key ikegate-lab-psk-0123\n"
NOW = datetime.now(UTC)


def _certificates(directory: Path, *, b1_expired: bool = False, revoke_b1: bool = False) -> None:
    pki = f.standard_pki()
    f.write_cert(directory / "root.pem", pki.root.cert)
    f.write_cert(directory / "inter.pem", pki.intermediate.cert)
    hq = f.certificate("hq.example", f.ec_key(), pki.root, sans=[f.dns("hq.example")],
                       not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=30))
    f.write_cert(directory / "hq.pem", hq.cert)
    f.write_key(directory / "hq.key", hq.key)
    window = (NOW - timedelta(days=60), NOW - timedelta(days=30)) if b1_expired else (
        NOW - timedelta(days=1), NOW + timedelta(days=30))
    b1 = f.certificate("b1.example", f.rsa_key(2048, 3), pki.intermediate, serial=0x5151,
                       sans=[f.dns("b1.example")], not_before=window[0], not_after=window[1])
    f.write_cert(directory / "b1.pem", b1.cert)
    f.write_key(directory / "b1.key", b1.key)
    f.write_crl(directory / "inter.crl", f.crl(pki.intermediate, [0x5151] if revoke_b1 else [0x77],
                                              last=NOW - timedelta(hours=1)))


CA_LINES = ("pki import-certificate ca filename root.pem\n"
            "pki import-certificate ca filename inter.pem\n"
            "pki import-crl filename inter.crl\n")


def _hq_text() -> str:
    text = lab_config_text("hq")
    head = "pki import ecc-key-pair hq pem filename hq.key\n" + CA_LINES + \
        "pki import-certificate local filename hq.pem\n"
    cert_peer = ("ike proposal 20\n encryption-algorithm aes-gcm-256\n dh group31\n prf hmac-sha2-256\n"
                 " authentication-method ecdsa-signature\n#\n"
                 "ike peer b1\n ike-proposal 20\n certificate local-filename hq.pem\n"
                 " local-id-type fqdn\n local-id hq.example\n remote-address 127.0.0.12\n#\n")
    policy = ("acl number 3005\n rule 5 permit ip source 10.0.0.0 0.0.0.255 destination 10.1.1.0 0.0.0.255\n#\n"
              "ipsec policy hq 5 isakmp\n security acl 3005\n ike-peer b1\n proposal esp1\n#\n")
    text = text.replace("ike peer branches\n", cert_peer + "ike peer branches\n")
    return head + text.replace("ipsec policy hq 10 isakmp template branches\n",
                               policy + "ipsec policy hq 10 isakmp template branches\n")


def _b1_text() -> str:
    text = lab_config_text("branch1")
    head = "pki import rsa-key-pair b1 pem filename b1.key\n" + CA_LINES + \
        "pki import-certificate local filename b1.pem\n"
    text = text.replace(" sa duration 86400\n", " sa duration 86400\n authentication-method rsa-signature\n")
    return head + text.replace(PSK_LAB, " certificate local-filename b1.pem\n certificate send-chain\n"
                                        " local-id-type fqdn\n local-id b1.example\n"
                                        " remote-id-type fqdn\n remote-id hq.example\n")


def lab_config_text(name: str) -> str:
    from importlib import resources

    return resources.files("ikegate.lab").joinpath(f"{name}.cfg").read_text()


def _load(text: str, directory: Path):  # type: ignore[no-untyped-def]
    config, errors = load_config(text, directory=directory)
    assert not errors, errors
    return config


LOGS: dict[str, list[str]] = {}


def cert_lab(directory: Path, drop: Callable[[bytes, Addr, Addr], bool] | None = None,
             **kw: bool) -> tuple[Net, Gateway, Gateway, Gateway]:
    _certificates(directory, **kw)
    net = Net()
    if drop is not None:
        net.drop = drop
    LOGS.clear()

    def log(name: str):  # type: ignore[no-untyped-def]
        return lambda module, severity, brief, text, *args: LOGS.setdefault(name, []).append(
            f"{brief}:{record_text(text, args)}")

    hq = net.add(Gateway(_load(_hq_text(), directory), log=log("hq")))
    b1 = net.add(Gateway(_load(_b1_text(), directory), log=log("b1")))
    b2 = net.add(Gateway(lab_config("branch2", {"trigger-mode traffic-based": "trigger-mode auto"})))
    for gw in (hq, b1, b2):
        gw.start(net.now)
    net.pump()
    return net, hq, b1, b2


def phases(gw: Gateway) -> list[int]:
    return sorted(e.phase for e in gw.sad.entries())


def b1_entries(hq: Gateway) -> list[object]:
    return [e for e in hq.sad.entries() if e.peer_address.exploded == "127.0.0.12"]


def test_psk_and_certificate_peers_side_by_side(tmp_path: Path) -> None:
    net, hq, b1, b2 = cert_lab(tmp_path)
    assert phases(b1) == [1, 2] and phases(b2) == [1, 2]
    ikes = {e.peer_address.exploded: e.handle for e in hq.sad.entries() if isinstance(e, IkeSaEntry)}
    assert set(ikes) == {"127.0.0.12", "127.0.0.13"}
    sa = ikes["127.0.0.12"]
    assert sa.peer_auth.method == 14 and sa.peer_auth.subject == "C=CN, O=ikegate, CN=b1.example"
    assert sa.config.name == "b1"
    psk = ikes["127.0.0.13"]
    assert psk.peer_auth.method == 2 and psk.config.name == "branches"
    b1_sa = next(e for e in b1.sad.entries() if isinstance(e, IkeSaEntry)).handle
    assert b1_sa.peer_auth.subject == "C=CN, O=ikegate, CN=hq.example"
    assert hq.stats.auth_failure_reasons == {}


def test_display_ike_sa_verbose_and_json_show_the_method_and_certificate(tmp_path: Path) -> None:
    net, hq, b1, b2 = cert_lab(tmp_path)
    entries = {e.peer_address.exploded: e for e in hq.sad.entries() if isinstance(e, IkeSaEntry)}
    cert, psk = entries["127.0.0.12"], entries["127.0.0.13"]
    text = ike_info.verbose([cert, psk], {}, net.now)
    assert "  Authentication method        : DIGITAL_SIG (RSASSA-PKCS1-v1_5 with SHA-256)" in text
    assert "  Peer certificate             : C=CN, O=ikegate, CN=b1.example" in text
    assert "  Authentication method        : PRE_SHARED" in text
    assert sum(1 for line in text if "Peer certificate" in line) == 1
    record = entry_record(cert, net.now)
    assert record["auth_method"].startswith("DIGITAL_SIG") and record["peer_certificate"].endswith("CN=b1.example")
    assert entry_record(psk, net.now)["peer_certificate"] == ""
    b1_entry = next(e for e in b1.sad.entries() if isinstance(e, IkeSaEntry))
    assert b1_entry.auth_method == "DIGITAL_SIG (ECDSA with SHA-256)"
    assert b1_entry.peer_certificate == "C=CN, O=ikegate, CN=hq.example"


def test_reset_on_a_certificate_tunnel_renegotiates_as_psk(tmp_path: Path) -> None:
    net, hq, b1, _ = cert_lab(tmp_path)
    ike = next(e for e in b1.sad.entries() if isinstance(e, IkeSaEntry))
    old = {e.conn_id for e in b1.sad.entries()}
    assert b1.reset_ike_sa(net.now, conn_id=ike.conn_id) == 2
    net.pump()
    assert phases(b1) == [1, 2] and not {e.conn_id for e in b1.sad.entries()} & old
    assert "peer request" in [r.reason for r in hq.sad.offline.entries()]
    assert [r.reason for r in b1.sad.offline.entries()].count("config modify or manual offline") == 2


def test_expired_certificate_refused_with_reason(tmp_path: Path) -> None:
    net, hq, b1, _ = cert_lab(tmp_path, b1_expired=True)
    assert phases(b1) == [] and not b1_entries(hq)
    expired = hq.stats.auth_failure_reasons
    assert expired.get("expired", 0) >= 1, expired
    reasons = [r.reason for r in hq.sad.offline.entries()]
    assert any(r.startswith("peer certificate expired on ") for r in reasons), reasons
    assert any(line.startswith("NEGOTIATION_FAILED:IKE negotiation failed. (RemoteAddress=127.0.0.12, "
                               "Reason=peer certificate expired on ") for line in LOGS["hq"]), LOGS["hq"]
    # Branch1 hears AUTHENTICATION_FAILED.
    assert b1.stats.negotiations_failed.get("AUTHENTICATION_FAILED", 0) >= 1, b1.stats.negotiations_failed
    assert any("Reason=peer refused IKE_AUTH: AUTHENTICATION_FAILED" in line for line in LOGS["b1"]), LOGS["b1"]


def test_revoked_certificate_refused_with_reason(tmp_path: Path) -> None:
    net, hq, b1, _ = cert_lab(tmp_path, revoke_b1=True)
    assert phases(b1) == [] and not b1_entries(hq)
    assert hq.stats.auth_failure_reasons.get("revoked", 0) >= 1
    reasons = [r.reason for r in hq.sad.offline.entries()]
    assert "revoked (CRL of C=CN, O=ikegate, CN=Test Intermediate CA, serial 51:51)" in reasons, reasons


def test_fragmented_ike_auth_survives_a_lost_fragment(tmp_path: Path) -> None:
    """Branch1's IKE_AUTH (its RSA certificate and the intermediate) goes as SKF fragments (certificate peers
    fragment by default, 576-byte datagrams over IPv4); the first copy of fragment 2 is lost, the
    retransmission of every fragment completes the message."""
    seen: list[tuple[int, int]] = []

    def drop(data: bytes, src: Addr, dst: Addr) -> bool:
        ike = ike_view(data)
        if len(ike) < 36 or ike[16] != 53 or ike[18] != 35:  # SKF payload first, IKE_AUTH
            return False
        number, total = int.from_bytes(ike[32:34], "big"), int.from_bytes(ike[34:36], "big")
        seen.append((number, total))
        assert len(data) <= 576 - 28
        return src[0] == "127.0.0.12" and number == 2 and seen.count((2, total)) == 1

    net, hq, b1, _ = cert_lab(tmp_path, drop=drop)
    assert 2 not in phases(b1) and not b1_entries(hq)  # waiting for the retransmission
    net.step(3.0)
    assert phases(b1) == [1, 2] and b1_entries(hq)
    totals = {t for _, t in seen}
    assert max(totals) >= 3 and sum(1 for n, _ in seen if n == 2) >= 2
    sa = next(e for e in b1.sad.entries() if isinstance(e, IkeSaEntry)).handle
    assert sa.stats.retransmits >= 1

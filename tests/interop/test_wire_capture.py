"""What Wireshark sees: every exchange of both IKE versions captured, dissected and decrypted by tshark.

Two ikegates in namespaces (gwA initiates with ``--keylog DIR``, gwB answers from a template); dumpcap
records gwB's WAN side while the tunnel goes through its life: establishment, pings, a Child SA rekey by
bytes (CREATE_CHILD_SA / Quick Mode), periodic DPD (INFORMATIONAL / R-U-THERE), ``reset ipsec sa``
(Delete, renegotiation) and ``reset ike sa`` (Delete, a new IKE SA). tshark then reads the capture with
the key log as its UAT tables: no malformed packet, no expert warning, every IKE message and every ESP
packet decrypted with a good checksum, the IKE payloads and the inner ICMP visible.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from tests.interop.capture import start_capture, tshark_fields
from tests.interop.netns import (
    GW_A_LAN,
    GW_B_LAN,
    HOST_B,
    SITE_A_V4,
    SITE_B_V4,
    WAN_A,
    WAN_B,
    Lab,
    route_into_tun,
    two_sites,
    wait_for,
)
from tests.interop.vrp import GatewayConfig, Suite, acl_rule, ike_sas, ipsec_sas, start_ikegate

pytestmark = pytest.mark.interop

PSK = "ikegate-wire-psk-0123"
ROW = "wire capture (tshark, key log)"
V2 = Suite()
V1 = Suite(encryption="aes-256", integrity=None, authentication="sha2-256", prf=None, dh="group14", version=1)
#: AES-GCM for IKE (IKEv2) and ESP: the names Wireshark 4.0 accepts differ from strongSwan's.
GCM = {"esp_encryption": "aes-gcm-256", "esp_authentication": None}
V2_GCM = Suite(encryption="aes-gcm-256", integrity=None, **GCM)  # type: ignore[arg-type]
V1_GCM = Suite(encryption="aes-256", integrity=None, authentication="sha2-256", prf=None, dh="group14", version=1,
               **GCM)  # type: ignore[arg-type]
DPD = ["dpd type periodic", "dpd idle-time 10"]


def _tshark(path: Path, keys: Path, fields: list[str], display_filter: str) -> list[list[str]]:
    """tshark with the key log as its personal configuration (the three UAT files live there)."""
    env = {**os.environ, "WIRESHARK_CONFIG_DIR": str(keys)}
    cmd = ["tshark", "-n", "-2", "-r", str(path), "-o", "esp.enable_encryption_decode:TRUE",
           "-o", "esp.enable_authentication_check:TRUE", "-T", "fields", "-E", "separator=\t",
           "-E", "occurrence=a", "-E", "aggregator=,"]
    for field in fields:
        cmd += ["-e", field]
    cmd += ["-Y", display_filter]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=True, env=env)
    return [line.split("\t") for line in out.stdout.splitlines() if line]


def _verbose(path: Path, keys: Path, display_filter: str) -> str:
    env = {**os.environ, "WIRESHARK_CONFIG_DIR": str(keys)}
    cmd = ["tshark", "-n", "-2", "-r", str(path), "-V", "-Y", display_filter]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=True, env=env).stdout


def _shell(proc: object, command: str) -> str:
    output: str = proc.call("shell", lines=[command])["output"]  # type: ignore[attr-defined]
    return output


@pytest.mark.parametrize(("version", "encap"), [
    pytest.param(2, False, marks=pytest.mark.cell(ROW, "2", "IKEv2 + raw ESP: every exchange decrypted, clean")),
    pytest.param(2, True, marks=pytest.mark.cell(ROW, "u", "IKEv2 + ESP-in-UDP: every exchange decrypted, clean")),
    pytest.param(1, False, marks=pytest.mark.cell(ROW, "1", "IKEv1 + raw ESP: every exchange decrypted, clean")),
    pytest.param(1, True, marks=pytest.mark.cell(ROW, "U", "IKEv1 + ESP-in-UDP: every exchange decrypted, clean")),
])
def test_capture_of_every_exchange_decrypts_cleanly(lab: Lab, version: int, encap: bool) -> None:
    a, b = two_sites(lab)
    capture = start_capture(lab, b.gw, "wan0", f"wire-v{version}-{'udp' if encap else 'raw'}")
    # The ESP-in-UDP runs also use AES-GCM (IKE and ESP for IKEv2, ESP for IKEv1), the raw ones AES-CBC/HMAC.
    suite = {(2, False): V2, (2, True): V2_GCM, (1, False): V1, (1, True): V1_GCM}[version, encap]
    cfg_b = GatewayConfig("GwB", WAN_B, {4: f"{GW_B_LAN[4]}/26"}, None, PSK, suite=suite,
                          rules=[acl_rule(5, SITE_B_V4, SITE_A_V4)])
    cfg_a = GatewayConfig("GwA", WAN_A, {4: f"{GW_A_LAN[4]}/26"}, WAN_B[4], PSK, suite=suite,
                          rules=[acl_rule(5, SITE_A_V4, SITE_B_V4)], sa_kilobytes=256, dpd=DPD)
    keys = lab.workdir / "keys"
    gw_b = start_ikegate(lab, b.gw, "gwb", cfg_b)
    route_into_tun(b.gw, [SITE_A_V4])
    extra = ["--keylog", str(keys)] + (["--force-udp-encap"] if encap else [])
    gw_a = start_ikegate(lab, a.gw, "gwa", cfg_a, *extra)
    route_into_tun(a.gw, [SITE_B_V4])
    # The key log is private and says so loudly.
    for table in ("ikev2_decryption_table", "ikev1_decryption_table", "esp_sa"):
        assert stat.S_IMODE((keys / table).stat().st_mode) == 0o600
    wait_for(lambda: "KEYLOG_ENABLED" in gw_a.stderr(), 10, "the key-log warning")

    wait_for(lambda: bool(ipsec_sas(gw_a)) and bool(ipsec_sas(gw_b)), 20, "the tunnel")
    ping = a.host.exec("ping", "-c", "3", "-i", "0.2", "-W", "2", HOST_B[4], check=False, timeout=30)
    assert ping.returncode == 0, ping.stdout
    # A Child SA rekey by bytes: 256 KB of pings crosses the soft limit.
    first = ipsec_sas(gw_a)[0]["spi_in"]
    a.host.exec("ping", "-f", "-c", "260", "-s", "1200", "-W", "1", HOST_B[4], check=False, timeout=60)
    wait_for(lambda: any(s["spi_in"] != first for s in ipsec_sas(gw_a)), 20, "the Child SA rekey")
    # Periodic DPD after 10 s without traffic: one exchange each way is enough.
    # (v2: an empty INFORMATIONAL; v1: R-U-THERE and R-U-THERE-ACK; told apart from Deletes once decrypted)
    if version == 2:
        dpd_filter = ("isakmp.exchangetype == 37 && isakmp.enc.decrypted && !isakmp.delete.protoid"
                      " && !isakmp.notify.msgtype")
    else:
        dpd_filter = "isakmp.notify.msgtype == 36136 || isakmp.notify.msgtype == 36137"
    capture.wait_for(dpd_filter, 2, "a DPD exchange", timeout=40, config_dir=keys)
    _shell(gw_a, "reset ipsec sa")
    wait_for(lambda: bool(ipsec_sas(gw_a)) and all(s["spi_in"] != first for s in ipsec_sas(gw_a)), 20,
             "the IPsec SA renegotiated")
    old_ike = {s["conn_id"] for s in ike_sas(gw_a)}
    _shell(gw_a, "reset ike sa")
    wait_for(lambda: bool(ike_sas(gw_a)) and not old_ike & {s["conn_id"] for s in ike_sas(gw_a)}
             and bool(ipsec_sas(gw_a)), 30, "a new IKE SA")
    ping = a.host.exec("ping", "-c", "3", "-i", "0.2", "-W", "2", HOST_B[4], check=False, timeout=30)
    assert ping.returncode == 0, ping.stdout
    esp_filter = "esp" if not encap else "udp.port == 4500 && esp"
    capture.wait_for(esp_filter, 6 + 2 * 260 + 6, "all ESP in the capture", timeout=30)
    path = capture.stop()

    # Dissected: not one malformed packet, not one expert item of warning or error severity.
    assert _tshark(path, keys, ["frame.number"], "_ws.malformed") == []
    warnings = _tshark(path, keys, ["frame.number", "_ws.expert.message"], "_ws.expert.severity >= 6291456")
    assert warnings == [], warnings

    # Every exchange type is in the capture.
    exchanges = {int(x) for row in tshark_fields(path, ["isakmp.exchangetype"], "isakmp") for x in row[0].split(",")}
    wanted = {34, 35, 36, 37} if version == 2 else {2, 5, 32}  # v2: INIT, AUTH, CREATE_CHILD_SA, INFORMATIONAL
    assert wanted <= exchanges, exchanges

    if version == 2:
        # Every encrypted IKEv2 message decrypted with a correct checksum, IDi and AUTH readable.
        sk = _tshark(path, keys, ["frame.number"], "isakmp.exchangetype >= 35")
        assert sk
        undecrypted = _tshark(path, keys, ["frame.number"], "isakmp.exchangetype >= 35 && !isakmp.enc.decrypted")
        assert undecrypted == [], undecrypted
        if not encap:  # an integrity checksum (with AES-GCM the ICV is checked by the decryption itself)
            text = _verbose(path, keys, "isakmp.exchangetype >= 35")
            assert text.count("Integrity Checksum Data") == len(sk) == text.count("]>[correct]"), text[-3000:]
        assert _tshark(path, keys, ["isakmp.auth.method"], "isakmp.exchangetype == 35 && isakmp.auth.method")
        assert _tshark(path, keys, ["isakmp.id.type"], "isakmp.exchangetype == 35 && isakmp.id.type")
        assert _tshark(path, keys, ["frame.number"], "isakmp.notify.msgtype == 16393")  # REKEY_SA
        assert _tshark(path, keys, ["frame.number"], "isakmp.delete.protoid")
    else:
        # Main Mode 5/6 and every Quick Mode / Informational message decrypted: IDs and HASHes readable.
        assert _tshark(path, keys, ["isakmp.id.type"], "isakmp.exchangetype == 2 && isakmp.id.type")
        qm = tshark_fields(path, ["frame.number"], "isakmp.exchangetype == 32")
        qm_clear = _tshark(path, keys, ["frame.number"], "isakmp.exchangetype == 32 && isakmp.hash")
        assert qm and len(qm_clear) == len(qm), (qm, qm_clear)
        info = tshark_fields(path, ["frame.number"], "isakmp.exchangetype == 5")
        info_clear = _tshark(path, keys, ["frame.number"], "isakmp.exchangetype == 5 && isakmp.hash")
        assert info and len(info_clear) == len(info), (info, info_clear)

    # Every ESP packet decrypted, ICV good, the inner ICMP visible.
    esp = tshark_fields(path, ["frame.number"], esp_filter)
    good = _tshark(path, keys, ["frame.number"], f"{esp_filter} && esp.icv_good == 1")
    inner = _tshark(path, keys, ["frame.number"], f"{esp_filter} && icmp")
    assert esp and len(good) == len(esp), (len(esp), len(good))
    assert len(inner) == len(esp), (len(esp), len(inner))

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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from tests.interop.capture import Capture, segment_on_the_link, start_capture, tshark_fields
from tests.interop.netns import (
    GW_A_LAN,
    GW_B_LAN,
    HOST_B,
    SITE_A_V4,
    SITE_B_V4,
    WAN_A,
    WAN_B,
    Lab,
    Site,
    route_into_tun,
    two_sites,
)
from tests.interop.vrp import GatewayConfig, Suite, acl_rule, ike_sas, ipsec_sas, start_ikegate
from tests.system.procs import Proc
from tests.waiting import wait_for

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


def _shell(proc: Proc, command: str) -> str:
    output: str = proc.call("shell", lines=[command])["output"]
    return output


@dataclass
class _Wire:
    """Two ikegates, gwA with the key log, and dumpcap on gwB's WAN side."""

    lab: Lab
    a: Site
    capture: Capture
    keys: Path
    gw_a: Proc
    gw_b: Proc
    version: int
    encap: bool
    mode: str

    @property
    def esp_filter(self) -> str:
        return "udp.port == 4500 && esp" if self.encap else "esp"

    def ping(self, *args: str) -> None:
        out = self.a.host.exec("ping", "-i", "0.2", "-W", "2", *args, HOST_B[4], check=False, timeout=60)
        assert out.returncode == 0 or "-f" in args, out.stdout

    def wait_for_all_esp(self, at_least: int) -> None:
        """Until the capture holds every ESP packet gwB accepted or sent: all of them crossed its WAN side,
        where the capture runs. (What the pings sent is not the count: a flood may lose a packet on the
        way, which is not what these tests are about.)"""
        stats = self.gw_b.call("stats")["stats"]
        crossed = stats["esp_packets_in"] + stats["esp_packets_out"]
        assert crossed >= at_least, crossed
        self.capture.wait_for(self.esp_filter, crossed, "all ESP in the capture")

    def reset_ipsec_sa(self) -> None:
        before = {s["spi_in"] for s in ipsec_sas(self.gw_a)}
        _shell(self.gw_a, "reset ipsec sa")
        wait_for(lambda: bool(ipsec_sas(self.gw_a)) and not before & {s["spi_in"] for s in ipsec_sas(self.gw_a)},
                 what="the IPsec SA renegotiated")


def _wire(lab: Lab, version: int, encap: bool, mode: str = "main", **cfg: Any) -> _Wire:
    a, b = two_sites(lab)
    segment_on_the_link((a.gw, "wan0"), (b.gw, "wan0"))  # the capture shows datagrams as a wire carries them
    name = f"wire-v{version}-{mode}-{'udp' if encap else 'raw'}"
    capture = start_capture(lab, b.gw, "wan0", name)
    # The ESP-in-UDP runs also use AES-GCM (IKE and ESP for IKEv2, ESP for IKEv1), the raw ones AES-CBC/HMAC.
    suite = replace({(2, False): V2, (2, True): V2_GCM, (1, False): V1, (1, True): V1_GCM}[version, encap],
                    ike_duration=cfg.pop("ike_duration", 86400))
    exchange = [f"exchange-mode {mode}"] if version == 1 else []
    cfg_b = GatewayConfig("GwB", WAN_B, {4: f"{GW_B_LAN[4]}/26"}, None, PSK, suite=suite,
                          rules=[acl_rule(5, SITE_B_V4, SITE_A_V4)], dpd=exchange)
    cfg_a = GatewayConfig("GwA", WAN_A, {4: f"{GW_A_LAN[4]}/26"}, WAN_B[4], PSK, suite=suite,
                          rules=[acl_rule(5, SITE_A_V4, SITE_B_V4)], dpd=exchange + cfg.pop("dpd", []), **cfg)
    keys = lab.workdir / "keys"
    gw_b = start_ikegate(lab, b.gw, "gwb", cfg_b)
    route_into_tun(b.gw, [SITE_A_V4])
    gw_a = start_ikegate(lab, a.gw, "gwa", cfg_a, "--keylog", str(keys), *(["--force-udp-encap"] if encap else []))
    route_into_tun(a.gw, [SITE_B_V4])
    # The key log is private and says so loudly.
    for table in ("ikev2_decryption_table", "ikev1_decryption_table", "esp_sa"):
        assert stat.S_IMODE((keys / table).stat().st_mode) == 0o600
    wait_for(lambda: "KEYLOG_ENABLED" in gw_a.stderr(), what="the key-log warning")
    wait_for(lambda: bool(ipsec_sas(gw_a)) and bool(ipsec_sas(gw_b)), what="the tunnel")
    return _Wire(lab, a, capture, keys, gw_a, gw_b, version, encap, mode)


def _analyse(w: _Wire, path: Path, wanted: set[int]) -> None:
    """Clean dissection, the ``wanted`` exchange types, every IKE message and ESP packet decrypted."""
    keys, version = w.keys, w.version
    # Dissected: not one malformed packet, not one expert item of warning or error severity.
    assert _tshark(path, keys, ["frame.number"], "_ws.malformed") == []
    # An echo request of the flood left unanswered is traffic loss, which the flood may have (see the
    # callers: "the flood mostly"), not a dissection problem: that one expert item is left out.
    warnings = _tshark(path, keys, ["frame.number", "_ws.expert.message"],
                       "_ws.expert.severity >= 6291456 && !icmp.resp_not_found")
    assert warnings == [], warnings
    exchanges = {int(x) for row in tshark_fields(path, ["isakmp.exchangetype"], "isakmp") for x in row[0].split(",")}
    assert wanted <= exchanges, exchanges
    if version == 2:
        # Every encrypted IKEv2 message decrypted with a correct checksum, IDi and AUTH readable.
        sk = _tshark(path, keys, ["frame.number"], "isakmp.exchangetype >= 35")
        assert sk
        undecrypted = _tshark(path, keys, ["frame.number"], "isakmp.exchangetype >= 35 && !isakmp.enc.decrypted")
        assert undecrypted == [], undecrypted
        if not w.encap:  # an integrity checksum (with AES-GCM the ICV is checked by the decryption itself)
            text = _verbose(path, keys, "isakmp.exchangetype >= 35")
            assert text.count("Integrity Checksum Data") == len(sk) == text.count("]>[correct]"), text[-3000:]
        assert _tshark(path, keys, ["isakmp.auth.method"], "isakmp.exchangetype == 35 && isakmp.auth.method")
        assert _tshark(path, keys, ["isakmp.id.type"], "isakmp.exchangetype == 35 && isakmp.id.type")
        assert _tshark(path, keys, ["frame.number"], "isakmp.delete.protoid")
    else:
        # Phase 1 IDs readable, every Quick Mode / Informational message decrypted (its HASH readable).
        phase1 = 2 if w.mode == "main" else 4
        assert _tshark(path, keys, ["isakmp.id.type"], f"isakmp.exchangetype == {phase1} && isakmp.id.type")
        for exchange in (32, 5):
            sealed = tshark_fields(path, ["frame.number"], f"isakmp.exchangetype == {exchange}")
            clear = _tshark(path, keys, ["frame.number"], f"isakmp.exchangetype == {exchange} && isakmp.hash")
            assert sealed and len(clear) == len(sealed), (exchange, sealed, clear)
    # Every ESP packet decrypted, ICV good, the inner ICMP visible.
    esp = tshark_fields(path, ["frame.number"], w.esp_filter)
    good = _tshark(path, keys, ["frame.number"], f"{w.esp_filter} && esp.icv_good == 1")
    inner = _tshark(path, keys, ["frame.number"], f"{w.esp_filter} && icmp")
    assert esp and len(good) == len(esp), (len(esp), len(good))
    assert len(inner) == len(esp), (len(esp), len(inner))


@pytest.mark.parametrize(("version", "encap", "mode"), [
    pytest.param(2, False, "", marks=pytest.mark.cell(ROW, "2", "IKEv2 + raw ESP: every exchange decrypted, clean")),
    pytest.param(2, True, "", marks=pytest.mark.cell(ROW, "u", "IKEv2 + ESP-in-UDP (GCM): all decrypted, clean")),
    pytest.param(1, False, "main", marks=pytest.mark.cell(ROW, "1", "IKEv1 Main + raw ESP: all decrypted, clean")),
    pytest.param(1, True, "main", marks=pytest.mark.cell(ROW, "U", "IKEv1 Main + ESP-in-UDP: all decrypted, clean")),
    pytest.param(1, False, "aggressive", marks=pytest.mark.cell(ROW, "A", "IKEv1 Aggressive: all decrypted, clean")),
])
def test_capture_of_every_exchange_decrypts_cleanly(lab: Lab, version: int, encap: bool, mode: str) -> None:
    w = _wire(lab, version, encap, mode or "main", sa_kilobytes=256, dpd=DPD)
    w.ping("-c", "3")
    # A Child SA rekey by bytes: 256 KB of pings crosses the soft limit.
    first = ipsec_sas(w.gw_a)[0]["spi_in"]
    w.ping("-f", "-c", "260", "-s", "1200")
    wait_for(lambda: any(s["spi_in"] != first for s in ipsec_sas(w.gw_a)), what="the Child SA rekey")
    # Periodic DPD after 10 s without traffic: one exchange each way is enough.
    # (v2: an empty INFORMATIONAL; v1: R-U-THERE and R-U-THERE-ACK; told apart from Deletes once decrypted)
    if version == 2:
        dpd_filter = ("isakmp.exchangetype == 37 && isakmp.enc.decrypted && !isakmp.delete.protoid"
                      " && !isakmp.notify.msgtype")
    else:
        dpd_filter = "isakmp.notify.msgtype == 36136 || isakmp.notify.msgtype == 36137"
    w.capture.wait_for(dpd_filter, 2, "a DPD exchange", config_dir=w.keys)
    w.reset_ipsec_sa()
    old_ike = {s["conn_id"] for s in ike_sas(w.gw_a)}
    _shell(w.gw_a, "reset ike sa")
    wait_for(lambda: bool(ike_sas(w.gw_a)) and not old_ike & {s["conn_id"] for s in ike_sas(w.gw_a)}
             and bool(ipsec_sas(w.gw_a)), what="a new IKE SA")
    w.ping("-c", "3")
    w.wait_for_all_esp(6 + 2 * 200 + 6)  # the pings went through the tunnel, the flood mostly too
    path = w.capture.stop()
    # v2: INIT, AUTH, CREATE_CHILD_SA, INFORMATIONAL; v1: Main/Aggressive, Quick, Informational
    wanted = {34, 35, 36, 37} if version == 2 else {2 if mode == "main" else 4, 32, 5}
    _analyse(w, path, wanted)
    if version == 2:
        assert _tshark(path, w.keys, ["frame.number"], "isakmp.notify.msgtype == 16393")  # REKEY_SA


@pytest.mark.parametrize("version", [
    pytest.param(2, marks=pytest.mark.cell(ROW, "K", "IKEv2 IKE SA rekey: the new SA's messages decrypt too")),
    pytest.param(1, marks=pytest.mark.cell(ROW, "k", "IKEv1 phase-1 rekey: the new SA's messages decrypt too")),
])
def test_capture_across_an_ike_sa_rekey_decrypts(lab: Lab, version: int) -> None:
    """The key log follows a rekeyed IKE SA (its new SPIs and keys), so everything after it decrypts."""
    w = _wire(lab, version, False, ike_duration=60)
    first = {s["spi_i"] for s in ike_sas(w.gw_a)}
    wait_for(lambda: bool({s["spi_i"] for s in ike_sas(w.gw_a)} - first), 120, "the IKE SA rekey", step=0.5)
    w.reset_ipsec_sa()  # a request on the new IKE SA
    w.ping("-c", "3")
    w.wait_for_all_esp(2)
    path = w.capture.stop()
    _analyse(w, path, {34, 35, 36, 37} if version == 2 else {2, 32, 5})
    rows = tshark_fields(path, ["isakmp.ispi", "isakmp.exchangetype", "isakmp.flags", "isakmp.messageid"], "isakmp")
    spis = {row[0] for row in rows}
    assert len(spis) >= 2, spis  # the old and the new IKE SA are both in the capture, both decrypted
    if version == 2:
        # RFC 7296 §2.18: a rekeyed IKE SA starts its Message IDs at 0, in each direction that sends requests
        # (the first IKE SA's IKE_SA_INIT took ID 0 of its initiator's window, so only rekeyed ones count).
        opened = {spi for spi, exchange, _f, _m in rows if exchange == "34"}
        first: dict[tuple[str, bool], int] = {}
        for spi, _e, flags, mid in rows:
            if spi not in opened and not int(flags, 16) & 0x20:  # a request on a rekeyed IKE SA
                key = (spi, bool(int(flags, 16) & 0x08))
                first.setdefault(key, int(mid, 16))
        assert first and all(mid == 0 for mid in first.values()), first

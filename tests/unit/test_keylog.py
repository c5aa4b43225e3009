"""The Wireshark key log: record lines in the formats tshark 4.0 reads, files private, records from the
controller for every IKE SA and Child SA (IKEv2 and IKEv1) in memory."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ikegate.gateway.controller import Gateway
from ikegate.gateway.keylog import EspKeys, Ikev1Keys, Ikev2Keys, KeyRecord
from ikegate.ike.crypto import encr_alg, integ_alg
from ikegate.ike.v1.sa import IsakmpSa
from ikegate.ike.v2.sa import IkeSa
from ikegate.ike.wire.registry import EncrId, IntegId
from ikegate.io.keylog import HEADER, KeyLogWriter
from tests.protocol.netsim import Net, lab_config

GCM256 = encr_alg(EncrId.AES_GCM_16, 256)
CBC128 = encr_alg(EncrId.AES_CBC, 128)
SHA256 = integ_alg(IntegId.HMAC_SHA2_256_128)
V1 = {" remote-address 127.0.0.11": " remote-address 127.0.0.11\n undo version 2",
      " encryption-algorithm aes-gcm-256\n dh group31": " encryption-algorithm aes-256\n dh group14"}


def test_ikev2_line_spis_and_keys_unquoted_hex_names_quoted() -> None:
    rec = Ikev2Keys(bytes.fromhex("0102030405060708"), bytes.fromhex("a1a2a3a4a5a6a7a8"), b"\x11" * 16, b"\x22" * 16,
                    b"\x33" * 32, b"\x44" * 32, CBC128, SHA256)
    assert rec.line() == ("0102030405060708,a1a2a3a4a5a6a7a8," + "11" * 16 + "," + "22" * 16
                          + ',"AES-CBC-128 [RFC3602]",' + "33" * 32 + "," + "44" * 32
                          + ',"HMAC_SHA2_256_128 [RFC4868]"')
    gcm = Ikev2Keys(bytes(8), bytes(8), b"\x01" * 36, b"\x02" * 36, b"", b"", GCM256, None)
    line = gcm.line()
    assert line is not None and '"AES-GCM-256 with 16 octet ICV [RFC5282]",,,"NONE [RFC4306]"' in line
    assert "11" * 16 not in repr(rec)  # keys never in a repr (logs, tracebacks)


def test_esp_line_gcm_named_for_wireshark_4_with_null_integrity() -> None:
    rec = EspKeys("198.51.100.1", "198.51.100.2", 0xC0FFEE, GCM256, b"\x05" * 36, None, b"")
    assert rec.line() == ('"IPv4","198.51.100.1","198.51.100.2","0x00c0ffee","AES-GCM with 16 octet ICV [RFC4106]",'
                          '"0x' + "05" * 36 + '","NULL",""')
    v6 = EspKeys("2001:db8::1", "2001:db8::2", 1, CBC128, b"\x06" * 16, SHA256, b"\x07" * 32).line()
    assert v6 is not None and v6.startswith('"IPv6"') and '"HMAC-SHA-256-128 [RFC4868]","0x' + "07" * 32 in v6


def test_every_algorithm_ikegate_negotiates_has_a_wireshark_name() -> None:
    encrs = [encr_alg(EncrId.AES_CBC, b) for b in (128, 192, 256)] + [encr_alg(EncrId.AES_GCM_16, b)
                                                                     for b in (128, 192, 256)]
    integs = [None] + [integ_alg(i) for i in (IntegId.HMAC_MD5_96, IntegId.HMAC_SHA1_96, IntegId.HMAC_SHA2_256_128,
                                              IntegId.HMAC_SHA2_384_192, IntegId.HMAC_SHA2_512_256)]
    for encr in encrs:
        for integ in integs:
            assert Ikev2Keys(bytes(8), bytes(8), b"", b"", b"", b"", encr, integ).line() is not None
            assert EspKeys("192.0.2.1", "192.0.2.2", 1, encr, b"", integ, b"").line() is not None


def test_writer_files_private_header_once_append(tmp_path: Path) -> None:
    loose = tmp_path / "esp_sa"
    loose.write_text(HEADER)
    loose.chmod(0o644)
    writer = KeyLogWriter(tmp_path)
    for name in ("ikev2_decryption_table", "ikev1_decryption_table", "esp_sa"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    writer.write(Ikev1Keys(bytes.fromhex("00112233445566ff"), b"\xaa" * 32))
    writer.write(Ikev1Keys(bytes.fromhex("0011223344556600"), b"\xbb" * 32))
    KeyLogWriter(tmp_path)  # a restart appends, never truncates nor repeats the header
    text = (tmp_path / "ikev1_decryption_table").read_text()
    assert text == HEADER + "00112233445566ff," + "aa" * 32 + "\n0011223344556600," + "bb" * 32 + "\n"
    assert (tmp_path / "esp_sa").read_text() == HEADER and writer.written == 2


@pytest.mark.parametrize("version", [2, 1])
def test_controller_logs_keys_of_every_ike_and_child_sa(version: int) -> None:
    net = Net()
    hq = net.add(Gateway(lab_config("hq", V1 if version == 1 else None)))
    br = net.add(Gateway(lab_config("branch1", V1 if version == 1 else None)))
    records: list[KeyRecord] = []
    br.keylog = records.append
    assert hq.keylog is None  # off by default
    br.start(net.now)
    net.pump()
    sa = next(e for e in br.engines() if isinstance(e, IkeSa | IsakmpSa))
    child = next(iter(sa.children.values()))
    ike = [r for r in records if not isinstance(r, EspKeys)]
    esp = [r for r in records if isinstance(r, EspKeys)]
    if isinstance(sa, IkeSa):
        assert len(ike) == 1 and isinstance(ike[0], Ikev2Keys)
        assert (ike[0].spi_i, ike[0].spi_r) == (sa.spi_i, sa.spi_r) and ike[0].encr.name == "AES-GCM-16-256"
    else:
        assert len(ike) == 1 and isinstance(ike[0], Ikev1Keys) and ike[0].cky_i == sa.spi_i
        assert len(ike[0].enc_key) == 32  # the AES-256 phase-1 key, not SKEYID_e
    assert [(r.src, r.dst, r.spi, r.encr_key) for r in esp] == [
        ("127.0.0.11", "127.0.0.12", child.spi_in, child.encr_key_in),
        ("127.0.0.12", "127.0.0.11", child.spi_out, child.encr_key_out)]
    # A reset brings new SAs: their keys are logged too.
    br.reset_ike_sa(net.now)
    net.pump()
    assert len([r for r in records if not isinstance(r, EspKeys)]) == 2 and len(records) == 6

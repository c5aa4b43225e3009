"""Our fragments read by an independent implementation: Wireshark's ISAKMP dissector (tshark).

For IKEv2 it is given the SK keys (its ``ikev2_decryption_table``, the format strongSwan's save-keys
plugin writes), checks every fragment's ICV, decrypts it and reassembles the inner payloads; for IKEv1 it
reassembles the Fragment payloads by fragment ID, number and last flag into the original datagram. Skips
where tshark is not installed (Debian package ``tshark``).
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from ikegate.ike.crypto import encr_alg, integ_alg
from ikegate.ike.fragments import message_budget
from ikegate.ike.v1 import fragments as v1frag
from ikegate.ike.v1.registry import ExchangeType as V1Exchange
from ikegate.ike.v1.registry import Flag
from ikegate.ike.v1.registry import PayloadType as V1Payload
from ikegate.ike.v1.wire import HEADER_LEN as V1_HEADER_LEN
from ikegate.ike.v1.wire import Header as V1Header
from ikegate.ike.v1.wire import encode_header
from ikegate.ike.v2.fragments import fragment
from ikegate.ike.v2.protect import SkContext
from ikegate.ike.wire.registry import AuthMethod, EncrId, ExchangeType, IdType, IntegId, NotifyType, PayloadType
from ikegate.ike.wire.v2 import AUTH, Header, IDi, Notify, Payload, Unknown

TSHARK = shutil.which("tshark")
pytestmark = pytest.mark.skipif(TSHARK is None, reason="tshark (Wireshark) is not installed")

SPI_I, SPI_R = bytes.fromhex("0123456789abcdef"), bytes.fromhex("fedcba9876543210")


def _ipv4_udp(payload: bytes, port: int = 500) -> bytes:
    udp = struct.pack("!HHHH", port, port, 8 + len(payload), 0) + payload
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, bytes([192, 0, 2, 1]),
                       bytes([198, 51, 100, 1]))
    total = sum(struct.unpack("!10H", head))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return head[:10] + struct.pack("!H", ~total & 0xFFFF) + head[12:] + udp


def _pcap(path: Path, datagrams: list[bytes], port: int = 500) -> None:
    """Classic pcap, link type RAW (101): one IPv4/UDP packet per datagram, one second apart."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)]
    for i, d in enumerate(datagrams):
        packet = _ipv4_udp(d, port)
        out.append(struct.pack("<IIII", i, 0, len(packet), len(packet)) + packet)
    path.write_bytes(b"".join(out))


def _tshark(pcap: Path, *options: str) -> str:
    assert TSHARK is not None
    run = subprocess.run([TSHARK, "-r", str(pcap), "-V", *options], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "HOME": str(pcap.parent)}, check=False)
    assert run.returncode == 0, run.stderr
    return run.stdout


def _certificate(cn: str) -> bytes:
    """A real DER certificate, so Wireshark's X.509 dissector has nothing to complain about."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def _ike_auth() -> list[Payload]:
    return [
        IDi(IdType.ID_FQDN, b"gw.example"),
        Unknown(PayloadType.CERT, b"\x04" + _certificate("gw.example")),
        Unknown(PayloadType.CERT, b"\x04" + _certificate("Example CA")),
        Notify(NotifyType.INITIAL_CONTACT),
        AUTH(AuthMethod.RSA_SIG, os.urandom(256)),
    ]


@pytest.mark.parametrize(("encr", "bits", "integ", "encr_name", "integ_name"), [
    (EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_256_128, "AES-CBC-256 [RFC3602]", "HMAC_SHA2_256_128 [RFC4868]"),
    (EncrId.AES_GCM_16, 128, None, "AES-GCM-128 with 16 octet ICV [RFC5282]", "NONE [RFC4306]"),
])
def test_wireshark_verifies_decrypts_and_reassembles_skf(tmp_path: Path, encr: int, bits: int,
                                                         integ: int | None, encr_name: str, integ_name: str) -> None:
    alg = encr_alg(encr, bits)
    mac = integ_alg(integ) if integ is not None else None
    sk_ei, sk_ai = os.urandom(alg.keymat_size), os.urandom(mac.key_size if mac else 0)
    ctx = SkContext.build(alg, mac, sk_ei, sk_ai)
    header = Header(SPI_I, SPI_R, 0, ExchangeType.IKE_AUTH, 0x08, 1)
    frags = fragment(ctx, header, _ike_auth(), os.urandom, message_budget(0, 4, natt=False))
    assert len(frags) >= 4
    _pcap(tmp_path / "v2.pcap", frags)
    # The responder's keys are not needed (nothing flows that way) but must have the right sizes.
    sk_er, sk_ar = bytes(len(sk_ei)).hex(), bytes(len(sk_ai)).hex()
    row = f'{SPI_I.hex()},{SPI_R.hex()},{sk_ei.hex()},{sk_er},"{encr_name}",{sk_ai.hex()},{sk_ar},"{integ_name}"'
    text = _tshark(tmp_path / "v2.pcap", "-o", f"uat:ikev2_decryption_table:{row}")
    numbers = [int(n) for n in re.findall(r"Fragment Number: (\d+)", text)]
    assert numbers == list(range(1, len(frags) + 1))
    assert set(re.findall(r"Total Fragments: (\d+)", text)) == {str(len(frags))}
    assert text.count("Decrypted Data") == len(frags)
    if integ is not None:
        assert text.count("[correct]") == len(frags)  # Wireshark recomputed every fragment's ICV
    assert f"[Message fragment count: {len(frags)}]" in text
    reassembled = text.split("[Reassembled ISAKMP length:")[1]
    kinds = re.findall(r"Payload: ([A-Za-z -]+) \((\d+)\)", reassembled)
    assert [int(t) for _, t in kinds] == [PayloadType.IDi, PayloadType.CERT, PayloadType.CERT, PayloadType.NOTIFY,
                                          PayloadType.AUTH]
    assert "Malformed" not in text and "BER Error" not in text


def test_wireshark_reassembles_ikev1_fragments(tmp_path: Path) -> None:
    body = os.urandom(3000 // 16 * 16)
    header = V1Header(SPI_I, SPI_R, V1Payload.ID, V1Exchange.ID_PROT, Flag.ENCRYPTION, 0)
    datagram = encode_header(header, V1_HEADER_LEN + len(body)) + body
    frags = v1frag.fragment(datagram, message_budget(0, 4, natt=True))
    assert len(frags) >= 5
    _pcap(tmp_path / "v1.pcap", frags)  # port 500 in the capture: no non-ESP marker to add
    text = _tshark(tmp_path / "v1.pcap")
    assert [int(n) for n in re.findall(r"Frag seq: (\d+)", text)] == list(range(1, len(frags) + 1))
    assert f"[Message fragment count: {len(frags)}]" in text
    assert f"[Reassembled ISAKMP length: {len(datagram)}]" in text
    tail = text.split("[Reassembled ISAKMP length:")[1]
    assert "Exchange type: Identity Protection (Main Mode) (2)" in tail
    assert f"Length: {len(datagram)}" in tail

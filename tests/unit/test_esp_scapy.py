"""An independent oracle: scapy's ESP implementation reads our packets and we read its packets.

scapy (GPL-2.0) is a test-only dependency; nothing of it is imported by the product. Its
``SecurityAssociation`` takes the AES-GCM salt appended to the key, exactly the RFC 4106 keymat layout
our ``EncrAlg.keyed`` takes, so one key string serves both sides.
"""

from __future__ import annotations

import os
import struct

import pytest

pytest.importorskip("scapy")

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import ESP, SecurityAssociation
from scapy.packet import Raw

from ikegate.dataplane.esp import InboundEsp, OutboundEsp, classify_4500
from ikegate.ike.crypto import encr_alg, integ_alg
from ikegate.ike.wire.registry import EncrId, IntegId

SPI = 0x0A0B0C0D
GW_A, GW_B = "192.0.2.1", "198.51.100.1"

# (our ENCR id, key bits, our INTEG id, scapy crypt_algo, scapy auth_algo)
SUITES = [
    ("gcm128", EncrId.AES_GCM_16, 128, None, "AES-GCM", "NULL"),
    ("gcm256", EncrId.AES_GCM_16, 256, None, "AES-GCM", "NULL"),
    ("cbc128-sha256", EncrId.AES_CBC, 128, IntegId.HMAC_SHA2_256_128, "AES-CBC", "SHA2-256-128"),
    ("cbc256-sha256", EncrId.AES_CBC, 256, IntegId.HMAC_SHA2_256_128, "AES-CBC", "SHA2-256-128"),
]
IDS = [s[0] for s in SUITES]

INNER = [
    ("v4-icmp", IP(src="10.1.0.1", dst="10.2.0.1") / ICMP(id=7, seq=1) / Raw(b"ping" * 10)),
    ("v4-udp-1400", IP(src="10.1.0.1", dst="10.2.0.1") / UDP(sport=5000, dport=53) / Raw(bytes(1372))),
    ("v6-tcp", IPv6(src="2001:db8:1::1", dst="2001:db8:2::1") / TCP(sport=40000, dport=443) / Raw(b"x" * 33)),
]


def _sas(encr_id: int, bits: int, integ_id: int | None, crypt: str, auth: str, *, tunnel: bool = True,
         nat_t: bool = False) -> tuple[OutboundEsp, InboundEsp, SecurityAssociation]:
    encr = encr_alg(encr_id, bits)
    integ = integ_alg(integ_id) if integ_id is not None else None
    ek = os.urandom(encr.keymat_size)
    ik = os.urandom(integ.key_size) if integ else b""
    ours_out = OutboundEsp(SPI, encr, integ, ek, ik)
    ours_in = InboundEsp(SPI, encr, integ, ek, ik)
    theirs = SecurityAssociation(
        ESP, spi=SPI, crypt_algo=crypt, crypt_key=ek, auth_algo=auth, auth_key=ik or None,
        crypt_icv_size=16 if encr.aead else None,
        tunnel_header=IP(src=GW_B, dst=GW_A) if tunnel else None,
        nat_t_header=UDP(sport=4500, dport=4500) if nat_t else None,
    )
    return ours_out, ours_in, theirs


def _outer(esp: bytes) -> IP:
    """Our ESP packet as scapy's receive path wants it: in an outer IPv4 header, protocol 50."""
    return IP(bytes(IP(src=GW_A, dst=GW_B, proto=50) / Raw(esp)))


@pytest.mark.parametrize(("name", "encr_id", "bits", "integ_id", "crypt", "auth"), SUITES, ids=IDS)
@pytest.mark.parametrize(("inner_name", "inner"), INNER, ids=[i[0] for i in INNER])
def test_scapy_decrypts_ours_tunnel(name: str, encr_id: int, bits: int, integ_id: int | None, crypt: str,
                                    auth: str, inner_name: str, inner: IP) -> None:
    out, _, theirs = _sas(encr_id, bits, integ_id, crypt, auth)
    raw = bytes(inner)
    nh = 4 if raw[0] >> 4 == 4 else 41
    for _ in range(3):
        decrypted = theirs.decrypt(_outer(out.seal(raw, nh)))
        assert bytes(decrypted) == raw


@pytest.mark.parametrize(("name", "encr_id", "bits", "integ_id", "crypt", "auth"), SUITES, ids=IDS)
@pytest.mark.parametrize(("inner_name", "inner"), INNER, ids=[i[0] for i in INNER])
def test_we_decrypt_scapys_tunnel(name: str, encr_id: int, bits: int, integ_id: int | None, crypt: str,
                                  auth: str, inner_name: str, inner: IP) -> None:
    _, inb, theirs = _sas(encr_id, bits, integ_id, crypt, auth)
    raw = bytes(inner)
    nh = 4 if raw[0] >> 4 == 4 else 41
    for seq in (1, 2, 5, 3):
        esp = bytes(theirs.encrypt(inner.__class__(raw), seq_num=seq)[ESP])
        assert struct.unpack_from("!II", esp) == (SPI, seq)
        assert inb.open(esp) == (nh, raw)
    assert inb.highest_seq == 5 and inb.packets == 4


@pytest.mark.parametrize(("name", "encr_id", "bits", "integ_id", "crypt", "auth"), SUITES, ids=IDS)
def test_transport_both_ways(name: str, encr_id: int, bits: int, integ_id: int | None, crypt: str,
                             auth: str) -> None:
    out, inb, theirs = _sas(encr_id, bits, integ_id, crypt, auth, tunnel=False)
    segment = bytes(TCP(sport=1000, dport=22, flags="S") / Raw(b"hello"))
    protected = theirs.encrypt(IP(src=GW_B, dst=GW_A) / TCP(segment))
    assert inb.open(bytes(protected[ESP])) == (6, segment)
    plain = theirs.decrypt(_outer(out.seal(segment, 6)))
    assert bytes(plain[TCP]) == segment


@pytest.mark.parametrize(("name", "encr_id", "bits", "integ_id", "crypt", "auth"), SUITES[1::2], ids=IDS[1::2])
def test_scapy_nat_t_payload_is_ours(name: str, encr_id: int, bits: int, integ_id: int | None, crypt: str,
                                     auth: str) -> None:
    """RFC 3948: scapy's ESP-in-UDP datagram payload is exactly what our InboundEsp opens."""
    _, inb, theirs = _sas(encr_id, bits, integ_id, crypt, auth, nat_t=True)
    inner = IP(src="10.1.0.1", dst="10.2.0.1") / ICMP()
    datagram = theirs.encrypt(inner)
    payload = bytes(datagram[UDP].payload)
    assert datagram[UDP].dport == 4500
    assert classify_4500(payload) == "esp"
    assert inb.open(payload) == (4, bytes(inner))

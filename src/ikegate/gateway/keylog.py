"""Key-log records in the formats Wireshark reads, so operators can decrypt captures of their own traffic.

The same three UAT tables strongSwan's ``save-keys`` plugin fills: ``ikev2_decryption_table``,
``ikev1_decryption_table`` and ``esp_sa``. The records are made by the controller from the engines' keys
(sans-I/O, like everything in the gateway); :mod:`ikegate.io.keylog` appends their lines to files.

Algorithm names are the exact strings of Wireshark 4.0's tables (``packet-isakmp.c``, ``packet-esp.c``);
a name it does not know makes it reject the whole line, so an algorithm missing here yields no record
rather than a wrong one. Byte fields are unquoted hex (UAT "hex bytes"), enumerations quoted strings.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ikegate.ike.crypto import EncrAlg, IntegAlg

__all__ = ["ESP_TABLE", "IKEV1_TABLE", "IKEV2_TABLE", "EspKeys", "Ikev1Keys", "Ikev2Keys", "KeyRecord"]

IKEV2_TABLE = "ikev2_decryption_table"
IKEV1_TABLE = "ikev1_decryption_table"
ESP_TABLE = "esp_sa"

_IKEV2_ENCR = {
    "AES-CBC-128": "AES-CBC-128 [RFC3602]",
    "AES-CBC-192": "AES-CBC-192 [RFC3602]",
    "AES-CBC-256": "AES-CBC-256 [RFC3602]",
    "AES-GCM-16-128": "AES-GCM-128 with 16 octet ICV [RFC5282]",
    "AES-GCM-16-192": "AES-GCM-192 with 16 octet ICV [RFC5282]",
    "AES-GCM-16-256": "AES-GCM-256 with 16 octet ICV [RFC5282]",
    "3DES-CBC": "3DES [RFC2451]",
}
_IKEV2_INTEG = {
    None: "NONE [RFC4306]",
    "HMAC-MD5-96": "HMAC_MD5_96 [RFC2403]",
    "HMAC-SHA1-96": "HMAC_SHA1_96 [RFC2404]",
    "HMAC-SHA2-256-128": "HMAC_SHA2_256_128 [RFC4868]",
    "HMAC-SHA2-384-192": "HMAC_SHA2_384_192 [RFC4868]",
    "HMAC-SHA2-512-256": "HMAC_SHA2_512_256 [RFC4868]",
}
#: ESP names: Wireshark 4.0 takes the AES key size from the key, and knows GCM only by its ICV length
#: (strongSwan writes "AES-GCM [RFC4106]", which 4.0 no longer accepts).
_ESP_ENCR = {
    "AES-CBC-128": "AES-CBC [RFC3602]",
    "AES-CBC-192": "AES-CBC [RFC3602]",
    "AES-CBC-256": "AES-CBC [RFC3602]",
    "AES-GCM-16-128": "AES-GCM with 16 octet ICV [RFC4106]",
    "AES-GCM-16-192": "AES-GCM with 16 octet ICV [RFC4106]",
    "AES-GCM-16-256": "AES-GCM with 16 octet ICV [RFC4106]",
    "3DES-CBC": "TripleDES-CBC [RFC2451]",
}
_ESP_INTEG = {
    None: "NULL",
    "HMAC-MD5-96": "HMAC-MD5-96 [RFC2403]",
    "HMAC-SHA1-96": "HMAC-SHA-1-96 [RFC2404]",
    "HMAC-SHA2-256-128": "HMAC-SHA-256-128 [RFC4868]",
    "HMAC-SHA2-384-192": "HMAC-SHA-384-192 [RFC4868]",
    "HMAC-SHA2-512-256": "HMAC-SHA-512-256 [RFC4868]",
}


def _q(text: str) -> str:
    return f'"{text}"'


@dataclass(frozen=True, slots=True)
class Ikev2Keys:
    """One IKEv2 SA generation: SPIs and SK_e/SK_a of both directions (RFC 7296 §2.14)."""

    spi_i: bytes
    spi_r: bytes
    sk_ei: bytes
    sk_er: bytes
    sk_ai: bytes
    sk_ar: bytes
    encr: EncrAlg
    integ: IntegAlg | None

    table = IKEV2_TABLE

    def line(self) -> str | None:
        encr = _IKEV2_ENCR.get(self.encr.name)
        integ = _IKEV2_INTEG.get(self.integ.name if self.integ is not None else None)
        if encr is None or integ is None:
            return None
        return ",".join([self.spi_i.hex(), self.spi_r.hex(), self.sk_ei.hex(), self.sk_er.hex(), _q(encr),
                         self.sk_ai.hex(), self.sk_ar.hex(), _q(integ)])

    def __repr__(self) -> str:
        return f"Ikev2Keys({self.spi_i.hex()}/{self.spi_r.hex()}, <redacted>)"


@dataclass(frozen=True, slots=True)
class Ikev1Keys:
    """One ISAKMP SA: the initiator cookie and the phase-1 cipher key (RFC 2409 App. B)."""

    cky_i: bytes
    enc_key: bytes

    table = IKEV1_TABLE

    def line(self) -> str | None:
        return f"{self.cky_i.hex()},{self.enc_key.hex()}"

    def __repr__(self) -> str:
        return f"Ikev1Keys({self.cky_i.hex()}, <redacted>)"


@dataclass(frozen=True, slots=True)
class EspKeys:
    """One direction of a Child SA: the SA from ``src`` to ``dst`` with ``spi``. ``encr_key`` includes
    the GCM salt, as Wireshark expects (RFC 4106 §8.1)."""

    src: str
    dst: str
    spi: int
    encr: EncrAlg
    encr_key: bytes
    integ: IntegAlg | None
    integ_key: bytes

    table = ESP_TABLE

    def line(self) -> str | None:
        encr = _ESP_ENCR.get(self.encr.name)
        integ = _ESP_INTEG.get(self.integ.name if self.integ is not None else None)
        if encr is None or integ is None:
            return None
        family = "IPv6" if ipaddress.ip_address(self.src).version == 6 else "IPv4"
        return ",".join(_q(f) for f in (family, self.src, self.dst, f"0x{self.spi:08x}", encr,
                                        "0x" + self.encr_key.hex(), integ,
                                        "0x" + self.integ_key.hex() if self.integ_key else ""))

    def __repr__(self) -> str:
        return f"EspKeys({self.src}->{self.dst} 0x{self.spi:08x}, <redacted>)"


KeyRecord = Ikev2Keys | Ikev1Keys | EspKeys

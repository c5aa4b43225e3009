"""VRP algorithm keywords and the IANA transform IDs they stand for.

One table per keyword family, used both ways: the gateway turns configuration into proposals, and the
renderers turn negotiated IDs back into the words ``display`` prints.
"""

from __future__ import annotations

from ikegate.ike.wire.registry import DhId, EncrId, IntegId, PrfId

#: ``encryption-algorithm`` / ``esp encryption-algorithm``: (ENCR id, key bits)
ENCRYPTION: dict[str, tuple[int, int | None]] = {
    "aes-128": (EncrId.AES_CBC, 128),
    "aes-192": (EncrId.AES_CBC, 192),
    "aes-256": (EncrId.AES_CBC, 256),
    "aes-gcm-128": (EncrId.AES_GCM_16, 128),
    "aes-gcm-256": (EncrId.AES_GCM_16, 256),
    "3des": (EncrId.TRIPLE_DES, None),
    "chacha20-poly1305": (EncrId.CHACHA20_POLY1305, None),  # ours: the USG has no ChaCha20 (docs/ikev1-certificates.md)
}

#: ``dh``: DH group
DH: dict[str, int] = {
    "group2": DhId.MODP_1024,
    "group5": DhId.MODP_1536,
    "group14": DhId.MODP_2048,
    "group15": DhId.MODP_3072,
    "group16": DhId.MODP_4096,
    "group19": DhId.ECP_256,
    "group20": DhId.ECP_384,
    "group21": DhId.ECP_521,
    "group31": DhId.CURVE_25519,
}

#: ``pfs``: DH group
PFS: dict[str, int] = {f"dh-{name}": group for name, group in DH.items()}

#: ``integrity-algorithm`` (IKEv2)
INTEGRITY: dict[str, int] = {
    "hmac-sha1-96": IntegId.HMAC_SHA1_96,
    "hmac-sha2-256": IntegId.HMAC_SHA2_256_128,
    "hmac-sha2-384": IntegId.HMAC_SHA2_384_192,
    "hmac-sha2-512": IntegId.HMAC_SHA2_512_256,
}

#: ``prf`` (IKEv2)
PRF: dict[str, int] = {
    "hmac-sha1": PrfId.HMAC_SHA1,
    "hmac-sha2-256": PrfId.HMAC_SHA2_256,
    "hmac-sha2-384": PrfId.HMAC_SHA2_384,
    "hmac-sha2-512": PrfId.HMAC_SHA2_512,
}

#: ``authentication-algorithm`` (IKEv1 hash / PRF) and ``esp authentication-algorithm``: INTEG id
AUTHENTICATION: dict[str, int] = {
    "sha1": IntegId.HMAC_SHA1_96,
    "sha2-256": IntegId.HMAC_SHA2_256_128,
    "sha2-384": IntegId.HMAC_SHA2_384_192,
    "sha2-512": IntegId.HMAC_SHA2_512_256,
}


def name_of(table: dict[str, int] | dict[str, tuple[int, int | None]], value: object) -> str:
    """The keyword for a transform value, or its number when the table has none."""
    for name, v in table.items():
        if v == value:
            return name
    return str(value)

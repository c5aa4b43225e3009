"""The algorithm words the proposal commands accept, with their `?` help texts."""

from __future__ import annotations

from ikegate.cli.params import Choice

ENCRYPTION = Choice(
    {
        "3des": "168-bit 3DES-CBC (not recommended)",
        "aes-128": "128-bit AES-CBC",
        "aes-192": "192-bit AES-CBC",
        "aes-256": "256-bit AES-CBC",
        "aes-gcm-128": "128-bit AES-GCM (IKEv2 only)",
        "aes-gcm-256": "256-bit AES-GCM (IKEv2 only)",
        "chacha20-poly1305": "ChaCha20-Poly1305, RFC 7634 (IKEv2 only)",
    }
)
AUTHENTICATION = Choice(
    {
        "sha1": "SHA1 (not recommended)",
        "sha2-256": "SHA2-256",
        "sha2-384": "SHA2-384",
        "sha2-512": "SHA2-512",
    }
)
_GROUPS = {
    "group2": "1024-bit MODP (not recommended)",
    "group5": "1536-bit MODP (not recommended)",
    "group14": "2048-bit MODP",
    "group15": "3072-bit MODP",
    "group16": "4096-bit MODP",
    "group19": "256-bit ECP (NIST P-256)",
    "group20": "384-bit ECP (NIST P-384)",
    "group21": "521-bit ECP (NIST P-521)",
    "group31": "Curve25519",
}
DH = Choice(_GROUPS)
PFS = Choice({f"dh-{name}": text for name, text in _GROUPS.items()})
INTEGRITY = Choice(
    {
        "hmac-sha1-96": "HMAC-SHA1-96 (not recommended)",
        "hmac-sha2-256": "HMAC-SHA2-256-128",
        "hmac-sha2-384": "HMAC-SHA2-384-192",
        "hmac-sha2-512": "HMAC-SHA2-512-256",
    }
)
PRF = Choice(
    {
        "hmac-sha1": "HMAC-SHA1 (not recommended)",
        "hmac-sha2-256": "HMAC-SHA2-256",
        "hmac-sha2-384": "HMAC-SHA2-384",
        "hmac-sha2-512": "HMAC-SHA2-512",
    }
)

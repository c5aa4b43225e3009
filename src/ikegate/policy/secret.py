"""The ``%^%#...%^%#`` cipher form of pre-shared keys.

What it is for: the configuration text (``display current-configuration``, ``display this``, the saved
file, the command log) never shows a pre-shared key in clear, so a key does not leak over a shoulder,
into a ticket or a screen share. What it is **not**: a vault. The key that encrypts is derived from a
constant built into ikegate plus, optionally, the bytes of a per-installation key file; whoever can read
that file and this code can decrypt every key. Protect the config file like the keys themselves.

Construction: AES-256-GCM. The nonce is derived from the clear text (HMAC of the clear key), so the
same key always gives the same cipher text — deliberately, because ``load -> display -> load`` must give
identical text. The cost (equal keys have equal cipher texts) is acceptable for obfuscation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MARK = "%^%#"
_CONSTANT = b"ikegate psk obfuscation v1"
_NONCE = 12
_TAG = 16
_MAX_CLEAR = 127
# The body of the longest clear key: nonce + text + tag, base64url without padding.
MAX_CIPHER_LENGTH = 2 * len(MARK) + -(-4 * (_NONCE + _MAX_CLEAR + _TAG) // 3)

_installation_key: bytes = b""


def configure_key_file(path: Path | None) -> None:
    """Mix the contents of a per-installation key file into the derivation (``None``: constant only).

    Cipher texts written under one key file cannot be read under another; keep the file with the config.
    """
    global _installation_key
    _installation_key = b"" if path is None else path.read_bytes()


def _keys() -> tuple[bytes, bytes]:
    root = hashlib.sha256(_CONSTANT + b"\x00" + _installation_key).digest()
    return (
        hmac.new(root, b"encrypt", hashlib.sha256).digest(),
        hmac.new(root, b"nonce", hashlib.sha256).digest(),
    )


def is_cipher(text: str) -> bool:
    """True when ``text`` has the ``%^%#...%^%#`` shape (not a proof that it decrypts)."""
    return len(text) > 2 * len(MARK) and text.startswith(MARK) and text.endswith(MARK)


def encrypt_secret(clear: str) -> str:
    """The cipher form of a clear key (deterministic; see the module docstring)."""
    if is_cipher(clear):
        raise ValueError("already in cipher form")
    enc_key, nonce_key = _keys()
    data = clear.encode()
    nonce = hmac.new(nonce_key, data, hashlib.sha256).digest()[:_NONCE]
    sealed = AESGCM(enc_key).encrypt(nonce, data, MARK.encode())
    body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
    return f"{MARK}{body}{MARK}"


def decrypt_secret(text: str) -> str:
    """The clear key of ``text``, which may be in either form. Raises ``ValueError`` when a cipher form
    does not decrypt (damaged, or written under another installation key)."""
    if not is_cipher(text):
        return text
    body = text[len(MARK) : -len(MARK)]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except ValueError as exc:
        raise ValueError("malformed cipher text") from exc
    if len(raw) < _NONCE + _TAG:
        raise ValueError("malformed cipher text")
    enc_key, _ = _keys()
    try:
        clear = AESGCM(enc_key).decrypt(raw[:_NONCE], raw[_NONCE:], MARK.encode())
    except InvalidTag as exc:
        raise ValueError("cipher text does not decrypt under this installation's key") from exc
    return clear.decode()

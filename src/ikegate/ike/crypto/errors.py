"""Exceptions of the crypto layer.

One base class so that the state machines can turn any cryptographic failure (a bad ICV, a malformed
KE payload, a truncated ciphertext) into the right notify with a single ``except CryptoError``.
"""

from __future__ import annotations


class CryptoError(Exception):
    """A cryptographic check failed: bad tag/ICV, bad length, or an invalid DH public value."""


class UnsupportedTransform(CryptoError):
    """A transform ID (or key length) that this gateway does not implement.

    A subclass of ``CryptoError`` because a peer can provoke it, and the caller answers both the same
    way (NO_PROPOSAL_CHOSEN or INVALID_KE_PAYLOAD, depending on where it happened).
    """

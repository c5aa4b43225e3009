"""Stateless cookies against IKE_SA_INIT floods (RFC 7296 §2.6).

Once the number of half-open SAs passes a threshold, a responder answers IKE_SA_INIT requests that carry
no valid cookie with a COOKIE notify and keeps no state; the real initiator repeats its request with the
cookie. The cookie binds the initiator's nonce, address and SPI to a periodically replaced secret.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections.abc import Callable


class CookieJar:
    """Makes and checks cookies; ``now`` is passed in, as everywhere in the core."""

    def __init__(self, threshold: int = 200, lifetime: float = 60.0,
                 rng: Callable[[int], bytes] = os.urandom) -> None:
        self.threshold = threshold
        self.lifetime = lifetime
        self._rng = rng
        self._version = 0
        self._secret = rng(32)
        self._previous: tuple[int, bytes] | None = None
        self._rotated_at: float | None = None

    def required(self, half_open: int) -> bool:
        return half_open >= self.threshold

    def _rotate(self, now: float) -> None:
        if self._rotated_at is None:
            self._rotated_at = now
        elif now - self._rotated_at >= self.lifetime:
            # The current secret becomes the previous one, unless it is two lifetimes old: then nothing made
            # with it may pass any more (a jar that was idle rotates only when asked).
            stale = now - self._rotated_at >= 2 * self.lifetime
            self._previous = None if stale else (self._version, self._secret)
            self._version = (self._version + 1) % 256
            self._secret = self._rng(32)
            self._rotated_at = now

    @staticmethod
    def _digest(secret: bytes, nonce: bytes, ip: str, spi_i: bytes) -> bytes:
        return hashlib.sha256(nonce + ipaddress.ip_address(ip).packed + spi_i + secret).digest()[:16]

    def make(self, nonce: bytes, ip: str, spi_i: bytes, now: float) -> bytes:
        self._rotate(now)
        return bytes((self._version,)) + self._digest(self._secret, nonce, ip, spi_i)

    def check(self, cookie: bytes, nonce: bytes, ip: str, spi_i: bytes, now: float) -> bool:
        """True for a cookie made with the current or the previous secret."""
        self._rotate(now)
        if len(cookie) != 17:
            return False
        candidates = [(self._version, self._secret)] + ([self._previous] if self._previous else [])
        for version, secret in candidates:
            if cookie[0] == version and hmac.compare_digest(cookie[1:], self._digest(secret, nonce, ip, spi_i)):
                return True
        return False

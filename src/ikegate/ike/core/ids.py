"""SPI allocation shared by both engines and the gateway.

A Child SA's inbound SPI is a random 32-bit value of at least 256 (RFC 4303 §2.1: 1..255 are reserved,
0 means none). The gateway passes its own allocator (unique across the device, one day encoding the
placement); an engine built alone, as in the protocol tests, falls back to :func:`random_spi`.
"""

from __future__ import annotations

from collections.abc import Callable


def random_spi(rng: Callable[[int], bytes]) -> int:
    """A random ESP SPI outside the reserved range 0..255."""
    while True:
        spi = int.from_bytes(rng(4), "big")
        if spi >= 256:
            return spi


def spi_allocator(rng: Callable[[int], bytes], given: Callable[[], int] | None = None) -> Callable[[], int]:
    """``given`` when the owner has one, else a :func:`random_spi` source on ``rng``."""
    return given or (lambda: random_spi(rng))


__all__ = ["random_spi", "spi_allocator"]

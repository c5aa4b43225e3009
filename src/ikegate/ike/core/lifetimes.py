"""When SAs are rekeyed: soft lifetimes and random jitter, the same for IKE and Child SAs of both versions.

Hard lifetimes are configuration; the soft point where the rekey starts is drawn per SA, so the two ends
of a pair, and the thousands of SAs brought up in the same second after a restart, do not all rekey at
the same moment. The random source is the engine's ``rng`` so the in-memory tests stay deterministic.
"""

from __future__ import annotations

from collections.abc import Callable


def jitter(rng: Callable[[int], bytes], span: float) -> float:
    """A random time in [0, span] (16 bits of resolution are plenty for seconds)."""
    return span * int.from_bytes(rng(2), "big") / 65535.0


def soft_lifetime(hard: float, initiator: bool, rng: Callable[[int], bytes], ratio: float = 0.9) -> float:
    """Where to rekey an SA whose hard lifetime is ``hard`` (seconds, or kilobytes of traffic).

    The initiator of the pair rekeys at ``ratio`` of it and the responder halfway between that and the end,
    each less a random margin of up to 3% of the lifetime (strongSwan's rand_time / rand_bytes), so the
    two ends of a pair do not start rekeying it at the same moment -- or, for kilobytes, on the same
    packet, as both count the same traffic.
    """
    frac = ratio if initiator else (1.0 + ratio) / 2
    return hard * frac - jitter(rng, hard * 0.03)


__all__ = ["jitter", "soft_lifetime"]

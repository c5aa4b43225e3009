"""Anti-replay sliding window of RFC 4303 §3.4.3 for 32-bit sequence numbers.

The window is one Python int used as a bitmask: bit ``i`` set means sequence number ``top - i`` has
been received and authenticated. Python ints are arbitrary precision, so a 1024-packet window (the USG
default) costs the same code as a 64-packet one, and shifting it is a single native operation.

The check is split in two because RFC 4303 §3.4.3 orders the receive path so: a cheap duplicate/too-old
test *before* the ICV is computed (so a flood of replayed packets cannot make the gateway burn CPU on
MACs), and the window update only *after* the ICV verified (so a forged packet cannot move the window).
"""

from __future__ import annotations

__all__ = ["MAX_SEQ", "ReplayWindow"]

#: The largest 32-bit sequence number; without ESN an SA must be rekeyed before it would wrap.
MAX_SEQ = 0xFFFFFFFF


_MASKS: dict[int, int] = {}


class ReplayWindow:
    """Tracks which of the last ``size`` sequence numbers were accepted.

    ``size == 0`` turns anti-replay off (``undo ipsec anti-replay enable``): every non-zero sequence
    number passes, but the highest one is still tracked for ``display ipsec sa``.
    """

    __slots__ = ("_bits", "_mask", "size", "top")

    def __init__(self, size: int = 1024) -> None:
        if size < 0:
            raise ValueError(f"replay window size must be >= 0, got {size}")
        self.size = size
        self.top = 0  # highest authenticated sequence number; 0 = nothing received yet
        self._bits = 0
        mask = _MASKS.get(size)
        if mask is None:
            mask = _MASKS[size] = (1 << size) - 1
        self._mask = mask  # shared per size: a 1024-bit int is 164 bytes, once per inbound SA otherwise

    def check(self, seq: int) -> bool:
        """Whether ``seq`` may be new: cheap, and safe to call before the ICV is verified.

        Sequence number 0 is never sent (the first packet carries 1, RFC 4303 §3.3.3), so it is refused.
        """
        if seq > self.top:
            return seq <= MAX_SEQ
        if seq == 0:
            return False
        if self.size == 0:
            return True
        diff = self.top - seq
        if diff >= self.size:
            return False  # left of the window: too old to tell, so refuse
        return not (self._bits >> diff) & 1

    def update(self, seq: int) -> None:
        """Record an authenticated ``seq``; slides the window when it is the new highest."""
        top = self.top
        if seq > top:
            shift = seq - top
            self._bits = ((self._bits << shift) | 1) & self._mask if shift < self.size else 1 & self._mask
            self.top = seq
        elif self.size:
            diff = top - seq
            if diff < self.size:
                self._bits |= 1 << diff

    def seen(self, seq: int) -> bool:
        """Whether ``seq`` is inside the window and marked received (for tests and diagnostics)."""
        diff = self.top - seq
        return 0 <= diff < self.size and bool((self._bits >> diff) & 1)

    def __repr__(self) -> str:
        return f"ReplayWindow(size={self.size}, top={self.top})"

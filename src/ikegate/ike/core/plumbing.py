"""The bookkeeping every engine carries: its counters, its outbox and its event queue.

Both engines are slotted and live by the ten thousand, so these are small plain objects the engine
holds, not mixins with hidden state.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

from ikegate.ike.core.config import Addr

E = TypeVar("E")


@dataclass(slots=True)
class Stats:
    """Per-SA message counters (``display ike sa verbose`` and the metrics read them)."""

    messages_in: int = 0
    messages_out: int = 0
    retransmits: int = 0
    duplicates: int = 0
    dropped: int = 0
    malformed: int = 0
    auth_failures: int = 0
    notifies_sent: int = 0
    dpd_sent: int = 0


class Outbox(Generic[E]):
    """Datagrams to send and events to report, drained by the owner after each feed (sans-I/O)."""

    __slots__ = ("_datagrams", "_events")

    def __init__(self) -> None:
        # Both made on first use and dropped once drained: an established SA mostly waits, holding neither
        # (an empty deque is 600 bytes, an empty list 56).
        self._datagrams: list[tuple[bytes, Addr, Addr]] | None = None
        self._events: deque[E] | None = None

    def send(self, packet: bytes, local: Addr, peer: Addr) -> None:
        if self._datagrams is None:
            self._datagrams = [(packet, local, peer)]
        else:
            self._datagrams.append((packet, local, peer))

    def report(self, event: E) -> None:
        if self._events is None:
            self._events = deque()
        self._events.append(event)

    def datagrams(self) -> list[tuple[bytes, Addr, Addr]]:
        """Everything queued since the last call, oldest first; the outbox is empty afterwards."""
        out = self._datagrams
        if out is None:
            return []
        self._datagrams = None
        return out

    def next_event(self) -> E | None:
        events = self._events
        if not events:
            return None
        event = events.popleft()
        if not events:
            self._events = None  # an established SA waits for its next event without a deque
        return event


__all__ = ["Outbox", "Stats"]

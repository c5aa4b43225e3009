"""Ordering constraints between outgoing datagrams: "this one only after that one has gone, and at least
one tick later".

Why a gap and not just the order of sending: a peer may hand each datagram it receives to a thread of its
own. strongSwan does, so two of our datagrams that arrive back to back may be processed in either order
when its threads are busy. For IKEv1 one-way Delete notifications the order matters: if an ISAKMP Delete
overtakes the ESP Delete sent before it, strongSwan keeps the IPsec SA and re-establishes an ISAKMP SA
for it (IKEv1 IPsec SAs outlive their ISAKMP SA); a reset of 2,000 left 20-80 such SAs at strongSwan.
Sending the second datagram one tick (10 ms) after the first gives the peer time to take the first in.

Sans-I/O like the controller that uses it: items and times go in, the items whose time has come come out
(:meth:`OrderedSends.due`), and :meth:`OrderedSends.next_time` says when to call again.
"""

from __future__ import annotations

import heapq
import itertools
from typing import Generic, TypeVar

T = TypeVar("T")


class Ticket:
    """One submitted item's place in the order: when it went (``None`` while held). Pass it as ``after``
    to make a later item wait for this one."""

    __slots__ = ("sent_at",)

    def __init__(self) -> None:
        self.sent_at: float | None = None


class OrderedSends(Generic[T]):
    """Items released in submission order, each no earlier than ``gap`` after the item it must follow.

    An item without a constraint is due at once; one submitted ``after`` a ticket is due ``gap`` after that
    ticket's item went, or, while that item is itself held, waits for it (chains work: each link adds a gap).
    Items due at the same time come out in submission order.
    """

    __slots__ = ("_counter", "_heap", "_held", "_waiting", "gap")

    def __init__(self, gap: float) -> None:
        if gap <= 0:
            raise ValueError("the gap must be positive")
        self.gap = gap
        self._heap: list[tuple[float, int, Ticket, T]] = []
        #: held tickets -> the items waiting for them to go
        self._waiting: dict[Ticket, list[tuple[int, Ticket, T]]] = {}
        self._counter = itertools.count()
        self._held = 0

    def submit(self, item: T, now: float, *, after: Ticket | None = None) -> Ticket:
        """Queue ``item``; it goes at ``now`` or, ``after`` another, ``gap`` after that one went."""
        ticket = Ticket()
        seq = next(self._counter)
        self._held += 1
        if after is None:
            heapq.heappush(self._heap, (now, seq, ticket, item))
        elif after.sent_at is None:
            self._waiting.setdefault(after, []).append((seq, ticket, item))
        else:
            heapq.heappush(self._heap, (max(now, after.sent_at + self.gap), seq, ticket, item))
        return ticket

    def due(self, now: float) -> list[T]:
        """The items that may go at ``now``, in order; they count as gone at ``now``."""
        out: list[T] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, ticket, item = heapq.heappop(heap)
            ticket.sent_at = now
            self._held -= 1
            out.append(item)
            for seq, waiter, waiting in self._waiting.pop(ticket, ()):
                heapq.heappush(heap, (now + self.gap, seq, waiter, waiting))
        return out

    def next_time(self) -> float | None:
        """When :meth:`due` has something next; ``None`` only when nothing is held (an item waiting for
        another is behind one that has a time)."""
        return self._heap[0][0] if self._heap else None

    def __len__(self) -> int:
        """Items submitted and not yet released."""
        return self._held

"""Retransmission and the request window, written once for both engines.

IKE runs over UDP, so the sender of a request retransmits it until the answer comes (RFC 7296 §2.1,
RFC 2408 §5): the first retry after ``retransmit_base`` seconds, then doubling, ``retransmit_tries``
retries in all, after which the request has timed out. DPD rounds use a fixed interval instead
(``Retransmission.interval``, the USG ``dpd retransmit-interval``). Only the initiator of an exchange
retransmits; a responder re-sends its cached answer when the request comes again.

The window is how much may be in flight at once. IKEv2 keeps a window of one request per generation of
keys (RFC 7296 §2.3) and queues the rest as tasks run when the window opens; IKEv1 runs in lockstep per
exchange, each phase-1 or Quick Mode exchange with its own record, and queues Quick Modes until phase 1 is
established and settled. Both queues are the same deque here; the engine says when it is ready.

This module keeps no clock and sends nothing: the engine asks :meth:`RequestWindow.fire` at a record's
deadline whether to send the packet again, and emits it itself.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ikegate.ike.core.config import IkeSaConfig

DEFAULT_RETRANSMIT_BASE = 1.0
DEFAULT_RETRANSMIT_TRIES = 5

Task = Callable[[float], None]


@dataclass(slots=True, eq=False)
class Retransmission:
    """One message that waits for its answer: what to send again, when, and what to do when it never comes."""

    packet: bytes
    on_timeout: Callable[[float], None]
    deadline: float = 0.0
    max_tries: int = 0
    tries: int = 0
    interval: float = 0.0  # fixed retransmission interval (DPD); 0: exponential from the base
    more: tuple[bytes, ...] = ()  # the other fragments of a fragmented message, sent (again) after ``packet``


R = TypeVar("R", bound=Retransmission)


class RequestWindow:
    """The back-off of one engine's requests and the work queued behind its window."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        # Made on the first task: an empty deque costs 600 bytes, and most engines (every half-open
        # responder SA a flood leaves) never queue anything.
        self._tasks: deque[Task] | None = None

    # ------------------------------------------------------------------ retransmission

    @staticmethod
    def timing(cfg: IkeSaConfig | None) -> tuple[float, int]:
        """(first interval, tries) from the peer's configuration; a responder that has not yet matched a
        configuration uses the defaults."""
        if cfg is None:
            return DEFAULT_RETRANSMIT_BASE, DEFAULT_RETRANSMIT_TRIES
        return cfg.retransmit_base, cfg.retransmit_tries

    def arm(self, req: R, now: float, cfg: IkeSaConfig | None, max_tries: int | None = None) -> R:
        """Start the clock of a request just sent: first retry one base interval from ``now``."""
        base, tries = self.timing(cfg)
        req.deadline = now + base
        req.tries = 0
        req.max_tries = tries if max_tries is None else min(tries, max_tries)
        return req

    def fire(self, req: Retransmission, now: float, cfg: IkeSaConfig | None) -> bool:
        """``req``'s deadline has come: True when the engine must send ``req.packet`` again (the next
        deadline is set), False when its tries are spent (the engine unhooks it and calls
        ``req.on_timeout``)."""
        if req.tries >= req.max_tries:
            return False
        req.tries += 1
        base, _ = self.timing(cfg)
        req.deadline = now + (req.interval or base * (2 ** req.tries))
        return True

    # ------------------------------------------------------------------ queued work

    def queue(self, task: Task) -> None:
        self._queue().append(task)

    def queue_first(self, task: Task) -> None:
        """Work that must go before everything queued (a retry, the Delete of a rekeyed pair)."""
        self._queue().appendleft(task)

    def _queue(self) -> deque[Task]:
        if self._tasks is None:
            self._tasks = deque()
        return self._tasks

    def pump(self, now: float, ready: Callable[[], bool]) -> None:
        """Run queued tasks in order while the engine says the window is open (IKEv2: no request in
        flight on an established SA). A task that sends a request closes the window itself."""
        tasks = self._tasks
        while tasks and ready():
            tasks.popleft()(now)

    def take_all(self) -> list[Task]:
        """Every queued task, the queue emptied first (IKEv1 releases its Quick Modes in one go: a task
        queued while they run waits for the next release)."""
        tasks = list(self._tasks or ())
        self.clear()
        return tasks

    def clear(self) -> None:
        if self._tasks:
            self._tasks.clear()

    def __len__(self) -> int:
        return len(self._tasks or ())

    def __bool__(self) -> bool:
        return bool(self._tasks)


__all__ = ["DEFAULT_RETRANSMIT_BASE", "DEFAULT_RETRANSMIT_TRIES", "RequestWindow", "Retransmission", "Task"]

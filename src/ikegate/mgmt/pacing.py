"""Sharing the event loop between management output and negotiation.

The shell renders large displays a chunk at a time (:mod:`ikegate.cli.render.chunks`); this module is
the other half: the drivers (SSH, console, control socket) take one chunk per :meth:`Pacer.turn`, and
the pacer decides when the next chunk may run.

* Chunks run one at a time per event loop, whichever session they belong to (a FIFO lock), and each
  turn first lets the loop run once (``sleep(0)``: the IKE sockets are polled between any two chunks).
* How much CPU that one loop pass took tells whether anything else wants the loop. If more than
  :attr:`Pacer.idle_gap`, the loop is busy, and the turn waits until management output has used at most
  :attr:`Pacer.share` of the loop's CPU since the last chunk began (the wait is a timer: the loop serves
  everything else meanwhile). On an idle gateway the pass costs microseconds and chunks follow each
  other at full speed (100,000 rows in well under a second). CPU time of the loop's thread, not wall
  time: on a machine shared with other processes, being descheduled is not the loop being busy.

So 20 SSH sessions displaying 100,000 SAs in a loop take about ``share`` of a busy gateway's loop, not
all of it. One pacer per event loop (:func:`pacer`), because the lock belongs to a loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ikegate.cli.shell import Shell

__all__ = ["DEFAULT_SHARE", "IDLE_GAP", "Pacer", "chunks_paced", "pacer", "pump"]

#: The share of a busy loop management output may take (issue 13: negotiation keeps >= 80 % of its rate).
DEFAULT_SHARE = 0.15
#: One loop pass longer than this means something else had work (an idle pass is tens of microseconds).
IDLE_GAP = 0.0005


class Pacer:
    """Decides when the next chunk of management output may be rendered (see the module docstring)."""

    def __init__(self, share: float = DEFAULT_SHARE, idle_gap: float = IDLE_GAP,
                 clock: Callable[[], float] = time.thread_time) -> None:
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        self.share = share
        self.idle_gap = idle_gap
        self._clock = clock
        self._lock = asyncio.Lock()
        self._last = 0.0  # how long the previous chunk took
        self.turns = 0  # chunks run (tests and benchmarks read these two)
        self.waits = 0  # turns that waited for the loop's other work

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Run one chunk of output inside this block, when it is its turn."""
        async with self._lock:
            clock = self._clock
            before = clock()
            await asyncio.sleep(0)
            others = clock() - before
            if others > self.idle_gap:
                rest = self._last * (1 - self.share) / self.share - others
                if rest > 0:
                    self.waits += 1
                    await asyncio.sleep(rest)
            self.turns += 1
            start = clock()
            try:
                yield
            finally:
                self._last = clock() - start


_PACERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pacer] = weakref.WeakKeyDictionary()


def pacer() -> Pacer:
    """The running loop's pacer (made on first use)."""
    loop = asyncio.get_running_loop()
    found = _PACERS.get(loop)
    if found is None:
        found = _PACERS[loop] = Pacer()
    return found


async def chunks_paced(chunks: Iterable[list[str]], pace: Pacer | None = None) -> AsyncIterator[list[str]]:
    """``chunks``, each rendered in its own turn (for drivers that print a whole line's output: SSH exec
    channels, ``ikegate cli -c``)."""
    pace = pace or pacer()
    it = iter(chunks)
    while True:
        async with pace.turn():
            chunk = next(it, None)
        if chunk is None:
            return
        yield chunk


async def pump(shell: Shell, data: bytes, write: Callable[[bytes], object],
               drain: Callable[[], Awaitable[object]], after_command: Callable[[], object],
               pace: Pacer | None = None) -> None:
    """Keystrokes into an interactive ``shell`` and everything they print out, a chunk per turn with the
    writer drained between chunks (so a slow terminal holds back rendering instead of buffering 100,000
    rows); a command still running (``ping``) is awaited. ``after_command`` runs when a line may have
    changed the configuration."""
    pace = pace or pacer()
    write(shell.receive(data))
    while True:
        if shell.pending is not None:
            write(shell.finish(await shell.pending))
        elif shell.streaming:
            async with pace.turn():
                write(shell.resume())
        else:
            break
        await drain()
    if shell.take_changes():
        after_command()
    await drain()

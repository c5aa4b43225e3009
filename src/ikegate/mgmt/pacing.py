"""Sharing the event loop between management output and negotiation.

The shell renders large displays a chunk at a time (:mod:`ikegate.cli.render.chunks`); this module is
the other half: the drivers (SSH, console, control socket) take one chunk per :meth:`Pacer.turn`, and
the pacer decides when the next chunk may run.

* Chunks run one at a time per event loop, whichever session they belong to (a FIFO lock), and each
  turn first lets the loop run once (``sleep(0)``: the IKE sockets are polled between any two chunks).
* Whether the loop is busy is judged from the loop pass each turn lets run: when it cost more than
  :attr:`Pacer.work` seconds of CPU, something else had work queued (an IKE datagram costs more than
  that; the loop's own bookkeeping and an SSH window update cost less), and the loop counts as busy for
  the next :attr:`Pacer.horizon` seconds. While busy, management output may take at most
  :attr:`Pacer.share` of the time: after a chunk that cost ``c`` seconds of CPU, the next one waits
  until ``c * (1 - share) / share`` has passed (a timer: the loop serves everything else meanwhile).
  On an idle gateway chunks follow each other at full speed (100,000 rows in well under a second).

* With placement workers the supervisor's loop has little else to do, and the rows are rendered by the
  workers, page by page, as the chunks are taken: each page's CPU and whether its worker had other work
  come back with it and count as the chunk's (:meth:`Pacer.charge`), so the share holds for the workers.

Why remember, and not judge each pass alone: negotiation arrives as datagrams a few hundred times a
second; right after a one-millisecond chunk there is often nothing queued although the loop is busy
most of the time. Why not the share of CPU other work got: while output takes the loop, other work
gets little, which would read as "not busy" and keep it starved. CPU time of the loop's thread, not
wall time: on a machine shared with other processes, being descheduled is not the loop being busy.
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

__all__ = ["DEFAULT_SHARE", "HORIZON", "WORK", "Pacer", "chunks_paced", "pacer", "pump"]

#: The share of a busy loop management output may take (issue 13: negotiation keeps >= 80 % of its rate).
DEFAULT_SHARE = 0.1
#: CPU seconds of one loop pass above which something else had work queued.
WORK = 0.0003
#: Seconds the loop counts as busy after a pass that had work.
HORIZON = 0.5


class Pacer:
    """Decides when the next chunk of management output may be rendered (see the module docstring)."""

    def __init__(self, share: float = DEFAULT_SHARE, work: float = WORK, horizon: float = HORIZON,
                 clock: Callable[[], float] = time.thread_time, wall: Callable[[], float] = time.perf_counter) -> None:
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        self.share = share
        self.work = work
        self.horizon = horizon
        self._clock = clock  # the loop thread's CPU time
        self._wall = wall
        self._lock = asyncio.Lock()
        self._busy_until = float("-inf")  # wall time until which the loop counts as busy
        self._not_before = 0.0  # wall time before which the next chunk waits, if the loop is busy
        self.turns = 0  # chunks run (tests and benchmarks read these two)
        self.waits = 0  # turns that waited for the loop's other work
        self._elsewhere = 0.0  # CPU seconds other processes spent on the output since the last turn ended

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Run one chunk of output inside this block, when it is its turn."""
        async with self._lock:
            before = self._clock()
            await asyncio.sleep(0)
            now = self._wall()
            if self._clock() - before > self.work:
                self._busy_until = now + self.horizon
            if now < self._busy_until and now < self._not_before:
                self.waits += 1
                await asyncio.sleep(self._not_before - now)
            self.turns += 1
            cpu = self._clock()
            try:
                yield
            finally:
                cost = self._clock() - cpu + self._elsewhere
                self._elsewhere = 0.0
                self._not_before = self._wall() + cost * (1 - self.share) / self.share

    def charge(self, cpu: float, busy: bool) -> None:
        """Output work done in another process for the chunk being rendered (a placement worker rendering
        its page of ``display ike sa`` for the supervisor, whose own loop has little else to do). A worker
        that had other work (negotiation, traffic) makes the output paced as if this loop were busy, and
        its CPU counts in the chunk's cost, so management takes at most :attr:`share` of the workers too;
        an idle worker's CPU is nobody's loss and does not slow the output."""
        if busy:
            self._elsewhere += cpu
            self._busy_until = self._wall() + self.horizon


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

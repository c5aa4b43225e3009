"""Sharing the event loop between management output and negotiation.

The shell renders large displays a chunk at a time (:mod:`ikegate.cli.render.chunks`); this module is
the other half: the drivers (SSH, console, control socket) take one chunk per :meth:`Pacer.turn`, and
the pacer decides when the next chunk may run.

* Chunks run one at a time per event loop, whichever session they belong to (a FIFO lock), and each
  turn first lets the loop run once (``sleep(0)``: the IKE sockets are polled between any two chunks).
* The pacer watches how much CPU the loop spends on everything else between turns (negotiation,
  mostly), as a share of all the time (turns included), averaged over about :attr:`Pacer.horizon`
  seconds. When that is more than :attr:`Pacer.busy`, the loop is busy, and management output may take
  at most :attr:`Pacer.share` of it: after a chunk that cost ``c`` seconds of CPU, the next one waits
  until ``c * (1 - share) / share`` has passed (a timer: the loop serves everything else meanwhile).
  On an idle gateway chunks follow each other at full speed (100,000 rows in well under a second).

Why an average and not the last loop pass: negotiation arrives as datagrams costing a millisecond or
so each, a few hundred a second; right after a one-millisecond chunk there is usually nothing queued,
although the loop is busy most of the time. CPU time of the loop's thread, not wall time: on a machine
shared with other processes, being descheduled is not the loop being busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ikegate.cli.shell import Shell

__all__ = ["BUSY", "DEFAULT_SHARE", "HORIZON", "Pacer", "chunks_paced", "pacer", "pump"]

#: The share of a busy loop management output may take (issue 13: negotiation keeps >= 80 % of its rate).
DEFAULT_SHARE = 0.1
#: The loop is busy when other work takes more than this share of its time.
BUSY = 0.2
#: Seconds over which that share is averaged (exponentially weighted).
HORIZON = 0.5


class Pacer:
    """Decides when the next chunk of management output may be rendered (see the module docstring)."""

    def __init__(self, share: float = DEFAULT_SHARE, busy: float = BUSY, horizon: float = HORIZON,
                 clock: Callable[[], float] = time.thread_time, wall: Callable[[], float] = time.perf_counter) -> None:
        if not 0 < share <= 1:
            raise ValueError("share must be in (0, 1]")
        self.share = share
        self.busy = busy
        self.horizon = horizon
        self._clock = clock  # the loop thread's CPU time
        self._wall = wall
        self._lock = asyncio.Lock()
        self._cpu_mark = clock()  # CPU and wall time when the last turn ended (or the pacer was made)
        self._wall_mark = wall()
        self._others = 0.0  # CPU spent outside turns, exponentially weighted
        self._span = 0.0  # wall time outside turns, weighted alike
        self._not_before = 0.0  # wall time before which the next chunk waits, if the loop is busy
        self.turns = 0  # chunks run (tests and benchmarks read these two)
        self.waits = 0  # turns that waited for the loop's other work

    def _fold(self, others: float, elapsed: float) -> None:
        decay = math.exp(-max(0.0, elapsed) / self.horizon)
        self._others = self._others * decay + max(0.0, others)
        self._span = self._span * decay + max(0.0, elapsed)

    def _observe(self) -> bool:
        """Fold the time since the last mark (spent on other work) into the averages; whether the loop is
        busy: other work took more than :attr:`busy` of all the time, turns included."""
        cpu, now = self._clock(), self._wall()
        self._fold(cpu - self._cpu_mark, now - self._wall_mark)
        self._cpu_mark, self._wall_mark = cpu, now
        return self._span > 0 and self._others > self.busy * self._span

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Run one chunk of output inside this block, when it is its turn."""
        async with self._lock:
            await asyncio.sleep(0)
            if self._observe():
                rest = self._not_before - self._wall()
                if rest > 0:
                    self.waits += 1
                    await asyncio.sleep(rest)
                    self._observe()
            self.turns += 1
            cpu, start = self._clock(), self._wall()
            try:
                yield
            finally:
                self._cpu_mark, self._wall_mark = self._clock(), self._wall()
                self._fold(0.0, self._wall_mark - start)  # the turn's time counts, its CPU is not "other"
                self._not_before = self._wall_mark + (self._cpu_mark - cpu) * (1 - self.share) / self.share


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

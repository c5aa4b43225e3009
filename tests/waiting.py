"""Waiting for conditions, never for fixed times: the one helper every test package uses.

CI runs on a two-core machine that other jobs keep busy, so nothing in a test may depend on how fast
something happens. A test waits until what it expects is true; the deadline is only there to turn a
real failure into an assertion instead of a hang, so it is generous (:data:`DEADLINE`): meeting the
condition early costs nothing, and a tight deadline is exactly what made tests fail under load.

Something that must *not* happen is not checked by sleeping and looking: wait for a later event that
has to follow it (a log line, a counter, an answer to a request sent afterwards) and then look, or step
time in memory (``tests/protocol``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

#: Seconds before a wait gives up. Long enough for a loaded machine; a met condition returns at once.
DEADLINE = 60.0


def wait_for(cond: Callable[[], object], timeout: float = DEADLINE, what: str = "condition",
             step: float = 0.05) -> None:
    """Poll ``cond`` every ``step`` s until it is truthy; AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        if cond():
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


async def until(cond: Callable[[], object], timeout: float = DEADLINE, what: str = "condition",
                step: float = 0.02) -> None:
    """:func:`wait_for` inside an event loop: the loop keeps running (servers in it go on answering)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if cond():
            return
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(step)

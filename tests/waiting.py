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
    while not _met(cond, time.monotonic, deadline, timeout, what):
        time.sleep(step)


async def until(cond: Callable[[], object], timeout: float = DEADLINE, what: str = "condition",
                step: float = 0.02) -> None:
    """:func:`wait_for` inside an event loop: the loop keeps running (servers in it go on answering)."""
    clock = asyncio.get_running_loop().time
    deadline = clock() + timeout
    while not _met(cond, clock, deadline, timeout, what):
        await asyncio.sleep(step)


def _met(cond: Callable[[], object], clock: Callable[[], float], deadline: float, timeout: float, what: str) -> bool:
    """One poll: True when ``cond`` holds; past the deadline, the failure (checked after ``cond``, so a
    condition met at the last moment still counts)."""
    if cond():
        return True
    if clock() >= deadline:
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
    return False

"""A local terminal in raw mode, pumping keystrokes to a shell and its answers back.

The shell engine does its own echo and line editing (VRP's ``?``, Tab and caret errors need the raw
keys), so the terminal must not: raw mode while attached, restored on the way out whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import termios
import tty
from collections.abc import Awaitable, Callable, Iterator


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


async def pump_stdin(on_bytes: Callable[[bytes], Awaitable[bool]]) -> None:
    """Read stdin as it comes and hand it over until ``on_bytes`` says the session ended."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    fd = sys.stdin.fileno()
    loop.add_reader(fd, lambda: queue.put_nowait(os.read(fd, 1024)))
    try:
        with raw_terminal(fd):
            while True:
                data = await queue.get()
                if not data or not await on_bytes(data):
                    return
    finally:
        loop.remove_reader(fd)


def write_out(data: bytes) -> None:
    os.write(sys.stdout.fileno(), data)

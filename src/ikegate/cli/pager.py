"""The ``  ---- More ----`` pager: long output shown one screen at a time, rendered as it is shown.

``screen-length N`` rows per screen, the last row being the pager prompt. Space shows the next screen,
Enter one more line, and any other key (``q``, Ctrl+C, a letter, an arrow) stops the display, as on VRP;
the key that stops it is consumed, never typed into the next command line (the shell also drops the
rest of an escape sequence). ``screen-length 0 temporary`` turns paging off (netmiko does that first,
and must never see a pager prompt afterwards).

:class:`Output` takes the command's output as chunks (:mod:`ikegate.cli.render.chunks`) and renders one
chunk per :meth:`Output.step`, so the driver can let the event loop run between chunks; a paged display
renders only as far as the screen the operator is looking at (and what a stop key leaves unrendered is
never rendered).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

MORE = "  ---- More ----"
# Erase the pager prompt in place before the next lines (plain CR/spaces: no terminal assumptions).
ERASE_MORE = "\r" + " " * len(MORE) + "\r"

_UNLIMITED = 1 << 62


def crlf(lines: Iterable[str]) -> bytes:
    """Output lines as the terminal gets them."""
    return "".join(line + "\r\n" for line in lines).encode()


class Output:
    """One command's output on an interactive terminal, from its first line to the ``tail`` (the next
    prompt, or a ``[Y/N]`` question) that follows its last.

    States: *rendering* (the driver calls :meth:`step` until it is not), *waiting* at the More prompt
    for a :meth:`key`, *done*. ``screen_length`` 0 is no paging. As on VRP, output shorter than the
    screen is never paged: the More prompt shows only once a line exists beyond the screen.
    """

    def __init__(self, chunks: Iterable[list[str]], screen_length: int, tail: bytes) -> None:
        self._chunks: Iterator[list[str]] | None = iter(chunks)
        self._buffer: list[str] = []
        self._rows = max(1, screen_length - 1) if screen_length > 0 else _UNLIMITED
        self._budget = self._rows  # lines that may still be shown before the next More prompt
        self._tail = tail
        self.waiting = False
        self.done = False
        self.steps = 0  # chunks taken from the source (tests count them)

    @property
    def rendering(self) -> bool:
        return not (self.waiting or self.done)

    def step(self) -> bytes:
        """Render at most one more chunk and return what can be shown now: lines, then the More prompt when
        the screen is full and more follows, or the tail when the output has ended."""
        if not self.rendering:
            return b""
        if self._chunks is not None and len(self._buffer) <= self._budget:
            chunk = next(self._chunks, None)
            self.steps += 1
            if chunk is None:
                self._chunks = None
            else:
                self._buffer += chunk
        shown = self._buffer[:self._budget]
        del self._buffer[:len(shown)]
        self._budget -= len(shown)
        out = crlf(shown)
        if self._buffer and not self._budget:
            self.waiting = True
            return out + MORE.encode()
        if self._chunks is None and not self._buffer:
            self.done = True
            return out + self._tail
        return out

    def key(self, char: str) -> bytes:
        """A key typed at the More prompt: Space a screen more, Enter a line more, anything else stops
        (the rest is never rendered). Returns the erased prompt (and the tail when stopped); the lines
        come from the following :meth:`step` calls."""
        assert self.waiting
        self.waiting = False
        if char == " ":
            self._budget = self._rows
        elif char in ("\r", "\n"):
            self._budget = 1
        else:
            self.stop()
            return ERASE_MORE.encode() + self._tail
        return ERASE_MORE.encode()

    def stop(self) -> None:
        """End here: what is not yet rendered never will be (Ctrl+C, a stop key at the More prompt)."""
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        self._chunks = None
        self._buffer = []
        self.waiting = False
        self.done = True

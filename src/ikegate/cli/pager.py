"""The ``  ---- More ----`` pager: long output shown one screen at a time.

``screen-length N`` rows per screen, the last row being the pager prompt. Space shows the next screen,
Enter one more line, and any other key (``q``, Ctrl+C, a letter, an arrow) stops the display, as on VRP;
the key that stops it is consumed, never typed into the next command line (the shell also drops the
rest of an escape sequence). ``screen-length 0 temporary`` turns paging off (netmiko does that first,
and must never see a pager prompt afterwards).
"""

from __future__ import annotations

MORE = "  ---- More ----"
# Erase the pager prompt in place before the next lines (plain CR/spaces: no terminal assumptions).
ERASE_MORE = "\r" + " " * len(MORE) + "\r"


class Pager:
    def __init__(self, lines: list[str], screen_length: int) -> None:
        self._lines = lines
        self._rows = max(1, screen_length - 1)
        self._shown = 0

    @property
    def done(self) -> bool:
        return self._shown >= len(self._lines)

    def _next(self, count: int) -> list[str]:
        chunk = self._lines[self._shown : self._shown + count]
        self._shown += len(chunk)
        return chunk

    def first(self) -> list[str]:
        return self._next(self._rows)

    def key(self, char: str) -> list[str] | None:
        """Lines to show for one key; None when the key stops the output (every key but Space and Enter)."""
        if char == " ":
            return self._next(self._rows)
        if char in ("\r", "\n"):
            return self._next(1)
        self._shown = len(self._lines)
        return None

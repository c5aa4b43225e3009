"""Fixed-column tables as the USG prints them: each cell starts at its column; a cell wider than its
column pushes the rest of the line right, always leaving one space, so the line stays readable and a
TextFSM template still finds the cell boundaries (long IPv6 peers, long IDs)."""

from __future__ import annotations

from collections.abc import Iterable


def place(starts: Iterable[int], cells: Iterable[str], width: int = 0) -> str:
    """The cells at their 0-based column starts, the line padded with spaces to ``width``."""
    line = ""
    for start, cell in zip(starts, cells, strict=True):
        line = line.ljust(start) if not line or len(line) < start else line + " "
        line += cell
    return line.ljust(width)

"""Output produced a chunk at a time, so that a 100,000-row display never holds the event loop.

Why: the management plane shares one event loop with negotiation. A display that formats every row in
one call stops IKE for as long as it takes (20 SSH sessions displaying 10,000 SAs in a loop once took
the set-up rate from 408/s to 26/s). Renderers of large tables therefore return :data:`Chunks` — an
iterator of line lists, each costing about :data:`CHUNK_ROWS` rows of work — and whoever drives the
output (the shell's pager, the SSH or console writer, the control socket) takes one chunk, writes it,
and lets the loop run before the next (:mod:`ikegate.mgmt.pacing`). An empty chunk is allowed: it means
"work was done, nothing to print yet" (a ``| count`` or a selective ``| include``), and still gives the
loop its turn.

Consistency: a display works on the rows its device returned when the command ran (one synchronous
``select``: the *set* of rows is a snapshot); each row's text is made from that row when its chunk is
rendered. An SA deleted meanwhile is still printed with its last values (entries are never reused or
cleared on removal, so this cannot fail); counters and flags are as recent as the chunk.

:func:`json_chunks` is the ``| json`` form of the same idea: byte for byte what
``json.dumps(data, indent=1, default=str)`` prints, with the records of a :class:`Records` value
encoded a chunk at a time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["CHUNK_ROWS", "Chunks", "Records", "flatten", "in_chunks", "json_chunks"]

#: Rows formatted per chunk: about a millisecond of work for ``display ike sa`` (one loop turn's worth).
CHUNK_ROWS = 500

Chunks = Iterator[list[str]]

T = TypeVar("T")


def in_chunks(items: Sequence[T], format_rows: Callable[[Sequence[T]], list[str]],
              size: int = CHUNK_ROWS) -> Chunks:
    """``format_rows`` applied to ``items`` ``size`` at a time (nothing for no items)."""
    for start in range(0, len(items), size):
        yield format_rows(items[start:start + size])


def flatten(chunks: Iterable[list[str]]) -> list[str]:
    """Every line of ``chunks``, at once (tests, ``ikegate cli -c`` callers that want a list)."""
    out: list[str] = []
    for chunk in chunks:
        out += chunk
    return out


class Records(Generic[T]):
    """A list of JSON records made on demand: ``make(item)`` for each item, when its chunk is encoded."""

    def __init__(self, items: Sequence[T], make: Callable[[T], Any]) -> None:
        self.items = items
        self.make = make

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Any]:
        return map(self.make, self.items)


_ENCODER = json.JSONEncoder(indent=1, default=str)


def _dump(value: object) -> list[str]:
    return _ENCODER.encode(value).splitlines()


def json_chunks(data: object, size: int = CHUNK_ROWS) -> Chunks:
    """``json.dumps(data, indent=1, default=str).splitlines()`` in chunks. Only the top-level values of a
    dict that are :class:`Records` are streamed; anything else is encoded whole, as before."""
    if not isinstance(data, dict) or not any(isinstance(v, Records) for v in data.values()):
        yield _dump({k: list(v) if isinstance(v, Records) else v for k, v in data.items()}
                    if isinstance(data, dict) else data)
        return
    yield ["{"]
    last_key = len(data) - 1
    for index, (key, value) in enumerate(data.items()):
        comma = "," if index < last_key else ""
        head = f" {json.dumps(str(key))}: "
        if not isinstance(value, Records):
            body = _dump(value)
            lines = [head + body[0], *(" " + line for line in body[1:])]
            lines[-1] += comma
            yield lines
            continue
        items = value.items
        if not items:
            yield [head + "[]" + comma]
            continue
        yield [head + "["]
        encode, make = _ENCODER.encode, value.make
        for start in range(0, len(items), size):
            # one string per chunk, indented two levels and split once: the records as json.dumps nests them
            text = ",\n".join([encode(make(item)) for item in items[start:start + size]])
            if start + size < len(items):
                text += ","
            yield ("  " + text.replace("\n", "\n  ")).split("\n")
        yield [" ]" + comma]
    yield ["}"]

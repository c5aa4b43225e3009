"""Output filters of the ``display`` commands: ``| include``, ``| exclude``, ``| begin``, ``| count``,
``| no-more`` (VRP) and ``| json`` (ikegate's records).

They are declared here once, as data; :class:`~ikegate.cli.tree.CommandTree` grafts the same small
graph after every ``display`` command, so each one gets them from the one matcher with abbreviation,
``?``, Tab and the VRP errors, and no handler knows about them.

Semantics, as on VRP:

* one filter per line: after ``| count``, ``| no-more`` or ``| json`` nothing more may follow
  (*Too many parameters* at the next token);
* the regular expression of ``include``/``exclude``/``begin`` is the **rest of the line**, spaces
  included (``| include ike peer`` looks for ``ike peer``), so a second ``|`` is part of it (an
  alternation), never a second filter;
* VRP's "degenerate" special characters: ``*``, ``+`` or ``?`` in the first position match themselves;
  any other expression Python's :mod:`re` cannot compile is *Wrong parameter* with the caret under the
  expression;
* ``| json`` replaces the text by records, so the text filters cannot combine with it (and cannot
  follow it: one filter per line).

Filters work on chunks of lines (:meth:`OutputFilter.chunks`), so a filtered 100,000-row display still
yields to the event loop between chunks (see :mod:`ikegate.cli.render.chunks`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ikegate.cli.params import ValueParam
from ikegate.cli.render.chunks import Chunks, flatten

if TYPE_CHECKING:
    from ikegate.cli.matcher import Match

PIPE = "|"
PIPE_HELP = "Matching output"
#: Binding names of the grafted edges (kept out of :attr:`Match.keywords`, so no handler sees them).
PIPE_NAME, FILTER_NAME, REGEX_NAME = "_pipe", "_filter", "_regex"

#: Filters that take a regular expression (`?` lists them in this order, sorted with the others).
REGEX_FILTERS = {
    "begin": "Start at the first line that matches",
    "exclude": "Only the lines that do not match",
    "include": "Only the lines that match",
}
#: Filters that end the line.
PLAIN_FILTERS = {
    "count": "Number of lines",
    "no-more": "Without pausing at screen ends",
    "json": "The records behind the output, as JSON",
}
COUNT_FORMAT = "Total lines: {}"


class RegexParam(ValueParam):
    """Any token: the first word of a regular expression (the filter takes the rest of the line)."""

    @property
    def display(self) -> str:
        return "STRING<1-255>"

    def parse(self, token: str) -> str:
        return token


REGEX = RegexParam("Regular expression")


@dataclass(frozen=True)
class OutputFilter:
    """The filter a matched line asked for (``kind`` None: none)."""

    kind: str | None = None
    pattern: re.Pattern[str] | None = None

    @property
    def json(self) -> bool:
        return self.kind == "json"

    @property
    def no_more(self) -> bool:
        return self.kind == "no-more"

    def apply(self, lines: Iterable[str]) -> list[str]:
        """The lines to print. One pass, one compiled pattern, one ``search`` per line at most (``begin``
        stops searching at its first match), so 100,000 SA rows filter in well under a second."""
        return flatten(self.chunks([list(lines)]))

    def chunks(self, source: Iterable[list[str]]) -> Chunks:
        """:meth:`apply` a chunk at a time: one output chunk per input chunk (possibly empty, so that the
        driver still yields between them), plus ``| count``'s line at the end."""
        if self.kind == "count":
            total = 0
            for chunk in source:
                total += len(chunk)
                yield []
            yield [COUNT_FORMAT.format(total)]
            return
        pattern = self.pattern
        if pattern is None:
            yield from source
            return
        search = pattern.search
        if self.kind == "include":
            for chunk in source:
                yield [line for line in chunk if search(line)]
        elif self.kind == "exclude":
            for chunk in source:
                yield [line for line in chunk if not search(line)]
        else:  # begin
            it = iter(source)
            for chunk in it:
                for index, line in enumerate(chunk):
                    if search(line):
                        yield chunk[index:]
                        yield from it
                        return
                yield []


class BadRegex(ValueError):
    """The expression does not compile; ``index`` is its first token (for the caret)."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


def compile_regex(text: str) -> re.Pattern[str]:
    """VRP's expression rules on top of :mod:`re`: a leading ``*``, ``+`` or ``?`` is literal."""
    if text[:1] in ("*", "+", "?"):
        text = "\\" + text
    return re.compile(text)


def from_match(match: Match, line: str) -> OutputFilter:
    """The filter of a matched line (``line`` as typed, for the expression's spaces); raises
    :class:`BadRegex` when the expression does not compile."""
    kinds = [str(b.value) for b in match.bindings if b.name == FILTER_NAME]
    if not kinds:
        return OutputFilter()
    kind = kinds[0]
    if kind not in REGEX_FILTERS:
        return OutputFilter(kind)
    first = next(b.index for b in match.bindings if b.name == REGEX_NAME)
    text = line[match.tokens[first].start :].rstrip()
    try:
        return OutputFilter(kind, compile_regex(text))
    except (re.error, RecursionError, OverflowError) as exc:
        raise BadRegex(first) from exc

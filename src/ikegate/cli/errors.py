"""The error forms the shell prints, in one place.

The five *syntax* errors are VRP's own (a line with a caret under the offending token, then the
message). A handler refuses a well-formed command with :class:`CommandError` (one ``Error: ...`` line,
no caret), or blames one of its own parameters with :class:`ParamError` (caret + *Wrong parameter*),
for checks the type alone cannot make (``range 80 20``, a 13th proposal).
"""

from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    UNRECOGNIZED = "Unrecognized command"
    INCOMPLETE = "Incomplete command"
    AMBIGUOUS = "Ambiguous command"
    WRONG_PARAMETER = "Wrong parameter"
    TOO_MANY = "Too many parameters"

    @property
    def message(self) -> str:
        return f"Error: {self.value} found at '^' position."


def caret_line(column: int) -> str:
    """The line that points at ``column`` (0-based, counted from the start of the prompt)."""
    return " " * column + "^"


class CommandError(Exception):
    """A command was understood but refused. ``str(exc)`` is the full line, ``Error: ...``."""

    def __init__(self, message: str) -> None:
        if not message.startswith("Error: "):
            message = "Error: " + message
        super().__init__(message)


class ParamError(Exception):
    """A handler blames the ``index``-th value bound to parameter ``name``."""

    def __init__(self, name: str, index: int = 0, kind: ErrorKind = ErrorKind.WRONG_PARAMETER) -> None:
        super().__init__(f"{kind.value}: {name}[{index}]")
        self.name = name
        self.index = index
        self.kind = kind

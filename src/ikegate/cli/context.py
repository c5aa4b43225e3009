"""What a command handler gets: the model, the view's target, the session, the output, the device.

Handlers stay free of I/O: they read typed arguments through the accessors below, change the
:class:`~ikegate.policy.model.Config`, write lines with :meth:`CommandContext.write`, and move between
views through :class:`Session`. ``device`` is what runtime commands reach (a
:class:`~ikegate.cli.commands.runtime.Runtime` around the :class:`~ikegate.gateway.device.Device`);
the configuration commands never touch it, runtime commands cast it to the type they expect.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from ikegate.cli.errors import CommandError
from ikegate.cli.logbuffer import LogBuffer
from ikegate.cli.matcher import Match
from ikegate.cli.views import ViewFrame
from ikegate.policy.model import Config, IPAddress

T = TypeVar("T")


class Session(Protocol):
    """The part of the shell a handler may drive."""

    user: str
    level: int
    screen_length: int
    logbuffer: LogBuffer
    save_callback: Callable[[str], None] | None

    def enter_view(self, frame: ViewFrame) -> None: ...

    def leave_view(self) -> None: ...

    def return_to_user_view(self) -> None: ...

    def ask(self, question: str, on_answer: Callable[[str], list[str]]) -> None:
        """Print ``question`` (no newline) and give the next line typed to ``on_answer``, whose lines
        are printed in turn (the ``[Y/N]`` confirmations)."""
        ...

    @property
    def frame(self) -> ViewFrame: ...


@dataclass
class CommandContext:
    config: Config
    session: Session
    match: Match
    device: object | None = None
    loading: bool = False  # True while a configuration file is applied: reference checks are skipped
    lines: list[str] = field(default_factory=list)
    json: bool = False  # the line ended with ``| json``: a display command answers with records
    data: object | None = None  # what a display command answers in JSON mode
    pending: Awaitable[list[str]] | None = None  # output that comes later (``ping`` waits for replies)
    #: Lines that follow :attr:`lines`, rendered a chunk at a time while they are printed (large displays:
    #: see :mod:`ikegate.cli.render.chunks`); set with :meth:`write_chunks`.
    stream: Iterator[list[str]] | None = None

    @property
    def target(self) -> object | None:
        """The object the current view edits (an IkePeer in ``[sys-ike-peer-X]``), else None."""
        return self.session.frame.target

    def target_as(self, kind: type[T]) -> T:
        target = self.target
        if not isinstance(target, kind):
            raise CommandError(f"Error: This command is not available in the current view ({kind.__name__}).")
        return target

    def write(self, line: str = "") -> None:
        self.lines.append(line)

    def write_chunks(self, chunks: Iterator[list[str]]) -> None:
        """Lines to print after those written so far, made only as the output is printed; once only."""
        assert self.stream is None
        self.stream = chunks

    # Typed access to the arguments -------------------------------------------------------------
    def has(self, name: str) -> bool:
        return bool(self.match.values(name))

    def keyword(self, word: str) -> bool:
        """Whether the full keyword ``word`` was typed (abbreviations count)."""
        return word in self.match.keywords

    def values(self, name: str) -> list[object]:
        return self.match.values(name)

    def words(self, name: str) -> list[str]:
        """All values of a repeated choice, duplicates removed, in the order typed."""
        out: list[str] = []
        for value in self.match.values(name):
            if str(value) not in out:
                out.append(str(value))
        return out

    def _one(self, name: str, kind: type[T]) -> T | None:
        found = self.match.values(name)
        if not found:
            return None
        value = found[0]
        if not isinstance(value, kind):
            raise TypeError(f"<{name}> is {type(value).__name__}, not {kind.__name__}")
        return value

    def number(self, name: str) -> int:
        value = self._one(name, int)
        if value is None:
            raise KeyError(name)
        return value

    def opt_number(self, name: str) -> int | None:
        return self._one(name, int)

    def string(self, name: str) -> str:
        value = self._one(name, str)
        if value is None:
            raise KeyError(name)
        return value

    def opt_string(self, name: str) -> str | None:
        return self._one(name, str)

    def ip(self, name: str) -> IPAddress:
        value = self.opt_ip(name)
        if value is None:
            raise KeyError(name)
        return value

    def opt_ip(self, name: str) -> IPAddress | None:
        found = self.match.values(name)
        if not found:
            return None
        value = found[0]
        if not isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address):
            raise TypeError(f"<{name}> is not an address")
        return value

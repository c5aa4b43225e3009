"""Command declarations and the per-view graph built from them once.

A :class:`Command` is data: its syntax in the command-reference notation (:mod:`ikegate.cli.syntax`),
the views it is valid in, its level, the types of its parameters, and a handler. :class:`CommandTree`
compiles every declaration into one small graph per view (states joined by keyword, choice and value
edges, plus empty moves for optional parts and repetition). The matcher, `?` help and Tab completion all
walk that same graph, so they agree on every command alike.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ikegate.cli import filters, syntax
from ikegate.cli.helptext import KEYWORD_HELP
from ikegate.cli.params import Choice, Param, ValueParam
from ikegate.cli.views import ViewKind

if TYPE_CHECKING:
    from ikegate.cli.context import CommandContext

Handler = Callable[["CommandContext"], None]

# Command levels (VRP): a user runs the commands at or below the user's own level.
VISIT, MONITOR, CONFIGURE, MANAGE = 0, 1, 2, 3


@dataclass(frozen=True)
class Command:
    """One declared command (an ``undo`` form is a command of its own, starting with ``undo``).

    ``help`` overrides :data:`~ikegate.cli.helptext.KEYWORD_HELP` for this command's keywords;
    ``record`` False keeps the command out of the command log (pager answers, not commands).
    """

    syntax: str
    handler: Handler
    views: frozenset[ViewKind]
    level: int = CONFIGURE
    params: Mapping[str, Param | tuple[Param, ...]] = field(default_factory=dict)
    help: Mapping[str, str] = field(default_factory=dict)
    record: bool = True


@dataclass(eq=False)
class Edge:
    """A way out of a state: a keyword, a word of a :class:`Choice`, or a value parameter.

    ``word`` is set for keywords and choice words (matched like keywords); ``param`` for value
    parameters; ``name`` is the binding name (None for plain keywords).
    """

    target: State
    help: str
    word: str | None = None
    param: ValueParam | None = None
    name: str | None = None
    sensitive: bool = False


@dataclass(eq=False)
class State:
    id: int
    edges: list[Edge] = field(default_factory=list)
    empty: list[State] = field(default_factory=list)  # moves that consume no token
    accept: Command | None = None


class _Builder:
    def __init__(self, command: Command, counter: Iterable[int]) -> None:
        self.command = command
        self._ids = iter(counter)

    def state(self) -> State:
        return State(next(self._ids))

    def compile(self, node: syntax.Node, entry: State) -> State:
        """Add ``node`` after ``entry``; return the state reached once it is matched."""
        if isinstance(node, syntax.Word):
            return self._keyword(node.text, entry)
        if isinstance(node, syntax.ParamRef):
            return self._param(node.name, entry)
        if isinstance(node, syntax.Seq):
            for item in node.items:
                entry = self.compile(item, entry)
            return entry
        if isinstance(node, syntax.Alt):
            exit_ = self.state()
            if node.optional:
                entry.empty.append(exit_)
            for option in node.options:
                start = self.state()
                entry.empty.append(start)
                self.compile(option, start).empty.append(exit_)
            return exit_
        # Repeat: a fresh loop head so the loop cannot reach edges that belong to a sibling.
        head, exit_ = self.state(), self.state()
        entry.empty.append(head)
        end = self.compile(node.item, head)
        end.empty.extend((head, exit_))
        return exit_

    def _keyword(self, word: str, entry: State) -> State:
        text = self.command.help.get(word, KEYWORD_HELP.get(word))
        if text is None:
            raise syntax.SyntaxDeclarationError(f"no help text for keyword {word!r} ({self.command.syntax})")
        target = self.state()
        entry.edges.append(Edge(target, text, word=word))
        return target

    def _param(self, name: str, entry: State) -> State:
        """A parameter; a tuple of types (``(Ipv4(...), Ipv6(...))``) binds whichever one parses."""
        declared = self.command.params.get(name)
        if declared is None:
            raise syntax.SyntaxDeclarationError(f"parameter <{name}> has no type ({self.command.syntax})")
        target = self.state()
        for param in declared if isinstance(declared, tuple) else (declared,):
            if isinstance(param, Choice):
                for word, text in param.words.items():
                    entry.edges.append(Edge(target, text, word=word, name=name, sensitive=param.sensitive))
            else:
                entry.edges.append(Edge(target, param.help, param=param, name=name, sensitive=param.sensitive))
        return target

    def graft_filters(self, end: State) -> None:
        """After a ``display`` command: ``| { begin | exclude | include } <regex>…`` or
        ``| { count | no-more | json }`` (:mod:`ikegate.cli.filters`), ending in the same command."""
        pipe, regex, more, done = self.state(), self.state(), self.state(), self.state()
        end.edges.append(Edge(pipe, filters.PIPE_HELP, word=filters.PIPE, name=filters.PIPE_NAME))
        for word, text in filters.REGEX_FILTERS.items():
            pipe.edges.append(Edge(regex, text, word=word, name=filters.FILTER_NAME))
        for word, text in filters.PLAIN_FILTERS.items():
            pipe.edges.append(Edge(done, text, word=word, name=filters.FILTER_NAME))
        for state in (regex, more):  # the expression: one token or more, up to the end of the line
            state.edges.append(Edge(more, filters.REGEX.help, param=filters.REGEX, name=filters.REGEX_NAME))
        more.accept = done.accept = self.command


@dataclass(frozen=True)
class Entry:
    """A command's start state in a view graph."""

    command: Command
    start: State


class CommandTree:
    """Every declared command, compiled into one graph per view. Build it once and share it between
    sessions; :meth:`entries` gives the starts of a view's commands in declaration order."""

    def __init__(self, commands: Iterable[Command]) -> None:
        self.commands: list[Command] = list(commands)
        self._entries: dict[ViewKind, list[Entry]] = {kind: [] for kind in ViewKind}
        counter = itertools.count()
        for command in self.commands:
            builder = _Builder(command, counter)
            start = builder.state()
            end = builder.compile(syntax.parse_syntax(command.syntax), start)
            end.accept = command
            if command.syntax.split(" ", 1)[0] == "display":
                builder.graft_filters(end)
            for kind in command.views:
                self._entries[kind].append(Entry(command, start))

    def entries(self, view: ViewKind, level: int) -> list[Entry]:
        """The commands of ``view`` a user of ``level`` may run (the others do not exist for them)."""
        return [e for e in self._entries[view] if e.command.level <= level]

    def extended(self, commands: Iterable[Command]) -> CommandTree:
        """A new tree with more commands (how runtime commands join the configuration ones)."""
        return CommandTree([*self.commands, *commands])

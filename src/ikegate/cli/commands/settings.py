"""Command pairs for plain attributes: ``keyword VALUE`` sets, ``undo keyword`` restores the default.

Most sub-view commands are exactly that, so they are declared through these two factories instead of a
hand-written handler pair each. ``target`` finds the object to change (and may refuse, e.g. the
bound-policy rule); ``default`` builds a fresh default object whose attribute ``undo`` copies.
"""

from __future__ import annotations

from collections.abc import Callable

from ikegate.cli.context import CommandContext
from ikegate.cli.params import Param
from ikegate.cli.tree import Command
from ikegate.cli.views import ViewKind

Target = Callable[[CommandContext], object]


def value_setting(
    keyword: str,
    attr: str,
    param: Param,
    views: frozenset[ViewKind],
    target: Target,
    default: Callable[[], object],
    convert: Callable[[object], object] = lambda v: v,
) -> list[Command]:
    """``keyword <value>`` / ``undo keyword`` for a single value (``convert`` maps a word to an enum)."""

    def set_value(ctx: CommandContext) -> None:
        setattr(target(ctx), attr, convert(ctx.values("value")[0]))

    def undo(ctx: CommandContext) -> None:
        setattr(target(ctx), attr, getattr(default(), attr))

    return [
        Command(f"{keyword} <value>", set_value, views, params={"value": param}),
        Command(f"undo {keyword}", undo, views),
    ]


def list_setting(
    keyword: str,
    attr: str,
    param: Param,
    views: frozenset[ViewKind],
    target: Target,
    default: Callable[[], object],
) -> list[Command]:
    """``keyword <value>+`` (the whole list, first = preferred) / ``undo keyword``."""

    def set_values(ctx: CommandContext) -> None:
        setattr(target(ctx), attr, ctx.words("value"))

    def undo(ctx: CommandContext) -> None:
        setattr(target(ctx), attr, getattr(default(), attr))

    return [
        Command(f"{keyword} <value>+", set_values, views, params={"value": param}),
        Command(f"undo {keyword}", undo, views),
    ]


def flag_setting(
    keyword: str, attr: str, views: frozenset[ViewKind], target: Target, undo_value: object = False
) -> list[Command]:
    """``keyword`` sets ``attr`` True; ``undo keyword`` sets ``undo_value``."""

    def on(ctx: CommandContext) -> None:
        setattr(target(ctx), attr, True)

    def off(ctx: CommandContext) -> None:
        setattr(target(ctx), attr, undo_value)

    return [Command(keyword, on, views), Command(f"undo {keyword}", off, views)]

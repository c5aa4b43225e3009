"""System-wide settings: ``sysname`` and the global ``ikev1 phase1-phase2 sa dependent``."""

from __future__ import annotations

from ikegate.cli.context import CommandContext
from ikegate.cli.params import String
from ikegate.cli.tree import Command
from ikegate.cli.views import ViewKind
from ikegate.policy.model import Config

SYSTEM = frozenset({ViewKind.SYSTEM})
DEFAULT_SYSNAME = Config().sysname


def _sysname(ctx: CommandContext) -> None:
    ctx.config.sysname = ctx.string("name")


def _undo_sysname(ctx: CommandContext) -> None:
    ctx.config.sysname = DEFAULT_SYSNAME


def _dependent(value: bool) -> Command:
    def handler(ctx: CommandContext) -> None:
        ctx.config.ikev1_dependent = value

    prefix = "" if value else "undo "
    return Command(f"{prefix}ikev1 phase1-phase2 sa dependent", handler, SYSTEM)


COMMANDS = [
    Command("sysname <name>", _sysname, SYSTEM, params={"name": String("Host name", 1, 246)}),
    Command("undo sysname", _undo_sysname, SYSTEM),
    _dependent(True),
    _dependent(False),
]

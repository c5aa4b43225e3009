"""The built-in commands, grouped by what they configure; :func:`default_tree` compiles them once.

Runtime commands (``display ike sa``, ``reset ike sa``, ``ping``) depend on the device model, so
:func:`~ikegate.cli.commands.runtime.runtime_commands` builds them per model and they join through
``default_tree(extra)`` or :meth:`~ikegate.cli.tree.CommandTree.extended`.
"""

from __future__ import annotations

from collections.abc import Iterable

from ikegate.cli.commands import (
    access,
    acl,
    admission,
    hrp,
    ike,
    infocenter,
    interface,
    ipsec,
    pki,
    session,
    ssh_blocks,
    system,
)
from ikegate.cli.tree import Command, CommandTree


def default_commands() -> list[Command]:
    return [
        *session.COMMANDS,
        *system.COMMANDS,
        *infocenter.COMMANDS,
        *interface.COMMANDS,
        *acl.COMMANDS,
        *pki.COMMANDS,
        *ike.COMMANDS,
        *admission.COMMANDS,
        *hrp.COMMANDS,
        *ipsec.COMMANDS,
        *access.COMMANDS,
        *ssh_blocks.COMMANDS,
    ]


def default_tree(extra: Iterable[Command] = ()) -> CommandTree:
    """Every built-in command plus ``extra``, compiled into per-view graphs."""
    return CommandTree([*default_commands(), *extra])

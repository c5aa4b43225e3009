"""``ike call admission limit ...`` (system view): bounds on unauthenticated IKE negotiation state.

``in-negotiation-sa N`` is the USG command (the number of IKE SAs waiting to complete); the
``in-negotiation-sa per-address N`` and ``authentication-failure N`` forms are ikegate's, worded in the
same family, for what strongSwan calls ``block_threshold`` and for refusing a source that keeps failing
authentication. The gateway reads them from :class:`~ikegate.policy.model.IkeAdmission`.
"""

from __future__ import annotations

from ikegate.cli.commands.settings import value_setting
from ikegate.cli.context import CommandContext
from ikegate.cli.params import Integer
from ikegate.cli.render.config import ADMISSION_FIELDS, ADMISSION_PREFIX
from ikegate.cli.tree import Command
from ikegate.cli.views import ViewKind
from ikegate.policy.model import IkeAdmission

SYSTEM = frozenset({ViewKind.SYSTEM})
_PARAMS = {
    "in_negotiation": Integer("Maximum number of IKE SAs in negotiation", 1, 100000),
    "per_address": Integer("Maximum number of IKE SAs in negotiation from one address", 1, 100000),
    "authentication_failures": Integer("Failed authentications from one address per minute before it is "
                                       "refused for a minute", 1, 10000),
}


def _target(ctx: CommandContext) -> object:
    return ctx.config.ike_admission


COMMANDS: list[Command] = [
    command
    for keyword, attr in ADMISSION_FIELDS
    for command in value_setting(f"{ADMISSION_PREFIX} {keyword}", attr, _PARAMS[attr], SYSTEM, _target, IkeAdmission)
]

"""Hot standby: ``hrp ...`` in the system view and ``vrrp vrid N virtual-ip ADDRESS active|standby`` in
the interface view (USG syntax; what ikegate adds or leaves out is listed in docs/ha.md).

The model is :class:`~ikegate.policy.model.Hrp` and ``Interface.vrrp``; ``ikegate.ha`` turns it into a
keepalived configuration and the SA sync channel.
"""

from __future__ import annotations

from ikegate.cli.commands.settings import flag_setting, value_setting
from ikegate.cli.context import CommandContext
from ikegate.cli.errors import CommandError
from ikegate.cli.params import Integer, InterfaceName, Ipv4, Secret
from ikegate.cli.tree import Command
from ikegate.cli.views import ViewKind
from ikegate.policy.model import Hrp, Interface, VrrpGroup

SYSTEM = frozenset({ViewKind.SYSTEM})
INTERFACE = frozenset({ViewKind.INTERFACE})
_ITF = {"interface": InterfaceName("Heartbeat interface name")}
_VRID = {"vrid": Integer("Virtual router ID", 1, 255)}


def _hrp(ctx: CommandContext) -> object:
    return ctx.config.hrp


def _interface(ctx: CommandContext) -> None:
    hrp = ctx.config.hrp
    hrp.interface, hrp.remote = ctx.string("interface"), ctx.ip("remote")


def _undo_interface(ctx: CommandContext) -> None:
    hrp = ctx.config.hrp
    if hrp.interface != ctx.string("interface") and not ctx.loading:
        raise CommandError(f"Error: {ctx.string('interface')} is not the heartbeat interface.")
    hrp.interface = hrp.remote = None


def _preempt(ctx: CommandContext) -> None:
    hrp = ctx.config.hrp
    hrp.preempt = True
    hrp.preempt_delay = ctx.opt_number("delay") or Hrp().preempt_delay


def _undo_preempt(ctx: CommandContext) -> None:
    ctx.config.hrp.preempt = False


def _vrrp(ctx: CommandContext) -> None:
    itf = ctx.target_as(Interface)
    address = ctx.ip("address")
    assert address.version == 4
    vrid = ctx.number("vrid")
    for other in ctx.config.interfaces.values():
        if other is not itf and vrid in other.vrrp and not ctx.loading:
            raise CommandError(f"Error: VRID {vrid} is already used on interface {other.name}.")
    itf.vrrp[vrid] = VrrpGroup(vrid, address, ctx.keyword("active"))


def _undo_vrrp(ctx: CommandContext) -> None:
    itf = ctx.target_as(Interface)
    vrid = ctx.number("vrid")
    if vrid not in itf.vrrp and not ctx.loading:
        raise CommandError(f"Error: The VRRP backup group {vrid} does not exist.")
    itf.vrrp.pop(vrid, None)


COMMANDS: list[Command] = [
    *flag_setting("hrp enable", "enabled", SYSTEM, _hrp),
    Command("hrp interface <interface> remote <remote>", _interface, SYSTEM,
            params={**_ITF, "remote": Ipv4("IPv4 address of the peer's heartbeat interface")}),
    Command("undo hrp interface <interface>", _undo_interface, SYSTEM, params=_ITF),
    *flag_setting("hrp auto-sync", "auto_sync", SYSTEM, _hrp),
    *flag_setting("hrp mirror session enable", "mirror_session", SYSTEM, _hrp),
    *flag_setting("hrp standby config enable", "standby_config", SYSTEM, _hrp),
    Command("hrp preempt [ delay <delay> ]", _preempt, SYSTEM,
            params={"delay": Integer("Preemption delay in seconds", 1, 3600)}),
    Command("undo hrp preempt", _undo_preempt, SYSTEM),
    *value_setting("hrp authentication-key", "key",
                   Secret("Key of the HRP sync channel: 1-127 characters in clear, or the %^%#...%^%# cipher form"),
                   SYSTEM, _hrp, Hrp),
    Command("vrrp vrid <vrid> virtual-ip <address> { active | standby }", _vrrp, INTERFACE,
            params={**_VRID, "address": Ipv4("Virtual IP address")}),
    Command("undo vrrp vrid <vrid>", _undo_vrrp, INTERFACE, params=_VRID),
]

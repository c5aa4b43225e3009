"""Hot standby: ``hrp ...`` in the system view and ``vrrp vrid N virtual-ip ADDRESS active|standby`` in
the interface view (USG syntax; what ikegate adds or leaves out is listed in docs/ha.md).

The model is :class:`~ikegate.policy.model.Hrp` and ``Interface.vrrp``; ``ikegate.ha`` turns it into a
keepalived configuration and the SA sync channel.
"""

from __future__ import annotations

from collections.abc import Callable

from ikegate.cli.commands.settings import flag_setting, value_setting
from ikegate.cli.context import CommandContext
from ikegate.cli.errors import CommandError
from ikegate.cli.params import Integer, InterfaceName, Ipv4, Secret
from ikegate.cli.render.config import render_config
from ikegate.cli.tree import Command
from ikegate.cli.views import ViewKind
from ikegate.gateway.device import HRP_STANDBY_ERROR, Device
from ikegate.policy.model import Config, Hrp, Interface, VrrpGroup

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


#: Sub-views whose every command is backed up from the active node (``hrp auto-sync config``).
_BACKED_UP_VIEWS = frozenset({ViewKind.IKE_PROPOSAL, ViewKind.IKE_PEER, ViewKind.IPSEC_PROPOSAL,
                              ViewKind.IPSEC_POLICY, ViewKind.IPSEC_TEMPLATE, ViewKind.ACL, ViewKind.ACL6})
#: System-view commands that are backed up (by their first word after ``undo``); the rest (hrp, vrrp,
#: interfaces and their addresses, sysname, users, SSH, logging) are each node's own, as on the USG.
_BACKED_UP_WORDS = frozenset({"ike", "ipsec", "acl", "ikev1"})


def backed_up(command: Command) -> bool:
    """Whether ``command`` changes configuration the active node backs up to the standby."""
    if ViewKind.USER in command.views:
        return False  # display, ping, reset, navigation: not configuration
    if command.views <= _BACKED_UP_VIEWS:
        return True
    words = command.syntax.split()
    first = words[1] if words[:1] == ["undo"] and len(words) > 1 else words[0]
    return ViewKind.SYSTEM in command.views and first in _BACKED_UP_WORDS


def standby_guard(device: Device) -> Callable[[Command], str | None]:
    """The shell's guard on a hot-standby node: while it is the standby (and ``hrp standby config
    enable`` is off), backed-up configuration is refused with the USG's error; the active's is mirrored."""

    def guard(command: Command) -> str | None:
        if not backed_up(command):
            return None
        st = device.hrp_state()
        if st is None or st.role != "standby" or st.standby_config:
            return None
        return HRP_STANDBY_ERROR

    return guard


#: What ``hrp auto-sync`` backs up: the tunnel configuration. Interfaces, addresses, VRRP, HRP, the
#: system name, users and management access stay each node's own (as the USG's backup leaves them).
BACKED_UP_FIELDS = ("ike_proposals", "ike_peers", "ipsec_proposals", "acls", "acls6", "ipsec_policies",
                    "ipsec_templates", "ikev1_dependent", "ike_admission")


def mirror_text(config: Config) -> str:
    """The backed-up part of ``config`` as VRP text (what the active sends to the standby)."""
    part = Config(**{name: getattr(config, name) for name in BACKED_UP_FIELDS})
    return "\n".join(render_config(part))


def merge_mirrored(target: Config, text: str) -> list[str]:
    """Replace ``target``'s backed-up part by the one in ``text`` (the standby applying the active's);
    returns the loader's errors (the rest is applied regardless, as a configuration file would be)."""
    from ikegate.cli.loader import load_config  # the loader runs a shell over these commands: import late

    source, errors = load_config(text)
    for name in BACKED_UP_FIELDS:
        setattr(target, name, getattr(source, name))
    target.touch()
    return [str(e) for e in errors]

"""``interface NAME`` and the interface view: addresses and the IPsec policy binding."""

from __future__ import annotations

import ipaddress

from ikegate.cli.context import CommandContext
from ikegate.cli.errors import CommandError
from ikegate.cli.guards import require
from ikegate.cli.params import Integer, InterfaceName, Ipv4, Ipv6Prefix, Netmask, String
from ikegate.cli.tree import Command
from ikegate.cli.views import ViewFrame, ViewKind
from ikegate.policy.model import Interface

SYSTEM = frozenset({ViewKind.SYSTEM})
INTERFACE = frozenset({ViewKind.INTERFACE})
_NAME = {"name": InterfaceName("Interface name (GigabitEthernetX/Y/Z, LoopBackN, TunnelN)")}


def _enter(ctx: CommandContext) -> None:
    name = ctx.string("name")
    itf = ctx.config.interfaces.setdefault(name, Interface(name))
    ctx.session.enter_view(ViewFrame(ViewKind.INTERFACE, name, itf))


def _delete(ctx: CommandContext) -> None:
    name = ctx.string("name")
    require(ctx, name in ctx.config.interfaces, f"interface {name}")
    ctx.config.interfaces.pop(name, None)


def _ip_address(ctx: CommandContext) -> None:
    prefix = ctx.opt_number("mask")
    if prefix is None:
        prefix = ctx.number("length")
    ctx.target_as(Interface).ipv4 = [ipaddress.IPv4Interface(f"{ctx.ip('address')}/{prefix}")]


def _undo_ip_address(ctx: CommandContext) -> None:
    ctx.target_as(Interface).ipv4 = []


def _ipv6_enable(value: bool) -> Command:
    def handler(ctx: CommandContext) -> None:
        ctx.target_as(Interface).ipv6_enabled = value

    return Command(("" if value else "undo ") + "ipv6 enable", handler, INTERFACE)


def _ipv6_address(ctx: CommandContext) -> None:
    itf = ctx.target_as(Interface)
    (address,) = ctx.values("address")
    assert isinstance(address, ipaddress.IPv6Interface)
    if address not in itf.ipv6:
        itf.ipv6.append(address)


def _undo_ipv6_address(ctx: CommandContext) -> None:
    itf = ctx.target_as(Interface)
    found = ctx.values("address")
    if not found:
        itf.ipv6 = []
        return
    if found[0] not in itf.ipv6:
        raise CommandError("Error: The address does not exist on this interface.")
    itf.ipv6.remove(found[0])  # type: ignore[arg-type]


def _bind(ctx: CommandContext) -> None:
    itf = ctx.target_as(Interface)
    group = ctx.string("name")
    require(ctx, bool(ctx.config.policy_group(group)), f"IPSec policy {group}")
    for other in ctx.config.interfaces.values():
        if other is not itf and other.ipsec_policy == group and not ctx.loading:
            raise CommandError(f"Error: The IPSec policy {group} is already applied to interface {other.name}.")
    itf.ipsec_policy = group


def _unbind(ctx: CommandContext) -> None:
    ctx.target_as(Interface).ipsec_policy = None


COMMANDS = [
    Command("interface <name>", _enter, SYSTEM, params=_NAME),
    Command("undo interface <name>", _delete, SYSTEM, params=_NAME),
    Command(
        "ip address <address> { <mask> | <length> }",
        _ip_address,
        INTERFACE,
        params={
            "address": Ipv4("IP address"),
            "mask": Netmask("IP address mask"),
            "length": Integer("Length of IP address mask", 0, 32),
        },
    ),
    Command("undo ip address", _undo_ip_address, INTERFACE),
    _ipv6_enable(True),
    _ipv6_enable(False),
    Command(
        "ipv6 address <address>",
        _ipv6_address,
        INTERFACE,
        params={"address": Ipv6Prefix("IPv6 address with prefix length")},
    ),
    Command(
        "undo ipv6 address [ <address> ]",
        _undo_ipv6_address,
        INTERFACE,
        params={"address": Ipv6Prefix("IPv6 address with prefix length")},
    ),
    Command("ipsec policy <name>", _bind, INTERFACE, params={"name": String("IPSec policy name", 1, 15)}),
    Command("undo ipsec policy", _unbind, INTERFACE),
]

"""Advanced ACLs (``acl number 3000..3999``, ``acl ipv6 number 3000..3999``) and their ``rule`` commands.

Two ``rule`` declarations share one handler: ports are part of the syntax only after ``tcp``/``udp``,
so ``rule permit ip source-port ...`` is refused by the matcher exactly where VRP refuses it.
"""

from __future__ import annotations

import ipaddress

from ikegate.cli.context import CommandContext
from ikegate.cli.errors import CommandError, ParamError
from ikegate.cli.guards import refuse_if_bound, require
from ikegate.cli.params import Choice, Integer, Ipv4, Ipv6, Ipv6Prefix, Param, Wildcard
from ikegate.cli.tree import Command
from ikegate.cli.views import ViewFrame, ViewKind
from ikegate.policy.model import Acl, AclAddress, AclRule, PortRange

SYSTEM = frozenset({ViewKind.SYSTEM})
ACL = frozenset({ViewKind.ACL})
ACL6 = frozenset({ViewKind.ACL6})
RULE_STEP = 5

_NUMBER = {"number": Integer("Advanced ACL number", 3000, 3999)}
_PORT = Integer("Port number", 0, 65535)
_RULE_PARAMS: dict[str, Param] = {
    "id": Integer("ID of the ACL rule", 0, 4294967294),
    "action": Choice({"deny": "Deny matched packets", "permit": "Permit matched packets"}),
    "source": Ipv4("Source address"),
    "source-wildcard": Wildcard("Wildcard of the source address (0 = one host)"),
    "destination": Ipv4("Destination address"),
    "destination-wildcard": Wildcard("Wildcard of the destination address (0 = one host)"),
    "source-eq": _PORT,
    "source-low": _PORT,
    "source-high": _PORT,
    "destination-eq": _PORT,
    "destination-low": _PORT,
    "destination-high": _PORT,
}
_NO_PORTS: dict[str, Param] = {
    **_RULE_PARAMS,
    "protocol": Choice({"icmp": "ICMP (protocol 1)", "ip": "Any IP protocol"}),
}
_PORTS: dict[str, Param] = {**_RULE_PARAMS, "protocol": Choice({"tcp": "TCP (protocol 6)", "udp": "UDP (protocol 17)"})}
_HEAD = "rule [ <id> ] <action> <protocol>"
_SOURCE = "[ source { <source> <source-wildcard> | any } ]"
_DESTINATION = "[ destination { <destination> <destination-wildcard> | any } ]"
_SOURCE_PORT = "[ source-port { eq <source-eq> | range <source-low> <source-high> } ]"
_DESTINATION_PORT = "[ destination-port { eq <destination-eq> | range <destination-low> <destination-high> } ]"


def _enter(ctx: CommandContext) -> None:
    number = ctx.number("number")
    if ctx.keyword("ipv6"):
        acl = ctx.config.acls6.setdefault(number, Acl(number, ipv6=True))
        ctx.session.enter_view(ViewFrame(ViewKind.ACL6, f"acl6-adv-{number}", acl))
        return
    acl = ctx.config.acls.setdefault(number, Acl(number))
    ctx.session.enter_view(ViewFrame(ViewKind.ACL, f"acl-adv-{number}", acl))


def _refuse_if_bound(ctx: CommandContext, acl: Acl) -> None:
    """The bound-policy rule for either family: IPv4 and IPv6 ACL numbers are separate name spaces, so
    ``acl ipv6 number 3000`` is only bound through ``security acl ipv6 3000``."""
    if acl.ipv6:
        refuse_if_bound(ctx, acl6=acl.number)
    else:
        refuse_if_bound(ctx, acl=acl.number)


def _delete(ctx: CommandContext) -> None:
    number = ctx.number("number")
    ipv6 = ctx.keyword("ipv6")
    table = ctx.config.acls6 if ipv6 else ctx.config.acls
    require(ctx, number in table, f"{'IPv6 ' if ipv6 else ''}ACL {number}")
    _refuse_if_bound(ctx, table[number])
    del table[number]


def _acl(ctx: CommandContext) -> Acl:
    """The ACL the view edits; every rule command goes through here (bound-policy rule)."""
    acl = ctx.target_as(Acl)
    _refuse_if_bound(ctx, acl)
    return acl


def _address(ctx: CommandContext, side: str) -> AclAddress | None:
    """One side of a rule. IPv6 rules give a prefix (``X:X::X:X/LEN`` or ``X:X::X:X LEN``), kept like
    IPv4 ones as address + wildcard (the host bits) so one model, renderer and SPD serve both."""
    prefixes = ctx.values(f"{side}-prefix")
    lengths = ctx.values(f"{side}-length")
    if prefixes or lengths:
        if prefixes:
            prefix = prefixes[0]
            assert isinstance(prefix, ipaddress.IPv6Interface)
            network = prefix.network
        else:
            network = ipaddress.IPv6Network((ctx.ip(side), ctx.number(f"{side}-length")), strict=False)
        return AclAddress(network.network_address, network.hostmask)
    address = ctx.opt_ip(side)
    if address is None:
        return None
    (wildcard,) = ctx.values(f"{side}-wildcard")
    assert isinstance(wildcard, ipaddress.IPv4Address)
    # VRP stores the address with the wildcard bits cleared: 10.1.1.7 0.0.0.255 is 10.1.1.0.
    base = ipaddress.IPv4Address(int(address) & ~int(wildcard) & 0xFFFFFFFF)
    return AclAddress(base, wildcard)


def _ports(ctx: CommandContext, side: str) -> PortRange:
    equal = ctx.opt_number(f"{side}-eq")
    if equal is not None:
        return PortRange(equal, equal)
    low = ctx.opt_number(f"{side}-low")
    if low is None:
        return PortRange()
    high = ctx.number(f"{side}-high")
    if high < low:
        raise ParamError(f"{side}-high")
    return PortRange(low, high)


def _next_id(acl: Acl) -> int:
    """The first multiple of the step above the highest rule id (VRP's automatic numbering)."""
    highest = max((r.rule_id for r in acl.rules), default=0)
    return (highest // RULE_STEP + 1) * RULE_STEP


def _rule(ctx: CommandContext) -> None:
    acl = _acl(ctx)
    rule_id = ctx.opt_number("id")
    rule = AclRule(
        rule_id=_next_id(acl) if rule_id is None else rule_id,
        action=ctx.string("action"),
        protocol=ctx.string("protocol"),
        source=_address(ctx, "source"),
        destination=_address(ctx, "destination"),
        source_port=_ports(ctx, "source"),
        destination_port=_ports(ctx, "destination"),
    )
    acl.rules = sorted([r for r in acl.rules if r.rule_id != rule.rule_id] + [rule], key=lambda r: r.rule_id)


def _undo_rule(ctx: CommandContext) -> None:
    acl = _acl(ctx)
    rule_id = ctx.number("id")
    if all(r.rule_id != rule_id for r in acl.rules):
        family = "IPv6 " if acl.ipv6 else ""
        raise CommandError(f"Error: The rule {rule_id} does not exist in {family}ACL {acl.number}.")
    acl.rules = [r for r in acl.rules if r.rule_id != rule_id]


_PREFIX_LENGTH = Integer("Prefix length", 0, 128)
_V6_RULE_PARAMS: dict[str, Param] = {
    **{k: v for k, v in _RULE_PARAMS.items() if "wildcard" not in k and k not in ("source", "destination")},
    "source-prefix": Ipv6Prefix("Source IPv6 prefix"),
    "source": Ipv6("Source IPv6 address"),
    "source-length": _PREFIX_LENGTH,
    "destination-prefix": Ipv6Prefix("Destination IPv6 prefix"),
    "destination": Ipv6("Destination IPv6 address"),
    "destination-length": _PREFIX_LENGTH,
}
_V6_NO_PORTS: dict[str, Param] = {
    **_V6_RULE_PARAMS,
    "protocol": Choice({"icmpv6": "ICMPv6 (protocol 58)", "ipv6": "Any IPv6 protocol"}),
}
_V6_PORTS: dict[str, Param] = {**_V6_RULE_PARAMS, "protocol": _PORTS["protocol"]}
_SOURCE6 = "[ source { <source-prefix> | <source> <source-length> | any } ]"
_DESTINATION6 = "[ destination { <destination-prefix> | <destination> <destination-length> | any } ]"

COMMANDS = [
    Command("acl { number <number> | <number> }", _enter, SYSTEM, params=_NUMBER),
    Command("undo acl { number <number> | <number> }", _delete, SYSTEM, params=_NUMBER),
    Command("acl ipv6 number <number>", _enter, SYSTEM, params=_NUMBER),
    Command("undo acl ipv6 number <number>", _delete, SYSTEM, params=_NUMBER),
    Command(f"{_HEAD} {_SOURCE6} {_DESTINATION6}", _rule, ACL6, params=_V6_NO_PORTS),
    Command(f"{_HEAD} {_SOURCE6} {_SOURCE_PORT} {_DESTINATION6} {_DESTINATION_PORT}", _rule, ACL6,
            params=_V6_PORTS),
    Command("undo rule <id>", _undo_rule, ACL6, params=_RULE_PARAMS),
    Command(f"{_HEAD} {_SOURCE} {_DESTINATION}", _rule, ACL, params=_NO_PORTS),
    Command(f"{_HEAD} {_SOURCE} {_SOURCE_PORT} {_DESTINATION} {_DESTINATION_PORT}", _rule, ACL, params=_PORTS),
    Command("undo rule <id>", _undo_rule, ACL, params=_RULE_PARAMS),
]

"""``info-center loghost``: where the log buffer's messages are also sent as syslog (RFC 5424 over UDP).

VRP's syntax, reduced to what ikegate does: ``info-center loghost A [ port P ]`` for IPv4 and
``info-center loghost ipv6 A [ port P ]`` for IPv6, each with its ``undo`` by address (the port is not
part of the key, as on the device). The sender (:mod:`ikegate.mgmt.syslog`) reads ``Config.loghosts`` at
every message, so a change here takes effect with the next log line and nothing has to be restarted.

VRP's other options (channel, facility, language, vpn-instance, transport tcp/ssl) are left out: the
facility is always local7, the transport always UDP. At most :data:`~ikegate.policy.model.MAX_LOGHOSTS`
hosts, since every message is sent to each.
"""

from __future__ import annotations

from ikegate.cli.context import CommandContext
from ikegate.cli.errors import CommandError, ParamError
from ikegate.cli.guards import require
from ikegate.cli.params import Integer, Ipv4, Ipv6
from ikegate.cli.tree import Command, Handler
from ikegate.cli.views import ViewKind
from ikegate.policy.model import MAX_LOGHOSTS, SYSLOG_PORT, LogHost

SYSTEM = frozenset({ViewKind.SYSTEM})
PARAMS = {
    "ip-address": Ipv4("IPv4 address of the log host"),
    "ipv6-address": Ipv6("IPv6 address of the log host"),
    "port": Integer(f"UDP port of the log host (default {SYSLOG_PORT})", 1, 65535),
}
HELP = {"ipv6": "Specify an IPv6 log host", "port": "Specify the UDP port of the log host"}


def _name(ctx: CommandContext) -> str:
    """The parameter that holds the address: the IPv4 and IPv6 forms are separate commands."""
    return "ipv6-address" if ctx.keyword("ipv6") else "ip-address"


def _loghost(ctx: CommandContext) -> None:
    name = _name(ctx)
    ip = ctx.ip(name)
    if ip.is_unspecified or ip.is_multicast or (ip.version == 4 and int(ip) == 0xFFFFFFFF):
        raise ParamError(name)  # nobody to send to
    hosts = ctx.config.loghosts
    if ip not in hosts and len(hosts) >= MAX_LOGHOSTS:
        raise CommandError(f"Error: The number of log hosts has reached the upper limit ({MAX_LOGHOSTS}).")
    hosts[ip] = LogHost(ip, ctx.opt_number("port") or SYSLOG_PORT)


def _undo_loghost(ctx: CommandContext) -> None:
    ip = ctx.ip(_name(ctx))
    require(ctx, ip in ctx.config.loghosts, f"log host {ip}")
    ctx.config.loghosts.pop(ip, None)


def _command(syntax: str, handler: Handler) -> Command:
    params = {k: v for k, v in PARAMS.items() if f"<{k}>" in syntax}
    return Command(syntax, handler, SYSTEM, params=params, help=HELP)


COMMANDS = [
    _command("info-center loghost <ip-address> [ port <port> ]", _loghost),
    _command("info-center loghost ipv6 <ipv6-address> [ port <port> ]", _loghost),
    _command("undo info-center loghost <ip-address>", _undo_loghost),
    _command("undo info-center loghost ipv6 <ipv6-address>", _undo_loghost),
]

"""``display ssh server ip-block list|all`` and ``activate ssh server ip-block ip-address A``: the SSH
server's per-address login failures and blocks (see :mod:`ikegate.mgmt.ssh`), on the live daemon.

The SSH server lives in the daemon, so these reach it through :attr:`Runtime.ssh
<ikegate.cli.commands.runtime.Runtime.ssh>`; without a running server (a configuration being loaded,
unit tests) there is nothing blocked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, cast

from ikegate.cli.context import CommandContext
from ikegate.cli.params import Ipv4, Ipv6
from ikegate.cli.tree import MANAGE, Command
from ikegate.cli.views import ALL_VIEWS, ViewKind

RULE = "-" * 85
PUBLIC = "_public_"  # VRP's name for "no VPN instance"


@dataclass(frozen=True)
class SourceState:
    """One client address the SSH server remembers."""

    address: str
    failures: int  # failed passwords counted towards a block
    blocked_for: float  # seconds until it is unblocked; 0 when it is not blocked


class SshBlocks(Protocol):
    def source_states(self) -> list[SourceState]: ...

    def unblock(self, address: str) -> bool: ...


def _ssh(ctx: CommandContext) -> SshBlocks | None:
    return cast(SshBlocks | None, getattr(ctx.device, "ssh", None))


def _display(ctx: CommandContext) -> None:
    ssh = _ssh(ctx)
    states = ssh.source_states() if ssh is not None else []
    show_all = "all" in ctx.match.keywords
    ctx.write(RULE)
    if show_all:
        ctx.write(f" {'IP Address':<27}{'VPN Name':<27}{'State':<15}Auth-fail Count")
    else:
        ctx.write(f" {'IP Address':<27}{'VPN Name':<27}UnBlock Interval(Seconds)")
    ctx.write(RULE)
    for state in sorted(states, key=lambda s: s.address):
        if show_all:
            label = "BLOCKED" if state.blocked_for > 0 else "AUTH FAILED"
            if state.failures or state.blocked_for > 0:
                ctx.write(f" {state.address:<27}{PUBLIC:<27}{label:<15}{state.failures}")
        elif state.blocked_for > 0:
            ctx.write(f" {state.address:<27}{PUBLIC:<27}{int(state.blocked_for + 0.999)}")
    ctx.write(RULE)


def _activate(ctx: CommandContext) -> None:
    ssh = _ssh(ctx)
    address = str(ctx.ip("address"))
    if ssh is None or not ssh.unblock(address):
        ctx.write(f"Info: The IP address {address} is not blocked.")


_HELP = {"ssh": "SSH module", "server": "SSH server", "ip-block": "Client addresses blocked after login failures",
         "list": "Addresses blocked now", "all": "Addresses with login failures", "activate": "Unblock",
         "ip-address": "Specify the address"}

COMMANDS = [
    Command("display ssh server ip-block { list | all }", _display, ALL_VIEWS, level=MANAGE, help=_HELP,
            record=True),
    Command("activate ssh server ip-block ip-address <address>", _activate, frozenset({ViewKind.USER}),
            level=MANAGE, params={"address": (Ipv4("IPv4 address"), Ipv6("IPv6 address"))}, help=_HELP),
]

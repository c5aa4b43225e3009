"""keepalived runs VRRP for the virtual addresses; ikegate writes its configuration, starts it, watches it
and hears its state changes through a FIFO (``vrrp_notify_fifo``: no helper script, and events arrive in
order).

What the VRP configuration says, as keepalived words (see docs/ha.md):

* each ``vrrp vrid N virtual-ip ADDRESS active|standby`` of an interface becomes a ``vrrp_instance`` on
  the Linux interface that holds the VRP interface's own address, with priority 120 (active) or 100
  (standby) — the USG's own active/standby flag is a priority too;
* several groups move together (a ``vrrp_sync_group``), as the USG's VGMP makes them;
* after a split brain the winner's gratuitous ARPs must be the last the network saw (see ``render``);
* ``hrp preempt delay N`` is keepalived's ``preempt_delay N``; ``undo hrp preempt`` is ``nopreempt``
  (which keepalived allows only with initial state BACKUP, so every instance starts as BACKUP and the
  priorities elect the master).

Parsing the FIFO lines and rendering the file are pure functions, tested without keepalived.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from dataclasses import dataclass

from ikegate.policy.model import Config

#: The VRRP states a notice can move an instance to (keepalived also reports events such as
#: ``MASTER_RX_LOWER_PRI`` on the same FIFO; they change nothing).
STATES = frozenset({"MASTER", "BACKUP", "FAULT", "STOP"})
ACTIVE_PRIORITY = 120
STANDBY_PRIORITY = 100
ADVERT_INT = 1
GARP_REFRESH = 5
MISSING = ("keepalived is not installed (ikegate runs VRRP for hot standby through it): "
           "install the Debian package with 'apt-get install keepalived' (see README)")


class KeepalivedError(RuntimeError):
    """keepalived cannot run (missing, or the configuration names what this host does not have)."""


@dataclass(frozen=True)
class Instance:
    """One VRRP group as keepalived runs it."""

    name: str  # VI_<vrid>
    vrid: int
    vrp_interface: str
    linux_interface: str
    virtual_ip: ipaddress.IPv4Address
    prefix: int
    priority: int


def find_keepalived() -> str:
    path = shutil.which("keepalived") or shutil.which("keepalived", path="/usr/sbin:/sbin")
    if path is None:
        raise KeepalivedError(MISSING)
    return path


def linux_interfaces() -> dict[ipaddress.IPv4Address, str]:
    """The Linux interface of each IPv4 address of this network namespace (``ip -o -4 addr``)."""
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=False).stdout
    found: dict[ipaddress.IPv4Address, str] = {}
    for line in out.splitlines():
        words = line.split()
        if len(words) >= 4 and words[2] == "inet":
            found.setdefault(ipaddress.IPv4Interface(words[3]).ip, words[1].split("@")[0])
    return found


def instances(config: Config, linux: dict[ipaddress.IPv4Address, str]) -> list[Instance]:
    """The VRRP groups of the configuration, on the Linux interfaces that carry their VRP interfaces'
    addresses."""
    out: list[Instance] = []
    for itf in config.interfaces.values():
        for vrid, group in sorted(itf.vrrp.items()):
            own = next((i for i in itf.ipv4 if group.virtual_ip in i.network), None)
            if own is None:
                raise KeepalivedError(f"vrrp vrid {vrid}: {group.virtual_ip} is not in a subnet of {itf.name}")
            linux_name = linux.get(own.ip)
            if linux_name is None:
                raise KeepalivedError(f"no Linux interface holds {own.ip} ({itf.name})")
            out.append(Instance(f"VI_{vrid}", vrid, itf.name, linux_name, group.virtual_ip,
                                own.network.prefixlen, ACTIVE_PRIORITY if group.active else STANDBY_PRIORITY))
    return out


def render(config: Config, groups: list[Instance], fifo: str) -> str:
    """keepalived.conf for ``groups``; state changes go to ``fifo``."""
    hrp = config.hrp
    lines = [
        "# written by ikegate from its hrp/vrrp configuration: edits are overwritten",
        "global_defs {",
        f"    router_id ikegate_{config.sysname}",
        f"    vrrp_notify_fifo {fifo}",
        "    script_user root",
        "    enable_script_security",
        "}",
    ]
    if len(groups) > 1:
        lines += ["vrrp_sync_group HRP {", "    group {", *(f"        {g.name}" for g in groups), "    }", "}"]
    for g in groups:
        lines += [
            f"vrrp_instance {g.name} {{",
            "    state BACKUP",
            f"    interface {g.linux_interface}",
            f"    virtual_router_id {g.vrid}",
            f"    priority {g.priority}",
            f"    advert_int {ADVERT_INT}",
            # after two masters (split brain), the last gratuitous ARP may have been the loser's: the
            # loser advertises once more on stepping down, the winner answers a lower priority with
            # fresh gratuitous ARPs, and refreshes them anyway every few seconds
            "    higher_prio_send_advert true",
            "    garp_lower_prio_repeat 3",
            f"    garp_master_refresh {GARP_REFRESH}",
            f"    preempt_delay {hrp.preempt_delay}" if hrp.preempt else "    nopreempt",
            "    virtual_ipaddress {",
            f"        {g.virtual_ip}/{g.prefix} dev {g.linux_interface}",
            "    }",
            "}",
        ]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Notice:
    """One line from keepalived's notify FIFO: ``INSTANCE "VI_1" MASTER 120``."""

    kind: str  # INSTANCE or GROUP
    name: str
    state: str  # MASTER, BACKUP, FAULT, STOP
    priority: int | None


def parse_notice(line: str) -> Notice | None:
    words = line.strip().split()
    if len(words) < 3 or words[0] not in ("INSTANCE", "GROUP"):
        return None
    priority = int(words[3]) if len(words) > 3 and words[3].isdigit() else None
    return Notice(words[0], words[1].strip('"'), words[2], priority)


__all__ = ["ACTIVE_PRIORITY", "STANDBY_PRIORITY", "STATES", "Instance", "KeepalivedError", "Notice", "find_keepalived",
           "instances", "linux_interfaces", "parse_notice", "render"]

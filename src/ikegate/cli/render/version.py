"""``display version``: the USG's banner, with ikegate's own version in the product string.

It is the first command engineers type, and what netmiko's SSH autodetect sends (it looks for
``Huawei Versatile Routing Platform Software``). The first lines follow the VRP layout closely enough
that ntc-templates' ``huawei_vrp_display_version`` parses them (it stops at the first blank line); the
line after that blank says what this really is, so nobody mistakes it for Huawei software.
"""

from __future__ import annotations

import platform

import cryptography

from ikegate import __version__

#: The VRP release USG6000E-class firewalls report (5.170, V600 software). [MEM: not in the corpus]
VRP_VERSION = "5.170"


def _unit(n: int, word: str) -> str:
    """VRP's ``0 week, 1 day, 2 hours``: the plural only above one."""
    return f"{n} {word}{'s' if n > 1 else ''}"


def uptime_text(seconds: float) -> str:
    minutes = int(seconds) // 60
    weeks, minutes = divmod(minutes, 7 * 24 * 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    return ", ".join((_unit(weeks, "week"), _unit(days, "day"), _unit(hours, "hour"), _unit(minutes, "minute")))


def render(model: str, uptime: float) -> list[str]:
    return [
        "Huawei Versatile Routing Platform Software",
        f"VRP (R) software, Version {VRP_VERSION} ({model} ikegate {__version__})",
        f"HUAWEI {model} uptime is {uptime_text(uptime)}",
        "",
        f"ikegate {__version__}: an IKE/IPsec gateway with a USG-style CLI, not Huawei software",
        f"Python {platform.python_version()}, cryptography {cryptography.__version__}",
    ]

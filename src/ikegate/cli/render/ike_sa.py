"""``display ike sa``: the USG's 132-column table, rendered from the SA database.

Column starts (0-based) as on a real USG6000V1: Conn-ID 1, Peer 12, VPN 58, Flag(s) 75, Phase 97,
RemoteType 104, RemoteID 116; rows are ordered by connection ID, highest first. The header and every
row are padded with spaces to column 132, as the USG prints them (a longer cell pushes the line past it).

With no SA to show, the USG prints the timestamp line only: the one source that shows the device with
nothing negotiated (a USG6000V1 lab write-up, research notes a.2) says just that, and no source shows
an empty table; so :func:`render` returns no line at all then (``| json`` still answers ``[]``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from ikegate.cli.render.columns import place
from ikegate.sad import IkeSaEntry, IpsecSaEntry, SaEntry, entries_for_display, flags_text

RULE = "-" * 132
COLUMNS = (1, 12, 58, 75, 97, 104, 116)
LEGEND = [
    " Flag Description:",
    " RD--READY   ST--STAYALIVE   RL--REPLACED   FD--FADING   TO--TIMEOUT",
    " HRT--HEARTBEAT   LKG--LAST KNOWN GOOD SEQ NO.   BCK--BACKED UP",
    " M--ACTIVE   S--STANDBY   A--ALONE  NEG--NEGOTIATING",
]


def _row(cells: Iterable[str]) -> str:
    return place(COLUMNS, cells, 132)


def peer_text(entry: SaEntry) -> str:
    """``ip:port``; IPv6 addresses in brackets so the port stays readable."""
    addr = entry.peer_address
    if isinstance(addr, ipaddress.IPv6Address):
        return f"[{addr}]:{entry.peer_port}"
    return f"{addr}:{entry.peer_port}"


def phase_text(entry: SaEntry) -> str:
    return f"v{entry.version}:{1 if isinstance(entry, IkeSaEntry) else 2}"


def row(entry: IkeSaEntry | IpsecSaEntry) -> str:
    """One table row; a cell longer than its column pushes the rest right, as on the device."""
    cells = (str(entry.conn_id), peer_text(entry), entry.vpn, flags_text(entry.flags), phase_text(entry),
             entry.peer_id_type, entry.peer_id)
    if len(cells[1]) < 46 and len(cells[2]) < 17 and len(cells[3]) < 22 and len(cells[5]) < 12 \
            and len(cells[6]) <= 16:
        return (f" {cells[0]:<11}{cells[1]:<46}{cells[2]:<17}{cells[3]:<22}{cells[4]:<7}{cells[5]:<12}"
                f"{cells[6]:<16}")
    return _row(cells)


def render(entries: Iterable[SaEntry]) -> list[str]:
    """The body of ``display ike sa`` (the caller prints the timestamp line first); nothing without SAs."""
    rows = entries_for_display(entries)
    if not rows:
        return []
    lines = [
        "",
        "IKE SA information :",
        _row(("Conn-ID", "Peer", "VPN", "Flag(s)", "Phase", "RemoteType", "RemoteID")),
        RULE,
    ]
    lines += [row(e) for e in rows]
    lines += ["", f"  Number of IKE SA : {len(rows)}", RULE, ""]
    lines += LEGEND
    return lines

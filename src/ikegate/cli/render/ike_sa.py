"""``display ike sa``: the USG's 132-column table, rendered from the SA database.

Column starts (0-based) as on a real USG6000V1: Conn-ID 1, Peer 12, VPN 58, Flag(s) 75, Phase 97,
RemoteType 104, RemoteID 116; rows are ordered by connection ID, highest first. The header and every
row are padded with spaces to column 132, as the USG prints them (a longer cell pushes the line past it).

With no SA to show, the USG prints the timestamp line only: the one source that shows the device with
nothing negotiated (a USG6000V1 lab write-up, research notes a.2) says just that, and no source shows
an empty table; so :func:`render` returns no line at all then (``| json`` still answers ``[]``).

100,000 rows are a normal table here, so :func:`chunks` renders them a chunk at a time (see
:mod:`ikegate.cli.render.chunks`) and each row costs one ``str.format`` call: the peer text is memoised
per (address object, port) for the table being rendered (an IPsec SA shares its IKE SA's address
object; hashing an ``ipaddress`` object costs more than the memo saves, so the key is its ``id``), the
flags text per flag value (:func:`flags_text`), the phase text per (kind, version).
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable, Sequence

from ikegate.cli.render.chunks import CHUNK_ROWS, Chunks, flatten, in_chunks
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
#: The row when every cell fits its column (the common case): one call, no per-cell padding logic.
_FITTED = " {:<11}{:<46}{:<17}{:<22}{:<7}{:<12}{:<16}".format
_PHASE = {(IkeSaEntry, 1): "v1:1", (IkeSaEntry, 2): "v2:1", (IpsecSaEntry, 1): "v1:2", (IpsecSaEntry, 2): "v2:2"}


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
    return _rows([entry], {})[0]


def _rows(entries: Sequence[SaEntry], peers: dict[tuple[int, int], str]) -> list[str]:
    """The rows of ``entries``; ``peers`` memoises the peer text across the chunks of one table."""
    out: list[str] = []
    append = out.append
    for e in entries:
        key = (id(e.peer_address), e.peer_port)  # the rows keep their addresses alive: ids are stable
        peer = peers.get(key)
        if peer is None:
            peer = peers[key] = peer_text(e)
        flags = flags_text(e.flags)
        vpn, id_type, peer_id = e.vpn, e.peer_id_type, e.peer_id
        phase = _PHASE.get((type(e), e.version)) or phase_text(e)
        if len(peer) < 46 and len(vpn) < 17 and len(flags) < 22 and len(id_type) < 12 and len(peer_id) <= 16:
            append(_FITTED(e.conn_id, peer, vpn, flags, phase, id_type, peer_id))
        else:
            append(_row((str(e.conn_id), peer, vpn, flags, phase, id_type, peer_id)))
    return out


def rendered(entries: Sequence[SaEntry]) -> tuple[list[int], list[str]]:
    """The conn-ids and table rows of ``entries`` (already in display order), all at once: what a placement
    worker sends its supervisor for ``display ike sa`` (text is far cheaper to carry between processes than
    SA rows; the conn-ids are for the merge, :func:`ikegate.gateway.device.merge_rendered`)."""
    return [e.conn_id for e in entries], _rows(entries, {})


def _header() -> list[str]:
    return ["", "IKE SA information :", _row(("Conn-ID", "Peer", "VPN", "Flag(s)", "Phase", "RemoteType", "RemoteID")),
            RULE]


def _footer(count: int) -> list[str]:
    return ["", f"  Number of IKE SA : {count}", RULE, "", *LEGEND]


def _framed(count: int, body: Iterable[list[str]]) -> Chunks:
    """Header, ``body``'s chunks and the closing lines of a table of ``count`` rows; nothing without rows."""
    if not count:
        return
    yield _header()
    yield from body
    yield _footer(count)


def streamed_chunks(rows: Iterable[tuple[int, str]], size: int = CHUNK_ROWS) -> Chunks:
    """:func:`rendered_chunks` for rendered rows that arrive as (conn-id, line) in display order while the
    table is printed (a supervisor's workers send theirs a page at a time, as the chunks are taken): the
    count is that of the rows printed; nothing without rows."""
    it = iter(rows)
    chunk = list(itertools.islice(it, size))
    if not chunk:
        return
    yield _header()
    count = 0
    while chunk:
        count += len(chunk)
        yield [line for _, line in chunk]
        chunk = list(itertools.islice(it, size))
    yield _footer(count)


def chunks(entries: Iterable[SaEntry], size: int = CHUNK_ROWS, *, ordered: bool = False) -> Chunks:
    """The body of ``display ike sa`` (the caller prints the timestamp line first), ``size`` rows per
    chunk after the header; nothing without SAs. ``ordered``: ``entries`` is a list already in display
    order (what :meth:`Device.select` returns), not sorted again (200,000 rows: tens of milliseconds)."""
    rows = entries if ordered and isinstance(entries, list) else entries_for_display(entries)
    peers: dict[tuple[int, int], str] = {}
    return _framed(len(rows), in_chunks(rows, lambda part: _rows(part, peers), size))


def rendered_chunks(lines: Sequence[str], size: int = CHUNK_ROWS) -> Chunks:
    """:func:`chunks` for rows already rendered (:func:`rows`, merged in display order): the same lines."""
    return _framed(len(lines), (list(lines[start:start + size]) for start in range(0, len(lines), size)))


def render(entries: Iterable[SaEntry]) -> list[str]:
    """:func:`chunks`, all at once."""
    return flatten(chunks(entries))

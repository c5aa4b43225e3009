"""``display ipsec sa``: the USG layout, grouped by interface and policy, from the SA database.

Labels and their alignment follow a real USG6000V1 transcript (research notes a.4); the ``Connection ID``
is the phase-2 conn-id that ``display ike sa`` and ``reset ike sa conn-id`` use. Both forms render a
chunk at a time (:mod:`ikegate.cli.render.chunks`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from ikegate.cli.render.chunks import CHUNK_ROWS, Chunks, flatten
from ikegate.sad import IpsecSaEntry, Selector


def duration_text(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 86400}d {s % 86400 // 3600}h {s % 3600 // 60}m {s % 60}s"


def algorithm_words(encryption: str, integrity: str) -> str:
    """``ESP-ENCRYPT-AES-256 ESP-AUTH-SHA2-256-128`` from the transform names the engine negotiated."""
    enc = encryption.replace("AES-CBC-", "AES-").replace("AES-GCM-16-", "AES-GCM-")
    words = [f"ESP-ENCRYPT-{enc}"]
    if integrity:
        words.append("ESP-AUTH-" + integrity.replace("HMAC-", ""))
    return " ".join(words)


def flow_text(sel: Selector) -> str:
    """``192.168.17.0/255.255.255.0 0/0-65535`` (network/mask protocol/ports)."""
    net = sel.network
    if net is None:
        addr = f"{sel.start}-{sel.end}"
    elif isinstance(net, ipaddress.IPv4Network):
        addr = f"{net.network_address}/{net.netmask}"
    else:
        addr = str(net)
    return f"{addr} {sel.protocol}/{sel.port_low}-{sel.port_high}"


def _remaining(entry: IpsecSaEntry, now: float, used_bytes: int) -> str:
    kb = entry.lifetime_hard_kb or 0
    left_kb = max(0, kb - used_bytes // 1024)
    left_s = (entry.lifetime_hard or 0) - (now - entry.created)
    return f"{left_kb}/{int(max(0, left_s))}"


def _sorted(entries: Iterable[IpsecSaEntry]) -> list[IpsecSaEntry]:
    return sorted(entries, key=lambda e: (e.interface, e.policy_name or "", e.policy_seq or 0, e.conn_id))


def chunks(entries: Iterable[IpsecSaEntry], now: float, size: int = CHUNK_ROWS // 20) -> Chunks:
    """``display ipsec sa``, ``size`` SAs (about 40 lines each) per chunk."""
    rows = _sorted(entries)
    yield ["", "ipsec sa information:"]
    interface: str | None = None  # the interface of the last SA printed, across chunks
    for start in range(0, len(rows), size):
        lines: list[str] = []
        for e in rows[start:start + size]:
            if e.interface != interface:
                interface = e.interface
                bar = "=" * len(f"Interface: {e.interface}")  # as long as the line it frames (USG transcript)
                lines += ["", bar, f"Interface: {e.interface}", bar]
            lines += _sa_lines(e, now)
        yield lines


def _sa_lines(e: IpsecSaEntry, now: float) -> list[str]:
    udp = "Y" if e.udp_encap else "N"
    proposal = algorithm_words(e.encryption, e.integrity)
    lines = [
        "",
        "  -----------------------------",
        f'  IPSec policy name: "{e.policy_name or ""}"',
        f"  Sequence number  : {e.policy_seq if e.policy_seq is not None else ''}",
        f"  Acl group        : {e.acl_number if e.acl_number is not None else ''}",
        f"  Acl rule         : {e.acl_rule if e.acl_rule is not None else ''}",
        "  Mode             : ISAKMP",
        "  -----------------------------",
        f"    Connection ID     : {e.conn_id}",
        f"    Encapsulation mode: {e.encapsulation_mode.capitalize()}",
        f"    Holding time      : {duration_text(now - e.created)}",
        f"    Tunnel local      : {e.local_address}:{e.local_port}",
        f"    Tunnel remote     : {e.peer_address}:{e.peer_port}",
    ]
    for sel in e.local_selectors:
        lines.append(f"    Flow source       : {flow_text(sel)}")
    for sel in e.remote_selectors:
        lines.append(f"    Flow destination  : {flow_text(sel)}")
    lines += [
        "",
        "    [Outbound ESP SAs] ",
        f"      SPI: {e.spi_out} (0x{e.spi_out:x})",
        f"      Proposal: {proposal}",
        f"      SA remaining key duration (kilobytes/sec): {_remaining(e, now, e.bytes_out)}",
        f"      Max sent sequence-number: {e.seq_out}",
        f"      UDP encapsulation used for NAT traversal: {udp}",
        f"      SA encrypted packets (number/bytes): {e.packets_out}/{e.bytes_out}",
        "",
        "    [Inbound ESP SAs] ",
        f"      SPI: {e.spi_in} (0x{e.spi_in:x})",
        f"      Proposal: {proposal}",
        f"      SA remaining key duration (kilobytes/sec): {_remaining(e, now, e.bytes_in)}",
        f"      Max received sequence-number: {e.seq_in}",
        f"      UDP encapsulation used for NAT traversal: {udp}",
        f"      SA decrypted packets (number/bytes): {e.packets_in}/{e.bytes_in}",
        f"      Anti-replay : {'Enable' if e.replay_window else 'Disable'}",
        f"      Anti-replay window size: {e.replay_window}",
    ]
    return lines


def render(entries: Iterable[IpsecSaEntry], now: float) -> list[str]:
    """:func:`chunks`, all at once."""
    return flatten(chunks(entries, now))


def brief_chunks(entries: Iterable[IpsecSaEntry], size: int = CHUNK_ROWS) -> Chunks:
    """``display ipsec sa brief``: two lines per SA (outbound, inbound), ``size`` SAs per chunk."""
    rows = sorted(entries, key=lambda e: e.conn_id)
    yield [
        "",
        f"Number of IPSec SA : {len(rows) * 2}",
        "-" * 100,
        f"{'Src address':<40}{'Dst address':<40}{'SPI':<12}Protocol  Algorithm",
        "-" * 100,
    ]
    algorithms: dict[tuple[str, str], str] = {}
    for start in range(0, len(rows), size):
        out: list[str] = []
        for e in rows[start:start + size]:
            alg = algorithms.get((e.encryption, e.integrity))
            if alg is None:
                alg = algorithms[(e.encryption, e.integrity)] = algorithm_words(e.encryption, e.integrity).replace(
                    "ESP-ENCRYPT-", "E:").replace("ESP-AUTH-", "A:")
            local, peer = str(e.local_address), str(e.peer_address)
            out.append(f"{local:<40}{peer:<40}{e.spi_out:<12}{'ESP':<10}{alg}")
            out.append(f"{peer:<40}{local:<40}{e.spi_in:<12}{'ESP':<10}{alg}")
        yield out


def render_brief(entries: Iterable[IpsecSaEntry]) -> list[str]:
    """:func:`brief_chunks`, all at once."""
    return flatten(brief_chunks(entries))

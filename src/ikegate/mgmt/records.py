"""SA database entries as plain records: the JSON form of ``display`` output and of the control API.

Both the renderers and the JSON answers read the same entries, so the two never disagree.
"""

from __future__ import annotations

from typing import Any

from ikegate.sad import IkeSaEntry, IpsecSaEntry, SaEntry, flags_text


def entry_record(entry: SaEntry, now: float) -> dict[str, Any]:
    common: dict[str, Any] = {
        "conn_id": entry.conn_id,
        "phase": entry.phase,
        "version": entry.version,
        "role": entry.role.value,
        "flags": flags_text(entry.flags),
        "local": f"{entry.local_address}:{entry.local_port}",
        "peer": f"{entry.peer_address}:{entry.peer_port}",
        "peer_address": str(entry.peer_address),
        "peer_port": entry.peer_port,
        "remote_type": entry.peer_id_type,
        "remote_id": entry.peer_id,
        "vpn": entry.vpn,
        "policy": entry.policy_name,
        "seq": entry.policy_seq,
        "template": entry.template_name,
        "slot": entry.placement.slot,
        "cpu": entry.placement.cpu,
        "age": max(0.0, now - entry.created),
        "lifetime": entry.lifetime_hard,
    }
    if isinstance(entry, IkeSaEntry):
        common.update(spi_i=entry.spi_i.hex(), spi_r=entry.spi_r.hex(), encryption=entry.encryption,
                      integrity=entry.integrity, prf=entry.prf, dh=entry.dh, children=list(entry.child_ids),
                      auth_method=entry.auth_method, peer_certificate=entry.peer_certificate)
    elif isinstance(entry, IpsecSaEntry):
        common.update(parent=entry.parent, spi_in=entry.spi_in, spi_out=entry.spi_out, encryption=entry.encryption,
                      integrity=entry.integrity, pfs=entry.pfs, mode=entry.encapsulation_mode,
                      udp_encap=entry.udp_encap,
                      local_selectors=[_sel(s) for s in entry.local_selectors],
                      remote_selectors=[_sel(s) for s in entry.remote_selectors],
                      packets_in=entry.packets_in, bytes_in=entry.bytes_in, packets_out=entry.packets_out,
                      bytes_out=entry.bytes_out)
    return common


def _sel(sel: object) -> str:
    start = getattr(sel, "start", "")
    end = getattr(sel, "end", "")
    proto = getattr(sel, "protocol", 0)
    low = getattr(sel, "port_low", 0)
    high = getattr(sel, "port_high", 65535)
    return f"{start}-{end} {proto}/{low}-{high}"

"""The other ``display ike …`` outputs: verbose SA, proposals, peers, offline history, statistics.

Where a real USG layout is known (proposal, peer brief, offline-info) it is followed; where none was
found (verbose, statistics) the layout keeps the USG's ``Label : value`` style and says everything the
SA database knows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from ikegate.cli.render.columns import place
from ikegate.cli.render.ipsec_sa import duration_text, flow_text
from ikegate.gateway.device import Statistics
from ikegate.policy.model import DEFAULT_IKE_PROPOSAL, AuthenticationMethod, Config, IkePeer, IkeProposal
from ikegate.sad import IkeSaEntry, IpsecSaEntry, OfflineRecord, SaEntry, flags_text

RULE = "-" * 76


def _field(label: str, value: object, width: int = 29) -> str:
    return f"  {label:<{width}}: {value}"


def verbose(entries: Iterable[SaEntry], children: dict[int, list[IpsecSaEntry]], now: float) -> list[str]:
    lines: list[str] = []
    for e in entries:
        lines += ["", RULE]
        if isinstance(e, IkeSaEntry):
            lines += [
                _field("IKE SA connection-id", e.conn_id),
                _field("Phase", f"v{e.version}:1"),
            ]
        else:
            lines += [
                _field("IPSec SA connection-id", e.conn_id),
                _field("Phase", f"v{e.version}:2"),
                _field("Parent IKE SA connection-id", e.parent if e.parent is not None else "none (orphan)"),
            ]
        lines += [
            _field("Role", "initiator" if e.initiator else "responder"),
            _field("Flag(s)", flags_text(e.flags)),
            _field("Local address", f"{e.local_address}:{e.local_port}"),
            _field("Remote address", f"{e.peer_address}:{e.peer_port}"),
            _field("Remote ID type", e.peer_id_type),
            _field("Remote ID", e.peer_id),
            _field("VPN", e.vpn or "public"),
            _field("Interface", e.interface),
            _field("IPSec policy", f"{e.policy_name or ''} {e.policy_seq if e.policy_seq is not None else ''}".strip()),
            _field("Policy template", e.template_name or ""),
            _field("Slot / CPU", f"{e.placement.slot} / {e.placement.cpu}"),
            _field("Holding time", duration_text(now - e.created)),
        ]
        life = e.lifetime_hard
        if life is not None:
            lines.append(_field("Life duration(sec)", life))
            lines.append(_field("Remaining key duration(sec)", int(max(0, life - (now - e.created)))))
        if e.lifetime_soft is not None:
            lines.append(_field("Soft lifetime(sec)", e.lifetime_soft))
        if isinstance(e, IkeSaEntry):
            lines += [
                _field("Authentication method", e.auth_method),
                *([_field("Peer certificate", e.peer_certificate)] if e.peer_certificate else []),
                _field("Encryption algorithm", e.encryption),
                _field("Integrity algorithm", e.integrity or "none (AEAD)"),
                _field("PRF algorithm", e.prf),
                _field("Diffie-Hellman group", e.dh),
                _field("Exchange mode", e.exchange_mode or ("main" if e.version == 1 else "n/a")),
                _field("Initiator SPI", e.spi_i.hex()),
                _field("Responder SPI", e.spi_r.hex()),
                _field("DPD", e.dpd_state or "idle"),
                _field("Messages in/out", f"{e.messages_in}/{e.messages_out}"),
                _field("IPSec SA connection-ids", " ".join(str(c.conn_id) for c in children.get(e.conn_id, []))
                       or "none"),
            ]
        else:
            lines += [
                _field("Encapsulation mode", e.encapsulation_mode),
                _field("Encryption algorithm", e.encryption),
                _field("Integrity algorithm", e.integrity or "none (AEAD)"),
                _field("PFS", e.pfs or "none"),
                _field("Inbound SPI", f"{e.spi_in} (0x{e.spi_in:x})"),
                _field("Outbound SPI", f"{e.spi_out} (0x{e.spi_out:x})"),
                _field("UDP encapsulation", "Y" if e.udp_encap else "N"),
                *[_field("Flow source", flow_text(s)) for s in e.local_selectors],
                *[_field("Flow destination", flow_text(s)) for s in e.remote_selectors],
                _field("Packets in/out", f"{e.packets_in}/{e.packets_out}"),
                _field("Bytes in/out", f"{e.bytes_in}/{e.bytes_out}"),
            ]
    if lines:
        lines.append(RULE)
    return lines


_ENC_TEXT = {"aes-128": "AES-128", "aes-192": "AES-192", "aes-256": "AES-256", "aes-gcm-128": "AES-GCM-128",
             "aes-gcm-256": "AES-GCM-256", "3des": "3DES"}
_DH_TEXT = {"group2": "MODP-1024", "group5": "MODP-1536", "group14": "MODP-2048", "group15": "MODP-3072",
            "group16": "MODP-4096", "group19": "ECP-256", "group20": "ECP-384", "group21": "ECP-521",
            "group31": "Curve25519"}


_AUTH_TEXT = {AuthenticationMethod.PRE_SHARE: "PRE_SHARED", AuthenticationMethod.RSA_SIGNATURE: "RSA_SIG",
              AuthenticationMethod.ECDSA_SIGNATURE: "ECDSA_SIG"}


def _proposal(prop: IkeProposal, name: str) -> list[str]:
    def words(values: list[str], table: dict[str, str] | None = None) -> str:
        return " ".join((table or {}).get(v, v.upper()) for v in values)

    return [
        RULE,
        f" IKE Proposal: {name}",
        f"   Authentication Method      : {_AUTH_TEXT[prop.authentication_method]}",
        f"   Authentication Algorithm   : {words(prop.authentication)}",
        f"   Encryption Algorithm       : {words(prop.encryption, _ENC_TEXT)}",
        f"   Diffie-Hellman Group       : {words(prop.dh, _DH_TEXT)}",
        f"   SA Duration(Seconds)       : {prop.duration}",
        f"   Integrity Algorithm        : {words(prop.integrity)}",
        f"   Prf Algorithm              : {words(prop.prf)}",
    ]


def proposals(config: Config, number: int | None) -> list[str]:
    chosen = sorted(config.ike_proposals.values(), key=lambda p: p.number)
    if number is not None:
        chosen = [p for p in chosen if p.number == number]
    items = [(_proposal(p, str(p.number))) for p in chosen]
    if number is None:
        items.append(_proposal(DEFAULT_IKE_PROPOSAL, "Default"))
    lines = ["", f"Number of IKE Proposals: {len(items)}", ""]
    for item in items:
        lines += item
    lines.append(RULE)
    return lines


def _version_text(peer: IkePeer) -> str:
    return "".join(f"v{v}" for v in sorted(peer.versions))


PEER_COLUMNS = (0, 17, 26, 42, 53, 63)


def peers_brief(config: Config) -> list[str]:
    peers = sorted(config.ike_peers.values(), key=lambda p: p.name)
    # USG transcript: dashes above the header only; the columns start at 0/17/26/42/53/63.
    lines = ["", f"Current ike peer number: {len(peers)}", RULE,
             place(PEER_COLUMNS, ("Peer name", "Version", "Exchange-mode", "Proposal", "Id-type", "RemoteAddr"))]
    for p in peers:
        props = ",".join(str(n) for n in p.ike_proposals) or "Default"
        remote = " ".join(str(a) for a in p.remote_addresses)
        lines.append(place(PEER_COLUMNS, (p.name, _version_text(p), p.exchange_mode.value, props,
                                          p.local_id_type.value.upper(), remote)).rstrip())
    return lines


def peer_detail(config: Config, peer: IkePeer) -> list[str]:
    dependent = config.ike_dependent_for(peer)
    return [
        "",
        RULE,
        _field("Peer name", peer.name),
        _field("IKE version", _version_text(peer)),
        _field("Exchange mode", peer.exchange_mode.value),
        _field("Pre-shared key", "%^%#********%^%#" if peer.pre_shared_key else "not configured"),
        _field("Proposal", ",".join(str(n) for n in peer.ike_proposals) or "Default"),
        _field("Remote address", " ".join(str(a) for a in peer.remote_addresses) or "any (template)"),
        _field("Local ID type", peer.local_id_type.value),
        _field("Local ID", peer.local_id or "local address"),
        _field("Remote ID type", peer.remote_id_type.value if peer.remote_id_type else "any"),
        _field("Remote ID", peer.remote_id or "any"),
        _field("DPD", f"{peer.dpd.type.value}, idle {peer.dpd.idle_time}s, retransmit "
                      f"{peer.dpd.retransmit_interval}s, retry {peer.dpd.retry_limit}"),
        _field("NAT traversal", "enable" if peer.nat_traversal else "disable"),
        _field("Phase1-phase2 SA dependent", "enable" if dependent else "disable"),
        *_certificate_fields(peer),
        RULE,
    ]


def _certificate_fields(peer: IkePeer) -> list[str]:
    """Only for a peer with a local certificate (the PSK layout is the USG's, unchanged)."""
    if peer.certificate_local is None:
        return []
    return [_field("Local certificate", peer.certificate_local),
            _field("Send certificate chain", "enable" if peer.send_chain else "disable")]


#: ``display ike offline-info`` as in the USG command reference's example: the header's columns start at
#: 2/21/29/50/62, the rows' at 2/21/30/50/62 (the example's rows put the reason one column further right
#: than its title; kept as printed); 100 dashes above the header, 101 below it and after the rows.
OFFLINE_HEADER = (2, 21, 29, 50, 62)
OFFLINE_ROW = (2, 21, 30, 50, 62)


def offline(records: list[OfflineRecord], now: float, wall: dt.datetime) -> list[str]:
    lines = ["", f"  Current info Num :{len(records)} ", "  Ike offline information:", "-" * 100,
             place(OFFLINE_HEADER, ("peer", "port", "offline-reason", "version", "offline-time")), "-" * 101]
    for r in records:
        when = wall - dt.timedelta(seconds=max(0.0, now - r.time))
        lines.append(place(OFFLINE_ROW, (str(r.peer_address), str(r.peer_port), r.reason, f"v{r.version}",
                                         f"{when:%Y/%m/%d  %H:%M:%S}")))
    lines.append("-" * 101)
    return lines


def statistics_counts(stats: Statistics) -> dict[str, int]:
    """SA counts under the names ``display ike statistics | json`` uses: ``ike_v1``, ``ipsec_v2``, …"""
    return {f"{kind}_v{v}": by_version.get(v, 0) for kind, by_version in (("ike", stats.ike_sas),
                                                                       ("ipsec", stats.ipsec_sas)) for v in (1, 2)}


def statistics(stats: Statistics) -> list[str]:
    counts = statistics_counts(stats)
    failed = sum(stats.negotiations_failed.values())
    lines = [
        "",
        "  IKE statistics",
        "  " + RULE,
        _field("IKE SAs v1 / v2", f"{counts['ike_v1']} / {counts['ike_v2']}"),
        _field("IPSec SAs v1 / v2", f"{counts['ipsec_v1']} / {counts['ipsec_v2']}"),
        _field("Negotiations started", stats.negotiations_started),
        _field("Negotiations succeeded", stats.negotiations_succeeded),
        _field("Negotiations failed", failed),
    ]
    for reason, count in sorted(stats.negotiations_failed.items()):
        lines.append(_field("  " + reason, count))
    lines += [
        _field("Deletes sent", stats.deletes_sent),
        _field("Deletes received", stats.deletes_received),
        _field("Resets", stats.resets),
        _field("Cookies sent", stats.cookies_sent),
        _field("Datagrams dropped", stats.dropped),
        _field("Malformed first messages", stats.openings_malformed),
        _field("First messages refused", stats.openings_refused),
        _field("Half-open SAs expired", stats.half_open_expired),
        _field("Authentication failures", stats.auth_failures),
        _field("Peers blocked", stats.sources_blocked),
    ]
    if stats.workers > 1:  # a single process has nothing to steer: its display stays as it was
        lines += [
            _field("Workers", stats.workers),
            _field("Datagrams misrouted", stats.misrouted),
            _field("LAN packets handed over", stats.handed_over),
            _field("LAN packets mis-steered", stats.lan_missteered),
            _field("TUN queues steered", stats.tun_steered),
        ]
    return lines

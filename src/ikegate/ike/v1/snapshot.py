"""Export and import of an established IKEv1 ISAKMP SA (issue 17's hot standby).

On top of the shared part (``ike/core/snapshot.py``): the cookies, the negotiated phase-1 transform, the
SKEYID family and cipher key, the phase-1 IV chain's last block (every Quick Mode and Informational IV
derives from it, RFC 2409 App. B), NAT-T and DPD (the R-U-THERE sequence number) state, the recent
Informational message IDs (duplicates stay duplicates across a failover) and the last phase-1 messages
(a retransmitted MM5 still gets its MM6). IKEv1 message IDs are random per exchange, so unlike IKEv2
there is no counter to stream. A rekey in flight (``_next``) and the replaced ISAKMP SA still heard for
a grace time (``_prev``) are not carried; a Quick Mode in flight is lost and started again.
The IKEv1-only options (``V1Options``) are configuration and are set again by the importing gateway.
"""

from __future__ import annotations

from collections import deque

from ikegate.ike.core.snapshot import (
    Record,
    Resolver,
    SnapshotError,
    check,
    export_common,
    ike_config_of,
    restore_children,
    restore_common,
)
from ikegate.ike.v1 import crypto as c1
from ikegate.ike.v1.options import ExchangeMode, V1Options
from ikegate.ike.v1.phase1 import _Phase1
from ikegate.ike.v1.proposals import Phase1Choice
from ikegate.ike.v1.sa import IsakmpSa
from ikegate.ike.v1.states import State
from ikegate.ike.v1.wire import Attribute, Transform

_KEYS = ("skeyid", "skeyid_d", "skeyid_a", "skeyid_e", "enc_key")


def export_ike(sa: IsakmpSa, now: float) -> Record:
    """The state of an established ISAKMP SA; raises :class:`SnapshotError` for one that is not."""
    p = sa._p1
    if not sa.established or p.keys is None or p.chain is None or p.choice is None:
        raise SnapshotError("only established ISAKMP SAs are exported")
    rec = export_common(sa, now)
    ch = p.choice
    rec["v1"] = {
        "cky": [p.cky_i, p.cky_r], "we_init": p.we_init, "mode": p.mode.value,
        "choice": [ch.proposal, ch.transform.number, ch.transform.transform_id,
                   [[a.type, a.value] for a in ch.transform.attributes],
                   ch.encryption, ch.key_bits, ch.hash, ch.group, ch.life_seconds],
        "keys": [getattr(p.keys, k) for k in _KEYS], "iv": p.chain.iv,
        "last": [p.last_in, p.last_out], "natt": p.natt, "peer_dpd": p.peer_dpd, "vendors": list(p.peer_vendors),
        "nat": [p.nat_local, p.nat_remote], "ic": p.initial_contact, "life": p.life, "frag": p.peer_frag,
        "dpd_seq": sa._dpd_seq, "info_mids": list(sa._info_mids),
    }
    return rec


def mids(sa: IsakmpSa) -> list[int]:
    """IKEv1 has no message-ID counter; the DPD sequence number is what moves with every probe."""
    return [sa._dpd_seq]


def set_mids(sa: IsakmpSa, mids: list[int]) -> None:
    if mids:
        sa._dpd_seq = max(sa._dpd_seq, int(mids[0]))


def import_ike(rec: Record, now: float, resolver: Resolver, options: V1Options | None = None) -> IsakmpSa:
    """A new engine, established, carrying on from ``rec``."""
    check(rec, 1)
    v1 = rec["v1"]
    config = ike_config_of(rec, resolver)
    local = (str(rec["local"][0]), int(rec["local"][1]))
    peer = (str(rec["peer"][0]), int(rec["peer"][1]))
    sa = IsakmpSa(config, v1=options, initiator=bool(rec["initiator"]), local=local, peer=peer, now=now,
                  policy=resolver.policy, rng=resolver.rng, spi_allocator=resolver.spi_allocator)
    proposal, t_num, t_id, attrs, encryption, key_bits, hash_id, group, life_s = v1["choice"]
    transform = Transform(int(t_num), int(t_id), [Attribute(int(t), v) for t, v in attrs])
    choice = Phase1Choice(int(proposal), transform, int(encryption), key_bits, int(hash_id), int(group), life_s)
    suite = c1.Suite.from_attributes(choice.encryption, choice.key_bits, choice.hash)
    keys = c1.Phase1Keys(*(bytes(k) for k in v1["keys"]))
    p = _Phase1(bool(v1["we_init"]), bytes(v1["cky"][0]), bytes(v1["cky"][1]), state=State.ESTABLISHED,
                mode=ExchangeMode(v1["mode"]), config=config)
    p.choice, p.suite, p.keys = choice, suite, keys
    p.chain = c1.IvChain(suite.encr, keys.enc_key, bytes(v1["iv"]))
    p.last_in, p.last_out = bytes(v1["last"][0]), bytes(v1["last"][1])
    p.natt, p.peer_dpd, p.peer_vendors = v1["natt"], bool(v1["peer_dpd"]), [str(v) for v in v1["vendors"]]
    p.nat_local, p.nat_remote = (bool(x) for x in v1["nat"])
    p.initial_contact, p.life = bool(v1["ic"]), float(v1["life"])
    p.peer_frag = bool(v1.get("frag"))
    sa._p1 = p
    sa._deadline = None
    sa._dpd_seq = int(v1["dpd_seq"])
    if v1["info_mids"]:
        sa._info_mids = deque((int(m) for m in v1["info_mids"]), maxlen=64)
    restore_common(sa, rec, now)
    p.peer_id, p.established_at = sa.peer_id, sa.established_at
    restore_children(sa, rec, now, resolver)
    return sa


__all__ = ["export_ike", "import_ike", "mids", "set_mids"]

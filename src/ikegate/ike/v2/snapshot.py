"""Export and import of an established IKEv2 IKE SA (issue 17's hot standby).

On top of the shared part (``ike/core/snapshot.py``): the current generation's SPIs, negotiated suite,
the seven keys, both message-ID counters and the answer cache, whether RFC 7383 fragmentation was
negotiated (so that a request the peer retransmits
across a failover still gets the very answer it missed), and the NAT-T state. Retiring generations (an
IKE SA rekey whose old SA's Delete has not yet been answered) are not carried: the old SA is as good as
deleted, and the peer's retransmitted Delete for it goes unanswered.

An imported engine resumes with an empty request window: an exchange of ours in flight at the moment of
the failover is lost (its message ID was already counted on the active node, which synchronises the
counter after each message); DPD, rekeys and Deletes start from the synchronised counters.
"""

from __future__ import annotations

from ikegate.ike.core.negotiated import Chosen
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
from ikegate.ike.crypto import IkeKeys, integ_alg, prf_alg
from ikegate.ike.v2 import fragments
from ikegate.ike.v2.exchange import _Gen
from ikegate.ike.v2.protect import SkContext
from ikegate.ike.v2.sa import IkeSa, State

_KEYS = ("sk_d", "sk_ai", "sk_ar", "sk_ei", "sk_er", "sk_pi", "sk_pr")


def export_ike(sa: IkeSa, now: float) -> Record:
    """The state of an established IKE SA; raises :class:`SnapshotError` for one that is not."""
    gen = sa._gen
    if gen is None or sa.state is not State.ESTABLISHED:
        raise SnapshotError("only established IKE SAs are exported")
    rec = export_common(sa, now)
    c = gen.chosen
    rec["v2"] = {
        "spi_i": gen.spi_i, "spi_r": gen.spi_r, "we_init": gen.we_init,
        "chosen": [c.number, c.spi, c.encr, c.key_bits, c.prf, c.integ, c.dh, c.esn],
        "keys": [getattr(gen.keys, k) for k in _KEYS],
        "mids": mids(sa),
        "cache": [gen.cached_mid, gen.cached, gen.cached_for],
        "nat": [sa.nat_local, sa.nat_remote, sa.nat_fake], "keepalive": now - sa._last_sent,
        "frag": sa.fragmentation,
    }
    return rec


def mids(sa: IkeSa) -> list[int]:
    """(our next request's ID, the peer's next request's ID) of the current generation: what the sync
    stream sends after every exchange."""
    gen = sa._gen
    return [0, 0] if gen is None else [gen.next_mid, gen.peer_mid]


def set_mids(sa: IkeSa, next_mid: int, peer_mid: int) -> None:
    """Move the counters forward (never back: a reordered old update is ignored)."""
    gen = sa._gen
    if gen is not None:
        gen.next_mid = max(gen.next_mid, next_mid)
        gen.peer_mid = max(gen.peer_mid, peer_mid)


def import_ike(rec: Record, now: float, resolver: Resolver) -> IkeSa:
    """A new engine, established, carrying on from ``rec``."""
    check(rec, 2)
    v2 = rec["v2"]
    config = ike_config_of(rec, resolver)
    local = (str(rec["local"][0]), int(rec["local"][1]))
    peer = (str(rec["peer"][0]), int(rec["peer"][1]))
    initiator = bool(rec["initiator"])
    sa = IkeSa(config, initiator=initiator, local=local, peer=peer, now=now,
               policy=resolver.policy, rng=resolver.rng, spi_allocator=resolver.spi_allocator)
    number, spi, encr, key_bits, prf, integ, dh, esn = v2["chosen"]
    chosen = Chosen(int(number), bytes(spi), int(encr), key_bits, prf, integ, dh, int(esn))
    keys = IkeKeys(*(bytes(k) for k in v2["keys"]))
    enc = chosen.encr_alg()
    integ_a = integ_alg(chosen.integ) if chosen.integ is not None else None
    assert chosen.prf is not None
    ctx_i = SkContext.build(enc, integ_a, keys.sk_ei, keys.sk_ai)
    ctx_r = SkContext.build(enc, integ_a, keys.sk_er, keys.sk_ar)
    we_init = bool(v2["we_init"])
    if v2.get("frag"):
        # RFC 7383 was negotiated: with this node's settings for the peer (the configuration's, or the
        # responder policy's for that address).
        sa._frag = config.fragmentation if initiator else (
            resolver.policy.fragmentation(peer) if resolver.policy is not None else None)
    gen = _Gen(bytes(v2["spi_i"]), bytes(v2["spi_r"]), we_init, prf_alg(chosen.prf), keys,
               out=ctx_i if we_init else ctx_r, inp=ctx_r if we_init else ctx_i, chosen=chosen,
               frags=fragments.Reassembler(sa._frag.limits) if sa._frag is not None else None)
    gen.next_mid, gen.peer_mid = (int(m) for m in v2["mids"])
    gen.cached_mid, gen.cached, gen.cached_for = int(v2["cache"][0]), bytes(v2["cache"][1]), bytes(v2["cache"][2])
    sa._gen = gen
    sa._spi_i, sa._spi_r = gen.spi_i, gen.spi_r
    sa.nat_local, sa.nat_remote, sa.nat_fake = (bool(x) for x in v2["nat"])
    sa._last_sent = now - float(v2["keepalive"])
    sa.state = State.ESTABLISHED
    restore_common(sa, rec, now)
    restore_children(sa, rec, now, resolver)
    return sa


__all__ = ["export_ike", "import_ike", "mids", "set_mids"]

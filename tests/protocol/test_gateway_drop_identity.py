"""INITIAL_CONTACT heard by another placement worker (``Gateway.drop_identity``), whole gateways in memory: a
dial-up peer's SAs may sit on several workers, and the one that hears INITIAL_CONTACT tells the others,
which must drop what they hold of that identity exactly as the hearing worker does for its own SAs."""

from __future__ import annotations

from ikegate.sad import IkeSaEntry, IpsecSaEntry
from tests.protocol.netsim import lab
from tests.protocol.test_gateway_v1 import _expire_phase1, _lab


def test_ike_sas_of_the_identity_go_and_no_other() -> None:
    net, hq, _b1, _b2 = lab()
    (ike,) = [e for e in hq.sad.entries() if isinstance(e, IkeSaEntry)]
    hq.drop_identity(net.now, str(ike.peer_address), ike.peer_id_type, "someone-else")
    net.pump()
    assert hq.sad.ike(ike.conn_id) is not None and len(hq.sad) == 2
    hq.drop_identity(net.now, str(ike.peer_address), ike.peer_id_type, ike.peer_id)
    net.pump()
    assert hq.sad.ike(ike.conn_id) is None
    assert "initial contact" in {r.reason.lower() for r in hq.sad.offline.entries()}


def test_ikev1_orphan_ipsec_sas_of_the_identity_go_too() -> None:
    """Without ``sa dependent`` an IKEv1 IPsec SA outlives its ISAKMP SA; INITIAL_CONTACT heard elsewhere
    removes it as INITIAL_CONTACT heard here does (before, only IKE SAs were dropped on the other workers)."""
    shorter = {" sa duration 86400": " sa duration 60"}
    net, hq, _br = _lab(shorter, shorter)
    _expire_phase1(net)
    orphan = next(e for e in hq.sad.entries() if isinstance(e, IpsecSaEntry) and e.parent is None)
    hq.drop_identity(net.now, str(orphan.peer_address), orphan.peer_id_type, orphan.peer_id)
    net.pump()
    assert hq.sad.ipsec(orphan.conn_id) is None

"""The seed's matrix on whole gateways in memory: what `reset ike sa` deletes and what comes back."""

from __future__ import annotations

from ikegate.sad import IkeSaEntry, IpsecSaEntry, Role, SaFlag
from tests.protocol.netsim import lab


def phases(gw) -> list[int]:  # type: ignore[no-untyped-def]
    return sorted(e.phase for e in gw.sad.entries())


def test_auto_branch_comes_up_and_traffic_based_waits() -> None:
    net, hq, b1, b2 = lab()
    assert phases(b1) == [1, 2]
    assert phases(hq) == [1, 2]
    assert phases(b2) == []  # traffic-based: nothing until traffic
    ike = next(e for e in b1.sad.entries() if isinstance(e, IkeSaEntry))
    assert SaFlag.RD in ike.flags and SaFlag.ST in ike.flags
    hq_ike = next(e for e in hq.sad.entries() if isinstance(e, IkeSaEntry))
    assert SaFlag.ST not in hq_ike.flags
    assert (hq_ike.policy_name, hq_ike.policy_seq, hq_ike.template_name) == ("hq", 10, "branches")
    child = next(e for e in hq.sad.entries() if isinstance(e, IpsecSaEntry))
    assert child.template_name == "branches"


def test_reset_phase1_on_auto_side_renegotiates_at_once() -> None:
    net, hq, b1, b2 = lab()
    ike = next(e for e in b1.sad.entries() if isinstance(e, IkeSaEntry))
    old_ids = {e.conn_id for e in b1.sad.entries()}
    assert b1.reset_ike_sa(net.now, conn_id=ike.conn_id) == 2
    # Right after the command: the old SAs are gone and a new negotiation is under way.
    assert all(e.conn_id not in old_ids or False for e in b1.sad.entries())
    net.pump()
    assert phases(b1) == [1, 2] and phases(hq) == [1, 2]
    assert not {e.conn_id for e in b1.sad.entries()} & old_ids
    reasons = [r.reason for r in hq.sad.offline.entries()]
    assert "peer request" in reasons
    assert [r.reason for r in b1.sad.offline.entries()].count("config modify or manual offline") == 2


def test_reset_phase2_on_auto_side_renegotiates_child_only() -> None:
    net, hq, b1, b2 = lab()
    ike = next(e for e in b1.sad.entries() if isinstance(e, IkeSaEntry))
    child = next(e for e in b1.sad.entries() if isinstance(e, IpsecSaEntry))
    assert b1.reset_ike_sa(net.now, conn_id=child.conn_id) == 1
    net.pump()
    assert phases(b1) == [1, 2]
    assert b1.sad.ike(ike.conn_id) is not None  # the IKE SA survived
    new_child = next(e for e in b1.sad.entries() if isinstance(e, IpsecSaEntry))
    assert new_child.conn_id != child.conn_id and new_child.parent == ike.conn_id


def test_reset_on_template_side_waits_for_peer() -> None:
    net, hq, b1, b2 = lab()
    ike = next(e for e in hq.sad.entries() if isinstance(e, IkeSaEntry))
    assert hq.reset_ike_sa(net.now, conn_id=ike.conn_id) == 2
    assert phases(hq) == []  # HQ does not initiate
    net.pump()
    assert phases(b1) == []  # Branch1 got the Delete
    net.step(2.0)  # the branch (auto) comes back
    assert phases(hq) == [1, 2] and phases(b1) == [1, 2]


def test_reset_phase2_on_template_side_waits() -> None:
    net, hq, b1, b2 = lab()
    child = next(e for e in hq.sad.entries() if isinstance(e, IpsecSaEntry))
    assert hq.reset_ike_sa(net.now, conn_id=child.conn_id) == 1
    assert phases(hq) == [1]  # HQ itself starts nothing
    net.pump()
    # Branch1 (auto) was told by the Delete and negotiates again: HQ only answers.
    new = next(e for e in hq.sad.entries() if isinstance(e, IpsecSaEntry))
    assert new.conn_id != child.conn_id and new.role is Role.RESPONDER
    b1_child = next(e for e in b1.sad.entries() if isinstance(e, IpsecSaEntry))
    assert b1_child.role is Role.INITIATOR


def test_reset_all_and_remote_and_unknown() -> None:
    net, hq, b1, b2 = lab()
    assert hq.reset_ike_sa(net.now, conn_id=4242) == 0
    assert hq.reset_ike_sa(net.now, remote="192.0.2.99") == 0
    assert phases(hq) == [1, 2]
    assert b1.reset_ike_sa(net.now, remote="127.0.0.11") == 2
    net.pump()
    assert phases(b1) == [1, 2]
    assert b1.reset_ike_sa(net.now) == 2
    net.pump()
    assert phases(b1) == [1, 2]

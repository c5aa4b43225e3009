"""Configuration changes while SAs are up, whole gateways in memory: a policy unbound (``undo ipsec
policy``) loses its SAs (the peer is told) and does not come back; a policy left in place keeps its SAs;
a changed ``sa trigger-mode`` decides how the policy comes back after its SAs go."""

from __future__ import annotations

from ikegate.sad import IkeSaEntry
from tests.protocol.netsim import lab, lab_config

MANUAL = "config modify or manual offline"


def test_unbinding_a_site_to_site_policy_deletes_its_sas_and_the_peer_hears_it() -> None:
    net, hq, b1, _b2 = lab()
    assert len(b1.sad) == 2 and len(hq.sad) == 2
    # the interface no longer applies the group: nothing of "site 10" is bound any more
    b1.reload(lab_config("branch1", {" ipsec policy site\n": ""}))
    assert len(b1.sad) == 2  # a reload alone deletes nothing ...
    b1.start(net.now)  # ... the start that follows every command does
    assert len(b1.sad) == 0
    net.pump()
    assert len(hq.sad) == 0  # HQ got the Delete
    assert [r.reason for r in b1.sad.offline.entries()].count(MANUAL) == 2
    net.step(120.0)
    assert len(b1.sad) == 0 and len(hq.sad) == 0  # not re-initiated: the policy is gone


def test_an_unchanged_or_still_bound_policy_keeps_its_sas() -> None:
    net, hq, b1, _b2 = lab()
    before = {e.conn_id for e in b1.sad.entries()}
    b1.reload(lab_config("branch1", {"sysname Branch1": "sysname Branch1-renamed"}))
    b1.start(net.now)
    hq.reload(lab_config("hq"))
    hq.start(net.now)
    net.pump()
    assert {e.conn_id for e in b1.sad.entries()} == before and len(hq.sad) == 2


def test_unbinding_a_template_policy_deletes_the_sas_it_accepted() -> None:
    net, hq, b1, _b2 = lab()
    assert any(isinstance(e, IkeSaEntry) and e.template_name == "branches" for e in hq.sad.entries())
    hq.reload(lab_config("hq", {" ipsec policy hq\n": ""}))
    hq.start(net.now)
    assert len(hq.sad) == 0
    net.pump()
    assert [r.reason for r in b1.sad.offline.entries()].count("peer request") >= 1


def test_a_trigger_mode_changed_to_traffic_based_waits_for_traffic_after_a_reset() -> None:
    net, _hq, b1, _b2 = lab()
    started = b1.stats.negotiations_started
    b1.reload(lab_config("branch1", {"sa trigger-mode auto": "sa trigger-mode traffic-based"}))
    b1.start(net.now)
    assert len(b1.sad) == 2  # the change alone keeps the SAs
    assert b1.reset_ike_sa(net.now) == 2
    net.step(120.0)
    assert len(b1.sad) == 0 and b1.stats.negotiations_started == started  # negotiated as auto, back as configured
    b1.ping(net.now, "10.1.1.1", "10.0.0.1", 1, 1)  # traffic for the policy
    net.pump()
    assert sorted(e.phase for e in b1.sad.entries()) == [1, 2] and b1.stats.negotiations_started == started + 1

"""Unit tests of the gateway's two pure parts: the seed's table (:mod:`ikegate.gateway.decide`) and the
configuration-to-engine mapping (:mod:`ikegate.gateway.translate`), on the lab's own configurations."""

from __future__ import annotations

import itertools

import pytest

from ikegate.gateway import translate
from ikegate.gateway.decide import REESTABLISH, Action, after_delete
from ikegate.gateway.translate import PolicyKind
from ikegate.ike.v1.sa import DpdType as V1DpdType
from ikegate.ike.v1.sa import ExchangeMode as V1Mode
from ikegate.ike.wire.registry import DhId
from tests.protocol.netsim import lab_config


def test_every_policy_kind_and_phase_has_an_action() -> None:
    assert set(REESTABLISH) == set(itertools.product(PolicyKind, (1, 2)))


@pytest.mark.parametrize(("kind", "phase", "action"), [
    # seed, Usage Guidelines: site-to-multisite (template) waits for the peer whatever was deleted;
    # site-to-site auto negotiates again at once; traffic-based waits for matching traffic.
    (PolicyKind.TEMPLATE, 1, Action.WAIT),
    (PolicyKind.TEMPLATE, 2, Action.WAIT),
    (PolicyKind.AUTO, 1, Action.REINITIATE),
    (PolicyKind.AUTO, 2, Action.RENEGOTIATE_CHILD),
    (PolicyKind.TRAFFIC_BASED, 1, Action.ARM_TRAP),
    (PolicyKind.TRAFFIC_BASED, 2, Action.ARM_TRAP),
])
def test_after_delete_reads_the_seed(kind: PolicyKind, phase: int, action: Action) -> None:
    assert after_delete(kind, phase) is action


def test_connections_of_the_lab() -> None:
    (b1,) = translate.connections(lab_config("branch1"))
    (b2,) = translate.connections(lab_config("branch2"))
    assert b1.kind is PolicyKind.AUTO and b2.kind is PolicyKind.TRAFFIC_BASED
    assert (str(b1.local), str(b1.remote)) == ("127.0.0.12", "127.0.0.11")
    assert [f.rule for f in b2.flows] == [5]
    flow = b2.flows[0]
    assert (str(flow.local.start_addr), str(flow.local.end_addr)) == ("10.1.2.0", "10.1.2.255")
    assert (str(flow.remote.start_addr), str(flow.remote.end_addr)) == ("10.0.0.0", "10.0.0.255")
    # HQ is a template: no connection to start, one template entry per bound template.
    hq = lab_config("hq")
    assert translate.connections(hq) == []
    assert [(p.name, t.name) for p, t, _itf in translate.templates(hq)] == [("hq", "branches")]


def test_ike_config_carries_every_dpd_setting_and_the_lifetime() -> None:
    config = lab_config("branch2")
    peer = config.ike_peers["hq"]
    cfg = translate.ike_config(config, peer, None, ike_port=500, natt_port=4500)
    # USG defaults: on-demand, idle 30 s, a round of 3 probes 15 s apart
    assert (cfg.dpd_interval, cfg.dpd_on_demand, cfg.dpd_retransmit, cfg.dpd_retries) == (30.0, True, 15.0, 3)
    assert cfg.lifetime == 86400.0 and cfg.name == "hq"
    assert cfg.psk == b"ikegate-lab-psk-0123"
    assert cfg.proposals[0].dh == (DhId.CURVE_25519,)
    peer.dpd.enabled = False
    assert translate.ike_config(config, peer, None, ike_port=500, natt_port=4500).dpd_interval is None


def test_v1_options_follow_the_peer() -> None:
    config = lab_config("branch2")
    peer = config.ike_peers["hq"]
    opts = translate.v1_options(config, peer)
    assert (opts.mode, opts.dpd_type, opts.dpd_idle, opts.dpd_retransmit, opts.dpd_retries) == (
        V1Mode.MAIN, V1DpdType.ON_DEMAND, 30.0, 15.0, 3)
    peer.dpd.enabled = False
    assert translate.v1_options(config, peer).dpd_type is V1DpdType.NONE


def test_child_config_names_its_policy_and_rule() -> None:
    config = lab_config("branch2")
    (conn,) = translate.connections(config)
    child = translate.child_config(config, conn.policy, conn.flows[0])
    assert (child.name, child.seq) == ("site", 10)
    assert child.handle == (conn.policy, 5)
    assert child.template is None

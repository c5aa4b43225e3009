"""The ``load`` benchmark op behaves as a policy's SAs do toward INITIAL_CONTACT: its first SA carries it
when no IKE SA with the peer exists, and the rest wait until that one is through (the peer drops every SA
of ours made before it); across placement workers, INITIAL_CONTACT heard by one worker drops only the SAs
the others made before it was heard."""

from __future__ import annotations

from ikegate.gateway.controller import Gateway
from ikegate.ike.v1.sa import IsakmpSa
from ikegate.ike.v2.sa import IkeSa
from ikegate.sad import IkeSaEntry
from tests.protocol.netsim import Net, lab_config

ON_DEMAND = {"trigger-mode auto": "trigger-mode traffic-based"}


def _pair() -> tuple[Net, Gateway, Gateway]:
    net = Net()
    hq = net.add(Gateway(lab_config("hq")))
    br = net.add(Gateway(lab_config("branch1", ON_DEMAND)))
    br.start(net.now)
    return net, hq, br


def _engines(gw: Gateway) -> list[IkeSa | IsakmpSa]:
    return [e.handle for e in gw.sad.ike_sas() if isinstance(e.handle, IkeSa | IsakmpSa)]


def _settle(net: Net, hq: Gateway, br: Gateway, count: int) -> None:
    for _ in range(200):
        if hq.sad.count(phase=2) >= count and br.sad.count(phase=2) >= count:
            return
        net.step(0.1)
    raise AssertionError(f"{count} SAs did not come up: {hq.sad.count(phase=2)} / {br.sad.count(phase=2)}")


def test_the_first_loaded_sa_announces_initial_contact_and_the_rest_wait_for_it() -> None:
    net, hq, br = _pair()
    br.load(net.now, 10, concurrency=8)
    assert br.load_gated and br.sad.count(phase=1) == 1  # only the announcing SA is under way
    (first,) = _engines(br)
    assert first.initial_contact
    _settle(net, hq, br, 10)
    assert not br.load_gated
    assert [sa.initial_contact for sa in _engines(br)].count(True) == 1
    assert hq.sad.count(phase=1) == br.sad.count(phase=1) == 10  # the peer dropped none of them


def test_a_load_on_top_of_existing_sas_or_told_not_to_announces_nothing() -> None:
    net, hq, br = _pair()
    br.load(net.now, 3, initial_contact=False)
    assert not br.load_gated and br.sad.count(phase=1) == 3
    _settle(net, hq, br, 3)
    br.load(net.now, 3)  # SAs with the peer exist: nothing to announce
    assert not br.load_gated
    _settle(net, hq, br, 6)
    assert not any(sa.initial_contact for sa in _engines(br))


def test_initial_contact_heard_by_another_worker_drops_only_the_sas_made_before_it() -> None:
    net, hq, br = _pair()
    br.load(net.now, 2, initial_contact=False)
    _settle(net, hq, br, 2)
    heard = net.now
    net.step(1.0)
    br.load(net.now, 1, initial_contact=False)
    _settle(net, hq, br, 3)
    newer = {e.conn_id for e in hq.sad.ike_sas() if e.created > heard}
    assert len(newer) == 1
    entry = next(iter(hq.sad.ike_sas()))
    assert isinstance(entry, IkeSaEntry)
    hq.drop_identity(net.now, str(entry.peer_address), entry.peer_id_type, entry.peer_id, heard)
    net.step(0.5)
    assert {e.conn_id for e in hq.sad.ike_sas()} == newer

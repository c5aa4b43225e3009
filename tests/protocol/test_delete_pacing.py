"""Deletes of a mass reset are paced so the peer's receive buffer never has to hold them all at once:
IKEv2 by a window of exchanges awaiting their answer, IKEv1 (one-way notifications, nothing answers) by a
budget of SAs per tick of the clock, each ISAKMP Delete a tick behind its ESP Delete. Every SA leaves the
table at once; the peer hears of all of them."""

from __future__ import annotations

from ikegate.gateway.controller import DELETE_TICK, ONE_WAY_DELETES, Gateway
from ikegate.sad import IkeSaEntry
from tests.protocol.netsim import Net, lab_config

V1 = {" remote-address 127.0.0.11": " remote-address 127.0.0.11\n undo version 2"}
P1 = {" encryption-algorithm aes-gcm-256\n dh group31": " encryption-algorithm aes-256\n dh group14"}
ON_DEMAND = {"trigger-mode auto": "trigger-mode traffic-based"}


def _ike(gw: Gateway) -> int:
    return sum(isinstance(e, IkeSaEntry) for e in gw.sad.entries())


def test_ikev1_reset_of_many_sends_deletes_a_budget_per_tick() -> None:
    count = 2 * ONE_WAY_DELETES + 20
    net = Net()
    hq = net.add(Gateway(lab_config("hq", P1)))
    br = net.add(Gateway(lab_config("branch1", {**P1, **V1, **ON_DEMAND})))
    br.start(net.now)
    br.load(net.now, count, concurrency=32)
    while _ike(hq) < count or hq.sad.count(phase=2) < count:
        net.step(0.5)
    assert _ike(br) == count and all(e.version == 1 for e in hq.sad.entries())

    assert hq.reset_ike_sa(net.now) == 2 * count  # the table empties at once
    assert len(hq.sad) == 0
    burst = hq.datagrams_to_send()
    assert len({data[:16] for data, _, _ in burst}) == ONE_WAY_DELETES  # ISAKMP SAs (cookie pairs) heard of
    for data, local, remote in burst:
        br.receive_datagram(data, remote, local, net.now)
    # The first tick's ESP Deletes only: each ISAKMP Delete follows its ESP Delete a tick later, so that a
    # peer handling datagrams in parallel (strongSwan) never sees an ISAKMP SA go before its IPsec SAs.
    assert _ike(br) == count and br.sad.count(phase=2) == count - ONE_WAY_DELETES
    assert not hq.idle
    assert hq.get_timer() is not None and hq.get_timer() <= net.now + DELETE_TICK  # the rest comes back
    net.step(DELETE_TICK)
    assert _ike(br) == count - ONE_WAY_DELETES and br.sad.count(phase=2) == count - 2 * ONE_WAY_DELETES
    net.step(DELETE_TICK)
    assert _ike(br) == count - 2 * ONE_WAY_DELETES and br.sad.count(phase=2) == 0
    net.step(DELETE_TICK)
    # The `load` op's ISAKMP SAs all carry the branch's one identity; they are side by side, not rekeys of
    # each other, so each keeps its own IPsec SA, whose Delete travels on the ISAKMP SA it was negotiated on.
    assert _ike(br) == 0 and br.sad.count(phase=2) == 0
    assert hq.idle and hq.stats.deletes_sent >= count

"""Which new ISAKMP SA takes over the IPsec SAs of an older one of the same peer (IKEv1 phase-1 rekey), and
which does not: ISAKMP SAs set up side by side from one address and identity (strongSwan's load-tester, a
crowd behind one NAT address) each keep their own. The work is counted, not timed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ikegate.gateway.controller import Gateway
from ikegate.ike.v1.sa import IsakmpSa
from ikegate.sad import IkeSaEntry, IpsecSaEntry
from tests.protocol.netsim import Net, lab_config

V1 = {" remote-address 127.0.0.11": " remote-address 127.0.0.11\n undo version 2"}
P1 = {" encryption-algorithm aes-gcm-256\n dh group31": " encryption-algorithm aes-256\n dh group14"}
DEPENDENT = {"#\nike proposal 10": "#\nikev1 phase1-phase2 sa dependent\n#\nike proposal 10"}
SHORT = {" sa duration 86400": " sa duration 600"}


@pytest.fixture
def moved(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many IPsec SAs each adoption moved (one number per call of ``adopt_children``)."""
    counts: list[int] = []
    real = IsakmpSa.adopt_children

    def counting(self: IsakmpSa, other: IsakmpSa) -> list:  # type: ignore[type-arg]
        children = real(self, other)
        counts.append(len(children))
        return children

    monkeypatch.setattr(IsakmpSa, "adopt_children", counting)
    yield counts


def _ikes(gw: Gateway) -> list[IkeSaEntry]:
    return [e for e in gw.sad.entries() if isinstance(e, IkeSaEntry)]


def _lab(extra: dict[str, str]) -> tuple[Net, Gateway, Gateway]:
    net = Net()
    hq = net.add(Gateway(lab_config("hq", {**P1, **extra})))
    on_demand = {"trigger-mode auto": "trigger-mode traffic-based"}
    br = net.add(Gateway(lab_config("branch1", {**P1, **V1, **extra, **on_demand})))
    br.start(net.now)
    return net, hq, br


def test_concurrent_isakmp_sas_of_one_identity_keep_their_ipsec_sas(moved: list[int]) -> None:
    count = 60
    net, hq, br = _lab(DEPENDENT)
    scanned: list[int] = []  # SA-database rows each identity look-up returned
    by_identity = hq.sad.by_identity

    def counting(*args: str) -> list:  # type: ignore[type-arg]
        rows = by_identity(*args)
        scanned.append(len(rows))
        return rows

    hq.sad.by_identity = counting  # type: ignore[method-assign]
    br.load(net.now, count, concurrency=16)
    while len(_ikes(hq)) < count or hq.sad.count(phase=2) < count:
        net.step(0.5)
    # No adoption, and no walk over the identity's SAs per new one: before, each new ISAKMP SA looked through
    # all earlier SAs of the identity (O(n) each, O(n^2) in all) and "adopted" from one of them.
    assert moved == []
    assert sum(scanned) <= 2 * count
    assert all(len(e.child_ids) == 1 for e in _ikes(hq))
    # `reset ike sa conn-id` of one, with the dependency: its own IPsec SA goes, no other.
    victim = _ikes(hq)[count // 2]
    own = victim.child_ids[0]
    assert hq.reset_ike_sa(net.now, conn_id=victim.conn_id) == 2
    assert hq.sad.ipsec(own) is None and hq.sad.count(phase=2) == count - 1
    assert all(len(e.child_ids) == 1 for e in _ikes(hq))
    net.step(0.5)
    # The branch heard the Deletes under the ISAKMP SA it negotiated that IPsec SA on, and dropped just it.
    assert len(_ikes(br)) == count - 1 and br.sad.count(phase=2) == count - 1


@pytest.mark.parametrize("count", [1, 3])
def test_phase1_rekey_moves_only_the_replaced_sas_ipsec_sas(moved: list[int], count: int) -> None:
    """One ISAKMP SA per peer: the new Main Mode takes the IPsec SAs over as soon as it is up. Several side by
    side: each old one's IPsec SAs move when the peer deletes it (the peer keeps them: make-before-break)."""
    net, hq, br = _lab({**DEPENDENT, **SHORT})
    br.load(net.now, count, concurrency=count)
    while len(_ikes(hq)) < count or hq.sad.count(phase=2) < count:
        net.step(0.5)
    children = {e.conn_id for e in hq.sad.entries() if isinstance(e, IpsecSaEntry)}
    # The branch renews each ISAKMP SA at about 90 % of its 600 s; each new Main Mode replaces one old SA.
    while len(moved) < count:
        net.step(5)
        assert net.now < 600
    assert moved == [1] * count  # one IPsec SA each, never all of them
    net.step(5)  # the old ISAKMP SAs' Deletes
    assert len(_ikes(hq)) == count and all(len(e.child_ids) == 1 for e in _ikes(hq))
    assert len(_ikes(br)) == count and br.sad.count(phase=2) == count
    assert {e.conn_id for e in hq.sad.entries() if isinstance(e, IpsecSaEntry)} == children

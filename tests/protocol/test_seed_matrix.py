"""The seed's whole matrix with traffic, IKEv2 and IKEv1, on whole gateways in memory.

For each reset form (phase-1 conn-id, phase-2 conn-id, all, remote) and each policy kind on the device
where the reset runs (template: HQ; site-to-site auto: Branch1; site-to-site traffic-based: Branch2),
assert on both ends what is deleted, what comes back by itself, and that matching traffic brings a
traffic-based tunnel back (with selectors from the rule it matched) while traffic matching no rule does not.
"""

from __future__ import annotations

import pytest

from ikegate.gateway.controller import Gateway
from ikegate.sad import IkeSaEntry, IpsecSaEntry
from tests.protocol.netsim import Net, lab_config

HQ, B1, B2 = "127.0.0.11", "127.0.0.12", "127.0.0.13"
V1_PROPOSAL = {" encryption-algorithm aes-gcm-256\n dh group31": " encryption-algorithm aes-256\n dh group14"}
V1_PEER = {" remote-address 127.0.0.11": " remote-address 127.0.0.11\n undo version 2"}


def _up(version: int) -> tuple[Net, Gateway, Gateway, Gateway]:
    net = Net()
    extra = {**V1_PROPOSAL, **V1_PEER} if version == 1 else {}
    hq = net.add(Gateway(lab_config("hq", V1_PROPOSAL if version == 1 else {})))
    b1 = net.add(Gateway(lab_config("branch1", extra)))
    b2 = net.add(Gateway(lab_config("branch2", extra)))
    for gw in (hq, b1, b2):
        gw.start(net.now)
    net.pump()
    b2.ping(net.now, "10.1.2.1", "10.0.0.1", 1, 1)
    net.pump()
    for gw in (hq, b1, b2):
        assert all(e.version == version for e in gw.sad.entries())
    assert _phases(hq, B1) == _phases(hq, B2) == _phases(b1, HQ) == _phases(b2, HQ) == [1, 2]
    return net, hq, b1, b2


def _phases(gw: Gateway, peer: str) -> list[int]:
    return sorted(e.phase for e in gw.sad.by_peer(peer))


def _ids(gw: Gateway, peer: str) -> set[int]:
    return {e.conn_id for e in gw.sad.by_peer(peer)}


def _reset(gw: Gateway, now: float, form: str, peer: str) -> int:
    if form == "phase1":
        entry = next(e for e in gw.sad.by_peer(peer) if isinstance(e, IkeSaEntry))
        return gw.reset_ike_sa(now, conn_id=entry.conn_id)
    if form == "phase2":
        entry2 = next(e for e in gw.sad.by_peer(peer) if isinstance(e, IpsecSaEntry))
        return gw.reset_ike_sa(now, conn_id=entry2.conn_id)
    if form == "remote":
        return gw.reset_ike_sa(now, remote=peer)
    return gw.reset_ike_sa(now)


def _traffic_brings_b2_back(net: Net, b2: Gateway, hq: Gateway, phase1_gone: bool) -> None:
    b2.ping(net.now, "10.1.2.1", "10.9.9.9", 1, 50)  # matches no rule of the policy: nothing happens
    net.pump()
    assert _phases(b2, HQ) == ([] if phase1_gone else [1])
    got: list[int] = []
    b2.on_echo_reply = lambda ident, seq, now: got.append(seq)
    b2.ping(net.now, "10.1.2.1", "10.0.0.1", 1, 51)  # matches ACL 3001 rule 5
    net.pump()
    assert got == [51]
    assert _phases(b2, HQ) == [1, 2] and _phases(hq, B2) == [1, 2]
    child = next(e for e in b2.sad.by_peer(HQ) if isinstance(e, IpsecSaEntry))
    assert child.acl_rule == 5
    assert (str(child.local_selectors[0].start), str(child.remote_selectors[0].start)) == ("10.1.2.0", "10.0.0.0")


@pytest.mark.parametrize("version", [2, 1])
@pytest.mark.parametrize("form", ["phase1", "phase2", "all", "remote"])
def test_auto_side(version: int, form: str) -> None:
    net, hq, b1, b2 = _up(version)
    mine, theirs = _ids(b1, HQ), _ids(hq, B1)
    expected = 1 if form == "phase2" else 2
    assert _reset(b1, net.now, form, HQ) == expected
    net.pump()
    net.step(3.0)
    # comes back by itself at once (phase 2 only: under the surviving IKE SA)
    assert _phases(b1, HQ) == [1, 2] and _phases(hq, B1) == [1, 2]
    assert len(mine - _ids(b1, HQ)) == expected and len(theirs - _ids(hq, B1)) == expected
    assert _phases(hq, B2) == [1, 2]  # the other branch is untouched


@pytest.mark.parametrize("version", [2, 1])
@pytest.mark.parametrize("form", ["phase1", "phase2", "all", "remote"])
def test_traffic_based_side(version: int, form: str) -> None:
    net, hq, b1, b2 = _up(version)
    assert _reset(b2, net.now, form, HQ) == (1 if form == "phase2" else 2)
    net.pump()
    net.step(60.0)
    left = [1] if form == "phase2" else []
    assert _phases(b2, HQ) == left and _phases(hq, B2) == left  # nothing comes back by itself
    reasons = {r.reason for r in hq.sad.offline.entries(peer=B2)}
    assert reasons == {"peer request"}
    _traffic_brings_b2_back(net, b2, hq, phase1_gone=form != "phase2")
    assert _phases(hq, B1) == [1, 2]


@pytest.mark.parametrize("version", [2, 1])
@pytest.mark.parametrize("form", ["phase1", "phase2", "all", "remote"])
def test_template_side(version: int, form: str) -> None:
    net, hq, b1, b2 = _up(version)
    b1_before = _ids(b1, HQ)
    deleted = _reset(hq, net.now, form, B2)
    assert deleted == {"phase1": 2, "phase2": 1, "remote": 2, "all": 4}[form]
    left = [1] if form == "phase2" else []
    assert _phases(hq, B2) == left  # HQ starts nothing
    net.pump()
    net.step(60.0)
    # Branch2 (traffic-based) waits for traffic; with `all`, Branch1 (auto) came back by itself
    assert _phases(hq, B2) == left and _phases(b2, HQ) == left
    if form == "all":
        assert _phases(hq, B1) == [1, 2] and not b1_before & _ids(b1, HQ)
        assert all(e.role.value == "responder" for e in hq.sad.by_peer(B1))
    else:
        assert _ids(b1, HQ) == b1_before
    _traffic_brings_b2_back(net, b2, hq, phase1_gone=form != "phase2")


def test_template_without_acl_accepts_any_flow() -> None:
    net = Net()
    hq = net.add(Gateway(lab_config("hq", {" security acl 3000\n": ""})))
    b1 = net.add(Gateway(lab_config("branch1", {"0.0.0.255 destination 10.0.0.0 0.0.0.255":
                                                "0.0.0.255 destination 10.77.0.0 0.0.255.255"})))
    b1.start(net.now)
    net.pump()
    child = next(e for e in hq.sad.entries() if isinstance(e, IpsecSaEntry))
    assert str(child.local_selectors[0].start) == "10.77.0.0" and str(child.remote_selectors[0].start) == "10.1.1.0"

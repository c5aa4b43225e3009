"""Engine state export/import (issue 17): a snapshot round-trips every field, and an SA imported into a
fresh gateway carries on against the peer (ESP, rekeys, DPD, Delete) without a new IKE_SA_INIT."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ikegate.gateway.controller import Gateway
from ikegate.ha.codec import decode, encode
from ikegate.ike.core.engine import Engine
from ikegate.ike.v2.sa import IkeSa
from ikegate.sad import IkeSaEntry, IpsecSaEntry
from tests.protocol.netsim import Net, lab_config, openings

V1 = {" remote-address 127.0.0.11": " remote-address 127.0.0.11\n undo version 2"}
P1 = {" encryption-algorithm aes-gcm-256\n dh group31": " encryption-algorithm aes-256\n dh group14"}
#: per IKE version: the lab's configuration replacements for hq and branch1
LABS = {2: ({}, {}), 1: (P1, {**P1, **V1})}


def lab(version: int = 2) -> tuple[Net, Gateway, Gateway, int]:
    net = Net()
    hq = net.add(Gateway(lab_config("hq", LABS[version][0])))
    b1 = net.add(Gateway(lab_config("branch1", LABS[version][1])))
    b1.start(net.now)
    net.pump()
    assert _ike(b1).version == version
    return net, hq, b1, version


def _ike(gw: Gateway) -> IkeSaEntry:
    return next(e for e in gw.sad.entries() if isinstance(e, IkeSaEntry))


def _engine(gw: Gateway) -> Engine:
    sa = gw.engine_of(_ike(gw).conn_id)
    assert sa is not None
    return sa


def _spis(gw: Gateway) -> tuple[bytes, bytes, list[tuple[int, int]]]:
    ike = _ike(gw)
    kids = sorted((e.spi_in, e.spi_out) for e in gw.sad.entries() if isinstance(e, IpsecSaEntry))
    return ike.spi_i, ike.spi_r, kids


def _replies(gw: Gateway) -> list[tuple[int, int]]:
    got: list[tuple[int, int]] = []
    gw.on_echo_reply = lambda ident, seq, now: got.append((ident, seq))
    return got


def _inits(net: Net) -> int:
    return openings(net.seen)


def _take_over(net: Net, old: Gateway, name: str, version: int, jump: int = 0) -> Gateway:
    """A second node with the same configuration adopts ``old``'s SAs through the codec; the network
    then delivers ``old``'s address to it (what VRRP does with the virtual address)."""
    recs = [encode(r) for sa in old.engines() if (r := old.export_sa(sa, net.now)) is not None]
    new = Gateway(lab_config(name, LABS[version][name != "hq"]))
    for raw in recs:
        new.adopt(decode(raw), net.now, seq_jump=jump)
    for addr in old.local_addresses():
        net.gateways[addr] = new
    return new


@pytest.mark.parametrize("version", [2, 1])
def test_snapshot_round_trips_every_field(version: int) -> None:
    net, hq, b1, _ = lab(version)
    b1.ping(net.now, "10.1.1.1", "10.0.0.1", 1, 1)
    net.pump()
    for gw, name in ((hq, "hq"), (b1, "branch1")):
        sa = _engine(gw)
        rec = gw.export_sa(sa, net.now)
        assert rec is not None
        raw = encode(rec)
        assert decode(raw) == rec
        other = Gateway(lab_config(name, LABS[version][name != "hq"]))
        adopted = other.adopt(decode(raw), net.now)
        again: dict[str, Any] | None = other.export_sa(adopted, net.now)
        assert again == rec  # SPIs, keys, message IDs, cache, NAT, lifetimes, children, ESP counters, table
        assert adopted.spi_i == sa.spi_i and adopted.spi_r == sa.spi_r
        assert _ike(other).conn_id == _ike(gw).conn_id and _spis(other) == _spis(gw)
        cached = len(rec["v2"]["cache"][1]) if version == 2 else sum(map(len, rec["v1"]["last"]))
        assert len(raw) - cached < 1300  # one IKE SA + one Child SA: 400-600 bytes of keys, the rest names


@pytest.mark.parametrize("version", [2, 1])
def test_imported_responder_carries_on_with_the_peer(version: int) -> None:
    net, hq, b1, _ = lab(version)
    got = _replies(b1)
    for seq in (1, 2, 3):
        b1.ping(net.now, "10.1.1.1", "10.0.0.1", 7, seq)
        net.pump()
    assert got == [(7, 1), (7, 2), (7, 3)]
    before, inits = _spis(b1), _inits(net)
    hq2 = _take_over(net, hq, "hq", version, jump=1000)
    b1.ping(net.now, "10.1.1.1", "10.0.0.1", 7, 4)
    net.pump()
    assert got[-1] == (7, 4)  # ESP both ways through the adopted Child SA
    hq2.sync_counters()
    child = next(e for e in hq2.sad.entries() if isinstance(e, IpsecSaEntry))
    assert child.seq_out > 1000  # the new active jumped ahead: no sequence number reused
    assert _spis(b1) == before and _inits(net) == inits
    # the branch (initiator) rekeys its Child SA and the IKE SA against the adopted state
    sa = _engine(b1)
    sa.rekey_child(next(iter(sa.children.values())), net.now)
    b1._service(sa, net.now)
    net.step(10.0)  # IKEv1: the replaced pair keeps receiving for a few seconds after QM2
    assert _spis(b1)[2] != before[2] and len(_spis(b1)[2]) == 1
    assert _spis(hq2)[2] == [(o, i) for i, o in _spis(b1)[2]]
    sa.rekey_ike(net.now)
    b1._service(sa, net.now)
    net.pump()
    net.step(70.0)  # IKEv1: the replaced ISAKMP SA goes after its grace time
    assert _spis(b1)[:2] != before[:2] and _spis(hq2)[:2] == _spis(b1)[:2]
    assert _inits(net) == inits or version == 1  # IKEv2: a CREATE_CHILD_SA rekey, never IKE_SA_INIT
    b1.ping(net.now, "10.1.1.1", "10.0.0.1", 7, 5)
    net.pump()
    assert got[-1] == (7, 5)


@pytest.mark.parametrize("version", [2, 1])
def test_imported_initiator_runs_dpd_and_delete(version: int) -> None:
    net, hq, b1, _ = lab(version)
    before = _spis(hq)
    b1b = _take_over(net, b1, "branch1", version)
    sa = _engine(b1b)
    sent = sa.stats.messages_out
    sa.liveness_check(net.now)  # a DPD probe from the new node, with the next message ID
    b1b._service(sa, net.now)
    net.pump()
    assert sa.stats.messages_in > 0 and sa.stats.messages_out == sent + 1
    assert sa.established and _spis(hq) == before
    conn_id = _ike(b1b).conn_id
    assert b1b.reset_ike_sa(net.now, conn_id=conn_id) == 2
    net.pump()  # hq accepts the Delete (right message ID and keys); the auto policy comes back
    assert "peer request" in [r.reason for r in hq.sad.offline.entries()]
    assert sorted(e.phase for e in b1b.sad.entries()) == [1, 2]
    assert _spis(hq)[:2] == _spis(b1b)[:2] != before[:2]


def test_certificate_sa_carries_its_verdict_and_fragmentation(tmp_path: Path) -> None:
    """A signature-authenticated IKE SA (RFC 7427, with RFC 7383 fragmentation negotiated) moves with
    its peer's verdict for the displays and its fragmentation; the branch then rekeys against it."""
    from tests.protocol.test_gateway_certificates import _hq_text, _load, cert_lab

    net, hq, b1, _b2 = cert_lab(tmp_path)
    sa = next(e.handle for e in hq.sad.entries() if isinstance(e, IkeSaEntry)
              and e.peer_address.exploded == "127.0.0.12")
    assert isinstance(sa, IkeSa) and sa.fragmentation and sa.peer_auth is not None
    rec = hq.export_sa(sa, net.now)
    assert rec is not None
    other = Gateway(_load(_hq_text(), tmp_path))
    adopted = other.adopt(decode(encode(rec)), net.now)
    assert other.export_sa(adopted, net.now) == rec
    assert isinstance(adopted, IkeSa) and adopted.fragmentation and adopted.peer_auth == sa.peer_auth
    for addr in hq.local_addresses():
        net.gateways[addr] = other
    branch_sa = next(e.handle for e in b1.sad.entries() if isinstance(e, IkeSaEntry))
    assert isinstance(branch_sa, IkeSa)
    before = sorted(branch_sa.children)
    branch_sa.rekey_child(next(iter(branch_sa.children.values())), net.now)
    b1._service(branch_sa, net.now)
    net.pump()
    assert sorted(branch_sa.children) != before and any(
        c.spi_out in branch_sa.children for c in adopted.children.values())

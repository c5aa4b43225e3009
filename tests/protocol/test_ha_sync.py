"""The sync protocol between two gateways in memory (issue 17): the standby follows the active's SAs
through the encrypted stream (also with loss and reordering), takes over without renegotiation, rejects
forged and replayed messages, recovers by bulk sync, and settles a split brain."""

from __future__ import annotations

from typing import Any

import pytest

from ikegate.gateway.controller import Gateway
from ikegate.ha.sync import Role
from ikegate.ike.wire.registry import ExchangeType
from ikegate.sad import IkeSaEntry, IpsecSaEntry
from tests.protocol.hapair import Pair, new_node, pair
from tests.protocol.netsim import ike_view, is_ike, openings


def _table(gw: Gateway) -> list[tuple[Any, ...]]:
    """What ``display ike sa`` would show, with the SPIs: conn-id, phase, SPIs."""
    rows: list[tuple[Any, ...]] = []
    for e in gw.sad.entries():
        if isinstance(e, IkeSaEntry):
            rows.append((e.conn_id, 1, e.spi_i, e.spi_r))
        elif isinstance(e, IpsecSaEntry):
            rows.append((e.conn_id, 2, e.spi_in, e.spi_out))
    return sorted(rows)


def _branch_spis(p: Pair) -> list[tuple[Any, ...]]:
    return [r[1:] for r in _table(p.branch)]


def _inits(p: Pair) -> int:
    return openings(p.net.seen)


def _replies(gw: Gateway) -> list[int]:
    got: list[int] = []
    gw.on_echo_reply = lambda ident, seq, now: got.append(seq)
    return got


def _ping(p: Pair, seq: int) -> None:
    p.branch.ping(p.net.now, "10.1.1.1", "10.0.0.1", 5, seq)
    p.pump()


def _in_step(p: Pair) -> None:
    a, b = p.node("a").gw, p.node("b").gw
    assert _table(a) and _table(b) == _table(a)
    for sa in a.engines():
        if sa.established:
            twin = b.engine_of(sa.handle)  # type: ignore[arg-type]
            assert twin is not None and b.mids_of(twin) == a.mids_of(sa)


V1 = {" remote-address 127.0.0.11": " remote-address 127.0.0.11\n undo version 2"}
P1 = {" encryption-algorithm aes-gcm-256\n dh group31": " encryption-algorithm aes-256\n dh group14"}


@pytest.mark.parametrize("version", [2, 1])
def test_standby_follows_and_takes_over_without_renegotiation(version: int) -> None:
    p = pair(P1, {**P1, **V1}) if version == 1 else pair()
    a, b = p.node("a"), p.node("b")
    assert b.stats.bulk_received == 1 and b.gw.standby
    _in_step(p)
    got = _replies(p.branch)
    for seq in range(1, 6):
        _ping(p, seq)
    p.step(1.0)  # ESP counters go over at the next tick
    sa = next(iter(p.branch.engines()))
    sa.rekey_child(next(iter(sa.children.values())), p.net.now)  # the branch rekeys: a new record
    sa.liveness_check(p.net.now)  # and probes: message IDs move
    p.branch._service(sa, p.net.now)
    p.step(10.0)  # IKEv1: the replaced pair goes after its overlap
    _in_step(p)
    assert not [d for d in p.link.captured if d[0] == "b" and len(d[1]) > 200]  # the standby streams nothing
    before, inits = _branch_spis(p), _inits(p)
    a.gw.sync_counters()
    seq_before = max(e.seq_out for e in a.gw.sad.entries() if isinstance(e, IpsecSaEntry))
    p.kill("a")
    p.make_active("b")
    _ping(p, 6)
    assert got[-1] == 6 and _branch_spis(p) == before and _inits(p) == inits
    b.gw.sync_counters()
    assert min(e.seq_out for e in b.gw.sad.entries() if isinstance(e, IpsecSaEntry)) > seq_before + 4096
    # rekeys and DPD keep working from the new active: an hour later the branch's Child SA was rekeyed
    # (and the IKE SA is the same one), every probe answered
    p.step(3700.0)
    _ping(p, 7)
    assert got[-1] == 7 and _inits(p) == inits
    after = _branch_spis(p)
    assert after[0] == before[0] and after[1] != before[1]
    assert any("active" in line for line in p.logs)


def test_stream_with_loss_and_reordering_converges() -> None:
    p = pair(loss=0.3, reorder=0.3)
    sa = next(iter(p.branch.engines()))
    for round_ in range(6):
        sa.rekey_child(next(iter(c for c in sa.children.values() if c.state.value == "installed")), p.net.now)
        sa.liveness_check(p.net.now)
        p.branch._service(sa, p.net.now)
        p.step(6.0)
        _ping(p, round_)
    sa.rekey_ike(p.net.now)
    p.branch._service(sa, p.net.now)
    p.step(6.0)
    p.link.loss = p.link.reorder = 0.0
    p.step(2.0)  # the standby asks for what it missed
    _in_step(p)
    b = p.node("b")
    assert b.stats.nacks_sent or b.stats.bulk_received > 1
    assert p.node("a").stats.resent or p.node("a").stats.bulk_sent > 1


def test_forged_and_replayed_messages_are_rejected_and_counted() -> None:
    p = pair()
    b = p.node("b")
    table = _table(b.gw)
    sent = [d for n, d in p.link.captured if n == "a"]
    b.receive(sent[-1], p.net.now)  # a replay
    assert b.channel.stats.replayed == 1
    forged = bytearray(sent[-1])
    forged[17:25] = (10**6).to_bytes(8, "big")  # a fresh sequence number on a recorded message
    forged[-1] ^= 1
    b.receive(bytes(forged), p.net.now)
    assert b.channel.stats.forged == 1
    stranger = new_node(key=b"another key")
    stranger.set_role(Role.ACTIVE, p.net.now)
    for data in stranger.datagrams_to_send():
        b.receive(data, p.net.now)  # a hello under another key
    assert b.channel.stats.forged == 2
    b.receive(b"\x02" + bytes(40), p.net.now)
    assert b.channel.stats.forged + b.channel.stats.malformed == 3
    assert _table(b.gw) == table


def test_standby_restart_mid_stream_gets_bulk_sync() -> None:
    p = pair()
    p.kill("b")
    p.node("a").gw.reset_ike_sa(p.net.now)  # while the standby is away: gone, re-established
    p.pump()
    b = p.restart("b")
    b.set_role(Role.STANDBY, p.net.now)
    p.step(2.0)
    assert b.stats.bulk_received == 1
    _in_step(p)


def test_split_brain_resolved_deterministically() -> None:
    p = pair()
    p.link.up = False
    p.step(5.0)
    p.node("b").set_role(Role.ACTIVE, p.net.now)  # heartbeat lost: both active
    p.link.up = True
    p.step(2.0)
    assert p.node("a").role is Role.ACTIVE and p.node("b").role is Role.STANDBY
    assert any("split brain" in line and "becomes standby" in line for line in p.logs)
    assert p.node("b").gw.standby
    _in_step(p)


def test_reset_on_active_deletes_on_both_and_sends_deletes_once() -> None:
    p = pair()
    a, b = p.node("a"), p.node("b")
    seen = len(p.net.seen)
    a.gw.reset_ike_sa(p.net.now)
    p.pump()
    deletes = [d for d, src, dst in p.net.seen[seen:]
               if src[0] == "127.0.0.11" and is_ike(d, src) and ike_view(d)[18] == ExchangeType.INFORMATIONAL]
    assert len(deletes) == 1  # one Delete (the template side re-establishes nothing itself)
    assert "config modify or manual offline" in [r.reason for r in b.gw.sad.offline.entries()]
    p.step(3.0)  # the branch (auto) comes back, to the active only
    _in_step(p)
    assert b.gw.standby and b.stats.deletes_applied == 1


def test_configuration_mirrored_to_the_standby_and_on_bulk() -> None:
    p = pair()
    a, b = p.node("a"), p.node("b")
    got: list[str] = []
    b.on_config = got.append
    a.mirror_config("ike proposal 20\n dh group14")
    p.pump()
    assert got == ["ike proposal 20\n dh group14"] and b.stats.configs_applied == 1
    a.mirror_config("ike proposal 20\n dh group14")  # unchanged: nothing sent
    p.pump()
    assert a.stats.configs_sent == 1
    p.kill("b")
    c = p.restart("b")
    c.on_config = got.append
    c.set_role(Role.STANDBY, p.net.now)
    p.step(2.0)
    assert got[-1] == "ike proposal 20\n dh group14" and c.stats.bulk_received == 1


def test_active_restarting_as_active_resyncs_the_standby() -> None:
    """A new life of the active (its generation numbers start again) is followed, not taken for stale."""
    p = pair()
    old = p.node("a")
    survivors = [old.gw.export_sa(sa, p.net.now) for sa in old.gw.engines()]
    p.kill("a")
    a = p.restart("a")
    for rec in survivors:  # the same SAs (as a node that kept them would hold them), a new life
        assert rec is not None
        a.gw.adopt(rec, p.net.now)
    p.make_active("a")
    p.step(2.0)
    b = p.node("b")
    assert b.stats.bulk_received == 2 and b.stats.stale_ignored == 0
    _in_step(p)


@pytest.mark.parametrize("phase", [1, 2])
def test_reset_by_conn_id_on_an_auto_pair_renegotiates_from_the_active_only(phase: int) -> None:
    p = pair(node="branch1", peer="hq")  # the pair runs the auto policy; HQ (template) answers
    a, b = p.node("a"), p.node("b")
    _in_step(p)
    entry = next(e for e in a.gw.sad.entries() if e.phase == phase)
    seen = len(p.net.seen)
    assert a.gw.reset_ike_sa(p.net.now, conn_id=entry.conn_id) == (2 if phase == 1 else 1)
    p.pump()
    p.step(1.0)
    assert sorted(e.phase for e in a.gw.sad.entries()) == [1, 2] and entry.conn_id not in {
        e.conn_id for e in a.gw.sad.entries()}
    _in_step(p)  # the standby dropped the old SA and holds the new one
    assert b.gw.stats.negotiations_started == 0 and not b.gw.datagrams_to_send()
    deletes = [d for d, src, _dst in p.net.seen[seen:] if is_ike(d, src) and src[0] == "127.0.0.12"
               and ike_view(d)[18] == ExchangeType.INFORMATIONAL and ike_view(d)[19] & 0x20 == 0]
    assert len(deletes) == 1  # one Delete request, from the active


def test_nodes_with_different_worker_counts_never_link() -> None:
    """Both nodes of a pair must run the same ``--workers``: an SA's SPIs name its worker, so it must land
    on the same index on the other node. Hellos carry the count; a node hearing another count logs the
    error (once) and takes nothing from that peer; with equal counts the same nodes link up."""
    for theirs, links in ((2, False), (1, True)):
        logs: list[str] = []
        a, b = new_node(logs=logs, priority=120, node_id=2), new_node(logs=logs, node_id=1)
        b.workers = theirs
        a.set_role(Role.ACTIVE, 0.0)
        b.set_role(Role.STANDBY, 0.0)
        for now in (0.0, 1.0, 2.0):
            for node in (a, b):
                node.handle_timer(now)
            for sender, receiver in ((a, b), (b, a)):
                for data in sender.datagrams_to_send():
                    receiver.receive(data, now)
        assert a.link_up is links and b.link_up is links
        errors = [line for line in logs if "must run the same --workers" in line]
        assert len(errors) == (0 if links else 2), logs  # one line per node, however many hellos
        assert (a.mismatch > 1) is not links

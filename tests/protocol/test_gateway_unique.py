"""One IKE SA per auto policy and peer, whoever initiated it: two gateways with auto policies towards
each other, in memory. Configuration re-evaluation (``start()`` after every shell command) never opens a
second IKE SA; a peer's re-initiation, make-before-break re-authentication, INITIAL_CONTACT and a
simultaneous start all end with exactly one IKE SA on both sides."""

from __future__ import annotations

from ikegate.gateway.controller import SUPERSEDED_GRACE, Gateway
from ikegate.sad import IkeSaEntry, Role
from tests.protocol.netsim import Net, lab_config

#: Branch1's mirror image: an auto policy on the HQ address towards the branch.
MIRROR = {
    "sysname Branch1": "sysname Hq2",
    "remote-address 127.0.0.11": "remote-address 127.0.0.12",
    "ip address 127.0.0.12 255.0.0.0": "ip address 127.0.0.11 255.0.0.0",
    "source 10.1.1.0 0.0.0.255 destination 10.0.0.0 0.0.0.255":
        "source 10.0.0.0 0.0.0.255 destination 10.1.1.0 0.0.0.255",
    "ip address 10.1.1.1": "ip address 10.0.0.1",
}


def _pair() -> tuple[Net, Gateway, Gateway]:
    net = Net()
    a = net.add(Gateway(lab_config("branch1")))
    b = net.add(Gateway(lab_config("branch1", MIRROR)))
    return net, a, b


def _ike(gw: Gateway) -> list[IkeSaEntry]:
    return [e for e in gw.sad.entries() if isinstance(e, IkeSaEntry)]


def _commands(net: Net, *gws: Gateway, times: int = 5) -> None:
    """What the daemon does after every shell command, repeated, with time passing in between."""
    for _ in range(times):
        for gw in gws:
            gw.reload(gw.config)
            gw.start(net.now)
        net.step(1.0)


def _one_each(a: Gateway, b: Gateway) -> tuple[IkeSaEntry, IkeSaEntry]:
    ia, ib = _ike(a), _ike(b)
    assert len(ia) == 1 and len(ib) == 1, (ia, ib)
    assert (ia[0].spi_i, ia[0].spi_r) == (ib[0].spi_i, ib[0].spi_r)
    assert len(a.sad) == 2 and len(b.sad) == 2  # and one IPsec SA each
    return ia[0], ib[0]


def test_peer_initiated_auto_sa_is_not_duplicated_by_commands() -> None:
    net, a, b = _pair()
    b.start(net.now)
    net.pump()
    ours, _ = _one_each(a, b)
    assert ours.role is Role.RESPONDER
    _commands(net, a, b)
    again, _ = _one_each(a, b)
    assert again.conn_id == ours.conn_id
    assert a.stats.negotiations_started == 0


def test_peer_reinitiates_after_terminate_and_commands_follow() -> None:
    net, a, b = _pair()
    a.start(net.now)
    net.pump()
    _one_each(a, b)
    # The peer terminates and initiates again at once (swanctl --terminate; swanctl --initiate).
    assert b.reset_ike_sa(net.now) == 2
    net.pump()
    ours, _ = _one_each(a, b)
    assert ours.role is Role.RESPONDER  # the peer came back before our own retry was due
    _commands(net, a, b, times=10)  # our retry time passes too
    assert _one_each(a, b)[0].conn_id == ours.conn_id


def _second_sa_from_the_peer() -> tuple[Net, Gateway, Gateway, IkeSaEntry]:
    """Our auto policy's IKE SA is up; a while later the peer sets up a new one with the same identity
    (the first half of a make-before-break re-authentication). Returns the old SA's entry on our side."""
    net, a, b = _pair()
    a.start(net.now)
    net.pump()
    old, _ = _one_each(a, b)
    net.step(5.0)
    conn = next(iter(b._conns.values()))
    assert b._initiate(conn, net.now) is not None
    net.pump()
    assert len(_ike(a)) == 2 and len(_ike(b)) == 2
    return net, a, b, old


def test_make_before_break_reauthentication_by_the_peer() -> None:
    net, a, b, old = _second_sa_from_the_peer()
    _commands(net, a, times=1)
    assert len(_ike(a)) == 2  # nothing new from the commands in between
    b.reset_ike_sa(net.now, conn_id=next(e.conn_id for e in _ike(b) if (e.spi_i, e.spi_r) == (old.spi_i, old.spi_r)))
    net.pump()
    new, _ = _one_each(a, b)
    assert new.conn_id != old.conn_id and new.role is Role.RESPONDER
    _commands(net, a, b, times=int(SUPERSEDED_GRACE) + 5)  # the old SA's end brought nothing back
    assert _one_each(a, b)[0].conn_id == new.conn_id
    assert a.stats.negotiations_started == 1


def test_superseded_sa_the_peer_keeps_is_deleted_after_its_grace() -> None:
    net, a, b, old = _second_sa_from_the_peer()  # and the peer never deletes the old one
    _commands(net, a, b, times=int(SUPERSEDED_GRACE) + 5)
    new, _ = _one_each(a, b)
    assert (new.spi_i, new.spi_r) != (old.spi_i, old.spi_r)
    assert "phase1 sa replace" in {r.reason for r in a.sad.offline.entries()}


def test_initial_contact_from_a_restarted_peer() -> None:
    net, a, b = _pair()
    a.start(net.now)
    net.pump()
    old, _ = _one_each(a, b)
    # The peer restarts without its state and initiates with INITIAL_CONTACT.
    fresh = Gateway(lab_config("branch1", MIRROR))
    net.add(fresh)
    fresh.start(net.now)
    net.pump()
    _commands(net, a, fresh, times=int(SUPERSEDED_GRACE) + 5)
    new, _ = _one_each(a, fresh)
    assert new.conn_id != old.conn_id
    assert "initial contact" in {r.reason for r in a.sad.offline.entries()}


def test_simultaneous_start_settles_on_one_sa() -> None:
    net, a, b = _pair()
    a.start(net.now)
    b.start(net.now)
    net.pump()
    _commands(net, a, b, times=int(SUPERSEDED_GRACE) + 5)
    ours, theirs = _one_each(a, b)
    _commands(net, a, b, times=5)
    assert _one_each(a, b) == (ours, theirs)


def test_winner_lost_while_the_superseded_sa_lingers_comes_back() -> None:
    """The peer's new IKE SA won, then died before the old one was gone: the policy is brought up again
    once the superseded SA is retired (nothing is left waiting for an SA that no longer serves)."""
    net, a, b, old = _second_sa_from_the_peer()
    new = next(e for e in _ike(a) if e.conn_id != old.conn_id)
    net.drop = lambda data, src, dst: True  # the peer hears nothing of it
    a.reset_ike_sa(net.now, conn_id=new.conn_id)
    net.pump()
    net.drop = lambda data, src, dst: False
    net.step(SUPERSEDED_GRACE + 10)
    assert all(e.conn_id not in (old.conn_id, new.conn_id) for e in _ike(a))
    assert len(_ike(a)) == 1 and len(a.sad) == 2

"""EngineBase alone, through a toy version (a test double): the bad-input guard, retransmission with its
unhook-then-timeout order, and the IKE SA's own lifetimes."""

from __future__ import annotations

import itertools

import pytest

from ikegate.ike.core.base import EngineBase
from ikegate.ike.core.config import Addr, IkeSaConfig
from ikegate.ike.core.errors import ProtocolViolation
from ikegate.ike.core.window import Retransmission

LOCAL: Addr = ("192.0.2.1", 500)
PEER: Addr = ("198.51.100.1", 500)


class Toy(EngineBase):
    """Raises what it is told to from ``_receive`` and records what the base asks of it."""

    BAD_INPUT = (ValueError,)

    def _setup(self, now: float) -> None:
        self.raise_next: Exception | None = None
        self.log: list[str] = []

    def _receive(self, data: bytes, addr: Addr, now: float, local: Addr | None) -> None:
        if self.raise_next is not None:
            raise self.raise_next
        self._note_peer(addr, local, now)

    def _unhook(self, req: Retransmission) -> None:
        self.log.append("unhook")

    def _hard_expiry(self, now: float) -> None:
        self.log.append(f"expired@{now}")

    def rekey_ike(self, now: float) -> None:
        self.log.append(f"rekey@{now}")


def _toy() -> Toy:
    counter = itertools.count(1)
    cfg = IkeSaConfig([], b"k", (1, bytes(4)), retransmit_base=1.0, retransmit_tries=2)
    return Toy(cfg, initiator=True, local=LOCAL, peer=PEER, now=0.0, rng=lambda n: bytes([next(counter)]) * n)


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="initiator needs"):
        Toy(None, initiator=True, local=LOCAL, peer=PEER, now=0.0)
    with pytest.raises(ValueError, match="responder needs"):
        Toy(None, initiator=False, local=LOCAL, peer=PEER, now=0.0)


def test_bad_input_is_dropped_a_violation_surfaces() -> None:
    sa = _toy()
    sa.raise_next = ValueError("garbage")
    sa.receive_datagram(b"x", PEER, 1.0)
    assert sa.stats.dropped == 1
    sa.raise_next = ProtocolViolation("bug")
    with pytest.raises(ProtocolViolation):
        sa.receive_datagram(b"x", PEER, 2.0)
    sa.raise_next = KeyError("not listed as bad input for this version")
    with pytest.raises(KeyError):
        sa.receive_datagram(b"x", PEER, 3.0)
    assert sa.stats.dropped == 1


def test_authentic_message_moves_the_peer_and_counts() -> None:
    sa = _toy()
    sa.receive_datagram(b"x", ("198.51.100.1", 4500), 5.0, local=("192.0.2.1", 4500))
    assert (sa.peer, sa.local, sa.last_received, sa.stats.messages_in) == (
        ("198.51.100.1", 4500), ("192.0.2.1", 4500), 5.0, 1)
    sa.note_inbound(9.0)  # ESP seen later than the next IKE message's timestamp: liveness never goes back
    sa.receive_datagram(b"x", ("198.51.100.1", 4500), 7.0)
    assert sa.last_received == 9.0


def test_retransmit_then_unhook_before_timeout() -> None:
    sa = _toy()
    events: list[str] = []
    req = sa._window.arm(Retransmission(b"req", lambda t: events.append(f"timeout@{t}")), 0.0, sa.config)
    sa._retransmit(req, 1.0)
    sa._retransmit(req, req.deadline)
    assert [d[0] for d in sa.datagrams_to_send()] == [b"req", b"req"]
    assert sa.stats.retransmits == 2 and sa.stats.messages_out == 2
    sa._retransmit(req, req.deadline)
    assert sa.log == ["unhook"] and events == ["timeout@7.0"]
    assert sa.datagrams_to_send() == []


def test_ike_lifetimes() -> None:
    sa = _toy()
    sa._rekey_at, sa._expire_at = 90.0, 100.0
    assert sa._ike_lifetimes(50.0) and sa.log == []
    assert sa._ike_lifetimes(90.0) and sa.log == ["rekey@90.0"] and sa.rekey_at is None
    assert not sa._ike_lifetimes(100.0)
    assert sa.log == ["rekey@90.0", "expired@100.0"] and sa.expire_at is None
    assert sa._ike_lifetimes(200.0)  # nothing left to fire

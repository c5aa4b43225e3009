"""The ordering constraint of the Delete pacing: "this datagram only after that one has gone, and at least
one tick later", with the clock stepped by hand."""

from __future__ import annotations

import pytest

from ikegate.gateway.sendorder import OrderedSends

TICK = 0.01


def test_unconstrained_items_go_at_once_in_order() -> None:
    q: OrderedSends[str] = OrderedSends(TICK)
    q.submit("a", 1.0)
    q.submit("b", 1.0)
    assert len(q) == 2 and q.next_time() == 1.0
    assert q.due(1.0) == ["a", "b"]
    assert len(q) == 0 and q.next_time() is None and q.due(5.0) == []


def test_follower_goes_one_tick_after_its_leader() -> None:
    q: OrderedSends[str] = OrderedSends(TICK)
    esp = q.submit("esp", 1.0)
    q.submit("isakmp", 1.0, after=esp)
    assert q.due(1.0) == ["esp"]
    assert esp.sent_at == 1.0 and len(q) == 1
    assert q.next_time() == pytest.approx(1.0 + TICK)
    assert q.due(1.0 + TICK / 2) == []  # not before the gap
    assert q.due(1.0 + TICK) == ["isakmp"]
    assert len(q) == 0


def test_follower_waits_for_a_held_leader_and_counts_from_when_it_went() -> None:
    q: OrderedSends[str] = OrderedSends(TICK)
    a = q.submit("a", 0.0)
    b = q.submit("b", 0.0, after=a)
    q.submit("c", 0.0, after=b)  # b is itself held: c waits for it
    assert q.due(0.0) == ["a"]
    # the caller comes back late: b goes then, and c's gap counts from that moment, not from b's due time
    assert q.due(0.5) == ["b"] and b.sent_at == 0.5
    assert q.next_time() == pytest.approx(0.5 + TICK)
    assert q.due(0.5 + TICK) == ["c"]


def test_leader_long_gone_does_not_delay() -> None:
    q: OrderedSends[str] = OrderedSends(TICK)
    a = q.submit("a", 0.0)
    assert q.due(0.0) == ["a"]
    q.submit("b", 3.0, after=a)
    assert q.due(3.0) == ["b"]


def test_many_chains_interleave_by_time_then_submission() -> None:
    """A reset burst: every SA's ESP Delete at once, every ISAKMP Delete one tick later, in SA order."""
    q: OrderedSends[str] = OrderedSends(TICK)
    for n in range(3):
        q.submit(f"isakmp{n}", 0.0, after=q.submit(f"esp{n}", 0.0))
    assert q.due(0.0) == ["esp0", "esp1", "esp2"]
    assert q.due(TICK) == ["isakmp0", "isakmp1", "isakmp2"]


def test_gap_must_be_positive() -> None:
    with pytest.raises(ValueError):
        OrderedSends(0.0)

"""Anti-replay window (RFC 4303 §3.4.3): slide, too old, duplicates, jumps, sizes 64 and 1024."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ikegate.dataplane.replay import MAX_SEQ, ReplayWindow


def accept(w: ReplayWindow, seq: int) -> bool:
    """What the receive path does: check, then (the ICV being fine) update."""
    if not w.check(seq):
        return False
    w.update(seq)
    return True


@pytest.mark.parametrize("size", [64, 1024])
def test_in_order_then_duplicates(size: int) -> None:
    w = ReplayWindow(size)
    assert all(accept(w, s) for s in range(1, 3 * size))
    assert w.top == 3 * size - 1
    assert not any(w.check(s) for s in range(2 * size, 3 * size))  # each one is a duplicate


@pytest.mark.parametrize("size", [64, 1024])
def test_left_edge(size: int) -> None:
    w = ReplayWindow(size)
    top = size + 100
    assert accept(w, top)
    assert w.check(top - size + 1)  # the oldest number still inside the window
    assert not w.check(top - size)  # one further left: too old
    assert not w.check(1)
    assert accept(w, top - size + 1)
    assert not w.check(top - size + 1)


@pytest.mark.parametrize("size", [64, 1024])
def test_out_of_order_inside_window(size: int) -> None:
    w = ReplayWindow(size)
    assert accept(w, 10)
    assert accept(w, 7)
    assert accept(w, 9)
    assert not w.check(7) and not w.check(9) and not w.check(10)
    assert w.check(8) and w.check(1)
    assert w.top == 10


@pytest.mark.parametrize("size", [64, 1024])
def test_jump_ahead_clears_history(size: int) -> None:
    w = ReplayWindow(size)
    for s in range(1, 50):
        accept(w, s)
    jump = 10 * size
    assert accept(w, jump)
    assert w.top == jump
    assert not w.check(49)  # now far left of the window
    assert w.check(jump - 1)
    assert w.seen(jump) and not w.seen(jump - 1)


@pytest.mark.parametrize("size", [64, 1024])
def test_jump_by_less_than_window_keeps_bits(size: int) -> None:
    w = ReplayWindow(size)
    accept(w, 5)
    accept(w, 3)
    accept(w, 5 + size - 3)  # slide by size - 3: 5 and 3 are now 3 and size - 1 behind
    assert not w.check(5)
    assert not w.check(3)  # exactly at the left edge and received: duplicate
    assert w.check(4)
    accept(w, 5 + size - 2)  # slide one more: 3 falls out of the window
    assert not w.check(3)  # too old now
    assert w.check(4)  # still inside and never received
    assert not w.check(5)


def test_zero_and_beyond_32_bits_refused() -> None:
    w = ReplayWindow(64)
    assert not w.check(0)
    assert w.check(MAX_SEQ)
    assert not w.check(MAX_SEQ + 1)
    accept(w, MAX_SEQ)
    assert not w.check(MAX_SEQ)


def test_update_without_new_packet_is_idempotent() -> None:
    w = ReplayWindow(64)
    accept(w, 100)
    w.update(100)
    w.update(99)
    w.update(99)
    assert w.top == 100 and w.seen(99) and w.seen(100) and not w.seen(98)


def test_size_zero_disables_checking() -> None:
    w = ReplayWindow(0)
    assert accept(w, 5)
    assert accept(w, 5)  # a duplicate passes: anti-replay is off
    assert accept(w, 1)
    assert w.top == 5
    assert not w.check(0)


def test_negative_size_refused() -> None:
    with pytest.raises(ValueError):
        ReplayWindow(-1)


@given(st.sampled_from([32, 64, 1024]), st.lists(st.integers(1, 5000), max_size=300))
def test_matches_a_set_model(size: int, seqs: list[int]) -> None:
    """Against the obvious model: accept iff unseen and within ``size`` of the highest accepted."""
    w = ReplayWindow(size)
    seen: set[int] = set()
    top = 0
    for s in seqs:
        expected = s not in seen and s > top - size
        assert accept(w, s) is expected
        if expected:
            seen.add(s)
            top = max(top, s)
    assert w.top == top

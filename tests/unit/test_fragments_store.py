"""The protocol-neutral part of IKE fragmentation: sizes, configuration and the bounded store."""

from __future__ import annotations

import pytest

from ikegate.ike.fragments import (
    DEFAULT_FRAGMENT_SIZE,
    ENTRY_COST,
    FragmentationConfig,
    FragmentLimits,
    FragmentStore,
)


def test_configuration_defaults_and_budgets() -> None:
    cfg = FragmentationConfig()
    assert cfg.enabled and cfg.fragment_size == DEFAULT_FRAGMENT_SIZE == 1280
    assert cfg.budget(4, natt=False) == 1252 and cfg.budget(6, natt=True) == 1228
    safe = FragmentationConfig(fragment_size=0)
    assert safe.budget(4, natt=True) == 576 - 32 and safe.budget(6, natt=False) == 1232
    with pytest.raises(ValueError):
        FragmentationConfig(fragment_size=50)
    with pytest.raises(ValueError):
        FragmentLimits(max_fragments=0)
    with pytest.raises(ValueError):
        FragmentLimits(timeout=0)


def test_store_charges_every_fragment_and_releases_on_discard() -> None:
    store = FragmentStore(FragmentLimits(max_held=10_000))
    a = store.open("a", 0.0, total=3)
    assert store.put(a, 1, b"x" * 100) and store.put(a, 3, b"")
    assert store.held == 100 + 2 * ENTRY_COST  # an empty fragment still costs its bookkeeping
    assert not store.put(a, 1, b"y" * 100)  # a duplicate changes nothing
    assert store.stats.duplicate == 1 and a.parts[1] == b"x" * 100
    assert store.put(a, 2, b"z")
    assert a.complete and store.take(a) == b"x" * 100 + b"z"
    assert store.held == 0 and len(store) == 0


def test_store_limits_discard_the_whole_message() -> None:
    store = FragmentStore(FragmentLimits(max_fragments=3, max_message=250, max_held=600))
    a = store.open("a", 0.0)
    for n in (1, 2, 3):
        assert store.put(a, n, b"a" * 50)
    assert not store.put(a, 4, b"a")  # a fourth fragment
    assert store.stats.over_limit == 1 and len(store) == 0 and store.held == 0
    b = store.open("b", 0.0)
    assert store.put(b, 1, b"b" * 200) and not store.put(b, 2, b"b" * 51)  # 251 bytes in one message
    assert store.held == 0
    c, d = store.open("c", 0.0), store.open("d", 0.0)
    assert store.put(c, 1, b"c" * 240)
    assert store.put(d, 1, b"d" * 200)
    assert not store.put(d, 2, b"d" * 40)  # the SA's total would pass 600 with the bookkeeping
    assert store.held == 240 + ENTRY_COST and len(store) == 1  # d went, c stays


def test_store_evicts_the_oldest_and_times_out() -> None:
    store = FragmentStore(FragmentLimits(max_pending=2, timeout=10.0))
    for i, key in enumerate("abc"):
        store.put(store.open(key, float(i)), 1, b"k")
    assert store.stats.evicted == 1 and store.get("a", 2.0) is None and store.get("b", 2.0) is not None
    assert store.next_deadline() == 11.0
    assert store.get("b", 11.0) is None and store.stats.timed_out == 1  # looked up past its deadline
    store.expire(12.0)
    assert store.stats.timed_out == 2 and len(store) == 0 and store.held == 0 and store.next_deadline() is None

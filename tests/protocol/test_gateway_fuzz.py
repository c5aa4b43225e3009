"""200,000 mutated IKEv2, IKEv1 and ESP datagrams at a gateway holding live SAs, in memory.

The corpus is every datagram of real exchanges (see :mod:`tests.protocol.fuzzer`). Nothing may raise,
the live SAs must keep their SPIs and carry traffic afterwards, the half-open table must come back to
its size before, and memory must level off: RSS grows less than 10 MB (measured after a warm-up, so the
caches' and tables' first fill is not counted). ``IKEGATE_FUZZ_COUNT`` changes the count; ``make fuzz``
(bench/fuzz.py) runs millions.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

from ikegate.gateway.admission import HALF_OPEN_LIFETIME
from tests.protocol.fuzzer import bed, storm

COUNT = int(os.environ.get("IKEGATE_FUZZ_COUNT", "200000"))
MB = 1024


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_gateway_with_live_sas_survives_fuzzing() -> None:
    b = bed()
    live = b.live()
    half_open = len(b.hq._half_open)
    for _ in storm(b, 20000, seed=1):  # warm-up: caches and tables take their working size
        pass
    b.net.step(HALF_OPEN_LIFETIME + 1)
    gc.collect()
    before = rss_kb()
    peak = 0
    for _ in storm(b, COUNT, seed=2):
        peak = max(peak, len(b.hq._half_open))
    b.net.step(HALF_OPEN_LIFETIME + 1)
    gc.collect()
    grown = rss_kb() - before
    st = b.hq.stats
    assert peak > 0 and st.dropped > COUNT // 4 and st.esp_dropped > 0  # the storm reached every path
    assert b.live() == live
    assert all(sa.established for sa in b.hq.engines()) and len(b.hq.engines()) == 2
    assert b.pings(100) == [(1, 100), (2, 100)]
    assert len(b.hq._half_open) == half_open
    assert grown < 10 * MB, f"RSS grew {grown} kB over {COUNT} datagrams"

"""Fuzzing a gateway that holds live SAs, in memory, for as long as you like (``make fuzz``: 10 million).

Mutated IKEv2, IKEv1 and ESP datagrams from real exchanges (tests/protocol/fuzzer.py) at 10,000 per
simulated second; prints datagrams/s, RSS before and after (and along the way), the half-open table,
and checks at the end that the live SAs kept their SPIs and still carry traffic. Also prints what one
half-open SA costs (tracemalloc), for IKEv2 and IKEv1.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.protocol.fuzzer import HQ_WAN, SUITE, V1, bed, storm
from tests.protocol.netsim import Net, lab_config

from ikegate.gateway.admission import HALF_OPEN_LIFETIME
from ikegate.gateway.controller import Gateway


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def half_open_cost(version: int, n: int = 2000) -> float:
    """Bytes kept per half-open responder SA: ``n`` spoofed opening messages, tracemalloc before/after."""
    net = Net()
    hq = net.add(Gateway(lab_config("hq", SUITE)))
    br = net.add(Gateway(lab_config("branch1", {**SUITE, **V1} if version == 1 else SUITE)))
    br.start(0.0)
    first = next(d for d, _s, dst in br.datagrams_to_send() if dst[0] == HQ_WAN)
    hq.config.ike_admission.per_address = hq.config.ike_admission.in_negotiation = 10 * n
    hq._cookies.threshold = 10 * n
    rnd = random.Random(version)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(n):
        hq.receive_datagram(rnd.randbytes(8) + first[8:], (HQ_WAN, 500), (f"10.9.{i >> 8}.{i & 255}", 500), 0.0)
        hq.datagrams_to_send()
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    assert len(hq._half_open) == n
    return sum(s.size_diff for s in after.compare_to(before, "filename")) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=1_000_000, help="datagrams (make fuzz: 10 million)")
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--every", type=int, default=1_000_000, help="print a line every N datagrams")
    args = ap.parse_args()
    for version in (2, 1):
        print(f"half-open IKEv{version} SA: {half_open_cost(version) / 1024:.1f} kB each (tracemalloc)")
    b = bed()
    live = b.live()
    for _ in storm(b, 20000, seed=1):
        pass
    b.net.step(HALF_OPEN_LIFETIME + 1)
    gc.collect()
    rss0, start, peak = rss_mb(), time.monotonic(), 0
    print(f"RSS after warm-up {rss0:.1f} MB; {len(b.corpus)} seed datagrams")
    for done in storm(b, args.n, seed=args.seed):
        peak = max(peak, len(b.hq._half_open))
        if done % args.every == 0:
            rate = done / (time.monotonic() - start)
            print(f"{done:>10,} datagrams  {rate:,.0f}/s  RSS {rss_mb():.1f} MB  half-open {len(b.hq._half_open)}",
                  flush=True)
    elapsed = time.monotonic() - start
    b.net.step(HALF_OPEN_LIFETIME + 1)
    gc.collect()
    st = b.hq.stats
    ok = b.live() == live and b.pings(100) == [(1, 100), (2, 100)]
    print(f"{args.n:,} datagrams in {elapsed:.1f} s: {args.n / elapsed:,.0f}/s")
    print(f"RSS {rss0:.1f} -> {rss_mb():.1f} MB; half-open peak {peak}, now {len(b.hq._half_open)}; "
          f"engines {len(b.hq.engines())}")
    print(f"dropped {st.dropped:,}, ESP dropped {st.esp_dropped:,}, malformed openings {st.openings_malformed:,}, "
          f"refused {st.openings_refused:,}, half-open expired {st.half_open_expired:,}")
    print(f"live SAs untouched and carrying traffic: {'yes' if ok else 'NO'}")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()

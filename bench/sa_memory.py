"""What the responder keeps per IKE SA + Child SA, by type and by allocation site (Python heap only).

Both gateways run in memory as in ``profile_responder.py``; after N set-ups the objects reachable from HQ
(its gateway, engines, SA database, dataplane, log buffer) that were not there before the load are
counted by type with ``sys.getsizeof``, so the figure is HQ's alone, not the branch's. tracemalloc then
gives the allocation sites of the same growth (both gateways, so divide by two for one side roughly).
Native memory (OpenSSL contexts inside ``cryptography`` objects) shows only in the RSS figure of
``setup_rate.py``.

    python sa_memory.py [-n 2000] [--top 20] [--version 1|2]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
from collections import Counter
from types import FunctionType, ModuleType

from profile_responder import Pump, gateways

_SKIP = (type, ModuleType, FunctionType)


def reachable(root: object) -> dict[int, object]:
    """Objects reachable from ``root`` through gc referents (classes, modules and functions excluded:
    they are code, shared by every SA)."""
    seen: dict[int, object] = {}
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _SKIP):
            continue
        seen[id(obj)] = obj
        stack.extend(gc.get_referents(obj))
    return seen


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--version", type=int, choices=(1, 2), default=2, help="1: Main + Quick Mode, MODP-2048")
    args = ap.parse_args()
    with open("/dev/null", "w", buffering=1) as devnull:
        hq, br = gateways(devnull, args.version)
        hq.start(0.0)
        br.start(0.0)
        pump = Pump(hq, br, None)
        pump.run()
        before = reachable(hq)
        tracemalloc.start(1)
        snap0 = tracemalloc.take_snapshot()
        br.load(pump.now, args.n, 64)
        pump.run()
        gc.collect()
        snap1 = tracemalloc.take_snapshot()
        tracemalloc.stop()
        assert hq.sad.count(phase=1) == args.n and hq.sad.count(phase=2) == args.n
        after = reachable(hq)
    grown = [obj for key, obj in after.items() if key not in before]
    by_type: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for obj in grown:
        name = type(obj).__qualname__
        by_type[name] += sys.getsizeof(obj)
        counts[name] += 1
    total = sum(by_type.values())
    n = args.n
    print(f"HQ's Python objects per IKE SA + Child SA after {n} set-ups: {total / n:,.0f} bytes "
          f"({len(grown) / n:.1f} objects)")
    print(f"{'bytes/SA':>9} {'objs/SA':>8}  type")
    for name, size in by_type.most_common(args.top):
        print(f"{size / n:9.0f} {counts[name] / n:8.2f}  {name}")
    stats = snap1.compare_to(snap0, "lineno")
    grew = sum(s.size_diff for s in stats)
    print(f"\ntracemalloc, both gateways: {grew / n:,.0f} bytes per SA pair; top allocation sites (bytes per SA):")
    for stat in stats[: args.top]:
        frame = stat.traceback[0]
        where = frame.filename.split("/src/")[-1] if "/src/" in frame.filename else frame.filename.rsplit("/", 1)[-1]
        print(f"{stat.size_diff / n:9.0f}  {where}:{frame.lineno}")


if __name__ == "__main__":
    main()

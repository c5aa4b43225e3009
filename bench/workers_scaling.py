"""IKEv2 setup rate of an ikegate responder with 1, 2, 4 … placement workers (``ikegate run --workers N``).

The initiator is another ikegate (its own ``--workers``, default 2) on loopback, negotiating ``-n`` extra IKE
SAs with one Child SA each (PSK, X25519, AES-GCM-16-256) through the benchmark ``load`` request; the
responder's per-address admission limit is lifted (the load comes from one address). For each responder
worker count it prints SAs/s (until the responder holds them all), the responder's CPU per SA summed over
the supervisor and its workers, how the responder's IKE SAs spread over its workers, and the misrouted
datagram counter (0 when the kernel's SO_REUSEPORT steering works).

On a 2-core machine the initiator and the responder share the cores, so the curve flattens at 2 workers
and 4 workers only add context switches: read it with the CPU per SA, which says what a core costs.

    .venv/bin/python bench/workers_scaling.py -n 2000 --workers 1 --workers 2 --workers 4
"""

from __future__ import annotations

import argparse
import collections
import os
import time

from _procs import pair, wait_sas


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("-n", type=int, default=2000, help="IKE SAs per run (default: %(default)s)")
    ap.add_argument("--workers", type=int, action="append", help="responder workers (repeatable; default 1 2 4)")
    ap.add_argument("--initiator-workers", type=int, default=2, help="default: %(default)s")
    ap.add_argument("--concurrency", type=int, default=128, help="in flight, all initiator workers (default: "
                                                                  "%(default)s)")
    ap.add_argument("--port", type=int, default=26000)
    args = ap.parse_args()
    load = os.getloadavg()
    print(f"IKEv2 setup rate vs responder workers: {args.n} IKE + Child SAs, X25519/AES-GCM-16-256/PSK, "
          f"initiator ikegate --workers {args.initiator_workers}, {args.concurrency} in flight, loopback; "
          f"{os.cpu_count()} CPUs, load average before {load[0]:.2f}")
    print(f"  {'workers':>7} {'setups/s':>9} {'resp ms CPU/SA':>15} {'init ms CPU/SA':>15} "
          f"{'misrouted':>9}  SAs per worker")
    for n in args.workers or [1, 2, 4]:
        with pair(port=args.port, workers=(n, args.initiator_workers)) as (hq, br):
            cpu0, icpu0 = hq.cpu_seconds(), br.cpu_seconds()
            start = time.monotonic()
            br.call("load", count=args.n, concurrency=args.concurrency)
            end = wait_sas(hq, args.n)
            cpu, icpu = hq.cpu_seconds() - cpu0, br.cpu_seconds() - icpu0
            stats = hq.call("stats")["stats"]
            spread = collections.Counter((r["conn_id"] - 1) % n for r in hq.call("sas")["sas"] if r["phase"] == 1)
        rate = args.n / (end - start)
        print(f"  {n:>7} {rate:>9.0f} {1000 * cpu / args.n:>15.3f} {1000 * icpu / args.n:>15.3f} "
              f"{stats['misrouted']:>9}  {[spread[i] for i in range(n)]}", flush=True)
        args.port += 2


if __name__ == "__main__":
    main()

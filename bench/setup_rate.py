"""IKEv2 setup rate between two `ikegate run` processes on loopback.

N IKE SAs, each with one Child SA (in IKE_AUTH), PSK, X25519, AES-GCM-16-256, 64 negotiations in flight.
Prints SAs/s, responder CPU ms per SA, and peak RSS per 1,000 SAs of each process.
Reference (strongSwan 5.9.8 load-tester, same machine class, FINDINGS.md §5): ~1,200 SAs/s, responder
0.45 ms CPU per SA, 14 MB per 1,000 SAs.
"""

from __future__ import annotations

import argparse
import time

from _procs import add_worker_options, describe_workers, pair, wait_sas, worker_options


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--version", type=int, choices=(1, 2), default=2,
                    help="2: IKE_SA_INIT+IKE_AUTH; 1: Main Mode + Quick Mode (AES-CBC-256, MODP-2048)")
    add_worker_options(ap)
    args = ap.parse_args()
    with pair(version=args.version, workers=worker_options(args)) as (hq, br):
        time.sleep(0.3)
        rss0 = {"responder": hq.rss_kb(), "initiator": br.rss_kb()}
        cpu0 = hq.cpu_seconds()
        icpu0 = br.cpu_seconds()
        start = time.monotonic()
        br.call("load", count=args.n, concurrency=args.concurrency)
        end = wait_sas(br, args.n)
        elapsed = end - start
        wait_sas(hq, args.n)
        cpu = hq.cpu_seconds() - cpu0
        icpu = br.cpu_seconds() - icpu0
        peak = {"responder": hq.rss_kb("VmHWM"), "initiator": br.rss_kb("VmHWM")}
        failed = br.call("stats")["stats"]["negotiations_failed"]
    suite = "X25519/AES-GCM-16-256/PSK" if args.version == 2 else "Main+Quick Mode, MODP-2048/AES-CBC-256/SHA2-256/PSK"
    print(f"IKEv{args.version} setup rate, {args.n} IKE SAs + {args.n} IPsec SAs, {suite}, "
          f"{args.concurrency} in flight, two gateways on loopback ({describe_workers(worker_options(args))})")
    print(f"  setup rate           : {args.n / elapsed:8.0f} SAs/s   ({elapsed:.2f} s)")
    print(f"  responder CPU per SA : {1000 * cpu / args.n:8.3f} ms")
    print(f"  initiator CPU per SA : {1000 * icpu / args.n:8.3f} ms")
    for role in ("responder", "initiator"):
        per_k = (peak[role] - rss0[role]) / 1024 / (args.n / 1000)
        print(f"  {role:9} RSS        : {peak[role] / 1024:6.1f} MB peak, {per_k:6.2f} MB per 1,000 SAs")
    print(f"  failures             : {failed or 'none'}")
    print("  strongSwan 5.9.8 reference: ~1,200 SAs/s, 0.45 ms responder CPU/SA, 14 MB per 1,000 SAs")


if __name__ == "__main__":
    main()

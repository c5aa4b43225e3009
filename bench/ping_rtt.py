"""Round trip of one ping between two `ikegate run` processes on loopback, through the ESP tunnel.

Branch1 (auto) pings HQ's protected-side address; the figure is the median of the `time=` values the
VRP ping prints (ms resolution), plus the wall time of N pings through the control socket.
"""

from __future__ import annotations

import argparse
import re
import statistics
import time

from _procs import pair


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=50)
    args = ap.parse_args()
    with pair(port=25200, trigger="auto") as (_hq, br):
        for _ in range(200):
            if br.call("stats")["stats"]["ipsec_sas"]:
                break
            time.sleep(0.02)
        br.call("shell", lines=["ping -a 10.1.1.1 -c 3 10.0.0.1"])  # warm up
        start = time.monotonic()
        out = br.call("shell", lines=[f"ping -a 10.1.1.1 -c {args.n} 10.0.0.1"])["output"]
        wall = time.monotonic() - start
    rtts = [int(x) for x in re.findall(r"time=(\d+) ms", out)]
    print(f"ping through the tunnel, {args.n} echo requests, Branch1 -> HQ, AES-GCM-16-256 ESP-in-UDP")
    print(f"  replies              : {len(rtts)}/{args.n}")
    print(f"  median / max RTT     : {statistics.median(rtts):.0f} / {max(rtts)} ms (VRP prints whole ms)")
    print(f"  wall time per ping   : {1000 * wall / args.n:.2f} ms (sequential, incl. control socket)")


if __name__ == "__main__":
    main()

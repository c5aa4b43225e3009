"""Idle round trip through the tunnel, and the gateways' CPU per round trip (user and system apart).

Same four namespaces as ``bench/dataplane_vs_libipsec.py`` (hostA -- gwA == WAN == gwB -- hostB), the same
pairs (ikegate, strongSwan kernel-libipsec, optionally an older ikegate from ``--baseline SRC``), alternating
round by round. Per pair and round: ``--pings`` echoes 2 ms apart (each crosses each gateway twice: four
passages per round trip), RTT median and 10th/90th percentiles, and the gateway processes' user and system
CPU (supervisor and workers summed, from /proc) divided by the echoes. At idle a passage is CPU bound:
the RTT difference to libipsec is about the CPU difference per round trip, and the user part is ours
(Python), the system part the kernel's forwarding inside our read/write/send calls.

    sudo .venv/bin/python bench/dataplane_rtt.py --rounds 3 [--workers 1] [--baseline ../main/src]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dataplane_vs_libipsec as dp
from _procs import family
from tests.interop.netns import HOST_B, Lab, two_sites

_RTT = re.compile(r"time=([\d.]+) ms")


def ticks(pids: list[int]) -> tuple[int, int]:
    """(user, system) clock ticks of ``pids`` and their descendants."""
    user = system = 0
    for pid in pids:
        for p in family(pid):
            try:
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            user += int(fields[11])
            system += int(fields[12])
    return user, system


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pings", type=int, default=1000)
    parser.add_argument("--cipher", default="gcm", choices=sorted(dp.CIPHERS))
    parser.add_argument("--workers", type=int, metavar="N", help="ikegate run --workers N")
    parser.add_argument("--baseline", type=Path, metavar="SRC", help="also ikegate imported from SRC")
    args = parser.parse_args(argv)
    try:
        dp.prerequisites()
    except dp.Skip as exc:
        print(f"skipped: {exc}")
        return 0
    kinds = ["libipsec", "ikegate"] + (["baseline"] if args.baseline else [])
    extra = ("--workers", str(args.workers)) if args.workers else ()
    rows: dict[str, list[tuple[float, float, float, float, float]]] = {k: [] for k in kinds}
    hz = os.sysconf("SC_CLK_TCK")
    with tempfile.TemporaryDirectory(prefix="ikg-rtt-") as tmp:
        lab = Lab(Path(tmp))
        try:
            a, b = two_sites(lab)
            for round_no in range(args.rounds):
                for kind in kinds if round_no % 2 == 0 else kinds[::-1]:
                    if kind == "libipsec":
                        pair = dp.libipsec_pair(lab, a, b, args.cipher, round_no)
                    else:
                        pair = dp.ikegate_pair(lab, a, b, args.cipher, args.baseline if kind == "baseline" else None,
                                               kind, extra=extra)
                    try:
                        dp.wait_until(lambda: a.host.exec("ping", "-c", "1", "-W", "1", HOST_B[4],
                                                          check=False).returncode == 0, f"{kind}: the tunnel")
                        a.host.exec("ping", "-c", "50", "-i", "0.002", "-q", HOST_B[4], check=False)  # warm
                        before = ticks(pair.pids)
                        out = a.host.exec("ping", "-c", str(args.pings), "-i", "0.002", HOST_B[4], check=False,
                                          timeout=args.pings + 60)
                        after = ticks(pair.pids)
                    finally:
                        pair.stop()
                    rtts = sorted(float(t) for t in _RTT.findall(out.stdout))
                    n = max(1, len(rtts))
                    user = 1e6 * (after[0] - before[0]) / hz / n
                    system = 1e6 * (after[1] - before[1]) / hz / n
                    row = (statistics.median(rtts), rtts[n // 10], rtts[9 * n // 10], user, system)
                    rows[kind].append(row)
                    print(f"  round {round_no + 1} {kind:8}: RTT median {row[0]:.3f} ms (p10 {row[1]:.3f}, p90 "
                          f"{row[2]:.3f})  CPU per round trip: user {user:4.0f} us, system {system:4.0f} us",
                          flush=True)
        finally:
            lab.close()
    print(f"\nidle ping, {args.pings} echoes 2 ms apart, ESP {dp.CIPHERS[args.cipher][0]}, workers "
          f"{args.workers or 'default'}, medians over {args.rounds} round(s)")
    ref = [statistics.median(col) for col in zip(*rows["libipsec"], strict=True)]
    for kind in kinds:
        med = [statistics.median(col) for col in zip(*rows[kind], strict=True)]
        cpu, ref_cpu = med[3] + med[4], ref[3] + ref[4]
        print(f"{kind:9} RTT {med[0]:.3f} ms ({med[0] / ref[0]:.2f}x)  CPU/round trip user {med[3]:4.0f} us, "
              f"system {med[4]:4.0f} us, total {cpu:4.0f} us ({cpu / ref_cpu:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

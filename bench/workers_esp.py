"""ESP packets per second through one tunnel with 1 and 2 workers per gateway, one flow and many flows.

    hostA (192.0.2.10) -- gwA ==== WAN 198.51.100.0/24 ==== gwB -- hostB (192.0.2.74)

The four namespaces and the ikegate pair of ``bench/dataplane_vs_libipsec.py`` (ESP in UDP 4500, IKEv2,
AES-GCM-256 by default), both gateways started with ``--workers N``. Per N and round, from hostA to hostB:
iperf3 UDP with ``--length``-byte datagrams at an offered rate, one stream (one flow) and ``--flows``
streams (as many source ports: the multi-queue TUN spreads them over the workers' queues). The figure is
the packets hostB's iperf3 received per second; with it, what the gateways' ``stats`` say about the
workers: LAN packets handed over to the owner (a flow read by a worker that does not hold its SA), how many
of those went straight from worker to worker (the mesh, ``ikegate.workers.mesh``) and how many the mesh
dropped (the owner's inbox full), LAN packets read by a worker that does not own them (``lan_missteered``)
and datagrams misrouted by the kernel's steering. With more than one worker, each TUN steering
(``--tun-steering``: ``hash``, the kernel's flow hash and hand-over; ``ebpf``, the owner's queue, see
``ikegate.workers.tunsteer``) is measured in the same run, alternating.

One site-to-site tunnel is one peer, and every SA of one peer lives on one worker
(``ikegate.workers.steering.peer_owner``): with 2 workers the second one only reads TUN queues and hands
their packets over (over the mesh) with hash steering, or reads nothing of this tunnel with eBPF steering,
so "many flows" measures that path, not two workers each encrypting its own tunnel.

    sudo .venv/bin/python bench/workers_esp.py --rounds 1 --seconds 5

Needs root, iperf3 and namespaces (it prints why it skips otherwise). The figures swing with whatever else
runs on the machine; the workers compete for the same cores as the hosts' iperf3.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dataplane_vs_libipsec import CIPHERS, IPERF_PORT, Pair, ikegate_pair, iperf, wait_until
from tests.interop.netns import HOST_B, Lab, Site, two_sites
from tests.interop.netns import skip_reason as netns_skip_reason

#: the stats counters printed per test (what a gateway without one reports counts as 0)
COUNTERS = ("handed_over", "handed_direct", "handoff_dropped", "lan_missteered", "misrouted")


def measure(pair: Pair, a: Site, flows: int, args: argparse.Namespace) -> tuple[float, float, dict[str, int]]:
    """(delivered packets/s, loss %, the workers' counters' increase: ``COUNTERS``) of one UDP test: with
    ``--peers 2``, ``flows`` to each peer's network at once (IPv4 and IPv6 inside), summed."""
    host = a.host
    targets = [(HOST_B[4], IPERF_PORT), (HOST_B[6], IPERF_PORT + 1)][:args.peers]
    for dst, _ in targets:
        wait_until(lambda dst=dst: host.exec("ping", "-c", "1", "-W", "1", dst, check=False).returncode == 0,
                   "traffic through the tunnel")
    before = [p.call("stats")["stats"] for p in pair.procs]
    with ThreadPoolExecutor(len(targets)) as pool:
        ends = list(pool.map(lambda t: iperf(host, "-u", "-b", args.rate, "-l", str(args.length), "-P", str(flows),
                                             seconds=args.seconds, dst=t[0], port=t[1]), targets))
    after = [p.call("stats")["stats"] for p in pair.procs]
    delivered = sent_packets = rate = 0.0
    for end in ends:
        received = end.get("sum_received") or end["sum"]
        sent = end.get("sum_sent") or end["sum"]
        got = float(received["bytes"]) / args.length  # type: ignore[index]
        delivered += got
        rate += got / float(received.get("seconds") or args.seconds)  # type: ignore[union-attr]
        sent_packets += float(sent.get("packets", 0) or 0)  # type: ignore[union-attr]
    loss = 100.0 * (1 - delivered / sent_packets) if sent_packets else float("nan")
    counts = {c: sum(int(x.get(c, 0)) - int(y.get(c, 0)) for x, y in zip(after, before, strict=True))
              for c in COUNTERS}
    return rate, max(loss, 0.0), counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--workers", type=int, action="append", help="repeatable; default: 1 and 2")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seconds", type=int, default=5, help="length of each iperf3 test")
    parser.add_argument("--flows", type=int, default=8, help="iperf3 streams of the many-flows test")
    parser.add_argument("--length", type=int, default=512, help="UDP payload bytes per datagram")
    parser.add_argument("--rate", default="200M", help="iperf3 offered rate (-b), per stream")
    parser.add_argument("--cipher", default="gcm", choices=sorted(CIPHERS))
    parser.add_argument("--peers", type=int, choices=(1, 2), default=1,
                        help="2: gwA's second peer is gwB's IPv6 address (IPv6 inside), owned by the other worker; "
                             "the flows go to both peers at once")
    parser.add_argument("--steering", action="append", choices=("hash", "ebpf"),
                        help="TUN steering with workers (repeatable; default: both)")
    args = parser.parse_args(argv)
    args.workers = args.workers or [1, 2]
    runs = [(n, s) for n in args.workers for s in ((None,) if n == 1 else args.steering or ("hash", "ebpf"))]
    reason = netns_skip_reason()
    if reason:
        print(f"skipped: {reason}")
        return 0
    results: dict[tuple[tuple[int, str | None], int], list[tuple[float, float, dict[str, int]]]] = {}
    with tempfile.TemporaryDirectory(prefix="ikg-wesp-") as tmp:
        lab = Lab(Path(tmp))
        try:
            a, b = two_sites(lab)
            for port in range(IPERF_PORT, IPERF_PORT + args.peers):
                lab.spawn(b.host, ["iperf3", "-s", "-p", str(port)], lab.workdir / f"iperf3-{port}.log")
                wait_until(lambda port=port: f":{port} " in b.host.exec("ss", "-ltnH").stdout, "the iperf3 server")
            for round_no in range(args.rounds):
                for run in runs if round_no % 2 == 0 else runs[::-1]:
                    n, steering = run
                    extra = ("--workers", str(n), *(() if steering is None else ("--tun-steering", steering)))
                    pair = ikegate_pair(lab, a, b, args.cipher, kind=f"ikegate-w{n}{steering or ''}", extra=extra,
                                        peers=args.peers)
                    try:
                        for flows in (1, args.flows):
                            got = measure(pair, a, flows, args)
                            results.setdefault((run, flows), []).append(got)
                            print(f"  round {round_no + 1}, {_name(run)}, {flows} flow(s): {got[0]:9.0f} pps "
                                  f"({got[1]:4.1f} % lost, {got[2]['lan_missteered']} mis-steered, "
                                  f"{got[2]['handed_over']} handed over, of which {got[2]['handed_direct']} direct, "
                                  f"{got[2]['handoff_dropped']} dropped by the mesh, {got[2]['misrouted']} "
                                  "misrouted)", flush=True)
                    finally:
                        pair.stop()
        finally:
            lab.close()
    print(f"\nESP {CIPHERS[args.cipher][0]} in UDP, {args.length}-byte datagrams, {args.rounds} round(s) of "
          f"{args.seconds} s, offered {args.rate} per stream, {args.peers} peer(s) (flows per peer); medians "
          "(packets/s delivered to hostB)")
    print(f"{'workers':>14} {'1 flow':>10} {f'{args.flows} flows':>10}")
    for run in runs:
        cells = [statistics.median(r[0] for r in results[(run, f)]) for f in (1, args.flows)]
        print(f"{_name(run):>14} {cells[0]:10.0f} {cells[1]:10.0f}")
    return 0


def _name(run: tuple[int, str | None]) -> str:
    n, steering = run
    return f"{n}" if steering is None else f"{n} ({steering})"


if __name__ == "__main__":
    sys.exit(main())

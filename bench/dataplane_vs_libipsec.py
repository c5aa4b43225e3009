"""The ESP dataplane side by side with strongSwan's kernel-libipsec in one run, and the ratios.

    hostA (192.0.2.10) -- gwA ==== WAN 198.51.100.0/24 ==== gwB -- hostB (192.0.2.74)

Four namespaces (documentation prefixes, unique names, always removed: ``tests/interop/netns.py``'s
``Lab``). The gateways are, in turn, an ikegate pair (``ikegate run --tun``, site-to-site policy on gwA, a
template on gwB) and a strongSwan pair (charon-systemd with kernel-libipsec: userspace ESP through a TUN,
as ikegate does). Both carry ESP in UDP 4500 (libipsec 5.9.8 always encapsulates; ikegate is given
``--force-udp-encap`` so the wire is the same). IKEv2 aes256-sha256-x25519; ESP AES-GCM-256 and
AES-CBC-256 + HMAC-SHA2-256. ikegate sends runs of equal-length ESP datagrams with UDP segmentation
offload and reads coalesced runs (UDP GRO); across a veth a run stays one buffer, which a real link would
not carry: ``--segment-wan`` makes the kernel cut runs into datagrams before the WAN veth (the
pessimistic case: no coalescing on receipt either).

Per pair, cipher and round, from hostA to hostB through the tunnel: iperf3 TCP with 1 and 4 streams, iperf3
UDP with 1400-byte datagrams at an offered rate (delivered rate and loss as the receiver counts them), ping
RTT (median and 99th percentile of ``--pings`` echoes) and the gateways' CPU seconds (utime + stime of both
gateway processes, every thread, from ``/proc/<pid>/stat``) per GB delivered during the UDP test. The pairs
alternate round by round (the one that starts alternates too), so a machine that gets busier hurts both;
medians are printed, with the ratio ikegate / libipsec (throughput: higher is better; RTT and CPU per GB:
lower is better).

``--profile DIR`` also samples both ikegate gateways with py-spy during the UDP test of the first round
(``pip install py-spy``) and prints the top functions by own time.

    sudo .venv/bin/python bench/dataplane_vs_libipsec.py --rounds 3 --seconds 10
    ... --baseline ../main/src      # also an older ikegate (before/after in the same run)
    ... --offload                   # also ikegate with TUN offload (IKEGATE_TUN_OFFLOAD=1)
    ... --workers 1                 # ikegate run --workers 1 (default: one worker per CPU)

Needs root (namespaces, TUN), iperf3 (``apt-get install iperf3``) and strongSwan with kernel-libipsec
(charon-systemd, libcharon-extra-plugins); without them it prints why it skips and exits 0. Absolute
figures swing with whatever else runs on the machine: read the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from tests.interop import swan  # noqa: E402
from tests.interop.capture import segment_on_the_link  # noqa: E402
from tests.interop.netns import (  # noqa: E402
    GW_A_LAN,
    GW_B_LAN,
    HOST_B,
    SITE_A_V4,
    SITE_A_V6,
    SITE_B_V4,
    SITE_B_V6,
    WAN_A,
    WAN_B,
    Lab,
    Netns,
    Site,
    route_into_tun,
    two_sites,
)
from tests.interop.netns import skip_reason as netns_skip_reason  # noqa: E402
from tests.interop.vrp import GatewayConfig, Suite, TwoPeersConfig, acl_rule, start_ikegate  # noqa: E402
from tests.system.procs import Proc  # noqa: E402

sys.path.insert(0, str(PROJECT / "bench"))
from _procs import cpu_seconds  # noqa: E402  # summed over a gateway's supervisor and its workers

PSK = "dataplane-bench-psk-0123456789"
IKE = "aes256-sha256-x25519"
#: cipher name -> (strongSwan ESP proposal, VRP esp encryption, VRP esp authentication)
CIPHERS = {
    "gcm": ("aes256gcm16", "aes-gcm-256", None),
    "cbc": ("aes256-sha256", "aes-256", "sha2-256"),
}
IPERF_PORT = 5201


class Skip(Exception):
    """The comparison cannot run here; the message says why."""


def prerequisites() -> None:
    reason = netns_skip_reason() or swan.skip_reason()
    if reason:
        raise Skip(reason)
    if shutil.which("iperf3") is None:
        raise Skip("needs iperf3 (apt-get install iperf3)")
    if shutil.which("ping") is None:
        raise Skip("needs ping (iputils-ping)")


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``check`` until true (a benchmark waits for conditions, like the tests)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


# ------------------------------------------------------------------------------------------- the pairs


@dataclass
class Pair:
    """Two gateways of one kind, up with a Child SA; ``pids`` are the processes whose CPU is counted."""

    kind: str
    pids: list[int]
    stop: Callable[[], None]
    procs: list[Proc] = field(default_factory=list)  # ikegate's: (gwA, gwB), for their control sockets


@contextlib.contextmanager
def environment(**values: str | None) -> Iterator[None]:
    """Processes spawned inside see these environment variables (None: left as they are)."""
    saved = {k: os.environ.get(k) for k in values}
    for key, value in values.items():
        if value is not None:
            os.environ[key] = value
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def ikegate_pair(lab: Lab, a: Site, b: Site, cipher: str, src: Path | None = None, kind: str = "ikegate",
                 extra: tuple[str, ...] = (), offload: str | None = None, peers: int = 1) -> Pair:
    """gwA (site-to-site, auto) and gwB (template) up; ``extra``: more ``ikegate run`` arguments for both;
    ``src``: import ikegate from there; ``offload``: IKEGATE_TUN_OFFLOAD for both (see io/tun.py).
    ``peers`` 2: gwA also has gwB's IPv6 address as a second peer, for IPv6 inside (``TwoPeersConfig``)."""
    _, enc, auth = CIPHERS[cipher]
    suite = Suite(esp_encryption=enc, esp_authentication=auth)
    lan_a = {4: f"{GW_A_LAN[4]}/26", 6: f"{GW_A_LAN[6]}/64"}
    lan_b = {4: f"{GW_B_LAN[4]}/26", 6: f"{GW_B_LAN[6]}/64"}
    two = peers == 2
    rules6_b = [f"rule 5 permit ipv6 source {SITE_B_V6} destination {SITE_A_V6}"] if two else []
    cfg_b = GatewayConfig("GwB", WAN_B, lan_b, None, PSK, suite=suite, rules=[acl_rule(5, SITE_B_V4, SITE_A_V4)],
                          rules6=rules6_b)
    cfg_a = (TwoPeersConfig if two else GatewayConfig)(
        "GwA", WAN_A, lan_a, WAN_B[4], PSK, suite=suite, rules=[acl_rule(5, SITE_A_V4, SITE_B_V4)], trigger="auto")
    with environment(PYTHONPATH=str(src) if src else None, IKEGATE_TUN_OFFLOAD=offload):
        gw_b = start_ikegate(lab, b.gw, "gwb", cfg_b, "--force-udp-encap", *extra)
        route_into_tun(b.gw, [SITE_A_V4, *([SITE_A_V6] if two else [])])
        gw_a = start_ikegate(lab, a.gw, "gwa", cfg_a, "--force-udp-encap", *extra)
        route_into_tun(a.gw, [SITE_B_V4, *([SITE_B_V6] if two else [])])

    def stop() -> None:
        for proc in (gw_a, gw_b):
            lab.stop(proc.popen)  # type: ignore[arg-type]

    return Pair(kind, [gw_a.popen.pid, gw_b.popen.pid], stop, [gw_a, gw_b])


def _swan_conf(local: str, remote: str, local_ts: str, remote_ts: str, esp: str) -> str:
    return f"""connections {{
  bench {{
    version = 2
    local_addrs = {local}
    remote_addrs = {remote}
    proposals = {IKE}
    mobike = no
    local {{
      auth = psk
      id = {local}
    }}
    remote {{
      auth = psk
      id = {remote}
    }}
    children {{
      net {{
        local_ts = {local_ts}
        remote_ts = {remote_ts}
        esp_proposals = {esp}
      }}
    }}
  }}
}}
secrets {{
  ike-bench {{
    id-1 = {local}
    id-2 = {remote}
    secret = "{PSK}"
  }}
}}
"""


def libipsec_pair(lab: Lab, a: Site, b: Site, cipher: str, round_no: int) -> Pair:
    esp = CIPHERS[cipher][0]
    charons = []
    for site, local, remote, lts, rts, tag in ((b, WAN_B[4], WAN_A[4], SITE_B_V4, SITE_A_V4, "b"),
                                               (a, WAN_A[4], WAN_B[4], SITE_A_V4, SITE_B_V4, "a")):
        charon = swan.Charon(lab, site.gw, lab.workdir / f"swan-{tag}-{cipher}-{round_no}")
        charon.start()
        charon.load(_swan_conf(local, remote, lts, rts, esp))
        charons.append(charon)
    out = charons[1].initiate("net")
    if out.returncode != 0:
        raise RuntimeError(f"strongSwan did not establish: {out.stdout}{out.stderr}")

    def stop() -> None:
        for charon in charons:
            lab.stop(charon.popen)

    return Pair("libipsec", [c.popen.pid for c in charons], stop)


# ----------------------------------------------------------------------------------------- measuring


def iperf(host: Netns, *args: str, seconds: int, dst: str = HOST_B[4], port: int = IPERF_PORT) -> dict[str, object]:
    """One iperf3 test; retried (up to 3 times, 60 s) when the server is still busy with the previous one or
    drops the control connection: on a loaded machine it may take a while to notice that a test ended."""
    deadline = time.monotonic() + 60
    for attempt in range(3):
        out = host.exec("iperf3", "-c", dst, "-p", str(port), "-t", str(seconds), "-J", *args,
                        check=False, timeout=seconds + 60)
        try:
            data = json.loads(out.stdout)
        except json.JSONDecodeError as exc:
            raise RuntimeError(f"iperf3 {' '.join(args)}: {out.stdout[-500:]}{out.stderr[-500:]}") from exc
        error = str(data.get("error", ""))
        if error and attempt < 2 and time.monotonic() < deadline:
            print(f"  (iperf3 {' '.join(args)}: {error}; again)", flush=True)
            time.sleep(2.0)
            continue
        if error:
            raise RuntimeError(f"iperf3 {' '.join(args)}: {error}")
        result: dict[str, object] = data["end"]
        return result
    raise AssertionError("unreachable")


_TIME = re.compile(r"time=([\d.]+) ms")


def ping_rtts(host: Netns, count: int) -> list[float]:
    out = host.exec("ping", "-c", str(count), "-i", "0.01", "-W", "2", HOST_B[4], check=False, timeout=count + 60)
    return [float(t) for t in _TIME.findall(out.stdout)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


@dataclass
class Figures:
    tcp1: list[float] = field(default_factory=list)  # Mbit/s
    tcp4: list[float] = field(default_factory=list)
    udp: list[float] = field(default_factory=list)  # delivered Mbit/s
    udp_loss: list[float] = field(default_factory=list)  # %
    rtt_median: list[float] = field(default_factory=list)  # ms
    rtt_p99: list[float] = field(default_factory=list)
    cpu_per_gb: list[float] = field(default_factory=list)  # CPU s per GB delivered (both gateways)


@contextlib.contextmanager
def profiling(pids: list[int], seconds: int, outdir: Path | None, tag: str) -> Iterator[list[Path]]:
    """py-spy on each pid for ``seconds`` (raw collapsed stacks), when ``outdir`` is given."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if outdir is None or not Path(spy).exists():
        yield []
        return
    outdir.mkdir(parents=True, exist_ok=True)
    files = [outdir / f"{tag}-{n}.txt" for n in range(len(pids))]
    procs = [subprocess.Popen([spy, "record", "-p", str(pid), "-d", str(seconds), "-r", "200", "--nonblocking",
                               "--subprocesses", "-f", "raw", "-o", str(path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for pid, path in zip(pids, files, strict=True)]
    try:
        yield files
    finally:
        for proc in procs:
            try:
                proc.wait(seconds + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def top_functions(path: Path, n: int = 15) -> list[tuple[str, float, float]]:
    """(function, own %, inclusive %) from py-spy's collapsed stacks, by own time."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        samples = int(count)
        frames = [re.sub(r" \(.*?/(src/ikegate/|lib/python[\d.]+/)?", " (", f) for f in stack.split(";")]
        total += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            incl[frame] += samples
    if not total:
        return []
    return [(f, 100.0 * c / total, 100.0 * incl[f] / total) for f, c in own.most_common(n)]


def measure(pair: Pair, a: Site, figures: Figures, args: argparse.Namespace, profile_dir: Path | None,
            tag: str) -> None:
    host = a.host
    wait_until(lambda: host.exec("ping", "-c", "1", "-W", "1", HOST_B[4], check=False).returncode == 0,
               f"{pair.kind}: traffic through the tunnel")
    end = iperf(host, seconds=args.seconds)
    figures.tcp1.append(end["sum_received"]["bits_per_second"] / 1e6)  # type: ignore[index]
    end = iperf(host, "-P", "4", seconds=args.seconds)
    figures.tcp4.append(end["sum_received"]["bits_per_second"] / 1e6)  # type: ignore[index]
    before = sum(cpu_seconds(pid) for pid in pair.pids)
    with profiling(pair.pids if pair.kind != "libipsec" else [], args.seconds, profile_dir, tag):
        end = iperf(host, "-u", "-b", args.udp_rate, "-l", "1400", seconds=args.seconds)
    cpu = sum(cpu_seconds(pid) for pid in pair.pids) - before
    received = end.get("sum_received") or end["sum"]
    delivered_bytes = float(received["bytes"])  # type: ignore[index]
    figures.udp.append(received["bits_per_second"] / 1e6)  # type: ignore[index]
    sent = end.get("sum_sent") or end["sum"]
    sent_packets = float(sent.get("packets", 0) or 0)  # type: ignore[union-attr]
    lost = float(received.get("lost_percent", 0.0))  # type: ignore[union-attr]
    if sent_packets and "packets" in received:  # type: ignore[operator]
        lost = 100.0 * (1 - delivered_bytes / 1400 / sent_packets)
    figures.udp_loss.append(max(lost, 0.0))
    figures.cpu_per_gb.append(cpu / (delivered_bytes / 1e9) if delivered_bytes else float("nan"))
    rtts = ping_rtts(host, args.pings)
    figures.rtt_median.append(statistics.median(rtts) if rtts else float("nan"))
    figures.rtt_p99.append(percentile(rtts, 0.99))


# ------------------------------------------------------------------------------------------- running


def run(args: argparse.Namespace) -> dict[str, dict[str, Figures]]:
    kinds = ["libipsec", "ikegate"] + (["offload"] if args.offload else []) + (["baseline"] if args.baseline else [])
    results: dict[str, dict[str, Figures]] = {c: {k: Figures() for k in kinds} for c in args.cipher}
    workers = ("--workers", str(args.workers)) if args.workers else ()
    with tempfile.TemporaryDirectory(prefix="ikg-dpbench-") as tmp:
        lab = Lab(Path(tmp))
        try:
            a, b = two_sites(lab)
            if args.segment_wan:
                segment_on_the_link((a.gw, "wan0"), (b.gw, "wan0"))
            iperf_log = lab.workdir / "iperf3.log"
            lab.spawn(b.host, ["iperf3", "-s", "-p", str(IPERF_PORT)], iperf_log)
            wait_until(lambda: f":{IPERF_PORT} " in b.host.exec("ss", "-ltnH").stdout, "the iperf3 server")
            for cipher in args.cipher:
                for round_no in range(args.rounds):
                    order = kinds if round_no % 2 == 0 else kinds[::-1]
                    for kind in order:
                        if kind == "libipsec":
                            pair = libipsec_pair(lab, a, b, cipher, round_no)
                        else:
                            pair = ikegate_pair(lab, a, b, cipher, args.baseline if kind == "baseline" else None,
                                                kind, extra=workers, offload="1" if kind == "offload" else "0")
                        try:
                            prof = args.profile if round_no == 0 else None
                            measure(pair, a, results[cipher][kind], args, prof, f"{kind}-{cipher}")
                        finally:
                            pair.stop()
                        f = results[cipher][kind]
                        print(f"  {cipher} round {round_no + 1} {kind:8}: TCP1 {f.tcp1[-1]:7.1f}  TCP4 "
                              f"{f.tcp4[-1]:7.1f}  UDP {f.udp[-1]:7.1f} Mbit/s ({f.udp_loss[-1]:4.1f} % lost)  RTT "
                              f"{f.rtt_median[-1]:.3f}/{f.rtt_p99[-1]:.3f} ms  CPU {f.cpu_per_gb[-1]:6.1f} s/GB",
                              flush=True)
        finally:
            lab.close()
    return results


ROWS: list[tuple[str, str, bool]] = [  # (label, attribute, higher is better)
    ("TCP 1 stream (Mbit/s)", "tcp1", True),
    ("TCP 4 streams (Mbit/s)", "tcp4", True),
    ("UDP 1400 B delivered (Mbit/s)", "udp", True),
    ("UDP loss (%)", "udp_loss", False),
    ("ping RTT median (ms)", "rtt_median", False),
    ("ping RTT p99 (ms)", "rtt_p99", False),
    ("gateway CPU s per GB (UDP)", "cpu_per_gb", False),
]


def report(results: dict[str, dict[str, Figures]], args: argparse.Namespace) -> None:
    for cipher, pair in results.items():
        print(f"\nESP {CIPHERS[cipher][0]}, {args.rounds} round(s) of {args.seconds} s, UDP offered {args.udp_rate}, "
              f"workers {args.workers or 'default'}{', WAN segmented' if args.segment_wan else ''}, medians")
        others = [k for k in ("offload", "baseline") if k in pair]
        print(f"{'figure':32} {'ikegate':>10} {'libipsec':>10} {'ratio':>7}"
              + "".join(f" {k:>10} {'ratio':>7}" for k in others))
        for label, attr, _higher in ROWS:
            ours = statistics.median(getattr(pair["ikegate"], attr))
            theirs = statistics.median(getattr(pair["libipsec"], attr))
            ratio = ours / theirs if theirs else float("nan")
            line = f"{label:32} {ours:10.2f} {theirs:10.2f} {ratio:6.2f}x"
            for kind in others:
                other = statistics.median(getattr(pair[kind], attr))
                line += f" {other:10.2f} {other / theirs if theirs else float('nan'):6.2f}x"
            print(line)
    if args.profile is not None:
        for path in sorted([*args.profile.glob("ikegate-*.txt"), *args.profile.glob("baseline-*.txt")]):
            print(f"\npy-spy {path.name} (own %, inclusive %):")
            for func, own, incl in top_functions(path):
                print(f"  {own:5.1f} {incl:5.1f}  {func}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10, help="length of each iperf3 test")
    parser.add_argument("--cipher", action="append", choices=sorted(CIPHERS),
                        help="repeatable; default: gcm and cbc")
    parser.add_argument("--udp-rate", default="400M", help="iperf3 UDP offered rate (-b)")
    parser.add_argument("--pings", type=int, default=200)
    parser.add_argument("--profile", type=Path, metavar="DIR", help="py-spy the ikegate gateways (first round)")
    parser.add_argument("--segment-wan", action="store_true",
                        help="the WAN veths cut UDP runs into datagrams before the link (gso_max_segs 1), as a NIC "
                             "without receive coalescing would: ikegate's UDP_SEGMENT runs then save the syscalls "
                             "but no longer cross the WAN as one buffer")
    parser.add_argument("--baseline", type=Path, metavar="SRC",
                        help="also run ikegate imported from SRC (another checkout's src/, e.g. main's) as a third "
                             "pair, for a before/after in the same run; its ratio is to libipsec too")
    parser.add_argument("--offload", action="store_true",
                        help="also ikegate with TUN offload (IKEGATE_TUN_OFFLOAD=1) as a pair of its own")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="ikegate run --workers N for both ikegate pairs (default: ikegate's own default, one "
                             "worker per CPU); CPU is summed over the supervisor and its workers")
    args = parser.parse_args(argv)
    args.cipher = args.cipher or ["gcm", "cbc"]
    try:
        prerequisites()
    except Skip as exc:
        print(f"skipped: {exc}")
        return 0
    report(run(args), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where the responder's CPU goes, per SA: cProfile of HQ while a branch runs the `load` op, then of HQ's
`reset ike sa` (all) until every Delete is acknowledged.

Both gateways run in this process in memory (no sockets, the clock stepped by hand), so the profile is
of the protocol core and its installs, not of asyncio or the kernel. Only HQ's calls are profiled. HQ is
built by the daemon's own constructor with its log stream on a temporary file (a stream on /dev/null
would be skipped), so every tunnel up/down takes the same logging path as in `ikegate run` (log buffer,
stderr mirror, syslog listener).

``--log-devnull`` puts HQ's log stream on /dev/null instead, as the other benchmarks run the daemon: the
records then reach the log buffer (and syslog, were a loghost configured) but their text is never made.

    python profile_responder.py [-n 3000] [--top 25] [--sort tottime|cumtime] [--no-profile] [--log-devnull]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import pstats
import tempfile
import time
from collections.abc import Callable
from typing import Any, TypeVar

from _procs import V1_PEER, V1_PROPOSAL, lab_text

from ikegate.__main__ import GC_THRESHOLD
from ikegate.cli.loader import load_config
from ikegate.daemon import Daemon, DaemonOptions
from ikegate.gateway.controller import Gateway
from ikegate.gateway.local import LocalDevice

R = TypeVar("R")
HQ, BRANCH = "192.0.2.1", "192.0.2.2"
LIFT = "ike call admission limit in-negotiation-sa per-address 100000\n"


def gateways(stream: io.TextIOBase, version: int = 2) -> tuple[Gateway, Gateway]:
    """HQ (built as `ikegate run` builds it) and the branch; ``version`` 1: Main + Quick Mode as in
    ``setup_rate.py --version 1``."""
    extra = V1_PROPOSAL if version == 1 else {}
    # a load test comes from one address: lift HQ's per-address limit of IKE SAs in negotiation (as _procs.pair)
    hq_cfg, errors = load_config(lab_text("hq", **{"127.0.0.11": HQ, **extra,
                                                   "#\nreturn\n": f"#\n{LIFT}#\nreturn\n"}))
    assert not errors, errors
    br_cfg, errors = load_config(lab_text("branch1", **{**extra, **(V1_PEER if version == 1 else {}),
                                                         "127.0.0.11": HQ, "127.0.0.12": BRANCH,
                                                         "trigger-mode auto": "trigger-mode traffic-based"}))
    assert not errors, errors
    device = Daemon(hq_cfg, DaemonOptions(log_stream=stream)).device  # type: ignore[arg-type]
    assert isinstance(device, LocalDevice)
    hq = device.gateway
    br = Gateway(br_cfg)
    return hq, br


class Pump:
    """Datagrams between the two gateways until quiet; HQ's share of the work runs under one profiler
    and, when given, the branch's under another."""

    def __init__(self, hq: Gateway, br: Gateway, prof: cProfile.Profile | None,
                 peer: cProfile.Profile | None = None, time_peer: bool = False):
        self.hq, self.br, self.prof, self.peer = hq, br, prof, peer
        self.time_peer = time_peer or peer is not None
        self.now = 0.0
        self.cpu = 0.0  # process CPU seconds spent inside HQ's calls
        self.peer_cpu = 0.0

    def on_hq(self, call: Callable[[], R]) -> R:
        result, spent = self._profiled(self.prof, call)
        self.cpu += spent
        return result

    def on_br(self, call: Callable[[], R]) -> R:
        if not self.time_peer:
            return call()
        result, spent = self._profiled(self.peer, call)
        self.peer_cpu += spent
        return result

    @staticmethod
    def _profiled(prof: cProfile.Profile | None, call: Callable[[], R]) -> tuple[R, float]:
        t0 = time.process_time()
        if prof is None:  # --no-profile: the CPU figure without the profiler's overhead
            return call(), time.process_time() - t0
        prof.enable()
        try:
            result = call()
        finally:
            prof.disable()
        return result, time.process_time() - t0

    def run(self) -> None:
        while True:
            moved = False
            for data, local, remote in self.on_br(self.br.datagrams_to_send):
                moved = True
                self.on_hq(lambda d=data, r=remote, s=local: self.hq.receive_datagram(d, r, s, self.now))
            for data, local, remote in self.on_hq(self.hq.datagrams_to_send):
                moved = True
                self.on_br(lambda d=data, r=remote, s=local: self.br.receive_datagram(d, r, s, self.now))
            if not moved:
                return


def report(title: str, prof: cProfile.Profile | None, per: int, cpu: float, top: int, sort: str,
           who: str = "HQ") -> None:
    if prof is None:
        print(f"== {title}: {cpu:.2f} s CPU in {who}, {1000 * cpu / per:.3f} ms per SA (no profiler) ==")
        return
    print(f"\n== {title}: {cpu:.2f} s CPU in {who}, {1000 * cpu / per:.3f} ms per SA (profiler on, so inflated) ==")
    raw: dict[Any, Any] = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    print(f"{'us/SA self':>10} {'us/SA cum':>10} {'calls/SA':>9}  function")
    for (path, line, func), (_cc, nc, tt, ct, _callers) in sorted(
            raw.items(), key=lambda kv: kv[1][2 if sort == "tottime" else 3], reverse=True)[:top]:
        where = path.split("/src/")[-1] if "/src/" in path else path.rsplit("/", 1)[-1]
        print(f"{1e6 * tt / per:10.1f} {1e6 * ct / per:10.1f} {nc / per:9.2f}  {where}:{line}({func})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=3000)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--sort", choices=("tottime", "cumtime"), default="tottime")
    ap.add_argument("--no-profile", action="store_true", help="only the CPU per SA, without cProfile's overhead")
    ap.add_argument("--version", type=int, choices=(1, 2), default=2, help="1: Main + Quick Mode, MODP-2048")
    ap.add_argument("--log-devnull", action="store_true", help="HQ's log stream on /dev/null (no log text made)")
    args = ap.parse_args()
    with (open(os.devnull, "w") if args.log_devnull
          else tempfile.TemporaryFile("w", buffering=1)) as stream:  # line buffered, as stderr is
        hq, br = gateways(stream, args.version)
        gc.set_threshold(*GC_THRESHOLD)  # as `ikegate run` does
        gc.freeze()
        hq.start(0.0)
        br.start(0.0)
        setup = None if args.no_profile else cProfile.Profile()
        pump = Pump(hq, br, setup)
        pump.run()
        br.load(pump.now, args.n, 64)
        pump.run()
        assert hq.sad.count(phase=1) == args.n and hq.sad.count(phase=2) == args.n, hq.sad.count(phase=1)
        report(f"set-up of {args.n} IKE + Child SAs, HQ responding", setup, args.n, pump.cpu, args.top, args.sort)
        delete, peer = (None, None) if args.no_profile else (cProfile.Profile(), cProfile.Profile())
        pump = Pump(hq, br, delete, peer, time_peer=True)
        pump.now = 1.0
        deleted = pump.on_hq(lambda: hq.reset_ike_sa(pump.now))
        pump.run()
        assert deleted == 2 * args.n and not hq.engines() and br.sad.count(phase=1) == 0
        report(f"reset ike sa (all) on HQ, {args.n} IKE + Child SAs, Deletes acknowledged", delete, args.n,
               pump.cpu, args.top, args.sort)
        report("the branch answering those Deletes", peer, args.n, pump.peer_cpu, args.top, args.sort, "the branch")


if __name__ == "__main__":
    main()

"""Shared bits of the benchmarks: two `ikegate run` processes on loopback and /proc readings."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ikegate.mgmt.control import request

HQ, BRANCH = "127.0.2.1", "127.0.2.2"


def lab_text(name: str, **replace: str) -> str:
    text = resources.files("ikegate.lab").joinpath(f"{name}.cfg").read_text()
    for old, new in replace.items():
        text = text.replace(old, new)
    return text


@dataclass
class Gw:
    popen: subprocess.Popen[bytes]
    control: str

    def call(self, op: str, **kw: Any) -> dict[str, Any]:
        answer = request(self.control, {"op": op, **kw}, timeout=120)
        if not answer.get("ok"):
            raise RuntimeError(answer)
        return answer

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.popen.pid)

    def rss_kb(self, key: str = "VmRSS") -> int:
        return rss_kb(self.popen.pid, key)


def family(pid: int) -> list[int]:
    """``pid`` and its descendants now (a gateway with ``--workers`` is a supervisor and its workers):
    the figures below are summed over them."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with suppress(OSError):
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its live descendants."""
    total = 0
    for p in family(pid):
        with suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int, key: str = "VmRSS") -> int:
    """``key`` (VmRSS, VmHWM) of ``pid`` and its live descendants, in kB."""
    total = 0
    for p in family(pid):
        with suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
    return total


#: IKEv1: phase 1 knows neither AES-GCM nor Curve25519; the branch speaks only IKEv1.
V1_PROPOSAL = {" encryption-algorithm aes-gcm-256\n dh group31": " encryption-algorithm aes-256\n dh group14"}
V1_PEER = {" remote-address 127.0.0.11": " remote-address 127.0.0.11\n undo version 2"}


#: ``--workers`` value meaning "as ``ikegate run`` decides" (one worker per CPU: the default users get).
DEFAULT_WORKERS = 0


def add_worker_options(ap: argparse.ArgumentParser) -> None:
    """``--workers`` (HQ, the gateway measured) and ``--branch-workers`` (the load generator); both default
    to ``ikegate run``'s own default, one worker per CPU."""
    ap.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                    help="HQ's --workers (default: ikegate's, one per CPU; 1: one process)")
    ap.add_argument("--branch-workers", type=int, default=DEFAULT_WORKERS,
                    help="the branch's --workers (default: ikegate's)")


def worker_options(args: argparse.Namespace) -> tuple[int, int]:
    return args.workers, args.branch_workers


def describe_workers(workers: tuple[int, int]) -> str:
    name = {DEFAULT_WORKERS: f"default ({len(os.sched_getaffinity(0))})"}
    return f"workers HQ {name.get(workers[0], workers[0])}, branch {name.get(workers[1], workers[1])}"


@contextmanager
def pair(port: int = 25000, trigger: str = "traffic-based", version: int = 2,
         hq_extra: str = "", workers: tuple[int, int] = (DEFAULT_WORKERS, DEFAULT_WORKERS)
         ) -> Iterator[tuple[Gw, Gw]]:
    """HQ (template responder) and a branch whose policy does not start by itself (the bench drives it).
    ``hq_extra`` is configuration appended to HQ's (before its final ``return``). The branch is a load
    generator with many negotiations in flight from one address, so HQ's per-address limit of IKE SAs in
    negotiation is lifted. ``workers``: HQ's and the branch's ``--workers`` (:data:`DEFAULT_WORKERS`:
    ``ikegate run``'s default, one per CPU)."""
    hq_extra = "ike call admission limit in-negotiation-sa per-address 100000\n" + hq_extra
    extra = V1_PROPOSAL if version == 1 else {}
    with tempfile.TemporaryDirectory(prefix="ikegate-bench-") as tmp:
        cfgs = {
            "hq": lab_text("hq", **{"127.0.0.11": HQ, **extra, "#\nreturn\n": f"#\n{hq_extra}#\nreturn\n"}),
            "br": lab_text("branch1", **{**extra, **(V1_PEER if version == 1 else {}),
                                         "127.0.0.11": HQ, "127.0.0.12": BRANCH,
                                         "trigger-mode auto": f"trigger-mode {trigger}"}),
        }
        procs: dict[str, Gw] = {}
        try:
            for (name, text), n in zip(cfgs.items(), workers, strict=True):
                cfg = Path(tmp) / f"{name}.cfg"
                cfg.write_text(text)
                control = str(Path(tmp) / f"{name}.sock")
                popen = subprocess.Popen([sys.executable, "-m", "ikegate", "run", str(cfg), "--control", control,
                                          "--ike-port", str(port), "--natt-port", str(port + 1),
                                          *(["--workers", str(n)] if n != DEFAULT_WORKERS else [])],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                procs[name] = Gw(popen, control)
                for _ in range(1200):  # a minute: a supervisor and its workers start slowly on a loaded machine
                    if os.path.exists(control):
                        break
                    time.sleep(0.05)
            yield procs["hq"], procs["br"]
        finally:
            for gw in procs.values():
                gw.popen.send_signal(signal.SIGTERM)
            for gw in procs.values():
                try:
                    gw.popen.wait(60)
                except subprocess.TimeoutExpired:
                    gw.popen.kill()


def wait_sas(gw: Gw, ike: int, timeout: float = 600) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        st = gw.call("stats")["stats"]
        if st["ike_sas"] >= ike and st["ipsec_sas"] >= ike:
            return time.monotonic()
        time.sleep(0.02)
    raise RuntimeError(f"only {gw.call('stats')['stats']} after {timeout}s")

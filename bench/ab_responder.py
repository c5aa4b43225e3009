"""Responder CPU per SA of this tree against another git revision, alternating in one run.

On a shared, loaded machine a CPU figure taken now is not comparable with one taken five minutes ago, so
this runs ``profile_responder.py --no-profile`` (the in-memory responder, no sockets, no profiler) of the
base revision and of the working tree in turn, round after round, and prints each pair and the medians.
The base revision's ``src`` and ``bench`` are exported with ``git archive`` into a temporary directory and
put first on ``PYTHONPATH``; both run with this interpreter.

    python ab_responder.py [--base main] [-n 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
_FIGURE = re.compile(r"set-up of .*?([0-9.]+) ms per SA")


def export(rev: str, into: Path) -> None:
    """``src`` and ``bench`` of ``rev`` under ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src", "bench"],
                             check=True, capture_output=True).stdout
    with tempfile.TemporaryFile() as f:
        f.write(archive)
        f.seek(0)
        with tarfile.open(fileobj=f) as tar:
            tar.extractall(into, filter="data")


def per_sa(tree: Path, n: int) -> float:
    """ms of responder CPU per SA set up, as ``profile_responder.py --no-profile`` of ``tree`` reports."""
    env = {**os.environ, "PYTHONPATH": f"{tree / 'src'}{os.pathsep}{tree / 'bench'}"}
    out = subprocess.run([sys.executable, "profile_responder.py", "-n", str(n), "--no-profile"],
                         cwd=tree / "bench", env=env, check=True, capture_output=True, text=True).stdout
    match = _FIGURE.search(out)
    if match is None:
        raise SystemExit(f"no figure in the output of {tree}:\n{out}")
    return float(match.group(1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="main", help="git revision to compare with (default main)")
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        export(args.base, base)
        a: list[float] = []
        b: list[float] = []
        for r in range(1, args.rounds + 1):
            a.append(per_sa(base, args.n))
            b.append(per_sa(ROOT, args.n))
            print(f"round {r}: {args.base} {a[-1]:.3f} ms/SA, this tree {b[-1]:.3f} ms/SA", flush=True)
    ma, mb = statistics.median(a), statistics.median(b)
    print(f"median: {args.base} {ma:.3f} ms/SA, this tree {mb:.3f} ms/SA, ratio {mb / ma:.3f}")


if __name__ == "__main__":
    main()

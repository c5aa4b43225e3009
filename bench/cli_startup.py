"""Wall time of `ikegate cli --control PATH -c "display ike sa"` against an idle gateway, end to end
(process start, imports, the request, the answer printed), as a script or an operator sees it.

Goal (issue 13): at most 0.15 s. Prints the best and the median of ``--runs`` runs next to a bare
``python -c pass`` on the same interpreter, so the share that is ours stands out on a busy machine.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _procs import HQ, lab_text


def wall(cmd: list[str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        out.append(time.perf_counter() - t0)
        if done.returncode != 0:
            raise RuntimeError(f"{cmd}: {done.returncode} {done.stderr}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    exe = Path(sys.executable).with_name("ikegate")
    with tempfile.TemporaryDirectory(prefix="ikegate-bench-") as tmp:
        cfg = Path(tmp) / "hq.cfg"
        cfg.write_text(lab_text("hq", **{"127.0.0.11": HQ}))
        control = str(Path(tmp) / "hq.sock")
        gw = subprocess.Popen([str(exe), "run", str(cfg), "--control", control, "--ike-port", "25300",
                               "--natt-port", "25301"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(400):
                if os.path.exists(control):
                    break
                time.sleep(0.05)
            cli = wall([str(exe), "cli", "--control", control, "-c", "display ike sa"], args.runs)
            bare = wall([sys.executable, "-c", "pass"], args.runs)
        finally:
            gw.send_signal(signal.SIGTERM)
            gw.wait(60)
    print(f"ikegate cli -c \"display ike sa\", idle gateway, {args.runs} runs (wall, end to end)")
    print(f"  ikegate cli   : best {1000 * min(cli):6.1f} ms, median {1000 * statistics.median(cli):6.1f} ms"
          "   (goal: <= 150 ms)")
    print(f"  python -c pass: best {1000 * min(bare):6.1f} ms, median {1000 * statistics.median(bare):6.1f} ms")


if __name__ == "__main__":
    main()

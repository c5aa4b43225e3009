"""`display ike sa` over 100,000 SAs spread over 4 placement workers: where the time goes.

Each of the 4 workers' SA databases is filled directly (12,500 IKE + 12,500 IPsec SAs, conn-ids from its
residue class, as ``ikegate run --model USG6680E`` gives them). Measured separately, in this one process:

- worker side, each: select every row, render its table rows and pickle them with their conn-ids (what
  ``op_ike_sa_rows`` does); the workers run this in parallel, one core each, so the device pays the slowest;
- supervisor side: unpickle the four answers, merge the lines in conn-id order (``merge_rendered``) and
  print ``display ike sa`` through the real shell (``FanoutDevice.ike_sa_table``'s chunks).

``--rows`` measures the former transfer instead: the workers pickle their SA rows (``op_select``), the
supervisor unpickles, merges (``merge_rows``) and renders them.

Estimated wall time of the command = slowest worker + supervisor (+ socket copies, not included: ~14 MB
over unix socketpairs). On a machine with fewer cores than workers the worker parts queue.

    .venv/bin/python bench/workers_display.py -n 100000          # now: workers send rendered rows
    .venv/bin/python bench/workers_display.py -n 100000 --rows   # before: workers sent SA rows

``--live`` measures the real thing end to end instead: HQ as ``ikegate run --workers 4`` (``--workers``),
N/2 IKE SAs each with its IPsec SA negotiated by a branch with the ``load`` op, then the wall time of a
whole ``display ike sa`` over SSH (Enter to the next prompt) and through ``ikegate cli -c``:

    .venv/bin/python bench/workers_display.py -n 100000 --live
"""

from __future__ import annotations

import argparse
import ipaddress
import pickle
import time
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Any

from ikegate.cli.commands import default_tree
from ikegate.cli.commands.runtime import Runtime, runtime_commands
from ikegate.cli.loader import load_config
from ikegate.cli.render import ike_sa
from ikegate.cli.shell import Shell
from ikegate.gateway.controller import Gateway
from ikegate.gateway.device import ALL, Selection, make_device, merge_rendered, merge_rows
from ikegate.gateway.local import LocalDevice
from ikegate.sad import IkeSaEntry, IpsecSaEntry, Role, SaEntry, SaFlag
from ikegate.workers.steering import Steering, WorkerSlot
from ikegate.workers.worker import _plain


class _Merged(LocalDevice):
    """The supervisor's view for the renderer: the merged rows, nothing else asked of it."""

    def __init__(self, base: LocalDevice, rows: list[SaEntry]) -> None:
        super().__init__(base.gateway, base.model, clock=time.monotonic)
        self._rows = rows

    def select(self, selection: Selection = ALL, *, counters: bool = False) -> list[SaEntry]:
        return self._rows


class _Rendered(LocalDevice):
    """The supervisor's view for the shell: the workers' merged row text (FanoutDevice.ike_sa_table)."""

    def __init__(self, base: LocalDevice, lines: list[str]) -> None:
        super().__init__(base.gateway, base.model, clock=time.monotonic)
        self._lines = lines

    def ike_sa_table(self, selection: Selection = ALL) -> Iterator[list[str]]:
        return ike_sa.rendered_chunks(self._lines)


def live(n: int, workers: int, runs: int) -> None:
    """``--live``: see the module docstring."""
    import asyncio
    import statistics

    from _procs import DEFAULT_WORKERS, describe_workers, pair, wait_sas
    from ssh_load import SSH_CONFIG, cli_display, one_display

    with pair(port=25400, hq_extra=SSH_CONFIG, workers=(workers, DEFAULT_WORKERS)) as (hq, br):
        time.sleep(0.5)
        start = time.monotonic()
        br.call("load", count=n // 2, concurrency=128)
        wait_sas(br, n // 2, timeout=max(900, n / 20))
        wait_sas(hq, n // 2, timeout=900)
        built = time.monotonic() - start
        spread = [w["reported_sas"] for w in hq.call("workers")["workers"]]
        ssh = asyncio.run(one_display(runs))
        cli = cli_display(hq, runs)
    print(f"display ike sa, {n:,} SAs ({n // 2:,} IKE + {n // 2:,} IPsec) end to end, "
          f"{describe_workers((workers, DEFAULT_WORKERS))}; IKE SAs per worker {spread}")
    print(f"  negotiated in {built:.0f} s ({n / 2 / built:.0f} IKE+IPsec pairs/s)")
    print(f"  over SSH, Enter to prompt, best / median of {runs}: {min(ssh):.2f} / {statistics.median(ssh):.2f} s")
    print(f"  ikegate cli -c, best / median of {runs}       : {min(cli):.2f} / {statistics.median(cli):.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("-n", type=int, default=100_000, help="SAs in all (half IKE, half IPsec)")
    ap.add_argument("--rows", action="store_true", help="the former transfer (SA rows), for comparison")
    ap.add_argument("--live", action="store_true", help="end to end: real daemons, SSH and ikegate cli")
    ap.add_argument("--workers", type=int, default=4, help="--live: HQ's workers")
    ap.add_argument("--runs", type=int, default=3, help="--live: displays timed")
    args = ap.parse_args()
    if args.live:
        live(args.n, args.workers, args.runs)
        return
    config, _ = load_config(resources.files("ikegate.lab").joinpath("hq.cfg").read_text())
    model = make_device("USG6680E", None)
    steering = Steering(len(model.placements), 0x1234)
    workers = [Gateway(config, placements=(p,), worker=WorkerSlot(steering, i)) for i, p in enumerate(model.placements)]
    local = ipaddress.ip_address("127.0.0.11")
    for i in range(args.n // 2):
        gw = workers[i % len(workers)]
        peer = ipaddress.ip_address(0x0A000000 + i)
        ike = gw.sad.add_ike(IkeSaEntry(
            version=2, role=Role.RESPONDER, flags=SaFlag.RD | SaFlag.A, placement=gw.placements[0],
            local_address=local, peer_address=peer, peer_id="", spi_i=i.to_bytes(8, "big"),
            spi_r=(i + 1).to_bytes(8, "big")))
        gw.sad.add_ipsec(IpsecSaEntry.from_parent(ike, flags=SaFlag.RD | SaFlag.A, spi_in=1000 + i, spi_out=1000 + i))
    print(f"display ike sa, {args.n:,} SAs over {len(workers)} workers")
    # (a worker's answer, the supervisor's device over the merged answers, label)
    if args.rows:  # before: the workers send SA rows (op_select), the supervisor renders them
        answer: Callable[[Gateway], Any] = lambda gw: [_plain(e) for e in LocalDevice(gw).select()]  # noqa: E731
        merged: Callable[[list[Any]], LocalDevice] = lambda parts: _Merged(  # noqa: E731
            LocalDevice(workers[0], model), merge_rows(parts))
        label = "select + strip + pickle rows"
    else:  # now: each worker renders its rows (op_ike_sa_rows); the supervisor merges the text
        answer = lambda gw: ike_sa.rendered(LocalDevice(gw).select())  # noqa: E731
        merged = lambda parts: _Rendered(LocalDevice(workers[0], model), merge_rendered(parts))  # noqa: E731
        label = "select + render + pickle text"
    blobs, worker_s = [], []
    for gw in workers:
        t0 = time.perf_counter()
        blobs.append(pickle.dumps(answer(gw), protocol=pickle.HIGHEST_PROTOCOL))
        worker_s.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    device = merged([pickle.loads(b) for b in blobs])
    t_merge = time.perf_counter() - t0
    shell = Shell(config, tree=default_tree(runtime_commands(model)), device=Runtime(device))
    t0 = time.perf_counter()
    out = shell.run("display ike sa")
    t_render = time.perf_counter() - t0
    assert len(out.lines) > args.n
    print(f"  ({sum(map(len, blobs)) / 1e6:.1f} MB over the channels)")
    print(f"  worker: {label:<28}: {' / '.join(f'{s:.3f}' for s in worker_s)} s (slowest counts)")
    print(f"  supervisor: unpickle + merge      : {t_merge:.3f} s")
    print(f"  supervisor: print through shell   : {t_render:.3f} s")
    print(f"  estimated command, >= {len(workers)} cores : {max(worker_s) + t_merge + t_render:.3f} s")


if __name__ == "__main__":
    main()

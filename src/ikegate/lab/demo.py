"""``make demo``: three gateways on loopback, no root needed.

HQ (127.0.0.11) answers through a policy template (site-to-multisite); Branch1 (127.0.0.12) is
site-to-site with ``sa trigger-mode auto`` and comes up by itself; Branch2 (127.0.0.13) is site-to-site
traffic-based and waits for traffic. All run in this one process on high ports, each with its own
control socket, so ``ikegate cli --control …`` reaches any of them from another terminal, and its own
configuration file in the lab's temporary directory, so ``save`` and ``display saved-configuration``
work as on a device (the directory goes away with the lab).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import tempfile
from importlib import resources
from pathlib import Path

from ikegate.cli.loader import load_config
from ikegate.cli.render import ike_sa
from ikegate.daemon import Daemon, DaemonOptions
from ikegate.gateway.device import Selection

GATEWAYS = ("hq", "branch1", "branch2")
#: Said before HQ's console starts: leaving it stops all three gateways, not only HQ.
LAB_ENDS = "This terminal is HQ's console. `quit` in HQ's user view ends the whole lab (all three gateways)."


def lab_text(name: str) -> str:
    return resources.files("ikegate.lab").joinpath(f"{name}.cfg").read_text()


def _table(daemon: Daemon) -> str:
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    lines = [f"<{daemon.device.config.sysname}> display ike sa", f"{stamp} ",
             *ike_sa.render(daemon.device.select())]
    return "\n".join(line.rstrip() for line in lines)


async def _lab(args: argparse.Namespace, rundir: Path) -> int:
    daemons: dict[str, Daemon] = {}
    for name in GATEWAYS:
        text = lab_text(name)
        path = rundir / f"{name}.cfg"
        path.write_text(text)
        path.chmod(0o600)
        config, errors = load_config(text)
        for err in errors:
            print(f"{name}.cfg:{err.line_number}: {err.message}", file=sys.stderr)
        options = DaemonOptions(ike_port=args.base_port, natt_port=args.base_port + 1,
                                control=str(rundir / f"{name}.sock"))
        daemons[name] = Daemon(config, options, str(path))
        await daemons[name].start()
    # Branch1 (auto) negotiates by itself; give it a moment.
    for _ in range(100):
        if daemons["branch1"].device.select(Selection(phase=2)):
            break
        await asyncio.sleep(0.02)
    print("ikegate lab: HQ 127.0.0.11 (template), Branch1 127.0.0.12 (auto), Branch2 127.0.0.13 "
          f"(traffic-based); IKE port {args.base_port}, NAT-T {args.base_port + 1}\n")
    for name in GATEWAYS:
        print(_table(daemons[name]))
        print()
    print("Control sockets (for `ikegate cli --control PATH`) and configuration files (`save` writes them):")
    for name in GATEWAYS:
        print(f"  {name:8} {rundir / (name + '.sock')}  {rundir / (name + '.cfg')}")
    code = 0
    if not args.no_shell and sys.stdin.isatty():
        from ikegate.mgmt.console import run_console

        print(f"\n{LAB_ENDS}")
        code = await run_console(daemons["hq"], others={n: d for n, d in daemons.items() if n != "hq"})
    for daemon in daemons.values():
        await daemon.stop()
    return code


def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="ikegate-lab-") as tmp:
        try:
            return asyncio.run(_lab(args, Path(tmp)))
        except KeyboardInterrupt:
            return 0

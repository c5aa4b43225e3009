"""``ikegate``: the command line.

    ikegate run CONFIG [--control PATH] [--ike-port N] [--natt-port N] [--model M] [--placements S/C,...]
    ikegate demo
    ikegate cli --control PATH [-c COMMAND ...]
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from ikegate.daemon import DaemonOptions, read_config, run_daemon
from ikegate.gateway.device import make_device


def _run(args: argparse.Namespace) -> int:
    try:
        device = make_device(args.model, args.placements)
    except ValueError as exc:
        print(f"ikegate: {exc}", file=sys.stderr)
        return 2
    try:
        config, errors = read_config(args.config)
    except OSError as exc:
        print(f"ikegate: cannot read {args.config}: {exc}", file=sys.stderr)
        return 2
    for err in errors:
        print(f"{args.config}:{err.line_number}: {err.line.strip()}: {err.message}", file=sys.stderr)
    options = DaemonOptions(ike_port=args.ike_port, natt_port=args.natt_port, control=args.control, device=device,
                            retransmit_tries=args.retransmit_tries, log_stream=sys.stderr)
    return asyncio.run(run_daemon(config, options, args.config))


def _demo(args: argparse.Namespace) -> int:
    from ikegate.lab.demo import main as demo_main

    return demo_main(args)


def _cli(args: argparse.Namespace) -> int:
    from ikegate.mgmt.client import main as cli_main

    return cli_main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ikegate", description="IKE/IPsec gateway with a Huawei USG style CLI")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one gateway in the foreground")
    run.add_argument("config", help="VRP configuration file")
    run.add_argument("--control", help="path of the local control socket (mode 0600)")
    run.add_argument("--ike-port", type=int, default=500)
    run.add_argument("--natt-port", type=int, default=4500)
    run.add_argument("--model", help="device model (default USG6000V; slot models: USG6635E, USG6655E, "
                                     "USG6680E, USG6712E, USG6716E)")
    run.add_argument("--placements", help="slot/cpu pairs of a slot model, e.g. 1/0,1/1,3/0")
    run.add_argument("--retransmit-tries", type=int, default=5,
                     help="retransmissions (1, 2, 4 … s apart) before a peer is declared dead")
    run.set_defaults(func=_run)
    demo = sub.add_parser("demo", help="the embedded lab: HQ, Branch1 and Branch2 on loopback")
    demo.add_argument("--base-port", type=int, default=15000)
    demo.add_argument("--no-shell", action="store_true", help="print the SA tables and exit")
    demo.set_defaults(func=_demo)
    cli = sub.add_parser("cli", help="the VRP shell of a running gateway")
    cli.add_argument("--control", required=True)
    cli.add_argument("-c", dest="commands", action="append", help="run this command (repeatable) and exit")
    cli.set_defaults(func=_cli)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())

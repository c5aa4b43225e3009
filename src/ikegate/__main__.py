"""``ikegate``: the command line.

    ikegate run CONFIG [--control PATH] [--ike-port N] [--natt-port N] [--model M] [--placements S/C,...]
                       [--tun ITF=TUN ...] [--metrics ADDR:PORT] [--workers N]
    ikegate demo
    ikegate cli --control PATH [-c COMMAND ...]
"""

from __future__ import annotations

import argparse
import sys

# Each subcommand imports what it runs when it runs: ``ikegate cli -c`` (scripts call it in loops) must
# not pay for the daemon, the gateway, asyncssh and asyncio (tests/unit/test_client_imports.py).


#: The collector's generation-0 threshold for ``ikegate run``. A gateway keeps about a hundred long-lived
#: objects per SA and allocates in bursts per datagram; at the default (700) the collector ran every few
#: datagrams and cost 10-15 % of the responder's CPU per SA (bench/profile_responder.py's set-up, 5,000
#: SAs in memory: 524 -> 466 us per SA with this threshold and the start-up objects frozen).
GC_THRESHOLD = (20_000, 50, 100)


def _run(args: argparse.Namespace) -> int:
    import asyncio
    import gc

    from ikegate.daemon import DaemonOptions, read_config, run_daemon
    from ikegate.gateway.device import make_device

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
    tun: dict[str, str] = {}
    for item in args.tun or []:
        itf, sep, name = item.partition("=")
        if not sep or not itf or not name:
            print(f"ikegate: --tun {item}: expected INTERFACE=TUN, e.g. GigabitEthernet0/0/2=tun-lan", file=sys.stderr)
            return 2
        tun[itf] = name
    options = DaemonOptions(ike_port=args.ike_port, natt_port=args.natt_port, control=args.control, model=device,
                            retransmit_tries=args.retransmit_tries, log_stream=sys.stderr, tun=tun)
    options.metrics = args.metrics
    options.raw_esp = not args.force_udp_encap
    options.keylog = args.keylog
    options.workers = default_workers() if args.workers is None else args.workers
    options.tun_steering = args.tun_steering == "ebpf"
    gc.set_threshold(*GC_THRESHOLD)
    gc.freeze()  # modules and configuration live as long as the process: no collection needs to walk them
    return asyncio.run(run_daemon(config, options, args.config))


def default_workers() -> int:
    """``--workers`` when not given: one per CPU this process may run on."""
    import os

    return max(1, len(os.sched_getaffinity(0)))


def _workers(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError("must be 1..256")
    return value


def _worker(args: argparse.Namespace) -> int:
    from ikegate.workers.worker import main as worker_main

    return worker_main(args.spec)


def _demo(args: argparse.Namespace) -> int:
    from ikegate.lab.demo import main as demo_main

    return demo_main(args)


def _cli(args: argparse.Namespace) -> int:
    from ikegate.mgmt.client import main as cli_main

    return cli_main(args)


def _listen_address(text: str) -> str:
    """``--metrics ADDR:PORT``, checked while parsing so a typo stops ``ikegate run`` before it starts."""
    from ikegate.mgmt.metrics import parse_listen

    try:
        parse_listen(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


class _DeviceHelp(argparse.HelpFormatter):
    """Fills ``%(model)s``, ``%(slot_models)s`` and ``%(placements)s`` in ``run``'s help from the device
    table, imported only when that help is printed."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        from ikegate.gateway.device import DEFAULT_MODEL, DEFAULT_SLOT_PLACEMENTS, SLOT_MODELS

        text = super()._get_help_string(action)
        if text is None:
            return None
        return (text.replace("%(model)s", DEFAULT_MODEL)
                .replace("%(slot_models)s", ", ".join(sorted(SLOT_MODELS)))
                .replace("%(placements)s", ",".join(f"{p.slot}/{p.cpu}" for p in DEFAULT_SLOT_PLACEMENTS)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ikegate", description="IKE/IPsec gateway with a Huawei USG style CLI")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run one gateway in the foreground", formatter_class=_DeviceHelp)
    run.add_argument("config", help="VRP configuration file (`save` writes it back)")
    run.add_argument("--control", metavar="PATH",
                     help="path of the local control socket (mode 0600) for `ikegate cli`; none by default")
    run.add_argument("--ike-port", type=int, default=500, metavar="N",
                     help="UDP port for IKE (default: %(default)s)")
    run.add_argument("--natt-port", type=int, default=4500, metavar="N",
                     help="UDP port for IKE and ESP after NAT detection (default: %(default)s)")
    run.add_argument("--model", metavar="M", help="device model shown by `display version` and deciding "
                     "`slot … cpu …` (default: %(model)s; slot models: %(slot_models)s)")
    run.add_argument("--placements", metavar="S/C,...", help="slot/cpu pairs of a slot model, e.g. 1/0,1/1 "
                     "(default: %(placements)s)")
    run.add_argument("--retransmit-tries", type=int, default=5, metavar="N",
                     help="retransmissions (1, 2, 4 … s apart) before a peer is declared dead "
                          "(default: %(default)s)")
    run.add_argument("--tun", action="append", metavar="ITF=TUN",
                     help="carry the protected side of VRP interface ITF on Linux TUN device TUN (created if "
                          "missing and set up; needs root or CAP_NET_ADMIN; routing the remote protected "
                          "networks into it is up to you). Repeatable.")
    run.add_argument("--metrics", metavar="ADDR:PORT", type=_listen_address,
                     help="serve Prometheus metrics over HTTP on this address only (e.g. 127.0.0.1:9470, "
                          "[::1]:9470); off by default")
    run.add_argument("--force-udp-encap", action="store_true",
                     help="carry ESP in UDP 4500 even where no NAT is detected (as strongSwan's encap = yes); "
                          "by default ESP is raw IP protocol 50 without NAT when a raw socket can be opened")
    run.add_argument("--keylog", metavar="DIR",
                     help="DEBUGGING ONLY: write every IKE and ESP key to Wireshark's ikev2_decryption_table, "
                          "ikev1_decryption_table and esp_sa in DIR (mode 0600); off by default")
    run.add_argument("--workers", type=_workers, metavar="N",
                     help="worker processes sharing the SAs, one core each, steered by SPI in the kernel "
                          "(default: one per available CPU; on a slot model its placements; "
                          "1: everything in one process)")
    run.add_argument("--tun-steering", choices=("ebpf", "hash"), default="ebpf",
                     help="with workers: a TUN's packets go to the queue of the worker owning their destination "
                          "(ebpf, when the kernel allows it) or to the kernel's flow-hash pick, the reader "
                          "handing them over (hash) (default: %(default)s)")
    run.set_defaults(func=_run)
    demo = sub.add_parser("demo", help="the embedded lab: HQ, Branch1 and Branch2 on loopback")
    demo.add_argument("--base-port", type=int, default=15000, metavar="N",
                      help="UDP port for IKE of all three gateways, N+1 for NAT-T (default: %(default)s)")
    demo.add_argument("--no-shell", action="store_true", help="print the SA tables and exit")
    demo.set_defaults(func=_demo)
    cli = sub.add_parser("cli", help="the VRP shell of a running gateway")
    cli.add_argument("--control", required=True, metavar="PATH",
                     help="the control socket of the gateway (`ikegate run --control PATH`)")
    cli.add_argument("-c", dest="commands", action="append", help="run this command (repeatable) and exit")
    cli.set_defaults(func=_cli)
    worker = sub.add_parser("worker", help="internal: one placement worker (started by `ikegate run`)")
    worker.add_argument("spec", nargs="+", help="what the supervisor passes")
    worker.set_defaults(func=_worker)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())

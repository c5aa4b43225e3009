"""`display ike sa` and `reset ike sa` with 100,000 SAs in the database: time and peak memory.

The SA database is filled directly (50,000 IKE SAs, each with one IPsec SA, over 4 placements of a
USG6680E) so that the figure is the CLI's and the database's, not the negotiation's.
"""

from __future__ import annotations

import argparse
import ipaddress
import resource
import time
from importlib import resources

from ikegate.cli.commands import default_tree
from ikegate.cli.commands.runtime import Runtime, runtime_commands
from ikegate.cli.loader import load_config
from ikegate.cli.shell import Shell
from ikegate.gateway.controller import Gateway
from ikegate.gateway.device import make_device
from ikegate.gateway.local import LocalDevice
from ikegate.sad import IkeSaEntry, IpsecSaEntry, Role, SaFlag, placement_for


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=100_000, help="SAs in the database (half IKE, half IPsec)")
    args = ap.parse_args()
    config, _ = load_config(resources.files("ikegate.lab").joinpath("hq.cfg").read_text())
    device = make_device("USG6680E", None)
    gw = Gateway(config, placements=device.placements)
    base = rss_mb()
    t0 = time.perf_counter()
    local = ipaddress.ip_address("127.0.0.11")
    for i in range(args.n // 2):
        peer = ipaddress.ip_address(0x0A000000 + i)  # 10.x.y.z, one peer per IKE SA
        spi_i = i.to_bytes(8, "big")
        ike = gw.sad.add_ike(IkeSaEntry(
            version=2, role=Role.RESPONDER, flags=SaFlag.RD | SaFlag.A,
            placement=placement_for(peer, 500, spi_i, device.placements), local_address=local,
            peer_address=peer, peer_id="", spi_i=spi_i, spi_r=(i + 1).to_bytes(8, "big")))
        gw.sad.add_ipsec(IpsecSaEntry.from_parent(ike, flags=SaFlag.RD | SaFlag.A, spi_in=1000 + i,
                                                  spi_out=1000 + i))
    fill = time.perf_counter() - t0
    filled = rss_mb()
    shell = Shell(config, tree=default_tree(runtime_commands(device)),
                  device=Runtime(LocalDevice(gw, device, clock=time.monotonic)))
    t0 = time.perf_counter()
    out = shell.run("display ike sa")
    t_display = time.perf_counter() - t0
    t0 = time.perf_counter()
    one = shell.run("display ike sa remote 10.0.1.1")
    t_remote = time.perf_counter() - t0
    t0 = time.perf_counter()
    shell.run("display ike sa slot 1 cpu 0")
    t_slot = time.perf_counter() - t0
    filtered = {}
    for name in ("include 10\\.0\\.1\\.1:", "exclude RD", "begin 10\\.0\\.195\\.", "count"):
        t0 = time.perf_counter()
        result = shell.run(f"display ike sa | {name}")
        filtered[name] = (time.perf_counter() - t0, len(result.lines))
    t0 = time.perf_counter()
    lines = shell.run("display ike sa").lines
    t_render = time.perf_counter() - t0
    others = {}
    for name in ("display ipsec sa brief", "display ike sa | json"):
        t0 = time.perf_counter()
        others[name] = (len(shell.run(name).lines), time.perf_counter() - t0)
    # The chunked path the SSH and console drivers take: how long the longest chunk holds the loop.
    longest, chunks = 0.0, 0
    shell.run("screen-length 0 temporary")
    shell.receive(b"display ike sa\r")
    while shell.streaming:
        t0 = time.perf_counter()
        shell.resume()
        longest = max(longest, time.perf_counter() - t0)
        chunks += 1
    t0 = time.perf_counter()
    shell.run("reset ike sa conn-id 777")
    t_reset_one = time.perf_counter() - t0
    t0 = time.perf_counter()
    shell.run("reset ike sa")
    t_reset = time.perf_counter() - t0
    assert len(gw.sad) == 0 and len(out.lines) > args.n and len(one.lines) > 2
    print(f"CLI with {args.n:,} SAs ({args.n // 2:,} IKE + {args.n // 2:,} IPsec), one process")
    print(f"  fill the database            : {fill:6.2f} s")
    print(f"  display ike sa (all rows)    : {t_display:6.2f} s   ({len(out.lines):,} lines)")
    print(f"  display ike sa remote ADDR   : {1000 * t_remote:6.2f} ms")
    print(f"  display ike sa slot 1 cpu 0  : {t_slot:6.2f} s")
    for name, (took, count) in filtered.items():  # the filter's own share: total minus the rendering
        print(f"  display ike sa | {name:<22}: {took:6.2f} s   (filter {took - t_render:+.2f} s, {count:,} lines)")
    assert len(lines) == len(out.lines)
    for name, (count, took) in others.items():
        print(f"  {name:<29}: {took:6.2f} s   ({count:,} lines)")
    print(f"  display ike sa, interactive  : {chunks} chunks, the longest {1000 * longest:.1f} ms (the loop runs"
          " between chunks)")
    print(f"  reset ike sa conn-id N       : {1000 * t_reset_one:6.2f} ms")
    print(f"  reset ike sa (all)           : {t_reset:6.2f} s")
    print(f"  memory: {base:.0f} MB before, {filled:.0f} MB filled, peak {rss_mb():.0f} MB")


if __name__ == "__main__":
    main()

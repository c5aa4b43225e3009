"""The per-packet Python cost of the gateway's ESP path, in memory, without the kernel: µs per packet.

Two whole gateways of the lab configuration (``tests/protocol/netsim.py``) bring their tunnel up; then
``--count`` 1400-byte UDP packets go through ``Gateway.from_lan`` + ``datagrams_to_send`` on the branch
(encrypting side) and ``Gateway.receive_datagram`` + ``lan_out`` on HQ (decrypting side), timed apart.
This is what ``bench/dataplane_vs_libipsec.py`` cannot separate from the syscalls and the kernel's
forwarding: the glue, the parse, the SPD and the ESP; compare it before and after a change to the path.

    .venv/bin/python bench/dataplane_path.py --count 50000 --repeat 5
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.protocol.netsim import Net, lab_config

from ikegate.dataplane.packet import UDP, build_ipv4
from ikegate.gateway.controller import Gateway


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=50000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--size", type=int, default=1400)
    args = parser.parse_args()
    net = Net()
    hq = net.add(Gateway(lab_config("hq")))
    b1 = net.add(Gateway(lab_config("branch1")))
    for gw in (hq, b1):
        gw.start(net.now)
    net.pump()
    body = struct.pack("!HHHH", 5000, 5001, args.size - 28, 0) + bytes(args.size - 36)
    packet = build_ipv4("10.1.1.5", "10.0.0.20", UDP, body)
    b1.from_lan(packet, net.now)
    first = b1.datagrams_to_send()
    if len(first) != 1:
        raise SystemExit(f"the tunnel is not up ({len(first)} datagrams)")
    best_out = best_in = float("inf")
    for _ in range(args.repeat):
        start = time.process_time()
        for _ in range(args.count):
            b1.from_lan(packet, 1.0)
        wire = b1.datagrams_to_send()
        best_out = min(best_out, (time.process_time() - start) / args.count)
        hq.lan_out.clear()
        start = time.process_time()
        for data, src, dst in wire:
            hq.receive_datagram(data, dst, src, 1.0)
            hq.lan_out.clear()
        best_in = min(best_in, (time.process_time() - start) / len(wire))
        if len(wire) != args.count:
            raise SystemExit(f"{len(wire)} of {args.count} packets protected")
    delivered = hq.dataplane.totals()["packets", "in"]
    print(f"{args.size}-byte packets, best of {args.repeat} x {args.count} (delivered {delivered}):")
    print(f"  encrypt (from_lan + datagrams_to_send):     {best_out * 1e6:6.2f} µs/packet")
    print(f"  decrypt (receive_datagram, to lan_out):     {best_in * 1e6:6.2f} µs/packet")


if __name__ == "__main__":
    main()

"""Userspace ESP throughput on one core: packets/s and Mbit/s of inner traffic.

Two levels, each for 64- and 1400-byte inner IPv4 packets:
  esp      OutboundEsp.seal / InboundEsp.open alone (the crypto and ESP framing)
  backend  UserspaceBackend.from_lan / from_wan (adds IP parsing, the SPD lookup, the inbound selector check)
Suites: AES-GCM-16-256, and AES-CBC-256 with HMAC-SHA2-256-128. One process, no I/O; best of --repeat runs.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import struct
import time
from collections.abc import Callable

from ikegate.dataplane.backend import Send, UserspaceBackend
from ikegate.dataplane.esp import InboundEsp, OutboundEsp
from ikegate.dataplane.packet import UDP, build_ipv4
from ikegate.ike.core.child import ChildSa
from ikegate.ike.core.config import ChildSaConfig, Mode
from ikegate.ike.core.ts import from_network
from ikegate.ike.crypto import EncrAlg, IntegAlg, encr_alg, integ_alg
from ikegate.ike.wire.registry import EncrId, IntegId
from ikegate.policy.model import Acl, AclAddress, AclRule, Config, Interface, IpsecPolicy

SUITES: list[tuple[str, EncrAlg, IntegAlg | None]] = [
    ("AES-GCM-16-256", encr_alg(EncrId.AES_GCM_16, 256), None),
    ("AES-CBC-256/SHA2-256-128", encr_alg(EncrId.AES_CBC, 256), integ_alg(IntegId.HMAC_SHA2_256_128)),
]
SIZES = (64, 1400)


def inner_packet(size: int) -> bytes:
    body = struct.pack("!HHHH", 5000, 5001, size - 28, 0) + bytes(size - 28)
    return build_ipv4("10.1.0.1", "10.2.0.1", UDP, body)


def best_rate(run: Callable[[], None], count: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return count / best


def esp_rates(encr: EncrAlg, integ: IntegAlg | None, size: int, count: int, repeat: int) -> tuple[float, float]:
    ek = os.urandom(encr.keymat_size)
    ik = os.urandom(integ.key_size) if integ else b""
    packet = inner_packet(size)
    out = OutboundEsp(0x1000, encr, integ, ek, ik)
    seal = out.seal

    def do_seal() -> None:
        for _ in range(count):
            seal(packet, 4)

    seal_rate = best_rate(do_seal, count, repeat)
    # Each run opens its own packets with a fresh SA, so the replay window sees every one as new.
    sealed = [seal(packet, 4) for _ in range(count)]

    def do_open_fresh() -> None:
        inb = InboundEsp(0x1000, encr, integ, ek, ik)
        op = inb.open
        for p in sealed:
            op(p)

    return seal_rate, best_rate(do_open_fresh, count, repeat)


def backend_rates(encr: EncrAlg, integ: IntegAlg | None, size: int, count: int,
                  repeat: int) -> tuple[float, float]:
    any_a = AclAddress(ipaddress.IPv4Address("10.1.0.0"), ipaddress.IPv4Address("0.0.255.255"))
    any_b = AclAddress(ipaddress.IPv4Address("10.2.0.0"), ipaddress.IPv4Address("0.0.255.255"))

    def gateway(src: AclAddress, dst: AclAddress) -> UserspaceBackend:
        cfg = Config()
        cfg.interfaces["GE1"] = Interface("GE1", ipv4=[ipaddress.IPv4Interface("192.0.2.1/24")], ipsec_policy="m")
        cfg.acls[3000] = Acl(3000, [AclRule(5, source=src, destination=dst)])
        cfg.ipsec_policies[("m", 10)] = IpsecPolicy("m", 10, acl=3000)
        return UserspaceBackend(cfg)

    ek, ik = os.urandom(encr.keymat_size), os.urandom(integ.key_size) if integ else b""
    net_a, net_b = from_network(ipaddress.ip_network("10.1.0.0/16")), from_network(ipaddress.ip_network("10.2.0.0/16"))
    cfg = ChildSaConfig("m", 10, [], [net_a], [net_b], lifetime_kb=0)
    sender, receiver = gateway(any_a, any_b), gateway(any_b, any_a)
    sender.install_sa(ChildSa(1, 2, cfg, encr, integ, ek, ik, ek, ik, [net_a], [net_b], Mode.TUNNEL, True, 0.0,
                              None, 1e9, udp_encap=True), ("198.51.100.1", 4500))
    packet = inner_packet(size)
    from_lan = sender.from_lan

    def do_lan() -> None:
        for _ in range(count):
            from_lan(packet, 0.0)

    lan_rate = best_rate(do_lan, count, repeat)
    payloads = []
    for _ in range(count):
        action = from_lan(packet, 0.0)[0]
        assert isinstance(action, Send)
        payloads.append(action.payload)
    remote = ("192.0.2.1", 4500)

    def do_wan() -> None:
        receiver.delete_sa(2)
        receiver.install_sa(ChildSa(2, 1, cfg, encr, integ, ek, ik, ek, ik, [net_b], [net_a], Mode.TUNNEL, False,
                                    0.0, None, 1e9, udp_encap=True), remote)
        from_wan = receiver.from_wan
        for p in payloads:
            from_wan(p, remote, 0.0)

    wan_rate = best_rate(do_wan, count, repeat)
    pair = receiver.sa(2)
    assert pair is not None and pair.inbound.packets == count and not pair.inbound.drops
    return lan_rate, wan_rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=50_000, help="packets per run")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print("Userspace ESP throughput, one process, one core (inner IPv4/UDP packets; Mbit/s of inner bytes)")
    print(f"{'level':8} {'suite':26} {'inner':>6} {'op':>9} {'packets/s':>12} {'Mbit/s':>9}")
    for level, measure in (("esp", esp_rates), ("backend", backend_rates)):
        for name, encr, integ in SUITES:
            for size in SIZES:
                tx, rx = measure(encr, integ, size, args.n, args.repeat)
                for op, rate in (("seal" if level == "esp" else "from_lan", tx),
                                 ("open" if level == "esp" else "from_wan", rx)):
                    print(f"{level:8} {name:26} {size:6d} {op:>9} {rate:12,.0f} {rate * size * 8 / 1e6:9,.1f}")


if __name__ == "__main__":
    main()

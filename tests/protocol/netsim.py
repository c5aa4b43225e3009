"""Whole gateways in memory: a datagram network routed by address, and a clock stepped by hand."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources

from ikegate.cli.loader import load_config
from ikegate.gateway.controller import Gateway
from ikegate.ike.core.config import Addr


def lab_config(name: str, replace: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    text = resources.files("ikegate.lab").joinpath(f"{name}.cfg").read_text()
    for old, new in (replace or {}).items():
        text = text.replace(old, new)
    config, errors = load_config(text)
    assert not errors, errors
    return config


def ike_view(data: bytes) -> bytes:
    """An IKE datagram without the non-ESP marker it carries on the NAT-T port (RFC 3948 §2.2), so that tests
    read IKE/ISAKMP headers at their usual offsets whether or not the SA floated to 4500."""
    return data[4:] if data[:4] == bytes(4) else data


@dataclass
class Net:
    gateways: dict[str, Gateway] = field(default_factory=dict)
    now: float = 0.0
    delivered: int = 0
    drop: Callable[[bytes, Addr, Addr], bool] = lambda data, src, dst: False
    #: a NAT in front of some gateways: inside address -> outside address (ports are kept)
    nat: dict[str, str] = field(default_factory=dict)
    #: the NAT's port mapping (inside port -> outside port; unlisted ports are kept)
    nat_ports: dict[int, int] = field(default_factory=dict)
    seen: list[tuple[bytes, Addr, Addr]] = field(default_factory=list)
    #: raw ESP (IP protocol 50) that crossed the network: (packet, source address, destination address)
    seen_raw: list[tuple[bytes, str, str]] = field(default_factory=list)

    def add(self, gw: Gateway) -> Gateway:
        for addr in gw.local_addresses():
            self.gateways[addr] = gw
        return gw

    def pump(self) -> None:
        for _ in range(10000):
            moved = False
            for gw in list(dict.fromkeys(self.gateways.values())):
                for data, local, remote in gw.datagrams_to_send():
                    moved = True
                    natted = local[0] in self.nat
                    src = (self.nat.get(local[0], local[0]),  # source rewritten by the NAT
                           self.nat_ports.get(local[1], local[1]) if natted else local[1])
                    inside = {v: k for k, v in self.nat.items()}
                    port_in = {v: k for k, v in self.nat_ports.items()} if remote[0] in inside else {}
                    to = (inside.get(remote[0], remote[0]), port_in.get(remote[1], remote[1]))  # replies mapped back in
                    self.seen.append((data, src, to))
                    dst = self.gateways.get(to[0])
                    if dst is None or self.drop(data, local, remote):
                        continue
                    self.delivered += 1
                    dst.receive_datagram(data, to, src, self.now)
                for packet, local_ip, remote_ip in gw.raw_esp_to_send():
                    moved = True  # raw ESP has no ports, so a NAT (which needs them) drops it
                    self.seen_raw.append((packet, local_ip, remote_ip))
                    raw_dst = self.gateways.get(remote_ip)
                    if raw_dst is not None and local_ip not in self.nat:
                        self.delivered += 1
                        raw_dst.receive_esp(packet, local_ip, self.now)
            if not moved:
                return
        raise AssertionError("network never went quiet")

    def step(self, dt: float) -> None:
        end = self.now + dt
        self.pump()
        while True:
            timers = [t for gw in set(self.gateways.values()) if (t := gw.get_timer()) is not None]
            if not timers or min(timers) > end:
                break
            self.now = max(self.now, min(timers))
            for gw in set(self.gateways.values()):
                gw.handle_timer(self.now)
            self.pump()
        self.now = end


def lab(**kw: object) -> tuple[Net, Gateway, Gateway, Gateway]:
    net = Net()
    hq = net.add(Gateway(lab_config("hq"), **kw))  # type: ignore[arg-type]
    b1 = net.add(Gateway(lab_config("branch1"), **kw))  # type: ignore[arg-type]
    b2 = net.add(Gateway(lab_config("branch2"), **kw))  # type: ignore[arg-type]
    for gw in (hq, b1, b2):
        gw.start(net.now)
    net.pump()
    return net, hq, b1, b2


def is_ike(data: bytes, src: Addr) -> bool:
    """An IKE message (not ESP, not a keepalive): anything on port 500, and on 4500 what carries the
    non-ESP marker."""
    return len(data) >= 28 and (src[1] != 4500 or data[:4] == bytes(4))


#: Exchanges that open a new IKE SA: IKE_SA_INIT (34), and IKEv1 Main (2) and Aggressive (4) Mode.
OPENING = (34, 2, 4)


def openings(seen: list[tuple[bytes, Addr, Addr]]) -> int:
    """How many datagrams among ``seen`` open a new IKE SA (requests and answers)."""
    return sum(1 for data, src, _dst in seen if is_ike(data, src) and ike_view(data)[18] in OPENING)

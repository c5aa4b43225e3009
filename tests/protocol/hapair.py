"""A hot-standby pair in memory: two gateways with the same configuration, their sync nodes joined by a
link that can lose, reorder, replay or forge datagrams, and the virtual address moved by hand (what
keepalived does)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ikegate.gateway.controller import Gateway
from ikegate.ha.channel import Channel
from ikegate.ha.sync import Role, SyncNode
from tests.protocol.netsim import Net, lab_config

KEY = b"hrp-test-key"


@dataclass
class Link:
    """The heartbeat link: datagrams between the two sync nodes."""

    loss: float = 0.0
    reorder: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(17))
    up: bool = True
    captured: list[tuple[str, bytes]] = field(default_factory=list)
    held: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass
class Pair:
    net: Net
    nodes: dict[str, SyncNode]
    link: Link
    logs: list[str]
    branch: Gateway
    alive: set[str] = field(default_factory=set)

    def node(self, name: str) -> SyncNode:
        return self.nodes[name]

    def make_active(self, name: str) -> None:
        """VRRP moved the virtual address to ``name`` and keepalived said MASTER."""
        gw = self.nodes[name].gw
        for addr in gw.local_addresses():
            self.net.gateways[addr] = gw
        self.nodes[name].set_role(Role.ACTIVE, self.net.now)

    def kill(self, name: str) -> None:
        """kill -9: the node says nothing more, and keeps nothing."""
        self.alive.discard(name)
        gw = self.nodes[name].gw
        for addr in [a for a, g in self.net.gateways.items() if g is gw]:
            del self.net.gateways[addr]

    def restart(self, name: str, config: str = "hq", replace: dict[str, str] | None = None) -> SyncNode:
        node = new_node(config, replace, self.logs, priority=self.nodes[name].priority,
                        node_id=self.nodes[name].node_id)
        self.nodes[name] = node
        self.alive.add(name)
        return node

    def sync(self) -> None:
        """Carry sync datagrams until the link is quiet (with the link's faults)."""
        for _ in range(1000):
            moved = False
            for name in sorted(self.alive):
                node = self.nodes[name]
                node.flush(self.net.now)
                for data in node.datagrams_to_send():
                    moved = True
                    self.link.captured.append((name, data))
                    if not self.link.up or self.link.rng.random() < self.link.loss:
                        continue
                    if self.link.rng.random() < self.link.reorder:
                        self.link.held.append((name, data))
                        continue
                    self._deliver(name, data)
            if not moved and self.link.held:
                held, self.link.held = self.link.held, []
                for name, data in reversed(held):
                    self._deliver(name, data)
                moved = True
            if not moved:
                return
        raise AssertionError("sync link never went quiet")

    def _deliver(self, sender: str, data: bytes) -> None:
        for name in sorted(self.alive):
            if name != sender:
                self.nodes[name].receive(data, self.net.now)

    def pump(self) -> None:
        for _ in range(100):
            before = (len(self.net.seen), len(self.link.captured))
            self.net.pump()
            self.sync()
            self.net.pump()
            if (len(self.net.seen), len(self.link.captured)) == before:
                return
        raise AssertionError("pair never went quiet")

    def _gateways(self) -> list[Gateway]:
        return [self.nodes[n].gw for n in self.alive] + [self.branch]

    def step(self, dt: float) -> None:
        end = self.net.now + dt
        self.pump()
        while True:
            timers: list[tuple[float, Callable[[float], None]]] = []
            for gw in {*self.net.gateways.values(), *self._gateways()}:
                if (t := gw.get_timer()) is not None:
                    timers.append((t, gw.handle_timer))
            for name in self.alive:
                if (t := self.nodes[name].get_timer()) is not None:
                    timers.append((t, self.nodes[name].handle_timer))
            due = [t for t, _ in timers if t <= end]
            if not due:
                break
            self.net.now = max(self.net.now, min(due))
            for t, fire in timers:
                if t <= self.net.now:
                    fire(self.net.now)
            self.pump()
        self.net.now = end
        self.pump()


def new_node(config: str = "hq", replace: dict[str, str] | None = None, logs: list[str] | None = None, *,
             priority: int = 100, node_id: int = 0, key: bytes = KEY) -> SyncNode:
    gw = Gateway(lab_config(config, replace))
    return SyncNode(gw, Channel(key), priority=priority, node_id=node_id,
                    log=(logs.append if logs is not None else None))


def pair(replace: dict[str, str] | None = None, branch_replace: dict[str, str] | None = None,
         loss: float = 0.0, reorder: float = 0.0, *, node: str = "hq", peer: str = "branch1") -> Pair:
    """a (active, priority 120) and b (standby, 100) with the lab's ``node`` configuration (HQ: the
    template side), and ``peer`` facing them (``branch``: Branch1, the auto side)."""
    logs: list[str] = []
    net = Net()
    a = new_node(node, replace, logs, priority=120, node_id=1)
    b = new_node(node, replace, logs, priority=100, node_id=2)
    branch = net.add(Gateway(lab_config(peer, branch_replace)))
    p = Pair(net, {"a": a, "b": b}, Link(loss=loss, reorder=reorder), logs, branch, {"a", "b"})
    p.make_active("a")
    b.set_role(Role.STANDBY, net.now)
    branch.start(net.now)
    p.pump()
    return p

"""In-memory IKEv2 pairs: two engines, a wire between them, and a clock we step by hand.

Like aioquic's ``client_and_server()``: no sockets, loss is a datagram we choose not to deliver, and time
only moves when a test moves it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from ikegate.ike.core import ts as tsmod
from ikegate.ike.core.auth import Authenticator
from ikegate.ike.core.config import Addr, ChildSaConfig, EspProposalSpec, IkeProposalSpec, IkeSaConfig
from ikegate.ike.events import IkeEvent
from ikegate.ike.fragments import FragmentationConfig
from ikegate.ike.v2.sa import IkeSa
from ikegate.ike.wire.registry import DhId, EncrId, IntegId, PrfId
from ikegate.ike.wire.v2 import TrafficSelector

I_ADDR: Addr = ("192.0.2.1", 500)
R_ADDR: Addr = ("198.51.100.1", 500)

CBC_X25519 = IkeProposalSpec(((EncrId.AES_CBC, 256),), (PrfId.HMAC_SHA2_256,), (IntegId.HMAC_SHA2_256_128,),
                             (DhId.CURVE_25519,))
GCM_ECP = IkeProposalSpec(((EncrId.AES_GCM_16, 256),), (PrfId.HMAC_SHA2_256,), (), (DhId.ECP_256,))
ESP_GCM = EspProposalSpec(((EncrId.AES_GCM_16, 256),), ())
ESP_CBC = EspProposalSpec(((EncrId.AES_CBC, 256),), (IntegId.HMAC_SHA2_256_128,))


def net(text: str) -> TrafficSelector:
    return tsmod.from_network(ipaddress.ip_network(text))


def child(local: str = "10.1.0.0/24", remote: str = "10.2.0.0/24", proposals: list[EspProposalSpec] | None = None,
          name: str = "p1", lifetime: float = 3600.0) -> ChildSaConfig:
    return ChildSaConfig(name, 10, proposals or [ESP_GCM, ESP_CBC], [net(local)], [net(remote)], lifetime=lifetime)


def ike(psk: bytes = b"secret-psk", proposals: list[IkeProposalSpec] | None = None, local_id: str = "192.0.2.1",
        **kw: object) -> IkeSaConfig:
    ip = ipaddress.ip_address(local_id)
    cfg = IkeSaConfig(proposals or [CBC_X25519], psk, (1 if ip.version == 4 else 5, ip.packed), **kw)  # type: ignore[arg-type]
    return cfg


@dataclass
class StaticPolicy:
    """A responder policy from fixed values (the gateway's is built from the configuration)."""

    config: IkeSaConfig
    children: list[ChildSaConfig]
    proposals: list[IkeProposalSpec] | None = None

    def ike_proposals(self, peer: Addr) -> list[IkeProposalSpec]:
        return self.proposals or self.config.proposals

    def authenticate(self, peer: Addr, id_type: int, id_data: bytes) -> list[IkeSaConfig]:
        return [self.config]

    def announce(self, peer: Addr) -> Authenticator | None:
        return self.config.auth

    def fragmentation(self, peer: Addr) -> FragmentationConfig | None:
        return self.config.fragmentation

    def select_child(self, sa: IkeSa, tsi: list[TrafficSelector], tsr: list[TrafficSelector]) -> ChildSaConfig | None:
        for c in self.children:
            if tsmod.narrow(tsi, c.remote_ts) and tsmod.narrow(tsr, c.local_ts):
                return c
        return None


@dataclass
class Pair:
    initiator: IkeSa
    responder: IkeSa
    now: float = 0.0
    i_events: list[IkeEvent] = field(default_factory=list)
    r_events: list[IkeEvent] = field(default_factory=list)
    sent_i: list[bytes] = field(default_factory=list)
    sent_r: list[bytes] = field(default_factory=list)
    responder_factory: Callable[[], IkeSa] | None = None

    def drain(self) -> None:
        for sa, sink in ((self.initiator, self.i_events), (self.responder, self.r_events)):
            while (ev := sa.next_event()) is not None:
                sink.append(ev)

    def transfer(self, drop: Callable[[bytes, str], bool] = lambda data, who: False) -> int:
        """Move datagrams both ways until quiet; returns how many were delivered."""
        moved = 0
        for _ in range(100):
            progress = False
            for src, dst, log, who in ((self.initiator, self.responder, self.sent_i, "i"),
                                       (self.responder, self.initiator, self.sent_r, "r")):
                for data, local, peer in src.datagrams_to_send():
                    log.append(data)
                    progress = True
                    if drop(data, who):
                        continue
                    if dst is self.responder and dst.finished and self.responder_factory and data[18] == 34:
                        # what the gateway does: a new IKE_SA_INIT after a refusal meets a fresh responder
                        self.responder = dst = self.responder_factory()
                    dst.receive_datagram(data, local, self.now, local=peer)
                    moved += 1
            self.drain()
            if not progress:
                return moved
        raise AssertionError("endless exchange")

    def step(self, dt: float, drop: Callable[[bytes, str], bool] = lambda data, who: False) -> None:
        """Advance the clock by ``dt`` seconds, firing timers on the way and moving what they send."""
        end = self.now + dt
        while True:
            timers = [t for t in (self.initiator.get_timer(), self.responder.get_timer()) if t is not None]
            nxt = min(timers) if timers else None
            if nxt is None or nxt > end:
                break
            self.now = max(self.now, nxt)
            self.initiator.handle_timer(self.now)
            self.responder.handle_timer(self.now)
            self.transfer(drop)
        self.now = end

    def events(self, who: str, kind: type) -> list:  # type: ignore[type-arg]
        src = self.i_events if who == "i" else self.r_events
        return [e for e in src if isinstance(e, kind)]


def make_pair(i_cfg: IkeSaConfig | None = None, r_cfg: IkeSaConfig | None = None,
              i_child: ChildSaConfig | None = None, r_children: list[ChildSaConfig] | None = None,
              r_proposals: list[IkeProposalSpec] | None = None, now: float = 0.0) -> Pair:
    i_cfg = i_cfg or ike()
    r_cfg = r_cfg or ike(local_id="198.51.100.1")
    policy = StaticPolicy(r_cfg, r_children or [child("10.2.0.0/24", "10.1.0.0/24")], r_proposals)
    ini = IkeSa(i_cfg, initiator=True, local=I_ADDR, peer=R_ADDR, now=now)
    def factory() -> IkeSa:
        return IkeSa(None, initiator=False, local=R_ADDR, peer=I_ADDR, now=now, policy=policy)

    return Pair(ini, factory(), now, responder_factory=factory)


def establish(pair: Pair, child_cfg: ChildSaConfig | None = None) -> Pair:
    pair.initiator.initiate(pair.now, child_cfg or child())
    pair.transfer()
    return pair

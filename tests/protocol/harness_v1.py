"""In-memory IKEv1 pairs: two sides, a wire between them, and a clock stepped by hand.

Each side may hold several ISAKMP SA objects (a peer's phase-1 rekey arrives as a new Main Mode, which
the gateway turns into a new responder object). Datagrams are routed the way the gateway does it: by our
cookie, and a first message with a zero responder cookie makes a new responder. When a new responder
comes up for a peer that already has an established ISAKMP SA here, the harness moves the IPsec SAs
over with ``adopt_children``, which is what the gateway is expected to do.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from ikegate.ike.core import ts as tsmod
from ikegate.ike.core.config import Addr, ChildSaConfig, EspProposalSpec, IkeProposalSpec, IkeSaConfig
from ikegate.ike.events import IkeEvent, IkeSaEstablished
from ikegate.ike.v1.sa import ExchangeMode, IsakmpSa, V1Options
from ikegate.ike.wire.registry import DhId, EncrId, IntegId, PrfId
from ikegate.ike.wire.v2 import TrafficSelector

I_ADDR: Addr = ("192.0.2.1", 500)
R_ADDR: Addr = ("198.51.100.1", 500)

AES256_SHA256_MODP2048 = IkeProposalSpec(((EncrId.AES_CBC, 256),), (PrfId.HMAC_SHA2_256,),
                                         (IntegId.HMAC_SHA2_256_128,), (DhId.MODP_2048,))
AES128_SHA1_MODP2048 = IkeProposalSpec(((EncrId.AES_CBC, 128),), (PrfId.HMAC_SHA1,), (IntegId.HMAC_SHA1_96,),
                                       (DhId.MODP_2048,))
TDES_SHA1_MODP1024 = IkeProposalSpec(((EncrId.TRIPLE_DES, None),), (PrfId.HMAC_SHA1,), (IntegId.HMAC_SHA1_96,),
                                     (DhId.MODP_1024,))
AES256_SHA256_ECP256 = IkeProposalSpec(((EncrId.AES_CBC, 256),), (PrfId.HMAC_SHA2_256,),
                                       (IntegId.HMAC_SHA2_256_128,), (DhId.ECP_256,))
ESP_AES256_SHA256 = EspProposalSpec(((EncrId.AES_CBC, 256),), (IntegId.HMAC_SHA2_256_128,))
ESP_AES128_SHA1 = EspProposalSpec(((EncrId.AES_CBC, 128),), (IntegId.HMAC_SHA1_96,))
ESP_GCM128 = EspProposalSpec(((EncrId.AES_GCM_16, 128),), ())
ESP_3DES_SHA1 = EspProposalSpec(((EncrId.TRIPLE_DES, None),), (IntegId.HMAC_SHA1_96,))


def net(text: str) -> TrafficSelector:
    return tsmod.from_network(ipaddress.ip_network(text))


def child(local: str = "10.1.0.0/24", remote: str = "10.2.0.0/24", proposals: list[EspProposalSpec] | None = None,
          name: str = "p1", lifetime: float = 3600.0, **kw: object) -> ChildSaConfig:
    return ChildSaConfig(name, 10, proposals or [ESP_AES256_SHA256, ESP_AES128_SHA1], [net(local)], [net(remote)],
                         lifetime=lifetime, **kw)  # type: ignore[arg-type]


def ike(psk: bytes = b"secret-psk", proposals: list[IkeProposalSpec] | None = None, local_id: str = "192.0.2.1",
        **kw: object) -> IkeSaConfig:
    ip = ipaddress.ip_address(local_id)
    return IkeSaConfig(proposals or [AES256_SHA256_MODP2048], psk, (1 if ip.version == 4 else 5, ip.packed),
                       **kw)  # type: ignore[arg-type]


@dataclass
class StaticPolicy:
    config: IkeSaConfig
    children: list[ChildSaConfig]
    proposals: list[IkeProposalSpec] | None = None
    asked: list[tuple[int, bytes]] = field(default_factory=list)

    def ike_proposals(self, peer: Addr) -> list[IkeProposalSpec]:
        return self.proposals or self.config.proposals

    def authenticate(self, peer: Addr, id_type: int, id_data: bytes) -> list[IkeSaConfig]:
        self.asked.append((id_type, id_data))
        return [self.config]

    def select_child(self, sa: object, tsi: list[TrafficSelector], tsr: list[TrafficSelector]) -> ChildSaConfig | None:
        for c in self.children:
            if tsmod.all_within(tsi, c.remote_ts) and tsmod.all_within(tsr, c.local_ts):
                return c
        return None


@dataclass
class Side:
    name: str
    engines: list[IsakmpSa]
    factory: Callable[[Addr, Addr, float], IsakmpSa] | None
    events: list[IkeEvent] = field(default_factory=list)
    sent: list[bytes] = field(default_factory=list)

    def route(self, data: bytes, local: Addr, remote: Addr, now: float) -> IsakmpSa | None:
        for sa in self.engines:
            spis = sa.local_spis
            if data[:8] in spis or data[8:16] in spis:
                return sa
        for sa in self.engines:  # a retransmitted first message of a half-open responder
            if not sa.initiator and sa.state.value in ("mm-sent-2", "am-sent-2") and data[:8] == sa.spi_i:
                return sa
        if data[8:16] == bytes(8) and len(data) > 18 and data[18] in (2, 4) and self.factory is not None:
            sa = self.factory(local, remote, now)
            self.engines.append(sa)
            return sa
        return None

    def drain(self) -> None:
        for sa in list(self.engines):
            while (ev := sa.next_event()) is not None:
                self.events.append(ev)
                if isinstance(ev, IkeSaEstablished) and not ev.sa.is_initiator:
                    for other in self.engines:
                        if other is not sa and other.established and other.peer_id == sa.peer_id:
                            sa.adopt_children(other)


@dataclass
class Pair:
    i: Side
    r: Side
    now: float = 0.0
    nat_ip: str | None = None  # put the initiator behind a NAPT with this public address
    mangle: Callable[[bytes, str], bytes] | None = None

    def _nat_out(self, addr: Addr) -> Addr:
        return (self.nat_ip, addr[1] + 40000) if self.nat_ip else addr

    def _nat_in(self, addr: Addr) -> Addr:
        if self.nat_ip and addr[0] == self.nat_ip:
            return (self.initiator.local[0], addr[1] - 40000)
        return addr

    @property
    def initiator(self) -> IsakmpSa:
        return self.i.engines[0]

    @property
    def responder(self) -> IsakmpSa:
        return self.r.engines[0]

    @property
    def i_events(self) -> list[IkeEvent]:
        return self.i.events

    @property
    def r_events(self) -> list[IkeEvent]:
        return self.r.events

    @property
    def sent_i(self) -> list[bytes]:
        return self.i.sent

    @property
    def sent_r(self) -> list[bytes]:
        return self.r.sent

    def transfer(self, drop: Callable[[bytes, str], bool] = lambda data, who: False) -> int:
        moved = 0
        for _ in range(200):
            progress = False
            for src, dst, who in ((self.i, self.r, "i"), (self.r, self.i, "r")):
                for sa in list(src.engines):
                    for data, local, peer in sa.datagrams_to_send():
                        src.sent.append(data)
                        progress = True
                        if drop(data, who):
                            continue
                        if self.mangle is not None:
                            data = self.mangle(data, who)
                        if who == "i":
                            local = self._nat_out(local)
                        else:
                            peer = self._nat_in(peer)
                        target = dst.route(data, peer, local, self.now)
                        if target is None:
                            continue
                        target.receive_datagram(data, local, self.now, local=peer)
                        moved += 1
            self.i.drain()
            self.r.drain()
            if not progress:
                return moved
        raise AssertionError("endless exchange")

    def step(self, dt: float, drop: Callable[[bytes, str], bool] = lambda data, who: False) -> None:
        end = self.now + dt
        self.transfer(drop)
        while True:
            engines = self.i.engines + self.r.engines
            timers = [t for sa in engines if (t := sa.get_timer()) is not None]
            nxt = min(timers) if timers else None
            if nxt is None or nxt > end:
                break
            self.now = max(self.now, nxt)
            for sa in engines:
                sa.handle_timer(self.now)
            self.transfer(drop)
        self.now = end

    def events(self, who: str, kind: type) -> list:  # type: ignore[type-arg]
        src = self.i.events if who == "i" else self.r.events
        return [e for e in src if isinstance(e, kind)]


def make_pair(i_cfg: IkeSaConfig | None = None, r_cfg: IkeSaConfig | None = None,
              r_children: list[ChildSaConfig] | None = None, r_proposals: list[IkeProposalSpec] | None = None,
              i_opts: V1Options | None = None, r_opts: V1Options | None = None, now: float = 0.0,
              i_addr: Addr = I_ADDR, r_addr: Addr = R_ADDR) -> Pair:
    i_cfg = i_cfg or ike()
    r_cfg = r_cfg or ike(local_id=r_addr[0])
    policy = StaticPolicy(r_cfg, r_children or [child("10.2.0.0/24", "10.1.0.0/24")], r_proposals)
    ini = IsakmpSa(i_cfg, initiator=True, local=i_addr, peer=r_addr, now=now, v1=i_opts)

    def r_factory(local: Addr, remote: Addr, t: float) -> IsakmpSa:
        return IsakmpSa(None, initiator=False, local=local, peer=remote, now=t, policy=policy, v1=r_opts)

    i_policy = StaticPolicy(i_cfg, [child()], None)

    def i_factory(local: Addr, remote: Addr, t: float) -> IsakmpSa:
        return IsakmpSa(None, initiator=False, local=local, peer=remote, now=t, policy=i_policy, v1=i_opts)

    return Pair(Side("i", [ini], i_factory), Side("r", [], r_factory), now)


def establish(pair: Pair, child_cfg: ChildSaConfig | None = None) -> Pair:
    pair.initiator.initiate(pair.now, child_cfg or child())
    pair.transfer()
    return pair


AGGRESSIVE = V1Options(mode=ExchangeMode.AGGRESSIVE)

"""The dataplane interface the gateway drives, and its userspace implementation.

Two backends will sit behind the same small vocabulary (hypercorn's ``events.py`` is the model): this
userspace one, which carries ESP itself because this kernel has none, and a future XFRM one where the
kernel does. The gateway only ever says *install this Child SA*, *delete that SPI*, *arm the trap of that
policy*, and hears back :class:`Acquire`, :class:`SoftExpire` and :class:`HardExpire`; it never learns
which backend did the work.

:class:`UserspaceBackend` is sans-I/O: the I/O layer hands it packets read from the LAN side (TUN) and
UDP payloads received on port 4500, with the time, and performs the :class:`Send`/:class:`Bypass`
actions it returns. Time lifetimes stay with the IKE engine (``ChildSa.rekey_at``/``expire_at``); the
backend reports what only it can see: byte lifetimes and sequence number exhaustion.
"""

from __future__ import annotations

import functools
import ipaddress
import struct
from collections import Counter
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from ikegate.dataplane.esp import IPPROTO_IPV4, IPPROTO_IPV6, IPPROTO_NONE, ChildSaPair, EspError
from ikegate.dataplane.packet import IpInfo, PacketError, build_ipv4, build_ipv6, parse_ip
from ikegate.dataplane.spd import PolicyKey, Spd, Trap
from ikegate.ike.core.child import ChildSa
from ikegate.ike.core.config import Mode
from ikegate.ike.wire.v2 import TrafficSelector
from ikegate.policy.model import Config

__all__ = [
    "Acquire",
    "Action",
    "Addr",
    "Backend",
    "Bypass",
    "Event",
    "HardExpire",
    "Outbound",
    "Send",
    "SoftExpire",
    "UserspaceBackend",
]

Addr = tuple[str, int]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_SPI = struct.Struct("!I")
_new_tuple = tuple.__new__


# ------------------------------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Acquire:
    """Traffic hit an armed traffic-based policy with no SA: negotiate ``local``/``remote`` (the
    matched rule's selectors) with the policy's peer. Rate limited per rule by the backend."""

    policy_key: PolicyKey
    rule: int
    packet_info: IpInfo
    local: TrafficSelector
    remote: TrafficSelector
    interface: str = ""


@dataclass(frozen=True, slots=True)
class SoftExpire:
    """The Child SA whose inbound SPI is ``spi`` reached its soft byte lifetime (or nearly ran out of
    sequence numbers): rekey it."""

    spi: int


@dataclass(frozen=True, slots=True)
class HardExpire:
    """The Child SA whose inbound SPI is ``spi`` may carry no more traffic: delete it."""

    spi: int


@dataclass(frozen=True, slots=True)
class Outbound:
    """The Child SA whose inbound SPI is ``spi`` sent its first ESP packet since :meth:`UserspaceBackend.watch`
    asked (on-demand DPD wakes up on it: one event per quiet-to-busy change, never one per packet)."""

    spi: int


class Send(NamedTuple):
    """Send ``payload`` to the peer at ``remote``: as a UDP payload from port 4500 when ``udp_encap``
    (RFC 3948), else as raw IP protocol 50. A named tuple, not a frozen dataclass, because one is made
    per packet and a tuple is several times cheaper to build."""

    payload: bytes
    remote: Addr
    udp_encap: bool = True


class Bypass(NamedTuple):
    """No policy protects ``packet``: route it in clear."""

    packet: bytes


Event = Acquire | SoftExpire | HardExpire | Outbound
Action = Send | Bypass | Acquire


class Backend(Protocol):
    """What the gateway needs from any dataplane. Child SAs are identified by their inbound SPI, which
    this gateway allocated and which is therefore unique on it."""

    def install_sa(self, child: ChildSa, remote: Addr, *, local: str | None = None,
                   policy: PolicyKey | None = None, now: float = 0.0) -> list[Action]:
        """Install both directions of a negotiated Child SA; returns what became sendable."""
        ...

    def delete_sa(self, spi: int) -> bool:
        """Remove the Child SA with inbound SPI ``spi``; False when there was none."""
        ...

    def move_sa(self, spi: int, remote: Addr) -> bool:
        """The peer of the Child SA with inbound SPI ``spi`` moved (a NAT mapping change learnt from an
        authenticated IKE message): its ESP goes to ``remote`` from now on. False when there was none."""
        ...

    def install_trap(self, policy: PolicyKey) -> None:
        """Arm ``policy``: its traffic without SA raises :class:`Acquire`."""
        ...

    def remove_trap(self, policy: PolicyKey) -> None:
        """Disarm ``policy``: its traffic without SA is held and dropped, nothing is acquired."""
        ...

    def poll(self, now: float) -> list[Event]:
        """Events that happened since the last call."""
        ...


CountKey = tuple[str, str]  # ("packets" | "bytes" | "drops", direction or drop reason)


def add_pair_counts(counts: Counter[CountKey], pair: ChildSaPair) -> None:
    """Add one Child SA's counters into ``counts`` in place (a delete-all retires every SA through here,
    so no intermediate Counter is built)."""
    inbound, outbound = pair.inbound, pair.outbound
    if inbound.packets:  # an SA that never carried a packet (many do) adds nothing: no Counter updates
        counts["packets", "in"] += inbound.packets
        counts["bytes", "in"] += inbound.bytes
    if outbound.packets:
        counts["packets", "out"] += outbound.packets
        counts["bytes", "out"] += outbound.bytes
    for drops in (inbound.drops_seen, outbound.drops_seen):
        for reason, n in drops.items():
            counts["drops", reason] += n


# ------------------------------------------------------------------------------------- userspace


@dataclass(slots=True, eq=False)
class _Tunnel:
    """An installed Child SA with where its packets go."""

    pair: ChildSaPair
    remote: Addr
    local_ip: IPAddress | None
    remote_ip: IPAddress | None
    soft_reported: bool = False
    hard_reported: bool = False
    #: When ESP last went out / came in authentic (DPD's view of traffic): one float store per packet.
    last_out: float | None = None
    last_in: float | None = None
    watch: bool = False  # report the next outbound packet (see ``Outbound``)


@functools.lru_cache(maxsize=4096)
def _ip(text: str | None) -> IPAddress | None:
    if text is None:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class UserspaceBackend:
    """ESP in this process: :mod:`esp` for the SAs, :mod:`spd` for the policies (see module doc)."""

    def __init__(self, config: Config | None = None, *, replay_window: int = 1024, soft_ratio: float = 0.9,
                 arm_traps: bool = True) -> None:
        self.replay_window = replay_window
        self.soft_ratio = soft_ratio
        self._arm_traps = arm_traps
        self.spd: Spd[_Tunnel] = Spd(config, arm_traps=arm_traps)
        self._by_spi: dict[int, _Tunnel] = {}
        #: Queued for :meth:`poll`; the packet path tests it for truth after every packet (cheaper than a
        #: call that would build an empty list each time).
        self.events: list[Event] = []
        #: Drops that belong to no SA (unparseable packets, unknown SPIs, no SA for a policy); the
        #: per-SA ones are on each ``InboundEsp``/``OutboundEsp``.
        self.drops: Counter[str] = Counter()
        #: Counters of deleted SAs, so totals never go down (see :meth:`totals`).
        self.retired: Counter[CountKey] = Counter()

    def reload(self, config: Config) -> None:
        """Apply a new configuration; installed SAs stay."""
        self.spd.reload(config, arm_traps=self._arm_traps)

    # ------------------------------------------------------------------------------------ control

    def install_sa(self, child: ChildSa, remote: Addr, *, local: str | None = None,
                   policy: PolicyKey | None = None, now: float = 0.0) -> list[Action]:
        """Install ``child``; without ``policy``, a non-template Child SA belongs to the policy its
        configuration names. Packets held for it come back as :class:`Send` actions."""
        if policy is None and child.config.template is None:
            policy = (child.config.name, child.config.seq)
        pair = ChildSaPair.from_child(child, self.replay_window, self.soft_ratio)
        return self.install_pair(pair, remote, local=local, policy=policy, now=now)

    def install_pair(self, pair: ChildSaPair, remote: Addr, *, local: str | None = None,
                     policy: PolicyKey | None = None, now: float = 0.0) -> list[Action]:
        """Install ready-made ESP SAs (what :meth:`install_sa` does after keying them)."""
        spi = pair.spi_in
        if spi in self._by_spi:
            self.delete_sa(spi)
        tunnel = _Tunnel(pair, remote, _ip(local), _ip(remote[0]))
        self._by_spi[spi] = tunnel
        released = self.spd.install(spi, pair.ts_local, pair.ts_remote, tunnel, policy=policy, now=now)
        actions: list[Action] = []
        for packet in released:
            actions.extend(self.from_lan(packet, now))
        return actions

    def delete_sa(self, spi: int) -> bool:
        tunnel = self._by_spi.pop(spi, None)
        if tunnel is None:
            return False
        self.spd.remove(spi)
        add_pair_counts(self.retired, tunnel.pair)  # totals outlive the SA (metrics count from them)
        return True

    def move_sa(self, spi: int, remote: Addr) -> bool:
        tunnel = self._by_spi.get(spi)
        if tunnel is None:
            return False
        tunnel.remote, tunnel.remote_ip = remote, _ip(remote[0])  # the SPD holds the same tunnel
        return True

    def totals(self) -> Counter[CountKey]:
        """Packets, bytes and drops of every SA this backend ever carried, plus drops that concern none."""
        totals = Counter(self.retired)
        for tunnel in self._by_spi.values():
            add_pair_counts(totals, tunnel.pair)
        for reason, n in self.drops.items():
            totals["drops", reason] += n
        return totals

    def install_trap(self, policy: PolicyKey) -> None:
        self.spd.arm_trap(policy)

    def remove_trap(self, policy: PolicyKey) -> None:
        self.spd.disarm_trap(policy)

    def poll(self, now: float) -> list[Event]:
        events, self.events = self.events, []
        return events

    def sa(self, spi: int) -> ChildSaPair | None:
        """The ESP SAs (with counters) of the Child SA with inbound SPI ``spi``."""
        tunnel = self._by_spi.get(spi)
        return tunnel.pair if tunnel is not None else None

    def traffic(self, spi: int) -> tuple[float | None, float | None]:
        """(last inbound, last outbound) ESP time of the Child SA with inbound SPI ``spi``."""
        tunnel = self._by_spi.get(spi)
        return (tunnel.last_in, tunnel.last_out) if tunnel is not None else (None, None)

    def watch(self, spi: int) -> None:
        """Raise one :class:`Outbound` at the next ESP packet this Child SA sends."""
        tunnel = self._by_spi.get(spi)
        if tunnel is not None:
            tunnel.watch = True

    def __len__(self) -> int:
        return len(self._by_spi)

    # ------------------------------------------------------------------------------------ packets

    def _expiry(self, tunnel: _Tunnel) -> None:
        """Queue each lifetime event once; costs two attribute tests on the packet path."""
        pair = tunnel.pair
        inb, out = pair.inbound, pair.outbound
        if not tunnel.soft_reported and (inb.soft_expired or out.soft_expired):
            tunnel.soft_reported = True
            self.events.append(SoftExpire(inb.spi))
        if not tunnel.hard_reported and (inb.hard_expired or out.hard_expired):
            tunnel.hard_reported = True
            self.events.append(HardExpire(inb.spi))

    def from_lan(self, packet: bytes, now: float, interface: str | None = None) -> list[Action]:
        """A packet from the protected side: protect it, trap it, or let it pass in clear."""
        try:
            info = parse_ip(packet)
        except PacketError:
            self.drops["malformed"] += 1
            return []
        target = self.spd.outbound(info, packet, now, interface)
        if target is None:
            return [Bypass(packet)]
        if isinstance(target, Trap):
            if not target.held:
                self.drops["no-sa"] += 1
            if target.acquire:
                m = target.match
                return [Acquire(m.policy, m.rule, info, m.local, m.remote, m.interface)]
            return []
        pair = target.pair
        if pair.mode is Mode.TUNNEL:
            inner = packet if info.total_len == len(packet) else packet[: info.total_len]
            next_header = IPPROTO_IPV4 if info.version == 4 else IPPROTO_IPV6
        else:
            inner = packet[info.header_len : info.total_len]
            next_header = info.protocol
        try:
            payload = pair.outbound.seal(inner, next_header)
        except EspError:
            self._expiry(target)  # counted on the SA; the owner hears a HardExpire
            return []
        if pair.outbound.soft_expired:
            self._expiry(target)
        target.last_out = now
        if target.watch:
            target.watch = False
            self.events.append(Outbound(pair.spi_in))
        return [_new_tuple(Send, (payload, target.remote, pair.udp_encap))]  # Send(...) without its __new__

    def from_wan(self, payload: bytes, remote: Addr, now: float) -> bytes | None:
        """An ESP packet from a peer (the UDP payload on 4500, or the body of IP protocol 50): the inner
        IP packet for the LAN side, or None when it was dropped (see :meth:`open_wan`)."""
        opened = self.open_wan(payload, remote, now)
        return opened[0] if opened is not None else None

    def open_wan(self, payload: bytes, remote: Addr, now: float) -> tuple[bytes, IpInfo] | None:
        """An ESP packet from a peer (the UDP payload on 4500, or the body of IP protocol 50): the inner
        IP packet for the LAN side with its parsed header (the selector check needed it, and the caller
        routes on it: each packet is parsed once), or None when it was dropped (the reason counted on
        the SA, or in :attr:`drops` when no SA is concerned).

        ``remote`` is not used to select the SA (the SPI does, RFC 4301 §4.1) nor to move it: a NAT
        mapping change is learnt from authenticated IKE messages (RFC 7296 §2.23), and the gateway then
        re-installs the SA with the new address. ``now`` dates the peer's last sign of life (DPD).
        """
        if len(payload) < 8:
            self.drops["short"] += 1
            return None
        tunnel = self._by_spi.get(_SPI.unpack_from(payload)[0])
        if tunnel is None:
            self.drops["spi"] += 1
            return None
        pair = tunnel.pair
        inbound = pair.inbound
        try:
            next_header, inner = inbound.open(payload)
        except EspError:
            if inbound.hard_expired:
                self._expiry(tunnel)
            return None
        if inbound.soft_expired:
            self._expiry(tunnel)
        tunnel.last_in = now  # authentic (the ICV and replay checks passed): the peer is alive
        if next_header == IPPROTO_NONE:
            inbound.drops["dummy"] += 1  # TFC padding packet (RFC 4303 §2.6), silently discarded
            return None
        if pair.mode is Mode.TUNNEL:
            if next_header not in (IPPROTO_IPV4, IPPROTO_IPV6):
                inbound.drops["protocol"] += 1
                return None
            packet = inner
        else:
            src, dst = tunnel.remote_ip, tunnel.local_ip
            if src is None or dst is None or src.version != dst.version:
                inbound.drops["protocol"] += 1
                return None
            try:
                if src.version == 4:
                    packet = build_ipv4(src, dst, next_header, inner)
                else:
                    packet = build_ipv6(src, dst, next_header, inner)
            except PacketError:
                inbound.drops["malformed"] += 1
                return None
        try:
            info = parse_ip(packet)
        except PacketError:
            inbound.drops["malformed"] += 1
            return None
        if pair.mode is Mode.TUNNEL and (next_header == IPPROTO_IPV4) != (info.version == 4):
            inbound.drops["protocol"] += 1
            return None
        if not self.spd.inbound_allowed(inbound.spi, info):
            inbound.drops["policy"] += 1  # RFC 4301 §5.2 step 4: outside the SA's selectors
            return None
        return packet, info


# The userspace backend must stay a drop-in ``Backend``; mypy checks this line.
_CONFORMS: type[Backend] = UserspaceBackend

"""The security policy database: which packets IPsec protects, and with which installed SA.

Built from the configuration the way a USG applies it: for each interface that carries an ``ipsec
policy`` group, the group's policies in ascending sequence order, and within a policy the rules of its
IPv4 ACL then those of its IPv6 ACL (``security acl`` / ``security acl ipv6``), each in rule order
(RFC 4301 §4.4.1 calls this an ordered SPD). A ``permit`` rule protects the packet with that
policy; a ``deny`` rule only says "not this policy", so the search goes on with the next one. A policy
that names a template takes the rules of the template's ACLs; a template without ACL protects whatever
its negotiated SAs cover (a "dynamic" rule that matches only through installed SAs).

Installed Child SAs hang off the rules whose selectors they intersect, in a per-rule index keyed by the
CIDR blocks of their remote selectors, so finding the SA for a packet costs a rule scan plus one dict
probe per prefix length in use, and installing or removing one costs the same with 100,000 SAs as with
ten. When several SAs cover a packet (a rekey in progress) the newest one wins.

Outbound decisions that do not depend on time (protect with SA x, or no policy at all) are remembered
per flow (the 5-tuple) in a bounded cache that any SA or configuration change empties, so a busy flow
costs one dict lookup; traps are never cached, because their answer changes with the clock.

A packet that hits a non-template policy with no SA is held in a small per-rule queue (returned by
:meth:`Spd.install` when an SA that covers it comes up) and, for an armed traffic-based policy, raises an
ACQUIRE at most once per rule per ``acquire_interval``: the same larval-state behaviour the kernel has,
without letting one busy flow make the gateway start a negotiation per packet.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ikegate.dataplane.packet import PORTED, IpInfo
from ikegate.ike.wire.v2 import TrafficSelector
from ikegate.policy.model import Acl, AclAddress, AclRule, Config, TriggerMode, rule_key
from ikegate.policy.selectors import rule_family, rule_selectors, side_selector

__all__ = ["DYNAMIC_RULE", "PolicyKey", "Spd", "SpdMatch", "Trap"]

T = TypeVar("T")
PolicyKey = tuple[str, int]

#: The rule number of a template without ACL: its selectors are whatever was negotiated.
DYNAMIC_RULE = -1

_ALL = (1 << 128) - 1  # upper bound for "any address" in either family


@dataclass(frozen=True, slots=True)
class SpdMatch:
    """The policy rule a packet hit, with the selectors a negotiation for it would propose."""

    policy: PolicyKey
    rule: int  # the ACL rule id, or DYNAMIC_RULE
    trigger_mode: TriggerMode
    template: bool
    local: TrafficSelector  # the rule's source side, in the packet's family
    remote: TrafficSelector  # the rule's destination side
    interface: str = ""


@dataclass(frozen=True, slots=True)
class Trap:
    """A protected packet with no SA to carry it.

    ``acquire``: start a negotiation now for ``match`` (only for an armed traffic-based policy, and at
    most once per rule per interval). ``held``: the packet was queued and comes back from ``install``;
    when False it was dropped (template policy, or the queue was full).
    """

    match: SpdMatch
    acquire: bool
    held: bool


# A selector compiled for per-packet comparisons: (family, lo, hi, protocol, port_lo, port_hi).
_Sel = tuple[int, int, int, int, int, int]


@functools.lru_cache(maxsize=4096)
def _compile_ts(ts: TrafficSelector) -> _Sel:
    """Shared per selector value: SAs of one policy repeat the same few (no tuple per SA)."""
    return (ts.family, ts.start, ts.end, ts.ip_protocol, ts.start_port, ts.end_port)


def _covers(sel: _Sel, version: int, addr: int, proto: int, port: int) -> bool:
    """Whether one side of a packet lies inside a compiled selector.

    Ports are compared only for protocols that have them; ICMP type/code selectors are treated as
    opaque, since ACLs here carry none and peers propose the full range for them.
    """
    family, lo, hi, sproto, plo, phi = sel
    if family != version or not lo <= addr <= hi:
        return False
    if sproto and sproto != proto:
        return False
    return proto not in PORTED or plo <= port <= phi


@dataclass(slots=True, eq=False)
class _Installed(Generic[T]):
    key: object
    value: T
    local: list[_Sel]
    remote: list[_Sel]
    ts_local: list[TrafficSelector]
    ts_remote: list[TrafficSelector]
    order: int
    policy: PolicyKey | None
    rules: list[int] = field(default_factory=list)

    def covers_out(self, info: IpInfo) -> bool:
        """Packet leaving through this SA: source in the local selectors, destination in the remote."""
        v, p = info.version, info.protocol
        return any(_covers(s, v, info.dst, p, info.dst_port) for s in self.remote) and any(
            _covers(s, v, info.src, p, info.src_port) for s in self.local
        )

    def covers_in(self, info: IpInfo) -> bool:
        """Packet that arrived on this SA: source in the remote selectors, destination in the local.

        Run on every decrypted packet, so written out as plain loops over the compiled tuples (no
        generator, no call per selector): the same test as :func:`_covers`."""
        v, src, dst, p, sport, dport = info[:6]
        ported = p in PORTED
        for family, lo, hi, sproto, plo, phi in self.remote:
            if family == v and lo <= src <= hi and (not sproto or sproto == p) and (not ported or plo <= sport <= phi):
                break
        else:
            return False
        for family, lo, hi, sproto, plo, phi in self.local:
            if family == v and lo <= dst <= hi and (not sproto or sproto == p) and (not ported or plo <= dport <= phi):
                return True
        return False


def _blocks(lo: int, hi: int, width: int) -> Iterator[tuple[int, int]]:
    """The aligned CIDR blocks that exactly tile ``[lo, hi]``, as (prefix length, ``lo >> host bits``).

    A prefix is one block; an arbitrary range is at most ``2 * width`` of them, each the largest aligned
    block that starts where the previous one ended and still fits.
    """
    while lo <= hi:
        size = min(lo & -lo or 1 << width, 1 << (hi - lo + 1).bit_length() - 1)
        host = size.bit_length() - 1
        yield width - host, lo >> host
        lo += size


_WIDTH = {4: 32, 6: 128}


class _Block(Generic[T]):
    """The SAs of one rule whose remote selectors include one CIDR block, in install order."""

    __slots__ = ("peak", "sas")

    def __init__(self) -> None:
        self.sas: dict[_Installed[T], None] = {}
        self.peak = 0


class _SaIndex(Generic[T]):
    """The SAs of one rule, keyed by the CIDR blocks their remote selectors tile into.

    Every remote range becomes its aligned blocks (a prefix is one) under the key (family, prefix length,
    network bits), so a packet's candidates are one dict probe per prefix length in use: at most 33 for
    IPv4 and 129 for IPv6, in practice one or two, however many SAs the rule has. Installing and removing
    an SA touch only its own blocks. The blocks tile their range without overlap, so a packet meets each
    SA in at most one block; within a block SAs keep install order, so the newest covering one is found
    from the end (several SAs cover a packet while a rekey is in progress, and the newest wins).
    """

    __slots__ = ("_blocks", "_lengths")

    def __init__(self) -> None:
        self._blocks: dict[tuple[int, int, int], _Block[T]] = {}
        self._lengths: dict[int, dict[int, int]] = {4: {}, 6: {}}  # family: {prefix length: blocks of it}

    def __bool__(self) -> bool:
        return bool(self._blocks)

    def _keys(self, inst: _Installed[T]) -> Iterator[tuple[int, int, int]]:
        for family, lo, hi, *_ in inst.remote:
            for length, bits in _blocks(lo, hi, _WIDTH[family]):
                yield family, length, bits

    def add(self, inst: _Installed[T]) -> None:
        for key in self._keys(inst):
            block = self._blocks.get(key)
            if block is None:
                block = self._blocks[key] = _Block()
                lengths = self._lengths[key[0]]
                lengths[key[1]] = lengths.get(key[1], 0) + 1
            block.sas[inst] = None
            block.peak = max(block.peak, len(block.sas))

    def remove(self, inst: _Installed[T]) -> None:
        for key in self._keys(inst):
            block = self._blocks.get(key)
            if block is None or block.sas.pop(inst, block) is block:
                continue
            if not block.sas:
                del self._blocks[key]
                lengths = self._lengths[key[0]]
                lengths[key[1]] -= 1
                if not lengths[key[1]]:
                    del lengths[key[1]]
            elif 4 * len(block.sas) < block.peak:
                # A dict keeps the slots of removed keys until it grows again; copying it now keeps the
                # scan from the end proportional to what is left (amortised over the removals).
                block.sas = dict(block.sas)
                block.peak = len(block.sas)

    def find(self, info: IpInfo) -> _Installed[T] | None:
        """The newest SA covering ``info`` outbound, or None."""
        family, dst = info.version, info.dst
        lengths = self._lengths.get(family)
        if not lengths:
            return None
        width = _WIDTH[family]
        best: _Installed[T] | None = None
        for length in lengths:
            block = self._blocks.get((family, length, dst >> (width - length)))
            if block is None:
                continue
            for inst in reversed(block.sas):
                if best is not None and inst.order <= best.order:
                    break
                if inst.covers_out(info):
                    best = inst
                    break
        return best


@dataclass(slots=True, eq=False)
class _Rule:
    """One ACL rule compiled for matching, or a template's dynamic rule."""

    index: int
    policy: PolicyKey
    rule_id: int
    permit: bool
    trigger_mode: TriggerMode
    template: bool
    interface: str
    family: int  # 0: an address-less rule, matching both families
    src: tuple[int, int]
    dst: tuple[int, int]
    protocol: int
    ports: tuple[int, int, int, int] | None  # (src lo, src hi, dst lo, dst hi) when narrowed
    matches: dict[int, SpdMatch]  # per packet family
    dynamic: bool = False

    def hit(self, info: IpInfo) -> bool:
        if self.family and self.family != info.version:
            return False
        lo, hi = self.src
        if not lo <= info.src <= hi:
            return False
        lo, hi = self.dst
        if not lo <= info.dst <= hi:
            return False
        if self.protocol and self.protocol != info.protocol:
            return False
        ports = self.ports
        if ports is not None and info.protocol in PORTED:
            return ports[0] <= info.src_port <= ports[1] and ports[2] <= info.dst_port <= ports[3]
        return True

    def intersects(self, inst: _Installed[T]) -> bool:
        """Whether an SA's selectors share any packet with this rule (so it may carry its traffic)."""
        if self.dynamic:
            return True

        def meet(sel: _Sel, side: tuple[int, int], low: int, high: int) -> bool:
            family, lo, hi, proto, plo, phi = sel
            if self.family and family != self.family:
                return False
            if self.protocol and proto and proto != self.protocol:
                return False
            return lo <= side[1] and side[0] <= hi and plo <= high and low <= phi

        sp = self.ports or (0, 65535, 0, 65535)
        return any(meet(s, self.src, sp[0], sp[1]) for s in inst.local) and any(
            meet(s, self.dst, sp[2], sp[3]) for s in inst.remote
        )


@dataclass(slots=True, eq=False)
class _Policy:
    key: PolicyKey
    interface: str
    template: bool
    trigger_mode: TriggerMode
    blocks: list[list[_Rule]]  # one per ACL (a template policy may have several); a deny ends a block


def _range(addr: AclAddress | None) -> tuple[int, int]:
    if addr is None:
        return (0, _ALL)
    net = addr.network
    return (int(net.network_address), int(net.broadcast_address))


class Spd(Generic[T]):
    """Ordered policies from a :class:`Config`, installed SAs of type ``T`` and their traps.

    ``T`` is whatever the owner wants back from :meth:`outbound` for a protected packet: an
    ``OutboundEsp`` for a bare dataplane, or the backend's own record holding one.
    """

    def __init__(self, config: Config | None = None, *, arm_traps: bool = True, hold_limit: int = 4,
                 hold_time: float = 30.0, acquire_interval: float = 1.0) -> None:
        self.hold_limit = hold_limit
        self.hold_time = hold_time
        self.acquire_interval = acquire_interval
        self._policies: list[_Policy] = []
        self._rules: list[_Rule] = []
        self._index: list[_SaIndex[T]] = []
        self._installed: dict[object, _Installed[T]] = {}
        self._armed: set[PolicyKey] = set()
        self._held: dict[int, deque[tuple[float, IpInfo, bytes]]] = {}
        self._last_acquire: dict[int, float] = {}
        self._order = 0
        self._flows: dict[tuple[object, ...], _Installed[T] | None] = {}
        self.flow_cache_size = 65536
        self.acquires = 0
        self.hold_drops = 0
        self.no_sa_drops = 0
        #: told the remote selectors of every SA installed (+1) and removed (-1): a placement worker keeps its
        #: TUN steering entries (``ikegate.workers.tunsteer``) with it
        self.on_change: Callable[[list[TrafficSelector], int], None] | None = None
        if config is not None:
            self.reload(config, arm_traps=arm_traps)

    # ------------------------------------------------------------------------------------- building

    def reload(self, config: Config, *, arm_traps: bool = True) -> None:
        """Rebuild the policies from ``config``; installed SAs are kept and re-attached to the new rules.

        Held packets and acquire timers belong to the old rules and are dropped.
        """
        self._policies = []
        self._rules = []
        for itf in sorted(config.interfaces.values(), key=lambda i: i.name):
            if itf.ipsec_policy is None:
                continue
            for policy in config.policy_group(itf.ipsec_policy):
                key = (policy.name, policy.seq)
                blocks: list[list[_Rule]] = []
                if policy.template is not None:
                    for tpl in config.template_group(policy.template):
                        acls: list[Acl | None] = list(config.acls_of(tpl))
                        for acl in acls or [None]:  # a template without ACL accepts any flow
                            blocks.append(self._compile_acl(key, acl, policy.trigger_mode, True, itf.name))
                else:
                    for acl in config.acls_of(policy):
                        blocks.append(self._compile_acl(key, acl, policy.trigger_mode, False, itf.name))
                if blocks:
                    self._policies.append(_Policy(key, itf.name, policy.is_template, policy.trigger_mode, blocks))
        self._index = [_SaIndex() for _ in self._rules]
        self._flows.clear()
        self._held.clear()
        self._last_acquire.clear()
        self._armed = {p.key for p in self._policies
                       if arm_traps and not p.template and p.trigger_mode is TriggerMode.TRAFFIC_BASED}
        for inst in sorted(self._installed.values(), key=lambda i: i.order):
            self._place(inst)

    def _compile_acl(self, key: PolicyKey, acl: Acl | None, trigger: TriggerMode, template: bool,
                     interface: str) -> list[_Rule]:
        if acl is None:
            any_match = {
                fam: SpdMatch(key, DYNAMIC_RULE, trigger, template, side_selector(None, fam),
                              side_selector(None, fam), interface)
                for fam in (4, 6)
            }
            rule = _Rule(len(self._rules), key, DYNAMIC_RULE, True, trigger, template, interface, 0, (0, _ALL),
                         (0, _ALL), 0, None, any_match, dynamic=True)
            self._rules.append(rule)
            return [rule]
        out = []
        for acl_rule in sorted(acl.rules, key=lambda r: r.rule_id):
            rule = self._compile_rule(key, acl_rule, trigger, template, interface, acl)
            self._rules.append(rule)
            out.append(rule)
        return out

    def _compile_rule(self, key: PolicyKey, rule: AclRule, trigger: TriggerMode, template: bool,
                      interface: str, acl: Acl) -> _Rule:
        family = rule_family(acl, rule) or 0  # 0: an address-less IPv4 rule matches either family
        rule_id = rule_key(acl, rule)
        sp, dp = rule.source_port, rule.destination_port
        ports = None if sp.any and dp.any else (sp.low, sp.high, dp.low, dp.high)
        matches = {fam: SpdMatch(key, rule_id, trigger, template, *rule_selectors(rule, fam), interface)
                   for fam in ((family,) if family else (4, 6))}
        return _Rule(len(self._rules), key, rule_id, rule.action == "permit", trigger, template, interface,
                     family, _range(rule.source), _range(rule.destination), rule.ip_protocol, ports, matches)

    # ------------------------------------------------------------------------------------- lookups

    def _match(self, info: IpInfo, interface: str | None) -> tuple[_Rule, _Installed[T] | None] | None:
        """The first permit rule hit (and, for it, the newest covering SA), honouring deny rules."""
        for policy in self._policies:
            if interface is not None and policy.interface != interface:
                continue
            for block in policy.blocks:
                for rule in block:
                    if rule.dynamic:
                        inst = self._index[rule.index].find(info)
                        if inst is not None:
                            return rule, inst
                        break
                    if rule.hit(info):
                        if not rule.permit:
                            break  # "not protected by this ACL": on to the next block / policy
                        return rule, self._index[rule.index].find(info)
        return None

    def lookup(self, info: IpInfo, interface: str | None = None) -> SpdMatch | None:
        """The policy rule protecting ``info``, or None when no policy does (it goes in clear)."""
        hit = self._match(info, interface)
        return hit[0].matches[info.version] if hit else None

    def covered(self, info: IpInfo, interface: str | None = None) -> bool:
        """Whether an SA protects ``info`` now (no side effect: no trap fires, no packet is held), so a
        placement worker can say whether an outbound packet is its to send."""
        hit = self._match(info, interface)
        return hit is not None and hit[1] is not None

    def covering(self, info: IpInfo, interface: str | None = None) -> tuple[bool, SpdMatch | None]:
        """:meth:`covered` and, when no SA protects ``info``, :meth:`lookup`, in one pass and through the
        flow cache :meth:`outbound` keeps (a placement worker asks this of every packet its TUN queue reads,
        before :meth:`outbound` sees it): (an SA protects it, the rule when none does)."""
        flow = (interface, *info[:6])
        try:
            cached = self._flows[flow]
        except KeyError:
            pass
        else:
            return cached is not None, None
        hit = self._match(info, interface)
        if hit is None:
            return False, None
        rule, inst = hit
        if inst is not None:
            self._remember(flow, inst)
            return True, None
        return False, rule.matches[info.version]

    def outbound(self, info: IpInfo, packet: bytes = b"", now: float = 0.0,
                 interface: str | None = None) -> T | Trap | None:
        """Where an outgoing packet goes: the SA record to protect it with, a :class:`Trap`, or None
        (no policy: send in clear). ``packet`` is held for a non-template policy without SA."""
        flow = (interface, *info[:6])
        try:
            cached = self._flows[flow]
        except KeyError:
            pass
        else:
            return cached.value if cached is not None else None
        hit = self._match(info, interface)
        if hit is None:
            self._remember(flow, None)
            return None
        rule, inst = hit
        if inst is not None:
            self._remember(flow, inst)
            return inst.value
        match = rule.matches[info.version]
        if rule.template:
            self.no_sa_drops += 1  # a template only responds; nothing can be negotiated from here
            return Trap(match, False, False)
        held = False
        if packet:
            queue = self._held.get(rule.index)
            if queue is None:
                queue = self._held[rule.index] = deque()
            while queue and now - queue[0][0] > self.hold_time:
                queue.popleft()
                self.hold_drops += 1
            if len(queue) < self.hold_limit:
                queue.append((now, info, packet))
                held = True
            else:
                self.hold_drops += 1
        acquire = False
        if rule.policy in self._armed:
            last = self._last_acquire.get(rule.index)
            if last is None or now - last >= self.acquire_interval:
                self._last_acquire[rule.index] = now
                self.acquires += 1
                acquire = True
        return Trap(match, acquire, held)

    def _remember(self, flow: tuple[object, ...], inst: _Installed[T] | None) -> None:
        if len(self._flows) >= self.flow_cache_size:
            self._flows.clear()  # crude but bounded; a busy flow is back after one packet
        self._flows[flow] = inst

    def inbound_allowed(self, key: object, info: IpInfo) -> bool:
        """Whether a decrypted packet lies inside the selectors of the SA it came on (RFC 4301 §5.2)."""
        inst = self._installed.get(key)
        return inst is not None and inst.covers_in(info)

    # ----------------------------------------------------------------------------------- SA changes

    def install(self, key: object, ts_local: Iterable[TrafficSelector], ts_remote: Iterable[TrafficSelector],
                sa: T, *, policy: PolicyKey | None = None, now: float = 0.0) -> list[bytes]:
        """Attach an SA; returns the held packets it now covers, oldest first, for the caller to send.

        The SA is attached to every rule (of ``policy`` when given, else of any policy) whose selectors
        it intersects; failing that, to a template's dynamic rule. Installing an existing key replaces it.
        """
        if key in self._installed:
            self.remove(key)
        ts_local, ts_remote = list(ts_local), list(ts_remote)
        self._order += 1
        inst = _Installed(key, sa, [_compile_ts(t) for t in ts_local], [_compile_ts(t) for t in ts_remote],
                          ts_local, ts_remote, self._order, policy)
        self._installed[key] = inst
        if self.on_change is not None:
            self.on_change(ts_remote, 1)
        self._place(inst)
        self._flows.clear()
        released: list[bytes] = []
        for index in inst.rules:
            queue = self._held.get(index)
            if not queue:
                continue
            keep: deque[tuple[float, IpInfo, bytes]] = deque()
            for item in queue:
                when, info, packet = item
                if now - when > self.hold_time:
                    self.hold_drops += 1
                elif inst.covers_out(info):
                    released.append(packet)
                else:
                    keep.append(item)
            self._held[index] = keep
        return released

    def _place(self, inst: _Installed[T]) -> None:
        inst.rules = []
        candidates = [p for p in self._policies if inst.policy is None or p.key == inst.policy]
        for policy in candidates:
            for block in policy.blocks:
                for rule in block:
                    if rule.permit and not rule.dynamic and rule.intersects(inst):
                        inst.rules.append(rule.index)
        if not inst.rules:
            for policy in candidates:
                for block in policy.blocks:
                    for rule in block:
                        if rule.dynamic:
                            inst.rules.append(rule.index)
        for index in inst.rules:
            self._index[index].add(inst)

    def remove(self, key: object) -> T | None:
        """Detach an SA; returns what was installed under ``key``."""
        inst = self._installed.pop(key, None)
        if inst is None:
            return None
        if self.on_change is not None:
            self.on_change(inst.ts_remote, -1)
        for index in inst.rules:
            self._index[index].remove(inst)
        self._flows.clear()
        return inst.value

    def arm_trap(self, policy: PolicyKey) -> None:
        """Let packets of ``policy`` without SA raise ACQUIREs (traffic-based policies start armed)."""
        self._armed.add(policy)

    def disarm_trap(self, policy: PolicyKey) -> None:
        self._armed.discard(policy)

    def armed(self, policy: PolicyKey) -> bool:
        return policy in self._armed

    # ------------------------------------------------------------------------------------- queries

    def get(self, key: object) -> T | None:
        inst = self._installed.get(key)
        return inst.value if inst is not None else None

    def remote_selectors(self) -> Iterator[TrafficSelector]:
        """The remote traffic selectors of every installed SA: where this process's SAs lead (a placement
        worker steers the TUN's packets to those destinations to its own queue)."""
        for inst in self._installed.values():
            yield from inst.ts_remote

    def held(self, policy: PolicyKey, rule: int) -> int:
        """How many packets wait for an SA on one rule."""
        return sum(len(q) for i, q in self._held.items() if self._rules[i].policy == policy
                   and self._rules[i].rule_id == rule)

    def __len__(self) -> int:
        return len(self._installed)

    def __contains__(self, key: object) -> bool:
        return key in self._installed

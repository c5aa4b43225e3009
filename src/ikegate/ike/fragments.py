"""What IKEv2 fragmentation (RFC 7383) and the IKEv1 fragmentation extension share: sizes, limits,
counters and the bounded store of fragments waiting for their siblings.

Why a message is fragmented at all: certificates make IKE_AUTH (and IKEv1 MM5/MM6) larger than one
datagram, and an IP-fragmented UDP datagram is often dropped by NATs and firewalls. IKE splits it into
datagrams that each fit the path.

**Sizes.** ``fragment_size`` is the size of the whole IP datagram a fragment may fill, as strongSwan's
``charon.fragment_size`` counts it; the default is strongSwan's 1280 for both families: the IPv6 minimum
MTU, so it passes every IPv6 path, and well under a 1,500-byte IPv4 path with tunnels or PPPoE in
between. 0 picks the family's safe minimum instead (576 for IPv4, 1280 for IPv6, RFC 7383 §2.5.1, the
sizes every IP path must carry), for paths known to be narrow. :func:`message_budget` subtracts the IP and
UDP headers and the non-ESP marker of port 4500 to give the bytes left for the IKE message.

**Memory.** Reassembly must not let a peer make us hold unbounded memory. :class:`FragmentStore` is the
one place that holds fragments for one IKE SA, and it enforces :class:`FragmentLimits`: fragments per
message, bytes per reassembled message, bytes for the whole SA, concurrent reassemblies, and a deadline
counted from the first fragment of a message (a trickle of fragments cannot keep it alive). Every fragment
is charged its length plus :data:`ENTRY_COST` for the bookkeeping, so even empty fragments are paid for.
The gateway's half-open limit bounds how many SAs exist; together they bound the whole process.

The two protocols differ in what may reach the store: an IKEv2 fragment is stored only after its ICV
verified (RFC 7383 §2.6), so only the holder of the SA's keys can fill it; an IKEv1 fragment carries no
integrity check of its own (the whole encrypted message is split), so the store's bound is all that
stands between an on-path attacker and our memory.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field, fields

__all__ = [
    "DEFAULT_FRAGMENT_SIZE",
    "ENTRY_COST",
    "MIN_FRAGMENT_SIZE",
    "NON_ESP_MARKER_LEN",
    "Assembly",
    "FragmentLimits",
    "FragmentStats",
    "FragmentStore",
    "FragmentationConfig",
    "ReassemblerBase",
    "message_budget",
]

#: strongSwan's default ``charon.fragment_size``: the IP datagram size of a sent fragment, both families.
DEFAULT_FRAGMENT_SIZE = 1280
#: RFC 7383 §2.5.1's safe sizes per IP version (4 -> 576, 6 -> 1280): used when ``fragment_size`` is 0.
MIN_FRAGMENT_SIZE: dict[int, int] = {4: 576, 6: 1280}
#: IP header (without options or extension headers) plus UDP header, per IP version.
_IP_UDP_OVERHEAD: dict[int, int] = {4: 20 + 8, 6: 40 + 8}
#: The four zero octets in front of IKE on port 4500 (RFC 3948 §2.2).
NON_ESP_MARKER_LEN = 4
#: What one stored fragment costs beyond its bytes (dict slot, key, object headers), charged to the limit.
ENTRY_COST = 64


def message_budget(fragment_size: int, family: int, *, natt: bool) -> int:
    """The bytes an IKE message may take in one datagram of at most ``fragment_size`` bytes of IP.

    ``family`` is 4 or 6; ``natt`` says the datagram goes to or from port 4500 and so carries the non-ESP
    marker. ``fragment_size`` 0 means the family's safe minimum (:data:`MIN_FRAGMENT_SIZE`).
    """
    if family not in _IP_UDP_OVERHEAD:
        raise ValueError(f"IP version {family}")
    size = fragment_size or MIN_FRAGMENT_SIZE[family]
    budget = size - _IP_UDP_OVERHEAD[family] - (NON_ESP_MARKER_LEN if natt else 0)
    if budget <= 0:
        raise ValueError(f"fragment size {size} leaves no room for IKE over IPv{family}")
    return budget


@dataclass(frozen=True, slots=True)
class FragmentLimits:
    """Bounds on what one IKE SA may make us hold while reassembling.

    Defaults: 64 fragments (a 32 KiB message at the IPv4 minimum of 576 still fits, strongSwan caps at
    255), 32 KiB per message (three times an IKE_AUTH with a chain of three RSA-4096 certificates;
    strongSwan's ``max_packet`` is 10,000), 64 KiB per SA (a request and a response at once, the most a
    window of one needs), 2 concurrent reassemblies, and 30 s from a message's first fragment to its
    last (a few retransmissions of the sender; RFC 7383 leaves the time-out to the implementation).
    """

    max_fragments: int = 64
    max_message: int = 32 * 1024
    max_held: int = 64 * 1024
    max_pending: int = 2
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if min(self.max_fragments, self.max_message, self.max_held, self.max_pending) < 1 or self.timeout <= 0:
            raise ValueError("fragment limits must be positive")


@dataclass(frozen=True, slots=True)
class FragmentationConfig:
    """What an IKE SA's configuration says about fragmentation, for both versions.

    ``enabled``: announce support (IKEv2 IKEV2_FRAGMENTATION_SUPPORTED, IKEv1 the FRAGMENTATION Vendor
    ID) and fragment what does not fit once the peer announced it too. ``fragment_size``: the IP datagram
    size of a sent fragment (0: the family's safe minimum). ``limits``: what reassembly may hold.
    """

    enabled: bool = True
    fragment_size: int = DEFAULT_FRAGMENT_SIZE
    limits: FragmentLimits = field(default_factory=FragmentLimits)

    def __post_init__(self) -> None:
        if self.fragment_size:
            message_budget(self.fragment_size, 6, natt=True)  # raises when it leaves no room at all

    def budget(self, family: int, *, natt: bool) -> int:
        """The IKE message bytes per datagram towards a peer of IP version ``family``."""
        return message_budget(self.fragment_size, family, natt=natt)


@dataclass(slots=True)
class FragmentStats:
    """Counters of one reassembler, for the engine's statistics and the metrics: every fragment that is
    not kept is counted under exactly one reason."""

    received: int = 0  # fragments offered
    kept: int = 0  # stored (or completed a message)
    reassembled: int = 0  # whole messages delivered to the engine
    duplicate: int = 0  # a fragment number already held
    late: int = 0  # a fragment of the message reassembled last (the rest of a retransmission)
    malformed: int = 0  # numbers that contradict themselves or the message (zero, beyond the total ...)
    bad_icv: int = 0  # IKEv2: the fragment did not verify (never stored)
    stale: int = 0  # IKEv2: fewer Total Fragments than the message in progress (§2.6)
    restarted: int = 0  # IKEv2: more Total Fragments, the message in progress was discarded (§2.6)
    over_limit: int = 0  # fragments dropped because a limit would be exceeded (the message is discarded)
    evicted: int = 0  # reassemblies discarded to make room for a newer message
    timed_out: int = 0  # reassemblies discarded at their deadline

    @property
    def dropped(self) -> int:
        """Fragments that did not count towards a message."""
        return self.duplicate + self.late + self.malformed + self.bad_icv + self.stale + self.over_limit

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(slots=True)
class Assembly:
    """One message being reassembled: its fragments by number and what the protocol learned so far.

    ``total`` is the number of fragments once known (IKEv2: from every fragment; IKEv1: from the one
    flagged last); ``first`` is what the protocol keeps from fragment 1 (IKEv2: the inner payload type
    and the unprotected payloads).
    """

    key: Hashable
    deadline: float
    total: int | None = None
    parts: dict[int, bytes] = field(default_factory=dict)
    size: int = 0  # sum of the parts' lengths
    cost: int = 0  # what this assembly is charged against the SA's limit
    first: object = None

    @property
    def complete(self) -> bool:
        return self.total is not None and len(self.parts) == self.total

    def joined(self) -> bytes:
        """The parts in fragment-number order (call when :attr:`complete`)."""
        return b"".join(self.parts[n] for n in sorted(self.parts))


class FragmentStore:
    """The fragments one IKE SA holds, under :class:`FragmentLimits`. Protocol-neutral: the caller says
    which message (``key``) a fragment belongs to and what its number is; the store keeps, refuses,
    evicts and times out, and counts every decision in ``stats``."""

    __slots__ = ("_pending", "held", "limits", "stats")

    def __init__(self, limits: FragmentLimits | None = None, stats: FragmentStats | None = None) -> None:
        self.limits = limits or FragmentLimits()
        self.stats = stats or FragmentStats()
        self._pending: dict[Hashable, Assembly] = {}  # insertion order = age, for eviction
        self.held = 0  # bytes charged, never above limits.max_held

    def __len__(self) -> int:
        return len(self._pending)

    def get(self, key: Hashable, now: float) -> Assembly | None:
        """The live assembly for ``key``; one past its deadline is discarded (and counted) first."""
        asm = self._pending.get(key)
        if asm is not None and now >= asm.deadline:
            self.discard(key)
            self.stats.timed_out += 1
            return None
        return asm

    def open(self, key: Hashable, now: float, total: int | None = None) -> Assembly:
        """A new, empty assembly for ``key`` (replacing any). When ``max_pending`` are in progress the
        oldest is evicted: a peer has at most a request and a response in flight, so anything beyond is
        stale or hostile, and the newest message is the one worth finishing."""
        self.discard(key)
        while len(self._pending) >= self.limits.max_pending:
            self.discard(next(iter(self._pending)))
            self.stats.evicted += 1
        asm = Assembly(key, now + self.limits.timeout, total)
        self._pending[key] = asm
        return asm

    def put(self, asm: Assembly, number: int, data: bytes) -> bool:
        """Keep fragment ``number`` of ``asm``. False (counted) for a duplicate, which changes nothing, or
        when a limit would be exceeded, which discards the whole message: the sender retransmits all
        fragments of it, and a message that cannot fit never will."""
        if number in asm.parts:
            self.stats.duplicate += 1
            return False
        cost = len(data) + ENTRY_COST
        limits = self.limits
        if (len(asm.parts) >= limits.max_fragments or asm.size + len(data) > limits.max_message
                or self.held + cost > limits.max_held):
            self.discard(asm.key)
            self.stats.over_limit += 1
            return False
        asm.parts[number] = data
        asm.size += len(data)
        asm.cost += cost
        self.held += cost
        self.stats.kept += 1
        return True

    def take(self, asm: Assembly) -> bytes:
        """The complete message's bytes; the assembly is released. (The caller counts ``reassembled``
        once it has checked the result.)"""
        data = asm.joined()
        self.discard(asm.key)
        return data

    def discard(self, key: Hashable) -> None:
        asm = self._pending.pop(key, None)
        if asm is not None:
            self.held -= asm.cost

    def clear(self) -> None:
        """Forget everything (the IKE SA is deleted or rekeyed)."""
        self._pending.clear()
        self.held = 0

    def expire(self, now: float) -> None:
        """Discard every assembly past its deadline (the engine calls this from its timer)."""
        for key in [k for k, a in self._pending.items() if now >= a.deadline]:
            self.discard(key)
            self.stats.timed_out += 1

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has work, for the engine's ``get_timer``; None when nothing is held."""
        return min((a.deadline for a in self._pending.values()), default=None)


class ReassemblerBase:
    """What the IKEv2 and IKEv1 reassemblers share: one :class:`FragmentStore` per IKE SA and the surface
    the engine's timer and statistics use. The subclasses add ``add()``, the protocol's rules."""

    __slots__ = ("_store",)

    def __init__(self, limits: FragmentLimits | None = None) -> None:
        self._store = FragmentStore(limits)

    @property
    def stats(self) -> FragmentStats:
        return self._store.stats

    @property
    def held(self) -> int:
        """Bytes currently charged for held fragments (never above ``limits.max_held``)."""
        return self._store.held

    @property
    def pending(self) -> int:
        """Messages currently being reassembled."""
        return len(self._store)

    def clear(self) -> None:
        """Forget everything (the IKE SA is deleted or rekeyed)."""
        self._store.clear()

    def expire(self, now: float) -> None:
        """Discard what is past its deadline; the engine calls it from its timer."""
        self._store.expire(now)

    def next_deadline(self) -> float | None:
        """When :meth:`expire` next has work, for the engine's ``get_timer``."""
        return self._store.next_deadline()

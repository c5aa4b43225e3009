"""The SA database: the one source of truth about the device's IKE SAs and IPsec SAs.

Everything that shows or changes tunnels reads it: ``display ike sa`` / ``display ipsec sa`` render from it,
``reset ike sa`` selects from it (and asks the gateway to delete what it selected), the gateway controller
records every create/delete in it, and the dataplane finds SAs by SPI in it. Nobody keeps a private copy,
so the CLI can never show a tunnel the engines no longer have.

What is in here, and why it looks the way it does:

* **Connection IDs.** Phase-1 (IKE) and phase-2 (IPsec, one entry per Child SA *pair*) entries share one
  id space, 1..4294967295, as on the USG where ``reset ike sa conn-id N`` accepts either kind. Ids come from
  a counter that wraps and skips live (and reserved) ids, so allocation is O(1) amortised and an id is never
  handed out twice while its SA lives. The counter can be restricted to one residue class
  (``offset``/``stride``) so that several placement workers, each holding its own database, still give out
  device-unique ids without talking to each other.
* **Parent links.** Every IPsec SA names the conn-id of the IKE SA that negotiated it; the IKE SA lists its
  children. IKEv1 without ``ikev1 phase1-phase2 sa dependent`` may keep IPsec SAs after their IKE SA is gone,
  so children can be detached (``parent = None``). Removing an IKE SA that still has children is refused:
  the caller must decide (delete them, or detach them) — the database never deletes tunnels on its own.
* **Indexes.** By conn-id, peer address (port ignored: ``reset ike sa remote X`` selects by address), peer
  identity, IKE SPIs and ESP SPIs (inbound and outbound). Each index maps a key to the conn-ids having it, so
  a lookup or a selection by one of them costs O(matches), never a scan of all SAs. These are the keys the
  protocol looks up per packet or per set-up. Every index costs each add and each remove (a delete-all of
  100,000 SAs pays it 200,000 times), so the operator's rarer selections, by policy (``reset ipsec sa
  policy``, ``display ipsec sa policy``) and by placement (``slot S cpu C``), scan the entries instead: a
  placement or a template policy usually holds most SAs anyway, so its index bought little. Fields that
  are index keys must only change through the database's methods (``move_peer``, ``set_ike_spis``,
  ``set_esp_spis``, ``set_flags``, ``reparent``); the other fields (counters, DPD state, algorithms) may be
  updated in place by their owner.
* **Placement.** A USG spreads tunnels over (slot, cpu); ikegate runs one worker per placement. Each entry
  records its placement, an IPsec SA always lives in its IKE SA's placement, and :func:`placement_for` is
  the stable rule that picks an IKE SA's placement from its first packet.

The module is data only: no sockets, no clocks (times are floats passed in), no logging.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
from collections import deque
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_CONN_ID = 4294967295
"""Largest connection ID (``reset ike sa conn-id`` accepts 1 to 4294967295)."""

IKE_SPI_LEN = 8
ZERO_IKE_SPI = bytes(IKE_SPI_LEN)
"""The responder SPI of an IKE SA whose responder has not answered yet (RFC 7296 §3.1)."""

OFFLINE_LOG_CAPACITY = 200
"""``display ike offline-info`` keeps the latest 200 IPsec tunnel deletions."""


# ----------------------------------------------------------------------------------------------------------
# Small value types
# ----------------------------------------------------------------------------------------------------------


class SaFlag(enum.Flag):
    """The ``Flag(s)`` column of ``display ike sa``; member names are the text the USG prints.

    Declared in the order of the USG's flag legend, so iterating a combination (and :func:`flags_text`)
    yields the order the device prints, e.g. ``RD|ST|A``.
    """

    RD = enum.auto()  # READY: established and usable
    ST = enum.auto()  # STAYALIVE: the local end initiated this SA
    RL = enum.auto()  # REPLACED: superseded by a rekeyed SA, cleared soon
    FD = enum.auto()  # FADING: soft lifetime passed, deleted at the hard lifetime
    TO = enum.auto()  # TIMEOUT: liveness check (DPD/heartbeat) pending
    HRT = enum.auto()  # HEARTBEAT
    LKG = enum.auto()  # LAST KNOWN GOOD SEQ NO.
    BCK = enum.auto()  # BACKED UP
    M = enum.auto()  # ACTIVE (hot standby)
    S = enum.auto()  # STANDBY (hot standby)
    A = enum.auto()  # ALONE (no hot standby)
    NEG = enum.auto()  # NEGOTIATING


NO_FLAGS = SaFlag(0)


_FLAGS_TEXT: dict[int, str] = {}


def flags_text(flags: SaFlag) -> str:
    """``RD|ST|A`` style text of a flag set, in legend order; empty string for no flags. Memoised per
    value: iterating an ``enum.Flag`` is slow and only a handful of combinations ever occur."""
    text = _FLAGS_TEXT.get(flags.value)
    if text is None:
        text = _FLAGS_TEXT[flags.value] = "|".join(member.name or "" for member in flags)
    return text


class Role(enum.Enum):
    """Which end started the negotiation of an SA. The initiator's entries carry the ``ST`` flag."""

    INITIATOR = "initiator"
    RESPONDER = "responder"


class OfflineReason(enum.StrEnum):
    """Offline reasons of ``display ike offline-info`` (USG wording). Any ``str`` is accepted as a reason;
    these are the ones the gateway produces."""

    CONFIG_OR_MANUAL = "config modify or manual offline"
    PEER_REQUEST = "peer request"
    DPD_TIMEOUT = "dpd timeout"
    PHASE1_HARD_EXPIRY = "phase1 hard expiry"
    PHASE2_HARD_EXPIRY = "phase2 hard expiry"
    HEARTBEAT_TIMEOUT = "heartbeat timeout"
    RE_AUTH_TIMEOUT = "re-auth timeout"


@dataclass(frozen=True, slots=True, order=True)
class Placement:
    """Where an SA lives: a (slot, cpu) pair, i.e. one SPU core and, in ikegate, one worker process.

    Ordered by (slot, cpu) so that ``sorted(placements)`` gives the canonical order :func:`placement_for`
    expects.
    """

    slot: int
    cpu: int

    def __str__(self) -> str:
        return f"slot {self.slot} cpu {self.cpu}"


DEFAULT_PLACEMENT = Placement(0, 0)
"""The placement of a device with a single SPU core (and of a single-process gateway)."""


def _as_address(address: IPAddress | str) -> IPAddress:
    return address if not isinstance(address, str) else ipaddress.ip_address(address)


def _identity(entry: BaseSaEntry) -> tuple[IPAddress, str, str]:
    return entry.peer_address, entry.peer_id_type, entry.peer_id


@dataclass(frozen=True, slots=True)
class Selector:
    """One traffic selector of an IPsec SA: an address range, an IP protocol (0 = any) and a port range.

    A range rather than a prefix because that is what IKEv2 negotiates (RFC 7296 §3.13.1); ACL-derived
    selectors are prefixes, and :attr:`network` gives the prefix back when the range is one, which is what
    ``display ipsec sa`` prints (``192.168.17.0/255.255.255.0 0/0-65535``).
    """

    start: IPAddress
    end: IPAddress
    protocol: int = 0
    port_low: int = 0
    port_high: int = 65535

    def __post_init__(self) -> None:
        if self.start.version != self.end.version:
            raise ValueError("selector start and end must be of the same IP version")
        if int(self.start) > int(self.end):
            raise ValueError(f"selector range {self.start}-{self.end} is empty")
        if not 0 <= self.protocol <= 255:
            raise ValueError(f"IP protocol {self.protocol} out of range")
        if not 0 <= self.port_low <= self.port_high <= 65535:
            raise ValueError(f"port range {self.port_low}-{self.port_high} invalid")

    @classmethod
    def from_network(
        cls,
        network: ipaddress.IPv4Network | ipaddress.IPv6Network | str,
        protocol: int = 0,
        port_low: int = 0,
        port_high: int = 65535,
    ) -> Selector:
        """A selector covering a whole prefix (how ACL rules become selectors)."""
        net = ipaddress.ip_network(network, strict=False) if isinstance(network, str) else network
        return cls(net.network_address, net.broadcast_address, protocol, port_low, port_high)

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
        """The prefix this range is exactly, or ``None`` if it is not a single prefix."""
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = list(
            ipaddress.summarize_address_range(self.start, self.end)
        )
        return nets[0] if len(nets) == 1 else None

    def contains(self, address: IPAddress, protocol: int = 0, port: int | None = None) -> bool:
        """Whether a packet's address (and protocol/port, when given) falls under this selector."""
        if address.version != self.start.version or not int(self.start) <= int(address) <= int(self.end):
            return False
        if self.protocol and protocol != self.protocol:
            return False
        return port is None or self.port_low <= port <= self.port_high


# ----------------------------------------------------------------------------------------------------------
# Entries
# ----------------------------------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class BaseSaEntry:
    """The fields IKE SAs and IPsec SAs share, under the same names, so renderers treat both alike.

    ``slots=True`` keeps an entry near 300 bytes: the CLI benchmark holds 100,000 of them. Fields marked
    *keyed* are index keys; change them only through :class:`SaDatabase` methods.
    """

    conn_id: int = 0  # keyed; 0 = "allocate when added"
    version: int  # IKE version, 1 or 2
    role: Role  # the ST flag follows it (set when the entry is added)
    flags: SaFlag = NO_FLAGS  # change with SaDatabase.set_flags
    placement: Placement = DEFAULT_PLACEMENT  # keyed
    local_address: IPAddress
    local_port: int = 500
    peer_address: IPAddress  # keyed (port is not: selections are by address)
    peer_port: int = 500
    peer_id_type: str = "IP"  # RemoteType column: IP, FQDN, USER-FQDN, DN, ...
    peer_id: str = ""  # RemoteID column
    vpn: str = ""  # VPN instance; blank = public network
    interface: str = ""  # interface the IPsec policy is applied to
    policy_name: str | None = None  # keyed (with policy_seq)
    policy_seq: int | None = None
    template_name: str | None = None  # set when the policy came from an ipsec policy-template
    lifetime_soft: int | None = None  # seconds; None = no such lifetime
    lifetime_hard: int | None = None  # seconds
    created: float = 0.0  # time the SA was established (caller's clock)
    dpd_state: str = ""
    handle: object | None = field(default=None, compare=False, repr=False)  # the gateway's engine object

    @property
    def phase(self) -> int:
        """1 for an IKE SA, 2 for an IPsec SA (the ``v2:1`` / ``v2:2`` of ``display ike sa``)."""
        raise NotImplementedError

    @property
    def from_template(self) -> bool:
        return self.template_name is not None

    @property
    def initiator(self) -> bool:
        return self.role is Role.INITIATOR


@dataclass(slots=True, kw_only=True)
class IkeSaEntry(BaseSaEntry):
    """A phase-1 SA: an IKEv2 IKE SA or an IKEv1 ISAKMP SA."""

    spi_i: bytes = ZERO_IKE_SPI  # keyed; initiator SPI (IKEv1: initiator cookie)
    spi_r: bytes = ZERO_IKE_SPI  # keyed; responder SPI, zero until the responder has answered
    encryption: str = ""
    integrity: str = ""
    prf: str = ""
    dh: str = ""
    auth_method: str = ""
    peer_certificate: str = ""  # the subject of the peer's certificate (certificate authentication)
    exchange_mode: str = ""  # IKEv1: main | aggressive
    messages_in: int = 0
    messages_out: int = 0
    child_ids: list[int] = field(default_factory=list)  # maintained by SaDatabase; do not edit

    @property
    def phase(self) -> int:
        return 1


@dataclass(slots=True, kw_only=True)
class IpsecSaEntry(BaseSaEntry):
    """A phase-2 SA: one entry per Child SA pair (inbound and outbound SA together), as the USG shows it
    under one connection ID. Peer fields are the IKE SA's at creation (and follow its NAT floats)."""

    parent: int | None = None  # keyed; conn-id of the IKE SA, None once orphaned
    spi_in: int = 0  # keyed; inbound SPI (chosen by us), 0 = not yet known
    spi_out: int = 0  # keyed; outbound SPI (chosen by the peer)
    protocol: str = "esp"
    encryption: str = ""
    integrity: str = ""
    pfs: str = ""  # DH group of the Child SA exchange, "" = no PFS
    encapsulation_mode: str = "tunnel"  # tunnel | transport
    udp_encap: bool = False  # ESP-in-UDP (NAT traversal)
    local_selectors: tuple[Selector, ...] = ()
    remote_selectors: tuple[Selector, ...] = ()
    lifetime_soft_kb: int | None = None
    lifetime_hard_kb: int | None = None
    acl_number: int | None = None
    acl_rule: int | None = None
    replay_window: int = 1024  # 0 = anti-replay disabled
    packets_in: int = 0
    bytes_in: int = 0
    packets_out: int = 0
    bytes_out: int = 0
    seq_in: int = 0  # highest sequence number received
    seq_out: int = 0  # last sequence number sent

    @property
    def phase(self) -> int:
        return 2

    @classmethod
    def from_parent(cls, parent: IkeSaEntry, /, **fields: object) -> IpsecSaEntry:
        """A new IPsec SA entry under ``parent``: it inherits the parent's version, placement, endpoints,
        peer identity, VPN, interface and policy (explicit ``fields`` win)."""
        inherited: dict[str, object] = {
            "version": parent.version,
            "role": parent.role,
            "placement": parent.placement,
            "local_address": parent.local_address,
            "local_port": parent.local_port,
            "peer_address": parent.peer_address,
            "peer_port": parent.peer_port,
            "peer_id_type": parent.peer_id_type,
            "peer_id": parent.peer_id,
            "vpn": parent.vpn,
            "interface": parent.interface,
            "policy_name": parent.policy_name,
            "policy_seq": parent.policy_seq,
            "template_name": parent.template_name,
            "parent": parent.conn_id,
        }
        inherited.update(fields)
        return cls(**inherited)  # type: ignore[arg-type]


SaEntry = IkeSaEntry | IpsecSaEntry


def entries_for_display(entries: Iterable[SaEntry]) -> list[SaEntry]:
    """Entries in ``display ike sa`` order: higher connection ID first, as the USG prints them."""
    return sorted(entries, key=_conn_id_key, reverse=True)


def _conn_id_key(entry: SaEntry) -> int:
    return entry.conn_id


# ----------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------


class SadError(ValueError):
    """An operation that would make the SA database inconsistent."""


class ConnIdError(SadError):
    """A connection ID that is out of range, not ours to use, or already live."""


class DuplicateSpiError(SadError):
    """An SPI that must be unique on this device is already used by another live SA."""


class HasChildrenError(SadError):
    """An IKE SA cannot be removed while IPsec SAs still point to it."""


class ConnIdsExhausted(SadError):
    """Every connection ID of the allocator's space is live or reserved."""


# ----------------------------------------------------------------------------------------------------------
# Connection IDs
# ----------------------------------------------------------------------------------------------------------


class ConnIdAllocator:
    """Hands out connection IDs from ``offset + 1, offset + 1 + stride, ...`` up to 4294967295, then wraps.

    ``in_use`` tells which ids are taken (live SAs); ids handed out but not yet used are remembered here
    (``reserved``) until :meth:`claim` or :meth:`release`. With ``stride`` = number of workers and a distinct
    ``offset`` per worker, workers never hand out the same id. The counter only moves forward, so an id comes
    back only after the counter wrapped all the way round, and then only if it is free: O(1) amortised as long
    as the space is not nearly full (it is 4 billion wide).
    """

    __slots__ = ("_in_use", "_next", "offset", "reserved", "stride")

    def __init__(
        self, in_use: Callable[[int], bool], *, offset: int = 0, stride: int = 1, start: int | None = None
    ) -> None:
        if stride < 1 or not 0 <= offset < stride:
            raise ValueError("need stride >= 1 and 0 <= offset < stride")
        self.offset = offset
        self.stride = stride
        self._in_use = in_use
        self.reserved: set[int] = set()
        first = offset + 1
        if start is None:
            start = first
        if not self.owns(start):
            raise ConnIdError(f"start {start} is not in this allocator's id space")
        self._next = start

    @property
    def size(self) -> int:
        """How many ids this allocator's space holds."""
        return (MAX_CONN_ID - 1 - self.offset) // self.stride + 1

    def owns(self, conn_id: int) -> bool:
        """Whether ``conn_id`` is in range and in this allocator's residue class."""
        return 1 <= conn_id <= MAX_CONN_ID and (conn_id - 1) % self.stride == self.offset

    def allocate(self, live_count: int) -> int:
        """The next free id, marked reserved. ``live_count`` is the number of live ids in this space."""
        if live_count + len(self.reserved) >= self.size:
            raise ConnIdsExhausted("no free connection ID")
        candidate = self._next
        while self._in_use(candidate) or candidate in self.reserved:
            candidate = self._step(candidate)
        self._next = self._step(candidate)
        self.reserved.add(candidate)
        return candidate

    def claim(self, conn_id: int) -> None:
        """``conn_id`` now belongs to a live SA (reserved or not)."""
        self.reserved.discard(conn_id)

    def release(self, conn_id: int) -> None:
        """Give back an id obtained from :meth:`allocate` that will not be used."""
        self.reserved.discard(conn_id)

    def _step(self, conn_id: int) -> int:
        nxt = conn_id + self.stride
        return nxt if nxt <= MAX_CONN_ID else self.offset + 1


# ----------------------------------------------------------------------------------------------------------
# Indexes
# ----------------------------------------------------------------------------------------------------------

K = TypeVar("K", bound=Hashable)

_SMALL = 8


class _MultiIndex(Generic[K]):
    """key -> conn-ids having that key.

    Stored compactly because most keys are held by very few SAs (a peer address by its IKE SA and one or two
    IPsec SAs; an outbound SPI by one SA): one holder is the bare ``int``, up to :data:`_SMALL` holders a
    ``tuple``, more a ``set``. A one-element set costs ~200 bytes where an int reference costs 8 and a pair
    ~56; with 100,000 SAs that is the difference between a few MB and tens of MB. Tuple updates copy, which
    is cheap at that size.
    """

    __slots__ = ("_map",)

    def __init__(self) -> None:
        self._map: dict[K, int | tuple[int, ...] | set[int]] = {}

    def add(self, key: K, conn_id: int) -> None:
        cur = self._map.get(key)
        if cur is None:
            self._map[key] = conn_id
        elif isinstance(cur, int):
            if cur != conn_id:
                self._map[key] = (cur, conn_id)
        elif isinstance(cur, tuple):
            if conn_id not in cur:
                self._map[key] = (*cur, conn_id) if len(cur) < _SMALL else {*cur, conn_id}
        else:
            cur.add(conn_id)

    def discard(self, key: K, conn_id: int) -> None:
        cur = self._map.get(key)
        if cur is None:
            return
        if isinstance(cur, int):
            if cur == conn_id:
                del self._map[key]
            return
        if isinstance(cur, tuple):
            if conn_id in cur:
                rest = tuple(cid for cid in cur if cid != conn_id)
                self._map[key] = rest[0] if len(rest) == 1 else rest
            return
        cur.discard(conn_id)
        if len(cur) <= _SMALL // 2:  # hysteresis: do not flip between tuple and set on every change
            self._map[key] = tuple(cur)

    def get(self, key: K) -> Collection[int]:
        """The conn-ids having ``key`` (a live view for sets: copy before mutating the database)."""
        cur = self._map.get(key)
        if cur is None:
            return ()
        if isinstance(cur, int):
            return (cur,)
        return cur

    def count(self, key: K) -> int:
        cur = self._map.get(key)
        if cur is None:
            return 0
        return 1 if isinstance(cur, int) else len(cur)

    def __iter__(self) -> Iterator[K]:
        """The keys."""
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)


# ----------------------------------------------------------------------------------------------------------
# Offline history
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OfflineRecord:
    """One tunnel deletion, as ``display ike offline-info`` lists it."""

    peer_address: IPAddress
    peer_port: int
    reason: str
    version: int
    time: float
    placement: Placement = DEFAULT_PLACEMENT


_OfflineRow = tuple[IPAddress, int, str, int, float, Placement]


class OfflineLog:
    """The last ``capacity`` (USG: 200) tunnel deletions, oldest first; older ones fall off.

    Filtering scans at most 200 records, which is cheaper than keeping indexes on them. Rows are kept as
    plain tuples and made :class:`OfflineRecord` objects only when read: a delete-all records every SA and
    all but the last 200 fall off unread, so building a (frozen, hence slow to construct) record for each
    was wasted work.
    """

    __slots__ = ("_records",)

    def __init__(self, capacity: int = OFFLINE_LOG_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be positive")
        self._records: deque[_OfflineRow] = deque(maxlen=capacity)

    @property
    def capacity(self) -> int:
        maxlen = self._records.maxlen
        assert maxlen is not None
        return maxlen

    def record(
        self,
        *,
        peer_address: IPAddress | str,
        peer_port: int,
        reason: str,
        version: int,
        time: float,
        placement: Placement = DEFAULT_PLACEMENT,
    ) -> OfflineRecord:
        row = (_as_address(peer_address), peer_port, str(reason), version, time, placement)
        self._records.append(row)
        return OfflineRecord(*row)

    def record_sa(self, entry: BaseSaEntry, reason: str, time: float) -> None:
        """Record the deletion of ``entry``'s tunnel, taking peer, version and placement from it (the hot
        path of a delete-all: one tuple, no keyword arguments, no record object)."""
        self._records.append(
            (entry.peer_address, entry.peer_port, str(reason), entry.version, time, entry.placement)
        )

    def entries(
        self, peer: IPAddress | str | None = None, placement: Placement | None = None
    ) -> list[OfflineRecord]:
        """Records oldest first, optionally only those of one peer address and/or one placement."""
        address = None if peer is None else _as_address(peer)
        return [
            OfflineRecord(*row)
            for row in self._records
            if (address is None or row[0] == address) and (placement is None or row[5] == placement)
        ]

    def clear(self) -> None:
        self._records.clear()

    def __len__(self) -> int:
        return len(self._records)


# ----------------------------------------------------------------------------------------------------------
# The database
# ----------------------------------------------------------------------------------------------------------


class SaDatabase:
    """All live SAs of one device (or of one placement worker), indexed for the CLI, gateway and dataplane.

    Not thread-safe: it belongs to one event loop. Lists returned are fresh copies, safe to keep while the
    database changes; the entries in them are the live objects.
    """

    def __init__(
        self,
        *,
        first_conn_id: int | None = None,
        conn_id_offset: int = 0,
        conn_id_stride: int = 1,
        offline_capacity: int = OFFLINE_LOG_CAPACITY,
    ) -> None:
        """``first_conn_id`` is where the id counter starts (a test hook for wrap-around); offset/stride
        restrict this database to one residue class of ids (see :class:`ConnIdAllocator`)."""
        self._entries: dict[int, SaEntry] = {}
        self._by_peer: _MultiIndex[IPAddress] = _MultiIndex()
        #: (peer address, RemoteType, RemoteID): INITIAL_CONTACT and an IKEv1 phase-1 rekey look for the
        #: older SAs of one peer identity, and one address may carry thousands of identities (a NAT, the
        #: strongSwan load-tester), so scanning the address's SAs made every set-up O(n).
        self._by_identity: _MultiIndex[tuple[IPAddress, str, str]] = _MultiIndex()
        self._by_ike_spis: dict[bytes, int] = {}  # spi_i + spi_r -> IKE SA
        self._by_spi_i: _MultiIndex[bytes] = _MultiIndex()
        self._by_spi_in: dict[int, int] = {}  # inbound ESP SPI -> IPsec SA (we choose them: unique)
        self._by_spi_out: _MultiIndex[int] = _MultiIndex()  # peers choose them: may repeat across peers
        self._counts: dict[tuple[int, int], int] = {}  # (version, phase) -> count
        #: flag set (its int value: hashing an ``enum.Flag`` is a Python-level call) -> number of entries
        #: having exactly it: one update per add/remove/change, where a count per single flag took one per
        #: flag set; :meth:`flag_count` sums the few combinations that occur.
        self._flag_counts: dict[int, int] = {}
        self._allocator = ConnIdAllocator(
            self._entries.__contains__, offset=conn_id_offset, stride=conn_id_stride, start=first_conn_id
        )
        self.offline = OfflineLog(offline_capacity)
        #: Told (entry, True) when an IKE SA is added or its peer endpoint moves and (entry, False) when it is
        #: removed: a placement worker keeps its supervisor's list of its IKE SAs exact with it (what
        #: ``display ike offline-info`` records if the worker dies) at O(1) per change.
        self.ike_observer: Callable[[IkeSaEntry, bool], None] | None = None

    # -- connection ids --------------------------------------------------------------------------------

    def allocate_conn_id(self) -> int:
        """A connection ID no live SA has and nobody else was given; pass it in the entry to add, or give it
        back with :meth:`release_conn_id`."""
        # Every live id is in this database's space (_take_conn_id refuses others), so len() is the count.
        return self._allocator.allocate(len(self._entries))

    def release_conn_id(self, conn_id: int) -> None:
        """Return an id from :meth:`allocate_conn_id` that will not be used (negotiation failed)."""
        self._allocator.release(conn_id)

    def _take_conn_id(self, entry: BaseSaEntry) -> None:
        if entry.conn_id == 0:
            entry.conn_id = self.allocate_conn_id()
        elif not self._allocator.owns(entry.conn_id):
            raise ConnIdError(f"connection ID {entry.conn_id} is outside this database's id space")
        elif entry.conn_id in self._entries:
            raise ConnIdError(f"connection ID {entry.conn_id} is already live")

    # -- adding ----------------------------------------------------------------------------------------

    def add_ike(self, entry: IkeSaEntry) -> IkeSaEntry:
        """Add a phase-1 SA. ``conn_id`` 0 allocates one now; otherwise it should come from
        :meth:`allocate_conn_id` (any free id of this database's space is accepted, so an SA can be
        restored under its old id). Sets ``ST`` iff the local end is the initiator."""
        self._check_common(entry)
        if len(entry.spi_i) != IKE_SPI_LEN or len(entry.spi_r) != IKE_SPI_LEN:
            raise ValueError("IKE SPIs are 8 bytes")
        if entry.child_ids:
            raise SadError("a new IKE SA has no children; add them with add_ipsec")
        pair = entry.spi_i + entry.spi_r
        if pair in self._by_ike_spis:
            raise DuplicateSpiError(f"IKE SPI pair {entry.spi_i.hex()}/{entry.spi_r.hex()} already live")
        self._take_conn_id(entry)
        self._by_ike_spis[pair] = entry.conn_id
        self._by_spi_i.add(entry.spi_i, entry.conn_id)
        self._register(entry)
        if self.ike_observer is not None:
            self.ike_observer(entry, True)
        return entry

    def add_ipsec(self, entry: IpsecSaEntry) -> IpsecSaEntry:
        """Add a phase-2 SA (one Child SA pair). Its ``parent`` must be a live IKE SA of the same version and
        placement, or ``None`` for an orphan; the child is registered on the parent."""
        self._check_common(entry)
        parent = None
        if entry.parent is not None:
            parent = self.ike(entry.parent)
            if parent is None:
                raise SadError(f"parent IKE SA {entry.parent} does not exist")
            self._check_same_home(entry, parent)
        self._check_esp_spi(entry.spi_in, entry.spi_out)
        self._take_conn_id(entry)
        if entry.spi_in:
            self._by_spi_in[entry.spi_in] = entry.conn_id
        if entry.spi_out:
            self._by_spi_out.add(entry.spi_out, entry.conn_id)
        if parent is not None:
            parent.child_ids.append(entry.conn_id)
        self._register(entry)
        return entry

    @staticmethod
    def _check_common(entry: BaseSaEntry) -> None:
        if entry.version not in (1, 2):
            raise ValueError(f"IKE version must be 1 or 2, not {entry.version}")
        if not (0 <= entry.peer_port <= 65535 and 0 <= entry.local_port <= 65535):
            raise ValueError("port out of range")

    @staticmethod
    def _check_same_home(child: IpsecSaEntry, parent: IkeSaEntry) -> None:
        if child.placement != parent.placement:
            raise SadError("an IPsec SA lives in its IKE SA's placement")
        if child.version != parent.version:
            raise SadError("an IPsec SA has its IKE SA's version")

    def _check_esp_spi(self, spi_in: int, spi_out: int, owner: int | None = None) -> None:
        for spi in (spi_in, spi_out):
            if not 0 <= spi <= 0xFFFFFFFF:
                raise ValueError(f"ESP SPI {spi} out of range")
        holder = self._by_spi_in.get(spi_in) if spi_in else None
        if holder is not None and holder != owner:
            raise DuplicateSpiError(f"inbound SPI {spi_in:#x} already used by connection {holder}")

    def _register(self, entry: SaEntry) -> None:
        """Index the fields every entry has and count it (the conn-id is already final)."""
        cid = entry.conn_id
        self._allocator.claim(cid)
        entry.flags = _with_st(entry.flags, entry.role is Role.INITIATOR)
        self._entries[cid] = entry
        self._by_peer.add(entry.peer_address, cid)
        self._by_identity.add(_identity(entry), cid)
        key = (entry.version, 1 if isinstance(entry, IkeSaEntry) else 2)
        self._counts[key] = self._counts.get(key, 0) + 1
        flag_counts, value = self._flag_counts, entry.flags._value_
        flag_counts[value] = flag_counts.get(value, 0) + 1

    def _uncount_flags(self, flags: SaFlag) -> None:
        value = flags._value_
        left = self._flag_counts[value] - 1
        if left:
            self._flag_counts[value] = left
        else:
            del self._flag_counts[value]

    # -- removing --------------------------------------------------------------------------------------

    def remove(self, conn_id: int) -> SaEntry | None:
        """Remove ONE entry and its index entries; ``None`` if no such SA.

        An IKE SA that still has children is refused (:class:`HasChildrenError`): remove them first (the
        usual case, see :meth:`remove_tree`) or orphan them with :meth:`detach_children` (IKEv1 without
        phase1-phase2 dependency). Removing an IPsec SA unregisters it from its IKE SA.
        """
        entry = self._entries.get(conn_id)
        if entry is None:
            return None
        if isinstance(entry, IkeSaEntry):
            phase = 1
            if entry.child_ids:
                raise HasChildrenError(
                    f"IKE SA {conn_id} still has IPsec SAs {sorted(entry.child_ids)}; remove or detach them"
                )
            del self._by_ike_spis[entry.spi_i + entry.spi_r]
            self._by_spi_i.discard(entry.spi_i, conn_id)
        else:
            phase = 2
            if entry.spi_in:
                del self._by_spi_in[entry.spi_in]
            if entry.spi_out:
                self._by_spi_out.discard(entry.spi_out, conn_id)
            if entry.parent is not None:
                parent = self._entries.get(entry.parent)
                if isinstance(parent, IkeSaEntry):
                    parent.child_ids.remove(conn_id)
        del self._entries[conn_id]
        self._by_peer.discard(entry.peer_address, conn_id)
        self._by_identity.discard(_identity(entry), conn_id)
        self._counts[entry.version, phase] -= 1
        self._uncount_flags(entry.flags)
        if self.ike_observer is not None and isinstance(entry, IkeSaEntry):
            self.ike_observer(entry, False)
        return entry

    def remove_tree(self, conn_id: int) -> list[SaEntry]:
        """Remove an SA and, for an IKE SA, all its IPsec SAs (what ``reset ike sa conn-id`` of a phase-1
        SA deletes). Returns the removed entries, children first (highest conn-id first), the IKE SA last;
        empty if no such SA."""
        entry = self._entries.get(conn_id)
        if entry is None:
            return []
        removed: list[SaEntry] = []
        if isinstance(entry, IkeSaEntry):
            for child_id in sorted(entry.child_ids, reverse=True):
                child = self.remove(child_id)
                assert child is not None
                removed.append(child)
        self.remove(conn_id)
        removed.append(entry)
        return removed

    def detach_children(self, conn_id: int) -> list[IpsecSaEntry]:
        """Orphan the IPsec SAs of IKE SA ``conn_id`` (``parent = None``) so it can be removed alone, as
        IKEv1 does without ``ikev1 phase1-phase2 sa dependent``. Returns them."""
        entry = self.ike(conn_id)
        if entry is None:
            raise KeyError(conn_id)
        children = self.children(conn_id)
        for child in children:
            child.parent = None
        entry.child_ids.clear()
        return children

    def clear(self) -> list[SaEntry]:
        """Remove every SA (children before parents). The offline log is kept."""
        removed = [self._entries[cid] for cid in sorted(self._entries, reverse=True)]
        for entry in removed:
            if isinstance(entry, IpsecSaEntry):
                self.remove(entry.conn_id)
        for entry in removed:
            if isinstance(entry, IkeSaEntry):
                self.remove(entry.conn_id)
        return removed

    # -- changing keyed fields -------------------------------------------------------------------------

    def move_peer(
        self, conn_id: int, address: IPAddress | str, port: int, *, with_children: bool = True
    ) -> None:
        """The peer's address or port changed (NAT mapping change, MOBIKE). For an IKE SA its IPsec SAs
        move too unless ``with_children`` is false: their ESP travels to the same peer endpoint."""
        entry = self._get_or_raise(conn_id)
        if not 0 <= port <= 65535:
            raise ValueError("port out of range")
        addr = _as_address(address)
        targets: list[SaEntry] = [entry]
        if with_children and isinstance(entry, IkeSaEntry):
            targets.extend(self.children(conn_id))
        for target in targets:
            if target.peer_address != addr:
                self._by_peer.discard(target.peer_address, target.conn_id)
                self._by_identity.discard(_identity(target), target.conn_id)
                target.peer_address = addr
                self._by_peer.add(addr, target.conn_id)
                self._by_identity.add(_identity(target), target.conn_id)
            target.peer_port = port
        if self.ike_observer is not None and isinstance(entry, IkeSaEntry):
            self.ike_observer(entry, True)

    def set_peer_identity(self, conn_id: int, id_type: str, peer_id: str) -> None:
        """The peer's identity as shown (RemoteType, RemoteID), known once it authenticated."""
        entry = self._get_or_raise(conn_id)
        self._by_identity.discard(_identity(entry), conn_id)
        entry.peer_id_type, entry.peer_id = id_type, peer_id
        self._by_identity.add(_identity(entry), conn_id)

    def set_ike_spis(self, conn_id: int, spi_i: bytes | None = None, spi_r: bytes | None = None) -> None:
        """Change an IKE SA's SPIs (the responder SPI arrives with the IKE_SA_INIT response; rekeying in
        place changes both). ``None`` keeps the current value."""
        entry = self.ike(conn_id)
        if entry is None:
            raise KeyError(conn_id)
        new_i = entry.spi_i if spi_i is None else bytes(spi_i)
        new_r = entry.spi_r if spi_r is None else bytes(spi_r)
        if len(new_i) != IKE_SPI_LEN or len(new_r) != IKE_SPI_LEN:
            raise ValueError("IKE SPIs are 8 bytes")
        old_pair, new_pair = entry.spi_i + entry.spi_r, new_i + new_r
        if new_pair == old_pair:
            return
        holder = self._by_ike_spis.get(new_pair)
        if holder is not None:
            raise DuplicateSpiError(f"IKE SPI pair already used by connection {holder}")
        del self._by_ike_spis[old_pair]
        self._by_ike_spis[new_pair] = conn_id
        if new_i != entry.spi_i:
            self._by_spi_i.discard(entry.spi_i, conn_id)
            self._by_spi_i.add(new_i, conn_id)
        entry.spi_i, entry.spi_r = new_i, new_r

    def set_esp_spis(self, conn_id: int, spi_in: int | None = None, spi_out: int | None = None) -> None:
        """Change an IPsec SA's SPIs (0 = unknown, not indexed). ``None`` keeps the current value."""
        entry = self.ipsec(conn_id)
        if entry is None:
            raise KeyError(conn_id)
        new_in = entry.spi_in if spi_in is None else spi_in
        new_out = entry.spi_out if spi_out is None else spi_out
        self._check_esp_spi(new_in, new_out, owner=conn_id)
        if new_in != entry.spi_in:
            if entry.spi_in:
                del self._by_spi_in[entry.spi_in]
            if new_in:
                self._by_spi_in[new_in] = conn_id
        if new_out != entry.spi_out:
            if entry.spi_out:
                self._by_spi_out.discard(entry.spi_out, conn_id)
            if new_out:
                self._by_spi_out.add(new_out, conn_id)
        entry.spi_in, entry.spi_out = new_in, new_out

    def set_flags(self, conn_id: int, add: SaFlag = NO_FLAGS, remove: SaFlag = NO_FLAGS) -> SaFlag:
        """Set and clear flags (``remove`` applied first, then ``add``); returns the new flags. Kept as a
        method so the per-flag counts (:meth:`flag_count`) stay right."""
        entry = self._get_or_raise(conn_id)
        new = (entry.flags & ~remove) | add
        if new != entry.flags:
            self._uncount_flags(entry.flags)
            self._flag_counts[new._value_] = self._flag_counts.get(new._value_, 0) + 1
            entry.flags = new
        return new

    def reparent(self, conn_id: int, parent: int | None) -> None:
        """Move an IPsec SA under another IKE SA (IKEv2 IKE SA rekey: the Child SAs move to the new IKE SA,
        RFC 7296 §2.18), or orphan it with ``None``. The new parent must share version and placement."""
        entry = self.ipsec(conn_id)
        if entry is None:
            raise KeyError(conn_id)
        new_parent = None
        if parent is not None:
            new_parent = self.ike(parent)
            if new_parent is None:
                raise SadError(f"parent IKE SA {parent} does not exist")
            self._check_same_home(entry, new_parent)
        if entry.parent == parent:
            return
        if entry.parent is not None:
            old = self._entries.get(entry.parent)
            if isinstance(old, IkeSaEntry):
                old.child_ids.remove(conn_id)
        if new_parent is not None:
            new_parent.child_ids.append(conn_id)
        entry.parent = parent

    # -- lookups ---------------------------------------------------------------------------------------

    def get(self, conn_id: int) -> SaEntry | None:
        return self._entries.get(conn_id)

    def ike(self, conn_id: int) -> IkeSaEntry | None:
        entry = self._entries.get(conn_id)
        return entry if isinstance(entry, IkeSaEntry) else None

    def ipsec(self, conn_id: int) -> IpsecSaEntry | None:
        entry = self._entries.get(conn_id)
        return entry if isinstance(entry, IpsecSaEntry) else None

    def _get_or_raise(self, conn_id: int) -> SaEntry:
        entry = self._entries.get(conn_id)
        if entry is None:
            raise KeyError(conn_id)
        return entry

    def children(self, conn_id: int) -> list[IpsecSaEntry]:
        """The IPsec SAs of IKE SA ``conn_id``, oldest first; empty for an unknown id or an IPsec SA."""
        entry = self.ike(conn_id)
        if entry is None:
            return []
        return [self._entries[cid] for cid in entry.child_ids]  # type: ignore[misc]

    def parent_of(self, conn_id: int) -> IkeSaEntry | None:
        entry = self.ipsec(conn_id)
        return None if entry is None or entry.parent is None else self.ike(entry.parent)

    def peer_count(self, address: IPAddress | str) -> int:
        """How many SAs (both phases) this peer address has, in O(1)."""
        return self._by_peer.count(_as_address(address))

    def by_peer(self, address: IPAddress | str) -> list[SaEntry]:
        """All SAs (both phases) with this peer address, whatever the port."""
        return self._lookup(self._by_peer.get(_as_address(address)))

    def by_identity(self, address: IPAddress | str, id_type: str, peer_id: str) -> list[SaEntry]:
        """All SAs (both phases) with this peer address and identity (as :meth:`set_peer_identity` set it),
        in O(matches), however many other identities the address has."""
        return self._lookup(self._by_identity.get((_as_address(address), id_type, peer_id)))

    def by_ike_spi(
        self, spi_i: bytes, spi_r: bytes | None = None, *, peer: IPAddress | str | None = None
    ) -> IkeSaEntry | None:
        """The IKE SA with these SPIs.

        With ``spi_r`` (not all-zero) the pair must match exactly. Without it (or zero, as in a retransmitted
        IKE_SA_INIT request) the initiator SPI alone is used; since peers pick their initiator SPIs
        independently, two SAs may share one, so pass ``peer`` to disambiguate; any remaining tie goes to
        the newest SA (highest conn-id).
        """
        address = None if peer is None else _as_address(peer)
        if spi_r is not None and spi_r != ZERO_IKE_SPI:
            cid = self._by_ike_spis.get(bytes(spi_i) + bytes(spi_r))
            entry = None if cid is None else self.ike(cid)
            if entry is None or (address is not None and entry.peer_address != address):
                return None
            return entry
        best: IkeSaEntry | None = None
        for cid in self._by_spi_i.get(bytes(spi_i)):
            cand = self.ike(cid)
            if cand is None or (address is not None and cand.peer_address != address):
                continue
            if best is None or cand.conn_id > best.conn_id:
                best = cand
        return best

    def by_esp_spi(
        self,
        spi: int,
        *,
        direction: Literal["in", "out"] | None = None,
        peer: IPAddress | str | None = None,
    ) -> IpsecSaEntry | None:
        """The IPsec SA using ESP SPI ``spi``: inbound SPIs first (they are ours, hence unique), then
        outbound ones (the peers' choice, so ``peer`` can disambiguate; a tie goes to the newest SA)."""
        address = None if peer is None else _as_address(peer)
        if direction in (None, "in"):
            cid = self._by_spi_in.get(spi)
            if cid is not None:
                entry = self.ipsec(cid)
                if entry is not None and (address is None or entry.peer_address == address):
                    return entry
        if direction in (None, "out"):
            best: IpsecSaEntry | None = None
            for cid in self._by_spi_out.get(spi):
                cand = self.ipsec(cid)
                if cand is None or (address is not None and cand.peer_address != address):
                    continue
                if best is None or cand.conn_id > best.conn_id:
                    best = cand
            return best
        return None

    def by_policy(self, name: str, seq: int | None = None) -> list[SaEntry]:
        """SAs negotiated for IPsec policy ``name`` (and sequence number ``seq`` when given), highest
        conn-id first. A scan of every SA: an operator's selection, never a per-packet one (see the
        module docstring)."""
        return [
            e
            for e in self.entries_for_display()
            if e.policy_name == name and (seq is None or e.policy_seq == seq)
        ]

    def by_placement(self, placement: Placement) -> list[SaEntry]:
        """SAs of one placement, highest conn-id first (a scan, see the module docstring)."""
        return [e for e in self.entries_for_display() if e.placement == placement]

    def placements(self) -> list[Placement]:
        """The placements holding at least one SA, in (slot, cpu) order (a scan)."""
        return sorted({e.placement for e in self._entries.values()})

    def _lookup(self, ids: Iterable[int]) -> list[SaEntry]:
        """Entries for ``ids``, in display order (highest conn-id first)."""
        entries = self._entries
        return [entries[cid] for cid in sorted(ids, reverse=True)]

    def select(
        self,
        *,
        conn_id: int | None = None,
        remote: IPAddress | str | None = None,
        placement: Placement | None = None,
        phase: int | None = None,
    ) -> list[SaEntry]:
        """The SAs ``reset ike sa [conn-id N | remote ADDR] [slot S cpu C]`` (and ``display ike sa``) select,
        highest conn-id first.

        - ``conn_id``: that one entry, whichever phase (it is the caller who extends a phase-1 SA to its
          children, see :meth:`remove_tree`); empty if it does not exist or fails the other filters.
        - ``remote``: every SA of that peer address, both phases.
        - neither: every SA.
        - ``placement`` (and ``phase``, for ``display ipsec sa``) narrow any of these.

        Starts from the peer index when ``remote`` is given and checks the other conditions on the entries,
        so that costs O(matches) (plus sorting the result); a selection by placement alone looks at every SA
        (there is no placement index, see the module docstring), as "select all" does.
        """
        address = None if remote is None else _as_address(remote)
        check_address, check_placement = address is not None, placement is not None
        candidates: Collection[int]
        if conn_id is not None:
            candidates = (conn_id,) if conn_id in self._entries else ()
        elif address is not None:
            candidates, check_address = self._by_peer.get(address), False
        else:
            candidates = self._entries.keys()
        if not (check_address or check_placement or phase is not None):
            return self._lookup(candidates)
        entries = self._entries
        out: list[SaEntry] = []
        for cid in sorted(candidates, reverse=True):
            entry = entries[cid]
            if check_address and entry.peer_address != address:
                continue
            if check_placement and entry.placement != placement:
                continue
            if phase is not None and entry.phase != phase:
                continue
            out.append(entry)
        return out

    # -- iteration and counts --------------------------------------------------------------------------

    def entries(self) -> Iterator[SaEntry]:
        """Every SA, in insertion order (use :meth:`entries_for_display` for the CLI's order)."""
        return iter(list(self._entries.values()))

    def ike_sas(self) -> Iterator[IkeSaEntry]:
        return (e for e in list(self._entries.values()) if isinstance(e, IkeSaEntry))

    def ipsec_sas(self) -> Iterator[IpsecSaEntry]:
        return (e for e in list(self._entries.values()) if isinstance(e, IpsecSaEntry))

    def entries_for_display(self) -> list[SaEntry]:
        """Every SA in ``display ike sa`` order: higher connection ID first."""
        return self._lookup(self._entries.keys())

    def count(self, *, version: int | None = None, phase: int | None = None) -> int:
        """Number of SAs, optionally of one IKE version and/or phase, without scanning."""
        return sum(
            n
            for (v, p), n in self._counts.items()
            if (version is None or v == version) and (phase is None or p == phase)
        )

    def flag_count(self, flag: SaFlag) -> int:
        """Number of SAs having every flag in ``flag``: a sum over the flag combinations that occur (a
        handful), whatever the number of SAs."""
        want = flag._value_
        return sum(n for value, n in self._flag_counts.items() if value & want == want)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, conn_id: object) -> bool:
        return conn_id in self._entries

    def check(self) -> None:
        """Verify every index against a full scan; raises ``AssertionError``. For tests and debugging —
        it is O(n)."""
        entries = self._entries
        expect_peer: dict[IPAddress, set[int]] = {}
        expect_flags: dict[int, int] = {}
        for cid, e in entries.items():
            assert e.conn_id == cid
            expect_peer.setdefault(e.peer_address, set()).add(cid)
            expect_flags[e.flags._value_] = expect_flags.get(e.flags._value_, 0) + 1
            if isinstance(e, IkeSaEntry):
                assert self._by_ike_spis[e.spi_i + e.spi_r] == cid
                assert cid in self._by_spi_i.get(e.spi_i)
                for child in e.child_ids:
                    c = entries[child]
                    assert isinstance(c, IpsecSaEntry) and c.parent == cid
            else:
                if e.spi_in:
                    assert self._by_spi_in[e.spi_in] == cid
                if e.spi_out:
                    assert cid in self._by_spi_out.get(e.spi_out)
                if e.parent is not None:
                    p = entries[e.parent]
                    assert isinstance(p, IkeSaEntry) and cid in p.child_ids
        assert {k: set(self._by_peer.get(k)) for k in self._by_peer} == expect_peer
        expect_identity: dict[tuple[IPAddress, str, str], set[int]] = {}
        for cid, e in entries.items():
            expect_identity.setdefault(_identity(e), set()).add(cid)
        assert {k: set(self._by_identity.get(k)) for k in self._by_identity} == expect_identity
        assert self._flag_counts == expect_flags
        assert len(self._by_ike_spis) == sum(1 for e in entries.values() if isinstance(e, IkeSaEntry))
        assert set(self._by_spi_in.values()) == {
            e.conn_id for e in entries.values() if isinstance(e, IpsecSaEntry) and e.spi_in
        }
        assert sum(self._counts.values()) == len(entries)


_ST: dict[tuple[SaFlag, bool], SaFlag] = {}


def _with_st(flags: SaFlag, initiator: bool) -> SaFlag:
    """``flags`` with ST set (initiator) or cleared, memoised: ``enum.Flag`` arithmetic is slow and
    only a handful of combinations occur."""
    key = (flags, initiator)
    found = _ST.get(key)
    if found is None:
        found = _ST[key] = flags | SaFlag.ST if initiator else flags & ~SaFlag.ST
    return found


# ----------------------------------------------------------------------------------------------------------
# Placement rule
# ----------------------------------------------------------------------------------------------------------

_PLACEMENT_PERSON = b"ikegate-place"


def placement_for(
    peer_address: IPAddress | str, peer_port: int, spi_i: bytes, placements: Sequence[Placement]
) -> Placement:
    """The placement (slot, cpu) a new IKE SA goes to, from what its first packet carries.

    The rule, stable across processes, runs and machines (Python's ``hash()`` is salted per process, so it
    is not used)::

        key    = peer_address.packed            # 4 bytes for IPv4, 16 for IPv6 (v4-mapped v6 differs from v4)
               + peer_port.to_bytes(2, "big")
               + spi_i                          # initiator SPI / IKEv1 initiator cookie, as sent
        digest = BLAKE2b(key, digest_size=8, person=b"ikegate-place")
        index  = int.from_bytes(digest, "big") % len(placements)
        return placements[index]

    ``placements`` is used in the order given, so pass a canonical order (``sorted()`` of the configured
    placements). With one placement it is returned without hashing. The rule is applied once, to the first
    packet of the SA (IKE_SA_INIT request, or first Main/Aggressive Mode message); the SA then keeps its
    placement for life (it is recorded in the entry), because later packets may come from another port
    (NAT-T's float from 500 to 4500) and are routed by SPI instead.
    """
    if not placements:
        raise ValueError("no placements")
    if len(placements) == 1:
        return placements[0]
    if not 0 <= peer_port <= 65535:
        raise ValueError("port out of range")
    key = _as_address(peer_address).packed + peer_port.to_bytes(2, "big") + bytes(spi_i)
    digest = hashlib.blake2b(key, digest_size=8, person=_PLACEMENT_PERSON).digest()
    return placements[int.from_bytes(digest, "big") % len(placements)]

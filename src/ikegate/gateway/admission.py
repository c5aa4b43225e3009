"""Admission of new IKE negotiations: what a datagram from an unknown peer may cost before it authenticates.

An opening message (IKEv2 IKE_SA_INIT request, IKEv1 Main or Aggressive Mode message 1) is the only thing
an unauthenticated sender can make the gateway keep state for. This module decides, cheaply and before
any engine exists, whether it may:

* :func:`opening_ok` walks the payload chain of the opening message without decoding it: lengths must
  add up exactly and the payloads the first message must carry must be there. Garbage with a plausible
  header costs one loop over a few bytes and leaves nothing behind.
* :class:`HalfOpen` is the table of responder SAs that have not authenticated yet. Each entry has its
  own deadline, independent of the engine (an engine that never got far enough to arm a timer still
  goes), is keyed by what the *first* datagram carried (so removal never depends on what the engine
  parsed), and is counted per source address.
* :class:`SourceGuard` blocks a source address for a while after repeated failed authentications and
  says when a refusal is worth a log line (once per interval). The per-address cap on half-open SAs is
  what strongSwan calls ``block_threshold``; the global one its ``init_limit_half_open``.
* the numbers are configurable (``ike call admission limit ...``,
  :class:`~ikegate.policy.model.IkeAdmission`).

Why IKEv1 gets no stateless answer: an IKEv2 responder can ask for a COOKIE and keep nothing (RFC 7296
§2.6), but an IKEv1 Main Mode responder must remember the initiator's whole SA payload, since HASH_I
and HASH_R cover it (RFC 2409 §5) and message 3 does not repeat it. So IKEv1 half-open SAs are bounded
by the same global and per-source caps, and what goes beyond is dropped: a genuine initiator
retransmits MM1 and gets in once the flood's entries expire. And since an IKEv1 source cannot be
verified at all, IKEv1 may fill only half of the table: a spoofed Main Mode flood leaves room for IKEv2
peers, whose own floods the COOKIE exchange filters.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

#: Engines are opaque here: anything hashable.
E = TypeVar("E")

#: IKEv2: IKE_SA_INIT must carry SA, KE and Nonce (RFC 7296 §1.2).
_V2_SA, _V2_KE, _V2_NONCE = 33, 34, 40
_V2_REQUIRED = frozenset({_V2_SA, _V2_KE, _V2_NONCE})
#: IKEv1 payload numbers (RFC 2408 §3.1): SA, KE, ID, Nonce.
_V1_SA, _V1_KE, _V1_ID, _V1_NONCE = 1, 4, 5, 10
_V1_REQUIRED = {2: frozenset({_V1_SA}), 4: frozenset({_V1_SA, _V1_KE, _V1_ID, _V1_NONCE})}
_V1_ENCRYPTED = 0x01
HEADER_LEN = 28
#: Responder SAs that have not authenticated after this long are dropped by the gateway, whatever their
#: engine thinks (engines time out after 30 s themselves; this is the backstop).
HALF_OPEN_LIFETIME = 40.0
#: How often a blocked source is logged (one line per source per interval, with the count dropped).
LOG_INTERVAL = 60.0
#: Failed authentications are counted over this window; a source over the limit is blocked this long.
FAILURE_WINDOW = 60.0
BLOCK_TIME = 60.0
#: At most this many source addresses are remembered by the guard (least recently seen go first), so
#: a flood of spoofed addresses cannot grow it.
MAX_SOURCES = 8192


def opening_ok(data: bytes, version: int) -> bool:
    """True when ``data`` (an IKE header and payloads, no NAT-T marker) is structurally an opening
    message: length field equals the datagram, message ID 0, the payload chain ends exactly at the end,
    and the payloads the first message needs are present. Nothing is decoded or kept."""
    size = len(data)
    if size < HEADER_LEN or int.from_bytes(data[24:28], "big") != size or data[20:24] != b"\0\0\0\0":
        return False
    if version == 1:
        required = _V1_REQUIRED.get(data[18])
        if required is None or data[19] & _V1_ENCRYPTED:
            return False
    else:
        required = _V2_REQUIRED
    pos, kind, seen = HEADER_LEN, data[16], 0
    while kind:
        if pos + 4 > size:
            return False
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if length < 4 or pos + length > size:
            return False
        if kind in required:
            seen |= 1 << kind
        kind = data[pos]
        pos += length
    return pos == size and all(seen >> k & 1 for k in required)


class HalfOpen(Generic[E]):
    """Responder SAs not yet authenticated: by (source address, initiator SPI) for retransmissions of
    the opening message, counted per source, each with a deadline."""

    def __init__(self, lifetime: float = HALF_OPEN_LIFETIME) -> None:
        self.lifetime = lifetime
        self._by_key: dict[tuple[str, bytes], E] = {}
        self._key_of: dict[E, tuple[str, bytes]] = {}
        self._per_source: dict[str, int] = {}
        self._version_of: dict[E, int] = {}
        self._per_version = {1: 0, 2: 0}
        # Deadlines are added in time order, so a FIFO is already sorted; entries removed early stay
        # in it until their deadline passes and are then skipped (bounded by the same lifetime).
        self._expiry: deque[tuple[float, E]] = deque()

    def __len__(self) -> int:
        return len(self._key_of)

    def __contains__(self, engine: object) -> bool:
        return engine in self._key_of

    def get(self, source: str, spi_i: bytes) -> E | None:
        return self._by_key.get((source, spi_i))

    def of_version(self, version: int) -> int:
        """How many entries are IKE ``version`` SAs."""
        return self._per_version[version]

    def from_source(self, source: str) -> int:
        return self._per_source.get(source, 0)

    def add(self, source: str, spi_i: bytes, engine: E, now: float, version: int = 2) -> None:
        key = (source, spi_i)
        self._by_key[key] = engine
        self._key_of[engine] = key
        self._version_of[engine] = version
        self._per_version[version] += 1
        self._per_source[source] = self._per_source.get(source, 0) + 1
        self._expiry.append((now + self.lifetime, engine))
        if len(self._expiry) > 2 * len(self._key_of) + 1024:
            # Most entries left early (a flood of openings that die at once): drop their stale deadlines
            # now rather than keep those engines alive until the deadline passes. Amortised O(1).
            self._expiry = deque(item for item in self._expiry if item[1] in self._key_of)

    def discard(self, engine: E) -> None:
        key = self._key_of.pop(engine, None)
        if key is None:
            return
        if self._by_key.get(key) is engine:
            del self._by_key[key]
        self._per_version[self._version_of.pop(engine)] -= 1
        left = self._per_source[key[0]] - 1
        if left:
            self._per_source[key[0]] = left
        else:
            del self._per_source[key[0]]

    def next_deadline(self) -> float | None:
        while self._expiry and self._expiry[0][1] not in self._key_of:
            self._expiry.popleft()
        return self._expiry[0][0] if self._expiry else None

    def expired(self, now: float) -> Iterator[E]:
        """Entries whose deadline has passed (the caller abandons them; they leave the table here)."""
        while self._expiry and self._expiry[0][0] <= now:
            _, engine = self._expiry.popleft()
            if engine in self._key_of:
                self.discard(engine)
                yield engine


@dataclass(slots=True)
class _Source:
    failures: deque[float]
    blocked_until: float = 0.0
    logged_at: float | None = None
    dropped: int = 0  # since the last log line


class SourceGuard:
    """Per source address: failed authentications, blocking, and when a block is worth a log line."""

    def __init__(self) -> None:
        self._sources: OrderedDict[str, _Source] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sources)

    def _get(self, source: str) -> _Source:
        rec = self._sources.get(source)
        if rec is None:
            rec = self._sources[source] = _Source(deque())
            while len(self._sources) > MAX_SOURCES:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(source)
        return rec

    def auth_failed(self, source: str, now: float, limit: int) -> bool:
        """Count one failed authentication; True when it puts the source over ``limit`` (now blocked)."""
        rec = self._get(source)
        rec.failures.append(now)
        while rec.failures and rec.failures[0] <= now - FAILURE_WINDOW:
            rec.failures.popleft()
        if len(rec.failures) > limit:
            rec.failures.clear()
            rec.blocked_until = now + BLOCK_TIME
            return True
        return False

    def blocked(self, source: str, now: float) -> bool:
        rec = self._sources.get(source)
        return rec is not None and rec.blocked_until > now

    def note_drop(self, source: str, now: float) -> int | None:
        """A datagram from ``source`` was refused; returns the count to log when a line is due (at most one
        per :data:`LOG_INTERVAL` per source), else None."""
        rec = self._get(source)
        rec.dropped += 1
        if rec.logged_at is not None and now - rec.logged_at < LOG_INTERVAL:
            return None
        rec.logged_at = now
        count, rec.dropped = rec.dropped, 0
        return count

    def forget_idle(self, now: float) -> None:
        """Drop records with nothing left to remember (called from the gateway's periodic sweep)."""
        for rec in self._sources.values():
            while rec.failures and rec.failures[0] <= now - FAILURE_WINDOW:
                rec.failures.popleft()
        for source in [s for s, r in self._sources.items()
                       if r.blocked_until <= now and not r.failures
                       and (r.logged_at is None or now - r.logged_at >= LOG_INTERVAL)]:
            del self._sources[source]

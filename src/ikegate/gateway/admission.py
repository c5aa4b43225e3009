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
* :class:`SourceGuard` blocks a source address for a while after repeated failed authentications, says
  when a refusal is worth a log line (once per interval), and remembers which IKEv1 sources proved
  themselves by authenticating.
* the numbers are configurable (``ike call admission limit ...``,
  :class:`~ikegate.policy.model.IkeAdmission`).

Per source address (the gateway's ``_admit`` applies it): up to ``per-address`` half-open SAs a source
gets without proving anything. That is strongSwan's ``block_threshold`` -- but strongSwan then drops, and
a genuine busy peer (a load generator, a NAT gateway in front of many clients, one address firing
thousands of IKE_SA_INITs at once) retransmits only seconds later. So past the cap the source is asked to
prove its address instead:

* IKEv2: the opening is answered with a stateless COOKIE (RFC 7296 §2.6) and nothing is kept. An
  IKE_SA_INIT that carries a valid cookie proves that its sender receives at that address, so it is
  admitted up to half of the table (:func:`proven_share`): a spoofed flood from one address keeps at most
  ``per-address`` SAs and gets only COOKIEs, while a real address that answers them cannot lock the others
  out either. The cookie is checked per SA, never remembered per address, so nobody can ride on a proof
  by spoofing a busy peer's address.
* IKEv1 has no such exchange (see below). Its proof is an IKEv1 SA from that address that authenticated
  (Main Mode message 5, Aggressive Mode message 3): for :data:`PROVEN_TIME` after one, the source may hold
  up to :func:`proven_share` half-open IKEv1 SAs. A spoofed Main Mode flood never authenticates, so it stays
  at ``per-address``; a busy IKEv1 peer is slowed once (what exceeds the cap in its first burst is
  retransmitted by it seconds later), then runs unhindered. Someone who spoofs an address that just
  authenticated gets no more than IKEv1's half of the table, which bounds IKEv1 anyway.

Why IKEv1 gets no stateless answer: an IKEv2 responder can ask for a COOKIE and keep nothing (RFC 7296
§2.6), but an IKEv1 Main Mode responder must remember the initiator's whole SA payload, since HASH_I
and HASH_R cover it (RFC 2409 §5) and message 3 does not repeat it. So IKEv1 half-open SAs are bounded
by the same global and per-source caps, and what goes beyond is dropped: a genuine initiator
retransmits MM1 and gets in once the flood's entries expire (or once it has authenticated). And since an
IKEv1 source cannot be verified at all, IKEv1 may fill only half of the table: a spoofed Main Mode flood
leaves room for IKEv2 peers, whose own floods the COOKIE exchange filters.
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
#: IKEv2 Notify payload and the COOKIE notify type (RFC 7296 §3.10.1).
_V2_NOTIFY, _COOKIE = 41, 16390
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
#: An IKEv1 source that authenticated an SA may exceed ``per-address`` for this long afterwards.
PROVEN_TIME = 60.0
#: At most this many source addresses are remembered by the guard (least recently seen go first), so
#: a flood of spoofed addresses cannot grow it.
MAX_SOURCES = 8192


def proven_share(in_negotiation: int) -> int:
    """How many half-open SAs one source that proved its address may hold: half of the table, so that even
    a real address answering COOKIEs leaves the other half to everybody else."""
    return max(1, in_negotiation // 2)


def cookie_and_nonce(data: bytes) -> tuple[bytes | None, bytes | None]:
    """(COOKIE notify data, Nonce data) of an IKEv2 IKE_SA_INIT request already passed by :func:`opening_ok`,
    read straight off the payload chain (no decoding; this runs for every opening over the per-address cap).
    The COOKIE counts only as the first payload (RFC 7296 §2.6)."""
    cookie = nonce = None
    pos, kind = HEADER_LEN, data[16]
    first = True
    while kind:
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if first and kind == _V2_NOTIFY and length >= 8 and data[pos + 5] == 0 \
                and int.from_bytes(data[pos + 6:pos + 8], "big") == _COOKIE:
            cookie = data[pos + 8:pos + length]
        elif kind == _V2_NONCE:
            nonce = data[pos + 4:pos + length]
        first = False
        kind = data[pos]
        pos += length
    return cookie, nonce


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

    def source_of(self, engine: E) -> str | None:
        key = self._key_of.get(engine)
        return None if key is None else key[0]

    def version_of(self, engine: E) -> int | None:
        return self._version_of.get(engine)

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
    proven_until: float = 0.0
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

    def prove(self, source: str, now: float) -> None:
        """``source`` authenticated an IKEv1 SA: it may exceed the per-address cap for a while."""
        self._get(source).proven_until = now + PROVEN_TIME

    def proven(self, source: str, now: float) -> bool:
        rec = self._sources.get(source)
        return rec is not None and rec.proven_until > now

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
                       if r.blocked_until <= now and r.proven_until <= now and not r.failures
                       and (r.logged_at is None or now - r.logged_at >= LOG_INTERVAL)]:
            del self._sources[source]

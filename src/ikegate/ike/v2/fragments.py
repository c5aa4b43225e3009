"""IKEv2 message fragmentation (RFC 7383): Encrypted Fragment (SKF) payloads out, reassembly in.

Sans-I/O and engine-neutral: the fragmenter turns the inner payload chain of an SK message into
datagrams; the :class:`Reassembler` takes decoded SKF messages with the SA's inbound keys and ``now`` and
hands back the whole inner chain once every fragment has verified and arrived.

Rules of RFC 7383 this module implements:

* §2.5: each fragment is a complete message of its own: the IKE header of the original (same exchange,
  flags, message ID; Next Payload SKF; its own length), then one SKF payload with Fragment Number,
  Total Fragments and an IV | ciphertext | ICV of its own, padded and protected individually with the SK
  transforms. Only fragment 1 names the first inner payload; the others carry zero. Unprotected payloads,
  should a message have any, travel in fragment 1 only (§2.5.3).
* §2.5.3: the AEAD associated data (or the start of what the MAC covers) is the IKE header, the
  unprotected payloads and the eight octets of the SKF header up to Total Fragments.
* §2.5.1: each fragment fits the configured datagram size (``ikegate.ike.fragments.message_budget``).
* §2.6: a fragment is checked (Fragment Number 1..Total, Total not zero) and its ICV verified before it is
  kept; one that fails is dropped and counted, and changes nothing already held. A fragment whose Total
  Fragments is greater than that of the message in progress discards the fragments held and restarts
  reassembly (the sender went to smaller fragments); a smaller Total is dropped. Duplicates are ignored,
  order does not matter, a lost fragment is made good by the sender's retransmission of all fragments;
  the rest of such a retransmission, arriving after the message is complete, is dropped as ``late``.
  Reassembly is bounded (``FragmentLimits``) and times out.
* §2.6.1: :func:`triggers_retransmit` says which copy of an already-answered request makes the responder
  resend its (whole, fragmented) answer: an unfragmented one, or fragment number 1; the others are
  ignored, so one lost answer costs one retransmission, not N.

Left to the engine (and how to wire it, the small step once the engines settle):

1. *Negotiation* (§2.3): add :func:`supported_notify` to the IKE_SA_INIT request when fragmentation is
   configured, and to the response when the request had one (:func:`announced`); fragment only when both
   sides sent it. IKE_SA_INIT itself is never fragmented (it has no SK payload).
2. *Sending*: where the engine calls ``seal(gen.out, header, payloads, rng)`` call
   ``protect(gen.out, header, payloads, rng, budget)`` instead, with ``budget =
   config.fragmentation.budget(family, natt=local_port == 4500)`` (a ``FragmentationConfig`` in the
   IKE SA's configuration) when fragmentation was negotiated and None otherwise. It returns a list of
   datagrams: keep the list where one packet was kept (``req.packet``, ``gen.cached``) and emit (and
   retransmit) all of them (§2.6.1: retransmissions resend every fragment).
3. *Receiving*: in ``receive_datagram``, a message whose last payload is :class:`~ikegate.ike.wire.v2.SKF`
   goes through the same message-ID gate as an SK message (§2.6.1: a fragment of a message ID outside
   the window is dropped before any crypto). For a response (``gen.req`` matches), or a request with
   ``peer_mid``: ``done = gen.frags.add(gen.inp, msg, data, now)``; None means "wait" (nothing to do,
   the reassembler counted it); otherwise ``payloads = done.payloads()`` replaces ``open_sk(...)``, and
   ParseError from it is answered like a malformed SK message. A responder records
   ``_request_digest(done.first_fragment)`` as ``cached_for``. For a request with ``cached_mid``:
   if not :func:`triggers_retransmit` drop silently; else resend the cached datagrams when the digest of
   ``data`` matches, or when :func:`open_fragment` verifies it (the sender re-fragmented).
4. *Time and generations*: ``gen.frags.next_deadline()`` joins the engine's ``get_timer``;
   ``handle_timer`` calls ``gen.frags.expire(now)``. Each generation of keys (``_Gen``) owns its own
   :class:`Reassembler`: fragments are verified with that generation's keys, and message IDs restart at
   0 after an IKE SA rekey (the reassembler remembers the last message it delivered per direction).
   A retired or deleted generation calls ``clear()``.
5. *Statistics*: ``gen.frags.stats`` (``FragmentStats``) feeds ``display``/metrics; its ``dropped``
   adds to the engine's ``stats.dropped``.

Not implemented: PMTU discovery (§2.5.2; we keep one fragment size and never retry smaller).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ikegate.ike.crypto import CryptoError
from ikegate.ike.fragments import FragmentLimits, ReassemblerBase
from ikegate.ike.v2.protect import SkContext, decrypt_after, encrypt_after, padded, seal, sealed_size
from ikegate.ike.wire.registry import NotifyType, PayloadType
from ikegate.ike.wire.v2 import (
    HEADER_LEN,
    SKF,
    Header,
    Message,
    Notify,
    Payload,
    decode_payloads,
    encode_payloads,
    skf_header,
)

__all__ = [
    "FRAGMENTATION_SUPPORTED",
    "Piece",
    "Reassembled",
    "Reassembler",
    "announced",
    "fragment",
    "open_fragment",
    "protect",
    "supported_notify",
    "triggers_retransmit",
]

FRAGMENTATION_SUPPORTED = NotifyType.IKEV2_FRAGMENTATION_SUPPORTED  # 16430, RFC 7383 §2.3
_SKF_HEAD_LEN = 8  # generic header + Fragment Number + Total Fragments
_MAX_TOTAL = 0xFFFF
_T_SKF = int(PayloadType.SKF)


def supported_notify() -> Notify:
    """The IKEV2_FRAGMENTATION_SUPPORTED notification for IKE_SA_INIT (no SPI, no data, §2.3)."""
    return Notify(FRAGMENTATION_SUPPORTED)


def announced(payloads: Iterable[Payload]) -> bool:
    """Whether the peer's IKE_SA_INIT message announced fragmentation support."""
    return any(isinstance(p, Notify) and p.notify_type == FRAGMENTATION_SUPPORTED for p in payloads)


# ------------------------------------------------------------------------------------------- sending


def fragment(ctx: SkContext, header: Header, payloads: Sequence[Payload], rng: Callable[[int], bytes],
             budget: int, *, unprotected: Sequence[Payload] = ()) -> list[bytes]:
    """The SKF datagrams, each at most ``budget`` bytes, that together carry ``payloads`` (§2.5).

    ``header`` gives SPIs, exchange, flags and message ID (it is not modified). ``unprotected`` payloads,
    if any, go in front of the SKF payload of fragment 1 (§2.5.3). Raises ValueError when the budget
    leaves no room for a single byte of content per fragment or the message needs more than 65,535.
    """
    first, body = encode_payloads(payloads)
    # Encoding the unprotected payloads with an empty SKF behind them chains them to it (and gives the
    # header's Next Payload); that SKF's eight-byte header is rebuilt per fragment with the right length.
    lead, chained = encode_payloads([*unprotected, SKF(0, 0, 0, b"")])
    unprot = chained[:-_SKF_HEAD_LEN]
    block = ctx.encr.block_size

    def room(extra: int) -> int:
        """Largest content of one fragment: its padded plaintext (content + at least the Pad Length
        octet, a whole number of blocks) must fit what the headers, IV and ICV leave."""
        avail = budget - HEADER_LEN - extra - _SKF_HEAD_LEN - ctx.encr.iv_size - ctx.icv_size
        return avail // block * block - 1

    first_room, room_rest = room(len(unprot)), room(0)
    if first_room < 1 or room_rest < 1:
        raise ValueError(f"a {budget}-byte datagram leaves no room for an SKF fragment")
    chunks = [body[:first_room]]
    chunks += [body[i : i + room_rest] for i in range(first_room, len(body), room_rest)]
    total = len(chunks)
    if total > _MAX_TOTAL:
        raise ValueError(f"{total} fragments do not fit the Total Fragments field")
    out: list[bytes] = []
    for number, chunk in enumerate(chunks, 1):
        plaintext = padded(ctx, chunk)
        sealed = sealed_size(ctx, len(plaintext))
        head_extra = unprot if number == 1 else b""
        h = dataclasses.replace(header, next_payload=lead if number == 1 else _T_SKF,
                                length=HEADER_LEN + len(head_extra) + _SKF_HEAD_LEN + sealed)
        prefix = h.pack() + head_extra + skf_header(first if number == 1 else 0, number, total, sealed)
        out.append(encrypt_after(ctx, prefix, plaintext, rng))
    return out


def protect(ctx: SkContext, header: Header, payloads: Sequence[Payload], rng: Callable[[int], bytes],
            budget: int | None) -> list[bytes]:
    """What the engine sends for an SK message: the one SK datagram when it fits ``budget`` or
    fragmentation is off (``budget`` None), else its SKF fragments. ``header`` is updated as
    :func:`~ikegate.ike.v2.protect.seal` updates it."""
    packet = seal(ctx, header, payloads, rng)
    if budget is None or len(packet) <= budget:
        return [packet]
    return fragment(ctx, header, payloads, rng, budget)


def triggers_retransmit(message: Message) -> bool:
    """§2.6.1: whether a copy of an already-answered request may make the responder resend its answer:
    yes for an unfragmented request and for fragment number 1, no for any other fragment."""
    last = message.payloads[-1] if message.payloads else None
    return not isinstance(last, SKF) or last.number == 1


# ----------------------------------------------------------------------------------------- receiving


@dataclass(frozen=True, slots=True)
class Piece:
    """One verified, decrypted fragment."""

    first_payload: int
    number: int
    total: int
    plaintext: bytes  # without padding


def open_fragment(ctx: SkContext, message: Message, data: bytes) -> Piece:
    """Verify and decrypt the SKF payload of ``message`` (whose datagram is ``data``). Raises CryptoError
    when the ICV or padding is wrong or there is no SKF payload (not authentic either way, as in
    :func:`~ikegate.ike.v2.protect.open_sk`)."""
    skf = message.payloads[-1] if message.payloads else None
    if not isinstance(skf, SKF) or message.sk_offset is None:
        raise CryptoError("no SKF payload")
    data = data[: message.header.length]
    plaintext = decrypt_after(ctx, data, message.sk_offset + _SKF_HEAD_LEN, skf.data)
    return Piece(skf.first_payload, skf.number, skf.total, plaintext)


@dataclass(frozen=True, slots=True)
class _First:
    """What fragment 1 alone tells: the inner chain's first type, unprotected payloads, its datagram."""

    first_payload: int
    unprotected: list[Payload]
    datagram: bytes


@dataclass(frozen=True, slots=True)
class Reassembled:
    """A whole message put back together from verified fragments."""

    header: Header  # of the last fragment received: message ID, exchange and flags as the original's
    first_payload: int
    plaintext: bytes  # the concatenated inner payload chain
    unprotected: list[Payload]  # payloads before the SKF payload of fragment 1 (none in RFC 7296 today)
    first_fragment: bytes  # the datagram of fragment 1: how a retransmitted request is recognised (§2.6.1)

    def payloads(self) -> list[Payload]:
        """The inner payloads, as ``open_sk`` returns them. ParseError when they are malformed (the
        fragments were authentic, so a request gets the Notify the error names)."""
        return decode_payloads(self.first_payload, self.plaintext)


class Reassembler(ReassemblerBase):
    """Reassembly for one IKE SA (one set of inbound keys), per message ID and direction.

    Bounded by ``limits`` (``ikegate.ike.fragments.FragmentLimits``); every fragment that does not
    count is counted in :attr:`stats` under its reason. Never raises on what a peer sends.
    """

    __slots__ = ("_done",)

    def __init__(self, limits: FragmentLimits | None = None) -> None:
        super().__init__(limits)
        self._done: dict[bool, int] = {}  # direction (is a response) -> message ID reassembled last

    def add(self, ctx: SkContext, message: Message, data: bytes, now: float) -> Reassembled | None:
        """Offer one decoded SKF message (``data`` its datagram, without the non-ESP marker). Returns the
        whole message when this fragment completed it, else None."""
        store = self._store
        stats = store.stats
        stats.received += 1
        skf = message.payloads[-1] if message.payloads else None
        if not isinstance(skf, SKF):
            stats.malformed += 1
            return None
        if not 1 <= skf.number <= skf.total:
            stats.malformed += 1  # §2.6: zero, or beyond Total Fragments (which then is not zero either)
            return None
        if skf.total > store.limits.max_fragments:
            stats.over_limit += 1  # could never complete: refuse before spending a decryption on it
            return None
        try:
            piece = open_fragment(ctx, message, data)
        except CryptoError:
            stats.bad_icv += 1  # §2.6: unverified fragments are never kept and change nothing
            return None
        h = message.header
        if self._done.get(h.is_response) == h.message_id:
            # The rest of a retransmission of what we already delivered (its first fragments completed
            # it): the engine answers retransmissions from fragment 1 (§2.6.1), these would only start
            # an assembly that can never be wanted.
            stats.late += 1
            return None
        key = (h.message_id, h.is_response)
        asm = store.get(key, now)
        if asm is not None and asm.total is not None and piece.total != asm.total:
            if piece.total < asm.total:
                stats.stale += 1  # §2.6: older, larger fragments of a retransmission; keep what we have
                return None
            stats.restarted += 1  # §2.6: the sender went to smaller fragments; start over with these
            asm = None
        if asm is None:
            asm = store.open(key, now, piece.total)
        if not store.put(asm, piece.number, piece.plaintext):
            return None
        if piece.number == 1:
            asm.first = _First(piece.first_payload, message.payloads[:-1], bytes(data[: h.length]))
        if not asm.complete:
            return None
        first = asm.first
        assert isinstance(first, _First)  # complete means fragment 1 is among the parts
        self._done[h.is_response] = h.message_id
        stats.reassembled += 1
        return Reassembled(h, first.first_payload, store.take(asm), first.unprotected, first.datagram)

    def discard(self, message_id: int, response: bool) -> None:
        """Forget a message in progress (the engine gave up the exchange it belonged to)."""
        self._store.discard((message_id, response))

    def clear(self) -> None:
        super().clear()
        self._done.clear()

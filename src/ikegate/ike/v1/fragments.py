"""IKEv1 fragmentation: the vendor extension Cisco introduced and strongSwan, Windows and racoon speak.

There is no RFC. What the peers do (strongSwan's ``isakmp_vendor.c`` and ``message.c``, Microsoft's
MS-IKEE §2.2.3.1 and §3.3.5.3 document the same layout):

* **Negotiation.** Each side announces the Vendor ID MD5("FRAGMENTATION") = ``4048b7d5...c2d3``
  followed by four capability octets; 0x80000000 means "fragments of Main and Aggressive Mode
  messages" (Cisco adds 0x40000000 for base mode and sends 0xc0000000). strongSwan sends
  ``...80000000`` and accepts the bare 16 bytes (Windows sends them) or 20 bytes with that bit set;
  :func:`vendor_id` and :func:`peer_supports` do the same. strongSwan's responder announces it only
  when the initiator did.
* **Fragments.** The *complete* datagram, ISAKMP header and encrypted body, is cut in order; each piece
  travels in a Fragment payload (type 132: fragment ID, fragment number from 1, flags with LAST_FRAGMENT
  0x01 on the last) behind a fresh ISAKMP header with the SA's cookies, Next Payload 132, message ID 0,
  no flags, and the exchange type of phase 1 (Main Mode, or Aggressive) even for other messages, as
  strongSwan sends them. The fragments are *not* encrypted or authenticated individually: only the
  reassembled message is, by the exchange's own HASH or signature.
* **Reassembly.** Fragments of one fragment ID are collected; the one flagged last gives the count;
  duplicates are ignored, order does not matter, a second "last" at another number or a number beyond
  the last is dropped; the whole is the datagram the engine would have received unfragmented. A different
  fragment ID starts another message (at most ``max_pending`` at once, the oldest is evicted, as
  strongSwan keeps only one).

Because fragments carry no integrity check, anyone who knows the SA's cookies can offer them; the bounds
of :class:`~ikegate.ike.fragments.FragmentLimits` (fragments, bytes per message and per SA, pending
messages, time-out from the first fragment) are what keeps that from costing memory, and a forged piece
only spoils a message the peer retransmits anyway (its HASH or signature then fails in the engine).

Wiring into the IKEv1 engine (``ike/v1/sa.py``), the small step once the engines settle:

1. *Announce*: put :func:`vendor_id` in MM1/AM1 when fragmentation is configured, and in MM2/AM2 when the
   initiator's message had one (:func:`peer_supports` on its payloads); remember whether the peer did.
2. *Send*: where a phase-1 (or any) datagram ``packet`` is finished, encrypted and ready, send
   ``fragment(packet, budget)`` instead when the peer announced support, with
   ``budget = config.fragmentation.budget(family, natt=port == 4500)`` (``FragmentationConfig``); it
   returns ``[packet]`` when it fits. Keep the list where the packet was kept for retransmission and
   resend every fragment.
3. *Receive*: in ``_receive``, after ``decode_message`` and ``_find_p1`` (the cookies select the SA) and
   before the dispatch on the exchange type: if ``msg.header.next_payload == PayloadType.FRAGMENT``,
   ``whole = p.frags.add(msg, now)``; None means wait (counted); otherwise process ``whole`` as a
   received datagram (``self._receive(whole, addr, now, local)``; the reassembler never returns
   something that is itself a fragment, so this recurses once). A retransmitted fragmented message
   reassembles again to the same bytes, which the engine's byte-identical retransmission check answers.
4. *Time*: ``p.frags.next_deadline()`` joins the engine's timer; ``p.frags.expire(now)`` runs on it;
   ``clear()`` when the phase-1 SA goes.
5. *Statistics*: ``p.frags.stats`` (``FragmentStats``); its ``dropped`` adds to the engine's.
"""

from __future__ import annotations

from collections.abc import Iterable

from ikegate.ike.fragments import ReassemblerBase
from ikegate.ike.v1.registry import VID_FRAGMENTATION, ExchangeType, PayloadType
from ikegate.ike.v1.wire import (
    HEADER_LEN,
    Fragment,
    Header,
    Message,
    ParseError,
    Payload,
    VendorId,
    decode_header,
    encode_message,
)

__all__ = [
    "CAPABILITY_MAIN_AGGRESSIVE",
    "Reassembler",
    "fragment",
    "peer_supports",
    "vendor_id",
]

#: Capability flags after the 16-byte Vendor ID: fragments of Main and Aggressive Mode messages.
CAPABILITY_MAIN_AGGRESSIVE = 0x80000000
_FRAGMENT_HEAD_LEN = 8  # generic header + fragment ID, number, flags
_MAX_FRAGMENTS = 0xFF  # the fragment number is one octet
_PHASE1 = frozenset({int(ExchangeType.ID_PROT), int(ExchangeType.AGGRESSIVE)})
_T_FRAGMENT = int(PayloadType.FRAGMENT)


def vendor_id() -> VendorId:
    """The Vendor ID we announce: MD5("FRAGMENTATION") with the Main/Aggressive Mode capability."""
    return VendorId(VID_FRAGMENTATION + CAPABILITY_MAIN_AGGRESSIVE.to_bytes(4, "big"))


def peer_supports(payloads: Iterable[Payload]) -> bool:
    """Whether the peer's phase-1 message announced fragmentation: the bare Vendor ID, or the Vendor ID
    with capability flags that include Main/Aggressive Mode (strongSwan's rule)."""
    for p in payloads:
        if not isinstance(p, VendorId) or p.data[:16] != VID_FRAGMENTATION:
            continue
        if len(p.data) == 16:
            return True
        if len(p.data) == 20 and int.from_bytes(p.data[16:], "big") & CAPABILITY_MAIN_AGGRESSIVE:
            return True
    return False


def fragment(datagram: bytes, budget: int, *, fragment_id: int = 1, exchange: int | None = None) -> list[bytes]:
    """The datagrams, each at most ``budget`` bytes, that carry the complete ISAKMP ``datagram``; just
    ``[datagram]`` when it fits. ``exchange`` defaults to the datagram's own when it is Main or
    Aggressive Mode and to Main Mode otherwise (strongSwan: "always use the initial message type").
    strongSwan numbers every message's fragments with ID 1; so do we unless told otherwise.

    Raises ValueError when the budget leaves no room or the datagram needs more than 255 fragments.
    """
    if len(datagram) <= budget:
        return [datagram]
    h = decode_header(datagram)
    room = budget - HEADER_LEN - _FRAGMENT_HEAD_LEN
    if room < 1:
        raise ValueError(f"a {budget}-byte datagram leaves no room for an ISAKMP fragment")
    count = -(-len(datagram) // room)
    if count > _MAX_FRAGMENTS:
        raise ValueError(f"{count} fragments do not fit the one-octet fragment number")
    if exchange is None:
        exchange = h.exchange if h.exchange in _PHASE1 else int(ExchangeType.ID_PROT)
    out = []
    for number in range(1, count + 1):
        chunk = datagram[(number - 1) * room : number * room]
        header = Header(h.cky_i, h.cky_r, 0, exchange, 0, 0, version=h.version)
        out.append(encode_message(header, [Fragment(fragment_id, number, number == count, chunk)]))
    return out


class Reassembler(ReassemblerBase):
    """Reassembly for one phase-1 SA, per fragment ID, bounded by ``limits``. Every fragment that does not
    count is counted in :attr:`stats` under its reason. Never raises on what a peer sends."""

    __slots__ = ()

    def add(self, message: Message, now: float) -> bytes | None:
        """Offer one decoded fragment message. Returns the reassembled datagram when this fragment
        completed it (an ISAKMP message of the same cookies that is not itself a fragment), else None."""
        store = self._store
        stats = store.stats
        limits = store.limits
        stats.received += 1
        frag = message.payloads[0] if len(message.payloads) == 1 else None
        # MS-IKEE §3.3.5.3: a Fragment payload must be the only payload of its message.
        if not isinstance(frag, Fragment) or frag.number == 0:
            stats.malformed += 1
            return None
        if frag.number > limits.max_fragments:
            stats.over_limit += 1  # such a message could never complete; what is held is left alone
            return None
        asm = store.get(frag.fragment_id, now)
        if asm is not None and asm.total is not None:
            if frag.number > asm.total or (frag.last and frag.number != asm.total) or (
                    not frag.last and frag.number == asm.total):
                stats.malformed += 1  # beyond the last fragment, or a second "last" elsewhere
                return None
        elif asm is not None and frag.last and asm.parts and frag.number < max(asm.parts):
            stats.malformed += 1  # "last" before fragments already held
            return None
        if asm is None:
            asm = store.open(frag.fragment_id, now)
        if not store.put(asm, frag.number, frag.data):
            return None
        if frag.last:
            asm.total = frag.number
        if not asm.complete:
            return None
        data = store.take(asm)
        try:
            inner = decode_header(data)
        except ParseError:
            inner = None
        h = message.header
        if inner is None or (inner.cky_i, inner.cky_r) != (h.cky_i, h.cky_r) or inner.next_payload == _T_FRAGMENT:
            stats.malformed += 1  # not a message of this SA, or a fragment within a fragment
            return None
        stats.reassembled += 1
        return data

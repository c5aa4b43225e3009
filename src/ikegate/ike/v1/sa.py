"""The IKEv1 ISAKMP SA state machine (RFC 2409 over RFC 2408, IPsec DOI RFC 2407), sans-I/O.

:class:`IsakmpSa` has the public surface of the IKEv2 :class:`~ikegate.ike.v2.sa.IkeSa` (same constructor
keywords, the same commands, ``datagrams_to_send`` / ``get_timer`` / ``next_event``, the same events
carrying the same :class:`~ikegate.ike.core.child.ChildSa` objects), so the gateway drives both alike.
IKEv1-only settings come in a :class:`V1Options` (exchange mode, phase1-phase2 dependency, DPD).

How IKEv1 differs, and what this engine does about it:

* **Nothing is acknowledged but the exchanges themselves.** Main Mode (6 messages), Aggressive Mode (3)
  and Quick Mode (3) are lock-step; Informational messages (Delete, DPD, errors) are one-shot. The
  sender of a message that expects an answer retransmits it (1, 2, 4 ... s); whoever receives a
  duplicate of the message it last answered sends the cached answer again, byte for byte. The *last*
  message of Aggressive and Quick Mode is the initiator's and gets no answer, so there the responder
  retransmits its message 2 until message 3 arrives, and the initiator answers a duplicate message 2
  with its cached message 3. The last Main Mode message (MM6) is the responder's: a lost MM6 is
  recovered by the initiator's MM5 retransmission.
* **Phase 1 and phase 2 are separate SAs.** Without the phase1-phase2 dependency (USG default), an
  ISAKMP SA that the peer deletes or that expires leaves its IPsec SAs in service: the engine reports
  ``IkeSaDeleted`` and keeps the children listed without ``ChildSaDeleted``; see
  :attr:`IsakmpSa.orphans_survive`. With the dependency they go with it. A local :meth:`IsakmpSa.delete`
  (``reset ike sa``) always takes the IPsec SAs too and tells the peer, ESP SPIs first, then the
  ISAKMP SA.
* **Rekeying phase 1 is a new Main Mode** with new cookies. When this end rekeys, the new negotiation
  runs inside the same object (like the IKEv2 engine's in-place rekey) and ends with ``IkeSaRekeyed``;
  children move along, the old ISAKMP SA is deleted towards the peer. When the *peer* rekeys, its new
  Main Mode reaches the gateway as a new responder object; the gateway moves the children over with
  :meth:`IsakmpSa.adopt_children` -- at once when the old SA is the peer's only one and due for renewal
  (:meth:`IsakmpSa.replaceable`), else when the peer deletes the old SA still holding IPsec SAs
  (:attr:`IsakmpSa.heir`) -- never after INITIAL-CONTACT. Several ISAKMP SAs of one identity side by side
  (a load generator, clients behind one NAT address) keep their own IPsec SAs.
* **Recovery when a Delete is lost** (they are never acknowledged), as strongSwan does it: a Quick Mode of
  ours that gets no answer ends its ISAKMP SA (the owner then runs Main Mode again, with INITIAL-CONTACT
  when no IKE SA with the peer is left); a responder without QM3 deletes the pair the initiator may have
  installed; a Quick Mode that a peer's Delete calls for waits :data:`DELETE_SETTLE` for the rest of the
  burst (``reset ike sa`` sends the ESP and the ISAKMP Delete apart), so none goes out under an ISAKMP SA
  the peer has just deleted; after our phase-1 rekey the old ISAKMP SA is still heard for
  :data:`PREV_GRACE` (the peer's QM3, Deletes and DPD sent before it saw ours); pairs finished under an
  ISAKMP SA whose children were adopted go to the adopter; crossed rekeys of one pair leave two pairs,
  which both ends reduce to the same one (:meth:`IsakmpSa._twin`). The owner replaces orphans with
  :meth:`IsakmpSa.supersede`.
* **Aggressive Mode is answered only when configured** (``V1Options.mode`` of a responder, set by the owner
  from the ike peers matching the source): AM2 carries a hash over the PSK for anyone who asks.
* **The PSK of a Main Mode responder is chosen by address**, because the identity only arrives in the
  encrypted MM5: the policy is asked for candidates by the peer's IP address, and the candidate whose
  key decrypts MM5 *and* verifies HASH_I wins. A wrong key shows up as garbage, which is therefore
  reported as AUTHENTICATION_FAILED. With signatures (the method offered in MM1 says which) the keys
  do not depend on the candidate: MM5 decrypts once and the candidate whose CAs, CRLs and remote-id
  accept the certificate wins (``certauth.py``).
* Phase-1 rekeying is started only by the end that initiated the current ISAKMP SA (fewer collisions);
  the other end relies on the peer doing it and on the hard expiry.
* The commit bit is never set by us; a peer's commit bit is accepted and otherwise ignored (no
  CONNECTED notify is sent; the peer then simply keeps its SA waiting until its own timer).
* Kilobyte lifetimes are negotiated and put on the child's config, but counting bytes is the
  dataplane's job: it calls :meth:`IsakmpSa.rekey_child` (or ``delete_child``) when a budget runs out.

The engine is written in layers: ``ike/core/base.py`` (what every engine shares), ``phase1.py`` (Main and
Aggressive Mode, ISAKMP message protection), ``quick.py`` (Quick Mode and the IPsec SA pairs) and here the
ISAKMP SA (commands, informational exchanges, DPD, endings); phase 1 and Quick Mode states move only
through ``states.py``'s tables.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from typing import Unpack

from ikegate.ike.core.base import EngineArgs
from ikegate.ike.core.child import ChildSa, ChildState, ChildTrigger
from ikegate.ike.core.config import Addr, ChildSaConfig, IkeSaConfig
from ikegate.ike.core.negotiated import Chosen
from ikegate.ike.core.plumbing import Stats
from ikegate.ike.core.window import Retransmission
from ikegate.ike.crypto import CryptoError
from ikegate.ike.events import (
    ChildSaDeleted,
    DeleteReason,
    IkeSaDeleted,
    IkeSaRekeyed,
    InitialContact,
    NegotiationFailed,
)
from ikegate.ike.v1 import crypto as c1
from ikegate.ike.v1.options import DpdType, ExchangeMode, V1Options
from ikegate.ike.v1.phase1 import ZERO_COOKIE, _Fail, _Phase1
from ikegate.ike.v1.quick import QUICK_LINGER, QuickModes, _pair_key, _Quick
from ikegate.ike.v1.registry import (
    ExchangeType,
    NotifyType,
    PayloadType,
    ProtocolId,
)
from ikegate.ike.v1.states import (
    TIMEOUT_HINTS,
    QuickState,
    State,
)
from ikegate.ike.v1.wire import (
    Delete,
    Header,
    Message,
    Notify,
    ParseError,
    Payload,
    decode_header,
    decode_message,
    encode_message,
)

RESPONDER_HALF_OPEN = 30.0
#: After our phase-1 rekey, messages the peer sent under the old ISAKMP SA before it saw our Delete (a Quick
#: Mode's last message, a Delete of a rekeyed IPsec SA, DPD) are still accepted this long.
PREV_GRACE = QUICK_LINGER
#: A peer's Delete may come in several Informationals (ESP SPIs first, then the ISAKMP SA: ``reset ike sa``).
#: A Quick Mode the Delete of an IPsec SA calls for waits this long, so that it is never sent under an ISAKMP
#: SA whose own Delete is on its way.
DELETE_SETTLE = 1.0

__all__ = [
    "DpdType",
    "ExchangeMode",
    "IsakmpSa",
    "QuickState",
    "State",
    "Stats",
    "V1Options",
]


class IsakmpSa(QuickModes):
    """One IKEv1 ISAKMP SA with its IPsec SAs (``children``), driven like the IKEv2 ``IkeSa``."""

    BAD_INPUT = (CryptoError, ParseError, ValueError, KeyError, IndexError, struct.error)

    def __init__(self, config: IkeSaConfig | None, *, v1: V1Options | None = None,
                 **engine: Unpack[EngineArgs]) -> None:
        self.options = v1 or V1Options()
        super().__init__(config, **engine)

    def _setup(self, now: float) -> None:
        if self.initiator:
            self._p1 = _Phase1(True, self._new_ike_spi(), ZERO_COOKIE, config=self.config)
        else:
            self._p1 = _Phase1(False, b"", self._new_ike_spi())
        self._next: _Phase1 | None = None  # our phase-1 rekey in progress
        self._prev: _Phase1 | None = None  # the ISAKMP SA our phase-1 rekey replaced, heard until _prev_until
        self._prev_until: float | None = None
        self._settle_until: float | None = None  # Quick Modes wait for the rest of a peer's Delete burst
        self._successor: IsakmpSa | None = None  # took our IPsec SAs over (the peer's phase-1 rekey)
        #: set by the owner: asked when the peer deletes this ISAKMP SA while it still holds IPsec SAs; it
        #: may move them to a newer ISAKMP SA of the same peer (:meth:`adopt_children`), the peer having
        #: re-authenticated before it deleted this one (strongSwan's IKEv1 reauth keeps the IPsec SAs)
        self.heir: Callable[[IsakmpSa], None] | None = None
        self._dead = False
        self._quicks: dict[int, _Quick] = {}
        #: Message IDs of recent Informationals (ours and the peer's), to drop duplicates; made on the first
        #: one, since a half-open SA never has any and an empty deque costs 600 bytes.
        self._info_mids: deque[int] | tuple[()] = ()
        self._deadline = None if self.initiator else now + RESPONDER_HALF_OPEN
        self._dpd_seq = int.from_bytes(self._rng(4), "big") & 0x7FFFFFFF
        self._dpd_outstanding: set[int] = set()
        self._dpd_sent_at: float | None = None
        self._dpd_tries = 0

    # ------------------------------------------------------------------ public properties

    @property
    def state(self) -> State:
        return State.DEAD if self._dead else self._p1.state

    @property
    def version(self) -> int:
        return 1

    @property
    def is_deleting(self) -> bool:
        """Never: IKEv1 sends its Delete notifications unanswered and is gone at once (no deleting phase)."""
        return False

    @property
    def untouched(self) -> bool:
        return self.state is State.NEW

    @property
    def spi_i(self) -> bytes:
        return self._p1.cky_i

    @property
    def spi_r(self) -> bytes:
        return self._p1.cky_r

    @property
    def local_spis(self) -> list[bytes]:
        """Our cookies that may still address this object (current and rekeying ISAKMP SA)."""
        if self._dead:
            return []
        return [p.local_cookie for p in (self._p1, self._next, self._prev) if p is not None and p.local_cookie]

    @property
    def chosen(self) -> Chosen | None:
        """The phase-1 suite in IKEv2 transform IDs (what ``display ike sa`` renders)."""
        return self._p1.choice.chosen() if self._p1.choice else None

    @property
    def is_initiator(self) -> bool:
        return self._p1.we_init

    @property
    def established(self) -> bool:
        return not self._dead and self._p1.state is State.ESTABLISHED

    @property
    def finished(self) -> bool:
        """True when the owner may forget this object: the ISAKMP SA is gone and no orphan remains."""
        return self._dead and not self.children

    @property
    def orphans_survive(self) -> bool:
        """True when the ISAKMP SA has ended but its IPsec SAs stay in service (no dependency).

        Set when the peer deleted the ISAKMP SA or it expired while ``V1Options.dependent`` is off. Then
        ``IkeSaDeleted`` was emitted but no ``ChildSaDeleted``: the children are still listed in
        ``children`` and keep forwarding. The gateway keeps them in its SA database as orphans (no
        parent) and keeps feeding this object time: it reports ``ChildSaDeleted(PHASE2_HARD_EXPIRY)``
        at each orphan's hard expiry (no Delete can be sent any more), and ``delete_child`` still works
        for ``reset``. :attr:`finished` turns True when the last orphan is gone. A local :meth:`delete`,
        DPD death and a dependent configuration never leave orphans.
        """
        return self._dead and bool(self.children)

    @property
    def nat_local(self) -> bool:
        return self._p1.nat_local

    @property
    def nat_remote(self) -> bool:
        return self._p1.nat_remote

    @property
    def udp_encap(self) -> bool:
        return self._p1.natt is not None and (self._p1.nat_local or self._p1.nat_remote)

    def phase1_key(self) -> tuple[bytes, bytes] | None:
        """(initiator cookie, phase-1 cipher key), for an operator's key log only."""
        keys = self._p1.keys
        return None if keys is None else (self._p1.cky_i, keys.enc_key)

    @property
    def peer_supports_dpd(self) -> bool:
        return self._p1.peer_dpd

    @property
    def peer_vendors(self) -> list[str]:
        """Names of the vendor IDs the peer announced (unknown ones as hex)."""
        return list(self._p1.peer_vendors)

    # ------------------------------------------------------------------ sans-I/O API

    def get_timer(self) -> float | None:
        times: list[float] = [r.deadline for r in self._retransmissions()]
        times += [t for p in (self._p1, self._next) if p is not None and p.frags is not None
                  and (t := p.frags.next_deadline()) is not None]
        for child in self.children.values():
            times.append(child.expire_at)
        if not self._dead:
            times += [t for t in (self._deadline, self._rekey_at, self._expire_at, self._prev_until) if t is not None]
            if self._window and self._settle_until is not None:
                times.append(self._settle_until)
            if self.established:
                times += self._child_rekey_times()
                dpd = self._dpd_due()
                if dpd is not None:
                    times.append(dpd)
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        for p in (self._p1, self._next):
            if p is not None and p.frags is not None:
                p.frags.expire(now)  # an unfinished fragmented message times out (FragmentLimits.timeout)
            if p is not None and p.req is not None and p.req.deadline <= now:
                req = p.req
                if req.tries >= req.max_tries:
                    p.req = None
                self._retransmit(req, now)
        for q in list(self._quicks.values()):
            if q.req is not None and q.req.deadline <= now:
                req = q.req
                if req.tries >= req.max_tries:
                    q.req = None
                self._retransmit(req, now)
            if q.done_at is not None and now - q.done_at > QUICK_LINGER:
                self._quicks.pop(q.mid, None)
        if self._dead:
            for child in list(self.children.values()):
                if now >= child.expire_at:
                    self._drop_child(child, DeleteReason.PHASE2_HARD_EXPIRY)
            return
        if self._deadline is not None and now >= self._deadline:
            self._deadline = None
            if not self.established:
                self._fail(now, 0, TIMEOUT_HINTS.get(self._p1.state, "phase 1 negotiation timed out"))
                return
        if not self.established:
            return
        if self._prev_until is not None and now >= self._prev_until:
            self._prev = self._prev_until = None
        if self._settle_until is not None and now >= self._settle_until:
            self._release(now)
        if not self._ike_lifetimes(now):
            return
        for child in list(self.children.values()):
            if now >= child.expire_at:
                reason = DeleteReason.REKEYED if child.state is ChildState.REKEYED else DeleteReason.PHASE2_HARD_EXPIRY
                self.delete_child(child, now, reason)
            elif child.state is ChildState.INSTALLED and child.rekey_at is not None and now >= child.rekey_at:
                twin = self._twin(child)
                if twin is not None:  # a duplicate: the one both ends agree on goes, the other is renewed
                    loser = child if _pair_key(twin) > _pair_key(child) else twin
                    self.delete_child(loser, now, DeleteReason.REKEYED)
                    if loser is child:
                        continue
                self.rekey_child(child, now)
        self._dpd_tick(now)

    # ------------------------------------------------------------------ commands

    def _start(self, now: float) -> None:
        """Main (or Aggressive) Mode; the first Child SA follows by Quick Mode."""
        self._start_phase1(self._p1, now)

    def create_child(self, child: ChildSaConfig, now: float) -> None:
        """A Quick Mode for another IPsec SA (with PFS when the policy names a group)."""
        self._when_established(lambda t: self._start_quick(child, None, t), now)

    def rekey_child(self, child: ChildSa, now: float) -> None:
        """Make before break: a new Quick Mode with the same selectors, then a Delete of the old SPI."""
        if child.state is not ChildState.INSTALLED or child.spi_in not in self.children or not self.established:
            return
        child.move(ChildTrigger.REKEY)
        self._start_quick(child.config, child, now)

    def rekey_ike(self, now: float) -> None:
        """Phase-1 rekey: a new Main Mode with new cookies inside this object (ends in IkeSaRekeyed)."""
        if not self.established or self._next is not None:
            return
        config = self._p1.config or self.config
        if config is None:
            return
        self._next = _Phase1(True, self._new_ike_spi(), ZERO_COOKIE, config=config)
        self._start_phase1(self._next, now)

    def liveness_check(self, now: float) -> None:
        """Send R-U-THERE now (RFC 3706), if the peer speaks DPD; unanswered rounds end in dpd timeout."""
        if self.established and self._p1.peer_dpd and not self._dpd_outstanding:
            self._dpd_tries = 0
            self._send_dpd(now)

    @property
    def awaits_outbound(self) -> bool:
        """On-demand DPD with nothing sent since the peer was last heard: only the next ESP packet out
        can make a probe due, so the owner should tell us about it (no timer of ours covers it)."""
        return (self.options.dpd_type is DpdType.ON_DEMAND and self.established and self._p1.peer_dpd
                and not self._dpd_outstanding and not self._sent_since_heard())

    def delete_child(self, child: ChildSa, now: float, reason: DeleteReason = DeleteReason.MANUAL) -> None:
        """Report the IPsec SA gone now and tell the peer with a Delete of our inbound SPI (if we can)."""
        if self.children.get(child.spi_in) is not child:
            return
        self._drop_child(child, reason)
        if self.established:
            self._send_info(self._p1, [Delete(ProtocolId.ESP, [struct.pack("!I", child.spi_in)])])

    def delete(self, now: float, reason: DeleteReason = DeleteReason.MANUAL) -> None:
        """``reset ike sa``: the ISAKMP SA and *all* its IPsec SAs go, whatever the dependency setting.

        The peer hears it as two informational messages, the Delete of our ESP SPIs first and then the
        Delete of the ISAKMP SA (so that a peer without dependency does not keep orphans of ours).
        Orphans of an already dead ISAKMP SA are dropped too.
        """
        if self._dead:
            for child in list(self.children.values()):
                self._drop_child(child, reason)
            return
        self._end(now, reason, take_children=True, child_reason=reason, tell_peer=True)

    def replaceable(self, now: float) -> bool:
        """Whether a new Main Mode of the same peer can be this ISAKMP SA's rekey (re-authentication), and so
        take over its IPsec SAs: it is established and at least half its lifetime has gone.

        A peer renews phase 1 late in its lifetime (we do at 90 %, strongSwan at its rekey_time, 80-90 %).
        Several ISAKMP SAs of one identity set up side by side (strongSwan's load-tester, clients behind one
        NAT address) are not each other's rekeys: each keeps its own IPsec SAs, so that ``reset ike sa
        conn-id`` of one (with ``phase1-phase2 sa dependent``) takes its own and no other's. strongSwan,
        likewise, moves IKEv1 children only when it replaces a duplicate IKE SA (its uniqueness policy), and
        never after INITIAL-CONTACT (ours deletes the older SAs before this is asked).
        """
        if not self.established or self._expire_at is None:
            return False
        return now >= self._expire_at - self._p1.life / 2

    def adopt_children(self, other: IsakmpSa) -> list[ChildSa]:
        """Take over the installed IPsec SAs of an older ISAKMP SA with the same peer (its rekey).

        Called by the owner when a peer's new Main Mode has produced this object; no events are emitted,
        the owner re-parents the moved children in its SA database. The moved children are returned.
        """
        moved = [c for c in other.children.values()
                 if c.state in (ChildState.INSTALLED, ChildState.REKEYED, ChildState.REKEYING)]
        for child in moved:
            del other.children[child.spi_in]
            self.children[child.spi_in] = child
        if not other.children:
            other.children = {}  # a cleared dict keeps its size: the old SA waits for its Delete holding none
        # A Quick Mode still running under the old ISAKMP SA (the peer's messages cross its rekey) installs
        # its IPsec SA here too: see _home.
        other._successor = self
        return moved

    def supersede(self, owner: IsakmpSa, orphan: ChildSa, now: float) -> None:
        """``orphan``, an IPsec SA left by the ended ISAKMP SA ``owner``, is replaced by a pair of ours (same
        peer and flow): it goes, with REKEYED as reason, and the peer hears its Delete under our ISAKMP SA
        (an IKEv1 Delete needs only some ISAKMP SA with the peer). Without this an orphan whose peer end
        was deleted (its Delete lost) would swallow traffic until its hard expiry."""
        if not owner.orphans_survive or owner.children.get(orphan.spi_in) is not orphan:
            return
        owner._drop_child(orphan, DeleteReason.REKEYED)
        if self.established:
            self._send_info(self._p1, [Delete(ProtocolId.ESP, [struct.pack("!I", orphan.spi_in)])])

    def _home(self) -> IsakmpSa:
        """Where an IPsec SA negotiated here goes: this object, or the live one that took over its IPsec SAs."""
        home = self
        while home._successor is not None and not home._successor._dead:
            home = home._successor
        return home

    # ------------------------------------------------------------------ endings

    def _end(self, now: float, reason: DeleteReason, *, take_children: bool, child_reason: DeleteReason,
             tell_peer: bool) -> None:
        """The ISAKMP SA is over; its children go with it or stay as orphans."""
        if self._dead:
            return
        p = self._p1
        for q in list(self._quicks.values()):
            self._restore_old(q, now)  # a rekey that cannot finish now: the old IPsec SA is in service again
        if tell_peer and p.state is State.ESTABLISHED:
            if take_children and self.children:
                spis = [struct.pack("!I", c.spi_in) for c in self.children.values()]
                self._send_info(p, [Delete(ProtocolId.ESP, spis)])
            self._send_info(p, [Delete(ProtocolId.ISAKMP, [p.spi])])
        if take_children:
            for child in list(self.children.values()):
                self._drop_child(child, child_reason)
        else:
            for child in self.children.values():
                child.rekey_at = None  # an orphan cannot be rekeyed: nothing protects a quick mode
        self._prev = self._prev_until = self._settle_until = None
        self._dead = True
        self.delete_reason = reason
        self._outbox.report(IkeSaDeleted(self, reason))
        self._quiet()

    def _quiet(self) -> None:
        for p in (self._p1, self._next):
            if p is not None:
                p.req = None
        self._next = None
        self._quicks.clear()
        self._window.clear()
        self._deadline = self._rekey_at = self._expire_at = None
        self._dpd_outstanding.clear()
        self._dpd_sent_at = None

    def _hard_expiry(self, now: float) -> None:
        self._end(now, DeleteReason.PHASE1_HARD_EXPIRY, take_children=self.options.dependent,
                  child_reason=DeleteReason.PARENT_DELETED, tell_peer=True)

    def _fail(self, now: float, notify: int, detail: str, kind: str = "") -> None:
        """A phase-1 negotiation failed: report it (``kind``: an authentication failure's metrics label),
        and the SA is gone (nothing to tell the peer)."""
        if self._dead:
            return
        self._outbox.report(NegotiationFailed(self, notify, detail, auth_failure=kind))
        self._end(now, DeleteReason.NEGOTIATION_FAILED, take_children=True,
                  child_reason=DeleteReason.NEGOTIATION_FAILED, tell_peer=False)

    def _drop_child(self, child: ChildSa, reason: DeleteReason) -> None:
        for holder in (self, self._home()):
            if holder.children.get(child.spi_in) is child:
                del holder.children[child.spi_in]
                child.move(ChildTrigger.DROP)
                child.rekey_at = None
                self._outbox.report(ChildSaDeleted(holder, child, reason))
                return

    # ------------------------------------------------------------------ plumbing

    def _retransmissions(self) -> list[Retransmission]:
        reqs = [p.req for p in (self._p1, self._next) if p is not None and p.req is not None]
        reqs += [q.req for q in self._quicks.values() if q.req is not None]
        return reqs

    def _new_mid(self) -> int:
        while True:
            mid = int.from_bytes(self._rng(4), "big")
            if mid and mid not in self._quicks and mid not in self._info_mids:
                return mid

    def _when_established(self, task: Callable[[float], None], now: float) -> None:
        if self.established and self._settle_until is not None and now >= self._settle_until:
            self._release(now)
        if self.established and self._settle_until is None:
            task(now)
        elif not self._dead:
            self._window.queue(task)

    def _release(self, now: float) -> None:
        """The peer's Delete burst is over: the Quick Modes that waited for it start."""
        self._settle_until = None
        for task in self._window.take_all():
            task(now)

    # ------------------------------------------------------------------ receive

    def _find_p1(self, h: Header) -> _Phase1 | None:
        for p in (self._p1, self._next, self._prev):
            if p is None:
                continue
            if not p.cky_i and not p.we_init and p.state is State.NEW:
                if h.cky_r == ZERO_COOKIE and h.exchange in (ExchangeType.ID_PROT, ExchangeType.AGGRESSIVE):
                    return p
                continue
            if p.cky_i != h.cky_i:
                continue
            if h.cky_r == p.cky_r:
                return p
            if p.cky_r == ZERO_COOKIE and p.state in (State.MM_SENT1, State.AM_SENT1):
                return p  # the responder's first answer brings its cookie
            if h.cky_r == ZERO_COOKIE and p.state in (State.MM_SENT2, State.AM_SENT2):
                return p  # a retransmitted first message
        return None

    def _receive(self, data: bytes, addr: Addr, now: float, local: Addr | None) -> None:
        try:
            msg = decode_message(data)
        except ParseError as exc:
            self.stats.malformed += 1
            self.stats.dropped += 1
            self._answer_malformed(data, exc)
            return
        h = msg.header
        p = self._find_p1(h) if not self._dead else None
        if p is None:
            self.stats.dropped += 1
            return
        if h.next_payload == PayloadType.FRAGMENT:
            whole = self._reassemble(p, msg, now)
            if whole is not None:
                self._receive(whole, addr, now, local)  # never itself a fragment: recurses once
            return
        if h.exchange in (ExchangeType.ID_PROT, ExchangeType.AGGRESSIVE):
            self._on_phase1(p, msg, data[: h.length], addr, now, local)
        elif h.exchange == ExchangeType.QUICK and h.encrypted and h.message_id and p.state is State.ESTABLISHED:
            self._on_quick(p, msg, data[: h.length], addr, now, local)
        elif h.exchange == ExchangeType.INFORMATIONAL:
            if h.encrypted and p.chain is not None and h.message_id:
                self._on_info(p, msg, addr, now, local)
            elif not h.encrypted and p.state is not State.ESTABLISHED:
                self._on_plain_info(p, msg, now)
            else:
                self.stats.dropped += 1
        else:
            self.stats.dropped += 1  # TRANSACTION (Mode Config/XAuth) and the like are not implemented

    def _answer_malformed(self, data: bytes, exc: ParseError) -> None:
        """A plaintext phase-1 message of a negotiation in progress that does not parse: tell the peer.

        RFC 2408 §5 wants the Notify (INVALID_PAYLOAD_TYPE, PAYLOAD_MALFORMED, ...). It goes unprotected, as
        phase 1 is not keyed yet, and the negotiation carries on: the message may have been forged, and
        the real peer retransmits.
        """
        try:
            h = decode_header(data)
        except ParseError:
            return
        if h.encrypted or h.exchange not in (ExchangeType.ID_PROT, ExchangeType.AGGRESSIVE) or self._dead:
            return
        p = self._find_p1(h)
        if p is None or p.state in (State.NEW, State.ESTABLISHED) or not p.cky_i:
            return
        header = Header(p.cky_i, p.cky_r, 0, ExchangeType.INFORMATIONAL, 0, 0)
        self._emit(encode_message(header, [Notify(exc.notify, ProtocolId.ISAKMP, p.spi, exc.data)]))
        self.stats.notifies_sent += 1

    # Main Mode ---------------------------------------------------------------------------------

    # Aggressive Mode ---------------------------------------------------------------------------

    # establishment -----------------------------------------------------------------------------

    def _switch(self, new: _Phase1, now: float) -> None:
        """Our phase-1 rekey is done: the new ISAKMP SA takes over, the old one is deleted."""
        old = self._p1
        self._p1 = new
        self._next = None
        self._prev, self._prev_until = old, now + PREV_GRACE
        self._set_lifetime(new, now)
        for q in list(self._quicks.values()):
            # Ours are abandoned: the peer drops them with the old SA. The peer's finish under the old SA
            # (its QM3 may still be on the way): it installs the pair, so must we.
            if q.p1 is old and q.we_init and q.state is not QuickState.DONE:
                self._abandon_quick(q, now)
        self._outbox.report(IkeSaRekeyed(self, (old.cky_i, old.cky_r)))
        self._send_info(old, [Delete(ProtocolId.ISAKMP, [old.spi])])

    # ------------------------------------------------------------------ informational

    def _send_info(self, p: _Phase1, payloads: list[Payload]) -> None:
        assert p.suite is not None and p.keys is not None and p.chain is not None
        mid = self._new_mid()
        self._note_info_mid(mid)
        chain = p.chain.fork(c1.message_iv(p.suite, p.last_block, mid))
        prf, key = p.suite.prf, p.keys.skeyid_a
        header = Header(p.cky_i, p.cky_r, 0, ExchangeType.INFORMATIONAL, 0, mid)
        packet = self._seal_hashed(header, payloads, lambda rest: c1.info_hash(prf, key, mid, rest), chain)
        if any(isinstance(x, Notify) for x in payloads):
            self.stats.notifies_sent += 1
        self._emit(packet)

    def _note_info_mid(self, mid: int) -> None:
        if not self._info_mids:
            self._info_mids = deque(maxlen=64)
        self._info_mids.append(mid)

    def _on_plain_info(self, p: _Phase1, msg: Message, now: float) -> None:
        """An unprotected error during phase 1 (the peer refused our proposal or our key)."""
        for n in msg.payloads:
            if isinstance(n, Notify) and NotifyType.is_error(n.notify_type) and p.state is not State.NEW:
                self.stats.messages_in += 1
                self._p1_failed(p, now, n.notify_type, f"peer refused phase 1: {NotifyType.text(n.notify_type)}")
                return
        self.stats.dropped += 1

    def _on_info(self, p: _Phase1, msg: Message, addr: Addr, now: float, local: Addr | None) -> None:
        assert p.suite is not None and p.keys is not None and p.chain is not None
        mid = msg.header.message_id
        if mid in self._info_mids:
            self.stats.duplicates += 1
            return
        chain = p.chain.fork(c1.message_iv(p.suite, p.last_block, mid))
        try:
            payloads, plain = self._open(chain, msg)
            digest, rest = self._after_hash(payloads, plain)
        except (CryptoError, ParseError, _Fail):
            self.stats.malformed += 1
            self.stats.dropped += 1
            return
        if not c1.compare(c1.info_hash(p.suite.prf, p.keys.skeyid_a, mid, rest), digest):
            self.stats.dropped += 1
            return
        self._note_info_mid(mid)
        self._note_peer(addr, local, now)
        for item in payloads[1:]:
            if self._dead:
                return
            if isinstance(item, Delete):
                self._on_delete(p, item, now)
            elif isinstance(item, Notify):
                self._on_notify(p, item, now)

    def _on_delete(self, p: _Phase1, d: Delete, now: float) -> None:
        if d.protocol == ProtocolId.ISAKMP:
            if p.spi not in d.spis and not (d.spis and d.spis[0][:8] == p.cky_i):
                return
            if p is self._next:
                self._next = None
            elif p is self._prev:
                self._prev = self._prev_until = None
            elif p is self._p1 and p.state is State.ESTABLISHED:
                dep = self.options.dependent
                if self.children and self.heir is not None:
                    self.heir(self)
                self._end(now, DeleteReason.PEER_REQUEST, take_children=dep,
                          child_reason=DeleteReason.PARENT_DELETED, tell_peer=False)
            return
        if d.protocol != ProtocolId.ESP or d.spi_size != 4:
            return
        home = self._home()
        for raw in d.spis:
            spi_out = struct.unpack("!I", raw)[0]
            pool = [*self.children.values(), *(home.children.values() if home is not self else ())]
            child = next((c for c in pool if c.spi_out == spi_out), None)
            if child is not None:
                # (a pair with a live twin is the loser of a rekey collision: replaced, not to be renegotiated)
                was_rekeyed = child.state is ChildState.REKEYED or self._twin(child) is not None
                self._drop_child(child, DeleteReason.REKEYED if was_rekeyed else DeleteReason.PEER_REQUEST)
                if not was_rekeyed:
                    # More of the burst may follow (the ISAKMP SA's own Delete): a Quick Mode waits for it.
                    self._settle_until = now + DELETE_SETTLE

    def _on_notify(self, p: _Phase1, n: Notify, now: float) -> None:
        t = n.notify_type
        if t == NotifyType.R_U_THERE:
            if len(n.data) == 4:
                self._send_info(p, [Notify(NotifyType.R_U_THERE_ACK, ProtocolId.ISAKMP, p.spi, n.data)])
        elif t == NotifyType.R_U_THERE_ACK:
            if len(n.data) == 4 and struct.unpack("!I", n.data)[0] in self._dpd_outstanding:
                self._dpd_outstanding.clear()
                self._dpd_sent_at = None
                self._dpd_tries = 0
        elif t == NotifyType.INITIAL_CONTACT:
            self._outbox.report(InitialContact(self))
        elif NotifyType.is_error(t) and p.state is not State.ESTABLISHED:
            # A refusal of phase 1 sent under its keys (e.g. our certificate refused after MM5).
            self.stats.messages_in += 1
            self._p1_failed(p, now, t, f"peer refused phase 1: {NotifyType.text(t)}")
        elif NotifyType.is_error(t):
            q = None
            if len(n.spi) == 4:
                spi = struct.unpack("!I", n.spi)[0]
                q = next((x for x in self._quicks.values() if x.we_init and x.spi_in == spi
                          and x.state is QuickState.SENT1), None)
            if q is None:
                q = next((x for x in self._quicks.values() if x.we_init and x.state is QuickState.SENT1), None)
            if q is not None:
                self._quick_failed(q, now, t, f"peer refused quick mode: {NotifyType.text(t)}")

    # ------------------------------------------------------------------ DPD (RFC 3706)

    def _dpd_due(self) -> float | None:
        o = self.options
        if o.dpd_type is DpdType.NONE or not self._p1.peer_dpd or not self.established:
            return None
        if self._dpd_outstanding and self._dpd_sent_at is not None:
            return self._dpd_sent_at + o.dpd_retransmit
        if o.dpd_type is DpdType.PERIODIC:
            return self.last_received + o.dpd_idle
        if self._sent_since_heard():
            return max(self.last_received + o.dpd_idle, self._last_outbound or 0.0)
        return None

    def _dpd_tick(self, now: float) -> None:
        due = self._dpd_due()
        if due is None or due > now:
            return
        if self._dpd_outstanding:
            if self._dpd_tries >= max(1, self.options.dpd_retries):
                self._end(now, DeleteReason.DPD_TIMEOUT, take_children=True, child_reason=DeleteReason.DPD_TIMEOUT,
                          tell_peer=False)
                return
        else:
            self._dpd_tries = 0
        self._send_dpd(now)

    def _send_dpd(self, now: float) -> None:
        self._dpd_seq = (self._dpd_seq + 1) & 0xFFFFFFFF
        self._dpd_outstanding.add(self._dpd_seq)
        self._dpd_sent_at = now
        self._dpd_tries += 1  # R-U-THEREs of this round
        self.stats.dpd_sent += 1
        p = self._p1
        self._send_info(p, [Notify(NotifyType.R_U_THERE, ProtocolId.ISAKMP, p.spi, struct.pack("!I", self._dpd_seq))])


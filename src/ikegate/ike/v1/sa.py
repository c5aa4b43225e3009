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
  :meth:`IsakmpSa.adopt_children` before the peer's Delete for the old SA arrives (strongSwan does the
  same: it adopts CHILD_SAs into the new IKE_SA unless INITIAL-CONTACT says otherwise).
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
  reported as AUTHENTICATION_FAILED.
* Phase-1 rekeying is started only by the end that initiated the current ISAKMP SA (fewer collisions);
  the other end relies on the peer doing it and on the hard expiry.
* The commit bit is never set by us; a peer's commit bit is accepted and otherwise ignored (no
  CONNECTED notify is sent; the peer then simply keeps its SA waiting until its own timer).
* Kilobyte lifetimes are negotiated and put on the child's config, but counting bytes is the
  dataplane's job: it calls :meth:`IsakmpSa.rekey_child` (or ``delete_child``) when a budget runs out.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ikegate.ike.core import ts as tsmod
from ikegate.ike.core.auth import authenticator_for
from ikegate.ike.core.base import EngineBase
from ikegate.ike.core.child import ChildSa, ChildState, ChildTrigger
from ikegate.ike.core.config import Addr, ChildSaConfig, IkeSaConfig, Mode, ResponderPolicy
from ikegate.ike.core.errors import Refusal
from ikegate.ike.core.lifetimes import jitter, soft_lifetime
from ikegate.ike.core.negotiated import Chosen
from ikegate.ike.core.plumbing import Stats
from ikegate.ike.core.window import Retransmission
from ikegate.ike.crypto import CryptoError, DhKey, dh_group
from ikegate.ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    DeleteReason,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaRekeyed,
    InitialContact,
    NegotiationFailed,
)
from ikegate.ike.v1 import crypto as c1
from ikegate.ike.v1 import proposals as p1props
from ikegate.ike.v1.options import DpdType, ExchangeMode, V1Options
from ikegate.ike.v1.registry import (
    NATT_DRAFT_VIDS,
    VID_DPD,
    VID_NATT_DRAFT_02,
    VID_NATT_DRAFT_02N,
    VID_NATT_RFC3947,
    EncapMode,
    ExchangeType,
    IdType,
    LifeType,
    NotifyType,
    ProtocolId,
    vendor_name,
)
from ikegate.ike.v1.states import (
    EXPECTED,
    QUICK_TRANSITIONS,
    TIMEOUT_HINTS,
    TRANSITIONS,
    QuickState,
    QuickTrigger,
    State,
    Trigger,
)
from ikegate.ike.v1.wire import (
    HEADER_LEN,
    KE,
    SA,
    Delete,
    Hash,
    Header,
    Identification,
    Message,
    NatD,
    NatOA,
    Nonce,
    Notify,
    ParseError,
    Payload,
    VendorId,
    decode_attributes,
    decode_chain,
    decode_header,
    decode_message,
    encode_header,
    encode_message,
    encode_payloads,
)
from ikegate.ike.wire.v2 import TrafficSelector

NONCE_SIZE = 32
ZERO_COOKIE = bytes(8)
RESPONDER_HALF_OPEN = 30.0
QUICK_LINGER = 60.0  # how long a finished quick mode stays to answer duplicates
REKEY_RETRY = 30.0
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


class _Fail(Refusal):
    """Inside message processing: refuse with this Notify."""

    names = NotifyType


@dataclass(slots=True, eq=False)
class _Phase1:
    """One phase-1 negotiation and, once established, one ISAKMP SA (a rekey makes a second one)."""

    we_init: bool
    cky_i: bytes
    cky_r: bytes
    state: State = State.NEW
    mode: ExchangeMode = ExchangeMode.MAIN
    config: IkeSaConfig | None = None
    candidates: list[IkeSaConfig] = field(default_factory=list)
    dh: DhKey | None = None
    g_xi: bytes = b""
    g_xr: bytes = b""
    g_xy: bytes = field(default=b"", repr=False)
    ni: bytes = b""
    nr: bytes = b""
    sai_b: bytes = b""
    choice: p1props.Phase1Choice | None = None
    suite: c1.Suite | None = None
    keys: c1.Phase1Keys | None = None
    chain: c1.IvChain | None = None
    last_in: bytes = b""
    last_out: bytes = b""
    req: Retransmission | None = None
    natt: str | None = None  # "rfc" or "draft" once both ends announced it
    peer_dpd: bool = False
    peer_vendors: list[str] = field(default_factory=list)
    nat_local: bool = False
    nat_remote: bool = False
    peer_id: tuple[int, bytes] | None = None
    initial_contact: bool = False
    established_at: float | None = None
    life: float = 0.0

    @property
    def spi(self) -> bytes:
        return self.cky_i + self.cky_r

    @property
    def local_cookie(self) -> bytes:
        return self.cky_i if self.we_init else self.cky_r

    @property
    def last_block(self) -> bytes:
        """The last phase-1 CBC block: where every phase-2 IV chain starts (RFC 2409 App. B)."""
        assert self.chain is not None
        return self.chain.iv


@dataclass(slots=True, eq=False)
class _Quick:
    """One quick mode exchange, kept a while after it finished to answer duplicates."""

    mid: int
    p1: _Phase1
    we_init: bool
    chain: c1.IvChain
    state: QuickState = QuickState.NEW  # changed only by IsakmpSa._quick_move
    cfg: ChildSaConfig | None = None
    old: ChildSa | None = None
    ni: bytes = b""
    nr: bytes = b""
    dh: DhKey | None = None
    g_qm: bytes | None = field(default=None, repr=False)
    spi_in: int = 0
    spi_out: int = 0
    choice: p1props.EspChoice | None = None
    ts_local: list[TrafficSelector] = field(default_factory=list)
    ts_remote: list[TrafficSelector] = field(default_factory=list)
    life: float = 0.0
    life_kb: int = 0
    last_in: bytes = b""
    last_out: bytes = b""
    req: Retransmission | None = None
    done_at: float | None = None
    started: float = 0.0


def natd_hash(suite: c1.Suite, cky_i: bytes, cky_r: bytes, addr: Addr) -> bytes:
    """NAT-D = HASH(CKY-I | CKY-R | IP | Port) with the negotiated hash (RFC 3947 §3.2)."""
    return suite.digest(cky_i + cky_r + ipaddress.ip_address(addr[0]).packed + struct.pack("!H", addr[1]))


def _addr_id(addr: str) -> tuple[int, bytes]:
    ip = ipaddress.ip_address(addr)
    return (IdType.ID_IPV4_ADDR if ip.version == 4 else IdType.ID_IPV6_ADDR, ip.packed)


def _first(payloads: list[Payload], kind: type[Any]) -> Any:
    return next((p for p in payloads if isinstance(p, kind)), None)


class IsakmpSa(EngineBase):
    """One IKEv1 ISAKMP SA with its IPsec SAs (``children``), driven like the IKEv2 ``IkeSa``."""

    BAD_INPUT = (CryptoError, ParseError, ValueError, KeyError, IndexError, struct.error)

    def __init__(
        self,
        config: IkeSaConfig | None,
        *,
        initiator: bool,
        local: Addr,
        peer: Addr,
        now: float,
        policy: ResponderPolicy | None = None,
        rng: Callable[[int], bytes] = os.urandom,
        spi_allocator: Callable[[], int] | None = None,
        v1: V1Options | None = None,
    ) -> None:
        super().__init__(config, initiator=initiator, local=local, peer=peer, now=now, policy=policy, rng=rng,
                         spi_allocator=spi_allocator)
        self.options = v1 or V1Options()
        if initiator:
            self._p1 = _Phase1(True, rng(8), ZERO_COOKIE, config=config)
        else:
            self._p1 = _Phase1(False, b"", rng(8))
        self._next: _Phase1 | None = None  # our phase-1 rekey in progress
        self._prev: _Phase1 | None = None  # the ISAKMP SA our phase-1 rekey replaced, heard until _prev_until
        self._prev_until: float | None = None
        self._settle_until: float | None = None  # Quick Modes wait for the rest of a peer's Delete burst
        self._successor: IsakmpSa | None = None  # took our IPsec SAs over (the peer's phase-1 rekey)
        self._dead = False
        self._quicks: dict[int, _Quick] = {}
        self._info_mids: deque[int] = deque(maxlen=64)
        self._deadline = None if initiator else now + RESPONDER_HALF_OPEN
        self._dpd_seq = int.from_bytes(rng(4), "big") & 0x7FFFFFFF
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
    def is_half_open(self) -> bool:
        """Never: an IKEv1 responder is addressed by its own cookie from its first answer on, so the
        gateway's half-open table (keyed by the initiator's SPI) holds it only until then."""
        return False

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
        self._next = _Phase1(True, self._rng(8), ZERO_COOKIE, config=config)
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

    def _fail(self, now: float, notify: int, detail: str) -> None:
        """A phase-1 negotiation failed: report it, and the SA is gone (nothing to tell the peer)."""
        if self._dead:
            return
        self._outbox.report(NegotiationFailed(self, notify, detail))
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

    def _new_retrans(self, packet: bytes, now: float, on_timeout: Callable[[float], None]) -> Retransmission:
        return self._window.arm(Retransmission(packet, on_timeout), now, self.config)

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

    @staticmethod
    def _seal(header: Header, payloads: list[Payload], chain: c1.IvChain | None) -> bytes:
        first, body = encode_payloads(payloads)
        header.next_payload = first
        if chain is not None:
            header.flags |= 0x01
            body = chain.encrypt(body)
        return encode_header(header, HEADER_LEN + len(body)) + body

    def _seal_hashed(self, header: Header, rest: list[Payload], digest: Callable[[bytes], bytes],
                     chain: c1.IvChain) -> bytes:
        """HDR*, HASH(n), rest: the hash covers the encoded payloads after it (RFC 2409 §5.5, §5.7)."""
        _first_type, rest_bytes = encode_payloads(rest)
        return self._seal(header, [Hash(digest(rest_bytes)), *rest], chain)

    @staticmethod
    def _open(chain: c1.IvChain, msg: Message) -> tuple[list[Payload], bytes]:
        """Decrypt and decode; the chain moves on only if the plaintext parses."""
        assert msg.encrypted is not None
        saved = chain.iv
        try:
            plain = chain.decrypt(msg.encrypted)
            payloads, end = decode_chain(msg.header.next_payload, plain)
        except (CryptoError, ParseError):
            chain.iv = saved
            raise
        return payloads, plain[:end]

    @staticmethod
    def _after_hash(payloads: list[Payload], plain: bytes) -> tuple[bytes, bytes]:
        """(HASH data, the bytes it covers) for a message that must start with a HASH payload."""
        if not payloads or not isinstance(payloads[0], Hash):
            raise _Fail(NotifyType.INVALID_HASH_INFORMATION, "message does not start with HASH")
        size = struct.unpack_from("!H", plain, 2)[0]
        return payloads[0].data, plain[size:]

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

    # ------------------------------------------------------------------ phase 1

    @staticmethod
    def _move(p: _Phase1, trigger: Trigger) -> None:
        """The only writer of a phase 1's ``state``; a move the table lacks is a :class:`ProtocolViolation`."""
        p.state = TRANSITIONS.move(p.state, trigger)

    @staticmethod
    def _quick_move(q: _Quick, trigger: QuickTrigger) -> None:
        """The only writer of a Quick Mode's ``state``."""
        q.state = QUICK_TRANSITIONS.move(q.state, trigger)

    def _vendor_ids(self, p: _Phase1, answer: bool) -> list[Payload]:
        out: list[Payload] = [VendorId(VID_DPD)]
        cfg = p.config or self.config
        natt_on = cfg.nat_traversal if cfg is not None else True
        if natt_on:
            if not answer:
                out += [VendorId(VID_NATT_RFC3947), VendorId(VID_NATT_DRAFT_02N), VendorId(VID_NATT_DRAFT_02)]
            elif p.natt == "rfc":
                out.append(VendorId(VID_NATT_RFC3947))
            elif p.natt == "draft":
                out.append(VendorId(VID_NATT_DRAFT_02))
        return out

    def _read_vendor_ids(self, p: _Phase1, payloads: list[Payload]) -> None:
        vids = [v.data for v in payloads if isinstance(v, VendorId)]
        for vid in vids:
            p.peer_vendors.append(vendor_name(vid) or vid.hex())
        p.peer_dpd = p.peer_dpd or any(v[:16] == VID_DPD[:16] for v in vids)
        cfg = p.config or self.config
        if cfg is not None and not cfg.nat_traversal:
            return
        if VID_NATT_RFC3947 in vids:
            p.natt = "rfc"
        elif any(v in NATT_DRAFT_VIDS for v in vids):
            p.natt = "draft"

    def _natd_payloads(self, p: _Phase1) -> list[Payload]:
        if p.natt is None or p.suite is None:
            return []
        draft = p.natt == "draft"
        return [NatD(natd_hash(p.suite, p.cky_i, p.cky_r, self.peer), draft),
                NatD(natd_hash(p.suite, p.cky_i, p.cky_r, self.local), draft)]

    def _check_natd(self, p: _Phase1, payloads: list[Payload]) -> None:
        """The peer's first NAT-D is what it believes our address is, the others are its own."""
        hashes = [n.data for n in payloads if isinstance(n, NatD)]
        if p.natt is None or p.suite is None or not hashes:
            return
        p.nat_local = natd_hash(p.suite, p.cky_i, p.cky_r, self.local) != hashes[0]
        p.nat_remote = natd_hash(p.suite, p.cky_i, p.cky_r, self.peer) not in hashes[1:]

    def _float(self, p: _Phase1) -> None:
        """Move to the NAT-T port once a NAT is detected (RFC 3947 §4: from MM5 / AM3 on)."""
        cfg = p.config or self.config
        if p.natt is not None and (p.nat_local or p.nat_remote) and cfg is not None:
            self.local = (self.local[0], cfg.natt_port)
            self.peer = (self.peer[0], cfg.natt_port)

    def _start_phase1(self, p: _Phase1, now: float) -> None:
        cfg = p.config
        assert cfg is not None
        if self.options.mode is ExchangeMode.AGGRESSIVE:
            p.mode = ExchangeMode.AGGRESSIVE
            group = cfg.proposals[0].dh[0]
            sa = p1props.phase1_sa(cfg.proposals, cfg.lifetime, group)
            p.sai_b = sa.body()
            p.dh = dh_group(group).generate()
            p.g_xi = p.dh.public
            p.ni = self._rng(NONCE_SIZE)
            payloads: list[Payload] = [sa, KE(p.g_xi), Nonce(p.ni), self._id_payload(cfg),
                                       *self._vendor_ids(p, False)]
            self._move(p, Trigger.START_AGGRESSIVE)
            exchange = ExchangeType.AGGRESSIVE
        else:
            sa = p1props.phase1_sa(cfg.proposals, cfg.lifetime)
            p.sai_b = sa.body()
            payloads = [sa, *self._vendor_ids(p, False)]
            self._move(p, Trigger.START_MAIN)
            exchange = ExchangeType.ID_PROT
        packet = encode_message(Header(p.cky_i, ZERO_COOKIE, 0, exchange, 0, 0), payloads)
        self._p1_send(p, packet, now, expect_answer=True)

    @staticmethod
    def _id_payload(cfg: IkeSaConfig) -> Identification:
        return Identification(cfg.local_id[0], cfg.local_id[1])

    def _p1_send(self, p: _Phase1, packet: bytes, now: float, *, expect_answer: bool) -> None:
        p.last_out = packet
        p.req = self._new_retrans(packet, now, lambda t: self._p1_timeout(p, t)) if expect_answer else None
        self._emit(packet)

    def _p1_timeout(self, p: _Phase1, now: float) -> None:
        hint = TIMEOUT_HINTS.get(p.state)
        self._p1_failed(p, now, 0, hint or f"no answer in state {p.state.value}")

    def _p1_failed(self, p: _Phase1, now: float, notify: int, detail: str) -> None:
        if p is self._next:
            self._next = None
            self._rekey_at = now + REKEY_RETRY  # the current ISAKMP SA carries on; try again later
            return
        if p is self._p1:
            self._fail(now, notify, detail)

    def _refuse_p1(self, p: _Phase1, exchange: int, notify: int, detail: str, now: float) -> None:
        """Unprotected Informational with the error (the peer may not share our keys), then give up."""
        cky_r = p.cky_r
        header = Header(p.cky_i, cky_r, 0, ExchangeType.INFORMATIONAL, 0, 0)
        self._emit(encode_message(header, [Notify(notify, ProtocolId.ISAKMP, p.cky_i + cky_r)]))
        self.stats.notifies_sent += 1
        self._p1_failed(p, now, notify, detail)

    def _on_phase1(self, p: _Phase1, msg: Message, data: bytes, addr: Addr, now: float,
                   local: Addr | None) -> None:
        if p.last_in and data == p.last_in:
            self.stats.duplicates += 1
            if p.last_out:
                self._emit(p.last_out)  # the peer lost our answer: the same bytes again
            return
        h = msg.header
        if p.state is State.NEW and not p.we_init:
            trigger = Trigger.MM1 if h.exchange == ExchangeType.ID_PROT else Trigger.AM1
        else:
            expected = EXPECTED.get(p.state)
            if expected is None or expected[0] != h.exchange:
                self.stats.dropped += 1
                return
            trigger = expected[1]
        handler = {
            Trigger.MM1: self._on_mm1, Trigger.MM2: self._on_mm2, Trigger.MM3: self._on_mm3,
            Trigger.MM4: self._on_mm4, Trigger.MM5: self._on_mm5, Trigger.MM6: self._on_mm6,
            Trigger.AM1: self._on_am1, Trigger.AM2: self._on_am2, Trigger.AM3: self._on_am3,
        }[trigger]
        try:
            handler(p, msg, data, addr, now, local)
        except _Fail as exc:
            self._refuse_p1(p, h.exchange, exc.notify, str(exc), now)

    # Main Mode ---------------------------------------------------------------------------------

    def _plain(self, msg: Message) -> list[Payload]:
        if msg.encrypted is not None:
            raise _Fail(NotifyType.INVALID_FLAGS, "unexpected encryption")
        return msg.payloads

    def _choose(self, p: _Phase1, sa: SA | None) -> p1props.Phase1Choice:
        assert self.policy is not None
        if sa is None:
            raise _Fail(NotifyType.PAYLOAD_MALFORMED, "no SA payload")
        choice = p1props.choose_phase1(sa, self.policy.ike_proposals(self.peer))
        if choice is None:
            raise _Fail(NotifyType.NO_PROPOSAL_CHOSEN,
                        f"no acceptable phase 1 proposal; received proposals: {p1props.offered_text(sa)}")
        return choice

    def _on_mm1(self, p: _Phase1, msg: Message, data: bytes, addr: Addr, now: float, local: Addr | None) -> None:
        payloads = self._plain(msg)
        p.cky_i = msg.header.cky_i
        self._bind(addr, local)
        sa = _first(payloads, SA)
        p.mode = ExchangeMode.MAIN
        choice = self._choose(p, sa)
        self.stats.messages_in += 1
        p.sai_b = sa.body()
        p.choice = choice
        p.suite = c1.Suite.from_attributes(choice.encryption, choice.key_bits, choice.hash)
        self._read_vendor_ids(p, payloads)
        answer = p1props.answer_sa(sa, choice.proposal, choice.transform, sa.proposals[0].protocol, b"")
        self._move(p, Trigger.MM1)
        p.last_in = data
        header = Header(p.cky_i, p.cky_r, 0, ExchangeType.ID_PROT, 0, 0)
        self._p1_send(p, encode_message(header, [answer, *self._vendor_ids(p, True)]), now, expect_answer=False)

    def _on_mm2(self, p: _Phase1, msg: Message, data: bytes, addr: Addr, now: float, local: Addr | None) -> None:
        assert p.config is not None
        payloads = self._plain(msg)
        sa = _first(payloads, SA)
        choice = p1props.choose_phase1(sa, p.config.proposals) if sa and p1props.is_single(sa) else None
        if choice is None or msg.header.cky_r == ZERO_COOKIE:
            raise _Fail(NotifyType.NO_PROPOSAL_CHOSEN, _not_offered(sa))
        self.stats.messages_in += 1
        p.cky_r = msg.header.cky_r
        p.choice = choice
        p.suite = c1.Suite.from_attributes(choice.encryption, choice.key_bits, choice.hash)
        self._read_vendor_ids(p, payloads)
        self._move(p, Trigger.MM2)
        p.last_in = data
        p.dh = dh_group(choice.group).generate()
        p.g_xi = p.dh.public
        p.ni = self._rng(NONCE_SIZE)
        header = Header(p.cky_i, p.cky_r, 0, ExchangeType.ID_PROT, 0, 0)
        packet = encode_message(header, [KE(p.g_xi), Nonce(p.ni), *self._natd_payloads(p)])
        self._p1_send(p, packet, now, expect_answer=True)

    def _ke_nonce(self, p: _Phase1, payloads: list[Payload]) -> tuple[bytes, bytes]:
        assert p.choice is not None
        ke = _first(payloads, KE)
        nonce = _first(payloads, Nonce)
        if ke is None or nonce is None or not 8 <= len(nonce.data) <= 256:
            raise _Fail(NotifyType.PAYLOAD_MALFORMED, "KE or nonce missing")
        if len(ke.data) != dh_group(p.choice.group).public_size:
            raise _Fail(NotifyType.INVALID_KEY_INFORMATION, "KE of the wrong size for the group")
        return ke.data, nonce.data

    def _on_mm3(self, p: _Phase1, msg: Message, data: bytes, addr: Addr, now: float, local: Addr | None) -> None:
        assert p.choice is not None and self.policy is not None
        payloads = self._plain(msg)
        p.g_xi, p.ni = self._ke_nonce(p, payloads)
        p.dh = dh_group(p.choice.group).generate()
        try:
            p.g_xy = p.dh.shared(p.g_xi)
        except CryptoError as exc:
            raise _Fail(NotifyType.INVALID_KEY_INFORMATION, "bad KE") from exc
        self.stats.messages_in += 1
        p.g_xr = p.dh.public
        p.nr = self._rng(NONCE_SIZE)
        self._check_natd(p, payloads)
        # The identity is still unknown (it comes encrypted in MM5): the PSK candidates are by address.
        id_type, id_data = _addr_id(self.peer[0])
        p.candidates = list(self.policy.authenticate(self.peer, id_type, id_data))
        self._move(p, Trigger.MM3)
        p.last_in = data
        header = Header(p.cky_i, p.cky_r, 0, ExchangeType.ID_PROT, 0, 0)
        packet = encode_message(header, [KE(p.g_xr), Nonce(p.nr), *self._natd_payloads(p)])
        self._p1_send(p, packet, now, expect_answer=False)

    def _derive(self, p: _Phase1, cfg: IkeSaConfig) -> tuple[c1.Phase1Keys, c1.IvChain]:
        assert p.suite is not None
        skeyid = authenticator_for(cfg).skeyid(p.suite.prf, p.ni, p.nr, p.g_xy)
        keys = c1.derive_phase1(p.suite.prf, skeyid, p.g_xy, p.cky_i, p.cky_r, p.suite.encr.key_size)
        chain = c1.IvChain(p.suite.encr, keys.enc_key, c1.phase1_iv(p.suite, p.g_xi, p.g_xr))
        return keys, chain

    def _on_mm4(self, p: _Phase1, msg: Message, data: bytes, addr: Addr, now: float, local: Addr | None) -> None:
        assert p.config is not None and p.dh is not None and p.suite is not None
        payloads = self._plain(msg)
        p.g_xr, p.nr = self._ke_nonce(p, payloads)
        try:
            p.g_xy = p.dh.shared(p.g_xr)
        except CryptoError as exc:
            raise _Fail(NotifyType.INVALID_KEY_INFORMATION, "bad KE") from exc
        self.stats.messages_in += 1
        self._check_natd(p, payloads)
        self._float(p)
        p.keys, p.chain = self._derive(p, p.config)
        self._move(p, Trigger.MM4)
        p.last_in = data
        idii = self._id_payload(p.config)
        auth = c1.hash_i(p.suite.prf, p.keys.skeyid, p.g_xi, p.g_xr, p.cky_i, p.cky_r, p.sai_b, idii.body())
        out: list[Payload] = [idii, Hash(auth)]
        if self.initial_contact and p is self._p1:
            out.append(Notify(NotifyType.INITIAL_CONTACT, ProtocolId.ISAKMP, p.spi))
        packet = self._seal(Header(p.cky_i, p.cky_r, 0, ExchangeType.ID_PROT, 0, 0), out, p.chain)
        self._p1_send(p, packet, now, expect_answer=True)

    def _on_mm5(self, p: _Phase1, msg: Message, data: bytes, addr: Addr, now: float, local: Addr | None) -> None:
        assert p.suite is not None
        if msg.encrypted is None:
            raise _Fail(NotifyType.INVALID_FLAGS, "MM5 must be encrypted")
        # Try each candidate PSK: the one whose keys decrypt MM5 into a valid chain and HASH_I wins.
        for cfg in p.candidates:
            keys, chain = self._derive(p, cfg)
            try:
                payloads, _plain = self._open(chain, msg)
            except (CryptoError, ParseError):
                continue
            idii = _first(payloads, Identification)
            auth = _first(payloads, Hash)
            if idii is None or auth is None:
                continue
            if cfg.remote_id is not None and (idii.id_type, idii.data) != cfg.remote_id:
                continue
            expected = c1.hash_i(p.suite.prf, keys.skeyid, p.g_xi, p.g_xr, p.cky_i, p.cky_r, p.sai_b, idii.body())
            if not c1.compare(expected, auth.data):
                continue
            p.keys, p.chain, p.config = keys, chain, cfg
            self.config = cfg
            p.peer_id = (idii.id_type, idii.data)
            p.initial_contact = any(isinstance(n, Notify) and n.notify_type == NotifyType.INITIAL_CONTACT
                                    for n in payloads)
            self._note_peer(addr, local, now)
            self._move(p, Trigger.MM5)
            p.last_in = data
            idir = self._id_payload(cfg)
            auth_r = c1.hash_r(p.suite.prf, keys.skeyid, p.g_xi, p.g_xr, p.cky_i, p.cky_r, p.sai_b, idir.body())
            packet = self._seal(Header(p.cky_i, p.cky_r, 0, ExchangeType.ID_PROT, 0, 0), [idir, Hash(auth_r)],
                                p.chain)
            self._p1_send(p, packet, now, expect_answer=False)
            self._p1_established(p, now)
            return
        self.stats.auth_failures += 1
        raise _Fail(NotifyType.AUTHENTICATION_FAILED, "MM5 does not decrypt or verify: pre-shared key mismatch?")

    def _on_mm6(self, p: _Phase1, msg: Message, data: bytes, addr: Addr, now: float, local: Addr | None) -> None:
        assert p.config is not None and p.chain is not None and p.keys is not None and p.suite is not None
        if msg.encrypted is None:
            raise _Fail(NotifyType.INVALID_FLAGS, "MM6 must be encrypted")
        try:
            payloads, _plain = self._open(p.chain, msg)
        except (CryptoError, ParseError):
            self.stats.auth_failures += 1
            raise _Fail(NotifyType.AUTHENTICATION_FAILED, "MM6 does not decrypt") from None
        idir = _first(payloads, Identification)
        auth = _first(payloads, Hash)
        if idir is None or auth is None:
            raise _Fail(NotifyType.PAYLOAD_MALFORMED, "MM6 without ID or HASH")
        self._verify_responder(p, idir, auth)
        self._note_peer(addr, local, now)
        self._move(p, Trigger.MM6)
        p.last_in = data
        p.last_out = b""  # MM6 ends the exchange: a duplicate of it is not answered
        p.req = None
        self._p1_established(p, now)

    def _verify_responder(self, p: _Phase1, idir: Identification, auth: Hash) -> None:
        assert p.config is not None and p.keys is not None and p.suite is not None
        if p.config.remote_id is not None and (idir.id_type, idir.data) != p.config.remote_id:
            self.stats.auth_failures += 1
            raise _Fail(NotifyType.AUTHENTICATION_FAILED, "unexpected responder identity")
        expected = c1.hash_r(p.suite.prf, p.keys.skeyid, p.g_xi, p.g_xr, p.cky_i, p.cky_r, p.sai_b, idir.body())
        if not c1.compare(expected, auth.data):
            self.stats.auth_failures += 1
            raise _Fail(NotifyType.AUTHENTICATION_FAILED, "HASH_R does not verify")
        p.peer_id = (idir.id_type, idir.data)

    # Aggressive Mode ---------------------------------------------------------------------------

    def _on_am1(self, p: _Phase1, msg: Message, data: bytes, addr: Addr, now: float, local: Addr | None) -> None:
        assert self.policy is not None
        payloads = self._plain(msg)
        p.cky_i = msg.header.cky_i
        p.mode = ExchangeMode.AGGRESSIVE
        self._bind(addr, local)
        if self.options.mode is not ExchangeMode.AGGRESSIVE:
            # AM2 carries HASH_R over the PSK before the initiator proved anything: an offline dictionary
            # attack on the key for anyone who asks. Only a peer configured for it gets one (as the USG).
            raise _Fail(NotifyType.INVALID_EXCHANGE_TYPE,
                        f"aggressive mode refused: no ike peer for {addr[0]} is configured with exchange-mode "
                        "aggressive")
        sa = _first(payloads, SA)
        choice = self._choose(p, sa)
        p.choice = choice
        p.suite = c1.Suite.from_attributes(choice.encryption, choice.key_bits, choice.hash)
        p.sai_b = sa.body()
        p.g_xi, p.ni = self._ke_nonce(p, payloads)
        idii = _first(payloads, Identification)
        if idii is None:
            raise _Fail(NotifyType.INVALID_ID_INFORMATION, "aggressive mode without ID")
        candidates = self.policy.authenticate(self.peer, idii.id_type, idii.data)
        cfg = next((c for c in candidates if c.remote_id is None or c.remote_id == (idii.id_type, idii.data)), None)
        if cfg is None:
            raise _Fail(NotifyType.AUTHENTICATION_FAILED, "no peer configured for this identity")
        p.dh = dh_group(choice.group).generate()
        try:
            p.g_xy = p.dh.shared(p.g_xi)
        except CryptoError as exc:
            raise _Fail(NotifyType.INVALID_KEY_INFORMATION, "bad KE") from exc
        self.stats.messages_in += 1
        p.g_xr = p.dh.public
        p.nr = self._rng(NONCE_SIZE)
        p.config = cfg
        p.peer_id = (idii.id_type, idii.data)
        self._read_vendor_ids(p, payloads)
        p.keys, p.chain = self._derive(p, cfg)
        idir = self._id_payload(cfg)
        auth = c1.hash_r(p.suite.prf, p.keys.skeyid, p.g_xi, p.g_xr, p.cky_i, p.cky_r, p.sai_b, idir.body())
        answer = p1props.answer_sa(sa, choice.proposal, choice.transform, sa.proposals[0].protocol, b"")
        out: list[Payload] = [answer, KE(p.g_xr), Nonce(p.nr), idir, Hash(auth), *self._vendor_ids(p, True),
                              *self._natd_payloads(p)]
        self._move(p, Trigger.AM1)
        p.last_in = data
        header = Header(p.cky_i, p.cky_r, 0, ExchangeType.AGGRESSIVE, 0, 0)
        # The last aggressive-mode message is the initiator's: we retransmit AM2 until it arrives.
        self._p1_send(p, encode_message(header, out), now, expect_answer=True)

    def _on_am2(self, p: _Phase1, msg: Message, data: bytes, addr: Addr, now: float, local: Addr | None) -> None:
        assert p.config is not None and p.dh is not None
        payloads = self._plain(msg)
        sa = _first(payloads, SA)
        choice = p1props.choose_phase1(sa, p.config.proposals) if sa and p1props.is_single(sa) else None
        if choice is None or msg.header.cky_r == ZERO_COOKIE or choice.group != p.dh.group.id:
            raise _Fail(NotifyType.NO_PROPOSAL_CHOSEN, _not_offered(sa))
        p.cky_r = msg.header.cky_r
        p.choice = choice
        p.suite = c1.Suite.from_attributes(choice.encryption, choice.key_bits, choice.hash)
        p.g_xr, p.nr = self._ke_nonce(p, payloads)
        try:
            p.g_xy = p.dh.shared(p.g_xr)
        except CryptoError as exc:
            raise _Fail(NotifyType.INVALID_KEY_INFORMATION, "bad KE") from exc
        p.keys, p.chain = self._derive(p, p.config)
        idir = _first(payloads, Identification)
        auth = _first(payloads, Hash)
        if idir is None or auth is None:
            raise _Fail(NotifyType.PAYLOAD_MALFORMED, "AM2 without ID or HASH")
        self._verify_responder(p, idir, auth)
        self._note_peer(addr, local, now)
        self._read_vendor_ids(p, payloads)
        self._check_natd(p, payloads)
        self._float(p)
        self._move(p, Trigger.AM2)
        p.last_in = data
        idii = self._id_payload(p.config)
        auth_i = c1.hash_i(p.suite.prf, p.keys.skeyid, p.g_xi, p.g_xr, p.cky_i, p.cky_r, p.sai_b, idii.body())
        out: list[Payload] = [Hash(auth_i), *self._natd_payloads(p)]
        if self.initial_contact and p is self._p1:
            out.append(Notify(NotifyType.INITIAL_CONTACT, ProtocolId.ISAKMP, p.spi))
        # AM3 travels in the clear (as strongSwan sends it); the phase-1 IV chain stays at its start.
        packet = encode_message(Header(p.cky_i, p.cky_r, 0, ExchangeType.AGGRESSIVE, 0, 0), out)
        self._p1_send(p, packet, now, expect_answer=False)
        self._p1_established(p, now)

    def _on_am3(self, p: _Phase1, msg: Message, data: bytes, addr: Addr, now: float, local: Addr | None) -> None:
        assert p.config is not None and p.keys is not None and p.suite is not None and p.chain is not None
        if msg.encrypted is not None:
            try:
                payloads, _plain = self._open(p.chain, msg)
            except (CryptoError, ParseError):
                self.stats.auth_failures += 1
                raise _Fail(NotifyType.AUTHENTICATION_FAILED, "AM3 does not decrypt") from None
        else:
            payloads = msg.payloads
        auth = _first(payloads, Hash)
        idii_b = Identification(p.peer_id[0], p.peer_id[1]).body() if p.peer_id else b""
        expected = c1.hash_i(p.suite.prf, p.keys.skeyid, p.g_xi, p.g_xr, p.cky_i, p.cky_r, p.sai_b, idii_b)
        if auth is None or not c1.compare(expected, auth.data):
            self.stats.auth_failures += 1
            raise _Fail(NotifyType.AUTHENTICATION_FAILED, "HASH_I does not verify")
        p.initial_contact = any(isinstance(n, Notify) and n.notify_type == NotifyType.INITIAL_CONTACT
                                for n in payloads)
        self._check_natd(p, payloads)
        self._note_peer(addr, local, now)
        self.config = p.config
        self._move(p, Trigger.AM3)
        p.last_in = data
        p.last_out = b""  # AM3 ends the exchange: a duplicate of it is not answered
        p.req = None
        self._p1_established(p, now)

    # establishment -----------------------------------------------------------------------------

    def _p1_established(self, p: _Phase1, now: float) -> None:
        assert p.config is not None and p.choice is not None
        p.established_at = now
        offered = p.choice.life_seconds
        p.life = float(min(offered, p.config.lifetime) if offered else p.config.lifetime)
        if p is self._next:
            self._switch(p, now)
            return
        self.established_at = now
        self.peer_id = p.peer_id
        self._deadline = None
        self._set_lifetime(p, now)
        if p.initial_contact and not p.we_init:
            self._outbox.report(InitialContact(self))
        self._outbox.report(IkeSaEstablished(self))
        if self._first_child is not None:
            first, self._first_child = self._first_child, None
            self._start_quick(first, None, now)
        for task in self._window.take_all():
            task(now)

    def _set_lifetime(self, p: _Phase1, now: float) -> None:
        self._expire_at = now + p.life
        # Only the end that initiated this ISAKMP SA renews it (see the module notes).
        self._rekey_at = now + soft_lifetime(p.life, True, self._rng) if p.we_init else None

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
        self._info_mids.append(mid)
        chain = p.chain.fork(c1.message_iv(p.suite, p.last_block, mid))
        prf, key = p.suite.prf, p.keys.skeyid_a
        header = Header(p.cky_i, p.cky_r, 0, ExchangeType.INFORMATIONAL, 0, mid)
        packet = self._seal_hashed(header, payloads, lambda rest: c1.info_hash(prf, key, mid, rest), chain)
        if any(isinstance(x, Notify) for x in payloads):
            self.stats.notifies_sent += 1
        self._emit(packet)

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
        self._info_mids.append(mid)
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

    # ------------------------------------------------------------------ quick mode

    def _encap(self, mode: Mode) -> int:
        if self.udp_encap:
            rfc = self._p1.natt == "rfc"
            if mode is Mode.TRANSPORT:
                return EncapMode.UDP_TRANSPORT if rfc else EncapMode.UDP_TRANSPORT_DRAFT
            return EncapMode.UDP_TUNNEL if rfc else EncapMode.UDP_TUNNEL_DRAFT
        return EncapMode.TRANSPORT if mode is Mode.TRANSPORT else EncapMode.TUNNEL

    def _start_quick(self, cfg: ChildSaConfig, old: ChildSa | None, now: float) -> None:
        p = self._p1
        if not self.established or p.suite is None or p.keys is None or p.chain is None:
            return
        mid = self._new_mid()
        q = _Quick(mid, p, True, p.chain.fork(c1.message_iv(p.suite, p.last_block, mid)), cfg=cfg, old=old)
        q.spi_in = self._alloc_spi()
        q.ni = self._rng(NONCE_SIZE)
        groups = [g for spec in cfg.proposals for g in spec.dh]
        group = groups[0] if groups else None
        if group is not None:
            q.dh = dh_group(group).generate()
        q.ts_local = list(old.ts_local if old is not None else cfg.local_ts)[:1]
        q.ts_remote = list(old.ts_remote if old is not None else cfg.remote_ts)[:1]
        sa = p1props.esp_sa(cfg.proposals, struct.pack("!I", q.spi_in), self._encap(cfg.mode), cfg.lifetime,
                            cfg.lifetime_kb, group)
        rest: list[Payload] = [sa, Nonce(q.ni)]
        if q.dh is not None:
            rest.append(KE(q.dh.public))
        rest += [p1props.ts_to_id(q.ts_local[0]), p1props.ts_to_id(q.ts_remote[0])]
        if cfg.mode is Mode.TRANSPORT and self.udp_encap:
            draft = p.natt == "draft"
            rest += [NatOA(*_addr_id(self.local[0]), draft=draft), NatOA(*_addr_id(self.peer[0]), draft=draft)]
        prf, key = p.suite.prf, p.keys.skeyid_a
        header = Header(p.cky_i, p.cky_r, 0, ExchangeType.QUICK, 0, mid)
        packet = self._seal_hashed(header, rest, lambda b: c1.qm_hash1(prf, key, mid, b), q.chain)
        self._quick_move(q, QuickTrigger.SEND_QM1)
        q.last_out = packet
        q.req = self._new_retrans(packet, now, lambda t: self._quick_timeout(q, t))
        self._quicks[mid] = q
        self._emit(packet)

    def _quick_failed(self, q: _Quick, now: float, notify: int, detail: str) -> None:
        self._quicks.pop(q.mid, None)
        q.req = None
        self._restore_old(q, now)
        self._outbox.report(NegotiationFailed(self, notify, detail, child_only=True))

    def _quick_timeout(self, q: _Quick, now: float) -> None:
        """No answer to our Quick Mode: the peer lost this ISAKMP SA (its unacknowledged Delete never came)
        or is gone. As strongSwan does, the ISAKMP SA ends with its IPsec SAs (the peer is told, in case it
        still listens) and the owner runs Main Mode again: an auto policy after its retry delay, a
        traffic-based one on the next packet. Without this a lone ISAKMP SA would stay for ever."""
        self._quick_failed(q, now, 0, "no answer to quick mode: the peer has probably lost the ISAKMP SA")
        if q.p1 is self._p1 and self.established:
            self._end(now, DeleteReason.DPD_TIMEOUT, take_children=True, child_reason=DeleteReason.DPD_TIMEOUT,
                      tell_peer=True)

    def _qm3_timeout(self, q: _Quick, now: float) -> None:
        """No QM3 for our QM2. The initiator installed the pair when our QM2 reached it, so if only its QM3
        got lost it now sends into an SA we never installed: tell it to drop the pair (a Delete of the SPI
        it sends to), and it negotiates again."""
        self._quick_failed(q, now, 0, "no quick mode message 3")
        if self.established and q.p1 in (self._p1, self._prev):
            self._send_info(q.p1, [Delete(ProtocolId.ESP, [struct.pack("!I", q.spi_in)])])

    def _abandon_quick(self, q: _Quick, now: float) -> None:
        self._quicks.pop(q.mid, None)
        q.req = None
        self._restore_old(q, now)

    def _restore_old(self, q: _Quick, now: float) -> None:
        if q.old is not None and q.old.state is ChildState.REKEYING:
            q.old.move(ChildTrigger.RESTORE)
            q.old.rekey_at = now + 10.0 + jitter(self._rng, 5.0)

    def _on_quick(self, p: _Phase1, msg: Message, data: bytes, addr: Addr, now: float, local: Addr | None) -> None:
        mid = msg.header.message_id
        q = self._quicks.get(mid)
        if q is not None:
            if data == q.last_in:
                # A duplicate QM1 (our QM2 got lost) or QM2 (our QM3 got lost): the same answer again.
                self.stats.duplicates += 1
                if q.last_out:
                    self._emit(q.last_out)
                return
            if q.p1 is not p or q.state is QuickState.DONE:
                self.stats.dropped += 1
                return
        elif mid in self._info_mids or p is self._prev:
            self.stats.dropped += 1  # the peer starts nothing new under an ISAKMP SA we deleted
            return
        assert p.suite is not None and p.keys is not None and p.chain is not None
        fresh = q is None
        if q is None:
            q = _Quick(mid, p, False, p.chain.fork(c1.message_iv(p.suite, p.last_block, mid)), started=now)
        iv_before = q.chain.iv
        try:
            payloads, plain = self._open(q.chain, msg)
            digest, rest = self._after_hash(payloads, plain)
        except (CryptoError, ParseError, _Fail):
            q.chain.iv = iv_before
            self.stats.malformed += 1
            self.stats.dropped += 1
            return
        prf, key = p.suite.prf, p.keys.skeyid_a
        if fresh:
            if not c1.compare(c1.qm_hash1(prf, key, mid, rest), digest):
                self.stats.dropped += 1
                return
            self._note_peer(addr, local, now)
            q.last_in = data
            self._quicks[mid] = q
            try:
                self._answer_qm1(q, payloads[1:], now)
            except (_Fail, CryptoError) as exc:
                notify = exc.notify if isinstance(exc, _Fail) else NotifyType.INVALID_KEY_INFORMATION
                self._quicks.pop(mid, None)
                sa = _first(payloads, SA)
                spi = sa.proposals[0].spi if isinstance(sa, SA) and sa.proposals else b""
                self._send_info(p, [Notify(notify, ProtocolId.ESP, spi, getattr(exc, "data", b""))])
                self._outbox.report(NegotiationFailed(self, notify, str(exc), child_only=True))
            return
        if q.state is QuickState.SENT1:
            assert q.ni
            nonce = _first(payloads, Nonce)
            ni_b = q.ni
            if nonce is None or not c1.compare(c1.qm_hash2(prf, key, mid, ni_b, rest), digest):
                q.chain.iv = iv_before  # a forgery must not move the chain of the real answer
                self.stats.dropped += 1
                return
            self._note_peer(addr, local, now)
            q.last_in = data
            try:
                self._complete_qm2(q, payloads[1:], now)
            except (_Fail, CryptoError) as exc:
                notify = exc.notify if isinstance(exc, _Fail) else NotifyType.INVALID_KEY_INFORMATION
                self._send_info(p, [Notify(notify, ProtocolId.ESP, struct.pack("!I", q.spi_in))])
                self._quick_failed(q, now, notify, str(exc))
            return
        if q.state is QuickState.SENT2:
            if len(payloads) != 1 or not c1.compare(c1.qm_hash3(prf, key, mid, q.ni, q.nr), digest):
                q.chain.iv = iv_before
                self.stats.dropped += 1
                return
            self._note_peer(addr, local, now)
            q.last_in = data
            q.last_out = b""  # QM3 ends the exchange: a duplicate of it is not answered
            q.req = None
            self._quick_move(q, QuickTrigger.QM3)
            q.done_at = now
            self._install(q, now)

    def _select_child(self, tsi: TrafficSelector, tsr: TrafficSelector) -> ChildSaConfig | None:
        """Policy lookup for a quick mode the peer started; a phase-1 initiator checks its own configs."""
        if self.policy is not None:
            # ResponderPolicy is typed for the IKEv2 engine; it only reads the peer from ``sa``.
            cfg = self.policy.select_child(self, [tsi], [tsr])
            if cfg is not None:
                return cfg
        known = [c.config for c in self.children.values()] + (list(self.config.children) if self.config else [])
        for cfg in known:
            if tsmod.all_within([tsi], cfg.remote_ts) and tsmod.all_within([tsr], cfg.local_ts):
                return cfg
        return None

    def _answer_qm1(self, q: _Quick, payloads: list[Payload], now: float) -> None:
        p = q.p1
        assert p.suite is not None and p.keys is not None
        sa = _first(payloads, SA)
        nonce = _first(payloads, Nonce)
        ke = _first(payloads, KE)
        ids = [x for x in payloads if isinstance(x, Identification)]
        if sa is None or nonce is None or len(ids) not in (0, 2) or not 8 <= len(nonce.data) <= 256:
            raise _Fail(NotifyType.PAYLOAD_MALFORMED, "quick mode message 1 incomplete")
        if ids:
            tsi, tsr = p1props.id_to_ts(ids[0]), p1props.id_to_ts(ids[1])
        else:
            tsi, tsr = p1props.host_ts(self.peer[0]), p1props.host_ts(self.local[0])
        if tsi is None or tsr is None:
            raise _Fail(NotifyType.INVALID_ID_INFORMATION, "client IDs are not addresses")
        cfg = self._select_child(tsi, tsr)
        if cfg is None or not tsmod.all_within([tsi], cfg.remote_ts) or not tsmod.all_within([tsr], cfg.local_ts):
            raise _Fail(NotifyType.INVALID_ID_INFORMATION, "no policy matches the proposed client IDs")
        pfs = p1props.offered_group(sa) if ke is not None else None
        choice = p1props.choose_esp(sa, cfg.proposals, transport=cfg.mode is Mode.TRANSPORT,
                                    nat=self.udp_encap, pfs=pfs)
        if choice is None:
            raise _Fail(NotifyType.NO_PROPOSAL_CHOSEN,
                        f"no acceptable ESP transform; received proposals: {p1props.offered_text(sa)}")
        q.cfg, q.choice, q.ni = cfg, choice, nonce.data
        q.nr = self._rng(NONCE_SIZE)
        q.spi_out = struct.unpack("!I", choice.spi)[0]
        q.spi_in = self._alloc_spi()
        q.ts_local, q.ts_remote = [tsr], [tsi]
        my_ke: list[Payload] = []
        if ke is not None and choice.group is not None:
            mine = dh_group(choice.group).generate()
            try:
                q.g_qm = mine.shared(ke.data)
            except CryptoError as exc:
                raise _Fail(NotifyType.INVALID_KEY_INFORMATION, "bad KE") from exc
            my_ke = [KE(mine.public)]
        q.life = float(min(choice.life_seconds, cfg.lifetime) if choice.life_seconds else cfg.lifetime)
        q.life_kb = min(choice.life_kb, cfg.lifetime_kb) if choice.life_kb else cfg.lifetime_kb
        rest: list[Payload] = [p1props.answer_sa(sa, choice.proposal, choice.transform, ProtocolId.ESP,
                                                 struct.pack("!I", q.spi_in)), Nonce(q.nr), *my_ke, *ids]
        if (choice.life_seconds and cfg.lifetime < choice.life_seconds) or (
                choice.life_kb and cfg.lifetime_kb and cfg.lifetime_kb < choice.life_kb):
            rest.append(Notify(NotifyType.RESPONDER_LIFETIME, ProtocolId.ESP, choice.spi,
                               p1props.lifetime_attrs(int(q.life), q.life_kb if choice.life_kb else None)))
        prf, key, mid, ni_b = p.suite.prf, p.keys.skeyid_a, q.mid, q.ni
        header = Header(p.cky_i, p.cky_r, 0, ExchangeType.QUICK, 0, q.mid)
        packet = self._seal_hashed(header, rest, lambda b: c1.qm_hash2(prf, key, mid, ni_b, b), q.chain)
        self._quick_move(q, QuickTrigger.QM1)
        q.last_out = packet
        # QM3 is the initiator's and unanswered: we repeat QM2 until it arrives.
        q.req = self._new_retrans(packet, now, lambda t: self._qm3_timeout(q, t))
        self._emit(packet)

    def _complete_qm2(self, q: _Quick, payloads: list[Payload], now: float) -> None:
        p = q.p1
        assert p.suite is not None and p.keys is not None and q.cfg is not None
        sa = _first(payloads, SA)
        nonce = _first(payloads, Nonce)
        ke = _first(payloads, KE)
        if sa is None or nonce is None or not p1props.is_single(sa):
            raise _Fail(NotifyType.PAYLOAD_MALFORMED, "quick mode message 2 incomplete")
        group = q.dh.group.id if q.dh is not None else None
        choice = p1props.choose_esp(sa, q.cfg.proposals, transport=q.cfg.mode is Mode.TRANSPORT,
                                    nat=self.udp_encap, pfs=group)
        if choice is None or len(choice.spi) != 4:
            raise _Fail(NotifyType.NO_PROPOSAL_CHOSEN, _not_offered(sa))
        ids = [x for x in payloads if isinstance(x, Identification)]
        if ids:
            sent = [p1props.ts_to_id(q.ts_local[0]), p1props.ts_to_id(q.ts_remote[0])]
            if ids != sent:
                raise _Fail(NotifyType.INVALID_ID_INFORMATION, "responder changed the client IDs")
        if q.dh is not None:
            if ke is None:
                raise _Fail(NotifyType.INVALID_KEY_INFORMATION, "PFS answer without KE")
            q.g_qm = q.dh.shared(ke.data)
        q.nr = nonce.data
        q.choice = choice
        q.spi_out = struct.unpack("!I", choice.spi)[0]
        life = float(min(choice.life_seconds, q.cfg.lifetime) if choice.life_seconds else q.cfg.lifetime)
        life_kb = min(choice.life_kb, q.cfg.lifetime_kb) if choice.life_kb else q.cfg.lifetime_kb
        for n in payloads:
            if isinstance(n, Notify) and n.notify_type == NotifyType.RESPONDER_LIFETIME:
                seconds, kilobytes = _parse_lifetime(n.data)
                if seconds:
                    life = min(life, float(seconds))
                if kilobytes:
                    life_kb = min(life_kb, kilobytes) if life_kb else kilobytes
        q.life, q.life_kb = life, life_kb
        prf, key = p.suite.prf, p.keys.skeyid_a
        header = Header(p.cky_i, p.cky_r, 0, ExchangeType.QUICK, 0, q.mid)
        packet = self._seal(header, [Hash(c1.qm_hash3(prf, key, q.mid, q.ni, q.nr))], q.chain)
        self._quick_move(q, QuickTrigger.QM2)
        q.req = None
        q.last_out = packet
        q.done_at = now
        self._emit(packet)
        self._install(q, now)
        if q.old is not None and q.old.state is ChildState.REKEYED:
            self._retire_rekeyed(q.old, now)

    def _install(self, q: _Quick, now: float) -> ChildSa:
        p = q.p1
        assert p.suite is not None and p.keys is not None and q.choice is not None and q.cfg is not None
        choice = q.choice
        encr = choice.encr_alg()
        integ = choice.integ_alg()
        size = encr.keymat_size + (integ.key_size if integ else 0)
        prf, skeyid_d = p.suite.prf, p.keys.skeyid_d
        km_in = c1.keymat(prf, skeyid_d, ProtocolId.ESP, struct.pack("!I", q.spi_in), q.ni, q.nr, size, q.g_qm)
        km_out = c1.keymat(prf, skeyid_d, ProtocolId.ESP, struct.pack("!I", q.spi_out), q.ni, q.nr, size, q.g_qm)
        cut = encr.keymat_size
        cfg = q.cfg
        if (q.life, q.life_kb) != (cfg.lifetime, cfg.lifetime_kb):
            cfg = dataclasses.replace(cfg, lifetime=q.life, lifetime_kb=q.life_kb)
        rekey_at = now + soft_lifetime(q.life, q.we_init, self._rng)
        mode = Mode.TRANSPORT if choice.transport else Mode.TUNNEL
        child = ChildSa(q.spi_in, q.spi_out, cfg, encr, integ, km_in[:cut], km_in[cut:], km_out[:cut],
                        km_out[cut:], list(q.ts_local), list(q.ts_remote), mode, q.we_init, now, rekey_at,
                        now + q.life, dh=choice.group, udp_encap=choice.udp)
        home = self._home()
        pool = [*self.children.values(), *(home.children.values() if home is not self else ())]
        old = q.old if q.old is not None and any(c is q.old for c in pool) else None
        if old is None and not q.we_init:
            # The peer's rekey: a pair for the same policy and selectors replaces the installed one, unless
            # that pair did not exist yet when the peer's Quick Mode began (our own rekey of the same pair
            # crossed it): then both new pairs live for now, see _twin.
            old = next((c for c in pool if c.state in (ChildState.INSTALLED, ChildState.REKEYING)
                        and c.config.name == q.cfg.name and c.config.seq == q.cfg.seq
                        and c.ts_local == child.ts_local and c.ts_remote == child.ts_remote
                        and c.created < q.started), None)
        if old is not None:
            old.move(ChildTrigger.REPLACED)
            old.rekey_at = None
        home.children[child.spi_in] = child
        self._outbox.report(ChildSaEstablished(home, child, old))
        return child

    def _twin(self, child: ChildSa) -> ChildSa | None:
        """Another live pair for the same policy and selectors: both ends rekeyed the same pair at once (IKEv1
        Quick Mode has no collision rule), or a Quick Mode crossed a peer's rekey. Two pairs both work; at
        the first rekey time of either, both ends keep the one with the larger :func:`_pair_key` and delete
        the other, so duplicates never multiply."""
        home = self._home()
        pool = [*self.children.values(), *(home.children.values() if home is not self else ())]
        return next((c for c in pool if c is not child and c.state in (ChildState.INSTALLED, ChildState.REKEYING)
                     and c.config.name == child.config.name and c.config.seq == child.config.seq
                     and c.ts_local == child.ts_local and c.ts_remote == child.ts_remote), None)

    def _retire_rekeyed(self, old: ChildSa, now: float) -> None:
        """Make-before-break finished: drop the replaced pair and tell the peer."""
        self._drop_child(old, DeleteReason.REKEYED)
        home = self._home()
        if home.established:
            # (sent from here with the keys of the SA that holds the pair: the owner drains only this object)
            self._send_info(home._p1, [Delete(ProtocolId.ESP, [struct.pack("!I", old.spi_in)])])


def _pair_key(child: ChildSa) -> int:
    """The same number on both ends for one IPsec SA pair (our inbound SPI is the peer's outbound)."""
    return min(child.spi_in, child.spi_out)


def _not_offered(sa: SA | None) -> str:
    """Why an initiator refuses the responder's answer, with what it answered."""
    return "responder chose a transform we did not offer; received proposals: " + (
        p1props.offered_text(sa) if sa is not None else "none")


def _parse_lifetime(data: bytes) -> tuple[int | None, int | None]:
    """Seconds and kilobytes from RESPONDER-LIFETIME data (IPsec SA attributes)."""
    try:
        attrs = decode_attributes(data)
    except ParseError:
        return None, None
    seconds: int | None = None
    kilobytes: int | None = None
    pending = None
    for a in attrs:
        if a.type == 1:
            pending = a.number
        elif a.type == 2:
            if pending == LifeType.SECONDS:
                seconds = a.number
            elif pending == LifeType.KILOBYTES:
                kilobytes = a.number
    return seconds, kilobytes

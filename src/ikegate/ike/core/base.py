"""The state and plumbing every engine has, written once: ``IkeSa`` (IKEv2) and ``IsakmpSa`` (IKEv1) derive
from :class:`EngineBase` and add only their exchanges and tables.

What lives here is what the :class:`~ikegate.ike.core.engine.Engine` protocol promises that does not
depend on the version: who the peer is and where, the Child SAs, counters, the outbox and event queue,
the request window, SPI allocation, the IKE SA's lifetimes, and the ESP liveness DPD reads.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, NotRequired, TypedDict

from ikegate.ike.core.auth import Verdict
from ikegate.ike.core.child import ChildSa, ChildState
from ikegate.ike.core.config import Addr, ChildSaConfig, IkeSaConfig, ResponderPolicy
from ikegate.ike.core.ids import spi_allocator as spi_allocator_for
from ikegate.ike.core.liveness import EspLiveness
from ikegate.ike.core.plumbing import Outbox, Stats
from ikegate.ike.core.window import RequestWindow, Retransmission
from ikegate.ike.events import DeleteReason

if TYPE_CHECKING:  # pragma: no cover
    from ikegate.ike.core.negotiated import Chosen
    from ikegate.ike.events import IkeEvent


class EngineArgs(TypedDict):
    """The constructor's keyword arguments common to every engine (a version adds its own options)."""

    initiator: bool
    local: Addr
    peer: Addr
    now: float
    policy: NotRequired[ResponderPolicy | None]
    rng: NotRequired[Callable[[int], bytes]]
    spi_allocator: NotRequired[Callable[[], int] | None]
    ike_spi_allocator: NotRequired[Callable[[], bytes] | None]


class EngineBase(EspLiveness):
    """Common state of one IKE SA of either version (slotted: tens of thousands live at once)."""

    __slots__ = (
        "__weakref__",
        "_alloc_spi",
        "_deadline",
        "_expire_at",
        "_first_child",
        "_new_ike_spi",
        "_outbox",
        "_rekey_at",
        "_rng",
        "_window",
        "children",
        "config",
        "created",
        "delete_reason",
        "established_at",
        "force_encap",
        "handle",
        "initial_contact",
        "initiator",
        "local",
        "peer",
        "peer_auth",
        "peer_id",
        "policy",
        "stats",
    )

    #: What message processing raises on bad input (per version): counted as dropped, never a crash.
    #: :class:`~ikegate.ike.core.errors.ProtocolViolation` is never among them.
    BAD_INPUT: ClassVar[tuple[type[Exception], ...]] = ()

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
        ike_spi_allocator: Callable[[], bytes] | None = None,
    ) -> None:
        if initiator and config is None:
            raise ValueError("an initiator needs its IKE configuration")
        if not initiator and policy is None:
            raise ValueError("a responder needs a responder policy")
        self.config = config
        self.policy = policy
        self.initiator = initiator
        self.local = local
        self.peer = peer
        self.created = now
        self.established_at: float | None = None
        self.last_received = now
        self._last_outbound: float | None = None
        self.stats = Stats()
        self.children: dict[int, ChildSa] = {}
        self.peer_id: tuple[int, bytes] | None = None
        #: How the peer authenticated (method, certificate subject), once it has.
        self.peer_auth: Verdict | None = None
        self.delete_reason: DeleteReason | None = None
        self.handle: object = None
        self.initial_contact = False
        #: Carry ESP in UDP although no NAT is in the path (strongSwan's ``encap = yes``): set by the owner
        #: when its dataplane cannot send raw ESP. Our own NAT detection hash is made not to match, so the
        #: peer sees a NAT and both ends agree on UDP encapsulation (RFC 7296 §2.23, RFC 3947 §5).
        self.force_encap = False
        self._rng = rng
        self._alloc_spi = spi_allocator_for(rng, spi_allocator)
        #: Our IKE SPIs / IKEv1 cookies: random by default; a placement worker's encode its index so the
        #: kernel steers the peer's datagrams to it (:mod:`ikegate.workers.steering`).
        self._new_ike_spi = ike_spi_allocator or (lambda: rng(8))
        self._outbox: Outbox[IkeEvent] = Outbox()
        self._window = RequestWindow()
        self._rekey_at: float | None = None
        self._expire_at: float | None = None
        #: The end of the negotiation (IKE_SA_INIT/IKE_AUTH, Main/Aggressive Mode) and the Child SA
        #: negotiated with it (inside IKE_AUTH / by the first Quick Mode).
        self._deadline: float | None = None
        self._first_child: ChildSaConfig | None = None
        self._setup(now)

    def initiate(self, now: float, child: ChildSaConfig | None = None) -> None:
        """Start the negotiation as initiator; ``child`` is the first Child SA to negotiate with it."""
        assert self.config is not None and self.initiator
        self._first_child = child
        self._deadline = now + self.config.half_open_timeout
        self._start(now)

    def _start(self, now: float) -> None:
        raise NotImplementedError

    def _setup(self, now: float) -> None:
        """The version's own initial state, after the common one (a hook: no version repeats the
        constructor)."""

    @property
    def expire_at(self) -> float | None:
        return self._expire_at

    @property
    def rekey_at(self) -> float | None:
        return self._rekey_at

    # ------------------------------------------------------------------ sans-I/O

    def receive_datagram(self, data: bytes, addr: Addr, now: float, local: Addr | None = None) -> None:
        """Feed one IKE message (without the NAT-T non-ESP marker). Never raises on bad input."""
        try:
            self._receive(data, addr, now, local)
        except self.BAD_INPUT:
            self.stats.dropped += 1

    def _receive(self, data: bytes, addr: Addr, now: float, local: Addr | None) -> None:
        raise NotImplementedError

    def datagrams_to_send(self) -> list[tuple[bytes, Addr, Addr]]:
        """(payload, local address, peer address) triples; on the NAT-T port the owner adds the non-ESP
        marker."""
        return self._outbox.datagrams()

    def next_event(self) -> IkeEvent | None:
        return self._outbox.next_event()

    def _emit(self, packet: bytes, route: tuple[Addr, Addr] | None = None) -> None:
        local, peer = route or (self.local, self.peer)
        self.stats.messages_out += 1
        self._outbox.send(packet, local, peer)

    def _retransmit(self, req: Retransmission, now: float) -> None:
        """``req``'s deadline came: send it again with the next back-off or, its tries spent, unhook it and
        let its ``on_timeout`` decide what the silence means."""
        if not self._window.fire(req, now, self.config):
            self._unhook(req)
            req.on_timeout(now)
            return
        self.stats.retransmits += 1
        self._emit(req.packet)
        for fragment in req.more:  # RFC 7383 §2.6.1: every fragment again
            self._emit(fragment)

    def _unhook(self, req: Retransmission) -> None:
        """Forget a request that timed out, before its ``on_timeout`` runs (IKEv1's handlers do it)."""

    def _ike_lifetimes(self, now: float) -> bool:
        """The IKE SA's own lifetimes at ``now``: start the rekey at the soft one; False when the hard one
        ended the SA (then nothing else is due)."""
        if self._expire_at is not None and now >= self._expire_at:
            self._expire_at = None
            self._hard_expiry(now)
            return False
        if self._rekey_at is not None and now >= self._rekey_at:
            self._rekey_at = None
            self.rekey_ike(now)
        return True

    # ------------------------------------------------------------------ what each version implements
    # (the rest of the Engine protocol: with these the layers of an engine are Engines to mypy too)

    @property
    def version(self) -> int:
        raise NotImplementedError

    @property
    def state(self) -> enum.Enum:
        raise NotImplementedError

    @property
    def spi_i(self) -> bytes:
        raise NotImplementedError

    @property
    def spi_r(self) -> bytes:
        raise NotImplementedError

    @property
    def local_spis(self) -> list[bytes]:
        raise NotImplementedError

    @property
    def chosen(self) -> Chosen | None:
        raise NotImplementedError

    @property
    def is_initiator(self) -> bool:
        raise NotImplementedError

    @property
    def established(self) -> bool:
        raise NotImplementedError

    @property
    def finished(self) -> bool:
        raise NotImplementedError

    @property
    def is_deleting(self) -> bool:
        raise NotImplementedError

    @property
    def untouched(self) -> bool:
        raise NotImplementedError

    @property
    def udp_encap(self) -> bool:
        raise NotImplementedError

    @property
    def awaits_outbound(self) -> bool:
        raise NotImplementedError

    def get_timer(self) -> float | None:
        raise NotImplementedError

    def handle_timer(self, now: float) -> None:
        raise NotImplementedError

    def create_child(self, child: ChildSaConfig, now: float) -> None:
        raise NotImplementedError

    def rekey_child(self, child: ChildSa, now: float) -> None:
        raise NotImplementedError

    def liveness_check(self, now: float) -> None:
        raise NotImplementedError

    def delete_child(self, child: ChildSa, now: float, reason: DeleteReason = DeleteReason.MANUAL) -> None:
        raise NotImplementedError

    def delete(self, now: float, reason: DeleteReason = DeleteReason.MANUAL) -> None:
        raise NotImplementedError

    def _hard_expiry(self, now: float) -> None:
        raise NotImplementedError

    def rekey_ike(self, now: float) -> None:
        raise NotImplementedError

    def _bind(self, addr: Addr, local: Addr | None) -> None:
        """A responder's first message: where the peer is and which of our addresses it reached."""
        self.peer = addr
        if local is not None:
            self.local = local

    def _child_rekey_times(self) -> list[float]:
        """When installed Child SAs are due for their rekey (pairs being rekeyed or replaced are not)."""
        return [c.rekey_at for c in self.children.values()
                if c.state is ChildState.INSTALLED and c.rekey_at is not None]

    def _note_peer(self, addr: Addr, local: Addr | None, now: float) -> None:
        """An authenticated message arrived: the peer is alive and may have moved (NAT-T float)."""
        self.last_received = max(self.last_received, now)
        self.stats.messages_in += 1
        if addr != self.peer:
            self.peer = addr
        if local is not None and local != self.local:
            self.local = local


__all__ = ["EngineArgs", "EngineBase"]

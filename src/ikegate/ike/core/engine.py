"""The typed surface the gateway drives an IKE SA through, whichever IKE version runs it.

Both ``ike.v2.sa.IkeSa`` and ``ike.v1.sa.IsakmpSa`` satisfy :class:`Engine` structurally (no base class,
no casts): sans-I/O, bytes and time in (:meth:`receive_datagram`, :meth:`handle_timer`, commands), bytes,
one deadline and events out (:meth:`datagrams_to_send`, :meth:`get_timer`, :meth:`next_event`). The
gateway asks what it needs to know through it (``version``, ``is_deleting``, ``untouched``) rather
than comparing one version's state enum; what only one version has (IKEv1 orphans, for instance) stays
behind an ``isinstance`` in the engine factory.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from ikegate.ike.core.auth import Verdict
    from ikegate.ike.core.child import ChildSa
    from ikegate.ike.core.config import Addr, ChildSaConfig, IkeSaConfig
    from ikegate.ike.core.negotiated import Chosen
    from ikegate.ike.core.plumbing import Stats
    from ikegate.ike.events import DeleteReason, IkeEvent


class Engine(Protocol):
    """One IKE SA (IKEv2) or ISAKMP SA (IKEv1) with its Child SAs."""

    config: IkeSaConfig | None
    initiator: bool  # the role this object was created in (``is_initiator``: of the current IKE SA)
    handle: object
    peer: Addr
    local: Addr
    children: dict[int, ChildSa]
    stats: Stats
    peer_id: tuple[int, bytes] | None
    peer_auth: Verdict | None  # how the peer authenticated (method, certificate subject)
    delete_reason: DeleteReason | None
    initial_contact: bool
    created: float
    established_at: float | None
    last_received: float

    @property
    def version(self) -> int:
        """The IKE major version this engine speaks: 1 or 2."""
        ...

    @property
    def state(self) -> enum.Enum:
        """The version's own state, for display and logs; decisions use the properties below."""
        ...

    @property
    def spi_i(self) -> bytes: ...

    @property
    def spi_r(self) -> bytes: ...

    @property
    def local_spis(self) -> list[bytes]:
        """Our SPIs (cookies) that may still address this engine."""
        ...

    @property
    def chosen(self) -> Chosen | None: ...

    @property
    def is_initiator(self) -> bool: ...

    @property
    def established(self) -> bool: ...

    @property
    def finished(self) -> bool:
        """The owner may forget this engine."""
        ...

    @property
    def is_deleting(self) -> bool:
        """Our Delete is out and awaits its answer: a second delete is a no-op."""
        ...

    @property
    def untouched(self) -> bool:
        """Still in the initial state: the first message changed nothing (the gateway keeps no state for
        a responder its first datagram did not move)."""
        ...

    @property
    def udp_encap(self) -> bool: ...

    @property
    def expire_at(self) -> float | None: ...

    @property
    def rekey_at(self) -> float | None: ...

    @property
    def awaits_outbound(self) -> bool:
        """On-demand DPD waits for the owner to report ESP sent to the peer."""
        ...

    def datagrams_to_send(self) -> list[tuple[bytes, Addr, Addr]]: ...

    def next_event(self) -> IkeEvent | None: ...

    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...

    def receive_datagram(self, data: bytes, addr: Addr, now: float, local: Addr | None = None) -> None: ...

    def initiate(self, now: float, child: ChildSaConfig | None = None) -> None: ...

    def create_child(self, child: ChildSaConfig, now: float) -> None: ...

    def rekey_child(self, child: ChildSa, now: float) -> None: ...

    def rekey_ike(self, now: float) -> None: ...

    def liveness_check(self, now: float) -> None: ...

    def delete_child(self, child: ChildSa, now: float, reason: DeleteReason = ...) -> None: ...

    def delete(self, now: float, reason: DeleteReason = ...) -> None: ...

    def note_inbound(self, when: float) -> None: ...

    def note_outbound(self, when: float) -> None: ...


__all__ = ["Engine"]

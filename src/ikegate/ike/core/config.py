"""Parameters of one IKE SA and its Child SAs, in protocol terms (transform IDs, selectors, seconds).

The gateway translates the VRP configuration into these records; the state machine never sees the
configuration model. ``handle`` fields let the gateway tie an SA back to the policy it came from.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from ikegate.ike.fragments import FragmentationConfig
from ikegate.ike.wire.v2 import TrafficSelector

if TYPE_CHECKING:  # pragma: no cover
    from ikegate.ike.core.auth import Authenticator
    from ikegate.ike.core.engine import Engine

Addr = tuple[str, int]


@dataclass(frozen=True, slots=True)
class IkeProposalSpec:
    """One IKE proposal: every list is a set of alternatives, first preferred."""

    encr: tuple[tuple[int, int | None], ...]  # (ENCR id, key bits)
    prf: tuple[int, ...]
    integ: tuple[int, ...]  # empty for AEAD-only proposals
    dh: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class EspProposalSpec:
    encr: tuple[tuple[int, int | None], ...]
    integ: tuple[int, ...]
    dh: tuple[int, ...] = ()  # PFS groups; empty = no PFS


class Mode(enum.Enum):
    TUNNEL = "tunnel"
    TRANSPORT = "transport"


@dataclass(slots=True)
class ChildSaConfig:
    """What one IPsec policy (or template) allows for a Child SA."""

    name: str
    seq: int
    proposals: list[EspProposalSpec]
    local_ts: list[TrafficSelector]
    remote_ts: list[TrafficSelector]
    mode: Mode = Mode.TUNNEL
    lifetime: float = 3600.0
    lifetime_kb: int = 10485760
    template: str | None = None
    handle: object = None


@dataclass(slots=True)
class IkeSaConfig:
    """What one IKE peer allows. ``psk`` is clear bytes: it never leaves the engine. ``auth`` is the
    peer's certificate authenticator (``ike.core.auth``); None authenticates with ``psk``."""

    proposals: list[IkeProposalSpec]
    psk: bytes
    local_id: tuple[int, bytes]
    remote_id: tuple[int, bytes] | None = None
    lifetime: float = 86400.0
    retransmit_base: float = 1.0
    retransmit_tries: int = 5
    #: DPD idle time: probe a peer heard from (IKE or ESP) longer ago than this; None: no DPD. Periodic
    #: DPD probes whenever the peer is idle; on-demand (the USG default) only when we also sent ESP since.
    dpd_interval: float | None = 30.0
    dpd_on_demand: bool = False
    #: A DPD round is ``dpd_retries`` INFORMATIONAL transmissions ``dpd_retransmit`` seconds apart (the
    #: USG ``dpd retransmit-interval`` / ``retry-limit``); unanswered ``dpd_retries * dpd_retransmit``
    #: seconds after the first, the peer is dead. None: the generic exponential retransmission.
    dpd_retransmit: float | None = None
    dpd_retries: int | None = None
    nat_traversal: bool = True
    ike_port: int = 500
    natt_port: int = 4500
    half_open_timeout: float = 30.0
    name: str = ""
    handle: object = None
    children: list[ChildSaConfig] = field(default_factory=list)
    auth: Authenticator | None = None
    #: IKE fragmentation (RFC 7383 / the IKEv1 extension): announced and used when set; None: off.
    fragmentation: FragmentationConfig | None = None


class ResponderPolicy(Protocol):
    """How a responder finds out what to accept, asked at the moment it needs to know.

    Pure lookups on the configuration: no I/O. ``authenticate`` is asked once the peer's identity is
    known (IKE_AUTH); ``select_child`` for every Child SA the peer proposes.
    """

    def ike_proposals(self, peer: Addr) -> list[IkeProposalSpec]: ...

    def authenticate(self, peer: Addr, id_type: int, id_data: bytes) -> list[IkeSaConfig]:
        """Candidate peer configurations for this identity, best first; the credentials that verify
        (PSK, or certificate and signature) decide among them."""
        ...

    def fragmentation(self, peer: Addr) -> FragmentationConfig | None:
        """Whether our IKE_SA_INIT answer to this address announces fragmentation support, and with
        which settings the SA then fragments and reassembles; None: it does not."""
        ...

    def announce(self, peer: Addr) -> Authenticator | None:
        """The certificate credentials to announce in our IKE_SA_INIT answer to this address (CERTREQ,
        SIGNATURE_HASH_ALGORITHMS) when a certificate peer may be the one calling; None: PSK peers only."""
        ...

    def select_child(
        self, sa: Engine, tsi: list[TrafficSelector], tsr: list[TrafficSelector]
    ) -> ChildSaConfig | None: ...

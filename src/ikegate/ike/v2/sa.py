"""The IKEv2 IKE SA state machine (RFC 7296), sans-I/O.

Modelled on aioquic's ``QuicConnection``: bytes and time go in through :meth:`IkeSa.receive_datagram`
and :meth:`IkeSa.handle_timer`, commands through :meth:`initiate`, :meth:`create_child`,
:meth:`rekey_child`, :meth:`rekey_ike`, :meth:`delete_child` and :meth:`delete`; datagrams, the next
deadline and events come out of :meth:`datagrams_to_send`, :meth:`get_timer` and :meth:`next_event`.
There is no socket, clock or logger in here, so loss, retransmission and lifetimes are tested in memory
by stepping ``now``.

The engine is written in layers, each a class in its own module: what every engine shares
(``ike/core/base.py``: peer, Child SAs, counters, outbox, request window, lifetimes), then the protected
exchanges (``exchange.py``: generations, message IDs, the answer cache), the Child SAs (``children.py``:
CREATE_CHILD_SA, Child SA deletes) and here the IKE SA itself (IKE_SA_INIT, IKE_AUTH, IKE SA rekey,
DPD, delete). States move only through ``states.py``'s table.

Design choices worth knowing:

* Our requests are serialised: one outstanding request at a time (window size 1), later ones wait in a
  task queue and are built when their turn comes (so they see the state of that moment).
* An IKE SA rekey swaps keys and SPIs *in place* on the same object (a new "generation"); the old one
  retires until the old SA's Delete has been exchanged. Child SAs stay attached to the object.
* A local delete reports the SA as gone at once (the SA database and the policy react immediately), and
  the Delete exchange then finishes in the background; :attr:`finished` tells the owner when to drop it.
* Rekey collisions are resolved as RFC 7296 §2.8.1/§2.8.2 say: both exchanges complete, and the SA
  created by the exchange holding the lowest of the four nonces is redundant and deleted by its
  initiator (who leaves the replaced SA to the other side). TEMPORARY_FAILURE is kept for what §2.25
  keeps it for: rekeying a pair that is being deleted or was already replaced, and Child SA work while
  an IKE SA rekey is under way.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import struct
from collections.abc import Callable

from ikegate.ike.core.auth import AuthFailure, PeerCredentials, authenticator_for
from ikegate.ike.core.child import ChildSa, ChildState, ChildTrigger
from ikegate.ike.core.config import Addr, IkeSaConfig, Mode
from ikegate.ike.core.lifetimes import jitter, soft_lifetime
from ikegate.ike.core.negotiated import Chosen
from ikegate.ike.crypto import (
    CryptoError,
    DhKey,
    IkeKeys,
    UnsupportedTransform,
    derive_ike_keys,
    dh_group,
    integ_alg,
    prf_alg,
    rekey_skeyseed,
    signed_octets,
    skeyseed,
)
from ikegate.ike.events import (
    DeleteReason,
    IkeSaDeleted,
    IkeSaEstablished,
    IkeSaRekeyed,
    InitialContact,
    NegotiationFailed,
)
from ikegate.ike.v2 import fragments
from ikegate.ike.v2 import proposals as props
from ikegate.ike.v2.certs import (
    cert_payloads,
    certificates_of,
    certreq_of,
    certreq_payloads,
    hash_algorithms_of,
    hash_algorithms_payloads,
)
from ikegate.ike.v2.children import ChildExchanges
from ikegate.ike.v2.exchange import _FLAG_I, _FLAG_R, NONCE_SIZE, _Fail, _Gen, _Request, answer_ke
from ikegate.ike.v2.protect import SkContext, seal
from ikegate.ike.v2.states import State, Trigger
from ikegate.ike.wire.registry import (
    ExchangeType,
    NotifyType,
    ProtocolId,
)
from ikegate.ike.wire.v2 import (
    AUTH,
    KE,
    SA,
    Delete,
    Header,
    IDi,
    IDr,
    Message,
    Nonce,
    Notify,
    ParseError,
    Payload,
    TSi,
    TSr,
    decode_message,
    encode_message,
)

#: RFC 3948 §4: a NAT keepalive (one 0xFF byte) every 20 s keeps the NAT mapping alive.
KEEPALIVE_INTERVAL = 20.0
KEEPALIVE = b"\xff"
MAX_INVALID_KE_RETRIES = 3
_NATD_SRC = int(NotifyType.NAT_DETECTION_SOURCE_IP)  # plain ints: compared for every Notify received
_NATD_DST = int(NotifyType.NAT_DETECTION_DESTINATION_IP)


ID_TEXT = {1: "IP", 2: "FQDN", 3: "USER-FQDN", 5: "IP"}


@functools.lru_cache(maxsize=4096)
def _packed(ip: str) -> bytes:
    """Address text to bytes; cached because the same few peers come back on every message."""
    return ipaddress.ip_address(ip).packed


def natd_hash(spi_i: bytes, spi_r: bytes, addr: Addr) -> bytes:
    """NAT_DETECTION_*_IP data: SHA-1(SPIi | SPIr | IP | port) (RFC 7296 §2.23)."""
    return hashlib.sha1(spi_i + spi_r + _packed(addr[0]) + struct.pack("!H", addr[1])).digest()


def id_payload_for(addr: str) -> tuple[int, bytes]:
    """The ID_IPV4_ADDR / ID_IPV6_ADDR identity of an address."""
    ip = ipaddress.ip_address(addr)
    return (1 if ip.version == 4 else 5, ip.packed)


class IkeSa(ChildExchanges):
    """One IKEv2 IKE SA with its Child SAs."""

    BAD_INPUT = (CryptoError, ParseError, UnsupportedTransform, ValueError)

    # Slots: a gateway holds tens of thousands of these; per-instance dicts would double their size.
    __slots__ = (
        "_dh",
        "_first_child_spi",
        "_ike_collision",
        "_ike_rekey",
        "_init_payloads",
        "_init_request",
        "_init_response",
        "_invalid_ke_retries",
        "_last_sent",
        "_ni",
        "_nr",
        "_peer_certreq",
        "_peer_hashes",
        "_spi_i",
        "_spi_r",
        "nat_fake",
        "nat_local",
        "nat_remote",
    )

    def _setup(self, now: float) -> None:
        self.state = State.NEW
        self.nat_local = False
        self.nat_remote = False
        #: Encapsulation forced without a NAT (``force_encap`` met a peer that does NAT detection): ESP goes
        #: in UDP, but no keepalives are due since no NAT mapping needs refreshing.
        self.nat_fake = False
        self._gen: _Gen | None = None
        self._retiring: list[_Gen] = []
        #: Our IKE SA rekey in flight (its nonce), and the generation a crossing rekey by the peer made
        #: meanwhile with that exchange's lowest nonce (RFC 7296 §2.8.2): our answer decides between them.
        self._ike_rekey: bytes | None = None
        self._ike_collision: tuple[_Gen, bytes] | None = None
        #: Child SAs whose Delete is on its way, by the SPI the peer names them with (our outbound one).
        self._closing: dict[int, ChildSa] = {}
        self._spi_i = self._new_ike_spi() if self.initiator else b""
        self._spi_r = b"" if self.initiator else self._new_ike_spi()
        self._ni = b""
        self._nr = b""
        self._dh: DhKey | None = None
        self._init_request = b""
        self._init_response = b""
        self._init_payloads: list[Payload] = []
        self._init_req: _Request | None = None
        self._invalid_ke_retries = 0
        self._first_child_spi = 0
        #: What the peer's IKE_SA_INIT announced for signatures: RFC 7427 hashes, CERTREQ CA hashes.
        self._peer_hashes: list[int] | None = None
        self._peer_certreq = b""
        self._frag = None
        self._after_answer: Callable[[float], None] | None = None
        self._last_sent = now

    # ------------------------------------------------------------------ public properties

    @property
    def version(self) -> int:
        return 2

    @property
    def is_deleting(self) -> bool:
        """Our Delete of the IKE SA awaits its answer."""
        return self.state is State.DELETING

    @property
    def untouched(self) -> bool:
        return self.state is State.NEW

    @property
    def spi_i(self) -> bytes:
        return self._gen.spi_i if self._gen else self._spi_i

    @property
    def spi_r(self) -> bytes:
        return self._gen.spi_r if self._gen else self._spi_r

    @property
    def local_spis(self) -> list[bytes]:
        """Every SPI of ours that may still address this object (current and retiring generations)."""
        gens = ([self._gen] if self._gen else []) + self._retiring
        if gens:
            return [g.local_spi for g in gens]
        return [self._spi_i if self.initiator else self._spi_r]

    @property
    def chosen(self) -> Chosen | None:
        return self._gen.chosen if self._gen else None

    @property
    def is_initiator(self) -> bool:
        """Initiator of the current generation: what USG's ST flag shows."""
        return self._gen.we_init if self._gen else self.initiator

    @property
    def finished(self) -> bool:
        """True once nothing more will be sent or accepted: the owner may forget this object."""
        return self.state is State.DEAD

    @property
    def established(self) -> bool:
        return self.state is State.ESTABLISHED

    @property
    def udp_encap(self) -> bool:
        return self.nat_local or self.nat_remote or self.nat_fake

    def current_keys(self) -> tuple[bytes, bytes, IkeKeys, Chosen] | None:
        """SPIs, keys and algorithms of the current generation, for an operator's key log only (the
        controller turns them into Wireshark records; nothing else may read keys out of an engine)."""
        gen = self._gen
        return None if gen is None else (gen.spi_i, gen.spi_r, gen.keys, gen.chosen)

    # ------------------------------------------------------------------ sans-I/O API

    def get_timer(self) -> float | None:
        times: list[float] = []
        for req in self._requests():
            times.append(req.deadline)
        if self._frag is not None:
            times += [t for g in self._gens() if g.frags is not None and (t := g.frags.next_deadline()) is not None]
        for t in (self._deadline, self._rekey_at, self._expire_at):
            if t is not None:
                times.append(t)
        if self.nat_local and self.state is State.ESTABLISHED:
            times.append(self._last_sent + KEEPALIVE_INTERVAL)
        if self.state is State.ESTABLISHED:
            if (dpd := self._dpd_due()) is not None:
                times.append(dpd)
            times += self._child_rekey_times()
            times += [child.expire_at for child in self.children.values()]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        for req in self._requests():
            if req.deadline <= now:
                self._retransmit(req, now)
        if self._frag is not None:
            for g in self._gens():
                if g.frags is not None:
                    g.frags.expire(now)
        if self.state is State.DEAD:
            return
        if self._deadline is not None and now >= self._deadline:
            self._deadline = None
            if self.state in (State.INIT_SENT, State.AUTH_SENT, State.INIT_DONE, State.NEW):
                self._fail(now, 0, "negotiation timed out")
                return
        if self.state is not State.ESTABLISHED:
            return
        if not self._ike_lifetimes(now):
            return
        self._schedule_rekeys(now)
        for child in list(self.children.values()):
            if now >= child.expire_at and child.state is not ChildState.DELETING:
                self.delete_child(child, now, DeleteReason.PHASE2_HARD_EXPIRY)
        if (dpd := self._dpd_due()) is not None and now >= dpd:
            self.liveness_check(now)
        if self.nat_local and now >= self._last_sent + KEEPALIVE_INTERVAL:
            self._last_sent = now
            self._outbox.send(KEEPALIVE, self.local, self.peer)  # we are behind a NAT: keep it open

    def _receive(self, data: bytes, addr: Addr, now: float, local: Addr | None) -> None:
        msg = decode_message(data)
        if msg.header.major != 2:
            self.stats.dropped += 1
        elif msg.header.exchange == ExchangeType.IKE_SA_INIT:
            self._on_init(msg, data, addr, now, local)
        else:
            self._on_protected(msg, data, addr, now, local)

    # ------------------------------------------------------------------ commands

    def _start(self, now: float) -> None:
        """IKE_SA_INIT; the first Child SA is negotiated inside IKE_AUTH."""
        assert self.config is not None
        group = self.config.proposals[0].dh[0]
        self._start_init(now, group, cookie=None)

    def rekey_ike(self, now: float) -> None:
        gen = self._gen
        # If the peer rekeys first, this generation is gone by the time the task runs: nothing to do.
        self._queue(lambda t: self._send_rekey_ike(t) if self._gen is gen else None, now)

    def liveness_check(self, now: float) -> None:
        """An empty INFORMATIONAL request (DPD); an unanswered one kills the SA with ``dpd timeout``."""
        self._queue(self._send_liveness, now)

    @property
    def awaits_outbound(self) -> bool:
        """On-demand DPD with nothing sent since the peer was last heard: only the next ESP packet out
        can make a probe due, so the owner should tell us about it (the engine has no timer for it)."""
        cfg = self.config
        return (self.state is State.ESTABLISHED and cfg is not None and bool(cfg.dpd_interval)
                and cfg.dpd_on_demand and not self._sent_since_heard())

    def _dpd_due(self) -> float | None:
        """When the next DPD probe is due: after ``dpd_interval`` of silence from the peer, and for
        on-demand DPD only if we sent ESP since we last heard from it. None while another exchange is
        outstanding: its own retransmissions detect a dead peer."""
        cfg = self.config
        if cfg is None or not cfg.dpd_interval or self.state is not State.ESTABLISHED or self._busy():
            return None
        if cfg.dpd_on_demand and not self._sent_since_heard():
            return None
        return self.last_received + cfg.dpd_interval

    def _send_liveness(self, now: float) -> None:
        self._send_request(ExchangeType.INFORMATIONAL, [], lambda p, n: None, None, now)
        cfg, gen = self.config, self._gen
        if cfg and cfg.dpd_retransmit and cfg.dpd_retries and gen is not None and gen.req is not None:
            # The DPD schedule instead of the exponential one: dpd_retries sends, dpd_retransmit apart.
            gen.req.interval = cfg.dpd_retransmit
            gen.req.deadline = now + cfg.dpd_retransmit
            gen.req.max_tries = cfg.dpd_retries - 1

    def delete(self, now: float, reason: DeleteReason = DeleteReason.MANUAL) -> None:
        """Report the IKE SA and its children gone now, then send the Delete and wait for its answer."""
        if self.state in (State.DELETING, State.DEAD):
            return
        self._move(Trigger.DELETE)
        self.delete_reason = reason
        self._outbox.report(IkeSaDeleted(self, reason))
        for child in self.children.values():
            child.move(ChildTrigger.DROP)
        self._window.clear()
        if self._gen is None:
            # Nothing protected exists yet: nobody to tell.
            self._finish()
            return
        if self._gen.req is not None:
            # Replace the outstanding request: the peer will see our Delete with the next message ID.
            self._gen.req = None
        self._send_request(ExchangeType.INFORMATIONAL, [Delete(ProtocolId.IKE, [])],
                           lambda p, n: self._finish(), lambda n: self._finish(), now, max_tries=3)

    # ------------------------------------------------------------------ IKE_SA_INIT

    def _start_init(self, now: float, group: int, cookie: bytes | None) -> None:
        assert self.config is not None
        self._move(Trigger.INITIATE)
        if self._dh is None or self._dh.group.id != group:
            self._dh = dh_group(group).generate()
        if not self._ni:
            self._ni = self._rng(NONCE_SIZE)
        payloads: list[Payload] = []
        if cookie is not None:
            payloads.append(Notify(NotifyType.COOKIE, data=cookie))
        payloads += [
            props.ike_sa_payload(self.config.proposals, dh_first=group),
            KE(group, self._dh.public),
            Nonce(self._ni),
        ]
        if self.config.nat_traversal:
            payloads += [
                Notify(NotifyType.NAT_DETECTION_SOURCE_IP, data=self._natd_source(self._spi_i, bytes(8))),
                Notify(NotifyType.NAT_DETECTION_DESTINATION_IP, data=natd_hash(self._spi_i, bytes(8), self.peer)),
            ]
        payloads += hash_algorithms_payloads(authenticator_for(self.config).hash_algorithms())
        if self.config.fragmentation is not None and self.config.fragmentation.enabled:
            payloads.append(fragments.supported_notify())
        header = Header(self._spi_i, bytes(8), 0, ExchangeType.IKE_SA_INIT, _FLAG_I, 0)
        self._init_request = encode_message(header, payloads)
        self._init_req = self._window.arm(_Request(
            self._init_request, lambda n: self._fail(n, 0, "no answer to IKE_SA_INIT"),
            exchange=ExchangeType.IKE_SA_INIT, mid=0, on_response=lambda p, n: None), now, self.config)
        self._emit(self._init_request)

    def _on_init(self, msg: Message, data: bytes, addr: Addr, now: float, local: Addr | None) -> None:
        h = msg.header
        if h.is_response:
            if not self.initiator or self.state is not State.INIT_SENT or h.spi_i != self._spi_i:
                self.stats.dropped += 1
                return
            self.stats.messages_in += 1
            self._on_init_response(msg, data, now)
        else:
            if self.initiator:
                self.stats.dropped += 1
                return
            if self.state is State.NEW:
                self.stats.messages_in += 1
                self._bind(addr, local)
                self._on_init_request(msg, data, now)
            elif data == self._init_request and self._init_response:
                self._emit(self._init_response)  # a retransmitted request: resend the same answer
            else:
                self.stats.dropped += 1

    def _on_init_request(self, msg: Message, data: bytes, now: float) -> None:
        assert self.policy is not None
        h = msg.header
        self._spi_i = h.spi_i
        self._deadline = now + 30.0
        sa, ke, nonce = msg.get(SA), msg.get(KE), msg.get(Nonce)
        if sa is None or ke is None or nonce is None or not 16 <= len(nonce.data) <= 256:
            self._answer_init_error(h, NotifyType.INVALID_SYNTAX, b"", now)
            return
        chosen = props.choose_ike(sa, self.policy.ike_proposals(self.peer))
        if chosen is None:
            self._answer_init_error(h, NotifyType.NO_PROPOSAL_CHOSEN, b"", now,
                                    f"no acceptable IKE proposal; received proposals: {props.offered_text(sa)}")
            return
        if chosen.dh != ke.group:
            assert chosen.dh is not None
            self._answer_init_error(h, NotifyType.INVALID_KE_PAYLOAD, struct.pack("!H", chosen.dh), now)
            return
        assert chosen.dh is not None
        self._dh = dh_group(chosen.dh).generate()
        try:
            g_ir = self._dh.shared(ke.data)
        except CryptoError:
            self._answer_init_error(h, NotifyType.INVALID_SYNTAX, b"", now)
            return
        self._ni = nonce.data
        self._nr = self._rng(NONCE_SIZE)
        self._init_request = data[: h.length]
        natd = self._check_natd(msg, h.spi_i, bytes(8))
        payloads: list[Payload] = [
            SA([chosen.to_proposal(ProtocolId.IKE, b"")]),
            KE(chosen.dh, self._dh.public),
            Nonce(self._nr),
        ]
        if natd:
            payloads += [
                Notify(NotifyType.NAT_DETECTION_SOURCE_IP, data=self._natd_source(h.spi_i, self._spi_r)),
                Notify(NotifyType.NAT_DETECTION_DESTINATION_IP, data=natd_hash(h.spi_i, self._spi_r, self.peer)),
            ]
        self._peer_hashes = hash_algorithms_of(msg.payloads)
        announced = self.policy.announce(self.peer)
        if announced is not None:
            # A certificate peer may be calling: ask for certificates of our CAs (§3.7) and say which
            # hashes we sign and verify with (RFC 7427 §4).
            payloads += certreq_payloads(announced.certreq())
            payloads += hash_algorithms_payloads(announced.hash_algorithms())
        frag = self.policy.fragmentation(self.peer)
        if frag is not None and frag.enabled and fragments.announced(msg.payloads):
            payloads.append(fragments.supported_notify())  # §2.3: only in answer to the initiator's
            self._frag = frag
        header = Header(h.spi_i, self._spi_r, 0, ExchangeType.IKE_SA_INIT, _FLAG_R, 0)
        self._init_response = encode_message(header, payloads)
        self._install_gen(chosen, g_ir, we_init=False, seed=None)
        self._move(Trigger.INIT_REQUEST)
        self._emit(self._init_response)

    def _answer_init_error(self, h: Header, notify: int, data: bytes, now: float, detail: str = "") -> None:
        """Stateless refusal of an IKE_SA_INIT request (the responder SPI stays zero)."""
        header = Header(h.spi_i, bytes(8), 0, ExchangeType.IKE_SA_INIT, _FLAG_R, 0)
        self._emit(encode_message(header, [Notify(notify, data=data)]))
        self._fail(now, notify, f"refused IKE_SA_INIT: {detail or NotifyType.text(notify)}")

    def _on_init_response(self, msg: Message, data: bytes, now: float) -> None:
        assert self.config is not None
        h = msg.header
        notifies = msg.notifies()
        for n in notifies:
            if n.notify_type == NotifyType.COOKIE:
                self._start_init(now, self._dh.group.id if self._dh else self.config.proposals[0].dh[0], n.data)
                return
            if n.notify_type == NotifyType.INVALID_KE_PAYLOAD and len(n.data) == 2:
                group = struct.unpack("!H", n.data)[0]
                offered = {g for p in self.config.proposals for g in p.dh}
                if group in offered and self._invalid_ke_retries < MAX_INVALID_KE_RETRIES:
                    self._invalid_ke_retries += 1
                    self._start_init(now, group, None)
                    return
                self._fail(now, NotifyType.INVALID_KE_PAYLOAD, f"peer wants unoffered group {group}")
                return
            if NotifyType.is_error(n.notify_type):
                self._fail(now, n.notify_type, f"peer refused IKE_SA_INIT: {NotifyType.text(n.notify_type)}")
                return
        sa, ke, nonce = msg.get(SA), msg.get(KE), msg.get(Nonce)
        if sa is None or ke is None or nonce is None or h.spi_r == bytes(8):
            self._fail(now, NotifyType.INVALID_SYNTAX, "incomplete IKE_SA_INIT response")
            return
        chosen = props.choose_ike(sa, self.config.proposals) if props.is_single(sa) else None
        if chosen is None or self._dh is None or chosen.dh != ke.group or ke.group != self._dh.group.id:
            self._fail(now, NotifyType.NO_PROPOSAL_CHOSEN, "responder chose a proposal we did not offer; "
                       f"received proposals: {props.offered_text(sa)}")
            return
        g_ir = self._dh.shared(ke.data)
        self._init_req = None
        self._spi_r = h.spi_r
        self._nr = nonce.data
        self._init_response = data[: h.length]
        self._peer_hashes = hash_algorithms_of(msg.payloads)
        self._peer_certreq = certreq_of(msg.payloads)
        frag = self.config.fragmentation
        if frag is not None and frag.enabled and fragments.announced(msg.payloads):
            self._frag = frag
        self._check_natd(msg, self._spi_i, h.spi_r)
        if self.udp_encap:
            self._float(self.config.natt_port)
        self._install_gen(chosen, g_ir, we_init=True, seed=None)
        self._move(Trigger.INIT_RESPONSE)
        self._send_auth(now)

    def _check_natd(self, msg: Message, spi_i: bytes, spi_r: bytes) -> bool:
        """Compare the peer's NAT detection hashes with what we see; True if the peer sent any."""
        src: list[bytes] = []
        dst: list[bytes] = []
        for n in msg.payloads:
            if type(n) is Notify:
                if n.notify_type == _NATD_SRC:
                    src.append(n.data)
                elif n.notify_type == _NATD_DST:
                    dst.append(n.data)
        if not src and not dst:
            return False
        if self.config is not None and not self.config.nat_traversal:
            return True
        self.nat_remote = natd_hash(spi_i, spi_r, self.peer) not in src
        self.nat_local = bool(dst) and natd_hash(spi_i, spi_r, self.local) not in dst
        self.nat_fake = self.force_encap
        return True

    def _natd_source(self, spi_i: bytes, spi_r: bytes) -> bytes:
        """Our NAT_DETECTION_SOURCE_IP data: the true hash, or when encapsulation is forced one that cannot
        match (a hash over the zero address and port), so that the peer floats to UDP encapsulation."""
        if self.force_encap:
            return natd_hash(spi_i, spi_r, ("0.0.0.0", 0))
        return natd_hash(spi_i, spi_r, self.local)

    def _float(self, natt_port: int) -> None:
        self.local = (self.local[0], natt_port)
        self.peer = (self.peer[0], natt_port)

    def _install_gen(self, chosen: Chosen, g_ir: bytes, *, we_init: bool, seed: bytes | None,
                     spis: tuple[bytes, bytes] | None = None, nonces: tuple[bytes, bytes] | None = None) -> _Gen:
        assert chosen.prf is not None
        prf = prf_alg(chosen.prf)
        encr = chosen.encr_alg()
        integ = integ_alg(chosen.integ) if chosen.integ is not None else None
        ni, nr = nonces or (self._ni, self._nr)
        spi_i, spi_r = spis or (self._spi_i, self._spi_r)
        first = seed is None  # keyed from IKE_SA_INIT, not from a rekey's CREATE_CHILD_SA
        if seed is None:
            seed = skeyseed(prf, ni, nr, g_ir)
        keys = derive_ike_keys(prf, encr, integ, seed, ni, nr, spi_i, spi_r)
        ctx_i = SkContext.build(encr, integ, keys.sk_ei, keys.sk_ai)
        ctx_r = SkContext.build(encr, integ, keys.sk_er, keys.sk_ar)
        gen = _Gen(spi_i, spi_r, we_init, prf, keys,
                   out=ctx_i if we_init else ctx_r, inp=ctx_r if we_init else ctx_i, chosen=chosen,
                   frags=fragments.Reassembler(self._frag.limits) if self._frag is not None else None)
        if first:
            # The IKE_SA_INIT exchange used message ID 0 of the initiator's request window (RFC 7296
            # §2.2): its next request, IKE_AUTH, is ID 1, and that is what the responder must expect. The
            # responder's own request window is untouched and starts at 0. A rekeyed IKE SA "MUST reset
            # its message counters to 0" (§2.18) in both windows: the dataclass defaults.
            gen.next_mid, gen.peer_mid = (1, 0) if we_init else (0, 1)
            self._gen = gen
        return gen

    # ------------------------------------------------------------------ IKE_AUTH

    def _send_notice(self, gen: _Gen, notify: Notify) -> None:
        """A one-shot INFORMATIONAL request nobody waits for (an error notification before we give up)."""
        header = Header(gen.spi_i, gen.spi_r, 0, ExchangeType.INFORMATIONAL, _FLAG_I if gen.we_init else 0,
                        gen.next_mid)
        gen.next_mid += 1
        self._emit(seal(gen.out, header, [notify], self._rng))

    def _id_payload(self) -> tuple[int, bytes]:
        assert self.config is not None
        return self.config.local_id

    def _send_auth(self, now: float) -> None:
        assert self.config is not None and self._gen is not None
        gen = self._gen
        id_type, id_data = self._id_payload()
        idi = IDi(id_type, id_data)
        ours = authenticator_for(self.config)
        try:
            method, auth = ours.sign(gen.prf, signed_octets(self._init_request, self._nr, gen.prf, gen.keys.sk_pi,
                                                            idi.body()), self._peer_hashes)
        except AuthFailure as exc:
            self._fail(now, 0, str(exc), exc.kind)
            return
        # RFC 7296 §1.2 order: IDi, [CERT+], [N(INITIAL_CONTACT)], [CERTREQ+], [IDr], AUTH, SA, TSi, TSr.
        payloads: list[Payload] = [idi, *cert_payloads(ours.certificates(self._peer_certreq))]
        if self.initial_contact:
            payloads.append(Notify(NotifyType.INITIAL_CONTACT))
        payloads += certreq_payloads(ours.certreq())
        if self.config.remote_id is not None:
            payloads.append(IDr(*self.config.remote_id))
        payloads.append(AUTH(method, auth))
        child = self._first_child
        if child is not None:
            self._first_child_spi = self._alloc_spi()
            payloads += [
                props.esp_sa_payload(child.proposals, struct.pack("!I", self._first_child_spi), with_dh=False),
                TSi(list(child.local_ts)),
                TSr(list(child.remote_ts)),
            ]
            if child.mode is Mode.TRANSPORT:
                payloads.append(Notify(NotifyType.USE_TRANSPORT_MODE))
        self._send_request(ExchangeType.IKE_AUTH, payloads, self._on_auth_response,
                           lambda n: self._fail(n, 0, "no answer to IKE_AUTH"), now)

    def _on_auth_response(self, payloads: list[Payload], now: float) -> None:
        assert self.config is not None and self._gen is not None
        gen = self._gen
        notifies = [p for p in payloads if isinstance(p, Notify)]
        for n in notifies:
            if n.notify_type in (NotifyType.AUTHENTICATION_FAILED, NotifyType.INVALID_SYNTAX,
                                 NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD):
                self._fail(now, n.notify_type, f"peer refused IKE_AUTH: {NotifyType.text(n.notify_type)}")
                return
        idr = next((p for p in payloads if isinstance(p, IDr)), None)
        auth = next((p for p in payloads if isinstance(p, AUTH)), None)
        if idr is None or auth is None:
            self._fail(now, NotifyType.AUTHENTICATION_FAILED, "IKE_AUTH response without IDr/AUTH")
            return
        ours = authenticator_for(self.config)
        # A certificate's identity is checked against the certificate (remote-id included), not byte for byte.
        if (not ours.uses_certificates and self.config.remote_id is not None
                and (idr.id_type, idr.data) != self.config.remote_id):
            self._fail(now, NotifyType.AUTHENTICATION_FAILED, "unexpected responder identity")
            return
        octets = signed_octets(self._init_response, self._ni, gen.prf, gen.keys.sk_pr, idr.body())
        try:
            verdict = ours.verify(gen.prf, octets, auth.method, auth.data,
                                  PeerCredentials(idr.id_type, idr.data, certificates_of(payloads)))
        except AuthFailure as exc:
            self.stats.auth_failures += 1
            # §2.21.2: tell the responder, in a separate INFORMATIONAL that expects no answer.
            self._send_notice(gen, Notify(NotifyType.AUTHENTICATION_FAILED))
            self._fail(now, NotifyType.AUTHENTICATION_FAILED, str(exc), exc.kind)
            return
        self.peer_auth = verdict
        self.peer_id = (idr.id_type, idr.data)
        ni, nr = self._ni, self._nr  # the first Child SA's KEYMAT needs them; _established drops them
        self._established(now)
        child = self._first_child
        if child is None:
            return
        error = next((n for n in notifies if NotifyType.is_error(n.notify_type)), None)
        if error is not None:
            self._outbox.report(NegotiationFailed(self, error.notify_type,
                                                  f"Child SA refused: {NotifyType.text(error.notify_type)}",
                                                  child_only=True))
            return
        try:
            self._complete_child(child, payloads, self._first_child_spi, None, ni, nr, None, now)
        except _Fail as exc:
            self._outbox.report(NegotiationFailed(self, exc.notify, str(exc), child_only=True))

    def _on_auth_request(self, payloads: list[Payload], now: float) -> list[Payload]:
        assert self.policy is not None and self._gen is not None
        gen = self._gen
        idi = next((p for p in payloads if isinstance(p, IDi)), None)
        auth = next((p for p in payloads if isinstance(p, AUTH)), None)
        if idi is None or auth is None:
            raise _Fail(NotifyType.INVALID_SYNTAX, detail="IKE_AUTH without IDi/AUTH")
        config: IkeSaConfig | None = None
        octets = signed_octets(self._init_request, self._nr, gen.prf, gen.keys.sk_pi, idi.body())
        presented = PeerCredentials(idi.id_type, idi.data, certificates_of(payloads))
        refusal: AuthFailure | None = None
        # Several peers (a template's branches, PSK and certificate peers) may match: the credentials that
        # verify pick the peer. The reason kept is the first candidate's, unless it only says the peer
        # used the other kind of method and a later candidate of that kind says more.
        for candidate in self.policy.authenticate(self.peer, idi.id_type, idi.data):
            try:
                self.peer_auth = authenticator_for(candidate).verify(gen.prf, octets, auth.method, auth.data, presented)
            except AuthFailure as exc:
                if refusal is None or refusal.kind == "method-not-configured":
                    refusal = exc
                continue
            config = candidate
            break
        if config is None:
            self.stats.auth_failures += 1
            if refusal is None:
                raise _Fail.auth("no IKE peer is configured for this identity and address", "no-peer")
            raise _Fail.auth(str(refusal), refusal.kind)
        self.config = config
        self.peer_id = (idi.id_type, idi.data)
        idr = IDr(*config.local_id)
        ours = authenticator_for(config)
        octets = signed_octets(self._init_response, self._ni, gen.prf, gen.keys.sk_pr, idr.body())
        try:
            method, data = ours.sign(gen.prf, octets, self._peer_hashes)
        except AuthFailure as exc:
            raise _Fail.auth(str(exc), exc.kind) from None
        out: list[Payload] = [idr, *cert_payloads(ours.certificates(certreq_of(payloads))), AUTH(method, data)]
        if any(isinstance(p, Notify) and p.notify_type == NotifyType.INITIAL_CONTACT for p in payloads):
            self._outbox.report(InitialContact(self))
        self._move(Trigger.AUTH_REQUEST)
        ni, nr = self._ni, self._nr  # the first Child SA's KEYMAT needs them; _established drops them
        self._established(now)
        if any(isinstance(p, SA) for p in payloads):
            try:
                out += self._answer_child(payloads, None, ni, nr, now, in_auth=True)
            except _Fail as exc:
                out.append(Notify(exc.notify, data=exc.data))
                self._outbox.report(NegotiationFailed(self, exc.notify, str(exc), child_only=True))
        return out

    def _established(self, now: float) -> None:
        assert self.config is not None
        if self.state is State.AUTH_SENT:
            self._move(Trigger.AUTH_RESPONSE)
        self.established_at = now
        self._deadline = None
        # AUTH is done: the IKE_SA_INIT messages and our DH key are no longer needed (memory per SA).
        self._init_request = self._init_response = b""
        self._init_payloads = []
        self._ni = self._nr = b""  # callers keep them for the first Child SA (rekeys bring their own nonces)
        if self._gen is not None:  # SK_pi/SK_pr only sign the AUTH payloads
            k = self._gen.keys
            self._gen.keys = IkeKeys(k.sk_d, k.sk_ai, k.sk_ar, k.sk_ei, k.sk_er, b"", b"")
        self._dh = None
        self._set_ike_lifetime(now)
        self._outbox.report(IkeSaEstablished(self))
        self._pump(now)

    def _set_ike_lifetime(self, now: float) -> None:
        assert self.config is not None
        life = self.config.lifetime
        self._expire_at = now + life
        # The initiator rekeys first; the responder only if the initiator has not (fewer collisions).
        self._rekey_at = now + soft_lifetime(life, self.is_initiator, self._rng)

    # ------------------------------------------------------------------ IKE SA rekey

    def _send_rekey_ike(self, now: float) -> None:
        assert self.config is not None and self._gen is not None
        if self.state is not State.ESTABLISHED:
            return
        old = self._gen
        group = old.chosen.dh
        assert group is not None
        dh = dh_group(group).generate()
        ni = self._rng(NONCE_SIZE)
        new_spi = self._new_ike_spi()
        payloads: list[Payload] = [props.ike_sa_payload(self.config.proposals, spi=new_spi, dh_first=group),
                                   Nonce(ni), KE(group, dh.public)]

        def on_response(resp: list[Payload], t: float) -> None:
            self._ike_rekey = None
            theirs, self._ike_collision = self._ike_collision, None

            def failed(retry_in: float) -> None:
                if theirs is not None:
                    self._make_current(old, theirs[0], t)  # ours failed, but the peer's crossing rekey stands
                else:
                    self._rekey_at = t + retry_in

            if any(isinstance(n, Notify) and NotifyType.is_error(n.notify_type) for n in resp):
                failed(2.0 + jitter(self._rng, 3.0))  # refusal (busy peer): try again a bit later
                return
            sa = next((p for p in resp if isinstance(p, SA)), None)
            ke = next((p for p in resp if isinstance(p, KE)), None)
            nr = next((p.data for p in resp if isinstance(p, Nonce)), None)
            assert self.config is not None
            chosen = props.choose_ike(sa, self.config.proposals) if sa and props.is_single(sa) else None
            if chosen is None or ke is None or nr is None or chosen.dh != ke.group or len(chosen.spi) != 8:
                failed(10.0)
                return
            try:
                g_ir = dh.shared(ke.data) if ke.group == group else None
            except CryptoError:
                g_ir = None
            if g_ir is None:
                failed(10.0)
                return
            new = self._derive_gen(old, chosen, g_ir, ni, nr, (new_spi, chosen.spi), we_init=True)
            if theirs is not None and min(ni, nr) < theirs[1]:
                # §2.8.2: our exchange holds the lowest nonce: the SA we made is redundant and ours to delete;
                # the peer's survives and the peer deletes the old one.
                self._retiring.append(new)
                self._make_current(old, theirs[0], t)
                self._send_request_on(new, ExchangeType.INFORMATIONAL, [Delete(ProtocolId.IKE, [])],
                                      lambda p, n: self._retire(new), lambda n: self._retire(new), t, max_tries=3)
                return
            self._make_current(old, new, t)  # ours survives (alone, or it won): we delete the old SA
            old.req = None
            self._send_request_on(old, ExchangeType.INFORMATIONAL, [Delete(ProtocolId.IKE, [])],
                                  lambda p, n: self._retire(old), lambda n: self._retire(old), t, max_tries=3)

        self._send_request(ExchangeType.CREATE_CHILD_SA, payloads, on_response, None, now)
        self._ike_rekey = ni

    def _rekeying_ike(self) -> bool:
        return self._ike_rekey is not None

    def _answer_rekey_ike(self, payloads: list[Payload], now: float) -> list[Payload]:
        assert self.config is not None and self._gen is not None
        old = self._gen
        if old.req is not None and old.req.exchange == ExchangeType.CREATE_CHILD_SA and not self._rekeying_ike():
            # §2.25.2: our Child SA exchange under way would be keyed from an SK_d that is going away.
            raise _Fail(NotifyType.TEMPORARY_FAILURE, detail="Child SA exchange under way")
        sa = next((p for p in payloads if isinstance(p, SA)), None)
        ke = next((p for p in payloads if isinstance(p, KE)), None)
        nonce = next((p for p in payloads if isinstance(p, Nonce)), None)
        if sa is None or ke is None or nonce is None:
            raise _Fail(NotifyType.INVALID_SYNTAX, detail="IKE rekey request incomplete")
        chosen = props.choose_ike(sa, self.config.proposals)
        if chosen is None or len(chosen.spi) != 8:
            raise _Fail(NotifyType.NO_PROPOSAL_CHOSEN,
                        detail=f"no acceptable IKE proposal for rekey; received proposals: {props.offered_text(sa)}")
        assert chosen.dh is not None
        mine, g_ir = answer_ke(ke.group, chosen.dh, ke.data)
        nr = self._rng(NONCE_SIZE)
        new_spi = self._new_ike_spi()
        answer: list[Payload] = [SA([chosen.to_proposal(ProtocolId.IKE, new_spi)]), Nonce(nr),
                                 KE(chosen.dh, mine.public)]
        def after(t: float) -> None:
            # Switch after this answer is sealed under the old keys (see _on_request).
            new = self._derive_gen(old, chosen, g_ir, nonce.data, nr, (chosen.spi, new_spi), we_init=False)
            if self._rekeying_ike():
                # §2.8.2: our own rekey crosses this one; the answer to ours decides which SA survives.
                self._retiring.append(new)
                self._ike_collision = (new, min(nonce.data, nr))
            else:
                self._make_current(old, new, t)

        self._after_answer = after
        return answer

    def _derive_gen(self, old: _Gen, chosen: Chosen, g_ir: bytes, ni: bytes, nr: bytes,
                    spis: tuple[bytes, bytes], *, we_init: bool) -> _Gen:
        """The generation a rekey of ``old`` keyed (RFC 7296 §2.18), not yet in use."""
        seed = rekey_skeyseed(old.prf, old.keys.sk_d, g_ir, ni, nr)
        return self._install_gen(chosen, g_ir, we_init=we_init, seed=seed, spis=spis, nonces=(ni, nr))

    def _make_current(self, old: _Gen, new: _Gen, now: float) -> None:
        """``new`` replaces ``old``, which retires until its Delete has been exchanged."""
        if new in self._retiring:
            self._retiring.remove(new)
        self._gen = new
        if old not in self._retiring:
            self._retiring.append(old)
        self._set_ike_lifetime(now)
        self._outbox.report(IkeSaRekeyed(self, (old.spi_i, old.spi_r)))

    def _retire(self, gen: _Gen) -> None:
        if gen in self._retiring:
            self._retiring.remove(gen)
            gen.req = None
            if gen.frags is not None:
                gen.frags.clear()

    def _gens(self) -> list[_Gen]:
        return ([self._gen] if self._gen else []) + self._retiring

    @property
    def fragmentation(self) -> bool:
        """RFC 7383 fragmentation was negotiated (both ends announced it)."""
        return self._frag is not None

    def _on_informational(self, gen: _Gen, payloads: list[Payload], now: float
                          ) -> tuple[list[Payload], DeleteReason | None]:
        answer: list[Payload] = []
        for p in payloads:
            if not isinstance(p, Delete):
                continue
            if p.protocol == ProtocolId.IKE:
                return [], DeleteReason.PEER_REQUEST
            if p.protocol != ProtocolId.ESP:
                continue
            ours: list[bytes] = []
            for raw in p.spis:
                spi_out = struct.unpack("!I", raw)[0]
                child = next((c for c in self.children.values() if c.spi_out == spi_out), None)
                if child is None:
                    continue
                was = child.state
                reason = DeleteReason.REKEYED if was is ChildState.REKEYED else DeleteReason.PEER_REQUEST
                if was is not ChildState.DELETING:
                    ours.append(struct.pack("!I", child.spi_in))
                child.move(ChildTrigger.DELETE)
                self._drop_child(child, reason)
            if ours:
                answer.append(Delete(ProtocolId.ESP, ours))
        return answer, None

    def _peer_deleted(self, now: float, reason: DeleteReason) -> None:
        if self.state is not State.DELETING:  # a Delete crossing ours: already reported
            self.delete_reason = reason
            self._outbox.report(IkeSaDeleted(self, reason))
        self._finish()

    # ------------------------------------------------------------------ endings

    def _hard_expiry(self, now: float) -> None:
        self.delete(now, DeleteReason.PHASE1_HARD_EXPIRY)

    def _fail(self, now: float, notify: int, detail: str, kind: str = "") -> None:
        """A negotiation failed: report it, and the SA is gone."""
        if self.state is State.DEAD:
            return
        self._outbox.report(NegotiationFailed(self, notify, detail, auth_failure=kind))
        established = self.state is State.ESTABLISHED
        self._die(now, DeleteReason.NEGOTIATION_FAILED if not established else DeleteReason.DPD_TIMEOUT)

    def _die(self, now: float, reason: DeleteReason) -> None:
        """No answer (or a fatal refusal): the SA is gone without a Delete exchange."""
        if self.state is State.DEAD:
            return
        if self.state is not State.DELETING:
            self.delete_reason = reason
            self._outbox.report(IkeSaDeleted(self, reason))
        self._finish()

    def _finish(self) -> None:
        self._move(Trigger.DIE)
        self._window.clear()
        self._init_req = None
        if self._gen is not None:
            self._gen.req = None
        self._retiring.clear()
        self._deadline = self._rekey_at = self._expire_at = None



__all__ = ["ID_TEXT", "IkeSa", "State", "id_payload_for", "natd_hash"]

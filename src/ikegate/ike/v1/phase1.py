"""IKEv1 phase 1: Main Mode and Aggressive Mode with pre-shared keys or RSA/ECDSA signatures (the latter in
``certauth.py``), NAT-T detection, vendor IDs and the FRAGMENTATION extension (RFC 2409 §5, RFC 3947), and
the ISAKMP message sealing every exchange uses, for :class:`~ikegate.ike.v1.sa.IsakmpSa`.

:class:`Phase1Exchanges` is the engine's lowest layer; the Quick Mode layer and the ISAKMP SA above it
(informational, DPD, endings) are named here as abstract methods.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from ikegate.ike.core.auth import AuthFailure, Verdict, authenticator_for
from ikegate.ike.core.base import EngineBase
from ikegate.ike.core.child import ChildSa
from ikegate.ike.core.config import Addr, ChildSaConfig, IkeSaConfig
from ikegate.ike.core.errors import Refusal
from ikegate.ike.core.lifetimes import soft_lifetime
from ikegate.ike.core.window import Retransmission
from ikegate.ike.crypto import CryptoError, DhKey, dh_group
from ikegate.ike.events import (
    IkeSaEstablished,
    InitialContact,
)
from ikegate.ike.v1 import certauth
from ikegate.ike.v1 import crypto as c1
from ikegate.ike.v1 import fragments as v1frag
from ikegate.ike.v1 import proposals as p1props
from ikegate.ike.v1.options import ExchangeMode, V1Options
from ikegate.ike.v1.registry import (
    NATT_DRAFT_VIDS,
    VID_DPD,
    VID_NATT_DRAFT_02,
    VID_NATT_DRAFT_02N,
    VID_NATT_RFC3947,
    AuthMethod,
    ExchangeType,
    IdType,
    NotifyType,
    ProtocolId,
    vendor_name,
)
from ikegate.ike.v1.states import (
    EXPECTED,
    TIMEOUT_HINTS,
    TRANSITIONS,
    State,
    Trigger,
)
from ikegate.ike.v1.wire import (
    HEADER_LEN,
    KE,
    SA,
    Hash,
    Header,
    Identification,
    Message,
    NatD,
    Nonce,
    Notify,
    ParseError,
    Payload,
    VendorId,
    decode_chain,
    encode_header,
    encode_message,
    encode_payloads,
)

if TYPE_CHECKING:  # pragma: no cover
    from ikegate.ike.v1.quick import _Quick

_P = TypeVar("_P")
_ANY_METHOD = frozenset({int(AuthMethod.PRE_SHARED), int(AuthMethod.RSA_SIG), int(AuthMethod.ECDSA_256),
                         int(AuthMethod.ECDSA_384), int(AuthMethod.ECDSA_521)})
NONCE_SIZE = 32
ZERO_COOKIE = bytes(8)
REKEY_RETRY = 30.0


class _Fail(Refusal):
    """Inside message processing: refuse with this Notify; ``kind`` labels an authentication failure
    (``AuthFailure.kind``) for the metrics."""

    names = NotifyType

    def __init__(self, notify: int, detail: str = "", data: bytes = b"", kind: str = "") -> None:
        super().__init__(notify, detail, data)
        self.kind = kind


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
    auth_method: int = AuthMethod.PRE_SHARED  # the negotiated phase-1 Authentication Method
    peer_frag: bool = False  # the peer announced the FRAGMENTATION vendor ID (and we do fragmentation)
    frags: v1frag.Reassembler | None = None  # made on the first fragment received
    verdict: Verdict | None = None  # how a certificate peer authenticated (method, subject)

    @property
    def signing(self) -> bool:
        return self.auth_method != AuthMethod.PRE_SHARED

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


def natd_hash(suite: c1.Suite, cky_i: bytes, cky_r: bytes, addr: Addr) -> bytes:
    """NAT-D = HASH(CKY-I | CKY-R | IP | Port) with the negotiated hash (RFC 3947 §3.2)."""
    return suite.digest(cky_i + cky_r + ipaddress.ip_address(addr[0]).packed + struct.pack("!H", addr[1]))


def _addr_id(addr: str) -> tuple[int, bytes]:
    ip = ipaddress.ip_address(addr)
    return (IdType.ID_IPV4_ADDR if ip.version == 4 else IdType.ID_IPV6_ADDR, ip.packed)


def _first(payloads: list[Payload], kind: type[_P]) -> _P | None:
    return next((p for p in payloads if isinstance(p, kind)), None)


def _not_offered(sa: SA | None) -> str:
    """Why an initiator refuses the responder's answer, with what it answered."""
    return "responder chose a transform we did not offer; received proposals: " + (
        p1props.offered_text(sa) if sa is not None else "none")


class Phase1Exchanges(EngineBase):
    """Phase 1 of an ISAKMP SA and the message protection of every exchange under it."""

    options: V1Options
    _p1: _Phase1
    _next: _Phase1 | None  # our phase-1 rekey in progress
    _prev: _Phase1 | None  # the ISAKMP SA our phase-1 rekey replaced
    _prev_until: float | None
    _quicks: dict[int, _Quick]
    _info_mids: deque[int] | tuple[()]
    _dead: bool

    def _new_retrans(self, packet: bytes, now: float, on_timeout: Callable[[float], None]) -> Retransmission:
        return self._window.arm(Retransmission(packet, on_timeout), now, self.config)

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

    @staticmethod
    def _move(p: _Phase1, trigger: Trigger) -> None:
        """The only writer of a phase 1's ``state``; a move the table lacks is a :class:`ProtocolViolation`."""
        p.state = TRANSITIONS.move(p.state, trigger)

    def _vendor_ids(self, p: _Phase1, answer: bool) -> list[Payload]:
        out: list[Payload] = [VendorId(VID_DPD)]
        if self.options.fragmentation.enabled and (not answer or p.peer_frag):
            out.append(v1frag.vendor_id())  # a responder announces it only to an initiator that did
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
        p.peer_frag = p.peer_frag or (self.options.fragmentation.enabled and v1frag.peer_supports(payloads))
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
        ours = ("0.0.0.0", 0) if self.force_encap else self.local  # a hash that cannot match: see force_encap
        return [NatD(natd_hash(p.suite, p.cky_i, p.cky_r, self.peer), draft),
                NatD(natd_hash(p.suite, p.cky_i, p.cky_r, ours), draft)]

    def _check_natd(self, p: _Phase1, payloads: list[Payload]) -> None:
        """The peer's first NAT-D is what it believes our address is, the others are its own."""
        hashes = [n.data for n in payloads if isinstance(n, NatD)]
        if p.natt is None or p.suite is None or not hashes:
            return
        p.nat_local = self.force_encap or natd_hash(p.suite, p.cky_i, p.cky_r, self.local) != hashes[0]
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
        try:
            p.auth_method = certauth.method_of(cfg)
        except AuthFailure as exc:
            self.stats.auth_failures += 1
            self._p1_failed(p, now, 0, str(exc), str(exc.kind))
            return
        if self.options.mode is ExchangeMode.AGGRESSIVE:
            p.mode = ExchangeMode.AGGRESSIVE
            group = cfg.proposals[0].dh[0]
            sa = p1props.phase1_sa(cfg.proposals, cfg.lifetime, group, p.auth_method)
            p.sai_b = sa.body()
            p.dh = dh_group(group).generate()
            p.g_xi = p.dh.public
            p.ni = self._rng(NONCE_SIZE)
            payloads: list[Payload] = [sa, KE(p.g_xi), Nonce(p.ni), self._id_payload(cfg),
                                       *self._certreqs(p, cfg), *self._vendor_ids(p, False)]
            self._move(p, Trigger.START_AGGRESSIVE)
            exchange = ExchangeType.AGGRESSIVE
        else:
            sa = p1props.phase1_sa(cfg.proposals, cfg.lifetime, auth_method=p.auth_method)
            p.sai_b = sa.body()
            payloads = [sa, *self._vendor_ids(p, False)]
            self._move(p, Trigger.START_MAIN)
            exchange = ExchangeType.ID_PROT
        packet = encode_message(Header(p.cky_i, ZERO_COOKIE, 0, exchange, 0, 0), payloads)
        self._p1_send(p, packet, now, expect_answer=True)

    @staticmethod
    def _certreqs(p: _Phase1, cfg: IkeSaConfig) -> list[Payload]:
        return certauth.certreqs(cfg) if p.signing else []

    def _proof(self, p: _Phase1, cfg: IkeSaConfig, hash_value: bytes) -> list[Payload]:
        """HASH_I / HASH_R as a HASH payload (PSK) or our CERTs and a SIG over it (signatures)."""
        if not p.signing:
            return [Hash(hash_value)]
        try:
            return certauth.proof(cfg, hash_value)
        except AuthFailure as exc:
            self.stats.auth_failures += 1
            raise _Fail(NotifyType.AUTHENTICATION_FAILED, str(exc), kind=str(exc.kind)) from None

    def _check_proof(self, p: _Phase1, cfg: IkeSaConfig, payloads: list[Payload], peer_id: Identification,
                     hash_value: bytes, *, count: bool = True) -> None:
        """The peer's HASH (PSK) or CERT + SIG (signatures) over ``hash_value``; refuses otherwise (and
        counts the failure unless the caller tries several candidates)."""
        if not p.signing:
            auth = _first(payloads, Hash)
            if auth is None or not c1.compare(hash_value, auth.data):
                self.stats.auth_failures += count
                raise _Fail(NotifyType.AUTHENTICATION_FAILED, "HASH_R does not verify" if p.we_init
                            else "HASH_I does not verify", kind="bad-psk")
            return
        try:
            verdict = certauth.verify(cfg, p.auth_method, payloads, peer_id, hash_value)
        except AuthFailure as exc:
            self.stats.auth_failures += count
            raise _Fail(certauth.notify_for(exc), str(exc), kind=str(exc.kind)) from None
        p.verdict = verdict

    @staticmethod
    def _id_payload(cfg: IkeSaConfig) -> Identification:
        return Identification(cfg.local_id[0], cfg.local_id[1])

    def _emit(self, packet: bytes, route: tuple[Addr, Addr] | None = None) -> None:
        """Every datagram leaves here: a Main or Aggressive Mode message larger than the fragment budget
        goes as FRAGMENTATION fragments when the peer announced them (retransmissions too, the same
        pieces each time)."""
        p = self._p1 if packet[:8] == self._p1.cky_i else self._next
        if p is None or not p.peer_frag or packet[18] not in (ExchangeType.ID_PROT, ExchangeType.AGGRESSIVE):
            super()._emit(packet, route)
            return
        peer = route[1] if route is not None else self.peer
        budget = self.options.fragmentation.budget(ipaddress.ip_address(peer[0]).version, natt=peer[1] != 500)
        for piece in v1frag.fragment(packet, budget):
            super()._emit(piece, route)

    def _reassemble(self, p: _Phase1, msg: Message, now: float) -> bytes | None:
        """A received fragment: the whole message once its last piece is in, else None. Fragments of a
        peer that never announced them, and every bogus one, are counted and dropped."""
        if not self.options.fragmentation.enabled:
            self.stats.dropped += 1
            return None
        if p.frags is None:
            p.frags = v1frag.Reassembler(self.options.fragmentation.limits)
        before = p.frags.stats.dropped
        whole = p.frags.add(msg, now)
        self.stats.dropped += p.frags.stats.dropped - before
        return whole

    def _p1_send(self, p: _Phase1, packet: bytes, now: float, *, expect_answer: bool) -> None:
        p.last_out = packet
        p.req = self._new_retrans(packet, now, lambda t: self._p1_timeout(p, t)) if expect_answer else None
        self._emit(packet)

    def _p1_timeout(self, p: _Phase1, now: float) -> None:
        hint = TIMEOUT_HINTS.get(p.state)
        self._p1_failed(p, now, 0, hint or f"no answer in state {p.state.value}")

    def _p1_failed(self, p: _Phase1, now: float, notify: int, detail: str, kind: str = "") -> None:
        if p is self._next:
            self._next = None
            self._rekey_at = now + REKEY_RETRY  # the current ISAKMP SA carries on; try again later
            return
        if p is self._p1:
            self._fail(now, notify, detail, kind)

    def _refuse_p1(self, p: _Phase1, exchange: int, notify: int, detail: str, now: float, kind: str = "") -> None:
        """Informational with the error, then give up: protected when both ends surely hold the same
        phase-1 keys (signature authentication, whose keys depend on no credential, refused after
        MM5/MM6 or AM2/AM3 decrypted; strongSwan ignores an unprotected one then), else unprotected
        (with a PSK the peer may not share our keys)."""
        if p.signing and p.keys is not None and p.chain is not None and p.suite is not None:
            self._send_info(p, [Notify(notify, ProtocolId.ISAKMP, p.spi)])
        else:
            header = Header(p.cky_i, p.cky_r, 0, ExchangeType.INFORMATIONAL, 0, 0)
            self._emit(encode_message(header, [Notify(notify, ProtocolId.ISAKMP, p.spi)]))
            self.stats.notifies_sent += 1
        self._p1_failed(p, now, notify, detail, kind)

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
            self._refuse_p1(p, h.exchange, exc.notify, str(exc), now, exc.kind)

    def _plain(self, msg: Message) -> list[Payload]:
        if msg.encrypted is not None:
            raise _Fail(NotifyType.INVALID_FLAGS, "unexpected encryption")
        return msg.payloads

    def _choose(self, p: _Phase1, sa: SA | None, candidates: list[IkeSaConfig]) -> p1props.Phase1Choice:
        """The transform to accept, with an authentication method one of ``candidates`` (the peers
        configured for the source, or for the identity in aggressive mode) uses."""
        assert self.policy is not None
        if sa is None:
            raise _Fail(NotifyType.PAYLOAD_MALFORMED, "no SA payload")
        specs = self.policy.ike_proposals(self.peer)
        methods = certauth.accepted_methods(candidates) or p1props.PSK_ONLY
        choice = p1props.choose_phase1(sa, specs, methods)
        if choice is None:
            other = p1props.choose_phase1(sa, specs, _ANY_METHOD)
            if other is not None:
                self.stats.auth_failures += 1
                raise _Fail(NotifyType.NO_PROPOSAL_CHOSEN, "peer uses an authentication method not configured: "
                            + certauth.v1_method_name(other.auth_method))
            raise _Fail(NotifyType.NO_PROPOSAL_CHOSEN,
                        f"no acceptable phase 1 proposal; received proposals: {p1props.offered_text(sa)}")
        p.auth_method = choice.auth_method
        return choice

    def _on_mm1(self, p: _Phase1, msg: Message, data: bytes, addr: Addr, now: float, local: Addr | None) -> None:
        payloads = self._plain(msg)
        p.cky_i = msg.header.cky_i
        self._bind(addr, local)
        sa = _first(payloads, SA)
        p.mode = ExchangeMode.MAIN
        # The identity is still unknown (it comes encrypted in MM5): the candidates are by address.
        assert self.policy is not None
        candidates = list(self.policy.authenticate(self.peer, *_addr_id(self.peer[0])))
        choice = self._choose(p, sa, candidates)
        p.candidates = [c for c in candidates if certauth.uses_method(c, choice.auth_method)]
        assert sa is not None  # _choose refuses a message without one
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
        choice = p1props.choose_phase1(sa, p.config.proposals, frozenset({p.auth_method})) if (
            sa and p1props.is_single(sa)) else None
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
        packet = encode_message(header, [KE(p.g_xi), Nonce(p.ni), *self._certreqs(p, p.config),
                                         *self._natd_payloads(p)])
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
        self._answer_ke(p, p.choice.group)
        self._check_natd(p, payloads)
        self._move(p, Trigger.MM3)
        p.last_in = data
        header = Header(p.cky_i, p.cky_r, 0, ExchangeType.ID_PROT, 0, 0)
        certreqs = self._certreqs(p, p.candidates[0]) if p.candidates else []
        packet = encode_message(header, [KE(p.g_xr), Nonce(p.nr), *certreqs, *self._natd_payloads(p)])
        self._p1_send(p, packet, now, expect_answer=False)

    def _answer_ke(self, p: _Phase1, group: int) -> None:
        """The responder's half of the exchange against the initiator's KE (MM3 / AM1): our key pair, the
        shared secret and our nonce; the message counts as received from here on."""
        p.dh = dh_group(group).generate()
        try:
            p.g_xy = p.dh.shared(p.g_xi)
        except CryptoError as exc:
            raise _Fail(NotifyType.INVALID_KEY_INFORMATION, "bad KE") from exc
        self.stats.messages_in += 1
        p.g_xr = p.dh.public
        p.nr = self._rng(NONCE_SIZE)

    def _derive(self, p: _Phase1, cfg: IkeSaConfig) -> tuple[c1.Phase1Keys, c1.IvChain]:
        assert p.suite is not None
        skeyid = authenticator_for(cfg).skeyid(p.suite.prf, p.ni, p.nr, p.g_xy)  # per method (RFC 2409 §5)
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
        out: list[Payload] = [idii, *self._proof(p, p.config, auth)]
        if self.initial_contact and p is self._p1:
            out.append(Notify(NotifyType.INITIAL_CONTACT, ProtocolId.ISAKMP, p.spi))
        packet = self._seal(Header(p.cky_i, p.cky_r, 0, ExchangeType.ID_PROT, 0, 0), out, p.chain)
        self._p1_send(p, packet, now, expect_answer=True)

    def _on_mm5(self, p: _Phase1, msg: Message, data: bytes, addr: Addr, now: float, local: Addr | None) -> None:
        assert p.suite is not None
        if msg.encrypted is None:
            raise _Fail(NotifyType.INVALID_FLAGS, "MM5 must be encrypted")
        if p.signing:
            self._on_mm5_signed(p, msg, data, addr, now, local)
            return
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
            p.keys, p.chain = keys, chain
            self._answer_mm5(p, cfg, idii, payloads, data, addr, now, local)
            return
        self.stats.auth_failures += 1
        raise _Fail(NotifyType.AUTHENTICATION_FAILED, "MM5 does not decrypt or verify: pre-shared key mismatch?")

    def _on_mm5_signed(self, p: _Phase1, msg: Message, data: bytes, addr: Addr, now: float,
                       local: Addr | None) -> None:
        """MM5 under signatures: the keys are the same whoever the peer is; the candidate whose CAs and
        ``remote-id`` accept the certificate wins (the first refusal is the one reported)."""
        assert p.suite is not None
        if not p.candidates:
            self.stats.auth_failures += 1
            raise _Fail(NotifyType.AUTHENTICATION_FAILED, f"no ike peer for {addr[0]} uses "
                        f"{certauth.v1_method_name(p.auth_method)}")
        keys, chain = self._derive(p, p.candidates[0])
        try:
            payloads, _plain = self._open(chain, msg)
        except (CryptoError, ParseError):
            self.stats.auth_failures += 1
            raise _Fail(NotifyType.AUTHENTICATION_FAILED, "MM5 does not decrypt") from None
        p.keys, p.chain = keys, chain
        idii = _first(payloads, Identification)
        if idii is None:
            raise _Fail(NotifyType.PAYLOAD_MALFORMED, "MM5 without ID")
        expected = c1.hash_i(p.suite.prf, keys.skeyid, p.g_xi, p.g_xr, p.cky_i, p.cky_r, p.sai_b, idii.body())
        first: _Fail | None = None
        for cfg in p.candidates:
            try:
                self._check_proof(p, cfg, payloads, idii, expected, count=False)
            except _Fail as exc:
                first = first or exc
                continue
            self._answer_mm5(p, cfg, idii, payloads, data, addr, now, local)
            return
        assert first is not None
        self.stats.auth_failures += 1
        raise first

    def _answer_mm5(self, p: _Phase1, cfg: IkeSaConfig, idii: Identification, payloads: list[Payload],
                    data: bytes, addr: Addr, now: float, local: Addr | None) -> None:
        """The initiator is authenticated as ``cfg``: MM6 with our proof, and the ISAKMP SA is up."""
        assert p.suite is not None and p.keys is not None
        p.config = cfg
        idir = self._id_payload(cfg)
        auth_r = c1.hash_r(p.suite.prf, p.keys.skeyid, p.g_xi, p.g_xr, p.cky_i, p.cky_r, p.sai_b, idir.body())
        proof = self._proof(p, cfg, auth_r)
        self.config = cfg
        p.peer_id = (idii.id_type, idii.data)
        p.initial_contact = any(isinstance(n, Notify) and n.notify_type == NotifyType.INITIAL_CONTACT
                                for n in payloads)
        self._note_peer(addr, local, now)
        self._move(p, Trigger.MM5)
        p.last_in = data
        packet = self._seal(Header(p.cky_i, p.cky_r, 0, ExchangeType.ID_PROT, 0, 0), [idir, *proof], p.chain)
        self._p1_send(p, packet, now, expect_answer=False)
        self._p1_established(p, now)

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
        if idir is None:
            raise _Fail(NotifyType.PAYLOAD_MALFORMED, "MM6 without ID")
        self._verify_responder(p, idir, payloads)
        self._note_peer(addr, local, now)
        self._move(p, Trigger.MM6)
        p.last_in = data
        p.last_out = b""  # MM6 ends the exchange: a duplicate of it is not answered
        p.req = None
        self._p1_established(p, now)

    def _verify_responder(self, p: _Phase1, idir: Identification, payloads: list[Payload]) -> None:
        assert p.config is not None and p.keys is not None and p.suite is not None
        if p.config.remote_id is not None and (idir.id_type, idir.data) != p.config.remote_id:
            self.stats.auth_failures += 1
            raise _Fail(NotifyType.AUTHENTICATION_FAILED, "unexpected responder identity")
        expected = c1.hash_r(p.suite.prf, p.keys.skeyid, p.g_xi, p.g_xr, p.cky_i, p.cky_r, p.sai_b, idir.body())
        self._check_proof(p, p.config, payloads, idir, expected)
        p.peer_id = (idir.id_type, idir.data)

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
        idii = _first(payloads, Identification)
        if idii is None:
            raise _Fail(NotifyType.INVALID_ID_INFORMATION, "aggressive mode without ID")
        candidates = [c for c in self.policy.authenticate(self.peer, idii.id_type, idii.data)
                      if c.remote_id is None or c.remote_id == (idii.id_type, idii.data)]
        if not candidates:
            raise _Fail(NotifyType.AUTHENTICATION_FAILED, "no peer configured for this identity")
        choice = self._choose(p, sa, candidates)
        assert sa is not None  # _choose refuses a message without one
        cfg = next(c for c in candidates if certauth.uses_method(c, choice.auth_method))
        p.choice = choice
        p.suite = c1.Suite.from_attributes(choice.encryption, choice.key_bits, choice.hash)
        p.sai_b = sa.body()
        p.g_xi, p.ni = self._ke_nonce(p, payloads)
        self._answer_ke(p, choice.group)
        p.config = cfg
        p.peer_id = (idii.id_type, idii.data)
        self._read_vendor_ids(p, payloads)
        p.keys, p.chain = self._derive(p, cfg)
        idir = self._id_payload(cfg)
        auth = c1.hash_r(p.suite.prf, p.keys.skeyid, p.g_xi, p.g_xr, p.cky_i, p.cky_r, p.sai_b, idir.body())
        answer = p1props.answer_sa(sa, choice.proposal, choice.transform, sa.proposals[0].protocol, b"")
        out: list[Payload] = [answer, KE(p.g_xr), Nonce(p.nr), idir, *self._certreqs(p, cfg),
                              *self._proof(p, cfg, auth), *self._vendor_ids(p, True), *self._natd_payloads(p)]
        self._move(p, Trigger.AM1)
        p.last_in = data
        header = Header(p.cky_i, p.cky_r, 0, ExchangeType.AGGRESSIVE, 0, 0)
        # The last aggressive-mode message is the initiator's: we retransmit AM2 until it arrives.
        self._p1_send(p, encode_message(header, out), now, expect_answer=True)

    def _on_am2(self, p: _Phase1, msg: Message, data: bytes, addr: Addr, now: float, local: Addr | None) -> None:
        assert p.config is not None and p.dh is not None
        payloads = self._plain(msg)
        sa = _first(payloads, SA)
        choice = p1props.choose_phase1(sa, p.config.proposals, frozenset({p.auth_method})) if (
            sa and p1props.is_single(sa)) else None
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
        if idir is None:
            raise _Fail(NotifyType.PAYLOAD_MALFORMED, "AM2 without ID")
        self._verify_responder(p, idir, payloads)
        self._note_peer(addr, local, now)
        self._read_vendor_ids(p, payloads)
        self._check_natd(p, payloads)
        self._float(p)
        self._move(p, Trigger.AM2)
        p.last_in = data
        idii = self._id_payload(p.config)
        auth_i = c1.hash_i(p.suite.prf, p.keys.skeyid, p.g_xi, p.g_xr, p.cky_i, p.cky_r, p.sai_b, idii.body())
        out: list[Payload] = [*self._proof(p, p.config, auth_i), *self._natd_payloads(p)]
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
        assert p.peer_id is not None
        idii = Identification(p.peer_id[0], p.peer_id[1])
        expected = c1.hash_i(p.suite.prf, p.keys.skeyid, p.g_xi, p.g_xr, p.cky_i, p.cky_r, p.sai_b, idii.body())
        self._check_proof(p, p.config, payloads, idii, expected)
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

    def _p1_established(self, p: _Phase1, now: float) -> None:
        assert p.config is not None and p.choice is not None
        p.established_at = now
        # Authentication is done and the keys derived: the DH key, g^xi/g^xr/g^xy, the nonces, SA_i and
        # the candidates are needed no more (about 1.5 kB per ISAKMP SA, plus OpenSSL's DH key).
        p.dh = None
        p.g_xi = p.g_xr = p.g_xy = p.ni = p.nr = p.sai_b = b""
        p.candidates = []
        offered = p.choice.life_seconds
        p.life = float(min(offered, p.config.lifetime) if offered else p.config.lifetime)
        if p.verdict is not None:
            self.peer_auth = p.verdict  # displays: the method and the peer's certificate subject
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


    # ------------------------------------------------------------------ the layers above

    def _start_quick(self, cfg: ChildSaConfig, old: ChildSa | None, now: float) -> None:
        raise NotImplementedError

    def _abandon_quick(self, q: _Quick, now: float) -> None:
        raise NotImplementedError

    def _send_info(self, p: _Phase1, payloads: list[Payload]) -> None:
        raise NotImplementedError

    def _switch(self, new: _Phase1, now: float) -> None:
        raise NotImplementedError

    def _fail(self, now: float, notify: int, detail: str, kind: str = "") -> None:
        raise NotImplementedError

"""IKEv2 message exchanges under protection: generations of keys, message IDs, the window of one request
and the answer cache (RFC 7296 §2.1-2.3), for :class:`~ikegate.ike.v2.sa.IkeSa`.

:class:`Exchanges` is the lowest layer of the engine: it routes a protected message to its generation,
drops what the state does not accept, answers retransmitted requests from the cache and hands fresh ones
to the layer above (IKE_AUTH, CREATE_CHILD_SA, INFORMATIONAL), which it names as abstract methods.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Callable
from dataclasses import dataclass

from ikegate.ike.core.base import EngineBase
from ikegate.ike.core.config import Addr
from ikegate.ike.core.errors import Refusal
from ikegate.ike.core.negotiated import Chosen
from ikegate.ike.core.window import Retransmission
from ikegate.ike.crypto import CryptoError, DhKey, IkeKeys, PrfAlg, dh_group
from ikegate.ike.events import DeleteReason
from ikegate.ike.fragments import FragmentationConfig
from ikegate.ike.v2.fragments import Reassembled, Reassembler, protect, triggers_retransmit
from ikegate.ike.v2.protect import SkContext, open_sk
from ikegate.ike.v2.states import ACCEPTED_REQUESTS, TRANSITIONS, State, Trigger
from ikegate.ike.wire.registry import ExchangeType, HeaderFlag, NotifyType
from ikegate.ike.wire.v2 import SKF, Header, Message, Notify, ParseError, Payload

NONCE_SIZE = 32
# Header flags as plain ints: IntFlag arithmetic costs microseconds on the per-message path.
_FLAG_I = int(HeaderFlag.INITIATOR)
_FLAG_R = int(HeaderFlag.RESPONSE)


class _Fail(Refusal):
    """Inside request processing: answer with this Notify instead of a normal response. ``kind`` labels
    an authentication failure for the metrics."""

    names = NotifyType
    kind = ""

    @classmethod
    def auth(cls, reason: str, kind: str) -> _Fail:
        fail = cls(NotifyType.AUTHENTICATION_FAILED, detail=reason)
        fail.kind = kind
        return fail


@dataclass(slots=True, eq=False, kw_only=True)
class _Request(Retransmission):
    """Our request in flight on one generation (window 1): what its answer is for."""

    exchange: int
    mid: int
    on_response: Callable[[list[Payload], float], None]


@dataclass(slots=True)
class _Gen:
    """One generation of keys, SPIs and message-ID state (a rekey starts a new one)."""

    spi_i: bytes
    spi_r: bytes
    we_init: bool
    prf: PrfAlg
    keys: IkeKeys
    out: SkContext
    inp: SkContext
    chosen: Chosen
    next_mid: int = 0
    peer_mid: int = 0
    cached_mid: int = -1
    cached: bytes = b""
    cached_more: tuple[bytes, ...] = ()  # the other fragments of a fragmented cached answer
    cached_for: bytes = b""  # digest of the whole request ``cached`` answers (see _request_digest)
    req: _Request | None = None
    #: RFC 7383 reassembly with this generation's inbound keys; None unless fragmentation was negotiated.
    frags: Reassembler | None = None

    @property
    def local_spi(self) -> bytes:
        return self.spi_i if self.we_init else self.spi_r


def _request_digest(data: bytes) -> bytes:
    """What identifies a retransmitted request: a digest of the whole message, so only the peer's own
    bytes (never a header copied onto garbage) bring back a cached answer, without keeping the request."""
    return hashlib.blake2b(data, digest_size=16).digest()


def answer_ke(group: int, chosen_group: int, peer_public: bytes) -> tuple[DhKey, bytes]:
    """A responder's side of a KE in CREATE_CHILD_SA: our key pair and the shared secret. A KE for another
    group than the chosen one is INVALID_KE_PAYLOAD naming ours; a KE that does not compute, INVALID_SYNTAX."""
    if group != chosen_group:
        raise _Fail(NotifyType.INVALID_KE_PAYLOAD, data=struct.pack("!H", chosen_group))
    mine = dh_group(chosen_group).generate()
    try:
        return mine, mine.shared(peer_public)
    except CryptoError as exc:
        raise _Fail(NotifyType.INVALID_SYNTAX, detail="bad KE") from exc


class Exchanges(EngineBase):
    """Requests, answers and the state that governs them (the lower half of an IKEv2 IKE SA)."""

    __slots__ = ("_after_answer", "_frag", "_gen", "_init_req", "_retiring", "state")
    state: State
    #: Fragmentation settings once both ends announced support in IKE_SA_INIT (RFC 7383 §2.3), else None.
    _frag: FragmentationConfig | None
    _gen: _Gen | None
    _retiring: list[_Gen]
    _init_req: _Request | None
    _after_answer: Callable[[float], None] | None

    def _gen_for(self, spi_i: bytes, spi_r: bytes) -> _Gen | None:
        for gen in ([self._gen] if self._gen else []) + self._retiring:
            if gen.spi_i == spi_i and gen.spi_r == spi_r:
                return gen
        return None

    def _on_protected(self, msg: Message, data: bytes, addr: Addr, now: float, local: Addr | None) -> None:
        h = msg.header
        gen = self._gen_for(h.spi_i, h.spi_r)
        if gen is None or self.state is State.DEAD:
            self.stats.dropped += 1
            return
        # The I flag must name the other side as the original initiator of this generation.
        if bool(h.flags & _FLAG_I) == gen.we_init:
            self.stats.dropped += 1
            return
        if h.is_response:
            self._on_response(gen, msg, data, addr, now, local)
        else:
            self._on_request(gen, msg, data, addr, now, local)

    def _on_response(self, gen: _Gen, msg: Message, data: bytes, addr: Addr, now: float,
                     local: Addr | None) -> None:
        req = gen.req
        if req is None or msg.header.message_id != req.mid or msg.header.exchange != req.exchange:
            self.stats.dropped += 1
            return
        try:
            if self._is_fragment(msg):
                whole = self._reassemble(gen, msg, data, now)
                if whole is None:
                    return
                payloads = whole.payloads()
            else:
                payloads = open_sk(gen.inp, msg, data)
        except ParseError:
            self.stats.dropped += 1
            return
        self._note_peer(addr, local, now)
        gen.req = None
        req.on_response(payloads, now)
        self._pump(now)

    def _on_request(self, gen: _Gen, msg: Message, data: bytes, addr: Addr, now: float,
                    local: Addr | None) -> None:
        h = msg.header
        fragment = self._is_fragment(msg)
        if h.message_id == gen.cached_mid and gen.cached:
            # Only a byte-identical copy of the request is a retransmission (as strongSwan does): a
            # forged header with the live SPIs and message ID, which never passed the ICV, gets nothing.
            # Of a fragmented request, only fragment 1 brings the answer back (RFC 7383 §2.6.1).
            if fragment and not triggers_retransmit(msg):
                return
            if hmac.compare_digest(_request_digest(data), gen.cached_for):
                for packet in (gen.cached, *gen.cached_more):  # the peer lost our answer: the same bytes
                    self._emit(packet, (self.local, self.peer))
            else:
                self.stats.dropped += 1
            return
        if h.message_id != gen.peer_mid:
            self.stats.dropped += 1
            return
        if h.exchange not in ACCEPTED_REQUESTS.get(self.state, frozenset()):
            self.stats.dropped += 1
            return
        request = data
        try:
            if fragment:
                whole = self._reassemble(gen, msg, data, now)
                if whole is None:
                    return
                request = whole.first_fragment  # what a retransmission is recognised by (§2.6.1)
                payloads = whole.payloads()
            else:
                payloads = open_sk(gen.inp, msg, data)
        except ParseError as exc:
            # Authentic (the ICV verified) but malformed inside: answer with the Notify it calls for.
            self._note_peer(addr, local, now)
            self._answer(gen, h, [Notify(exc.notify, data=exc.data)], request)
            return
        data = request
        self._note_peer(addr, local, now)
        self._after_answer = None
        die_after: DeleteReason | None = None
        try:
            if h.exchange == ExchangeType.IKE_AUTH:
                answer = self._on_auth_request(payloads, now)
            elif h.exchange == ExchangeType.CREATE_CHILD_SA:
                answer = self._on_create_child_request(payloads, now)
            else:
                answer, die_after = self._on_informational(gen, payloads, now)
        except _Fail as exc:
            answer = [Notify(exc.notify, data=exc.data)]
            if h.exchange == ExchangeType.IKE_AUTH:
                self._answer(gen, h, answer, data)
                self._fail(now, exc.notify, str(exc), exc.kind)
                return
        self._answer(gen, h, answer, data)
        after = self._after_answer
        self._after_answer = None
        if after is not None:
            after(now)
        if die_after is not None:
            if gen is self._gen:
                self._peer_deleted(now, die_after)
            else:
                self._retire(gen)
            return
        self._pump(now)

    def _answer(self, gen: _Gen, h: Header, payloads: list[Payload], request: bytes) -> None:
        """Answer an authentic ``request`` and keep the answer for its retransmissions."""
        flags = _FLAG_R | (_FLAG_I if gen.we_init else 0)
        header = Header(gen.spi_i, gen.spi_r, 0, h.exchange, flags, h.message_id)
        packets = self._seal(gen, header, payloads)
        gen.cached_mid = h.message_id
        gen.cached, gen.cached_more = packets[0], tuple(packets[1:])
        gen.cached_for = _request_digest(request)
        gen.peer_mid = h.message_id + 1
        for packet in packets:
            self._emit(packet)

    def _seal(self, gen: _Gen, header: Header, payloads: list[Payload]) -> list[bytes]:
        """The datagrams of one protected message: one SK message, or its SKF fragments when fragmentation
        was negotiated and it does not fit the configured size (RFC 7383 §2.5)."""
        budget = None
        if self._frag is not None and self._frag.enabled:
            natt = 4500 in (self.local[1], self.peer[1])
            budget = self._frag.budget(6 if ":" in self.peer[0] else 4, natt=natt)
        return protect(gen.out, header, payloads, self._rng, budget)

    @staticmethod
    def _is_fragment(msg: Message) -> bool:
        return bool(msg.payloads) and isinstance(msg.payloads[-1], SKF)

    def _reassemble(self, gen: _Gen, msg: Message, data: bytes, now: float) -> Reassembled | None:
        """One SKF fragment offered to the generation's reassembler: the whole message once complete.
        A fragment without negotiated fragmentation, or one the reassembler refuses (bad ICV, numbers,
        limits, duplicate), is counted as dropped."""
        if gen.frags is None:
            self.stats.dropped += 1
            return None
        before = gen.frags.stats.dropped
        whole = gen.frags.add(gen.inp, msg, data, now)
        self.stats.dropped += gen.frags.stats.dropped - before
        return whole

    def _queue(self, task: Callable[[float], None], now: float) -> None:
        self._window.queue(task)
        self._pump(now)

    def _busy(self) -> bool:
        return bool(self._gen and self._gen.req) or bool(self._window)

    def _window_open(self) -> bool:
        """Window 1 (RFC 7296 §2.3): no request of ours in flight on the established SA."""
        return self._gen is not None and self._gen.req is None and self.state is State.ESTABLISHED

    def _pump(self, now: float) -> None:
        self._window.pump(now, self._window_open)

    def _send_request(self, exchange: int, payloads: list[Payload], on_response: Callable[[list[Payload], float], None],
                      on_timeout: Callable[[float], None] | None, now: float, max_tries: int | None = None) -> None:
        """Send a request on the current generation; no answer at all (``on_timeout`` None) means the
        peer is dead."""
        assert self._gen is not None
        if on_timeout is None:
            on_timeout = lambda n: self._die(n, DeleteReason.DPD_TIMEOUT)  # noqa: E731
        self._send_request_on(self._gen, exchange, payloads, on_response, on_timeout, now, max_tries)

    def _send_request_on(self, gen: _Gen, exchange: int, payloads: list[Payload],
                         on_response: Callable[[list[Payload], float], None], on_timeout: Callable[[float], None],
                         now: float, max_tries: int | None = None) -> None:
        flags = _FLAG_I if gen.we_init else 0
        header = Header(gen.spi_i, gen.spi_r, 0, exchange, int(flags), gen.next_mid)
        packets = self._seal(gen, header, payloads)
        req = _Request(packets[0], on_timeout, more=tuple(packets[1:]), exchange=exchange, mid=gen.next_mid,
                       on_response=on_response)
        gen.req = self._window.arm(req, now, self.config, max_tries)
        gen.next_mid += 1
        for packet in packets:
            self._emit(packet)

    def _requests(self) -> list[_Request]:
        reqs = [self._init_req] if self._init_req else []
        for gen in ([self._gen] if self._gen else []) + self._retiring:
            if gen.req is not None:
                reqs.append(gen.req)
        return reqs

    def _unhook(self, req: Retransmission) -> None:
        for gen in [self._gen, *self._retiring]:
            if gen is not None and gen.req is req:
                gen.req = None
        if req is self._init_req:
            self._init_req = None

    def _move(self, trigger: Trigger) -> None:
        """The only writer of ``state``; a move the table lacks raises :class:`ProtocolViolation`."""
        self.state = TRANSITIONS.move(self.state, trigger)


    # ------------------------------------------------------------------ the layers above

    def _on_auth_request(self, payloads: list[Payload], now: float) -> list[Payload]:
        raise NotImplementedError

    def _on_create_child_request(self, payloads: list[Payload], now: float) -> list[Payload]:
        raise NotImplementedError

    def _on_informational(self, gen: _Gen, payloads: list[Payload], now: float
                          ) -> tuple[list[Payload], DeleteReason | None]:
        raise NotImplementedError

    def _peer_deleted(self, now: float, reason: DeleteReason) -> None:
        raise NotImplementedError

    def _retire(self, gen: _Gen) -> None:
        raise NotImplementedError

    def _fail(self, now: float, notify: int, detail: str, kind: str = "") -> None:
        raise NotImplementedError

    def _die(self, now: float, reason: DeleteReason) -> None:
        raise NotImplementedError

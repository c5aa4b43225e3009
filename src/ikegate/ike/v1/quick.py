"""IKEv1 Quick Mode: IPsec SA pairs for an ISAKMP SA, their rekeys and the pairs a rekey replaces
(RFC 2409 §5.5, RFC 3947 for UDP encapsulation), for :class:`~ikegate.ike.v1.sa.IsakmpSa`.
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass, field

from ikegate.ike.core import ts as tsmod
from ikegate.ike.core.child import ChildSa, ChildState, ChildTrigger
from ikegate.ike.core.config import Addr, ChildSaConfig, Mode
from ikegate.ike.core.lifetimes import jitter, soft_lifetime
from ikegate.ike.core.window import Retransmission
from ikegate.ike.crypto import CryptoError, DhKey, dh_group
from ikegate.ike.events import (
    ChildSaEstablished,
    DeleteReason,
    NegotiationFailed,
)
from ikegate.ike.v1 import crypto as c1
from ikegate.ike.v1 import proposals as p1props
from ikegate.ike.v1.phase1 import NONCE_SIZE, Phase1Exchanges, _addr_id, _Fail, _first, _not_offered, _Phase1
from ikegate.ike.v1.registry import (
    EncapMode,
    ExchangeType,
    LifeType,
    NotifyType,
    ProtocolId,
)
from ikegate.ike.v1.states import (
    QUICK_TRANSITIONS,
    QuickState,
    QuickTrigger,
)
from ikegate.ike.v1.wire import (
    KE,
    SA,
    Delete,
    Hash,
    Header,
    Identification,
    Message,
    NatOA,
    Nonce,
    Notify,
    ParseError,
    Payload,
    decode_attributes,
)
from ikegate.ike.wire.v2 import TrafficSelector

QUICK_LINGER = 60.0  # how long a finished quick mode stays to answer duplicates
#: After our Quick Mode rekey, how long the replaced pair still receives: the peer keeps sending under it
#: until our QM3 arrives (strongSwan likewise deletes a rekeyed IKEv1 SA only after a delay).
REKEY_OVERLAP = 5.0


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


def _pair_key(child: ChildSa) -> int:
    """The same number on both ends for one IPsec SA pair (our inbound SPI is the peer's outbound)."""
    return min(child.spi_in, child.spi_out)



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


class QuickModes(Phase1Exchanges):
    """The Quick Mode layer of an ISAKMP SA."""

    @staticmethod
    def _quick_move(q: _Quick, trigger: QuickTrigger) -> None:
        """The only writer of a Quick Mode's ``state``."""
        q.state = QUICK_TRANSITIONS.move(q.state, trigger)

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
            # Make-before-break: the new pair carries our traffic from now on (the dataplane prefers the
            # newest SA), but the peer switches only when QM3 reaches it, and what it sent before that is
            # still on its way under the old pair. Keep the old pair's inbound side for REKEY_OVERLAP; at
            # that expiry the ISAKMP SA deletes it (reason REKEYED) and tells the peer.
            q.old.expire_at = min(q.old.expire_at, now + REKEY_OVERLAP)

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

    # ------------------------------------------------------------------ the ISAKMP SA layer above

    def _home(self) -> QuickModes:
        raise NotImplementedError

    def _end(self, now: float, reason: DeleteReason, *, take_children: bool, child_reason: DeleteReason,
             tell_peer: bool) -> None:
        raise NotImplementedError

    def _drop_child(self, child: ChildSa, reason: DeleteReason) -> None:
        raise NotImplementedError

    def _new_mid(self) -> int:
        raise NotImplementedError

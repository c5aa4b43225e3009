"""IKEv2 Child SAs: CREATE_CHILD_SA (new pairs and rekeys with the §2.8.1 collision rules), the Child SA
inside IKE_AUTH, and Deletes of pairs, for :class:`~ikegate.ike.v2.sa.IkeSa`.
"""

from __future__ import annotations

import functools
import struct

from ikegate.ike.core import ts as tsmod
from ikegate.ike.core.child import ChildSa, ChildState, ChildTrigger
from ikegate.ike.core.config import ChildSaConfig, Mode
from ikegate.ike.core.lifetimes import jitter, soft_lifetime
from ikegate.ike.core.negotiated import Chosen
from ikegate.ike.crypto import (
    CryptoError,
    DhKey,
    derive_child_keys,
    dh_group,
    integ_alg,
)
from ikegate.ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    DeleteReason,
    NegotiationFailed,
)
from ikegate.ike.v2 import proposals as props
from ikegate.ike.v2.exchange import NONCE_SIZE, Exchanges, _Fail, answer_ke
from ikegate.ike.v2.states import State
from ikegate.ike.wire.registry import (
    ExchangeType,
    NotifyType,
    ProtocolId,
)
from ikegate.ike.wire.v2 import (
    KE,
    SA,
    Delete,
    Nonce,
    Notify,
    Payload,
    TrafficSelector,
    TSi,
    TSr,
)


class ChildExchanges(Exchanges):
    """The Child SA half of an IKEv2 IKE SA."""

    __slots__ = ("_closing",)
    #: Child SAs whose Delete is on its way, by the SPI the peer names them with (our outbound one).
    _closing: dict[int, ChildSa]

    def create_child(self, child: ChildSaConfig, now: float) -> None:
        """Queue a CREATE_CHILD_SA for an additional Child SA (with PFS when the policy has a group)."""
        self._queue(lambda t: self._send_create_child(child, None, t), now)

    def rekey_child(self, child: ChildSa, now: float) -> None:
        if child.state is not ChildState.INSTALLED:
            return
        child.move(ChildTrigger.REKEY)
        self._queue(lambda t: self._send_create_child(child.config, child, t), now)

    def delete_child(self, child: ChildSa, now: float, reason: DeleteReason = DeleteReason.MANUAL) -> None:
        """Report the Child SA gone now and tell the peer with a Delete of our inbound SPI."""
        if child.spi_in not in self.children or child.state is ChildState.DELETING:
            return
        child.move(ChildTrigger.DELETE)
        self._drop_child(child, reason)
        if self.state is State.ESTABLISHED:
            self._closing[child.spi_out] = child
            self._queue(lambda t: self._send_child_delete(child, t), now)

    def _child_lifetimes(self, cfg: ChildSaConfig, initiator: bool, now: float) -> tuple[float | None, float]:
        life = cfg.lifetime
        return now + soft_lifetime(life, initiator, self._rng), now + life

    def _complete_child(self, cfg: ChildSaConfig, payloads: list[Payload], spi_in: int, old: ChildSa | None,
                        ni: bytes, nr: bytes, dh: DhKey | None, now: float) -> ChildSa:
        """Initiator side: check the responder's answer and install the pair."""
        assert self._gen is not None
        sa = next((p for p in payloads if isinstance(p, SA)), None)
        tsi = next((p for p in payloads if isinstance(p, TSi)), None)
        tsr = next((p for p in payloads if isinstance(p, TSr)), None)
        if sa is None or tsi is None or tsr is None or not props.is_single(sa):
            raise _Fail(NotifyType.INVALID_SYNTAX, detail="Child SA answer incomplete")
        chosen = props.choose_esp(sa, cfg.proposals, skip_dh=dh is None)
        if chosen is None or len(chosen.spi) != 4:
            raise _Fail(NotifyType.NO_PROPOSAL_CHOSEN, detail="responder chose an ESP proposal we did not offer; "
                        f"received proposals: {props.offered_text(sa)}")
        if not tsmod.all_within(tsi.selectors, cfg.local_ts) or not tsmod.all_within(tsr.selectors, cfg.remote_ts):
            raise _Fail(NotifyType.TS_UNACCEPTABLE, detail="responder widened the traffic selectors")
        g_ir = None
        if dh is not None:
            ke = next((p for p in payloads if isinstance(p, KE)), None)
            if ke is None or ke.group != dh.group.id:
                raise _Fail(NotifyType.INVALID_SYNTAX, detail="PFS answer without matching KE")
            g_ir = dh.shared(ke.data)
        transport = any(isinstance(p, Notify) and p.notify_type == NotifyType.USE_TRANSPORT_MODE for p in payloads)
        child = self._make_child(cfg, chosen, spi_in, struct.unpack("!I", chosen.spi)[0], ni, nr, g_ir,
                                 we_init=True, ts_local=tsi.selectors, ts_remote=tsr.selectors,
                                 mode=Mode.TRANSPORT if transport and cfg.mode is Mode.TRANSPORT else Mode.TUNNEL,
                                 now=now)
        self._add_child(child, old)
        return child

    def _answer_child(self, payloads: list[Payload], old: ChildSa | None, ni: bytes, nr: bytes, now: float,
                      *, in_auth: bool, ke: KE | None = None) -> list[Payload]:
        """Responder side: pick proposal and selectors for a proposed Child SA, install it, answer."""
        sa = next((p for p in payloads if isinstance(p, SA)), None)
        tsi = next((p for p in payloads if isinstance(p, TSi)), None)
        tsr = next((p for p in payloads if isinstance(p, TSr)), None)
        if sa is None or tsi is None or tsr is None:
            raise _Fail(NotifyType.INVALID_SYNTAX, detail="Child SA request incomplete")
        if old is not None:
            cfg: ChildSaConfig | None = old.config
        elif self.policy is not None:
            cfg = self.policy.select_child(self, tsi.selectors, tsr.selectors)
        else:
            # An engine built without a responder policy accepts no Child SA the peer proposes.
            cfg = None
        if cfg is None:
            raise _Fail(NotifyType.TS_UNACCEPTABLE, detail="no policy matches the proposed traffic selectors")
        chosen = props.choose_esp(sa, cfg.proposals, skip_dh=in_auth)
        if chosen is None:
            raise _Fail(NotifyType.NO_PROPOSAL_CHOSEN,
                        detail=f"no acceptable ESP proposal; received proposals: {props.offered_text(sa)}")
        g_ir = None
        my_ke: KE | None = None
        if chosen.dh is not None:
            if ke is None:
                raise _Fail(NotifyType.INVALID_SYNTAX, detail="PFS proposal without KE")
            mine, g_ir = answer_ke(ke.group, chosen.dh, ke.data)
            my_ke = KE(chosen.dh, mine.public)
        ts_i = tsmod.narrow(tsi.selectors, cfg.remote_ts)
        ts_r = tsmod.narrow(tsr.selectors, cfg.local_ts)
        if not ts_i or not ts_r:
            raise _Fail(NotifyType.TS_UNACCEPTABLE, detail="traffic selectors outside the policy")
        transport = cfg.mode is Mode.TRANSPORT and any(
            isinstance(p, Notify) and p.notify_type == NotifyType.USE_TRANSPORT_MODE for p in payloads)
        spi_in = self._alloc_spi()
        child = self._make_child(cfg, chosen, spi_in, struct.unpack("!I", chosen.spi)[0], ni, nr, g_ir,
                                 we_init=False, ts_local=ts_r, ts_remote=ts_i,
                                 mode=Mode.TRANSPORT if transport else Mode.TUNNEL, now=now)
        self._add_child(child, old, lowest=min(ni, nr))
        out: list[Payload] = [SA([chosen.to_proposal(ProtocolId.ESP, struct.pack("!I", spi_in))])]
        if not in_auth:
            out.append(Nonce(nr))
            if my_ke is not None:
                out.append(my_ke)
        out += [TSi(ts_i), TSr(ts_r)]
        if transport:
            out.append(Notify(NotifyType.USE_TRANSPORT_MODE))
        return out

    def _make_child(self, cfg: ChildSaConfig, chosen: Chosen, spi_in: int, spi_out: int, ni: bytes,
                    nr: bytes, g_ir: bytes | None, *, we_init: bool, ts_local: list[TrafficSelector],
                    ts_remote: list[TrafficSelector], mode: Mode, now: float) -> ChildSa:
        assert self._gen is not None
        encr = chosen.encr_alg()
        integ = integ_alg(chosen.integ) if chosen.integ is not None else None
        k = derive_child_keys(self._gen.prf, self._gen.keys.sk_d, encr, integ, ni, nr, g_ir)
        rekey_at, expire_at = self._child_lifetimes(cfg, we_init, now)
        if we_init:
            ein, iin, eout, iout = k.encr_r, k.integ_r, k.encr_i, k.integ_i
        else:
            ein, iin, eout, iout = k.encr_i, k.integ_i, k.encr_r, k.integ_r
        return ChildSa(spi_in, spi_out, cfg, encr, integ, ein, iin, eout, iout, list(ts_local), list(ts_remote),
                       mode, we_init, now, rekey_at, expire_at, dh=chosen.dh, udp_encap=self.udp_encap)

    def _add_child(self, child: ChildSa, old: ChildSa | None, lowest: bytes = b"") -> None:
        """Install ``child``; ``lowest`` is the lowest nonce of the exchange that made it (responder side)."""
        self.children[child.spi_in] = child
        if old is not None:
            if not child.initiator and old.state is ChildState.REKEYING:
                # The peer's rekey crossed ours (§2.8.1): both pairs live until our own exchange ends
                # and compares the nonces; until then ``old`` stays ours to rekey.
                old.collision = (child, lowest)
            else:
                old.move(ChildTrigger.REPLACED)
                old.rekey_at = None
        self._outbox.report(ChildSaEstablished(self, child, old))

    def _drop_child(self, child: ChildSa, reason: DeleteReason) -> None:
        if self.children.pop(child.spi_in, None) is not None:
            self._outbox.report(ChildSaDeleted(self, child, reason))
            redundant = child.redundant
            if redundant is not None and redundant.spi_in in self.children:
                # §2.8.1 loser: the replaced pair is gone (normally by the peer's Delete, after which the
                # peer no longer sends on our redundant pair): now ours goes too.
                self._delete_rekeyed(redundant)

    def _send_create_child(self, cfg: ChildSaConfig, old: ChildSa | None, now: float, group: int | None = None,
                           retries: int = 0) -> None:
        if self.state is not State.ESTABLISHED or (old is not None and old.spi_in not in self.children):
            return
        if old is not None and old.collision is not None:
            self._replaced_by_peer(old)  # the peer rekeyed it before our request left: theirs stands
            return
        pfs = [g for p in cfg.proposals for g in p.dh]
        if group is None and pfs:
            group = pfs[0]
        dh = dh_group(group).generate() if group is not None else None
        ni = self._rng(NONCE_SIZE)
        spi_in = self._alloc_spi()
        payloads: list[Payload] = []
        if old is not None:
            payloads.append(Notify(NotifyType.REKEY_SA, ProtocolId.ESP, struct.pack("!I", old.spi_in)))
        payloads += [props.esp_sa_payload(cfg.proposals, struct.pack("!I", spi_in), with_dh=dh is not None),
                     Nonce(ni)]
        if dh is not None:
            payloads.append(KE(dh.group.id, dh.public))
        ts_local = old.ts_local if old is not None else cfg.local_ts
        ts_remote = old.ts_remote if old is not None else cfg.remote_ts
        payloads += [TSi(list(ts_local)), TSr(list(ts_remote))]
        if cfg.mode is Mode.TRANSPORT:
            payloads.append(Notify(NotifyType.USE_TRANSPORT_MODE))

        def on_response(resp: list[Payload], t: float) -> None:
            for n in resp:
                if not isinstance(n, Notify) or not NotifyType.is_error(n.notify_type):
                    continue
                if old is not None and old.collision is not None:
                    self._replaced_by_peer(old)  # refused, but the peer's crossing rekey replaced it
                    return
                if n.notify_type == NotifyType.INVALID_KE_PAYLOAD and len(n.data) == 2 and retries < 2:
                    want = struct.unpack("!H", n.data)[0]
                    if want in pfs:
                        retry = functools.partial(self._retry_create_child, cfg, old, want, retries + 1)
                        self._window.queue_first(retry)
                        return
                if n.notify_type == NotifyType.TEMPORARY_FAILURE and old is not None:
                    old.move(ChildTrigger.RESTORE)
                    old.rekey_at = t + 2.0 + jitter(self._rng, 3.0)
                    return
                if old is not None and old.state is ChildState.REKEYING:
                    old.move(ChildTrigger.RESTORE)
                    old.rekey_at = None
                self._outbox.report(NegotiationFailed(self, n.notify_type,
                                                      f"CREATE_CHILD_SA refused: {NotifyType.text(n.notify_type)}",
                                                      child_only=True))
                return
            nr = next((p.data for p in resp if isinstance(p, Nonce)), None)
            try:
                if nr is None:
                    raise _Fail(NotifyType.INVALID_SYNTAX, detail="CREATE_CHILD_SA answer without nonce")
                new = self._complete_child(cfg, resp, spi_in, old, ni, nr, dh, t)
            except (_Fail, CryptoError) as exc:
                notify = exc.notify if isinstance(exc, _Fail) else NotifyType.INVALID_SYNTAX
                self._outbox.report(NegotiationFailed(self, notify, str(exc), child_only=True))
                if old is not None and old.collision is not None:
                    self._replaced_by_peer(old)
                return
            if old is None:
                return
            if old.collision is not None and min(ni, nr) < old.collision[1]:
                # §2.8.1: our exchange holds the lowest of the four nonces, so the pair we just made is the
                # redundant one and ours to delete; the peer, whose pair survives, deletes ``old``. The peer
                # may still be sending on ours until our answer reaches it: delete it after its Delete.
                if old.spi_in in self.children:
                    new.rekey_at = None
                    old.redundant = new
                else:
                    self._delete_rekeyed(new)  # its Delete overtook our answer: it is done with ours
            else:
                if old.collision is not None:
                    self._replaced_by_peer(old.collision[0])  # theirs is redundant: the peer deletes it
                self._delete_rekeyed(old)  # ours survives (alone, or it won): we delete the old pair

        self._send_request(ExchangeType.CREATE_CHILD_SA, payloads, on_response, None, now)

    def _retry_create_child(self, cfg: ChildSaConfig, old: ChildSa | None, group: int, retries: int,
                            now: float) -> None:
        self._send_create_child(cfg, old, now, group, retries)

    def _replaced_by_peer(self, old: ChildSa) -> None:
        """``old`` was replaced (or lost a §2.8.1 comparison) and the peer will delete it: no rekey, and
        its Delete is reported as a rekey, not as a loss."""
        old.move(ChildTrigger.REPLACED)
        old.rekey_at = None

    def _delete_rekeyed(self, old: ChildSa) -> None:
        """After make-before-break (or a lost §2.8.1 collision): drop the replaced (or redundant) pair and
        tell the peer."""
        self._drop_child(old, DeleteReason.REKEYED)
        self._closing[old.spi_out] = old
        self._window.queue_first(lambda t: self._send_child_delete(old, t))

    def _send_child_delete(self, child: ChildSa, now: float) -> None:
        """The Delete of our inbound SPI. From the local delete until this is answered the pair is in
        :attr:`_closing`, so that a rekey of it by the peer gets TEMPORARY_FAILURE (RFC 7296 §2.25.1), not
        CHILD_SA_NOT_FOUND."""
        def answered(payloads: list[Payload], t: float) -> None:
            self._closing.pop(child.spi_out, None)

        self._send_request(ExchangeType.INFORMATIONAL, [Delete(ProtocolId.ESP, [struct.pack("!I", child.spi_in)])],
                           answered, None, now)

    def _schedule_rekeys(self, now: float) -> None:
        for child in list(self.children.values()):
            if child.state is ChildState.INSTALLED and child.rekey_at is not None and now >= child.rekey_at:
                self.rekey_child(child, now)

    def _on_create_child_request(self, payloads: list[Payload], now: float) -> list[Payload]:
        sa = next((p for p in payloads if isinstance(p, SA)), None)
        nonce = next((p for p in payloads if isinstance(p, Nonce)), None)
        if sa is None or nonce is None:
            raise _Fail(NotifyType.INVALID_SYNTAX, detail="CREATE_CHILD_SA without SA or nonce")
        if sa.proposals and sa.proposals[0].protocol == ProtocolId.IKE:
            return self._answer_rekey_ike(payloads, now)
        rekey = next((p for p in payloads if isinstance(p, Notify) and p.notify_type == NotifyType.REKEY_SA), None)
        old: ChildSa | None = None
        if rekey is not None:
            spi_out = struct.unpack("!I", rekey.spi)[0] if len(rekey.spi) == 4 else -1
            old = next((c for c in self.children.values() if c.spi_out == spi_out), None)
            if old is None:
                if spi_out in self._closing:
                    raise _Fail(NotifyType.TEMPORARY_FAILURE, detail="Child SA is being deleted")
                raise _Fail(NotifyType.CHILD_SA_NOT_FOUND, detail="rekey of an unknown Child SA")
            # §2.25.1: a pair we are rekeying ourselves is answered as usual (§2.8.1 picks the survivor);
            # one being deleted, or already replaced, is not.
            if not (old.state is ChildState.INSTALLED or (old.state is ChildState.REKEYING and old.collision is None)):
                raise _Fail(NotifyType.TEMPORARY_FAILURE, detail="Child SA is being deleted or was replaced")
        if self._rekeying_ike():
            raise _Fail(NotifyType.TEMPORARY_FAILURE, detail="IKE SA rekey under way")
        ke = next((p for p in payloads if isinstance(p, KE)), None)
        nr = self._rng(NONCE_SIZE)
        return self._answer_child(payloads, old, nonce.data, nr, now, in_auth=False, ke=ke)


    # ------------------------------------------------------------------ the IKE SA layer above

    def _rekeying_ike(self) -> bool:
        raise NotImplementedError

    def _answer_rekey_ike(self, payloads: list[Payload], now: float) -> list[Payload]:
        raise NotImplementedError

"""The SA synchronisation between the two nodes of a hot-standby pair, sans-I/O (issue 17).

One :class:`SyncNode` sits beside one :class:`~ikegate.gateway.controller.Gateway` and talks to its
counterpart on the other node through a :class:`~ikegate.ha.channel.Channel`. Datagrams in
(:meth:`receive`), datagrams out (:meth:`datagrams_to_send`), one deadline (:meth:`get_timer`,
:meth:`handle_timer`); :meth:`flush` after every feed of the gateway sends what changed.

What the active node streams (each a small operation, several per datagram):

* ``sa``: an IKE SA with its Child SAs in full (``Gateway.export_sa``), on creation, on every rekey
  (IKE or Child), when a Child SA is added or deleted. Per SA a generation number only grows, so a
  reordered older record never overwrites a newer one.
* ``mid``: the message-ID counters after every exchange (IKEv1: the DPD sequence number).
* ``esp``: per Child SA, the outbound ESP sequence number, the inbound replay window and the traffic
  rate, every :data:`ESP_TICK` seconds when they moved; and when the peer was last heard (DPD state).
* ``del``: an IKE SA is gone (with the reason, for the standby's offline log).
* ``cfg``: the backed-up configuration (``hrp auto-sync``), as VRP text, after each change.
* ``bulk_start``/``bulk_end``: everything, for a standby that (re)joins, then the stream goes on.

Loss and reordering: operations are idempotent (full records with generations, counters that only move
forward) and carried in datagrams numbered by a data sequence; the standby asks again for a gap still
open after :data:`NACK_AFTER` (the active keeps the last :data:`RESEND_BUFFER` datagrams); a gap the
active can no longer fill, or a new life of either node, means a bulk sync.

On becoming active the node resumes every synchronised SA as it is (same SPIs, no IKE_SA_INIT), with
every outbound ESP sequence number moved ahead by more than what the old active can have used since its
last report (twice the larger of :data:`ESP_BATCH` and the last reported rate per tick).

Workers (issue 14): the sync is per gateway, so with N placement workers each worker runs its own
``SyncNode`` paired with the worker of the same index on the other node, over its own port (see
docs/ha.md); nothing here assumes one process per node.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ikegate.ha.channel import DATA, HELLO, Channel, Opened
from ikegate.ha.codec import CodecError, decode, encode, encode_list
from ikegate.ike.core.snapshot import SnapshotError

if TYPE_CHECKING:  # pragma: no cover
    from ikegate.gateway.controller import Gateway
    from ikegate.ike.core.engine import Engine

HELLO_INTERVAL = 1.0
#: Hellos missed before the link counts as down (VRRP's own detection: 3 advertisements).
DEAD_AFTER = 3
ESP_TICK = 0.5
ESP_BATCH = 4096
NACK_AFTER = 0.3
RESEND_BUFFER = 8192
#: A gap this large is not worth asking for piece by piece.
MAX_MISSING = 2048
MAX_DATAGRAM = 8000


class Role(enum.Enum):
    INIT = "init"
    ACTIVE = "active"
    STANDBY = "standby"


@dataclass
class SyncStats:
    """Counters for ``display hrp state``."""

    sas_sent: int = 0
    sas_applied: int = 0
    deletes_sent: int = 0
    deletes_applied: int = 0
    mids_sent: int = 0
    esp_sent: int = 0
    bulk_sent: int = 0
    bulk_received: int = 0
    nacks_sent: int = 0
    resent: int = 0
    stale_ignored: int = 0
    import_failed: int = 0
    split_brain: int = 0
    configs_sent: int = 0
    configs_applied: int = 0


@dataclass
class _Synced:
    """What the standby was last told about one engine (active side)."""

    conn_id: int
    gen: int
    shape: tuple[object, ...]
    mids: list[int]
    esp: dict[int, list[int | bytes]] = field(default_factory=dict)


class SyncNode:
    """One node's side of the SA synchronisation."""

    def __init__(self, gateway: Gateway, channel: Channel, *, priority: int = 100, node_id: int = 0,
                 log: Callable[[str], None] | None = None, workers: int = 1) -> None:
        self.gw = gateway
        #: placement workers on this node; the other node must run as many (an SA's SPIs name its worker,
        #: so it must land on the same index there): hellos carry it, a pair that differs never links up
        self.workers = workers
        self.mismatch = 0
        self.channel = channel
        self.priority = priority
        self.node_id = node_id  # VRRP's tie-break: the higher primary address wins
        self.role = Role.INIT
        self.stats = SyncStats()
        self._log = log or (lambda _text: None)
        self._out: list[bytes] = []
        # active side
        self._synced: dict[Engine, _Synced] = {}
        self._dirty: dict[Engine, None] = {}
        self._gone: list[tuple[Engine, str]] = []
        self._ops: list[Any] = []
        self._dseq = 0
        self._buffer: OrderedDict[int, bytes] = OrderedDict()
        self._gen = 0
        self._esp_at = 0.0
        #: (standby's life, its request number) the last bulk answered
        self._bulk_for: tuple[bytes, int] | None = None
        # standby side
        self._gens: dict[int, int] = {}
        self._cfg_gen = 0
        self._rates: dict[int, int] = {}  # spi_in -> packets per tick last reported
        self._peer_dseq = 0
        self._peer_life = b""
        self._missing: dict[int, float] = {}
        self._need_bulk = True
        self._asks = 1  # numbers the standby's requests for a bulk sync (one answer each)
        # link
        self._hello_at = 0.0
        self.peer_heard: float | None = None
        self.peer_role: str = ""
        self.peer_priority = 0
        #: ``hrp auto-sync``: the active's backed-up configuration (text), and what the standby does with
        #: one it receives (the daemon loads and merges it).
        self.config_text: str | None = None
        self.on_config: Callable[[str], None] | None = None
        gateway.on_change = self._changed
        gateway.on_gone = self._forgotten
        gateway.standby = True  # passive until keepalived names this node active

    # ------------------------------------------------------------------ roles

    def set_role(self, role: Role, now: float) -> None:
        """keepalived's word (notify script): this node is now active or standby."""
        if role is self.role:
            return
        before, self.role = self.role, role
        self._log(f"HRP role {before.value} -> {role.value}")
        if role is Role.ACTIVE:
            self._take_over(now)
        else:
            self.gw.standby = True
            self._synced.clear()
            self._dirty.clear()
            self._want_bulk()
        self._hello(now)

    def _want_bulk(self) -> None:
        if not self._need_bulk:
            self._need_bulk = True
            self._asks += 1

    def _take_over(self, now: float) -> None:
        """Every synchronised SA carries on from here: ESP sequence numbers jump ahead, timers resume."""
        for sa in self.gw.engines():
            for spi in list(sa.children):
                seq_out, top, bits = self.gw.esp_state(spi)
                jump = 2 * max(ESP_BATCH, self._rates.get(spi, 0))
                self.gw.set_esp_state(spi, int(seq_out) + jump, int(top), bytes(bits))
        self.gw.resume(now)
        self._gens.clear()
        for sa in self.gw.engines():
            self._dirty[sa] = None  # the standby (when it comes) hears of them all
        self._bulk_for = None

    @property
    def link_up(self) -> bool:
        return self.peer_heard is not None

    def link_alive(self, now: float) -> bool:
        return self.peer_heard is not None and now - self.peer_heard <= DEAD_AFTER * HELLO_INTERVAL

    # ------------------------------------------------------------------ sans-I/O surface

    def datagrams_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        times = [self._hello_at + HELLO_INTERVAL]
        if self.role is Role.ACTIVE:
            times.append(self._esp_at + ESP_TICK)
        if self._missing:
            times.append(min(self._missing.values()) + NACK_AFTER)
        return min(times)

    def handle_timer(self, now: float) -> None:
        if now >= self._hello_at + HELLO_INTERVAL:
            self._hello(now)
        if self.role is Role.ACTIVE and now >= self._esp_at + ESP_TICK:
            self._esp_at = now
            self._esp_tick(now)
        due = sorted(s for s, t in self._missing.items() if now >= t + NACK_AFTER)
        if due and self.role is Role.STANDBY:
            self.stats.nacks_sent += 1
            self._send_ops([["nack", due[:512]]])
            for s in due:
                self._missing[s] = now
        self.flush(now)

    def receive(self, data: bytes, now: float) -> None:
        msg = self.channel.open(data)
        if msg is None:
            return
        try:
            body = decode(msg.body)
        except CodecError:
            self.channel.stats.malformed += 1
            return
        if msg.kind == HELLO:
            self._on_hello(msg, body, now)
        elif isinstance(body, list) and len(body) == 2:
            self._on_data(msg, body, now)
        self.flush(now)

    def flush(self, now: float) -> None:
        """Send what changed in the gateway since the last call (the active's stream)."""
        if self.role is Role.ACTIVE:
            for sa, reason in self._gone:
                self._op_delete(sa, reason)
            self._gone.clear()
            dirty, self._dirty = self._dirty, {}
            for sa in dirty:
                self._op_engine(sa, now)
        if self._ops:
            ops, self._ops = self._ops, []
            self._send_ops(ops)

    # ------------------------------------------------------------------ active: what changed

    def _changed(self, sa: Engine, now: float) -> None:
        if self.role is Role.ACTIVE:
            self._dirty[sa] = None

    def _forgotten(self, sa: Engine, now: float) -> None:
        if self.role is Role.ACTIVE and sa in self._synced:
            reason = sa.delete_reason.value if sa.delete_reason is not None else ""
            self._gone.append((sa, reason))

    def _op_engine(self, sa: Engine, now: float) -> None:
        synced = self._synced.get(sa)
        if not sa.established:
            if synced is not None and (sa.finished or sa.delete_reason is not None):
                self._op_delete(sa, sa.delete_reason.value if sa.delete_reason else "")
            return
        shape = (sa.spi_i, sa.spi_r, tuple(sorted(sa.children)),
                 tuple(c.state.value for _, c in sorted(sa.children.items())))
        mids = self.gw.mids_of(sa)
        if synced is None or synced.shape != shape:
            rec = self.gw.export_sa(sa, now)
            if rec is None:
                return
            self._gen += 1
            conn_id = int(rec["sad"]["conn_id"])
            self._synced[sa] = _Synced(conn_id, self._gen, shape, mids,
                                       {int(c["spi_in"]): list(c["esp"]) for c in rec["children"]})
            self._ops.append(["sa", conn_id, self._gen, rec])
            self.stats.sas_sent += 1
        elif synced.mids != mids:
            synced.mids = mids
            self._ops.append(["mid", synced.conn_id, mids])
            self.stats.mids_sent += 1

    def _op_delete(self, sa: Engine, reason: str) -> None:
        synced = self._synced.pop(sa, None)
        if synced is None:
            return
        self._gen += 1
        self._ops.append(["del", synced.conn_id, self._gen, reason])
        self.stats.deletes_sent += 1

    def _esp_tick(self, now: float) -> None:
        """ESP counters and liveness of every synchronised SA whose counters moved (one datagram holds
        hundreds)."""
        for sa, synced in self._synced.items():
            changed: list[list[int | bytes]] = []
            heard = sa.last_received
            for spi in sa.children:
                state = self.gw.esp_state(spi)
                last = synced.esp.get(spi)
                if last == state:
                    continue
                rate = int(state[0]) - int(last[0] if last else 0)
                synced.esp[spi] = state
                changed.append([spi, *state, rate])
                last_in, _ = self.gw.dataplane.traffic(spi)
                if last_in is not None:
                    heard = max(heard, last_in)
            if changed:
                self._ops.append(["esp", synced.conn_id, changed, now - heard])
                self.stats.esp_sent += 1

    def mirror_config(self, text: str) -> None:
        """The active's backed-up configuration changed: send it (and to every standby that joins later)."""
        if text == self.config_text:
            return
        self.config_text = text
        if self.role is Role.ACTIVE:
            self._gen += 1
            self._ops.append(["cfg", self._gen, text])
            self.stats.configs_sent += 1

    def _bulk(self, now: float) -> None:
        """Everything to a standby that (re)joined: then the stream goes on."""
        self.stats.bulk_sent += 1
        self._synced.clear()
        self._ops.append(["bulk_start"])
        if self.config_text is not None:
            self._gen += 1
            self._ops.append(["cfg", self._gen, self.config_text])
        self._dirty = dict.fromkeys(self.gw.engines())
        self.flush(now)
        self._ops.append(["bulk_end", sorted(s.conn_id for s in self._synced.values())])
        self.flush(now)

    # ------------------------------------------------------------------ datagrams

    def _send_ops(self, ops: list[Any]) -> None:
        chunk: list[bytes] = []
        size = 0
        for op in ops:
            raw = encode(op)  # once: the datagram body is put together from these
            if chunk and size + len(raw) > MAX_DATAGRAM:
                self._send_chunk(chunk)
                chunk, size = [], 0
            chunk.append(raw)
            size += len(raw)
        if chunk:
            self._send_chunk(chunk)

    def _send_chunk(self, ops: list[bytes]) -> None:
        if self.role is not Role.ACTIVE:  # a standby sends nacks and hellos only, outside the numbering
            self._out.append(self.channel.seal(DATA, encode_list([encode(0), encode_list(ops)])))
            return
        self._dseq += 1
        body = encode_list([encode(self._dseq), encode_list(ops)])
        self._buffer[self._dseq] = body
        if len(self._buffer) > RESEND_BUFFER:
            self._buffer.popitem(last=False)
        if self.channel.peer_boot != bytes(8):
            self._out.append(self.channel.seal(DATA, body))

    def _hello(self, now: float) -> None:
        self._hello_at = now
        body = {"role": self.role.value, "prio": self.priority, "node": self.node_id, "workers": self.workers,
                "bulk": self._asks if self.role is Role.STANDBY and self._need_bulk else 0, "life": self._peer_life}
        self._out.append(self.channel.seal(HELLO, encode(body)))

    def _on_hello(self, msg: Opened, body: Any, now: float) -> None:
        if not isinstance(body, dict):
            self.channel.stats.malformed += 1
            return
        theirs = body.get("workers", 1)
        if theirs != self.workers:
            if not self.mismatch:
                self._log(f"HRP error: the other node runs {theirs} worker(s), this one {self.workers}: both "
                          "nodes of a pair must run the same --workers; no synchronisation")
            self.mismatch += 1
            return
        new_life = msg.peer_boot != self.channel.peer_boot
        self.channel.peer_boot = msg.peer_boot
        was_down = not self.link_alive(now)
        self.peer_heard = now
        self.peer_role, self.peer_priority = str(body.get("role", "")), int(body.get("prio", 0))
        if new_life or was_down:
            self._hello(now)  # tell it at once who we are (it needs our boot id for data)
        if self.role is Role.ACTIVE and self.peer_role == "active":
            self._split_brain(body, now)
        # A standby that asks, or follows no stream of this life of ours, gets everything (once per life
        # of it unless it asks again).
        ask = (msg.peer_boot, int(body.get("bulk") or 0))
        lost = body.get("life") != self.channel.boot and (self._bulk_for or (b"",))[0] != msg.peer_boot
        if self.role is Role.ACTIVE and self.peer_role == "standby" and (lost or (ask[1] and ask != self._bulk_for)):
            self._bulk_for = ask
            self._bulk(now)

    def _split_brain(self, body: Any, now: float) -> None:
        """Both nodes active (the heartbeat link was down): the one VRRP would elect stays (higher
        priority, then higher node id), the other becomes standby and takes the winner's SAs."""
        self.stats.split_brain += 1
        mine = (self.priority, self.node_id)
        theirs = (int(body.get("prio", 0)), int(body.get("node", 0)))
        keep = mine > theirs
        self._log(f"HRP split brain detected: both nodes active; priority/id {mine} vs {theirs}: "
                  f"this node {'stays active' if keep else 'becomes standby'}")
        if not keep:
            self.set_role(Role.STANDBY, now)

    def _on_data(self, msg: Opened, body: list[Any], now: float) -> None:
        dseq, ops = body
        if not isinstance(dseq, int) or not isinstance(ops, list):
            self.channel.stats.malformed += 1
            return
        if self.role is Role.ACTIVE:
            for op in ops:
                self._on_control(op, now)
            return
        if msg.peer_boot != self._peer_life:
            # A new active (or a new life of it): what it sent before is no concern, a bulk sync is.
            self._peer_life, self._peer_dseq, self._missing = msg.peer_boot, dseq - 1, {}
            self._cfg_gen = 0
            self._gens.clear()  # its generations start again
            self._want_bulk()
        if dseq > self._peer_dseq:
            for gap in range(self._peer_dseq + 1, dseq):
                self._missing[gap] = now
            self._peer_dseq = dseq
            if len(self._missing) > MAX_MISSING:
                self._missing.clear()
                self._want_bulk()
                self._hello(now)
        elif dseq in self._missing:
            del self._missing[dseq]
        else:
            return  # a duplicate of an already applied datagram (a resend that crossed)
        for op in ops:
            try:
                self._apply(op, now)
            except (SnapshotError, KeyError, TypeError, ValueError, IndexError):
                self.stats.import_failed += 1

    def _on_control(self, op: Any, now: float) -> None:
        """The standby's requests: datagrams it missed."""
        if not isinstance(op, list) or not op or op[0] != "nack":
            return
        for dseq in op[1]:
            body = self._buffer.get(int(dseq))
            if body is None:
                self._bulk(now)
                return
            self.stats.resent += 1
            self._out.append(self.channel.seal(DATA, body))

    # ------------------------------------------------------------------ standby: applying

    def _newer(self, conn_id: int, gen: int) -> bool:
        """Whether an SA operation is newer than what was applied for that conn-id (a reordered older
        one is counted and ignored)."""
        if gen <= self._gens.get(conn_id, 0):
            self.stats.stale_ignored += 1
            return False
        self._gens[conn_id] = gen
        return True

    def _apply(self, op: list[Any], now: float) -> None:
        kind = op[0]
        if kind == "sa":
            _, conn_id, gen, rec = op
            if not self._newer(conn_id, gen):
                return
            old = self.gw.engine_of(conn_id)
            if old is not None:
                self.gw.drop_quietly(old, now)
            self.gw.adopt(rec, now)
            for crec in rec["children"]:
                self._rates[int(crec["spi_in"])] = 0
            self.stats.sas_applied += 1
        elif kind == "del":
            _, conn_id, gen, reason = op
            if not self._newer(conn_id, gen):
                return
            sa = self.gw.engine_of(conn_id)
            if sa is not None:
                entry = self.gw.sad.ike(conn_id)
                if entry is not None and reason:
                    for row in [entry, *(c for i in entry.child_ids if (c := self.gw.sad.get(i)) is not None)]:
                        self.gw.sad.offline.record_sa(row, str(reason), now)
                self.gw.drop_quietly(sa, now)
            self.stats.deletes_applied += 1
        elif kind == "mid":
            _, conn_id, mids = op
            sa = self.gw.engine_of(conn_id)
            if sa is not None:
                self.gw.set_mids(sa, [int(m) for m in mids])
        elif kind == "esp":
            _, conn_id, changed, heard = op
            sa = self.gw.engine_of(conn_id)
            for spi, seq_out, top, bits, rate in changed:
                self.gw.set_esp_state(int(spi), int(seq_out), int(top), bytes(bits))
                self._rates[int(spi)] = max(0, int(rate))
            if sa is not None:
                sa.note_inbound(now - float(heard))
        elif kind == "cfg":
            _, gen, text = op
            if gen <= self._cfg_gen:
                self.stats.stale_ignored += 1
                return
            self._cfg_gen = gen
            self.config_text = str(text)
            self.stats.configs_applied += 1
            if self.on_config is not None:
                self.on_config(self.config_text)
        elif kind == "bulk_start":
            self._need_bulk = False
            self.stats.bulk_received += 1
        elif kind == "bulk_end":
            listed = {int(c) for c in op[1]}
            for sa in self.gw.engines():
                if isinstance(sa.handle, int) and sa.handle not in listed:
                    self.gw.drop_quietly(sa, now)


__all__ = ["Role", "SyncNode", "SyncStats"]

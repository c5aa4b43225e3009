"""Export and import of what both engine versions share, for a hot-standby pair (issue 17).

A snapshot is plain data (see ``ikegate.ha.codec``): keys and SPIs as bytes, times as *remaining* or
*elapsed* seconds relative to the exporter's ``now`` so that the two nodes' clocks never need to agree
(each node uses its own monotonic clock). Configuration is referenced by name (the IKE peer's name; a
Child SA's configuration is looked up again from its selectors), never copied: both nodes hold the same
configuration (``hrp auto-sync``), and secrets such as the PSK never travel in a snapshot.

Only established SAs are exported: a negotiation in flight on the active node is lost on failover and
started again by whoever initiated it (as on the USG and strongSwan's ``ha`` plugin).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ikegate.ike.core.auth import Verdict
from ikegate.ike.core.child import ChildSa, ChildState
from ikegate.ike.core.config import Addr, ChildSaConfig, IkeSaConfig, Mode, ResponderPolicy
from ikegate.ike.crypto import encr_alg, integ_alg
from ikegate.ike.wire.v2 import TrafficSelector

if TYPE_CHECKING:  # pragma: no cover
    from ikegate.ike.core.base import EngineBase
    from ikegate.ike.core.engine import Engine

#: Bumped when a field changes meaning; an importer refuses other versions (:class:`SnapshotError`).
SNAPSHOT_VERSION = 1

Record = dict[str, Any]


class SnapshotError(ValueError):
    """A snapshot this build cannot import (other format version, missing field, unknown algorithm or
    configuration no longer present)."""


class Resolver(Protocol):
    """What an importing node supplies: its own configuration objects for the names a snapshot carries."""

    @property
    def policy(self) -> ResponderPolicy | None: ...

    @property
    def rng(self) -> Callable[[int], bytes]: ...

    @property
    def spi_allocator(self) -> Callable[[], int] | None: ...

    def ike_config(self, name: str, local: Addr, version: int) -> IkeSaConfig | None: ...

    def child_config(self, sa: Engine, ts_local: list[TrafficSelector],
                     ts_remote: list[TrafficSelector]) -> ChildSaConfig | None: ...


def _rel(when: float | None, now: float) -> float | None:
    return None if when is None else when - now


def _abs(delta: float | None, now: float) -> float | None:
    return None if delta is None else now + delta


def ts_out(ts: TrafficSelector) -> list[Any]:
    return [int(ts.ts_type), int(ts.ip_protocol), ts.start_port, ts.end_port, ts.start_addr.packed,
            ts.end_addr.packed]


def ts_in(rec: list[Any]) -> TrafficSelector:
    ts_type, proto, start_port, end_port, start, end = rec
    return TrafficSelector(int(ts_type), int(proto), int(start_port), int(end_port),
                           ipaddress.ip_address(bytes(start)), ipaddress.ip_address(bytes(end)))


def export_child(child: ChildSa, now: float) -> Record:
    """A Child SA pair: SPIs, keys, algorithms, selectors, role and lifetimes (ESP counters are the
    dataplane's and added by the gateway)."""
    return {
        "spi_in": child.spi_in, "spi_out": child.spi_out,
        "encr": [child.encr.id, child.encr.key_bits], "integ": child.integ.id if child.integ else None,
        "ek_in": child.encr_key_in, "ak_in": child.integ_key_in,
        "ek_out": child.encr_key_out, "ak_out": child.integ_key_out,
        "ts_l": [ts_out(t) for t in child.ts_local], "ts_r": [ts_out(t) for t in child.ts_remote],
        "mode": child.mode.value, "init": child.initiator, "age": now - child.created,
        "rekey": _rel(child.rekey_at, now), "expire": child.expire_at - now, "dh": child.dh,
        "encap": child.udp_encap, "rekeyed": child.state is ChildState.REKEYED,
    }


def import_child(rec: Record, now: float, config: ChildSaConfig) -> ChildSa:
    encr_id, bits = rec["encr"]
    child = ChildSa(
        spi_in=int(rec["spi_in"]), spi_out=int(rec["spi_out"]), config=config,
        encr=encr_alg(int(encr_id), bits), integ=integ_alg(int(rec["integ"])) if rec["integ"] is not None else None,
        encr_key_in=rec["ek_in"], integ_key_in=rec["ak_in"], encr_key_out=rec["ek_out"], integ_key_out=rec["ak_out"],
        ts_local=[ts_in(t) for t in rec["ts_l"]], ts_remote=[ts_in(t) for t in rec["ts_r"]],
        mode=Mode(rec["mode"]), initiator=bool(rec["init"]), created=now - float(rec["age"]),
        rekey_at=_abs(rec["rekey"], now), expire_at=now + float(rec["expire"]), dh=rec["dh"],
        udp_encap=bool(rec["encap"]),
    )
    if rec["rekeyed"]:
        child.state = ChildState.REKEYED
    return child


def export_common(sa: EngineBase, now: float) -> Record:
    """The version-independent part of an established IKE SA."""
    return {
        "fmt": SNAPSHOT_VERSION, "version": sa.version, "initiator": sa.initiator,
        "local": list(sa.local), "peer": list(sa.peer),
        "peer_id": None if sa.peer_id is None else [sa.peer_id[0], sa.peer_id[1]],
        "config": sa.config.name if sa.config else "",
        "age": now - sa.created, "up": None if sa.established_at is None else now - sa.established_at,
        "heard": now - sa.last_received, "sent_esp": _rel(sa._last_outbound, now),
        "rekey": _rel(sa.rekey_at, now), "expire": _rel(sa.expire_at, now),
        "force_encap": sa.force_encap, "msgs": [sa.stats.messages_in, sa.stats.messages_out],
        "auth": None if sa.peer_auth is None else [sa.peer_auth.method, sa.peer_auth.subject, sa.peer_auth.scheme],
        "children": [export_child(c, now) for c in sa.children.values()
                     if c.state in (ChildState.INSTALLED, ChildState.REKEYING, ChildState.REKEYED)],
    }


def check(rec: Record, version: int) -> None:
    if rec.get("fmt") != SNAPSHOT_VERSION:
        raise SnapshotError(f"snapshot format {rec.get('fmt')!r}, this build reads {SNAPSHOT_VERSION}")
    if rec.get("version") != version:
        raise SnapshotError(f"an IKEv{rec.get('version')} snapshot given to the IKEv{version} importer")


def ike_config_of(rec: Record, resolver: Resolver) -> IkeSaConfig:
    local = (str(rec["local"][0]), int(rec["local"][1]))
    config = resolver.ike_config(str(rec["config"]), local, int(rec["version"]))
    if config is None:
        raise SnapshotError(f"ike peer {rec['config']!r} is not configured here")
    return config


def restore_common(sa: EngineBase, rec: Record, now: float) -> None:
    """Set the shared fields of a freshly constructed engine from ``rec``."""
    sa.created = now - float(rec["age"])
    sa.established_at = _abs(rec["up"], now) if rec["up"] is not None else None
    sa.last_received = now - float(rec["heard"])
    sa._last_outbound = _abs(rec["sent_esp"], now)
    sa._rekey_at = _abs(rec["rekey"], now)
    sa._expire_at = _abs(rec["expire"], now)
    sa.force_encap = bool(rec["force_encap"])
    sa.peer_id = None if rec["peer_id"] is None else (int(rec["peer_id"][0]), bytes(rec["peer_id"][1]))
    sa.stats.messages_in, sa.stats.messages_out = (int(n) for n in rec["msgs"])
    auth = rec.get("auth")
    sa.peer_auth = None if auth is None else Verdict(int(auth[0]), str(auth[1]), str(auth[2]))


def restore_children(sa: EngineBase, rec: Record, now: float, resolver: Resolver) -> None:
    """Rebuild the Child SAs; one whose configuration is gone here is skipped (the peer's next use of it
    gets INVALID_SPI and it renegotiates)."""
    for crec in rec["children"]:
        ts_l, ts_r = [ts_in(t) for t in crec["ts_l"]], [ts_in(t) for t in crec["ts_r"]]
        cfg = resolver.child_config(sa, ts_l, ts_r)
        if cfg is None:
            continue
        child = import_child(crec, now, cfg)
        sa.children[child.spi_in] = child


__all__ = ["SNAPSHOT_VERSION", "Record", "Resolver", "SnapshotError", "check", "export_child", "export_common",
           "ike_config_of", "import_child", "restore_children", "restore_common", "ts_in", "ts_out"]

"""Export and import of an established IKEv1 ISAKMP SA (issue 17's hot standby)."""

from __future__ import annotations

from ikegate.ike.core.snapshot import Record, Resolver, SnapshotError
from ikegate.ike.v1.sa import IsakmpSa


def export_ike(sa: IsakmpSa, now: float) -> Record:
    raise SnapshotError("IKEv1 snapshots are not implemented yet")


def import_ike(rec: Record, now: float, resolver: Resolver) -> IsakmpSa:
    raise SnapshotError("IKEv1 snapshots are not implemented yet")


def mids(sa: IsakmpSa) -> list[int]:
    return []


def set_mids(sa: IsakmpSa, mids: list[int]) -> None:
    """IKEv1 message IDs are random per exchange: nothing to move."""


__all__ = ["export_ike", "import_ike", "mids", "set_mids"]

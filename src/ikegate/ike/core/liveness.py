"""What both IKE engines know of the peer's liveness from ESP, for DPD (RFC 3706, RFC 7296 §2.4).

The engines never see ESP; their owner reads the dataplane's per-SA times at the engine's timer (and on
the first packet out after a quiet spell) and passes them on here. On-demand DPD probes only a peer we
sent ESP to since we last heard from it, by IKE or ESP; periodic DPD probes any peer silent for the idle
time. Both engines take this mixin so the bookkeeping is written once.
"""

from __future__ import annotations


class EspLiveness:
    """``last_received`` (any authentic IKE message or ESP packet from the peer) and the last ESP out."""

    __slots__ = ("_last_outbound", "last_received")  # the engines are slotted: tens of thousands live at once
    last_received: float
    _last_outbound: float | None

    def note_inbound(self, when: float) -> None:
        """ESP from the peer arrived at ``when``: proof of life, DPD can wait."""
        self.last_received = max(self.last_received, when)

    def note_outbound(self, when: float) -> None:
        """ESP to the peer left at ``when``: what on-demand DPD waits for before it probes."""
        if self._last_outbound is None or when > self._last_outbound:
            self._last_outbound = when

    def _sent_since_heard(self) -> bool:
        """We sent ESP after the peer's last sign of life (the on-demand DPD condition)."""
        return self._last_outbound is not None and self._last_outbound > self.last_received


__all__ = ["EspLiveness"]

"""The one error an engine raises on its own account.

A malformed or hostile datagram is the peer's fault: the engines drop it or answer it with a Notify and
carry on. A move that the engine's own transition table forbids is *our* fault, a bug in the state
machine; were it a ``ValueError`` the ``receive_datagram`` guard would count it as a dropped packet and
the bug would hide as packet loss. ``ProtocolViolation`` therefore derives from no error class that any
bad-input handler catches (h11's ``LocalProtocolError`` plays the same part), and surfaces to the caller.
"""

from __future__ import annotations


class ProtocolViolation(Exception):
    """An engine was asked for a transition its table does not allow: a bug, never bad input."""


__all__ = ["ProtocolViolation"]

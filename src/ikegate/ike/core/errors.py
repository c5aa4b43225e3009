"""The one error an engine raises on its own account.

A malformed or hostile datagram is the peer's fault: the engines drop it or answer it with a Notify and
carry on. A move that the engine's own transition table forbids is *our* fault, a bug in the state
machine; were it a ``ValueError`` the ``receive_datagram`` guard would count it as a dropped packet and
the bug would hide as packet loss. ``ProtocolViolation`` therefore derives from no error class that any
bad-input handler catches (h11's ``LocalProtocolError`` plays the same part), and surfaces to the caller.
"""

from __future__ import annotations

from typing import ClassVar

from ikegate.ike.wire.registry import Registry


class Refusal(Exception):
    """Inside message processing: the peer's message is refused with this Notify (bad input, answered).

    Each version names its Notify types from its own registry (``names``); the text is the log's detail.
    """

    names: ClassVar[type[Registry]] = Registry

    def __init__(self, notify: int, detail: str = "", data: bytes = b"") -> None:
        super().__init__(detail or self.names.text(notify))
        self.notify = notify
        self.data = data


class ProtocolViolation(Exception):
    """An engine was asked for a transition its table does not allow: a bug, never bad input."""


__all__ = ["ProtocolViolation", "Refusal"]

"""What both wire codecs (IKEv2 and ISAKMP/IKEv1) share: the decode error and length checks."""

from __future__ import annotations


class WireParseError(Exception):
    """A message that cannot be decoded, with the Notify the receiver should answer with (``notify``) and
    its data. Each codec subclasses it with its own default Notify type."""

    default_notify = 0

    def __init__(self, message: str, notify: int | None = None, data: bytes = b"") -> None:
        super().__init__(message)
        self.notify = self.default_notify if notify is None else notify
        self.data = data


def check_u16(length: int, what: str) -> int:
    """``length`` if it fits a 16-bit length field; encoding refuses anything larger."""
    if length > 0xFFFF:
        raise ValueError(f"{what} too long for its 16-bit length field: {length}")
    return length

"""The encoding of sync records: MessagePack (the ``msgpack`` C extension), behind a small interface.

Why MessagePack: records hold keys and SPIs as bytes (JSON would need base64 and doubles their size), the
decoder reads input from the other node, so it must build plain values only (pickle and marshal are out),
and the stream must keep up with the active's set-up rate: a pure-Python tag-length-value coder cost
35-105 us per IKE SA record to encode and ~100 us to decode; msgpack does both in 5-7 us
(``bench/ha_sync.py``). Values: None, bool, int (64 bits), float, bytes, str, list, dict with str keys.
A malformed input raises :class:`CodecError`, never anything else.
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack  # type: ignore[import-untyped]  # no stubs published

#: A decoded value (records are read as ``dict[str, Any]`` by their consumers).
Value = Any

_MAX_INPUT = 16 * 1024 * 1024


class CodecError(ValueError):
    """The input is not a well-formed encoding."""


def encode(value: Value) -> bytes:
    try:
        return bytes(msgpack.packb(value, use_bin_type=True))
    except (TypeError, ValueError, OverflowError) as exc:
        raise TypeError(f"cannot encode: {exc}") from exc


def encode_list(encoded: list[bytes]) -> bytes:
    """A list whose items are already encoded (the sync stream measures each operation once, then
    packs several into one datagram without encoding them again): the MessagePack array header."""
    n = len(encoded)
    if n < 16:
        head = bytes((0x90 | n,))
    elif n < 1 << 16:
        head = b"\xdc" + struct.pack("!H", n)
    else:
        head = b"\xdd" + struct.pack("!I", n)
    return head + b"".join(encoded)


def decode(data: bytes) -> Value:
    if len(data) > _MAX_INPUT:
        raise CodecError("too large")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # msgpack raises several types (ExtraData, FormatError, StackError, ValueError...)
        raise CodecError(str(exc) or type(exc).__name__) from exc


__all__ = ["CodecError", "Value", "decode", "encode", "encode_list"]

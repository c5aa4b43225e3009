"""A compact, self-describing binary encoding for sync records (a small CBOR-like tag-length-value).

Why not JSON or pickle: records hold keys and SPIs as bytes (JSON would need base64 and doubles their
size), and the decoder reads input from the other node, so it must build plain values only (pickle and
marshal are out). Values: None, bool, int (any size, zigzag LEB128), float, bytes, str, list, dict with str
keys. A malformed input raises :class:`CodecError`, never anything else.
"""

from __future__ import annotations

import struct
from typing import Any

#: A decoded value (records are read as ``dict[str, Any]`` by their consumers).
Value = Any

_NONE, _TRUE, _FALSE, _INT, _FLOAT, _BYTES, _STR, _LIST, _DICT = range(9)
_D = struct.Struct("!d")
MAX_DEPTH = 16


class CodecError(ValueError):
    """The input is not a well-formed encoding."""


def _varint(n: int, out: bytearray) -> None:
    """LEB128: lengths and (zigzagged) integers take one byte below 128, where most of them are."""
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _read_varint(data: memoryview, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if pos >= len(data) or shift > 70:
            raise CodecError("bad varint")
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, pos
        shift += 7


def encode(value: Value) -> bytes:
    out = bytearray()
    _enc(value, out)
    return bytes(out)


def encode_list(encoded: list[bytes]) -> bytes:
    """A list whose items are already encoded (the sync stream measures each operation once, then
    packs several into one datagram without encoding them again)."""
    out = bytearray((_LIST,))
    _varint(len(encoded), out)
    return bytes(out) + b"".join(encoded)


#: Encoded dict keys and short texts: records repeat the same few dozen names.
_TEXT_CACHE: dict[str, bytes] = {}


def _text(v: str) -> bytes:
    cached = _TEXT_CACHE.get(v)
    if cached is None:
        raw = v.encode()
        head = bytearray((_STR,))
        _varint(len(raw), head)
        cached = bytes(head) + raw
        if len(v) <= 32 and len(_TEXT_CACHE) < 4096:
            _TEXT_CACHE[v] = cached
    return cached


def _enc(v: Value, out: bytearray) -> None:
    t = type(v)
    if t is int:
        out.append(_INT)
        _varint(v << 1 if v >= 0 else ((-v) << 1) - 1, out)
    elif t is bytes:
        out.append(_BYTES)
        _varint(len(v), out)
        out += v
    elif t is str:
        out += _text(v)
    elif v is None:
        out.append(_NONE)
    elif t is bool:
        out.append(_TRUE if v else _FALSE)
    elif t is float:
        out.append(_FLOAT)
        out += _D.pack(v)
    elif t is list or t is tuple:
        out.append(_LIST)
        _varint(len(v), out)
        for item in v:
            _enc(item, out)
    elif t is dict:
        out.append(_DICT)
        _varint(len(v), out)
        for key, item in v.items():
            if type(key) is not str:
                raise TypeError("dict keys must be text")
            out += _text(key)
            _enc(item, out)
    elif isinstance(v, int):  # IntEnum and friends: their number
        _enc(int(v), out)
    elif isinstance(v, str):
        _enc(str(v), out)
    else:
        raise TypeError(f"cannot encode {t.__name__}")


def decode(data: bytes) -> Value:
    value, pos = _dec(memoryview(data), 0, 0)
    if pos != len(data):
        raise CodecError("trailing bytes")
    return value


def _take(data: memoryview, pos: int, n: int) -> int:
    if pos + n > len(data):
        raise CodecError("truncated")
    return pos + n


def _dec(data: memoryview, pos: int, depth: int) -> tuple[Value, int]:
    if depth > MAX_DEPTH:
        raise CodecError("nested too deeply")
    end = _take(data, pos, 1)
    tag = data[pos]
    pos = end
    if tag == _NONE:
        return None, pos
    if tag == _TRUE:
        return True, pos
    if tag == _FALSE:
        return False, pos
    if tag == _INT:
        z, pos = _read_varint(data, pos)
        return (z >> 1) if not z & 1 else -((z + 1) >> 1), pos
    if tag == _FLOAT:
        end = _take(data, pos, 8)
        return float(_D.unpack_from(data, pos)[0]), end
    if tag in (_BYTES, _STR, _LIST, _DICT):
        n, pos = _read_varint(data, pos)
        if tag == _BYTES:
            end = _take(data, pos, n)
            return bytes(data[pos:end]), end
        if tag == _STR:
            end = _take(data, pos, n)
            try:
                return bytes(data[pos:end]).decode(), end
            except UnicodeDecodeError as exc:
                raise CodecError("bad text") from exc
        if n > len(data) - pos:
            raise CodecError("truncated")
        if tag == _LIST:
            items: list[Value] = []
            for _ in range(n):
                item, pos = _dec(data, pos, depth + 1)
                items.append(item)
            return items, pos
        mapping: dict[str, Value] = {}
        for _ in range(n):
            key, pos = _dec(data, pos, depth + 1)
            if not isinstance(key, str):
                raise CodecError("dict key is not text")
            mapping[key], pos = _dec(data, pos, depth + 1)
        return mapping, pos
    raise CodecError(f"unknown tag {tag}")


__all__ = ["CodecError", "Value", "decode", "encode", "encode_list"]

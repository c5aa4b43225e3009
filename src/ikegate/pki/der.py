"""Just enough ASN.1 DER for IKE: writing and reading the TLVs of AlgorithmIdentifiers (RFC 7427) and
distinguished names (ID_DER_ASN1_DN). ``cryptography`` parses certificates, but has no API for a bare
AlgorithmIdentifier or Name, and a full ASN.1 library for these few shapes would be a heavy dependency."""

from __future__ import annotations


def tlv(tag: int, content: bytes) -> bytes:
    """One DER element: tag, definite length, content."""
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + content


def oid(dotted: str) -> bytes:
    parts = [int(p) for p in dotted.split(".")]
    body = bytearray([40 * parts[0] + parts[1]])
    for value in parts[2:]:
        chunk = [value & 0x7F]
        value >>= 7
        while value:
            chunk.append(0x80 | (value & 0x7F))
            value >>= 7
        body.extend(reversed(chunk))
    return tlv(0x06, bytes(body))


NULL = b"\x05\x00"


def seq(*parts: bytes) -> bytes:
    return tlv(0x30, b"".join(parts))


def read_tlv(data: bytes, pos: int = 0) -> tuple[int, bytes, int]:
    """(tag, content, position after) of the DER element at ``pos``; ValueError if it runs short."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first & 0x80:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    else:
        length = first
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, data[pos:pos + length], pos + length


def oid_text(content: bytes) -> str:
    """The dotted form of an OBJECT IDENTIFIER's content octets."""
    first = content[0]
    parts = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    value = 0
    for byte in content[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    return ".".join(str(p) for p in parts)

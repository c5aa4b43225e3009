"""IKEv2 (RFC 7296) message codec: header, generic payload chain and the payload bodies ikegate reads.

Design notes (why it looks the way it does):

* It sits on the hot path of every handshake, so it is plain ``struct`` with precompiled
  :class:`struct.Struct` objects, ``slots`` dataclasses and one dict lookup per payload to pick a body
  decoder; no reflection, no enums built per call (registry values travel as plain ``int``).
* It is strict about *syntax* and silent about *semantics*. Anything that makes the byte layout
  inconsistent (lengths, counts, substructure markers, proposal numbering) raises :class:`ParseError`
  carrying the Notify the receiver should answer with (RFC 7296 §2.21). Whether a proposal is
  acceptable, an SPI known or a traffic selector allowed is the state machine's business.
* Decoding never raises anything but :class:`ParseError` on hostile input (the fuzz tests hold it to
  that). Encoding raises :class:`ValueError` only for values that cannot be put on the wire at all
  (field overflow, an SK payload that is not last, an address of the wrong family).
* The SK payload is kept opaque (IV | ciphertext | ICV): decryption belongs to the crypto layer, which
  then calls :func:`decode_payloads` on the plaintext with ``SK.first_payload``. The Encrypted Fragment
  payload (SKF, RFC 7383 §2.5) is the same with its Fragment Number and Total Fragments in front; whether
  those numbers make sense together is the reassembler's business (``ikegate.ike.v2.fragments``).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import ClassVar, TypeAlias, TypeVar

from ikegate.ike.wire.errors import WireParseError, check_u16
from ikegate.ike.wire.registry import HeaderFlag, NotifyType, PayloadType, ProtocolId, TsType

__all__ = [
    "AUTH",
    "CP",
    "HEADER_LEN",
    "KE",
    "SA",
    "SK",
    "SKF",
    "Delete",
    "Header",
    "IDi",
    "IDr",
    "Message",
    "Nonce",
    "Notify",
    "ParseError",
    "Payload",
    "Proposal",
    "TSi",
    "TSr",
    "TrafficSelector",
    "Transform",
    "Unknown",
    "VendorId",
    "decode_message",
    "decode_payloads",
    "encode_message",
    "encode_payloads",
    "sk_generic_header",
    "skf_header",
]

HEADER_LEN = 28

# Precompiled layouts (RFC 7296 §3.1-§3.16). "x" pads are the RESERVED fields: sent as zero, ignored
# on receipt, as the RFC requires.
_HEADER = struct.Struct("!8s8sBBBBII")  # SPIi SPIr next version exchange flags message-id length
_GENERIC = struct.Struct("!BBH")  # next payload, C flag + reserved, payload length
_PROPOSAL = struct.Struct("!BxHBBBB")  # last/more, length, number, protocol, SPI size, #transforms
_TRANSFORM = struct.Struct("!BxHBxH")  # last/more, length, transform type, transform id
_ATTR = struct.Struct("!HH")  # AF|type, value (TV) or length (TLV)
_TYPE_RES = struct.Struct("!B3x")  # ID type / auth method / CFG type / #TS, then 3 reserved
_KE_HEAD = struct.Struct("!Hxx")  # DH group, reserved
_NOTIFY_HEAD = struct.Struct("!BBH")  # protocol, SPI size, notify type
_DELETE_HEAD = struct.Struct("!BBH")  # protocol, SPI size, number of SPIs
_TS_HEAD = struct.Struct("!BBHHH")  # TS type, IP protocol, selector length, start port, end port
_TS_V4_FULL = struct.Struct("!BBHHHII")  # ... and both IPv4 addresses
_KEY_LENGTH_TV = struct.Struct("!HH")
_SKF_HEAD = struct.Struct("!HH")  # fragment number, total fragments (RFC 7383 §2.5)

_CRITICAL = 0x80
_AF_TV = 0x8000
_ATTR_KEY_LENGTH_TV = _AF_TV | 14  # TransformAttr.KEY_LENGTH in TV format
_MORE_PROPOSALS = 2  # "Last Substructure" value in a proposal that is followed by another one
_MORE_TRANSFORMS = 3  # ... and in a transform that is followed by another one

_T_SK = int(PayloadType.SK)
_T_SKF = int(PayloadType.SKF)
_P_IKE = int(ProtocolId.IKE)
_P_AH = int(ProtocolId.AH)
_P_ESP = int(ProtocolId.ESP)
_TS_V4 = int(TsType.TS_IPV4_ADDR_RANGE)
_TS_V6 = int(TsType.TS_IPV6_ADDR_RANGE)
_TS_V4_LEN = 16
_TS_V6_LEN = 40

#: Payload types defined by RFC 7296 itself that this codec keeps opaque (as :class:`Unknown`). The
#: critical bit "MUST be ignored by the recipient if the recipient understands the payload type", and
#: these we do understand well enough to pass up, so a peer setting it on them is not an error here.
_KNOWN_OPAQUE = frozenset({int(PayloadType.CERT), int(PayloadType.CERTREQ), int(PayloadType.EAP)})


class ParseError(WireParseError):
    """A message that cannot be decoded, with the Notify the receiver should answer with.

    ``notify`` is INVALID_SYNTAX for malformed bytes and UNSUPPORTED_CRITICAL_PAYLOAD (with ``data`` = the
    offending payload type as one byte, RFC 7296 §3.10.1) for a critical payload we do not know.
    """

    default_notify = NotifyType.INVALID_SYNTAX




# --------------------------------------------------------------------------------------------- header


@dataclass(slots=True)
class Header:
    """The fixed 28-byte IKE header (RFC 7296 §3.1). ``flags`` keeps the whole octet as received."""

    spi_i: bytes
    spi_r: bytes
    next_payload: int
    exchange: int
    flags: int
    message_id: int
    length: int = 0
    major: int = 2
    minor: int = 0

    @property
    def is_initiator(self) -> bool:
        return bool(self.flags & HeaderFlag.INITIATOR)

    @property
    def is_response(self) -> bool:
        return bool(self.flags & HeaderFlag.RESPONSE)

    def pack(self) -> bytes:
        # struct's "8s" would silently pad or truncate a wrong-sized SPI; that is always a caller bug.
        if len(self.spi_i) != 8 or len(self.spi_r) != 8:
            raise ValueError("IKE SPIs are 8 bytes")
        return _HEADER.pack(
            self.spi_i,
            self.spi_r,
            self.next_payload,
            (self.major << 4) | self.minor,
            self.exchange,
            self.flags,
            self.message_id,
            self.length,
        )

    @classmethod
    def unpack(cls, data: bytes) -> Header:
        """Read the header. The major version is left to the caller, which answers INVALID_MAJOR_VERSION."""
        if len(data) < HEADER_LEN:
            raise ParseError(f"datagram of {len(data)} bytes is shorter than the IKE header")
        spi_i, spi_r, next_payload, version, exchange, flags, message_id, length = _HEADER.unpack_from(data)
        major, minor = version >> 4, version & 0x0F
        return cls(spi_i, spi_r, next_payload, exchange, flags, message_id, length, major, minor)


# ------------------------------------------------------------------------------------------ payloads


@dataclass(slots=True)
class Transform:
    """One transform of a proposal (RFC 7296 §3.3.2).

    ``key_length`` is the Key Length attribute (type 14, TV). Any other attribute is kept verbatim,
    already encoded, in ``attrs`` so an unknown one survives a decode/encode round trip.
    """

    type: int
    id: int
    key_length: int | None = None
    attrs: bytes = b""

    def _encode(self, last: bool) -> bytes:
        attrs = self.attrs
        if self.key_length is not None:
            attrs = _KEY_LENGTH_TV.pack(_ATTR_KEY_LENGTH_TV, self.key_length) + attrs
        length = check_u16(8 + len(attrs), "transform")
        return _TRANSFORM.pack(0 if last else _MORE_TRANSFORMS, length, self.type, self.id) + attrs


@dataclass(slots=True)
class Proposal:
    """A proposal (RFC 7296 §3.3.1). ``spi`` is empty for IKE in IKE_SA_INIT, 8 bytes for an IKE rekey,
    4 bytes for ESP/AH."""

    number: int
    protocol: int
    spi: bytes
    transforms: list[Transform]

    def _encode(self, last: bool) -> bytes:
        n = len(self.transforms)
        if n > 0xFF or len(self.spi) > 0xFF:
            raise ValueError("too many transforms or SPI too long for a proposal")
        body = _transforms_body(self.transforms)
        length = check_u16(8 + len(self.spi) + len(body), "proposal")
        marker = 0 if last else _MORE_PROPOSALS
        head = _PROPOSAL.pack(marker, length, self.number, self.protocol, len(self.spi), n)
        return head + self.spi + body


_TransformKey: TypeAlias = tuple[tuple[int, int, int | None, bytes], ...]
_TRANSFORM_BODIES: dict[_TransformKey, bytes] = {}


def _transforms_body(transforms: list[Transform]) -> bytes:
    """The encoded transforms of one proposal. We send the same few suites (our proposals, the chosen
    one) in SA after SA: one encoding per distinct suite. The table holds only what we sent, bounded."""
    key = tuple([(t.type, t.id, t.key_length, t.attrs) for t in transforms])
    body = _TRANSFORM_BODIES.get(key)
    if body is None:
        last = len(transforms) - 1
        body = b"".join([t._encode(i == last) for i, t in enumerate(transforms)])
        if len(_TRANSFORM_BODIES) < 256:
            _TRANSFORM_BODIES[key] = body
    return body


@dataclass(slots=True)
class SA:
    """Security Association payload (RFC 7296 §3.3): a list of proposals."""

    TYPE: ClassVar[int] = PayloadType.SA
    proposals: list[Proposal]
    critical: bool = False

    def body(self) -> bytes:
        n = len(self.proposals)
        return b"".join([p._encode(i == n - 1) for i, p in enumerate(self.proposals)])


@dataclass(slots=True)
class KE:
    """Key Exchange payload (RFC 7296 §3.4)."""

    TYPE: ClassVar[int] = PayloadType.KE
    group: int
    data: bytes
    critical: bool = False

    def body(self) -> bytes:
        return _KE_HEAD.pack(self.group) + self.data


@dataclass(slots=True)
class _IdPayload:
    """Shared layout of IDi and IDr (RFC 7296 §3.5)."""

    id_type: int
    data: bytes
    critical: bool = False

    def body(self) -> bytes:
        """The body after the generic header: RestOfInitIDPayload / RestOfRespIDPayload of §2.15.

        Rebuilt with zero RESERVED octets, as the RFC mandates senders to send them (strongSwan computes
        the AUTH octets the same way).
        """
        return _TYPE_RES.pack(self.id_type) + self.data


@dataclass(slots=True)
class IDi(_IdPayload):
    """Identification of the initiator."""

    TYPE: ClassVar[int] = PayloadType.IDi


@dataclass(slots=True)
class IDr(_IdPayload):
    """Identification of the responder."""

    TYPE: ClassVar[int] = PayloadType.IDr


@dataclass(slots=True)
class AUTH:
    """Authentication payload (RFC 7296 §3.8)."""

    TYPE: ClassVar[int] = PayloadType.AUTH
    method: int
    data: bytes
    critical: bool = False

    def body(self) -> bytes:
        return _TYPE_RES.pack(self.method) + self.data


@dataclass(slots=True)
class Nonce:
    """Nonce payload (RFC 7296 §3.9); 16 to 256 bytes on receipt."""

    TYPE: ClassVar[int] = PayloadType.NONCE
    data: bytes
    critical: bool = False

    def body(self) -> bytes:
        return self.data


@dataclass(slots=True)
class Notify:
    """Notify payload (RFC 7296 §3.10)."""

    TYPE: ClassVar[int] = PayloadType.NOTIFY
    notify_type: int
    protocol: int = 0
    spi: bytes = b""
    data: bytes = b""
    critical: bool = False

    def body(self) -> bytes:
        if len(self.spi) > 0xFF:
            raise ValueError("notify SPI too long")
        return _NOTIFY_HEAD.pack(self.protocol, len(self.spi), self.notify_type) + self.spi + self.data


@dataclass(slots=True)
class Delete:
    """Delete payload (RFC 7296 §3.11): no SPI for IKE (protocol 1), 4-byte SPIs for ESP/AH."""

    TYPE: ClassVar[int] = PayloadType.DELETE
    protocol: int
    spis: list[bytes]
    critical: bool = False

    def body(self) -> bytes:
        spis = self.spis
        if self.protocol == _P_IKE:
            if spis:
                raise ValueError("an IKE SA Delete carries no SPI")
            size = 0
        else:
            size = len(spis[0]) if spis else 4
            if size > 0xFF or any(len(s) != size for s in spis):
                raise ValueError("Delete SPIs must all have the same size")
        if len(spis) > 0xFFFF:
            raise ValueError("too many SPIs for one Delete payload")
        return _DELETE_HEAD.pack(self.protocol, size, len(spis)) + b"".join(spis)


@dataclass(slots=True)
class VendorId:
    """Vendor ID payload (RFC 7296 §3.12)."""

    TYPE: ClassVar[int] = PayloadType.VENDOR
    data: bytes
    critical: bool = False

    def body(self) -> bytes:
        return self.data


class TrafficSelector:
    """One traffic selector (RFC 7296 §3.13.1): type 7 with IPv4, type 8 with IPv6 addresses.

    The addresses are kept as integers (``start``, ``end``; ``family`` 4 or 6), not ``ipaddress``
    objects: every set-up decodes, narrows, installs and records selectors, and building address objects
    for that was a tenth of a responder's CPU per SA. ``start_addr`` / ``end_addr`` give the objects
    back for display. The constructor takes either form. Treat as immutable (it is hashable).
    """

    __slots__ = ("end", "end_port", "family", "ip_protocol", "start", "start_port", "ts_type")

    def __init__(self, ts_type: int, ip_protocol: int, start_port: int, end_port: int,
                 start_addr: int | IPv4Address | IPv6Address, end_addr: int | IPv4Address | IPv6Address,
                 family: int = 0) -> None:
        self.ts_type = ts_type
        self.ip_protocol = ip_protocol
        self.start_port = start_port
        self.end_port = end_port
        if type(start_addr) is int and type(end_addr) is int:
            self.start, self.end = start_addr, end_addr
            self.family = family or (6 if ts_type == _TS_V6 else 4)
        else:
            assert not isinstance(start_addr, int) and not isinstance(end_addr, int)
            if start_addr.version != end_addr.version:
                raise ValueError("traffic selector addresses of two IP versions")
            self.start, self.end = int(start_addr), int(end_addr)
            self.family = start_addr.version

    @property
    def start_addr(self) -> IPv4Address | IPv6Address:
        return IPv4Address(self.start) if self.family == 4 else IPv6Address(self.start)

    @property
    def end_addr(self) -> IPv4Address | IPv6Address:
        return IPv4Address(self.end) if self.family == 4 else IPv6Address(self.end)

    def key(self) -> tuple[int, int, int, int, int, int, int]:
        return (self.ts_type, self.ip_protocol, self.start_port, self.end_port, self.start, self.end, self.family)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrafficSelector):
            return NotImplemented
        return (self.start == other.start and self.end == other.end and self.start_port == other.start_port
                and self.end_port == other.end_port and self.ip_protocol == other.ip_protocol
                and self.ts_type == other.ts_type and self.family == other.family)

    def __hash__(self) -> int:
        return hash(self.key())

    def __repr__(self) -> str:
        return (f"TrafficSelector(ts_type={self.ts_type}, ip_protocol={self.ip_protocol}, "
                f"start_port={self.start_port}, end_port={self.end_port}, start_addr={self.start_addr!r}, "
                f"end_addr={self.end_addr!r})")

    def _encode(self) -> bytes:
        if self.ts_type == _TS_V4:
            size, width = _TS_V4_LEN, 4
        elif self.ts_type == _TS_V6:
            size, width = _TS_V6_LEN, 16
        else:
            raise ValueError(f"cannot encode traffic selector type {self.ts_type}")
        if self.family != (4 if width == 4 else 6):
            raise ValueError("traffic selector addresses do not match its type")
        if width == 4:  # one pack for the common case
            return _TS_V4_FULL.pack(self.ts_type, self.ip_protocol, size, self.start_port, self.end_port,
                                    self.start, self.end)
        head = _TS_HEAD.pack(self.ts_type, self.ip_protocol, size, self.start_port, self.end_port)
        return head + self.start.to_bytes(width, "big") + self.end.to_bytes(width, "big")


@dataclass(slots=True)
class _TsPayload:
    """Shared layout of TSi and TSr (RFC 7296 §3.13)."""

    selectors: list[TrafficSelector]
    critical: bool = False

    def body(self) -> bytes:
        if len(self.selectors) > 0xFF:
            raise ValueError("too many traffic selectors")
        return _TYPE_RES.pack(len(self.selectors)) + b"".join([ts._encode() for ts in self.selectors])


@dataclass(slots=True)
class TSi(_TsPayload):
    """Traffic selectors of the initiator."""

    TYPE: ClassVar[int] = PayloadType.TSi


@dataclass(slots=True)
class TSr(_TsPayload):
    """Traffic selectors of the responder."""

    TYPE: ClassVar[int] = PayloadType.TSr


@dataclass(slots=True)
class SK:
    """Encrypted and Authenticated payload (RFC 7296 §3.14), opaque: IV | ciphertext | ICV.

    Always the last payload; its generic header's Next Payload names the first inner payload.
    """

    TYPE: ClassVar[int] = PayloadType.SK
    first_payload: int
    data: bytes
    critical: bool = False

    def body(self) -> bytes:
        return self.data


@dataclass(slots=True)
class SKF:
    """Encrypted Fragment payload (RFC 7383 §2.5), opaque like SK after its two numbers.

    Always the last payload. ``first_payload`` is the first inner payload's type in fragment 1 and zero
    in the others; ``data`` is IV | ciphertext | ICV of this fragment alone.
    """

    TYPE: ClassVar[int] = PayloadType.SKF
    first_payload: int
    number: int
    total: int
    data: bytes
    critical: bool = False

    def body(self) -> bytes:
        return _SKF_HEAD.pack(self.number, self.total) + self.data


@dataclass(slots=True)
class CP:
    """Configuration payload (RFC 7296 §3.15); attributes kept encoded."""

    TYPE: ClassVar[int] = PayloadType.CP
    cfg_type: int
    data: bytes
    critical: bool = False

    def body(self) -> bytes:
        return _TYPE_RES.pack(self.cfg_type) + self.data


@dataclass(slots=True)
class Unknown:
    """Any other payload (CERT, CERTREQ, EAP, private use ...), body kept verbatim."""

    payload_type: int
    data: bytes
    critical: bool = False

    def body(self) -> bytes:
        return self.data


Payload: TypeAlias = (
    SA | KE | IDi | IDr | AUTH | Nonce | Notify | Delete | VendorId | TSi | TSr | SK | SKF | CP | Unknown
)
P = TypeVar("P", bound=Payload)


# ------------------------------------------------------------------------------------ body decoders


def _decode_attrs(buf: bytes, off: int, end: int) -> tuple[int | None, bytes]:
    """Transform attributes between ``off`` and ``end``: (key length, the other attributes verbatim)."""
    key_length: int | None = None
    other: list[bytes] = []
    while off < end:
        if end - off < 4:
            raise ParseError("truncated transform attribute")
        atype, value = _ATTR.unpack_from(buf, off)
        if atype & _AF_TV:
            if atype == _ATTR_KEY_LENGTH_TV:
                if key_length is not None:
                    raise ParseError("duplicate Key Length attribute")
                key_length = value
            else:
                other.append(buf[off : off + 4])
            off += 4
        else:
            alen = 4 + value
            if off + alen > end:
                raise ParseError("transform attribute runs past its transform")
            other.append(buf[off : off + alen])
            off += alen
    return key_length, b"".join(other)


_CACHED_TRANSFORMS_MAX = 256  # bytes: ~30 transforms; bounds the cache below at about 1 MB


@functools.lru_cache(maxsize=512)
def _parse_transforms(buf: bytes, count: int) -> tuple[Transform, ...]:
    """A proposal's transforms (``buf`` is exactly their bytes). A peer offers the same suites in SA after
    SA (only the ESP SPI in front of them changes), so one parse per distinct run of transforms; the
    Transform objects are shared by every decode of it and are never modified. Bounded, as peers choose."""
    return tuple(_decode_transforms(buf, 0, len(buf), count))


def _decode_transforms(buf: bytes, off: int, end: int, count: int) -> list[Transform]:
    transforms: list[Transform] = []
    last_index = count - 1
    for i in range(count):
        if end - off < 8:
            raise ParseError("proposal shorter than its transform count says")
        marker, length, ttype, tid = _TRANSFORM.unpack_from(buf, off)
        if marker != (0 if i == last_index else _MORE_TRANSFORMS):
            raise ParseError(f"transform {i + 1} of {count} has last-substructure value {marker}")
        if length < 8 or off + length > end:
            raise ParseError(f"bad transform length {length}")
        if length == 8:
            transforms.append(Transform(ttype, tid))
        else:
            key_length, attrs = _decode_attrs(buf, off + 8, off + length)
            transforms.append(Transform(ttype, tid, key_length, attrs))
        off += length
    if off != end:
        raise ParseError("proposal longer than its transforms")
    return transforms


def _decode_sa(body: bytes, critical: bool) -> SA:
    proposals: list[Proposal] = []
    off = 0
    end = len(body)
    marker = _MORE_PROPOSALS
    while marker == _MORE_PROPOSALS:
        if end - off < 8:
            raise ParseError("SA payload truncated: proposal expected")
        marker, length, number, protocol, spi_size, count = _PROPOSAL.unpack_from(body, off)
        if marker != 0 and marker != _MORE_PROPOSALS:
            raise ParseError(f"proposal has last-substructure value {marker}")
        if length < 8 + spi_size or off + length > end:
            raise ParseError(f"bad proposal length {length}")
        spi_end = off + 8 + spi_size
        if length - 8 - spi_size <= _CACHED_TRANSFORMS_MAX:
            transforms = list(_parse_transforms(body[spi_end : off + length], count))
        else:  # an unusually long run (an unauthenticated peer chooses it): parsed, never kept
            transforms = _decode_transforms(body, spi_end, off + length, count)
        proposals.append(Proposal(number, protocol, body[off + 8 : spi_end], transforms))
        off += length
    if off != end:
        raise ParseError("data after the last proposal")
    # §3.3.1: the first proposal is 1 and each next one is one more. A response carries exactly one
    # proposal with the number of the proposal it accepted, so a lone proposal may have any number >= 1.
    if len(proposals) == 1:
        if proposals[0].number == 0:
            raise ParseError("proposal number 0")
    else:
        for i, proposal in enumerate(proposals, 1):
            if proposal.number != i:
                raise ParseError(f"proposal {i} is numbered {proposal.number}")
    return SA(proposals, critical)


def _decode_ke(body: bytes, critical: bool) -> KE:
    if len(body) < 4:
        raise ParseError("KE payload shorter than 4 bytes")
    return KE(_KE_HEAD.unpack_from(body)[0], body[4:], critical)


def _decode_idi(body: bytes, critical: bool) -> IDi:
    if len(body) < 4:
        raise ParseError("IDi payload shorter than 4 bytes")
    return IDi(body[0], body[4:], critical)


def _decode_idr(body: bytes, critical: bool) -> IDr:
    if len(body) < 4:
        raise ParseError("IDr payload shorter than 4 bytes")
    return IDr(body[0], body[4:], critical)


def _decode_auth(body: bytes, critical: bool) -> AUTH:
    if len(body) < 4:
        raise ParseError("AUTH payload shorter than 4 bytes")
    return AUTH(body[0], body[4:], critical)


def _decode_nonce(body: bytes, critical: bool) -> Nonce:
    if not 16 <= len(body) <= 256:
        raise ParseError(f"nonce of {len(body)} bytes (RFC 7296 §3.9: 16 to 256)")
    return Nonce(body, critical)


def _decode_notify(body: bytes, critical: bool) -> Notify:
    if len(body) < 4:
        raise ParseError("Notify payload shorter than 4 bytes")
    protocol, spi_size, notify_type = _NOTIFY_HEAD.unpack_from(body)
    spi_end = 4 + spi_size
    if spi_end > len(body):
        raise ParseError("Notify SPI runs past the payload")
    return Notify(notify_type, protocol, body[4:spi_end], body[spi_end:], critical)


def _decode_delete(body: bytes, critical: bool) -> Delete:
    if len(body) < 4:
        raise ParseError("Delete payload shorter than 4 bytes")
    protocol, spi_size, count = _DELETE_HEAD.unpack_from(body)
    if protocol == _P_IKE and spi_size != 0:
        raise ParseError(f"IKE SA Delete with SPI size {spi_size}")
    if protocol in (_P_ESP, _P_AH) and spi_size != 4:
        raise ParseError(f"ESP/AH Delete with SPI size {spi_size}")
    if spi_size == 0:
        # Nothing to read whatever the count says; an IKE Delete is identified by the header SPIs.
        if len(body) != 4:
            raise ParseError("Delete with SPI size 0 carries data")
        return Delete(protocol, [], critical)
    if len(body) != 4 + spi_size * count:
        raise ParseError(f"Delete announces {count} SPIs of {spi_size} bytes in {len(body) - 4} bytes")
    return Delete(protocol, [body[i : i + spi_size] for i in range(4, len(body), spi_size)], critical)


def _decode_vendor(body: bytes, critical: bool) -> VendorId:
    return VendorId(body, critical)


def _decode_selectors(body: bytes, name: str) -> list[TrafficSelector]:
    return list(_parse_selectors(body, name))


@functools.lru_cache(maxsize=1024)
def _parse_selectors(body: bytes, name: str) -> tuple[TrafficSelector, ...]:
    """Selectors are immutable and a peer proposes the same few in SA after SA: one parse (and one set of
    objects held by every Child SA using them) per distinct payload body; bounded, as peers choose it."""
    if len(body) < 4:
        raise ParseError(f"{name} payload shorter than 4 bytes")
    count = body[0]
    off = 4
    end = len(body)
    selectors: list[TrafficSelector] = []
    for _ in range(count):
        if end - off < 8:
            raise ParseError(f"{name} truncated: {count} selectors announced")
        ts_type, proto, length, start_port, end_port = _TS_HEAD.unpack_from(body, off)
        if off + length > end:
            raise ParseError(f"{name} selector runs past the payload")
        if ts_type == _TS_V4:
            if length != _TS_V4_LEN:
                raise ParseError(f"IPv4 traffic selector of length {length}")
            start_addr = int.from_bytes(body[off + 8 : off + 12], "big")
            end_addr = int.from_bytes(body[off + 12 : off + 16], "big")
            family = 4
        elif ts_type == _TS_V6:
            if length != _TS_V6_LEN:
                raise ParseError(f"IPv6 traffic selector of length {length}")
            start_addr = int.from_bytes(body[off + 8 : off + 24], "big")
            end_addr = int.from_bytes(body[off + 24 : off + 40], "big")
            family = 6
        else:
            # The class has no room for other selector kinds (e.g. RFC 4595 Fibre Channel).
            raise ParseError(f"unsupported traffic selector type {ts_type}")
        selectors.append(TrafficSelector(ts_type, proto, start_port, end_port, start_addr, end_addr, family))
        off += length
    if off != end:
        raise ParseError(f"{name} longer than its {count} selectors")
    return tuple(selectors)


def _decode_tsi(body: bytes, critical: bool) -> TSi:
    return TSi(_decode_selectors(body, "TSi"), critical)


def _decode_tsr(body: bytes, critical: bool) -> TSr:
    return TSr(_decode_selectors(body, "TSr"), critical)


def _decode_cp(body: bytes, critical: bool) -> CP:
    if len(body) < 4:
        raise ParseError("CP payload shorter than 4 bytes")
    return CP(body[0], body[4:], critical)


_DECODERS: dict[int, Callable[[bytes, bool], Payload]] = {
    int(PayloadType.SA): _decode_sa,
    int(PayloadType.KE): _decode_ke,
    int(PayloadType.IDi): _decode_idi,
    int(PayloadType.IDr): _decode_idr,
    int(PayloadType.AUTH): _decode_auth,
    int(PayloadType.NONCE): _decode_nonce,
    int(PayloadType.NOTIFY): _decode_notify,
    int(PayloadType.DELETE): _decode_delete,
    int(PayloadType.VENDOR): _decode_vendor,
    int(PayloadType.TSi): _decode_tsi,
    int(PayloadType.TSr): _decode_tsr,
    int(PayloadType.CP): _decode_cp,
}


# -------------------------------------------------------------------------------------------- chain


def _decode_chain(next_type: int, data: bytes, off: int) -> tuple[list[Payload], int | None]:
    """Walk the payload chain from ``off`` to the end of ``data``; return payloads and the SK (or SKF) offset.

    Offsets stay absolute in ``data`` so the SK offset is directly usable for the integrity check.
    """
    end = len(data)
    payloads: list[Payload] = []
    append, unpack_generic, decoders = payloads.append, _GENERIC.unpack_from, _DECODERS  # locals: per payload
    sk_offset: int | None = None
    while next_type:
        if end - off < 4:
            raise ParseError(f"payload type {next_type} expected at offset {off}, message ends")
        following, flags, length = unpack_generic(data, off)
        if length < 4:
            raise ParseError(f"payload type {next_type} at offset {off} has length {length}")
        stop = off + length
        if stop > end:
            raise ParseError(f"payload type {next_type} at offset {off} runs past the message")
        critical = flags >= _CRITICAL  # the C flag is the octet's top bit
        body = data[off + 4 : stop]
        decoder = decoders.get(next_type)
        if decoder is not None:
            append(decoder(body, critical))
        elif next_type == _T_SK:
            # Last by definition (§3.14): its Next Payload names the first *inner* payload.
            if stop != end:
                raise ParseError(f"{end - stop} bytes after the SK payload")
            payloads.append(SK(following, body, critical))
            return payloads, off
        elif next_type == _T_SKF:
            # RFC 7383 §2.5: like SK it is last and its Next Payload is an inner type (fragment 1 only).
            if stop != end:
                raise ParseError(f"{end - stop} bytes after the SKF payload")
            if len(body) < 4:
                raise ParseError("SKF payload shorter than its fragment numbers")
            number, total = _SKF_HEAD.unpack_from(body)
            payloads.append(SKF(following, number, total, body[4:], critical))
            return payloads, off
        else:
            if critical and next_type not in _KNOWN_OPAQUE:
                raise ParseError(
                    f"unsupported critical payload type {next_type}",
                    NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD,
                    bytes([next_type]),
                )
            payloads.append(Unknown(next_type, body, critical))
        off = stop
        next_type = following
    if off != end:
        raise ParseError(f"{end - off} bytes after the last payload")
    return payloads, sk_offset


def decode_payloads(first_type: int, data: bytes) -> list[Payload]:
    """Decode a payload chain (the message body, or the plaintext of an SK payload)."""
    if type(data) is not bytes:
        data = bytes(data)
    return _decode_chain(first_type, data, 0)[0]


def encode_payloads(payloads: Sequence[Payload]) -> tuple[int, bytes]:
    """Chain payloads: (type of the first payload or 0, bytes with every next-payload/length filled in)."""
    n = len(payloads)
    if n == 0:
        return 0, b""
    # No isinstance with a union (slow): this runs for every payload of every message sent.
    types = [p.payload_type if isinstance(p, Unknown) else p.TYPE for p in payloads]
    types.append(0)
    pack = _GENERIC.pack
    last = n - 1
    parts: list[bytes] = []
    for i, p in enumerate(payloads):
        if type(p) is SK or type(p) is SKF:
            if i != last:
                raise ValueError("the SK or SKF payload must be the last payload")
            following = p.first_payload
        else:
            following = types[i + 1]
        body = p.body()
        length = 4 + len(body)
        if length > 0xFFFF:
            check_u16(length, "payload")
        parts += (pack(following, _CRITICAL if p.critical else 0, length), body)
    return types[0], b"".join(parts)


def sk_generic_header(first_payload: int, body_len: int) -> bytes:
    """Generic header of an SK payload whose body (IV | ciphertext | ICV) is ``body_len`` bytes.

    The encryption layer needs it before the SK payload exists: it is part of the integrity-protected
    data (and of the AEAD associated data, RFC 5282 §5.1).
    """
    return _GENERIC.pack(first_payload, 0, check_u16(4 + body_len, "SK payload"))


def skf_header(first_payload: int, number: int, total: int, body_len: int) -> bytes:
    """Generic header and fragment numbers of an SKF payload whose IV | ciphertext | ICV is ``body_len``
    bytes: the eight octets that join the AEAD associated data (RFC 7383 §2.5.3)."""
    head = _GENERIC.pack(first_payload, 0, check_u16(8 + body_len, "SKF payload"))
    return head + _SKF_HEAD.pack(number, total)


# ------------------------------------------------------------------------------------------ message


@dataclass(slots=True)
class Message:
    """A decoded message. ``sk_offset`` is where the SK (or SKF) payload's generic header starts in the
    datagram."""

    header: Header
    payloads: list[Payload]
    sk_offset: int | None = None

    def get(self, cls: type[P]) -> P | None:
        """The first payload of class ``cls``, or None."""
        for p in self.payloads:
            if isinstance(p, cls):
                return p
        return None

    def all(self, cls: type[P]) -> list[P]:
        """Every payload of class ``cls``, in message order."""
        return [p for p in self.payloads if isinstance(p, cls)]

    def notifies(self) -> list[Notify]:
        return [p for p in self.payloads if isinstance(p, Notify)]


def encode_message(header: Header, payloads: Sequence[Payload]) -> bytes:
    """Encode a whole message; sets ``header.next_payload`` and ``header.length`` in place."""
    first, body = encode_payloads(payloads)
    header.next_payload = first
    header.length = HEADER_LEN + len(body)
    return header.pack() + body


def decode_message(data: bytes) -> Message:
    """Decode a datagram (without the non-ESP marker of port 4500) into header and payloads."""
    if type(data) is not bytes:
        data = bytes(data)
    header = Header.unpack(data)
    if header.length != len(data):
        raise ParseError(f"header says {header.length} bytes, datagram has {len(data)}")
    payloads, sk_offset = _decode_chain(header.next_payload, data, HEADER_LEN)
    return Message(header, payloads, sk_offset)

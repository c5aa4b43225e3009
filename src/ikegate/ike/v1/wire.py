"""ISAKMP (RFC 2408) message codec with the IKEv1 / IPsec DOI payload bodies (RFC 2407, 2409, 3947).

Design notes:

* Same shape as the IKEv2 codec (``ikegate.ike.wire.v2``): precompiled :class:`struct.Struct` layouts,
  ``slots`` dataclasses, registry values as plain ``int``; strict about *syntax*, silent about
  *semantics* (which proposal is acceptable is the state machine's business).
* Every decoding failure is a :class:`ParseError` carrying the ISAKMP Notify the receiver should answer
  with (RFC 2408 §3.14.1: INVALID_PAYLOAD_TYPE, PAYLOAD_MALFORMED, BAD_PROPOSAL_SYNTAX, ...). Nothing
  else escapes on hostile input; the fuzz tests hold it to that.
* ISAKMP has no SK payload: with the E flag set, everything after the 28-byte header is ciphertext (CBC
  under the phase-1 IV chain). :func:`decode_message` then returns the body opaque in
  ``Message.encrypted``; the engine decrypts it and calls :func:`decode_chain` on the plaintext, which
  stops at the end of the payload chain and reports where, so the padding (and the bytes HASH(1..3)
  cover) are found without guessing.
* Attributes keep their wire format: an ``int`` value is a Basic (TV) attribute, a ``bytes`` value a
  Variable (TLV) one, so a round trip is exact. :func:`attr` picks the format for a number (life
  durations above 65535 must go TLV).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, TypeAlias

from ikegate.ike.v1.registry import (
    DOI_IPSEC,
    ISAKMP_VERSION,
    KNOWN_PAYLOADS,
    SIT_IDENTITY_ONLY,
    Flag,
    IdType,
    NotifyType,
    PayloadType,
    ProtocolId,
)
from ikegate.ike.wire.errors import WireParseError, check_u16

__all__ = [
    "HEADER_LEN",
    "KE",
    "SA",
    "Attribute",
    "Cert",
    "CertReq",
    "Delete",
    "Fragment",
    "Hash",
    "Header",
    "Identification",
    "Message",
    "NatD",
    "NatOA",
    "Nonce",
    "Notify",
    "ParseError",
    "Payload",
    "Proposal",
    "Signature",
    "Transform",
    "Unknown",
    "VendorId",
    "attr",
    "decode_attributes",
    "decode_chain",
    "decode_header",
    "decode_message",
    "decode_payloads",
    "encode_header",
    "encode_message",
    "encode_payloads",
]

HEADER_LEN = 28

_HEADER = struct.Struct("!8s8sBBBBII")  # CKY-I CKY-R next version exchange flags message-id length
_GENERIC = struct.Struct("!BBH")  # next payload, reserved, payload length
_PROPOSAL = struct.Struct("!BBBB")  # number, protocol, SPI size, #transforms
_TRANSFORM = struct.Struct("!BBxx")  # number, transform id, reserved2
_ATTR = struct.Struct("!HH")  # AF|type, value (TV) or length (TLV)
_SA_HEAD = struct.Struct("!II")  # DOI, situation (IPsec DOI: 4 octets)
_ID_HEAD = struct.Struct("!BBH")  # ID type, protocol, port
_NOTIFY_HEAD = struct.Struct("!IBBH")  # DOI, protocol, SPI size, notify type
_DELETE_HEAD = struct.Struct("!IBBH")  # DOI, protocol, SPI size, number of SPIs
_NAT_OA_HEAD = struct.Struct("!B3x")  # ID type, reserved
_FRAGMENT_HEAD = struct.Struct("!HBB")  # fragment ID, fragment number, flags
_LAST_FRAGMENT = 0x01

_AF_TV = 0x8000
_T_PROPOSAL = int(PayloadType.PROPOSAL)
_T_TRANSFORM = int(PayloadType.TRANSFORM)

#: Address lengths of the ID types whose data is an address (RFC 2407 §4.6.2); others are opaque.
_ID_ADDR_LEN = {
    int(IdType.ID_IPV4_ADDR): 4,
    int(IdType.ID_IPV4_ADDR_SUBNET): 8,
    int(IdType.ID_IPV4_ADDR_RANGE): 8,
    int(IdType.ID_IPV6_ADDR): 16,
    int(IdType.ID_IPV6_ADDR_SUBNET): 32,
    int(IdType.ID_IPV6_ADDR_RANGE): 32,
}


class ParseError(WireParseError):
    """A message that cannot be decoded, with the ISAKMP Notify to answer (RFC 2408 §5)."""

    default_notify = NotifyType.PAYLOAD_MALFORMED




# --------------------------------------------------------------------------------------------- header


@dataclass(slots=True)
class Header:
    """The fixed 28-byte ISAKMP header (RFC 2408 §3.1)."""

    cky_i: bytes
    cky_r: bytes
    next_payload: int
    exchange: int
    flags: int
    message_id: int
    length: int = 0
    version: int = ISAKMP_VERSION

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & Flag.ENCRYPTION)

    @property
    def commit(self) -> bool:
        return bool(self.flags & Flag.COMMIT)

    @property
    def spi(self) -> bytes:
        """The ISAKMP SA's 16-byte SPI: both cookies (RFC 2408 §2.5.3)."""
        return self.cky_i + self.cky_r


def encode_header(h: Header, length: int) -> bytes:
    if len(h.cky_i) != 8 or len(h.cky_r) != 8:
        raise ValueError("ISAKMP cookies are 8 bytes each")
    return _HEADER.pack(h.cky_i, h.cky_r, h.next_payload, h.version, h.exchange, h.flags, h.message_id, length)


def decode_header(data: bytes) -> Header:
    """The header alone; checks the version and that the length field fits the datagram."""
    if len(data) < HEADER_LEN:
        raise ParseError(f"message of {len(data)} bytes is shorter than the ISAKMP header")
    cky_i, cky_r, nxt, version, exchange, flags, mid, length = _HEADER.unpack_from(data)
    if version >> 4 != 1:
        raise ParseError(f"ISAKMP major version {version >> 4}", NotifyType.INVALID_MAJOR_VERSION)
    if length < HEADER_LEN or length > len(data):
        raise ParseError(f"header length {length} does not fit the {len(data)}-byte datagram",
                         NotifyType.UNEQUAL_PAYLOAD_LENGTHS)
    return Header(cky_i, cky_r, nxt, exchange, flags, mid, length, version)


# ----------------------------------------------------------------------------------- SA substructure


@dataclass(frozen=True, slots=True)
class Attribute:
    """A data attribute (RFC 2408 §3.3): ``int`` = Basic (TV, 16-bit), ``bytes`` = Variable (TLV)."""

    type: int
    value: int | bytes

    @property
    def number(self) -> int:
        """The value as an integer whatever its format (a TLV life duration is a big-endian number)."""
        return self.value if isinstance(self.value, int) else int.from_bytes(self.value, "big")

    def encode(self) -> bytes:
        if not 0 <= self.type <= 0x7FFF:
            raise ValueError(f"attribute type {self.type} out of range")
        if isinstance(self.value, int):
            if not 0 <= self.value <= 0xFFFF:
                raise ValueError(f"basic attribute value {self.value} out of range; use attr()")
            return _ATTR.pack(_AF_TV | self.type, self.value)
        return _ATTR.pack(self.type, check_u16(len(self.value), "attribute")) + self.value


def attr(atype: int, value: int) -> Attribute:
    """An attribute for a number: Basic when it fits 16 bits, else Variable with 4 (or more) bytes."""
    if value < 0:
        raise ValueError("attribute values are unsigned")
    if value <= 0xFFFF:
        return Attribute(atype, value)
    size = max(4, (value.bit_length() + 7) // 8)
    return Attribute(atype, value.to_bytes(size, "big"))


@dataclass(slots=True)
class Transform:
    """One transform (RFC 2408 §3.6): in IKEv1 a complete suite, alternatives are separate transforms."""

    number: int
    transform_id: int
    attributes: list[Attribute] = field(default_factory=list)

    def get(self, atype: int) -> Attribute | None:
        return next((a for a in self.attributes if a.type == atype), None)


@dataclass(slots=True)
class Proposal:
    """One proposal (RFC 2408 §3.5). Proposals sharing a number form a logical AND (an SA bundle)."""

    number: int
    protocol: int
    spi: bytes
    transforms: list[Transform] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ payloads


@dataclass(slots=True)
class SA:
    """Security Association payload (RFC 2408 §3.4, RFC 2407 §4.6.1): DOI, situation, proposals."""

    TYPE: ClassVar[int] = PayloadType.SA
    proposals: list[Proposal]
    doi: int = DOI_IPSEC
    situation: int = SIT_IDENTITY_ONLY

    def body(self) -> bytes:
        parts = [_SA_HEAD.pack(self.doi, self.situation)]
        for i, p in enumerate(self.proposals):
            if len(p.spi) > 0xFF or len(p.transforms) > 0xFF:
                raise ValueError("proposal SPI or transform count too large")
            tparts = []
            for j, t in enumerate(p.transforms):
                tbody = _TRANSFORM.pack(t.number, t.transform_id) + b"".join(a.encode() for a in t.attributes)
                nxt = _T_TRANSFORM if j + 1 < len(p.transforms) else 0
                tparts.append(_GENERIC.pack(nxt, 0, check_u16(4 + len(tbody), "transform")) + tbody)
            pbody = _PROPOSAL.pack(p.number, p.protocol, len(p.spi), len(p.transforms)) + p.spi + b"".join(tparts)
            nxt = _T_PROPOSAL if i + 1 < len(self.proposals) else 0
            parts.append(_GENERIC.pack(nxt, 0, check_u16(4 + len(pbody), "proposal")) + pbody)
        return b"".join(parts)


@dataclass(slots=True)
class KE:
    TYPE: ClassVar[int] = PayloadType.KE
    data: bytes

    def body(self) -> bytes:
        return self.data


@dataclass(slots=True)
class Identification:
    """ID payload (RFC 2407 §4.6.2): phase 1 identities and phase 2 client IDs (with protocol/port)."""

    TYPE: ClassVar[int] = PayloadType.ID
    id_type: int
    data: bytes
    protocol: int = 0
    port: int = 0

    def body(self) -> bytes:
        return _ID_HEAD.pack(self.id_type, self.protocol, self.port) + self.data


@dataclass(slots=True)
class Hash:
    TYPE: ClassVar[int] = PayloadType.HASH
    data: bytes

    def body(self) -> bytes:
        return self.data


@dataclass(slots=True)
class Signature:
    TYPE: ClassVar[int] = PayloadType.SIG
    data: bytes

    def body(self) -> bytes:
        return self.data


@dataclass(slots=True)
class Cert:
    """CERT payload (RFC 2408 §3.9): an encoding octet (4: X.509 signature) and the DER certificate."""

    TYPE: ClassVar[int] = PayloadType.CERT
    encoding: int
    data: bytes

    def body(self) -> bytes:
        return bytes([self.encoding]) + self.data


@dataclass(slots=True)
class CertReq:
    """CERTREQ payload (RFC 2408 §3.10): an encoding octet and, for X.509, the DER subject of a CA we
    trust (IKEv1 names CAs by DN, where IKEv2 uses key hashes); empty asks for any certificate."""

    TYPE: ClassVar[int] = PayloadType.CERTREQ
    encoding: int
    authority: bytes

    def body(self) -> bytes:
        return bytes([self.encoding]) + self.authority


@dataclass(slots=True)
class Nonce:
    TYPE: ClassVar[int] = PayloadType.NONCE
    data: bytes

    def body(self) -> bytes:
        return self.data


@dataclass(slots=True)
class Notify:
    """Notification payload (RFC 2408 §3.14). For the ISAKMP SA the SPI is both cookies (16 bytes)."""

    TYPE: ClassVar[int] = PayloadType.NOTIFY
    notify_type: int
    protocol: int = ProtocolId.ISAKMP
    spi: bytes = b""
    data: bytes = b""
    doi: int = DOI_IPSEC

    def body(self) -> bytes:
        if len(self.spi) > 0xFF:
            raise ValueError("notify SPI too long")
        return _NOTIFY_HEAD.pack(self.doi, self.protocol, len(self.spi), self.notify_type) + self.spi + self.data


@dataclass(slots=True)
class Delete:
    """Delete payload (RFC 2408 §3.15): one protocol, SPIs of one size (16 for ISAKMP, 4 for ESP)."""

    TYPE: ClassVar[int] = PayloadType.DELETE
    protocol: int
    spis: list[bytes]
    spi_size: int = -1  # -1: taken from the SPIs (ESP 4) or 16 for ISAKMP when the list is empty
    doi: int = DOI_IPSEC

    def __post_init__(self) -> None:
        if self.spi_size < 0:
            self.spi_size = len(self.spis[0]) if self.spis else (16 if self.protocol == ProtocolId.ISAKMP else 4)

    def body(self) -> bytes:
        if any(len(s) != self.spi_size for s in self.spis) or self.spi_size > 0xFF or len(self.spis) > 0xFFFF:
            raise ValueError("Delete SPIs must all have the declared size")
        return _DELETE_HEAD.pack(self.doi, self.protocol, self.spi_size, len(self.spis)) + b"".join(self.spis)


@dataclass(slots=True)
class VendorId:
    TYPE: ClassVar[int] = PayloadType.VENDOR
    data: bytes

    def body(self) -> bytes:
        return self.data


@dataclass(slots=True)
class NatD:
    """NAT discovery hash (RFC 3947 §3.2); ``draft`` selects the pre-RFC payload number 130."""

    data: bytes
    draft: bool = False

    @property
    def TYPE(self) -> int:
        return PayloadType.NAT_D_DRAFT if self.draft else PayloadType.NAT_D

    def body(self) -> bytes:
        return self.data


@dataclass(slots=True)
class NatOA:
    """NAT original address (RFC 3947 §5.2): ID_IPV4_ADDR or ID_IPV6_ADDR and the address."""

    id_type: int
    address: bytes
    draft: bool = False

    @property
    def TYPE(self) -> int:
        return PayloadType.NAT_OA_DRAFT if self.draft else PayloadType.NAT_OA

    def body(self) -> bytes:
        return _NAT_OA_HEAD.pack(self.id_type) + self.address


@dataclass(slots=True)
class Fragment:
    """Fragment payload of the IKEv1 fragmentation extension (type 132; Cisco's, spoken by strongSwan and
    Windows): a piece of a whole ISAKMP datagram, header and (encrypted) body, cut in order. The
    numbers' consistency is the reassembler's business (``ikegate.ike.v1.fragments``)."""

    TYPE: ClassVar[int] = PayloadType.FRAGMENT
    fragment_id: int
    number: int
    last: bool
    data: bytes

    def body(self) -> bytes:
        return _FRAGMENT_HEAD.pack(self.fragment_id, self.number, _LAST_FRAGMENT if self.last else 0) + self.data


@dataclass(slots=True)
class Unknown:
    """A payload this codec keeps opaque (CERT, CERTREQ, ATTRIBUTE, ...)."""

    payload_type: int
    data: bytes

    @property
    def TYPE(self) -> int:
        return self.payload_type

    def body(self) -> bytes:
        return self.data


Payload: TypeAlias = (
    SA | KE | Identification | Hash | Signature | Cert | CertReq | Nonce | Notify | Delete | VendorId | NatD | NatOA
    | Fragment | Unknown
)


# ----------------------------------------------------------------------------------------- decoding


def decode_attributes(data: bytes) -> list[Attribute]:
    """A bare attribute list, as RESPONDER-LIFETIME notification data carries it."""
    return _decode_attrs(data, 0, len(data))


def _decode_attrs(buf: bytes, off: int, end: int) -> list[Attribute]:
    out: list[Attribute] = []
    while off < end:
        if off + 4 > end:
            raise ParseError("truncated attribute", NotifyType.BAD_PROPOSAL_SYNTAX)
        af_type, value = _ATTR.unpack_from(buf, off)
        off += 4
        if af_type & _AF_TV:
            out.append(Attribute(af_type & 0x7FFF, value))
        else:
            if off + value > end:
                raise ParseError("attribute value overruns its transform", NotifyType.BAD_PROPOSAL_SYNTAX)
            out.append(Attribute(af_type, bytes(buf[off : off + value])))
            off += value
    return out


def _decode_sa(body: bytes) -> SA:
    if len(body) < 8:
        raise ParseError("SA payload shorter than DOI and situation")
    doi, situation = _SA_HEAD.unpack_from(body)
    if doi not in (0, DOI_IPSEC):
        raise ParseError(f"DOI {doi}", NotifyType.DOI_NOT_SUPPORTED)
    if situation != SIT_IDENTITY_ONLY:
        # Secrecy and integrity situations add labeled-domain fields we do not implement (RFC 2407 §4.6.1).
        raise ParseError(f"situation {situation:#x}", NotifyType.SITUATION_NOT_SUPPORTED)
    proposals: list[Proposal] = []
    off, end = 8, len(body)
    nxt = _T_PROPOSAL
    while nxt:
        if nxt != _T_PROPOSAL:
            raise ParseError("proposal chain with a foreign payload type", NotifyType.BAD_PROPOSAL_SYNTAX)
        if off + 8 > end:
            raise ParseError("truncated proposal", NotifyType.BAD_PROPOSAL_SYNTAX)
        nxt, _res, plen = _GENERIC.unpack_from(body, off)
        pend = off + plen
        if plen < 8 or pend > end:
            raise ParseError("proposal length out of bounds", NotifyType.BAD_PROPOSAL_SYNTAX)
        number, protocol, spi_size, count = _PROPOSAL.unpack_from(body, off + 4)
        toff = off + 8 + spi_size
        if toff > pend:
            raise ParseError("proposal SPI overruns the proposal", NotifyType.BAD_PROPOSAL_SYNTAX)
        spi = bytes(body[off + 8 : toff])
        transforms: list[Transform] = []
        tnext = _T_TRANSFORM if count else 0
        while tnext:
            if tnext != _T_TRANSFORM:
                raise ParseError("transform chain with a foreign payload type", NotifyType.BAD_PROPOSAL_SYNTAX)
            if toff + 8 > pend:
                raise ParseError("truncated transform", NotifyType.BAD_PROPOSAL_SYNTAX)
            tnext, _r, tlen = _GENERIC.unpack_from(body, toff)
            tend = toff + tlen
            if tlen < 8 or tend > pend:
                raise ParseError("transform length out of bounds", NotifyType.BAD_PROPOSAL_SYNTAX)
            tnum, tid = _TRANSFORM.unpack_from(body, toff + 4)
            transforms.append(Transform(tnum, tid, _decode_attrs(body, toff + 8, tend)))
            toff = tend
        if len(transforms) != count or toff != pend:
            raise ParseError("transform count or length disagrees with the proposal",
                             NotifyType.BAD_PROPOSAL_SYNTAX)
        proposals.append(Proposal(number, protocol, spi, transforms))
        off = pend
    if off != end:
        raise ParseError("bytes after the last proposal", NotifyType.BAD_PROPOSAL_SYNTAX)
    if not proposals:
        raise ParseError("SA payload without proposals", NotifyType.BAD_PROPOSAL_SYNTAX)
    if any(b.number < a.number for a, b in itertools.pairwise(proposals)):
        raise ParseError("proposal numbers must not decrease", NotifyType.BAD_PROPOSAL_SYNTAX)
    return SA(proposals, doi, situation)


def _decode_id(body: bytes) -> Identification:
    if len(body) < 4:
        raise ParseError("ID payload too short", NotifyType.INVALID_ID_INFORMATION)
    id_type, protocol, port = _ID_HEAD.unpack_from(body)
    data = bytes(body[4:])
    want = _ID_ADDR_LEN.get(id_type)
    if want is not None and len(data) != want:
        raise ParseError(f"{IdType.text(id_type)} with {len(data)} bytes of data", NotifyType.INVALID_ID_INFORMATION)
    return Identification(id_type, data, protocol, port)


def _decode_notify(body: bytes) -> Notify:
    if len(body) < 8:
        raise ParseError("Notify payload too short")
    doi, protocol, spi_size, ntype = _NOTIFY_HEAD.unpack_from(body)
    if 8 + spi_size > len(body):
        raise ParseError("Notify SPI overruns the payload")
    return Notify(ntype, protocol, bytes(body[8 : 8 + spi_size]), bytes(body[8 + spi_size :]), doi)


def _decode_delete(body: bytes) -> Delete:
    if len(body) < 8:
        raise ParseError("Delete payload too short")
    doi, protocol, spi_size, count = _DELETE_HEAD.unpack_from(body)
    if len(body) != 8 + spi_size * count:
        raise ParseError("Delete SPI count disagrees with its length")
    spis = [bytes(body[8 + i * spi_size : 8 + (i + 1) * spi_size]) for i in range(count)]
    return Delete(protocol, spis, spi_size, doi)


def _decode_nat_oa(body: bytes, draft: bool) -> NatOA:
    if len(body) < 4:
        raise ParseError("NAT-OA payload too short")
    id_type = body[0]
    address = bytes(body[4:])
    if {int(IdType.ID_IPV4_ADDR): 4, int(IdType.ID_IPV6_ADDR): 16}.get(id_type) != len(address):
        raise ParseError("NAT-OA must carry an IPv4 or IPv6 address", NotifyType.INVALID_ID_INFORMATION)
    return NatOA(id_type, address, draft)


def _decode_cert(body: bytes, kind: type[Cert] | type[CertReq]) -> Cert | CertReq:
    if not body:
        raise ParseError("CERT/CERTREQ payload without an encoding", NotifyType.PAYLOAD_MALFORMED)
    return kind(body[0], bytes(body[1:]))


def _decode_fragment(body: bytes) -> Fragment:
    if len(body) < 4:
        raise ParseError("Fragment payload too short")
    fragment_id, number, flags = _FRAGMENT_HEAD.unpack_from(body)
    return Fragment(fragment_id, number, bool(flags & _LAST_FRAGMENT), bytes(body[4:]))


_DECODERS: dict[int, Callable[[bytes], Payload]] = {
    int(PayloadType.SA): _decode_sa,
    int(PayloadType.KE): lambda b: KE(bytes(b)),
    int(PayloadType.ID): _decode_id,
    int(PayloadType.HASH): lambda b: Hash(bytes(b)),
    int(PayloadType.SIG): lambda b: Signature(bytes(b)),
    int(PayloadType.CERT): lambda b: _decode_cert(b, Cert),
    int(PayloadType.CERTREQ): lambda b: _decode_cert(b, CertReq),
    int(PayloadType.NONCE): lambda b: Nonce(bytes(b)),
    int(PayloadType.NOTIFY): _decode_notify,
    int(PayloadType.DELETE): _decode_delete,
    int(PayloadType.VENDOR): lambda b: VendorId(bytes(b)),
    int(PayloadType.NAT_D): lambda b: NatD(bytes(b)),
    int(PayloadType.NAT_D_DRAFT): lambda b: NatD(bytes(b), draft=True),
    int(PayloadType.NAT_OA): lambda b: _decode_nat_oa(b, False),
    int(PayloadType.NAT_OA_DRAFT): lambda b: _decode_nat_oa(b, True),
    int(PayloadType.FRAGMENT): _decode_fragment,
}

#: Types that may only appear inside an SA payload, never in the message's chain.
_SUBSTRUCTURES = frozenset({int(PayloadType.PROPOSAL), int(PayloadType.TRANSFORM)})


def decode_chain(first_type: int, data: bytes) -> tuple[list[Payload], int]:
    """Walk the generic payload chain from ``first_type``; returns the payloads and the chain's end.

    Bytes after the chain are left to the caller: padding after decryption is fine, in a plaintext
    message :func:`decode_payloads` rejects them.
    """
    out: list[Payload] = []
    off = 0
    nxt = first_type
    end = len(data)
    while nxt:
        if nxt not in KNOWN_PAYLOADS or nxt in _SUBSTRUCTURES:
            raise ParseError(f"payload type {nxt}", NotifyType.INVALID_PAYLOAD_TYPE, bytes([nxt & 0xFF]))
        if off + 4 > end:
            raise ParseError("truncated generic payload header")
        following, _res, plen = _GENERIC.unpack_from(data, off)
        if plen < 4 or off + plen > end:
            raise ParseError(f"payload length {plen} out of bounds", NotifyType.PAYLOAD_MALFORMED)
        body = data[off + 4 : off + plen]
        decoder = _DECODERS.get(nxt)
        out.append(decoder(body) if decoder is not None else Unknown(nxt, bytes(body)))
        off += plen
        nxt = following
    return out, off


def decode_payloads(first_type: int, data: bytes) -> list[Payload]:
    """A complete plaintext chain: trailing bytes mean the lengths disagree."""
    payloads, end = decode_chain(first_type, data)
    if end != len(data):
        raise ParseError("bytes after the last payload", NotifyType.UNEQUAL_PAYLOAD_LENGTHS)
    return payloads


def encode_payloads(payloads: Sequence[Payload]) -> tuple[int, bytes]:
    """(type of the first payload, the chained payloads)."""
    parts = []
    for i, p in enumerate(payloads):
        body = p.body()
        nxt = int(payloads[i + 1].TYPE) if i + 1 < len(payloads) else 0
        parts.append(_GENERIC.pack(nxt, 0, check_u16(4 + len(body), "payload")) + body)
    first = int(payloads[0].TYPE) if payloads else 0
    return first, b"".join(parts)


@dataclass(slots=True)
class Message:
    """A decoded message. With the E flag, ``payloads`` is empty and ``encrypted`` holds the body."""

    header: Header
    payloads: list[Payload]
    encrypted: bytes | None = None

    def get(self, kind: type[Payload]) -> Payload | None:
        return next((p for p in self.payloads if isinstance(p, kind)), None)


def encode_message(header: Header, payloads: Sequence[Payload]) -> bytes:
    """A plaintext message; ``header.next_payload`` and the length are filled in."""
    first, body = encode_payloads(payloads)
    header.next_payload = first
    return encode_header(header, HEADER_LEN + len(body)) + body


def decode_message(data: bytes) -> Message:
    """Header plus either the payload chain (plaintext) or the opaque ciphertext (E flag)."""
    h = decode_header(data)
    body = data[HEADER_LEN : h.length]
    if h.encrypted:
        if not body:
            raise ParseError("encrypted message without a body")
        return Message(h, [], bytes(body))
    return Message(h, decode_payloads(h.next_payload, body))

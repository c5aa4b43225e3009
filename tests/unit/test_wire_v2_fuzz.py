"""Property tests for the IKEv2 codec: valid payload lists survive encode/decode unchanged, and no byte
string, however mangled, makes the decoder raise anything but ParseError."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ikegate.ike.wire.registry import PayloadType, ProtocolId, TsType
from ikegate.ike.wire.v2 import (
    AUTH,
    CP,
    HEADER_LEN,
    KE,
    SA,
    SK,
    SKF,
    Delete,
    Header,
    IDi,
    IDr,
    Message,
    Nonce,
    Notify,
    ParseError,
    Payload,
    Proposal,
    TrafficSelector,
    Transform,
    TSi,
    TSr,
    Unknown,
    VendorId,
    decode_message,
    decode_payloads,
    encode_message,
    encode_payloads,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
blob = st.binary(max_size=40)
crit = st.booleans()

# ------------------------------------------------------------------------------------ valid payloads


@st.composite
def attr_bytes(draw: st.DrawFn) -> bytes:
    """Already-encoded attributes other than the TV Key Length (that one lives in key_length)."""
    parts = []
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            atype = draw(st.integers(0, 0x7FFF).filter(lambda t: t != 14))
            parts.append(struct.pack("!HH", 0x8000 | atype, draw(u16)))
        else:
            value = draw(st.binary(max_size=8))
            parts.append(struct.pack("!HH", draw(st.integers(0, 0x7FFF)), len(value)) + value)
    return b"".join(parts)


transforms = st.builds(Transform, u8, u16, st.none() | u16, attr_bytes())


def proposal(number: int) -> st.SearchStrategy[Proposal]:
    return st.builds(Proposal, st.just(number), u8, st.binary(max_size=8), st.lists(transforms, max_size=5))


@st.composite
def sa_payloads(draw: st.DrawFn) -> SA:
    if draw(st.booleans()):
        # A response: one proposal echoing whichever number was accepted.
        proposals = [draw(proposal(draw(st.integers(1, 255))))]
    else:
        proposals = [draw(proposal(i)) for i in range(1, draw(st.integers(1, 4)) + 1)]
    return SA(proposals, draw(crit))


@st.composite
def delete_payloads(draw: st.DrawFn) -> Delete:
    protocol = draw(u8)
    if protocol == ProtocolId.IKE:
        spis: list[bytes] = []
    elif protocol in (ProtocolId.ESP, ProtocolId.AH):
        spis = draw(st.lists(st.binary(min_size=4, max_size=4), max_size=5))
    else:
        size = draw(st.integers(1, 8))
        spis = draw(st.lists(st.binary(min_size=size, max_size=size), max_size=5))
    return Delete(protocol, spis, draw(crit))


v4 = st.builds(IPv4Address, u32)
v6 = st.builds(IPv6Address, st.integers(0, 2**128 - 1))
selectors = st.one_of(
    st.builds(TrafficSelector, st.just(int(TsType.TS_IPV4_ADDR_RANGE)), u8, u16, u16, v4, v4),
    st.builds(TrafficSelector, st.just(int(TsType.TS_IPV6_ADDR_RANGE)), u8, u16, u16, v6, v6),
)

_OPAQUE = {int(PayloadType.CERT), int(PayloadType.CERTREQ), int(PayloadType.EAP)}
_KNOWN = {int(t) for t in PayloadType} - _OPAQUE
unknowns = st.one_of(
    st.builds(Unknown, st.sampled_from(sorted(_OPAQUE)), blob, crit),
    st.builds(Unknown, st.integers(1, 255).filter(lambda t: t not in _KNOWN), blob, st.just(False)),
)

payloads_inner: st.SearchStrategy[Payload] = st.one_of(
    sa_payloads(),
    st.builds(KE, u16, blob, crit),
    st.builds(IDi, u8, blob, crit),
    st.builds(IDr, u8, blob, crit),
    st.builds(AUTH, u8, blob, crit),
    st.builds(Nonce, st.binary(min_size=16, max_size=64), crit),
    st.builds(Notify, u16, u8, st.binary(max_size=8), blob, crit),
    delete_payloads(),
    st.builds(VendorId, blob, crit),
    st.builds(TSi, st.lists(selectors, max_size=4), crit),
    st.builds(TSr, st.lists(selectors, max_size=4), crit),
    st.builds(CP, u8, blob, crit),
    unknowns,
)


@st.composite
def payload_lists(draw: st.DrawFn) -> list[Payload]:
    chain = draw(st.lists(payloads_inner, max_size=8))
    last = draw(st.sampled_from(["none", "sk", "skf"]))
    if last == "sk":
        chain.append(SK(draw(u8), draw(st.binary(max_size=64)), draw(crit)))
    elif last == "skf":
        chain.append(SKF(draw(u8), draw(u16), draw(u16), draw(st.binary(max_size=64)), draw(crit)))
    return chain


headers = st.builds(
    Header,
    st.binary(min_size=8, max_size=8),
    st.binary(min_size=8, max_size=8),
    st.just(0),
    u8,
    u8,
    u32,
    st.just(0),
    st.integers(0, 15),
    st.integers(0, 15),
)


@st.composite
def valid_messages(draw: st.DrawFn) -> bytes:
    return encode_message(draw(headers), draw(payload_lists()))


# ------------------------------------------------------------------------------------- round trips


@FUZZ
@given(payload_lists())
def test_payload_chain_round_trip(chain: list[Payload]) -> None:
    first, raw = encode_payloads(chain)
    assert decode_payloads(first, raw) == chain


@FUZZ
@given(headers, payload_lists())
def test_message_round_trip(header: Header, chain: list[Payload]) -> None:
    raw = encode_message(header, chain)
    msg = decode_message(raw)
    assert msg.header == header
    assert msg.header.length == len(raw)
    assert msg.payloads == chain
    if chain and isinstance(chain[-1], SK | SKF):
        assert msg.sk_offset is not None
        assert raw[msg.sk_offset] == chain[-1].first_payload
        assert struct.unpack_from("!H", raw, msg.sk_offset + 2)[0] == len(raw) - msg.sk_offset
    else:
        assert msg.sk_offset is None


# ------------------------------------------------------------------------------------ hostile input


def _decode_only_parse_error(data: bytes) -> None:
    """Decode; anything but ParseError fails the test. What decodes must re-encode to the same payloads."""
    try:
        msg = decode_message(data)
    except ParseError:
        return
    again = decode_message(encode_message(msg.header, msg.payloads))
    assert again.payloads == msg.payloads
    assert isinstance(again, Message)


@FUZZ
@given(st.binary(max_size=200))
def test_random_bytes(data: bytes) -> None:
    _decode_only_parse_error(data)


@FUZZ
@given(st.sampled_from(sorted({int(t) for t in PayloadType} | {99})), st.binary(max_size=200))
def test_random_body_behind_valid_header(first: int, body: bytes) -> None:
    """The header is right, so every random body reaches the payload decoders."""
    header = Header(b"\x01" * 8, b"\x02" * 8, first, 34, 0x08, 0, HEADER_LEN + len(body))
    _decode_only_parse_error(header.pack() + body)


@FUZZ
@given(st.sampled_from(sorted({int(t) for t in PayloadType} - {0})), st.binary(max_size=120), crit)
def test_random_body_of_each_type(ptype: int, body: bytes, critical: bool) -> None:
    """One well-framed payload with a random body: only the body decoder is on trial."""
    raw = struct.pack("!BBH", 0, 0x80 if critical else 0, 4 + len(body)) + body
    try:
        decoded = decode_payloads(ptype, raw)
    except ParseError:
        return
    first, again = encode_payloads(decoded)
    assert decode_payloads(first, again) == decoded


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(0, 7)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000), st.just(0)),
    st.tuples(st.just("u16"), st.integers(0, 10_000), u16),
    st.tuples(st.just("byte"), st.integers(0, 10_000), u8),
    st.tuples(st.just("insert"), st.integers(0, 10_000), u8),
    st.tuples(st.just("delete"), st.integers(0, 10_000), st.just(0)),
)


def _mutate(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, pos, value in edits:
        if not buf:
            break
        i = pos % len(buf)
        if kind == "flip":
            buf[i] ^= 1 << value
        elif kind == "truncate":
            del buf[i:]
        elif kind == "u16" and i + 2 <= len(buf):
            struct.pack_into("!H", buf, i, value)
        elif kind == "byte":
            buf[i] = value
        elif kind == "insert":
            buf.insert(i, value)
        elif kind == "delete":
            del buf[i]
    return bytes(buf)


def _fix_header_length(data: bytes) -> bytes:
    """Make the header length agree so the mutation is seen by the payload walk, not the header check."""
    if len(data) < HEADER_LEN:
        return data
    return data[:24] + struct.pack("!I", len(data)) + data[HEADER_LEN:]


@FUZZ
@given(valid_messages(), st.lists(mutation, min_size=1, max_size=4), st.booleans())
def test_mutated_messages(data: bytes, edits: list[tuple[str, int, int]], fix_length: bool) -> None:
    mutated = _mutate(data, edits)
    if fix_length:
        mutated = _fix_header_length(mutated)
    _decode_only_parse_error(mutated)


@FUZZ
@given(valid_messages(), st.data())
def test_generic_length_edits(data: bytes, draw: st.DataObject) -> None:
    """Rewrite the length field of one payload in the chain (walking it as the decoder does)."""
    offsets = []
    off, nxt = HEADER_LEN, data[16]
    while nxt and off + 4 <= len(data):
        offsets.append(off)
        if nxt in (PayloadType.SK, PayloadType.SKF):
            break
        nxt = data[off]
        off += struct.unpack_from("!H", data, off + 2)[0]
    if not offsets:
        return
    target = draw.draw(st.sampled_from(offsets))
    new_length = draw.draw(st.one_of(st.integers(0, 8), u16))
    mutated = bytearray(data)
    struct.pack_into("!H", mutated, target + 2, new_length)
    _decode_only_parse_error(bytes(mutated))

"""Property tests for the ISAKMP codec: valid payload lists survive encode/decode unchanged, and no byte
string, however mangled, makes the decoder raise anything but ParseError."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ikegate.ike.v1.registry import ExchangeType, Flag, IdType, PayloadType
from ikegate.ike.v1.wire import (
    KE,
    SA,
    Attribute,
    Cert,
    CertReq,
    Delete,
    Fragment,
    Hash,
    Header,
    Identification,
    NatD,
    NatOA,
    Nonce,
    Notify,
    ParseError,
    Payload,
    Proposal,
    Signature,
    Transform,
    Unknown,
    VendorId,
    decode_chain,
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

attributes = st.builds(Attribute, st.integers(0, 0x7FFF), st.one_of(u16, st.binary(max_size=12)))
transforms = st.builds(Transform, u8, u8, st.lists(attributes, max_size=4))
proposals = st.builds(Proposal, u8, u8, st.binary(max_size=16), st.lists(transforms, max_size=3))


@st.composite
def sa_payloads(draw: st.DrawFn) -> SA:
    props = draw(st.lists(proposals, min_size=1, max_size=3))
    props.sort(key=lambda p: p.number)
    return SA(props, draw(st.sampled_from([0, 1])), 1)


@st.composite
def identifications(draw: st.DrawFn) -> Identification:
    id_type = draw(st.sampled_from(list(IdType)))
    sizes = {1: 4, 4: 8, 7: 8, 5: 16, 6: 32, 8: 32}
    size = sizes.get(int(id_type))
    data = draw(st.binary(min_size=size, max_size=size) if size is not None else blob)
    return Identification(int(id_type), data, draw(u8), draw(u16))


@st.composite
def deletes(draw: st.DrawFn) -> Delete:
    size = draw(st.sampled_from([4, 16]))
    spis = draw(st.lists(st.binary(min_size=size, max_size=size), max_size=3))
    return Delete(draw(u8), spis, size, draw(u32))


@st.composite
def nat_oas(draw: st.DrawFn) -> NatOA:
    v4 = draw(st.booleans())
    return NatOA(1 if v4 else 5, draw(st.binary(min_size=4 if v4 else 16, max_size=4 if v4 else 16)),
                 draw(st.booleans()))


payloads = st.one_of(
    sa_payloads(),
    st.builds(KE, blob),
    identifications(),
    st.builds(Hash, blob),
    st.builds(Signature, blob),
    st.builds(Nonce, blob),
    st.builds(Notify, u16, u8, st.binary(max_size=16), blob, u32),
    deletes(),
    st.builds(VendorId, blob),
    st.builds(NatD, blob, st.booleans()),
    nat_oas(),
    st.builds(Fragment, u16, u8, st.booleans(), blob),
    st.builds(Cert, u8, blob),
    st.builds(CertReq, u8, blob),
    st.builds(Unknown, st.sampled_from([PayloadType.ATTRIBUTE, PayloadType.SAK]), blob),
)


@FUZZ
@given(st.lists(payloads, max_size=6))
def test_payloads_round_trip(items: list[Payload]) -> None:
    first, data = encode_payloads(items)
    assert decode_payloads(first, data) == items
    back, end = decode_chain(first, data + b"\x00" * 5)
    assert back == items and end == len(data)


@FUZZ
@given(st.lists(payloads, max_size=4), st.binary(min_size=8, max_size=8), st.binary(min_size=8, max_size=8),
       st.sampled_from(list(ExchangeType)), u32)
def test_messages_round_trip(items: list[Payload], cky_i: bytes, cky_r: bytes, exchange: int, mid: int) -> None:
    data = encode_message(Header(cky_i, cky_r, 0, exchange, 0, mid), items)
    msg = decode_message(data)
    assert msg.payloads == items
    assert (msg.header.cky_i, msg.header.cky_r, msg.header.exchange, msg.header.message_id) == (cky_i, cky_r,
                                                                                                 exchange, mid)
    assert msg.header.length == len(data)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_parse_error(data: bytes) -> None:
    with contextlib.suppress(ParseError):
        decode_message(data)
    for first in (1, 5, 8, 11, 12, 20, 21, 99):
        with contextlib.suppress(ParseError):
            decode_payloads(first, data)


@FUZZ
@given(st.lists(payloads, min_size=1, max_size=4), st.data())
def test_mutated_messages_only_raise_parse_error(items: list[Payload], data: st.DataObject) -> None:
    raw = bytearray(encode_message(Header(b"A" * 8, b"B" * 8, 0, ExchangeType.ID_PROT, 0, 0), items))
    for _ in range(data.draw(st.integers(1, 6))):
        kind = data.draw(st.integers(0, 2))
        pos = data.draw(st.integers(0, len(raw) - 1))
        if kind == 0:
            raw[pos] = data.draw(u8)
        elif kind == 1 and len(raw) > 29:
            del raw[pos]
        else:
            raw.insert(pos, data.draw(u8))
    try:
        msg = decode_message(bytes(raw))
    except ParseError:
        return
    # Whatever decodes must encode again (the decoder produced only well-formed objects).
    if not msg.header.flags & Flag.ENCRYPTION:
        encode_payloads(msg.payloads)

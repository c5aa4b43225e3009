"""IKEv2 codec: round trips, byte-exact encodings worked out by hand from RFC 7296 §3, and every
malformation the decoder must turn into the right Notify."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

import pytest

from ikegate.ike.wire.registry import (
    AuthMethod,
    DhId,
    EncrId,
    ExchangeType,
    IdType,
    IntegId,
    NotifyType,
    PayloadType,
    PrfId,
    ProtocolId,
    TransformType,
    TsType,
)
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
    sk_generic_header,
    skf_header,
)

SPI_I = bytes.fromhex("0102030405060708")
SPI_R = bytes.fromhex("a1a2a3a4a5a6a7a8")
ZERO_SPI = bytes(8)


def gen(next_payload: int, body: bytes, critical: bool = False, length: int | None = None) -> bytes:
    """A raw payload: generic header (optionally with a forged length) + body."""
    if length is None:
        length = 4 + len(body)
    return struct.pack("!BBH", next_payload, 0x80 if critical else 0, length) + body


def datagram(first: int, body: bytes, length: int | None = None) -> bytes:
    """A raw message around a raw payload chain."""
    if length is None:
        length = HEADER_LEN + len(body)
    return SPI_I + SPI_R + struct.pack("!BBBBII", first, 0x20, 34, 0x08, 0, length) + body


def parse_error(first: int, body: bytes) -> ParseError:
    with pytest.raises(ParseError) as info:
        decode_payloads(first, body)
    return info.value


def ike_proposal(number: int = 1) -> Proposal:
    return Proposal(
        number,
        ProtocolId.IKE,
        b"",
        [
            Transform(TransformType.ENCR, EncrId.AES_CBC, 256),
            Transform(TransformType.PRF, PrfId.HMAC_SHA2_256),
            Transform(TransformType.INTEG, IntegId.HMAC_SHA2_256_128),
            Transform(TransformType.DH, DhId.CURVE_25519),
        ],
    )


def ts4() -> TrafficSelector:
    return TrafficSelector(
        TsType.TS_IPV4_ADDR_RANGE, 0, 0, 65535, IPv4Address("10.0.0.0"), IPv4Address("10.0.0.255")
    )


def ts6() -> TrafficSelector:
    return TrafficSelector(
        TsType.TS_IPV6_ADDR_RANGE, 6, 443, 443, IPv6Address("2001:db8::"), IPv6Address("2001:db8::ffff")
    )


ALL_PAYLOADS: list[Payload] = [
    SA([ike_proposal(1), Proposal(2, ProtocolId.ESP, b"\xde\xad\xbe\xef", [Transform(1, 20, 128)])]),
    KE(DhId.CURVE_25519, bytes(range(32))),
    IDi(IdType.ID_FQDN, b"gw1.example.net"),
    IDr(IdType.ID_IPV4_ADDR, bytes([192, 0, 2, 1])),
    AUTH(AuthMethod.SHARED_KEY_MIC, b"\x55" * 32),
    Nonce(b"\x42" * 32),
    Notify(NotifyType.NAT_DETECTION_SOURCE_IP, data=b"\x01" * 20),
    Notify(NotifyType.REKEY_SA, ProtocolId.ESP, b"\x00\x00\x10\x00"),
    Delete(ProtocolId.IKE, []),
    Delete(ProtocolId.ESP, [b"\x00\x00\x00\x01", b"\x00\x00\x00\x02"]),
    VendorId(b"ikegate"),
    TSi([ts4(), ts6()]),
    TSr([ts4()]),
    CP(1, b"\x00\x01\x00\x00"),
    Unknown(PayloadType.CERTREQ, b"\x04" + b"\x00" * 20),
    Unknown(200, b"opaque", critical=False),
]


# ------------------------------------------------------------------------------------------- header


def test_header_pack_is_byte_exact() -> None:
    h = Header(SPI_I, ZERO_SPI, PayloadType.SA, ExchangeType.IKE_SA_INIT, 0x08, 0, length=300)
    assert h.pack() == SPI_I + ZERO_SPI + bytes([33, 0x20, 34, 0x08, 0, 0, 0, 0, 0, 0, 0x01, 0x2C])


def test_header_round_trip_and_flags() -> None:
    h = Header(SPI_I, SPI_R, 46, ExchangeType.IKE_AUTH, 0x20, 0x01020304, 1234, major=2, minor=1)
    back = Header.unpack(h.pack())
    assert back == h
    assert back.is_response and not back.is_initiator
    i = Header(SPI_I, SPI_R, 0, 37, 0x08, 7)
    assert i.is_initiator and not i.is_response


def test_header_unpack_keeps_other_major_version() -> None:
    raw = bytearray(Header(SPI_I, ZERO_SPI, 0, 34, 0x08, 0, 28).pack())
    raw[17] = 0x30
    h = Header.unpack(bytes(raw))
    assert (h.major, h.minor) == (3, 0)


def test_header_too_short() -> None:
    with pytest.raises(ParseError) as info:
        Header.unpack(bytes(27))
    assert info.value.notify == NotifyType.INVALID_SYNTAX


def test_header_rejects_bad_spi_size() -> None:
    with pytest.raises(ValueError):
        Header(b"short", ZERO_SPI, 0, 34, 0, 0).pack()


# ---------------------------------------------------------------------------- byte-exact payloads


def test_ke_group_31_bytes() -> None:
    first, raw = encode_payloads([KE(DhId.CURVE_25519, b"\x11" * 32)])
    assert first == PayloadType.KE
    assert raw == bytes.fromhex("00000028" "001f0000") + b"\x11" * 32


def test_notify_cookie_bytes() -> None:
    cookie = bytes(range(1, 9))
    first, raw = encode_payloads([Notify(NotifyType.COOKIE, data=cookie)])
    assert first == PayloadType.NOTIFY
    assert raw == bytes.fromhex("00000010" "00004006" "0102030405060708")


def test_delete_two_esp_spis_bytes() -> None:
    _, raw = encode_payloads([Delete(ProtocolId.ESP, [bytes.fromhex("11223344"), bytes.fromhex("aabbccdd")])])
    assert raw == bytes.fromhex("00000010" "03040002" "11223344" "aabbccdd")


def test_delete_ike_bytes() -> None:
    _, raw = encode_payloads([Delete(ProtocolId.IKE, [])])
    assert raw == bytes.fromhex("00000008" "01000000")


def test_ipv4_ts_bytes() -> None:
    first, raw = encode_payloads([TSi([ts4()])])
    assert first == PayloadType.TSi
    assert raw == bytes.fromhex("00000018" "01000000" "07000010" "0000ffff" "0a000000" "0a0000ff")


def test_ipv6_ts_bytes() -> None:
    first, raw = encode_payloads([TSr([ts6()])])
    assert first == PayloadType.TSr
    expected = (
        "00000030" "01000000"  # generic header, 1 selector
        "08060028" "01bb01bb"  # IPv6 range, TCP, length 40, port 443-443
        "20010db8000000000000000000000000"
        "20010db800000000000000000000ffff"
    )
    assert raw == bytes.fromhex(expected)


def test_sa_one_proposal_bytes() -> None:
    first, raw = encode_payloads([SA([ike_proposal()])])
    assert first == PayloadType.SA
    expected = (
        "00000030"  # SA generic header: length 48
        "0000002c" "01010004"  # last proposal, length 44, #1, IKE, SPI size 0, 4 transforms
        "0300000c" "0100000c" "800e0100"  # ENCR AES_CBC, Key Length (TV) 256
        "03000008" "02000005"  # PRF HMAC_SHA2_256
        "03000008" "0300000c"  # INTEG HMAC_SHA2_256_128
        "00000008" "0400001f"  # DH 31, last transform
    )
    assert raw == bytes.fromhex(expected)
    assert decode_payloads(first, raw) == [SA([ike_proposal()])]


def test_payload_chain_next_fields_and_critical_bit() -> None:
    first, raw = encode_payloads([VendorId(b"ab", critical=True), Nonce(b"n" * 16)])
    assert first == PayloadType.VENDOR
    assert raw[:6] == bytes([PayloadType.NONCE, 0x80, 0, 6]) + b"ab"
    assert raw[6:10] == bytes([0, 0, 0, 20])


def test_id_body_is_rest_of_id_payload() -> None:
    idi = IDi(IdType.ID_FQDN, b"a.example")
    assert idi.body() == b"\x02\x00\x00\x00a.example"
    _, raw = encode_payloads([idi])
    assert raw[4:] == idi.body()
    assert IDr(IdType.ID_KEY_ID, b"k").body() == b"\x0b\x00\x00\x00k"


def test_sk_generic_header() -> None:
    assert sk_generic_header(PayloadType.IDi, 100) == bytes([35, 0, 0, 104])
    _, raw = encode_payloads([SK(PayloadType.IDi, b"x" * 100)])
    assert raw[:4] == sk_generic_header(PayloadType.IDi, 100)


def test_unknown_transform_attributes_preserved() -> None:
    # A TV attribute (type 17) and a TLV attribute (type 18, 3 bytes) around the key length.
    attrs = bytes.fromhex("80110005") + bytes.fromhex("00120003aabbcc")
    t = Transform(TransformType.ENCR, EncrId.AES_CBC, 128, attrs)
    sa = SA([Proposal(1, ProtocolId.IKE, b"", [t])])
    first, raw = encode_payloads([sa])
    assert decode_payloads(first, raw) == [sa]


def test_transform_attributes_order_on_wire_does_not_matter() -> None:
    # Key Length after another attribute on the wire; it still lands in key_length.
    transform = bytes.fromhex("0000001001000014" "80110005" "800e0080")
    proposal = bytes.fromhex("00000018") + bytes([1, 3, 0, 1]) + transform
    (sa,) = decode_payloads(PayloadType.SA, gen(0, proposal))
    assert isinstance(sa, SA)
    assert sa.proposals[0].transforms == [Transform(1, 20, 128, bytes.fromhex("80110005"))]


# ------------------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("payload", ALL_PAYLOADS, ids=lambda p: type(p).__name__)
def test_each_payload_round_trips(payload: Payload) -> None:
    first, raw = encode_payloads([payload])
    assert decode_payloads(first, raw) == [payload]


def test_critical_flag_round_trips_on_known_payload() -> None:
    p = KE(14, b"\x01" * 256, critical=True)
    first, raw = encode_payloads([p])
    assert decode_payloads(first, raw) == [p]


def test_all_payloads_in_one_chain_round_trip() -> None:
    chain = [*ALL_PAYLOADS, SK(PayloadType.IDi, b"\x00" * 64)]
    first, raw = encode_payloads(chain)
    assert decode_payloads(first, raw) == chain


def test_empty_chain() -> None:
    assert encode_payloads([]) == (0, b"")
    assert decode_payloads(0, b"") == []


def test_ike_sa_init_message_round_trip() -> None:
    header = Header(SPI_I, ZERO_SPI, 0, ExchangeType.IKE_SA_INIT, 0x08, 0)
    payloads: list[Payload] = [
        SA([ike_proposal()]),
        KE(31, b"\x07" * 32),
        Nonce(b"\x09" * 32),
        Notify(NotifyType.NAT_DETECTION_SOURCE_IP, data=b"s" * 20),
        Notify(NotifyType.NAT_DETECTION_DESTINATION_IP, data=b"d" * 20),
    ]
    raw = encode_message(header, payloads)
    assert header.next_payload == PayloadType.SA
    assert header.length == len(raw)
    assert raw[16] == PayloadType.SA and raw[17] == 0x20 and raw[18] == 34 and raw[19] == 0x08
    assert struct.unpack("!I", raw[24:28])[0] == len(raw)
    msg = decode_message(raw)
    assert msg.header == header
    assert msg.header.is_initiator and not msg.header.is_response
    assert msg.payloads == payloads
    assert msg.sk_offset is None
    assert msg.get(KE) == KE(31, b"\x07" * 32)
    assert msg.get(AUTH) is None
    assert [n.notify_type for n in msg.notifies()] == [16388, 16389]
    assert msg.all(Notify) == msg.notifies()
    assert msg.all(TSi) == []


def test_response_message_id_and_flags() -> None:
    header = Header(SPI_I, SPI_R, 0, ExchangeType.INFORMATIONAL, 0x20, 0xFFFFFFFF)
    raw = encode_message(header, [])
    assert len(raw) == HEADER_LEN and raw[16] == 0
    msg = decode_message(raw)
    assert msg.header.message_id == 0xFFFFFFFF
    assert msg.header.is_response and not msg.header.is_initiator
    assert msg.payloads == []


def test_sk_offset_first_payload() -> None:
    header = Header(SPI_I, SPI_R, 0, ExchangeType.IKE_AUTH, 0x08, 1)
    sk = SK(PayloadType.IDi, b"\xaa" * 48)
    raw = encode_message(header, [sk])
    msg = decode_message(raw)
    assert msg.sk_offset == HEADER_LEN
    assert msg.payloads == [sk]
    assert raw[HEADER_LEN : HEADER_LEN + 4] == sk_generic_header(PayloadType.IDi, 48)


def test_sk_offset_after_other_payloads() -> None:
    header = Header(SPI_I, SPI_R, 0, ExchangeType.IKE_AUTH, 0x08, 1)
    vid = VendorId(b"v" * 10)
    sk = SK(PayloadType.NOTIFY, b"\xbb" * 40)
    raw = encode_message(header, [vid, sk])
    msg = decode_message(raw)
    assert msg.sk_offset == HEADER_LEN + 14
    assert raw[msg.sk_offset] == PayloadType.NOTIFY
    assert msg.get(SK) == sk


def test_inner_payloads_decode_from_sk_first_payload() -> None:
    inner: list[Payload] = [IDi(IdType.ID_FQDN, b"a"), AUTH(2, b"x" * 32), SA([ike_proposal(3)])]
    first, plaintext = encode_payloads(inner)
    assert decode_payloads(first, plaintext) == inner


def test_decode_accepts_bytearray_and_memoryview() -> None:
    raw = encode_message(Header(SPI_I, SPI_R, 0, 37, 0, 2), [Delete(ProtocolId.IKE, [])])
    assert decode_message(bytearray(raw)).payloads == [Delete(ProtocolId.IKE, [])]
    assert decode_payloads(PayloadType.DELETE, memoryview(raw)[28:]) == [Delete(ProtocolId.IKE, [])]  # type: ignore[arg-type]


def test_message_get_distinguishes_idi_idr_and_tsi_tsr() -> None:
    msg = Message(Header(SPI_I, SPI_R, 0, 35, 0, 1), [IDr(1, b"r"), IDi(1, b"i"), TSr([]), TSi([])])
    assert msg.get(IDi) == IDi(1, b"i")
    assert msg.get(IDr) == IDr(1, b"r")
    assert msg.all(TSi) == [TSi([])]


# ------------------------------------------------------------------------------------- encode errors


def test_encode_rejects_sk_not_last() -> None:
    with pytest.raises(ValueError):
        encode_payloads([SK(35, b"x"), Nonce(b"n" * 16)])


def test_encode_rejects_inconsistent_delete() -> None:
    with pytest.raises(ValueError):
        encode_payloads([Delete(ProtocolId.ESP, [b"1234", b"123"])])
    with pytest.raises(ValueError):
        encode_payloads([Delete(ProtocolId.IKE, [b"1234"])])


def test_encode_rejects_ts_family_mismatch() -> None:
    bad = TrafficSelector(7, 0, 0, 65535, IPv6Address("::"), IPv6Address("::1"))
    with pytest.raises(ValueError):
        encode_payloads([TSi([bad])])


def test_encode_rejects_oversized_payload() -> None:
    with pytest.raises(ValueError):
        encode_payloads([VendorId(bytes(65532))])


# ---------------------------------------------------------------------------------- message errors


def test_message_length_greater_than_datagram() -> None:
    raw = datagram(0, b"", length=40)
    with pytest.raises(ParseError) as info:
        decode_message(raw)
    assert info.value.notify == NotifyType.INVALID_SYNTAX


def test_message_length_smaller_than_datagram() -> None:
    raw = datagram(PayloadType.VENDOR, gen(0, b"abc"), length=HEADER_LEN)
    with pytest.raises(ParseError):
        decode_message(raw)


def test_message_length_below_header() -> None:
    with pytest.raises(ParseError):
        decode_message(datagram(0, b"", length=20))


def test_message_shorter_than_header() -> None:
    with pytest.raises(ParseError):
        decode_message(b"\x00" * 10)


# ---------------------------------------------------------------------------------- chain errors


def _syntax(first: int, body: bytes) -> None:
    err = parse_error(first, body)
    assert err.notify == NotifyType.INVALID_SYNTAX
    assert err.data == b""


def test_truncated_generic_header() -> None:
    _syntax(PayloadType.VENDOR, b"\x00\x00")


def test_next_payload_but_no_data() -> None:
    _syntax(PayloadType.VENDOR, gen(PayloadType.NONCE, b"v"))


def test_payload_length_below_4() -> None:
    for length in (0, 1, 3):
        _syntax(PayloadType.VENDOR, gen(0, b"", length=length))


def test_payload_length_runs_past_data() -> None:
    _syntax(PayloadType.VENDOR, gen(0, b"abc", length=20))


def test_trailing_garbage_after_last_payload() -> None:
    _syntax(PayloadType.VENDOR, gen(0, b"abc") + b"\x00")
    _syntax(0, b"\x00\x00\x00\x04")


def test_data_after_sk_is_an_error() -> None:
    _syntax(PayloadType.SK, gen(PayloadType.IDi, b"x" * 16) + gen(0, b""))


def test_sk_decoding_stops_even_if_inner_type_set() -> None:
    # The SK's Next Payload (IDi here) is an inner type: nothing more is parsed after it.
    raw = gen(PayloadType.SK, b"v") + gen(PayloadType.IDi, b"x" * 20)
    payloads = decode_payloads(PayloadType.VENDOR, raw)
    assert payloads == [VendorId(b"v"), SK(PayloadType.IDi, b"x" * 20)]


def test_message_with_data_after_sk() -> None:
    raw = datagram(PayloadType.SK, gen(PayloadType.IDi, b"x" * 16) + b"\x00" * 4)
    with pytest.raises(ParseError):
        decode_message(raw)


def test_unknown_critical_payload() -> None:
    err = parse_error(PayloadType.VENDOR, gen(99, b"v") + gen(0, b"??", critical=True))
    assert err.notify == NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD
    assert err.data == bytes([99])


def test_unknown_critical_payload_in_message() -> None:
    with pytest.raises(ParseError) as info:
        decode_message(datagram(250, gen(0, b"", critical=True)))
    assert info.value.notify == NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD
    assert info.value.data == b"\xfa"


def test_unknown_non_critical_payload_kept() -> None:
    payloads = decode_payloads(99, gen(PayloadType.NONCE, b"opaque") + gen(0, b"n" * 16))
    assert payloads == [Unknown(99, b"opaque"), Nonce(b"n" * 16)]


def test_cert_with_critical_bit_is_kept_opaque() -> None:
    # CERT/CERTREQ/EAP are RFC 7296 types: the receiver ignores the critical bit of a type it knows.
    payloads = decode_payloads(PayloadType.CERT, gen(0, b"\x04der", critical=True))
    assert payloads == [Unknown(PayloadType.CERT, b"\x04der", critical=True)]


def test_skf_ends_the_chain() -> None:
    skf = gen(PayloadType.IDi, b"\x00\x01\x00\x02" + b"x" * 20)
    assert decode_payloads(PayloadType.SKF, skf) == [SKF(PayloadType.IDi, 1, 2, b"x" * 20)]
    _syntax(PayloadType.SKF, skf + b"\x00")


def test_skf_round_trip_and_offset() -> None:
    header = Header(b"i" * 8, b"r" * 8, 0, ExchangeType.IKE_AUTH, 0x08, 1)
    notify = Notify(NotifyType.INITIAL_CONTACT)
    raw = encode_message(header, [notify, SKF(PayloadType.IDi, 1, 3, b"iv-ct-icv")])
    msg = decode_message(raw)
    assert msg.payloads == [notify, SKF(PayloadType.IDi, 1, 3, b"iv-ct-icv")]
    assert msg.sk_offset == len(raw) - 8 - len(b"iv-ct-icv")
    assert raw[msg.sk_offset + 4 : msg.sk_offset + 8] == b"\x00\x01\x00\x03"
    assert skf_header(PayloadType.IDi, 1, 3, 9) == raw[msg.sk_offset : msg.sk_offset + 8]


def test_skf_too_short_for_its_numbers() -> None:
    _syntax(PayloadType.SKF, gen(0, b"\x00\x01\x00"))


def test_skf_must_be_last_when_encoding() -> None:
    with pytest.raises(ValueError, match="last payload"):
        encode_payloads([SKF(0, 2, 2, b""), Nonce(b"n" * 16)])


# ---------------------------------------------------------------------------------- body errors


@pytest.mark.parametrize(
    "ptype", [PayloadType.KE, PayloadType.IDi, PayloadType.IDr, PayloadType.AUTH, PayloadType.CP,
              PayloadType.NOTIFY, PayloadType.DELETE, PayloadType.TSi, PayloadType.TSr]
)
def test_body_shorter_than_fixed_part(ptype: int) -> None:
    _syntax(ptype, gen(0, b"\x01\x02\x03"))


def test_ke_of_exactly_4_bytes_is_syntactically_fine() -> None:
    assert decode_payloads(PayloadType.KE, gen(0, b"\x00\x13\x00\x00")) == [KE(19, b"")]


@pytest.mark.parametrize("size", [0, 15, 257])
def test_nonce_size_out_of_range(size: int) -> None:
    _syntax(PayloadType.NONCE, gen(0, b"n" * size))


def test_notify_spi_runs_past_payload() -> None:
    _syntax(PayloadType.NOTIFY, gen(0, bytes.fromhex("03084006") + b"1234"))


def test_notify_with_spi_round_trip_from_bytes() -> None:
    raw = gen(0, bytes.fromhex("0304002c") + b"\x01\x02\x03\x04")
    assert decode_payloads(PayloadType.NOTIFY, raw) == [Notify(44, 3, b"\x01\x02\x03\x04")]


def test_delete_spi_count_mismatch() -> None:
    _syntax(PayloadType.DELETE, gen(0, bytes.fromhex("03040003") + b"\x00" * 8))
    _syntax(PayloadType.DELETE, gen(0, bytes.fromhex("03040001") + b"\x00" * 8))


def test_delete_wrong_spi_sizes() -> None:
    _syntax(PayloadType.DELETE, gen(0, bytes.fromhex("01040001") + b"\x00" * 4))  # IKE with SPIs
    _syntax(PayloadType.DELETE, gen(0, bytes.fromhex("03080001") + b"\x00" * 8))  # ESP, 8-byte SPI
    _syntax(PayloadType.DELETE, gen(0, bytes.fromhex("02000001")))  # AH without SPI size
    _syntax(PayloadType.DELETE, gen(0, bytes.fromhex("01000000") + b"\x00"))  # IKE with data


def test_ts_bad_selector_lengths() -> None:
    v4 = bytes.fromhex("07000010" "0000ffff" "0a000000" "0a0000ff")
    v6 = bytes.fromhex("08000028" "0000ffff") + bytes(32)
    bad_v4 = v4[:2] + b"\x00\x28" + v4[4:] + bytes(24)  # IPv4 claiming 40 bytes
    bad_v6 = v6[:2] + b"\x00\x10" + v6[4:16]  # IPv6 claiming 16 bytes
    head = bytes.fromhex("01000000")
    assert decode_payloads(PayloadType.TSi, gen(0, head + v4)) == [TSi([ts4()])]
    _syntax(PayloadType.TSi, gen(0, head + bad_v4))
    _syntax(PayloadType.TSr, gen(0, head + bad_v6))
    _syntax(PayloadType.TSi, gen(0, head + v4[:12]))  # truncated selector
    _syntax(PayloadType.TSi, gen(0, head + v4[:6]))  # truncated selector header
    short = v4[:2] + b"\x00\x08" + v4[4:8]
    _syntax(PayloadType.TSi, gen(0, head + short))  # length too small for its type


def test_ts_count_mismatch() -> None:
    v4 = bytes.fromhex("07000010" "0000ffff" "0a000000" "0a0000ff")
    _syntax(PayloadType.TSi, gen(0, bytes.fromhex("02000000") + v4))  # announces 2, carries 1
    _syntax(PayloadType.TSi, gen(0, bytes.fromhex("01000000") + v4 + v4))  # announces 1, carries 2


def test_ts_unknown_type() -> None:
    sel = bytes.fromhex("09000010" "0000ffff") + bytes(8)
    _syntax(PayloadType.TSi, gen(0, bytes.fromhex("01000000") + sel))


# --------------------------------------------------------------------------------------- SA errors

XF_LAST = bytes.fromhex("00000008" "0400001f")  # DH 31, last
XF_MORE = bytes.fromhex("03000008" "02000005")  # PRF, more follow


def prop(marker: int, number: int, transforms: bytes, count: int, spi: bytes = b"", protocol: int = 1,
         length: int | None = None) -> bytes:
    if length is None:
        length = 8 + len(spi) + len(transforms)
    return struct.pack("!BBHBBBB", marker, 0, length, number, protocol, len(spi), count) + spi + transforms


def sa_error(body: bytes) -> None:
    _syntax(PayloadType.SA, gen(0, body))


def test_sa_valid_reference() -> None:
    body = prop(2, 1, XF_MORE + XF_LAST, 2) + prop(0, 2, XF_LAST, 1, spi=b"\x01\x02\x03\x04", protocol=3)
    (sa,) = decode_payloads(PayloadType.SA, gen(0, body))
    assert isinstance(sa, SA)
    assert [p.number for p in sa.proposals] == [1, 2]
    assert sa.proposals[1].spi == b"\x01\x02\x03\x04"
    assert sa.proposals[0].transforms == [Transform(2, 5), Transform(4, 31)]


def test_sa_empty() -> None:
    sa_error(b"")


def test_sa_proposal_shorter_than_8() -> None:
    sa_error(prop(0, 1, b"", 0)[:6])
    sa_error(prop(0, 1, XF_LAST, 1, length=7))


def test_sa_proposal_length_past_payload() -> None:
    sa_error(prop(0, 1, XF_LAST, 1, length=40))


def test_sa_proposal_spi_past_proposal_length() -> None:
    sa_error(prop(0, 1, b"", 0, spi=b"\x00" * 8, length=12))


def test_sa_proposal_bad_markers() -> None:
    sa_error(prop(1, 1, XF_LAST, 1))  # marker neither 0 nor 2
    sa_error(prop(2, 1, XF_LAST, 1))  # says more, nothing follows
    sa_error(prop(0, 1, XF_LAST, 1) + prop(0, 2, XF_LAST, 1))  # says last, data follows


@pytest.mark.parametrize("numbers", [(2, 3), (1, 3), (1, 1), (0, 1), (2, 1)])
def test_sa_proposal_numbering(numbers: tuple[int, int]) -> None:
    a, b = numbers
    sa_error(prop(2, a, XF_LAST, 1) + prop(0, b, XF_LAST, 1))


def test_sa_single_proposal_numbering() -> None:
    # A response echoes the number of the accepted proposal (RFC 7296 §3.3.1).
    (sa,) = decode_payloads(PayloadType.SA, gen(0, prop(0, 3, XF_LAST, 1)))
    assert isinstance(sa, SA) and sa.proposals[0].number == 3
    sa_error(prop(0, 0, XF_LAST, 1))


def test_sa_transform_count_mismatch() -> None:
    sa_error(prop(0, 1, XF_MORE + XF_LAST, 1))  # says 1, carries 2
    sa_error(prop(0, 1, XF_LAST, 2))  # says 2, carries 1
    sa_error(prop(0, 1, XF_LAST, 0))  # says 0, carries 1


def test_sa_transform_bad_markers() -> None:
    sa_error(prop(0, 1, XF_LAST + XF_LAST, 2))  # first says last
    sa_error(prop(0, 1, XF_MORE + XF_MORE, 2))  # last says more
    sa_error(prop(0, 1, bytes.fromhex("02000008" "0400001f"), 1))  # IKEv2 uses 3, not 2


def test_sa_transform_length_errors() -> None:
    sa_error(prop(0, 1, bytes.fromhex("00000004" "0400001f"), 1))  # below 8
    sa_error(prop(0, 1, bytes.fromhex("0000000c" "0400001f"), 1))  # past the proposal
    sa_error(prop(0, 1, XF_LAST[:6], 1))  # truncated transform header


def test_sa_attribute_errors() -> None:
    tlv_past = bytes.fromhex("0000000e" "01000014" "00110004" "aabb")  # TLV says 4 bytes, 2 present
    sa_error(prop(0, 1, tlv_past, 1))
    half_attr = bytes.fromhex("0000000a" "01000014" "800e")
    sa_error(prop(0, 1, half_attr, 1))
    dup_keylen = bytes.fromhex("00000010" "0100000c" "800e0080" "800e0100")
    sa_error(prop(0, 1, dup_keylen, 1))


def test_sa_proposal_without_transforms_is_syntactically_fine() -> None:
    (sa,) = decode_payloads(PayloadType.SA, gen(0, prop(0, 1, b"", 0)))
    assert sa == SA([Proposal(1, 1, b"", [])])


def test_parse_error_defaults() -> None:
    err = ParseError("x")
    assert err.notify == NotifyType.INVALID_SYNTAX and err.data == b"" and str(err) == "x"


@pytest.mark.parametrize(
    "payload",
    [
        SA([Proposal(1, 1, b"", [Transform(1, 12)] * 256)]),
        SA([Proposal(1, 1, b"s" * 256, [])]),
        Notify(16390, spi=b"s" * 256),
        Delete(ProtocolId.ESP, [b"1234"] * 65536),
        TSi([TrafficSelector(9, 0, 0, 0, IPv4Address(0), IPv4Address(0))]),
        TSi([ts4()] * 256),
    ],
    ids=["transforms", "proposal-spi", "notify-spi", "delete-count", "ts-type", "ts-count"],
)
def test_encode_rejects_unrepresentable_values(payload: Payload) -> None:
    with pytest.raises(ValueError):
        encode_payloads([payload])

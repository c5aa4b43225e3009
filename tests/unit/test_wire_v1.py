"""The ISAKMP codec against hand-computed bytes, and the Notify each kind of malformation maps to."""

from __future__ import annotations

import struct

import pytest

from ikegate.ike.v1.registry import (
    VID_DPD,
    VID_FRAGMENTATION,
    VID_NATT_DRAFT_02,
    VID_NATT_RFC3947,
    VID_XAUTH,
    ExchangeType,
    Flag,
    IdType,
    NotifyType,
    PayloadType,
    Phase1Attr,
    ProtocolId,
    vendor_name,
)
from ikegate.ike.v1.wire import (
    HEADER_LEN,
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
    Proposal,
    Transform,
    Unknown,
    VendorId,
    attr,
    decode_attributes,
    decode_chain,
    decode_header,
    decode_message,
    decode_payloads,
    encode_message,
    encode_payloads,
)

H = bytes.fromhex
CKY_I = H("0102030405060708")
CKY_R = H("a1a2a3a4a5a6a7a8")

# A real phase-1 SA body (AES-128, SHA-1, PSK, MODP-1024, 28800 s) as captured by the RUB NDS
# IPsec-StateMachineExtractor tests (IKEv1HandshakeSessionSecretsTest, "SAOfferBody").
SAI_B = H("00000001000000010000002c01010001000000240101000080010007800e0080800200028004000280030001800b0001800c7080")


def test_header_layout() -> None:
    header = Header(CKY_I, CKY_R, 0, ExchangeType.ID_PROT, 0, 0)
    data = encode_message(header, [VendorId(VID_DPD)])
    assert data[:HEADER_LEN] == CKY_I + CKY_R + H("0d 10 02 00 00000000 00000030".replace(" ", ""))
    assert data[HEADER_LEN:] == H("0000 0014".replace(" ", "")) + VID_DPD
    h = decode_header(data)
    assert (h.exchange, h.version, h.length, h.next_payload) == (2, 0x10, 48, PayloadType.VENDOR)
    assert h.spi == CKY_I + CKY_R and not h.encrypted and not h.commit


def test_flags() -> None:
    h = Header(CKY_I, CKY_R, 0, ExchangeType.QUICK, Flag.ENCRYPTION | Flag.COMMIT, 7)
    assert h.encrypted and h.commit


def test_captured_sa_body_round_trips_byte_exact() -> None:
    first, body = encode_payloads([SA([])])
    assert first == PayloadType.SA and body == H("0000000c") + H("0000000100000001")
    (sa,) = decode_payloads(PayloadType.SA, H("0000") + struct.pack("!H", 4 + len(SAI_B)) + SAI_B)
    assert isinstance(sa, SA)
    assert sa.doi == 1 and sa.situation == 1
    (prop,) = sa.proposals
    assert (prop.number, prop.protocol, prop.spi) == (1, ProtocolId.ISAKMP, b"")
    (t,) = prop.transforms
    assert (t.number, t.transform_id) == (1, 1)
    values = {a.type: a.value for a in t.attributes}
    assert values == {Phase1Attr.ENCRYPTION: 7, Phase1Attr.KEY_LENGTH: 128, Phase1Attr.HASH: 2, Phase1Attr.GROUP: 2,
                      Phase1Attr.AUTH_METHOD: 1, Phase1Attr.LIFE_TYPE: 1, Phase1Attr.LIFE_DURATION: 28800}
    assert sa.body() == SAI_B


def test_sa_built_by_hand() -> None:
    t = Transform(1, 1, [Attribute(1, 5), Attribute(2, 2), attr(12, 86400)])
    sa = SA([Proposal(1, 1, b"", [t])])
    expected = (H("00000001 00000001".replace(" ", ""))
                + H("0000 0020 01 01 00 01".replace(" ", ""))  # proposal: last, len 32, #1, ISAKMP, no SPI, 1
                + H("0000 0018 01 01 0000".replace(" ", ""))  # transform: last, len 24, #1, KEY_IKE
                + H("80010005 80020002 000c0004 00015180".replace(" ", "")))
    assert sa.body() == expected
    assert decode_payloads(PayloadType.SA, H("0000") + struct.pack("!H", 4 + len(expected)) + expected) == [sa]


def test_two_proposals_and_transforms_chain_markers() -> None:
    sa = SA([Proposal(1, 3, H("11223344"), [Transform(1, 12, []), Transform(2, 3, [])]),
             Proposal(2, 3, H("55667788"), [Transform(1, 12, [])])])
    body = sa.body()
    assert body[8] == PayloadType.PROPOSAL  # first proposal is followed by another
    assert body[8 + 12] == PayloadType.TRANSFORM  # first transform is followed by another
    (back,) = decode_payloads(PayloadType.SA, H("0000") + struct.pack("!H", 4 + len(body)) + body)
    assert back == sa


def test_attribute_formats() -> None:
    assert attr(12, 28800) == Attribute(12, 28800)
    assert attr(12, 86400) == Attribute(12, H("00015180"))
    assert attr(2, 86400).number == 86400
    assert Attribute(14, 256).encode() == H("800e0100")
    assert Attribute(12, H("00015180")).encode() == H("000c000400015180")
    assert decode_attributes(H("80010001 80020e10".replace(" ", ""))) == [Attribute(1, 1), Attribute(2, 3600)]
    with pytest.raises(ValueError):
        Attribute(1, 70000).encode()
    with pytest.raises(ValueError):
        attr(1, -1)


def test_identification_payloads() -> None:
    # RUB capture: ID_IPV4_ADDR 10.0.3.10, protocol 0, port 0.
    (idp,) = decode_payloads(PayloadType.ID, H("0000000c") + H("010000000a00030a"))
    assert idp == Identification(IdType.ID_IPV4_ADDR, H("0a00030a"))
    subnet = Identification(IdType.ID_IPV4_ADDR_SUBNET, H("0a010000ffffff00"), 17, 500)
    assert subnet.body() == H("041101f40a010000ffffff00")
    fqdn = Identification(IdType.ID_FQDN, b"b.swanlab")
    for p in (subnet, fqdn, Identification(IdType.ID_IPV6_ADDR_SUBNET, bytes(32)),
              Identification(IdType.ID_IPV4_ADDR_RANGE, H("0a0000010a0000ff"))):
        first, data = encode_payloads([p])
        assert decode_payloads(first, data) == [p]


def test_notify_delete_and_friends_byte_exact() -> None:
    n = Notify(NotifyType.R_U_THERE, ProtocolId.ISAKMP, CKY_I + CKY_R, H("00000007"))
    assert n.body() == H("00000001 01 10 8d28".replace(" ", "")) + CKY_I + CKY_R + H("00000007")
    d = Delete(ProtocolId.ISAKMP, [CKY_I + CKY_R])
    assert d.spi_size == 16
    assert d.body() == H("00000001 01 10 0001".replace(" ", "")) + CKY_I + CKY_R
    esp = Delete(ProtocolId.ESP, [H("c18ec05c"), H("00000100")])
    assert esp.body() == H("00000001 03 04 0002 c18ec05c 00000100".replace(" ", ""))
    assert Delete(ProtocolId.ESP, []).spi_size == 4
    assert NatD(H("aa" * 20)).TYPE == PayloadType.NAT_D and NatD(b"", draft=True).TYPE == PayloadType.NAT_D_DRAFT
    oa = NatOA(IdType.ID_IPV4_ADDR, H("c0000201"))
    assert oa.body() == H("01000000c0000201") and oa.TYPE == 21
    payloads = [Hash(b"h" * 20), n, d, esp, NatD(b"x" * 20), NatD(b"y" * 20, True), oa, NatOA(5, bytes(16), True),
                KE(b"k" * 256), Nonce(b"n" * 32), VendorId(VID_XAUTH), CertReq(4, b""),
                Cert(4, b"der"), Unknown(PayloadType.ATTRIBUTE, b"\x01\x00\x00\x00")]
    first, data = encode_payloads(payloads)
    assert first == PayloadType.HASH
    assert decode_payloads(first, data) == payloads


def test_encrypted_message_is_opaque() -> None:
    header = Header(CKY_I, CKY_R, PayloadType.HASH, ExchangeType.INFORMATIONAL, Flag.ENCRYPTION, 0x01020304)
    from ikegate.ike.v1.wire import encode_header

    data = encode_header(header, HEADER_LEN + 32) + bytes(range(32))
    msg = decode_message(data)
    assert msg.payloads == [] and msg.encrypted == bytes(range(32))
    assert msg.header.message_id == 0x01020304
    with pytest.raises(ParseError):
        decode_message(encode_header(header, HEADER_LEN))


def test_decode_chain_leaves_padding() -> None:
    first, data = encode_payloads([Hash(b"a" * 20), Nonce(b"b" * 16)])
    payloads, end = decode_chain(first, data + bytes(7))
    assert end == len(data) and len(payloads) == 2
    with pytest.raises(ParseError) as err:
        decode_payloads(first, data + bytes(7))
    assert err.value.notify == NotifyType.UNEQUAL_PAYLOAD_LENGTHS


def _notify_of(data: bytes, first: int | None = None) -> int:
    with pytest.raises(ParseError) as err:
        if first is None:
            decode_message(data)
        else:
            decode_payloads(first, data)
    return err.value.notify


def test_parse_errors_carry_the_right_notify() -> None:
    good = encode_message(Header(CKY_I, CKY_R, 0, 2, 0, 0), [Nonce(b"n" * 16)])
    assert _notify_of(good[:20]) == NotifyType.PAYLOAD_MALFORMED
    assert _notify_of(good[:17] + b"\x20" + good[18:]) == NotifyType.INVALID_MAJOR_VERSION
    assert _notify_of(good[:24] + struct.pack("!I", len(good) + 1)) == NotifyType.UNEQUAL_PAYLOAD_LENGTHS
    assert _notify_of(good[:16] + b"\x63" + good[17:]) == NotifyType.INVALID_PAYLOAD_TYPE  # type 99
    assert _notify_of(good[:16] + b"\x02" + good[17:]) == NotifyType.INVALID_PAYLOAD_TYPE  # bare PROPOSAL
    assert _notify_of(H("0000 0003".replace(" ", "")), PayloadType.NONCE) == NotifyType.PAYLOAD_MALFORMED
    assert _notify_of(H("0000 0010".replace(" ", "")) + bytes(4), PayloadType.NONCE) == NotifyType.PAYLOAD_MALFORMED
    sa = SA([Proposal(1, 1, b"", [Transform(1, 1, [Attribute(1, 7)])])]).body()

    def sa_payload(body: bytes) -> bytes:
        return H("0000") + struct.pack("!H", 4 + len(body)) + body

    assert _notify_of(sa_payload(H("00000002") + sa[4:]), PayloadType.SA) == NotifyType.DOI_NOT_SUPPORTED
    assert _notify_of(sa_payload(sa[:4] + H("00000002") + sa[8:]), PayloadType.SA) == \
        NotifyType.SITUATION_NOT_SUPPORTED
    bad_count = sa[:15] + b"\x02" + sa[16:]  # claims two transforms, carries one
    assert _notify_of(sa_payload(bad_count), PayloadType.SA) == NotifyType.BAD_PROPOSAL_SYNTAX
    bad_tlv = sa[:-4] + H("00010009")  # a TLV attribute longer than its transform
    assert _notify_of(sa_payload(bad_tlv), PayloadType.SA) == NotifyType.BAD_PROPOSAL_SYNTAX
    assert _notify_of(sa_payload(sa[:8]), PayloadType.SA) == NotifyType.BAD_PROPOSAL_SYNTAX
    assert _notify_of(H("0000 000d 01000000 0a000001 ff".replace(" ", "")), PayloadType.ID) == \
        NotifyType.INVALID_ID_INFORMATION
    bad_delete = H("0000 0010 00000001 03 04 0002".replace(" ", "")) + bytes(4)
    assert _notify_of(bad_delete, PayloadType.DELETE) == NotifyType.PAYLOAD_MALFORMED
    bad_notify = H("0000 000c 00000001 01 10 0001".replace(" ", ""))
    assert _notify_of(bad_notify, PayloadType.NOTIFY) == NotifyType.PAYLOAD_MALFORMED
    assert _notify_of(H("0000 000a 05000000 0102".replace(" ", "")), PayloadType.NAT_OA) == \
        NotifyType.INVALID_ID_INFORMATION


def test_decreasing_proposal_numbers_rejected() -> None:
    body = SA([Proposal(2, 3, H("01020304"), [Transform(1, 12)]), Proposal(1, 3, H("01020304"), [Transform(1, 12)])]
              ).body()
    assert _notify_of(H("0000") + struct.pack("!H", 4 + len(body)) + body, PayloadType.SA) == \
        NotifyType.BAD_PROPOSAL_SYNTAX


def test_encoder_refuses_impossible_values() -> None:
    with pytest.raises(ValueError):
        Delete(ProtocolId.ESP, [H("01020304"), H("0102")]).body()
    with pytest.raises(ValueError):
        encode_message(Header(b"short", CKY_R, 0, 2, 0, 0), [])
    with pytest.raises(ValueError):
        encode_payloads([Nonce(bytes(70000))])


def test_fragment_payload_byte_exact() -> None:
    # Next 0, reserved, length 12; fragment ID 1, number 2, flags LAST; then the data (strongSwan's layout).
    raw = encode_message(Header(CKY_I, CKY_R, 0, ExchangeType.ID_PROT, 0, 0), [Fragment(1, 2, True, b"abcd")])
    assert raw[HEADER_LEN:] == H("0000000c") + H("00010201") + b"abcd"
    assert raw[16] == PayloadType.FRAGMENT == 132
    assert decode_message(raw).payloads == [Fragment(1, 2, True, b"abcd")]
    # Flag bits other than LAST are ignored on receipt; a payload without its four header octets is not.
    assert decode_payloads(PayloadType.FRAGMENT, H("0000000a") + H("0007fffe") + b"xy") == [
        Fragment(7, 255, False, b"xy")]
    with pytest.raises(ParseError):
        decode_payloads(PayloadType.FRAGMENT, H("00000007") + H("000101"))


def test_vendor_names() -> None:
    assert vendor_name(VID_DPD) == "DPD"
    assert vendor_name(VID_NATT_RFC3947) == "NAT-T (RFC 3947)"
    assert vendor_name(VID_NATT_DRAFT_02) == "NAT-T draft-02"
    assert vendor_name(VID_XAUTH) == "XAuth"
    assert vendor_name(VID_FRAGMENTATION + H("80000000")) == "FRAGMENTATION"
    assert vendor_name(H("deadbeef")) is None


def test_registry_text() -> None:
    assert NotifyType.text(24578) == "INITIAL_CONTACT"
    assert NotifyType.text(40000) == "NOTIFYTYPE_40000"
    assert NotifyType.is_error(14) and not NotifyType.is_error(36136)
    assert ExchangeType.text(32) == "QUICK"

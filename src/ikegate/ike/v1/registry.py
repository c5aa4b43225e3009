"""ISAKMP (RFC 2408), IKEv1 (RFC 2409) and IPsec DOI (RFC 2407) registries as ``IntEnum``s.

Kept apart from the IKEv2 registries on purpose: the same names carry different numbers in the two
protocols (payload types, notify codes, hash vs PRF IDs, ID types 4/6/7), and mixing them up is the kind
of bug that only a real peer finds. Values not listed still travel as plain ``int``; ``text()`` names
them all. The vendor-ID table at the end lets the engine recognise what strongSwan and others announce.
"""

from __future__ import annotations

import enum

from ikegate.ike.wire.registry import Registry

ISAKMP_VERSION = 0x10  # major 1, minor 0
DOI_IPSEC = 1  # RFC 2407 §4.2
SIT_IDENTITY_ONLY = 1  # RFC 2407 §4.2.1
KEY_IKE = 1  # the one ISAKMP transform ID (RFC 2407 §4.4.2)


class ExchangeType(Registry):
    NONE = 0
    BASE = 1
    ID_PROT = 2  # Main Mode
    AUTH_ONLY = 3
    AGGRESSIVE = 4
    INFORMATIONAL = 5
    TRANSACTION = 6  # Mode Config / XAuth (not implemented)
    QUICK = 32
    NEW_GROUP = 33


class PayloadType(Registry):
    NONE = 0
    SA = 1
    PROPOSAL = 2
    TRANSFORM = 3
    KE = 4
    ID = 5
    CERT = 6
    CERTREQ = 7
    HASH = 8
    SIG = 9
    NONCE = 10
    NOTIFY = 11
    DELETE = 12
    VENDOR = 13
    ATTRIBUTE = 14  # Mode Config (draft-dukes-ike-mode-cfg)
    SAK = 15
    SAT = 16
    KD = 17
    SEQ = 18
    POP = 19
    NAT_D = 20  # RFC 3947
    NAT_OA = 21  # RFC 3947
    GAP = 22
    NAT_D_DRAFT = 130  # draft-ietf-ipsec-nat-t-ike-01..03
    NAT_OA_DRAFT = 131
    FRAGMENT = 132  # Cisco-style IKEv1 fragmentation (strongSwan speaks it)


#: Payload types a message may carry: the codec answers anything else with INVALID_PAYLOAD_TYPE.
KNOWN_PAYLOADS = frozenset(int(p) for p in PayloadType if p is not PayloadType.NONE)


class Flag(enum.IntFlag):
    ENCRYPTION = 0x01
    COMMIT = 0x02
    AUTH_ONLY = 0x04


class ProtocolId(Registry):
    ISAKMP = 1
    AH = 2
    ESP = 3
    IPCOMP = 4


class Phase1Attr(Registry):
    """RFC 2409 Appendix A attribute classes; the Basic/Variable bit is the codec's business."""

    ENCRYPTION = 1
    HASH = 2
    AUTH_METHOD = 3
    GROUP = 4
    GROUP_TYPE = 5
    GROUP_PRIME = 6
    GROUP_GEN_ONE = 7
    GROUP_GEN_TWO = 8
    GROUP_CURVE_A = 9
    GROUP_CURVE_B = 10
    LIFE_TYPE = 11
    LIFE_DURATION = 12
    PRF = 13
    KEY_LENGTH = 14
    FIELD_SIZE = 15
    GROUP_ORDER = 16


class Phase1Encr(Registry):
    DES_CBC = 1
    IDEA_CBC = 2
    BLOWFISH_CBC = 3
    RC5_CBC = 4
    TRIPLE_DES_CBC = 5
    CAST_CBC = 6
    AES_CBC = 7
    CAMELLIA_CBC = 8


class Phase1Hash(Registry):
    MD5 = 1
    SHA = 2
    TIGER = 3
    SHA2_256 = 4
    SHA2_384 = 5
    SHA2_512 = 6


#: CERT / CERTREQ encoding "X.509 Certificate - Signature" (RFC 2408 §3.9), the one IKE peers use.
CERT_X509_SIGNATURE = 4


class AuthMethod(Registry):
    PRE_SHARED = 1
    DSS_SIG = 2
    RSA_SIG = 3
    RSA_ENC = 4
    RSA_REV_ENC = 5
    ECDSA_256 = 9
    ECDSA_384 = 10
    ECDSA_521 = 11
    XAUTH_INIT_PSK = 65001
    XAUTH_RESP_PSK = 65002


class LifeType(Registry):
    SECONDS = 1
    KILOBYTES = 2


class IpsecAttr(Registry):
    """RFC 2407 §4.5 IPsec SA attributes."""

    SA_LIFE_TYPE = 1
    SA_LIFE_DURATION = 2
    GROUP_DESCRIPTION = 3
    ENCAPSULATION_MODE = 4
    AUTH_ALGORITHM = 5
    KEY_LENGTH = 6
    KEY_ROUNDS = 7
    COMPRESS_DICT_SIZE = 8
    COMPRESS_PRIVATE_ALG = 9
    ECN_TUNNEL = 10


class EncapMode(Registry):
    TUNNEL = 1
    TRANSPORT = 2
    UDP_TUNNEL = 3  # RFC 3947
    UDP_TRANSPORT = 4
    UDP_TUNNEL_DRAFT = 61443  # draft-ietf-ipsec-nat-t-ike-00..03
    UDP_TRANSPORT_DRAFT = 61444


class IpsecAuth(Registry):
    HMAC_MD5 = 1
    HMAC_SHA = 2
    DES_MAC = 3
    KPDK = 4
    HMAC_SHA2_256 = 5
    HMAC_SHA2_384 = 6
    HMAC_SHA2_512 = 7


class EspId(Registry):
    """ESP transform IDs (RFC 2407 §4.4.4); the numbers coincide with IKEv2 ENCR IDs."""

    DES = 2
    TRIPLE_DES = 3
    NULL = 11
    AES_CBC = 12
    AES_CTR = 13
    AES_CCM_8 = 14
    AES_CCM_12 = 15
    AES_CCM_16 = 16
    AES_GCM_8 = 18
    AES_GCM_12 = 19
    AES_GCM_16 = 20


class IdType(Registry):
    ID_IPV4_ADDR = 1
    ID_FQDN = 2
    ID_USER_FQDN = 3
    ID_IPV4_ADDR_SUBNET = 4
    ID_IPV6_ADDR = 5
    ID_IPV6_ADDR_SUBNET = 6
    ID_IPV4_ADDR_RANGE = 7
    ID_IPV6_ADDR_RANGE = 8
    ID_DER_ASN1_DN = 9
    ID_DER_ASN1_GN = 10
    ID_KEY_ID = 11


class NotifyType(Registry):
    """RFC 2408 §3.14.1 errors (1-8191), RFC 2407 §4.6.3 status, RFC 3706 DPD."""

    INVALID_PAYLOAD_TYPE = 1
    DOI_NOT_SUPPORTED = 2
    SITUATION_NOT_SUPPORTED = 3
    INVALID_COOKIE = 4
    INVALID_MAJOR_VERSION = 5
    INVALID_MINOR_VERSION = 6
    INVALID_EXCHANGE_TYPE = 7
    INVALID_FLAGS = 8
    INVALID_MESSAGE_ID = 9
    INVALID_PROTOCOL_ID = 10
    INVALID_SPI = 11
    INVALID_TRANSFORM_ID = 12
    ATTRIBUTES_NOT_SUPPORTED = 13
    NO_PROPOSAL_CHOSEN = 14
    BAD_PROPOSAL_SYNTAX = 15
    PAYLOAD_MALFORMED = 16
    INVALID_KEY_INFORMATION = 17
    INVALID_ID_INFORMATION = 18
    INVALID_CERT_ENCODING = 19
    INVALID_CERTIFICATE = 20
    CERT_TYPE_UNSUPPORTED = 21
    INVALID_CERT_AUTHORITY = 22
    INVALID_HASH_INFORMATION = 23
    AUTHENTICATION_FAILED = 24
    INVALID_SIGNATURE = 25
    ADDRESS_NOTIFICATION = 26
    NOTIFY_SA_LIFETIME = 27
    CERTIFICATE_UNAVAILABLE = 28
    UNSUPPORTED_EXCHANGE_TYPE = 29
    UNEQUAL_PAYLOAD_LENGTHS = 30
    CONNECTED = 16384
    RESPONDER_LIFETIME = 24576
    REPLAY_STATUS = 24577
    INITIAL_CONTACT = 24578
    R_U_THERE = 36136
    R_U_THERE_ACK = 36137

    @staticmethod
    def is_error(value: int) -> bool:
        return 0 < value < 8192


# ------------------------------------------------------------------------------ mapping to IKEv2 IDs
#
# The configuration (IkeProposalSpec / EspProposalSpec) and the crypto layer speak IKEv2 transform IDs;
# these tables translate at the edge so both engines share one configuration vocabulary.

#: IKEv1 phase-1 encryption -> IKEv2 ENCR ID.
P1_ENCR_TO_V2: dict[int, int] = {Phase1Encr.TRIPLE_DES_CBC: 3, Phase1Encr.AES_CBC: 12}
P1_ENCR_FROM_V2: dict[int, int] = {v: k for k, v in P1_ENCR_TO_V2.items()}
#: IKEv1 phase-1 hash -> IKEv2 PRF ID (IKEv1's PRF is HMAC with the negotiated hash).
P1_HASH_TO_PRF: dict[int, int] = {Phase1Hash.MD5: 1, Phase1Hash.SHA: 2, Phase1Hash.SHA2_256: 5, Phase1Hash.SHA2_384: 6,
                  Phase1Hash.SHA2_512: 7}
P1_HASH_FROM_PRF: dict[int, int] = {v: k for k, v in P1_HASH_TO_PRF.items()}
#: IKEv1 phase-1 hash -> the IKEv2 integrity transform of the same hash (for ``display`` only).
P1_HASH_TO_INTEG: dict[int, int] = {Phase1Hash.MD5: 1, Phase1Hash.SHA: 2, Phase1Hash.SHA2_256: 12,
                                     Phase1Hash.SHA2_384: 13, Phase1Hash.SHA2_512: 14}
P1_HASH_FROM_INTEG: dict[int, int] = {v: k for k, v in P1_HASH_TO_INTEG.items()}
#: hashlib names of the phase-1 hashes (IV derivation and NAT-D use the bare hash).
P1_HASH_NAME: dict[int, str] = {Phase1Hash.MD5: "md5", Phase1Hash.SHA: "sha1", Phase1Hash.SHA2_256: "sha256",
                Phase1Hash.SHA2_384: "sha384", Phase1Hash.SHA2_512: "sha512"}
#: IPsec DOI authentication algorithm -> IKEv2 INTEG ID.
ESP_AUTH_TO_V2: dict[int, int] = {IpsecAuth.HMAC_MD5: 1, IpsecAuth.HMAC_SHA: 2, IpsecAuth.HMAC_SHA2_256: 12,
                  IpsecAuth.HMAC_SHA2_384: 13, IpsecAuth.HMAC_SHA2_512: 14}
ESP_AUTH_FROM_V2: dict[int, int] = {v: k for k, v in ESP_AUTH_TO_V2.items()}


# ---------------------------------------------------------------------------------------- vendor IDs

VID_DPD = bytes.fromhex("afcad71368a1f1c96b8696fc77570100")  # RFC 3706 §5.1 (version 1.0)
VID_NATT_RFC3947 = bytes.fromhex("4a131c81070358455c5728f20e95452f")  # MD5("RFC 3947")
VID_NATT_DRAFT_02 = bytes.fromhex("cd60464335df21f87cfdb2fc68b6a448")  # draft-ietf-ipsec-nat-t-ike-02
VID_NATT_DRAFT_02N = bytes.fromhex("90cb80913ebb696e086381b5ec427b1f")  # ... -02\n
VID_NATT_DRAFT_03 = bytes.fromhex("7d9419a65310ca6f2c179d9215529d56")
VID_NATT_DRAFT_01 = bytes.fromhex("16f6ca16e4a4066d83821a0f0aeaa862")
VID_NATT_DRAFT_00 = bytes.fromhex("4485152d18b6bbcd0be8a8469579ddcc")
VID_XAUTH = bytes.fromhex("09002689dfd6b712")
VID_FRAGMENTATION = bytes.fromhex("4048b7d56ebce88525e7de7f00d6c2d3")  # Cisco-style, strongSwan sends it
VID_STRONGSWAN = bytes.fromhex("882fe56d6fd20dbc2251613b2ebe5beb")  # MD5("strongSwan")
VID_CISCO_UNITY = bytes.fromhex("12f5f28c457168a9702d9fe274cc0100")

NATT_DRAFT_VIDS = frozenset({VID_NATT_DRAFT_02, VID_NATT_DRAFT_02N, VID_NATT_DRAFT_03, VID_NATT_DRAFT_01,
                             VID_NATT_DRAFT_00})

_VENDOR_NAMES: tuple[tuple[bytes, str], ...] = (
    (VID_DPD, "DPD"),
    (VID_NATT_RFC3947, "NAT-T (RFC 3947)"),
    (VID_NATT_DRAFT_02, "NAT-T draft-02"),
    (VID_NATT_DRAFT_02N, "NAT-T draft-02n"),
    (VID_NATT_DRAFT_03, "NAT-T draft-03"),
    (VID_NATT_DRAFT_01, "NAT-T draft-01"),
    (VID_NATT_DRAFT_00, "NAT-T draft-00"),
    (VID_XAUTH, "XAuth"),
    (VID_FRAGMENTATION, "FRAGMENTATION"),
    (VID_STRONGSWAN, "strongSwan"),
    (VID_CISCO_UNITY, "Cisco Unity"),
)


def vendor_name(vid: bytes) -> str | None:
    """What a Vendor ID announces, or None. Matched by prefix: some carry version or flag bytes after."""
    for known, name in _VENDOR_NAMES:
        if vid[: len(known)] == known:
            return name
    return None


__all__ = [
    "DOI_IPSEC",
    "ESP_AUTH_FROM_V2",
    "ESP_AUTH_TO_V2",
    "ISAKMP_VERSION",
    "KEY_IKE",
    "KNOWN_PAYLOADS",
    "NATT_DRAFT_VIDS",
    "P1_ENCR_FROM_V2",
    "P1_ENCR_TO_V2",
    "P1_HASH_FROM_INTEG",
    "P1_HASH_FROM_PRF",
    "P1_HASH_NAME",
    "P1_HASH_TO_INTEG",
    "P1_HASH_TO_PRF",
    "SIT_IDENTITY_ONLY",
    "VID_CISCO_UNITY",
    "VID_DPD",
    "VID_FRAGMENTATION",
    "VID_NATT_DRAFT_00",
    "VID_NATT_DRAFT_01",
    "VID_NATT_DRAFT_02",
    "VID_NATT_DRAFT_02N",
    "VID_NATT_DRAFT_03",
    "VID_NATT_RFC3947",
    "VID_STRONGSWAN",
    "VID_XAUTH",
    "AuthMethod",
    "EncapMode",
    "EspId",
    "ExchangeType",
    "Flag",
    "IdType",
    "IpsecAttr",
    "IpsecAuth",
    "LifeType",
    "NotifyType",
    "PayloadType",
    "Phase1Attr",
    "Phase1Encr",
    "Phase1Hash",
    "ProtocolId",
    "vendor_name",
]

"""CERT, CERTREQ and SIGNATURE_HASH_ALGORITHMS payloads of IKEv2 (RFC 7296 §3.6-3.7, RFC 7427 §4).

The codec keeps CERT and CERTREQ opaque (:class:`~ikegate.ike.wire.v2.Unknown`); this module builds
and reads the only encoding ikegate speaks, "X.509 Certificate - Signature" (4): a CERT carries one DER
certificate, a CERTREQ the concatenated SHA-1 hashes of trusted CAs' SubjectPublicKeyInfo. Payloads of
other encodings are ignored (a peer may send several kinds of CERTREQ).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from ikegate.ike.wire.registry import NotifyType, PayloadType
from ikegate.ike.wire.v2 import Notify, Payload, Unknown

X509_SIGNATURE = 4  # RFC 7296 §3.6 Certificate Encoding


def cert_payloads(certificates: Iterable[bytes]) -> list[Payload]:
    return [Unknown(PayloadType.CERT, bytes([X509_SIGNATURE]) + der) for der in certificates]


def certreq_payloads(data: bytes) -> list[Payload]:
    return [Unknown(PayloadType.CERTREQ, bytes([X509_SIGNATURE]) + data)] if data else []


def hash_algorithms_payloads(data: bytes) -> list[Payload]:
    return [Notify(NotifyType.SIGNATURE_HASH_ALGORITHMS, data=data)] if data else []


def _bodies(payloads: Iterable[Payload], kind: int) -> list[bytes]:
    return [p.data[1:] for p in payloads
            if isinstance(p, Unknown) and p.payload_type == kind and p.data[:1] == bytes([X509_SIGNATURE])]


def certificates_of(payloads: Iterable[Payload]) -> tuple[bytes, ...]:
    """The X.509 certificates the peer sent (DER), in order: its own first (RFC 7296 §3.6)."""
    return tuple(body for body in _bodies(payloads, PayloadType.CERT) if body)


def certreq_of(payloads: Iterable[Payload]) -> bytes:
    """The CA hashes of every X.509 CERTREQ, concatenated (whole 20-octet hashes only)."""
    joined = b"".join(body[: len(body) - len(body) % 20] for body in _bodies(payloads, PayloadType.CERTREQ))
    return joined


def hash_algorithms_of(payloads: Iterable[Payload]) -> list[int] | None:
    """The hash algorithm numbers of the peer's SIGNATURE_HASH_ALGORITHMS, None if it sent none."""
    for p in payloads:
        if isinstance(p, Notify) and p.notify_type == NotifyType.SIGNATURE_HASH_ALGORITHMS:
            data = p.data[: len(p.data) & ~1]
            return list(struct.unpack(f"!{len(data) // 2}H", data))
    return None


__all__ = [
    "cert_payloads",
    "certificates_of",
    "certreq_of",
    "certreq_payloads",
    "hash_algorithms_of",
    "hash_algorithms_payloads",
]

"""The Encrypted and Authenticated payload (SK, RFC 7296 §3.14; AEAD per RFC 5282).

One direction's keys form a :class:`SkContext`; sealing builds a whole datagram around the inner payloads,
opening checks the ICV in constant time before anything is decrypted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ikegate.ike.crypto import Cipher, CryptoError, EncrAlg, IntegAlg, Mac
from ikegate.ike.wire.registry import PayloadType
from ikegate.ike.wire.v2 import (
    HEADER_LEN,
    SK,
    Header,
    Message,
    ParseError,
    Payload,
    decode_payloads,
    encode_payloads,
    sk_generic_header,
)


@dataclass(slots=True)
class SkContext:
    """The cipher and MAC of one direction of an IKE SA."""

    encr: EncrAlg
    cipher: Cipher
    mac: Mac | None
    icv_size: int

    @classmethod
    def build(cls, encr: EncrAlg, integ: IntegAlg | None, sk_e: bytes, sk_a: bytes) -> SkContext:
        if encr.aead:
            return cls(encr, encr.keyed(sk_e), None, encr.icv_size)
        assert integ is not None  # proposal selection guarantees an INTEG transform for non-AEAD ciphers
        return cls(encr, encr.keyed(sk_e), integ.keyed(sk_a), integ.icv_size)


def seal(ctx: SkContext, header: Header, payloads: Sequence[Payload], rng: Callable[[int], bytes]) -> bytes:
    """A complete datagram: ``header`` followed by one SK payload holding ``payloads``."""
    first, body = encode_payloads(payloads)
    block = ctx.encr.block_size
    pad_len = (block - (len(body) + 1) % block) % block
    plaintext = body + bytes(pad_len) + bytes((pad_len,))
    iv = rng(ctx.encr.iv_size)
    ct_len = len(plaintext) + (ctx.encr.icv_size if ctx.encr.aead else 0)
    sk_body_len = len(iv) + ct_len + (0 if ctx.encr.aead else ctx.icv_size)
    header.next_payload = PayloadType.SK
    header.length = HEADER_LEN + 4 + sk_body_len
    prefix = header.pack() + sk_generic_header(first, sk_body_len)
    if ctx.encr.aead:
        return prefix + iv + ctx.cipher.encrypt(iv, plaintext, prefix)
    signed = prefix + iv + ctx.cipher.encrypt(iv, plaintext)
    assert ctx.mac is not None
    return signed + ctx.mac.sign(signed)


def open_sk(ctx: SkContext, message: Message, data: bytes) -> list[Payload]:
    """The inner payloads of ``message``'s SK payload. Raises CryptoError (drop silently) when the ICV or
    padding is wrong, ParseError when the decrypted payloads are malformed."""
    sk = message.payloads[-1] if message.payloads else None
    if not isinstance(sk, SK) or message.sk_offset is None:
        raise ParseError("no SK payload")
    data = data[: message.header.length]
    iv_size = ctx.encr.iv_size
    if ctx.encr.aead:
        if len(sk.data) < iv_size + ctx.icv_size:
            raise CryptoError("SK payload too short")
        aad = data[: message.sk_offset + 4]
        plaintext = ctx.cipher.decrypt(sk.data[:iv_size], sk.data[iv_size:], aad)
    else:
        assert ctx.mac is not None
        if len(sk.data) < iv_size + ctx.icv_size + ctx.encr.block_size:
            raise CryptoError("SK payload too short")
        if not ctx.mac.verify(data[: -ctx.icv_size], data[-ctx.icv_size :]):
            raise CryptoError("ICV mismatch")
        ct = sk.data[iv_size : -ctx.icv_size]
        if len(ct) % ctx.encr.block_size:
            raise CryptoError("ciphertext is not a whole number of blocks")
        plaintext = ctx.cipher.decrypt(sk.data[:iv_size], ct)
    if not plaintext:
        raise CryptoError("empty plaintext")
    pad_len = plaintext[-1]
    if pad_len + 1 > len(plaintext):
        raise CryptoError("bad padding length")
    return decode_payloads(sk.first_payload, plaintext[: -1 - pad_len])

"""The Encrypted and Authenticated payload (SK, RFC 7296 §3.14; AEAD per RFC 5282).

One direction's keys form a :class:`SkContext`; sealing builds a whole datagram around the inner payloads,
opening checks the ICV in constant time before anything is decrypted. The Encrypted Fragment payload
(RFC 7383) protects each fragment the same way; ``ikegate.ike.v2.fragments`` builds on the pieces here
(:func:`padded`, :func:`sealed_size`, :func:`encrypt_after`, :func:`decrypt_after`).
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
    Payload,
    decode_payloads,
    encode_payloads,
    sk_generic_header,
)


@dataclass(slots=True)
class SkContext:
    """The cipher and MAC of one direction of an IKE SA.

    The cipher is keyed on each use, not held: an established IKE SA protects a message now and then (DPD,
    rekey, Delete), while a held AES-GCM context costs 2.5 kB of OpenSSL memory per direction and SA, and
    keying one takes about a microsecond."""

    encr: EncrAlg
    sk_e: bytes
    mac: Mac | None
    icv_size: int

    @classmethod
    def build(cls, encr: EncrAlg, integ: IntegAlg | None, sk_e: bytes, sk_a: bytes) -> SkContext:
        if len(sk_e) != encr.keymat_size:
            raise CryptoError(f"{encr.name} needs {encr.keymat_size} bytes of keymat, got {len(sk_e)}")
        if encr.aead:
            return cls(encr, sk_e, None, encr.icv_size)
        assert integ is not None  # proposal selection guarantees an INTEG transform for non-AEAD ciphers
        return cls(encr, sk_e, integ.keyed(sk_a), integ.icv_size)

    @property
    def cipher(self) -> Cipher:
        return self.encr.keyed(self.sk_e)


def padded(ctx: SkContext, body: bytes) -> bytes:
    """``body`` with the SK padding and Pad Length octet (RFC 7296 §3.14) for ``ctx``'s block size."""
    block = ctx.encr.block_size
    pad_len = (block - (len(body) + 1) % block) % block
    return body + bytes(pad_len) + bytes((pad_len,))


def sealed_size(ctx: SkContext, plaintext_len: int) -> int:
    """Bytes of IV | ciphertext | ICV for an already padded plaintext of ``plaintext_len`` bytes."""
    return ctx.encr.iv_size + plaintext_len + ctx.icv_size


def encrypt_after(ctx: SkContext, prefix: bytes, plaintext: bytes, rng: Callable[[int], bytes]) -> bytes:
    """``prefix`` | IV | ciphertext | ICV. ``prefix`` is everything before the IV (IKE header, any
    unprotected payloads, the SK or SKF payload header), with the final lengths already in it: it is the
    AEAD associated data (RFC 5282 §5.1) or the start of what the MAC covers. Shared by SK and SKF."""
    iv = rng(ctx.encr.iv_size)
    if ctx.encr.aead:
        return prefix + iv + ctx.cipher.encrypt(iv, plaintext, prefix)
    signed = prefix + iv + ctx.cipher.encrypt(iv, plaintext)
    assert ctx.mac is not None
    return signed + ctx.mac.sign(signed)


def decrypt_after(ctx: SkContext, data: bytes, aad_len: int, body: bytes) -> bytes:
    """The unpadded plaintext of ``body`` (IV | ciphertext | ICV, the tail of the message ``data``) whose
    associated data are the first ``aad_len`` bytes of ``data``. Raises CryptoError (drop silently) when
    the ICV or the padding is wrong; the ICV is checked before anything is decrypted."""
    iv_size = ctx.encr.iv_size
    if ctx.encr.aead:
        if len(body) < iv_size + ctx.icv_size:
            raise CryptoError("encrypted payload too short")
        plaintext = ctx.cipher.decrypt(body[:iv_size], body[iv_size:], data[:aad_len])
    else:
        assert ctx.mac is not None
        if len(body) < iv_size + ctx.icv_size + ctx.encr.block_size:
            raise CryptoError("encrypted payload too short")
        if not ctx.mac.verify(data[: -ctx.icv_size], data[-ctx.icv_size :]):
            raise CryptoError("ICV mismatch")
        ct = body[iv_size : -ctx.icv_size]
        if len(ct) % ctx.encr.block_size:
            raise CryptoError("ciphertext is not a whole number of blocks")
        plaintext = ctx.cipher.decrypt(body[:iv_size], ct)
    if not plaintext:
        raise CryptoError("empty plaintext")
    pad_len = plaintext[-1]
    if pad_len + 1 > len(plaintext):
        raise CryptoError("bad padding length")
    return plaintext[: -1 - pad_len]


def seal(ctx: SkContext, header: Header, payloads: Sequence[Payload], rng: Callable[[int], bytes]) -> bytes:
    """A complete datagram: ``header`` followed by one SK payload holding ``payloads``."""
    first, body = encode_payloads(payloads)
    plaintext = padded(ctx, body)
    sk_body_len = sealed_size(ctx, len(plaintext))
    header.next_payload = PayloadType.SK
    header.length = HEADER_LEN + 4 + sk_body_len
    return encrypt_after(ctx, header.pack() + sk_generic_header(first, sk_body_len), plaintext, rng)


def open_sk(ctx: SkContext, message: Message, data: bytes) -> list[Payload]:
    """The inner payloads of ``message``'s SK payload. Raises CryptoError (drop silently) when the ICV or
    padding is wrong, or when there is no SK payload to check at all (such a message is not authentic:
    answering it would let anyone who saw the SPIs use up a message ID); ParseError only when the
    payloads decrypted from an authentic message are malformed (the receiver answers with a Notify)."""
    sk = message.payloads[-1] if message.payloads else None
    if not isinstance(sk, SK) or message.sk_offset is None:
        raise CryptoError("no SK payload")
    data = data[: message.header.length]
    return decode_payloads(sk.first_payload, decrypt_after(ctx, data, message.sk_offset + 4, sk.data))

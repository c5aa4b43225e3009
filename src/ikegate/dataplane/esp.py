"""ESP (RFC 4303) in userspace, with the UDP encapsulation of RFC 3948.

This kernel has no ESP, so ikegate carries it itself, the way strongSwan's kernel-libipsec does. One
:class:`OutboundEsp` or :class:`InboundEsp` object is one SA in one direction; it is sans-I/O (bytes in,
bytes out) and keeps everything the per-packet path needs ready-made: the keyed cipher (one ``AESGCM``
object for the SA's life), the keyed MAC, precompiled ``struct`` formats and precomputed padding.

Wire layout (RFC 4303 §2)::

    SPI (4) | Sequence Number (4) | IV | ciphertext( payload | padding | pad length | next header ) | ICV

AES-GCM follows RFC 4106: the ICV is the GCM tag, the AAD is SPI | sequence number (no ESN here), the
nonce is the 4-byte salt from the keying material followed by the 8-byte IV carried in the packet.

The two ciphers USG proposals use get a fast path that keeps one OpenSSL context per SA and direction:
AES-GCM-16 calls a reused ``AESGCM`` object directly, and AES-CBC runs on one long-lived CBC context
instead of building a ``Cipher`` per packet (which costs more than the encryption itself). A
long-lived CBC context chains every packet onto the last ciphertext block it produced, so each packet
is started with one extra block chosen to make the chain come out as standard CBC:

- sending, the extra block is ``seq XOR last_block``; the context turns it into ``E_K(seq)``, which
  is the packet's IV: the "forward cipher applied to a nonce" method of NIST SP 800-38A App. C, so the
  IV is unpredictable to anyone without the key (RFC 3602 §3), and the rest of the output is
  exactly CBC under that IV;
- receiving, the IV itself is fed first: its output block is discarded and the context now chains
  the real ciphertext onto the IV, so no state carries over from packet to packet.

Any other cipher (3DES) goes through the generic ``Cipher`` of :mod:`ikegate.ike.crypto`.

Byte lifetimes count the plaintext payload, as the Linux kernel does for its XFRM byte limits, so the
``sa duration traffic-based`` a Child SA was negotiated with means the same thing whichever backend runs.
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ikegate.dataplane.replay import MAX_SEQ, ReplayWindow
from ikegate.ike.core.child import ChildSa
from ikegate.ike.core.config import Mode
from ikegate.ike.core.lifetimes import soft_lifetime
from ikegate.ike.crypto import Cipher as KeyedCipher
from ikegate.ike.crypto import CryptoError, EncrAlg, IntegAlg
from ikegate.ike.wire.registry import EncrId
from ikegate.ike.wire.v2 import TrafficSelector

__all__ = [
    "IPPROTO_IPV4",
    "IPPROTO_IPV6",
    "IPPROTO_NONE",
    "KEEPALIVE",
    "NON_ESP_MARKER",
    "SEQ_SOFT_LIMIT",
    "ChildSaPair",
    "EspError",
    "InboundEsp",
    "OutboundEsp",
    "Reason",
    "classify_4500",
    "ike_encapsulate",
    "is_keepalive",
    "udp_encapsulate",
]

#: Why a packet was not protected or not accepted. ``seqno`` and ``expired`` belong to the sending side
#: (and ``expired`` to a receiving SA past its hard byte lifetime); the others to ``InboundEsp.open``.
Reason = Literal["short", "spi", "replay", "icv", "padding", "decrypt", "expired", "seqno"]

IPPROTO_IPV4: Final = 4
IPPROTO_IPV6: Final = 41
IPPROTO_NONE: Final = 59  # a dummy packet for traffic flow confidentiality (RFC 4303 §2.6): discard it

#: RFC 3948 §2.2: IKE on port 4500 is prefixed with four zero octets where ESP would carry its SPI.
NON_ESP_MARKER: Final = b"\x00\x00\x00\x00"
#: RFC 3948 §2.3: a NAT-keepalive is one octet, 0xFF.
KEEPALIVE: Final = b"\xff"

#: Past this outbound sequence number an SA reports ``soft_expired``, so that the owner rekeys well
#: before 2^32 - 1, where it must stop sending (RFC 4303 §3.3.3: no cycling without ESN).
SEQ_SOFT_LIMIT: Final = MAX_SEQ - (1 << 24)

_HDR = struct.Struct("!II")  # SPI, sequence number
_SEQ_IV = struct.Struct("!Q")  # the GCM IV: the 64-bit sequence number, unique per key
_NO_DROPS: Mapping[str, int] = {}  # shared, never written: the refusals of an SA that refused nothing
_UNLIMITED = 1 << 80
# The padding of RFC 4303 §2.4 is 1, 2, 3, ...; followed by the Pad Length octet, it is a pure function
# of the pad length, so all 256 possible tails are built once.
_PAD_BYTES = tuple(bytes(range(1, n + 1)) for n in range(256))
_PAD_TAIL = tuple(_PAD_BYTES[n] + bytes((n,)) for n in range(256))
_OCTET = tuple(bytes((n,)) for n in range(256))
_GCM, _CBC, _GENERIC = 1, 2, 3
_CBC_ZERO_IV = bytes(16)


def _not_this_cipher(*_: object) -> bytes:
    """Stands in for the fast-path methods an SA of another cipher does not have."""
    raise AssertionError("fast path of another cipher called")


class _NoCipher(KeyedCipher):
    """The generic cipher slot of an AES-GCM or AES-CBC SA, which use their own contexts (a second
    AES-GCM context would hold another 2.5 kB of OpenSSL memory per direction, for nothing)."""

    __slots__ = ()

    def encrypt(self, iv: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
        return _not_this_cipher()

    def decrypt(self, iv: bytes, data: bytes, aad: bytes = b"") -> bytes:
        return _not_this_cipher()


_NO_CIPHER = _NoCipher()


class EspError(Exception):
    """A packet that could not be protected or was refused; ``reason`` says why (see :data:`Reason`)."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: Reason = reason


class _EspSa:
    """What both directions share: the SPI, transforms, counters and the byte lifetime."""

    __slots__ = (
        "_align",
        "_cipher",
        "_drops",
        "_gcm_key",
        "_hard_at",
        "_icv",
        "_iv",
        "_kind",
        "_mac",
        "_salt",
        "_soft_at",
        "bytes",
        "encr",
        "hard_expired",
        "integ",
        "packets",
        "soft_expired",
        "spi",
    )

    def __init__(self, spi: int, cipher_alg: EncrAlg, integ_alg: IntegAlg | None, encr_key: bytes,
                 integ_key: bytes, soft_kb: int | None, hard_kb: int | None) -> None:
        if not 0 < spi <= 0xFFFFFFFF:
            raise ValueError(f"SPI {spi:#x} out of range")
        if cipher_alg.aead:
            if integ_alg is not None:
                raise ValueError(f"{cipher_alg.name} is combined mode: it takes no integrity transform")
            self._mac = None
            self._icv = cipher_alg.icv_size
        else:
            # RFC 4303 §3.2 allows encryption without integrity, but it is open to cut-and-paste attacks
            # and no USG proposal produces it, so an SA of that kind is a caller bug.
            if integ_alg is None:
                raise ValueError(f"{cipher_alg.name} needs an integrity transform")
            self._mac = integ_alg.keyed(integ_key)
            self._icv = integ_alg.icv_size
        self.spi = spi
        self.encr = cipher_alg
        self.integ = integ_alg
        if len(encr_key) != cipher_alg.keymat_size:
            raise CryptoError(f"{cipher_alg.name} needs {cipher_alg.keymat_size} bytes of keymat, got {len(encr_key)}")
        self._cipher: KeyedCipher = _NO_CIPHER
        self._iv = cipher_alg.iv_size
        self._gcm_key = b""
        self._salt = b""
        if cipher_alg.id == EncrId.AES_GCM_16:
            self._kind = _GCM
            self._gcm_key = encr_key  # key | salt, the Child SA's own bytes: sliced when the context is made
            self._salt = encr_key[cipher_alg.key_size :]
        elif cipher_alg.id == EncrId.AES_CBC:
            self._kind = _CBC
        else:
            self._kind = _GENERIC
            self._cipher = cipher_alg.keyed(encr_key)
        self._align = max(cipher_alg.block_size, 4)
        self.packets = 0
        self.bytes = 0
        self._drops: Counter[str] | None = None
        self.soft_expired = False
        self.hard_expired = False
        self._soft_at = soft_kb * 1024 if soft_kb else _UNLIMITED
        self._hard_at = hard_kb * 1024 if hard_kb else _UNLIMITED
        if self._soft_at > self._hard_at:
            self._soft_at = self._hard_at

    @property
    def overhead(self) -> int:
        """Worst-case bytes ESP adds to a payload (header, IV, maximal padding, trailer, ICV)."""
        return 8 + self._iv + (self._align - 1) + 2 + self._icv

    def _account(self, size: int) -> None:
        self.packets += 1
        total = self.bytes + size
        self.bytes = total
        if total >= self._soft_at:
            self.soft_expired = True
            if total >= self._hard_at:
                self.hard_expired = True

    @property
    def drops(self) -> Counter[str]:
        """Refused packets by reason; made by the first refusal (most SAs never refuse one, and an empty
        Counter per direction was 176 bytes an SA)."""
        if self._drops is None:
            self._drops = Counter()
        return self._drops

    @property
    def drops_seen(self) -> Mapping[str, int]:
        """The refusals so far, read-only, without making the Counter :attr:`drops` makes on first use
        (retiring an SA reads them: a delete-all of 10,000 SAs made 20,000 empty Counters)."""
        return self._drops if self._drops is not None else _NO_DROPS

    def _context(self) -> AESGCM:
        """An AES-GCM context holds 2.5 kB of OpenSSL memory, and many SAs (a load test's, an idle
        branch's) never carry a packet: the first packet in each direction makes it, once."""
        gcm = AESGCM(self._gcm_key[: self.encr.key_size])
        self._gcm_key = b""
        return gcm

    def _refuse(self, reason: Reason, detail: str = "") -> EspError:
        self.drops[reason] += 1
        return EspError(reason, detail)


class OutboundEsp(_EspSa):
    """The sending half of a Child SA: ``seal`` turns an inner packet into an ESP packet."""

    __slots__ = ("_cbc", "_gcm_encrypt", "_last", "_sign", "seq", "udp_encap")

    def __init__(self, spi: int, cipher_alg: EncrAlg, integ_alg: IntegAlg | None, encr_key: bytes,
                 integ_key: bytes = b"", udp_encap: bool = False, *, soft_kb: int | None = None,
                 hard_kb: int | None = None) -> None:
        super().__init__(spi, cipher_alg, integ_alg, encr_key, integ_key, soft_kb, hard_kb)
        self.udp_encap = udp_encap
        self.seq = 0  # the last sequence number sent; the first packet carries 1
        self._last = 0  # the last ciphertext block the CBC context produced, as an int
        # Bound methods of the per-SA contexts, looked up once rather than per packet.
        self._gcm_encrypt: Callable[[bytes, bytes, bytes], bytes] = (
            self._first_encrypt if self._kind == _GCM else _not_this_cipher)
        self._cbc: Callable[[bytes], bytes] = (
            Cipher(algorithms.AES(encr_key), modes.CBC(_CBC_ZERO_IV)).encryptor().update
            if self._kind == _CBC else _not_this_cipher)
        self._sign: Callable[[bytes], bytes] = self._mac.sign if self._mac is not None else _not_this_cipher

    def _first_encrypt(self, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        """The AES-GCM context is made by the first packet (see :meth:`_EspSa._context`)."""
        self._gcm_encrypt = self._context().encrypt
        return self._gcm_encrypt(nonce, data, aad)

    def seal(self, inner: bytes, next_header: int) -> bytes:
        """The ESP packet carrying ``inner`` (a whole IP packet in tunnel mode, 4 or 41; the upper-layer
        payload in transport mode, with its protocol number).

        Raises ``EspError("seqno")`` once 2^32 - 1 packets were sent and ``EspError("expired")`` past
        the hard byte lifetime: the SA must be replaced, not reused (RFC 4303 §3.3.3).
        """
        if self.hard_expired:
            raise self._refuse("expired", f"SPI {self.spi:#010x} passed its hard byte lifetime")
        seq = self.seq + 1
        if seq > MAX_SEQ:
            self.hard_expired = True
            raise self._refuse("seqno", f"SPI {self.spi:#010x} used every sequence number")
        self.seq = seq
        if seq >= SEQ_SOFT_LIMIT:
            self.soft_expired = True
        header = _HDR.pack(self.spi, seq)
        pad = -(len(inner) + 2) % self._align
        kind = self._kind
        if kind == _GCM:
            iv = _SEQ_IV.pack(seq)
            plaintext = b"".join((inner, _PAD_TAIL[pad], _OCTET[next_header]))
            out = b"".join((header, iv, self._gcm_encrypt(self._salt + iv, plaintext, header)))
        elif kind == _CBC:
            # The leading block makes the context emit IV = E_K(seq), then CBC under it (module doc).
            lead = (self._last ^ seq).to_bytes(16, "big")
            body = self._cbc(b"".join((lead, inner, _PAD_TAIL[pad], _OCTET[next_header])))
            self._last = int.from_bytes(body[-16:], "big")
            out = header + body
            out += self._sign(out)
        else:
            plaintext = b"".join((inner, _PAD_TAIL[pad], _OCTET[next_header]))
            mac = self._mac
            if mac is None:
                iv = _SEQ_IV.pack(seq)
                out = b"".join((header, iv, self._cipher.encrypt(iv, plaintext, header)))
            else:
                iv = os.urandom(self._iv)  # CBC needs an unpredictable IV (RFC 3602 §3)
                out = b"".join((header, iv, self._cipher.encrypt(iv, plaintext)))
                out += mac.sign(out)
        self._account(len(inner))
        return out


class InboundEsp(_EspSa):
    """The receiving half of a Child SA: ``open`` authenticates, decrypts and checks an ESP packet."""

    __slots__ = ("_cbc", "_gcm_decrypt", "_min_len", "replay", "udp_encap")

    def __init__(self, spi: int, cipher_alg: EncrAlg, integ_alg: IntegAlg | None, encr_key: bytes,
                 integ_key: bytes = b"", replay_window: ReplayWindow | int = 1024, *, udp_encap: bool = False,
                 soft_kb: int | None = None, hard_kb: int | None = None) -> None:
        super().__init__(spi, cipher_alg, integ_alg, encr_key, integ_key, soft_kb, hard_kb)
        self.replay = replay_window if isinstance(replay_window, ReplayWindow) else ReplayWindow(replay_window)
        self.udp_encap = udp_encap
        # Header, IV, one aligned unit of ciphertext (at least pad length + next header), ICV.
        self._min_len = 8 + self._iv + self._align + self._icv
        self._gcm_decrypt: Callable[[bytes, bytes, bytes], bytes] = (
            self._first_decrypt if self._kind == _GCM else _not_this_cipher)
        self._cbc: Callable[[bytes], bytes] = (
            Cipher(algorithms.AES(encr_key), modes.CBC(_CBC_ZERO_IV)).decryptor().update
            if self._kind == _CBC else _not_this_cipher)

    def _first_decrypt(self, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        """The AES-GCM context is made by the first packet (see :meth:`_EspSa._context`)."""
        self._gcm_decrypt = self._context().decrypt
        return self._gcm_decrypt(nonce, data, aad)

    @property
    def highest_seq(self) -> int:
        """The highest authenticated sequence number (``display ipsec sa``)."""
        return self.replay.top

    def open(self, packet: bytes) -> tuple[int, bytes]:
        """``(next_header, inner)`` of an ESP packet for this SA, or ``EspError`` saying why not.

        Order follows RFC 4303 §3.4: length and SPI, the cheap replay check, then the ICV, and only for
        an authentic packet the padding check and the replay window update. Every refusal is counted
        in ``drops`` of this SA, so nothing a peer sends can touch another SA's counters.
        """
        n = len(packet)
        if n < self._min_len:
            raise self._refuse("short", f"{n} bytes")
        spi, seq = _HDR.unpack_from(packet)
        if spi != self.spi:
            raise self._refuse("spi", f"{spi:#010x} is not {self.spi:#010x}")
        if self.hard_expired:
            raise self._refuse("expired", f"SPI {self.spi:#010x} passed its hard byte lifetime")
        replay = self.replay
        if not replay.check(seq):
            raise self._refuse("replay", f"sequence number {seq}")
        start = 8 + self._iv
        kind = self._kind
        mac = self._mac
        if kind == _GCM:
            try:
                plaintext = self._gcm_decrypt(self._salt + packet[8:16], packet[16:], packet[:8])
            except InvalidTag:
                raise self._refuse("icv") from None
        elif mac is None:
            try:
                plaintext = self._cipher.decrypt(packet[8:start], packet[start:], packet[:8])
            except CryptoError:
                raise self._refuse("icv") from None
        else:
            end = n - self._icv
            if (end - start) % self._align:
                raise self._refuse("decrypt", "ciphertext is not a whole number of blocks")
            if not mac.verify(packet[:end], packet[end:]):
                raise self._refuse("icv")
            if kind == _CBC:
                # IV first: its output block is discarded and the ciphertext then chains on it (module doc).
                plaintext = self._cbc(packet[8:end])[16:]
            else:
                try:
                    plaintext = self._cipher.decrypt(packet[8:start], packet[start:end])
                except CryptoError as exc:  # pragma: no cover - lengths were checked above
                    raise self._refuse("decrypt", str(exc)) from None
        pad = plaintext[-2]
        cut = len(plaintext) - 2 - pad
        if cut < 0 or plaintext[cut:-2] != _PAD_BYTES[pad]:
            raise self._refuse("padding", f"pad length {pad}")
        replay.update(seq)
        self._account(cut)
        return plaintext[-1], plaintext[:cut]


# ----------------------------------------------------------------------------------- RFC 3948 helpers


def udp_encapsulate(esp_packet: bytes) -> bytes:
    """The UDP payload (port 4500) carrying ``esp_packet``: the ESP packet itself (RFC 3948 §2.1).

    ESP needs no marker because its SPI is never zero; this only checks that, so a broken packet cannot
    reach the wire looking like IKE to the peer.
    """
    if len(esp_packet) < 8 or esp_packet[:4] == NON_ESP_MARKER:
        raise ValueError("not an ESP packet: too short or SPI 0")
    return esp_packet


def ike_encapsulate(ike_message: bytes) -> bytes:
    """The UDP payload carrying an IKE message on port 4500: the non-ESP marker, then the message."""
    return NON_ESP_MARKER + ike_message


def is_keepalive(payload: bytes) -> bool:
    """Whether a datagram on port 4500 is a NAT-keepalive (RFC 3948 §2.3): exactly one 0xFF octet."""
    return payload == KEEPALIVE


def classify_4500(payload: bytes) -> Literal["ike", "esp", "keepalive", "bad"]:
    """What a datagram received on port 4500 carries (RFC 3948 §2.2 and §3.2).

    Four zero octets first is the non-ESP marker, so IKE; otherwise the first four octets are an SPI,
    and 1-255 are reserved by IANA (RFC 4303 §2.1), so such a datagram, or one shorter than SPI and
    sequence number, is bad.
    """
    if payload == KEEPALIVE:
        return "keepalive"
    if len(payload) < 8:
        return "bad"
    if payload[:4] == NON_ESP_MARKER:
        return "ike"
    if payload[0] == 0 and payload[1] == 0 and payload[2] == 0:
        return "bad"
    return "esp"


# ------------------------------------------------------------------------------------ Child SA pairs


@dataclass(slots=True, eq=False)
class ChildSaPair:
    """The two ESP SAs of one negotiated Child SA, ready for the dataplane."""

    inbound: InboundEsp
    outbound: OutboundEsp
    mode: Mode
    ts_local: list[TrafficSelector]
    ts_remote: list[TrafficSelector]
    udp_encap: bool

    @property
    def spi_in(self) -> int:
        return self.inbound.spi

    @property
    def spi_out(self) -> int:
        return self.outbound.spi

    @classmethod
    def from_child(cls, child: ChildSa, replay_window: int = 1024, soft_ratio: float = 0.9,
                   rng: Callable[[int], bytes] = os.urandom) -> ChildSaPair:
        """Both directions of ``child``, keyed from the gateway's point of view.

        The hard byte lifetime is the Child SA's ``lifetime_kb`` (0: none); the soft one, at which the
        owner should rekey, about ``soft_ratio`` of it (so rekeying finishes before traffic stops), offset
        by role and a random margin (:func:`soft_lifetime`): both ends count the same packets, and equal
        limits would start two crossing rekeys on the same packet.
        """
        hard = child.config.lifetime_kb or None
        soft = max(1, int(soft_lifetime(hard, child.initiator, rng, soft_ratio))) if hard else None
        inbound = InboundEsp(child.spi_in, child.encr, child.integ, child.encr_key_in, child.integ_key_in,
                             replay_window, udp_encap=child.udp_encap, soft_kb=soft, hard_kb=hard)
        outbound = OutboundEsp(child.spi_out, child.encr, child.integ, child.encr_key_out, child.integ_key_out,
                               child.udp_encap, soft_kb=soft, hard_kb=hard)
        # The Child SA's own selector lists (nothing changes them in place): no copies per SA.
        return cls(inbound, outbound, child.mode, child.ts_local, child.ts_remote, child.udp_encap)

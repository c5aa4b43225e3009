"""The heartbeat link's security layer: every sync message authenticated and encrypted, never in clear.

Sans-I/O: :meth:`Channel.seal` turns a message into a datagram, :meth:`Channel.open` a datagram back into
a message or ``None`` (counted: forged, replayed, stale).

Keys. The operator configures one shared key (``hrp authentication-key``). Each node draws a random
8-byte *boot id* when it starts. Hellos are sealed under a key derived from the shared key alone and
carry the sender's boot id and the last boot id it heard from the other node. Data messages are sealed
under a *session key* derived from the shared key and both boot ids (sender's, receiver's), with the
sequence number as the AEAD nonce: so a data message recorded in an earlier life of either node does not
authenticate now (no replay across restarts without any stored state), and nonces never repeat under
one key (each sender's key is its own, its sequence number only grows). Inside a session, a sliding
window (the ESP one, RFC 4303 §3.4.3) rejects duplicates and very old messages; the upper layer
tolerates loss and reordering.

Wire format: ``type (1) | sender boot id (8) | receiver boot id (8) | sequence (8) | AEAD(body)``,
the first 25 bytes being the associated data. ChaCha20-Poly1305 (RFC 8439), 16-byte tag.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ikegate.dataplane.replay import MAX_SEQ, ReplayWindow

HELLO = 1
DATA = 2
_HDR = struct.Struct("!B8s8sQ")
HEADER_LEN = _HDR.size
TAG_LEN = 16
NO_BOOT = bytes(8)
REPLAY_WINDOW = 4096


def _kdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt=b"ikegate hrp sync", info=info).derive(secret)


@dataclass
class ChannelStats:
    """What ``display hrp state`` shows of the link's health."""

    sent: int = 0
    received: int = 0
    forged: int = 0  # did not authenticate (wrong key, tampered, or sealed for another life of a node)
    replayed: int = 0  # authentic, but seen before or older than the window
    malformed: int = 0


@dataclass
class Opened:
    kind: int  # HELLO or DATA
    peer_boot: bytes
    seq: int
    body: bytes


@dataclass
class Channel:
    """One node's end of the sync link."""

    secret: bytes
    rng: Callable[[int], bytes] = os.urandom
    boot: bytes = b""
    peer_boot: bytes = NO_BOOT
    stats: ChannelStats = field(default_factory=ChannelStats)

    def __post_init__(self) -> None:
        if not self.secret:
            raise ValueError("the sync channel needs a key")
        self.boot = self.boot or self.rng(8)
        self._hello = ChaCha20Poly1305(_kdf(self.secret, b"hello"))
        self._seq = 0
        self._send_keys: dict[bytes, ChaCha20Poly1305] = {}
        self._recv_keys: dict[bytes, ChaCha20Poly1305] = {}
        self._windows: dict[bytes, ReplayWindow] = {}

    def _session(self, sender: bytes, receiver: bytes) -> ChaCha20Poly1305:
        return ChaCha20Poly1305(_kdf(self.secret, b"data" + sender + receiver))

    def seal(self, kind: int, body: bytes) -> bytes:
        """A datagram for the other node. Data need the other node's boot id (learnt from its hello)."""
        self._seq += 1
        if self._seq > MAX_SEQ:  # 4 billion messages: start a new life rather than reuse a nonce
            self.boot, self._seq, self._send_keys = self.rng(8), 1, {}
        header = _HDR.pack(kind, self.boot, self.peer_boot, self._seq)
        if kind == HELLO:
            aead = self._hello
        else:
            aead = self._send_keys.get(self.peer_boot) or self._send_keys.setdefault(
                self.peer_boot, self._session(self.boot, self.peer_boot))
        self.stats.sent += 1
        return header + aead.encrypt(self._seq.to_bytes(12, "big"), body, header)

    def open(self, data: bytes) -> Opened | None:
        """The message in ``data``, or None (counted) when it is not authentic, a replay or malformed."""
        if len(data) < HEADER_LEN + TAG_LEN:
            self.stats.malformed += 1
            return None
        kind, sender, receiver, seq = _HDR.unpack_from(data)
        if kind not in (HELLO, DATA) or seq == 0 or seq > MAX_SEQ:
            self.stats.malformed += 1
            return None
        header = data[:HEADER_LEN]
        if kind == HELLO:
            aead = self._hello
        elif receiver != self.boot:
            self.stats.forged += 1  # sealed for another life of this node: cannot be ours now
            return None
        else:
            aead = self._recv_keys.get(sender) or self._session(sender, self.boot)
        window = self._windows.get(sender + bytes((kind,)))
        if window is not None and not window.check(seq):
            self.stats.replayed += 1
            return None
        try:
            body = aead.decrypt(seq.to_bytes(12, "big"), data[HEADER_LEN:], header)
        except InvalidTag:
            self.stats.forged += 1
            return None
        if kind == DATA and sender not in self._recv_keys:
            self._recv_keys = {sender: aead}  # only the peer's current life is kept
        if window is None:
            if len(self._windows) > 8:
                self._windows.clear()
            window = self._windows[sender + bytes((kind,))] = ReplayWindow(REPLAY_WINDOW)
        window.update(seq)
        self.stats.received += 1
        return Opened(kind, sender, seq, body)


__all__ = ["DATA", "HELLO", "Channel", "ChannelStats", "Opened"]

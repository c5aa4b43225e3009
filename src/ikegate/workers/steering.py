"""Kernel steering of IKE and ESP-in-UDP datagrams to worker sockets, by the SPI inside them.

All workers bind the same UDP port with ``SO_REUSEPORT``; a classic BPF program attached to the group with
``SO_ATTACH_REUSEPORT_CBPF`` picks the socket for each datagram. The kernel runs it on the UDP payload (the
skb is pulled past the UDP header, ``run_bpf_filter`` in ``net/core/sock_reuseport.c``) and uses the return
value as an index into the group's sockets, in the order they joined it; a value at or beyond the group size
makes the kernel fall back to its hash, so the program clamps such values to worker 0 itself, and every
decision is deterministic.

The program needs no table because every worker allocates SPIs that name it (see docs/steering.md):

* ESP SPI (4 bytes, big-endian): top byte = worker index, low 3 bytes random, never below 256 (RFC 4303
  §2.1 reserves 1-255, 0 is "no SA").
* IKE SPI / IKEv1 cookie (8 bytes): byte 0 = worker index, bytes 1-2 = tag = bytes 6-7 XOR ``key``, bytes
  3-7 random. ``key`` is a random 16-bit value of the device (one per supervisor start, baked into the
  program). IKEv2 does not need the tag (its I flag says which SPI is ours); IKEv1 does: its header does not
  say who initiated, so the program steers by whichever cookie carries a valid tag and an index in range,
  responder cookie first. A peer's random cookie passes that test with probability ``N / 2**24``; such a
  datagram reaches the wrong worker, which hands it over in user space (counted).

A request whose responder SPI is zero (IKE_SA_INIT, Main/Aggressive Mode message 1) carries no SPI of ours:
it goes to ``initiator SPI byte 7 mod N``, so retransmissions and COOKIE/INVALID_KE retries reach the same
worker, which then answers with a responder SPI naming itself. (An IKEv2 *response* with a zero responder SPI,
as a COOKIE or INVALID_KE_PAYLOAD answer, has the I flag clear and goes by our initiator SPI as it must.)

``expected_worker`` is the same rule in Python: the reference the tests check the program against, and the
check a worker can make on an arriving datagram to count (and hand over) a mis-steered one.
"""

from __future__ import annotations

import ctypes
import socket
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "MAX_WORKERS",
    "SO_ATTACH_REUSEPORT_CBPF",
    "Steering",
    "WorkerSlot",
    "attach",
    "esp_spi",
    "esp_spi_owner",
    "ike_spi",
    "ike_spi_owner",
    "peer_owner",
]

SO_ATTACH_REUSEPORT_CBPF = 51
"""Linux ``asm-generic/socket.h``; not exported by Python's ``socket`` module."""

MAX_WORKERS = 256
"""The worker index is one byte of every SPI."""

IKE_HEADER = 28
NON_ESP_MARKER = 4
ESP_MIN = 8  # SPI + sequence number: anything shorter on port 4500 is neither ESP nor IKE
FLAG_I = 0x08  # RFC 7296 §3.1: set by the original initiator of the IKE SA
ESP_RESERVED = 256  # RFC 4303 §2.1: SPIs 1-255 are reserved by IANA, 0 means "no SA"

Rng = Callable[[int], bytes]


def _check_index(index: int) -> None:
    if not 0 <= index < MAX_WORKERS:
        raise ValueError(f"worker index {index} outside 0..{MAX_WORKERS - 1}")


def esp_spi(rng: Rng, index: int) -> int:
    """An inbound ESP SPI owned by worker ``index``: its top byte, so the program reads one byte at a fixed
    offset; the rest random as RFC 4303 expects (a guessable SPI helps nobody but an attacker)."""
    _check_index(index)
    while True:
        spi = index << 24 | int.from_bytes(rng(3), "big")
        if spi >= ESP_RESERVED:
            return spi


def esp_spi_owner(spi: int) -> int:
    """The worker whose ``esp_spi`` this is."""
    return spi >> 24 & 0xFF


def _check_key(key: int) -> None:
    if not 0 < key <= 0xFFFF:
        raise ValueError(f"tag key {key} outside 1..0xffff (zero would make an all-zero cookie look tagged)")


def _tag(spi: bytes, key: int) -> int:
    return int.from_bytes(spi[6:8], "big") ^ key


def ike_spi(rng: Rng, index: int, key: int) -> bytes:
    """An IKE SPI (IKEv1 cookie) owned by worker ``index``: index in byte 0 and a tag in bytes 1-2 that a
    random peer cookie matches only by chance (2**-16), so an IKEv1 datagram can be steered by whichever of
    its two cookies is ours. Never all zeros: bytes 1-2 XOR bytes 6-7 is the key, which is never zero."""
    _check_index(index)
    _check_key(key)
    tail = rng(5)
    return bytes([index]) + (int.from_bytes(tail[3:5], "big") ^ key).to_bytes(2, "big") + tail


def ike_spi_owner(spi: bytes, key: int, workers: int = MAX_WORKERS) -> int | None:
    """The worker an 8-byte IKE SPI names if it carries our tag and an index below ``workers``, else None
    (a peer's SPI, or a forged one)."""
    if len(spi) != 8 or spi[0] >= workers or int.from_bytes(spi[1:3], "big") != _tag(spi, key):
        return None
    return spi[0]


@dataclass(frozen=True)
class Steering:
    """One device's steering: how many workers share the ports and the IKE tag key. The supervisor makes
    one (``key`` from its RNG), hands ``index`` to each worker for its allocators and attaches ``program``
    to each port's group."""

    workers: int
    key: int

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= MAX_WORKERS:
            raise ValueError(f"workers must be 1..{MAX_WORKERS}, not {self.workers}")
        _check_key(self.key)

    @classmethod
    def generate(cls, workers: int, rng: Rng) -> Steering:
        while True:
            key = int.from_bytes(rng(2), "big")
            if key:
                return cls(workers, key)

    def ike_spi_allocator(self, index: int, rng: Rng) -> Callable[[], bytes]:
        """The IKE SPI allocator of worker ``index``: the engines' ``rng(8)`` becomes this callable."""
        _check_index(index)
        return lambda: ike_spi(rng, index, self.key)

    def esp_spi_allocator(self, index: int, rng: Rng) -> Callable[[], int]:
        """The ESP SPI draw of worker ``index`` (callers still check the SA database for collisions)."""
        _check_index(index)
        return lambda: esp_spi(rng, index)

    # -- the rule, in Python ------------------------------------------------------------------------------

    def expected_worker(self, payload: bytes, natt: bool) -> int:
        """The socket index the program returns for this UDP payload on port 500 (``natt`` False) or 4500."""
        if not natt:
            return self._ike(payload, 0)
        if len(payload) < ESP_MIN:
            return 0  # NAT-T keepalive (one 0xFF byte) and anything else too short
        if payload[:4] != bytes(NON_ESP_MARKER):
            return self._clamp(payload[0])  # ESP-in-UDP: the SPI is ours
        return self._ike(payload, NON_ESP_MARKER)

    def _clamp(self, index: int) -> int:
        return index if index < self.workers else 0

    def _ike(self, payload: bytes, at: int) -> int:
        if len(payload) < at + IKE_HEADER:
            return 0
        spi_i, spi_r = payload[at:at + 8], payload[at + 8:at + 16]
        if payload[at + 17] & 0xF0 == 0x10:  # IKEv1: no I flag, find the tagged cookie
            for spi in (spi_r, spi_i):
                owner = ike_spi_owner(spi, self.key, self.workers)
                if owner is not None:
                    return owner
            return self._spread(spi_i) if not any(spi_r) else 0
        if not payload[at + 19] & FLAG_I:  # from the responder: we initiated, the initiator SPI is ours
            return self._clamp(spi_i[0])
        return self._clamp(spi_r[0]) if any(spi_r) else self._spread(spi_i)

    def _spread(self, spi_i: bytes) -> int:
        """A first request (responder SPI zero) carries nothing of ours: any worker will do, as long as its
        retransmissions and retries (same initiator SPI) reach the same one."""
        return spi_i[7] % self.workers

    # -- the program --------------------------------------------------------------------------------------

    def program(self, natt: bool) -> list[tuple[int, int, int, int]]:
        """The classic BPF program for the port 500 (``natt`` False) or 4500 group: (code, jt, jf, k) rows."""
        a = _Asm()
        o = NON_ESP_MARKER if natt else 0
        n, key = self.workers, self.key
        a.ld_len()
        if natt:
            a.jge(ESP_MIN, None, "ret0")
            a.ldw(0)
            a.jeq(0, "marker", None)
            a.ldb(0)  # ESP: the SPI's top byte
            a.ja("clamp")
            a.label("marker")
            a.ld_len()
        a.jge(o + IKE_HEADER, None, "ret0")
        a.ldb(o + 17)
        a.and_(0xF0)
        a.jeq(0x10, "v1", None)
        # IKEv2: the sender's I flag says which SPI is ours
        a.ldb(o + 19)
        a.jset(FLAG_I, None, "spi_i")
        a.ldw(o + 8)  # from the initiator: ours is the responder SPI, unless still zero (IKE_SA_INIT)
        a.jeq(0, None, "spi_r")
        a.ldw(o + 12)
        a.jeq(0, "hash", None)
        a.label("spi_r")
        a.ldb(o + 8)
        a.ja("clamp")
        a.label("spi_i")
        a.ldb(o)
        a.ja("clamp")
        # IKEv1: whichever cookie carries our tag and an index in range, responder's first
        for name, at, nxt in (("v1", o + 8, "v1i"), ("v1i", o, "v1z")):
            a.label(name)
            a.ldh(at + 1)
            a.tax()
            a.ldh(at + 6)
            a.xor(key)
            a.jeq_x(None, nxt)
            a.ldb(at)
            a.jge(n, nxt, "ret_a")
        a.label("v1z")  # neither: spread a first message (responder cookie zero), anything else to 0
        a.ldw(o + 8)
        a.jeq(0, None, "ret0")
        a.ldw(o + 12)
        a.jeq(0, "hash", "ret0")
        a.label("hash")
        a.ldb(o + 7)
        a.mod(n)
        a.ret_a()
        a.label("clamp")
        a.jge(n, "ret0", "ret_a")
        a.label("ret_a")
        a.ret_a()
        a.label("ret0")
        a.ret_k(0)
        return a.assemble()


def peer_owner(address: str, workers: int) -> int:
    """The worker holding every site-to-site SA with the peer at ``address``: a stable function of the
    address alone (CRC-32, not ``hash``, which differs between processes), so every worker agrees without
    asking. That worker initiates the peer's auto policies (exactly once, again after a restart), and the
    peer's own opening messages are handed to it (see :mod:`ikegate.workers.worker`), so one worker sees
    all SAs of a policy and settles duplicates, INITIAL_CONTACT and re-authentication as one process does."""
    return zlib.crc32(address.encode()) % workers


@dataclass(frozen=True)
class WorkerSlot:
    """One worker's place in the device: its ``index`` among ``steering.workers``. The controller takes
    conn-ids, ESP SPIs and IKE SPIs from it and initiates only the auto policies whose peer it :meth:`owns`."""

    steering: Steering
    index: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.steering.workers:
            raise ValueError(f"worker index {self.index} outside 0..{self.steering.workers - 1}")

    def owns(self, peer: str) -> bool:
        return peer_owner(peer, self.steering.workers) == self.index


def pack(program: list[tuple[int, int, int, int]]) -> bytes:
    """``struct sock_filter`` rows in native byte order (u16 code, u8 jt, u8 jf, u32 k)."""
    return b"".join(struct.pack("=HBBI", *row) for row in program)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def attach(sock: socket.socket, program: list[tuple[int, int, int, int]]) -> None:
    """Attach ``program`` to the reuseport group of ``sock`` (any member: the group has one program).
    Raises OSError when the kernel refuses (not Linux, no SO_REUSEPORT on the socket, an invalid program)."""
    code = ctypes.create_string_buffer(pack(program))
    fprog = _SockFprog(len(program), ctypes.addressof(code))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, bytes(fprog))  # kernel copies the rows now


# -- a small assembler: classic BPF with symbolic forward jumps -------------------------------------------

LD, LDX, ALU, JMP, RET, MISC = 0x00, 0x01, 0x04, 0x05, 0x06, 0x07
W, H, B = 0x00, 0x08, 0x10
ABS, LEN = 0x20, 0x80
AND, MOD, XOR = 0x50, 0x90, 0xA0
JA, JEQ, JGE, JSET = 0x00, 0x10, 0x30, 0x40
K, X, A = 0x00, 0x08, 0x10
TAX = 0x00

_Target = str | None  # a label, or None for the next instruction


class _Asm:
    """Rows with jump targets by label, resolved to the forward offsets classic BPF wants; keeps the program
    above readable and its offsets right when it changes."""

    def __init__(self) -> None:
        self._rows: list[tuple[int, _Target, _Target, int | str]] = []
        self._labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self._labels[name] = len(self._rows)

    def _op(self, code: int, k: int | str = 0, jt: _Target = None, jf: _Target = None) -> None:
        self._rows.append((code, jt, jf, k))

    def ld_len(self) -> None:
        self._op(LD | W | LEN)

    def ldb(self, at: int) -> None:
        self._op(LD | B | ABS, at)

    def ldh(self, at: int) -> None:
        self._op(LD | H | ABS, at)

    def ldw(self, at: int) -> None:
        self._op(LD | W | ABS, at)

    def and_(self, k: int) -> None:
        self._op(ALU | AND | K, k)

    def xor(self, k: int) -> None:
        self._op(ALU | XOR | K, k)

    def mod(self, k: int) -> None:
        self._op(ALU | MOD | K, k)

    def tax(self) -> None:
        self._op(MISC | TAX)

    def ja(self, to: str) -> None:
        self._op(JMP | JA, to)

    def jeq(self, k: int, jt: _Target, jf: _Target) -> None:
        self._op(JMP | JEQ | K, k, jt, jf)

    def jeq_x(self, jt: _Target, jf: _Target) -> None:
        self._op(JMP | JEQ | X, 0, jt, jf)

    def jge(self, k: int, jt: _Target, jf: _Target) -> None:
        self._op(JMP | JGE | K, k, jt, jf)

    def jset(self, k: int, jt: _Target, jf: _Target) -> None:
        self._op(JMP | JSET | K, k, jt, jf)

    def ret_a(self) -> None:
        self._op(RET | A)

    def ret_k(self, k: int) -> None:
        self._op(RET | K, k)

    def assemble(self) -> list[tuple[int, int, int, int]]:
        out = []
        for pc, (code, jt, jf, k) in enumerate(self._rows):
            out.append((code, self._offset(pc, jt), self._offset(pc, jf),
                        self._offset(pc, k) if isinstance(k, str) else k))
        return out

    def _offset(self, pc: int, to: _Target) -> int:
        if to is None:
            return 0
        off = self._labels[to] - pc - 1
        if not 0 <= off <= 0xFF:
            raise ValueError(f"jump from {pc} to {to!r} out of range")
        return off

"""eBPF from Python without a toolchain: the ``bpf(2)`` system call through ctypes and a small assembler.

The gateway needs one tiny eBPF program (the TUN queue steering of :mod:`ikegate.workers.tunsteer`) and one
map; bcc or libbpf would bring a compiler or a C library for that. Like the classic BPF assembler of
:mod:`ikegate.workers.steering`, the instructions are written out by hand, here with symbolic forward jumps.
Everything that can fail at run time (no ``bpf()`` on this kernel, no privilege, the verifier refusing the
program) raises :class:`BpfError` carrying the errno and, for a refused program, the verifier's log: the
caller logs it once and keeps its fallback.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
import sys
from dataclasses import dataclass

__all__ = ["Asm", "BpfError", "Map", "Program", "available"]

#: ``__NR_bpf`` per architecture (the only part of the ABI that differs between the ones we run on).
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "i686": 357, "ppc64le": 361, "s390x": 351,
            "riscv64": 280}

# commands
MAP_CREATE, MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY, PROG_LOAD = 0, 1, 2, 3, 4, 5
PROG_TEST_RUN = 10
# types
MAP_TYPE_LPM_TRIE = 11
PROG_TYPE_SOCKET_FILTER = 1
MAP_F_NO_PREALLOC = 1  # required by an LPM trie
#: helpers (``enum bpf_func_id``)
FUNC_MAP_LOOKUP_ELEM, FUNC_SKB_LOAD_BYTES = 1, 26

_ATTR_SIZE = 128  # more than any command here uses; the kernel accepts a larger attr when the tail is zero
_LOG_SIZE = 1 << 16


class BpfError(OSError):
    """A ``bpf(2)`` command failed; ``log`` is the verifier's text when a program was refused."""

    def __init__(self, err: int, what: str, log: str = "") -> None:
        super().__init__(err, f"bpf {what}: {os.strerror(err)}" + (f"\n{log}" if log else ""))
        self.log = log


_libc: ctypes.CDLL | None = None


def _sys_bpf(cmd: int, attr: ctypes.Array[ctypes.c_char], what: str) -> int:
    global _libc
    number = _SYS_BPF.get(platform.machine())
    if number is None:
        raise BpfError(errno.ENOSYS, what)
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    ret = int(_libc.syscall(ctypes.c_long(number), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr))))
    if ret < 0:
        raise BpfError(ctypes.get_errno(), what)
    return ret


def _attr(fmt: str, *values: int) -> ctypes.Array[ctypes.c_char]:
    raw = struct.pack("=" + fmt, *values)
    return ctypes.create_string_buffer(raw + bytes(_ATTR_SIZE - len(raw)), _ATTR_SIZE)


def _addr(buf: ctypes.Array[ctypes.c_char]) -> int:
    return ctypes.addressof(buf)


class Map:
    """A BPF map by file descriptor; keys and values are bytes of the sizes it was made with. The
    descriptor can be inherited by another process (``from_fd``), which then reads and writes the same
    map: the kernel's program sees every update at once."""

    def __init__(self, fd: int, key_size: int, value_size: int) -> None:
        self.fd, self.key_size, self.value_size = fd, key_size, value_size

    @classmethod
    def create(cls, map_type: int, key_size: int, value_size: int, max_entries: int, flags: int = 0) -> Map:
        fd = _sys_bpf(MAP_CREATE, _attr("IIIII", map_type, key_size, value_size, max_entries, flags), "map create")
        os.set_inheritable(fd, False)
        return cls(fd, key_size, value_size)

    def _key(self, key: bytes) -> ctypes.Array[ctypes.c_char]:
        if len(key) != self.key_size:
            raise ValueError(f"key of {len(key)} bytes, the map takes {self.key_size}")
        return ctypes.create_string_buffer(key, len(key))

    def update(self, key: bytes, value: bytes) -> None:
        if len(value) != self.value_size:
            raise ValueError(f"value of {len(value)} bytes, the map takes {self.value_size}")
        k, v = self._key(key), ctypes.create_string_buffer(value, len(value))
        _sys_bpf(MAP_UPDATE_ELEM, _attr("IIQQQ", self.fd, 0, _addr(k), _addr(v), 0), "map update")

    def delete(self, key: bytes) -> bool:
        """False when the key was not there."""
        try:
            k = self._key(key)  # held until the call returns
            _sys_bpf(MAP_DELETE_ELEM, _attr("IIQ", self.fd, 0, _addr(k)), "map delete")
        except BpfError as exc:
            if exc.errno == errno.ENOENT:
                return False
            raise
        return True

    def lookup(self, key: bytes) -> bytes | None:
        """The value for ``key`` (for an LPM trie: of the longest prefix containing it), or None."""
        k, v = self._key(key), ctypes.create_string_buffer(self.value_size)
        try:
            _sys_bpf(MAP_LOOKUP_ELEM, _attr("IIQQQ", self.fd, 0, _addr(k), _addr(v), 0), "map lookup")
        except BpfError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise
        return v.raw

    def all_keys(self) -> list[bytes]:
        out: list[bytes] = []
        nxt = ctypes.create_string_buffer(self.key_size)
        key: ctypes.Array[ctypes.c_char] | None = None
        while True:
            try:
                _sys_bpf(MAP_GET_NEXT_KEY, _attr("IIQQ", self.fd, 0, 0 if key is None else _addr(key),
                                                 _addr(nxt)), "map next key")
            except BpfError as exc:
                if exc.errno == errno.ENOENT:
                    return out
                raise
            out.append(nxt.raw)
            key = ctypes.create_string_buffer(nxt.raw, self.key_size)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass
class Program:
    """A loaded program by file descriptor."""

    fd: int

    @classmethod
    def load(cls, prog_type: int, insns: bytes, license: str = "GPL") -> Program:
        lic = ctypes.create_string_buffer(license.encode())
        code = ctypes.create_string_buffer(insns, len(insns))
        log = ctypes.create_string_buffer(_LOG_SIZE)
        attr = _attr("IIQQIIQ", prog_type, len(insns) // 8, _addr(code), _addr(lic), 1, _LOG_SIZE, _addr(log))
        try:
            fd = _sys_bpf(PROG_LOAD, attr, "program load")
        except BpfError as exc:
            raise BpfError(exc.errno or errno.EINVAL, "program load",
                           log.value.decode(errors="replace").strip()) from None
        os.set_inheritable(fd, False)
        return cls(fd)

    def test_run(self, data: bytes) -> int:
        """Run the program once on ``data`` (``BPF_PROG_TEST_RUN``: for a socket filter, an Ethernet frame
        whose header the kernel strips first) and return what it returned."""
        buf = ctypes.create_string_buffer(data, len(data))
        attr = _attr("IIIIQQII", self.fd, 0, len(data), 0, _addr(buf), 0, 1, 0)
        _sys_bpf(PROG_TEST_RUN, attr, "program test run")
        return int(struct.unpack_from("=I", attr.raw, 4)[0])

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def available() -> bool:
    """Whether this process may make BPF maps at all (Linux, ``bpf()`` present, privileged enough)."""
    try:
        Map.create(MAP_TYPE_LPM_TRIE, 8, 4, 1, MAP_F_NO_PREALLOC).close()
    except (BpfError, OSError):
        return False
    return True


# -- the assembler --------------------------------------------------------------------------------------

# instruction classes, sizes, modes, operations (``linux/bpf_common.h``, ``linux/bpf.h``)
LD, LDX, ST, STX, ALU, JMP, ALU64 = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x07
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
IMM, ABS, MEM = 0x00, 0x20, 0x60
ADD, OR, AND, LSH, RSH, MOV, XOR = 0x00, 0x40, 0x50, 0x60, 0x70, 0xB0, 0xA0
K, X = 0x00, 0x08
JA, JEQ, JNE, CALL, EXIT = 0x00, 0x10, 0x50, 0x80, 0x90
PSEUDO_MAP_FD = 1
R0, R1, R2, R3, R4, R6, R7, R10 = 0, 1, 2, 3, 4, 6, 7, 10

_SIZES = {1: B, 2: H, 4: W, 8: DW}
_Target = str | None


class Asm:
    """eBPF instructions with jump targets by label (forward only, resolved by :meth:`assemble`)."""

    def __init__(self) -> None:
        self._rows: list[tuple[int, int, int, int | str, int]] = []  # code, dst, src, off or label, imm
        self._labels: dict[str, int] = {}

    def _op(self, code: int, dst: int = 0, src: int = 0, off: int | str = 0, imm: int = 0) -> None:
        self._rows.append((code, dst, src, off, imm))

    def label(self, name: str) -> None:
        self._labels[name] = len(self._rows)

    # ALU, 64-bit
    def mov(self, dst: int, src: int) -> None:
        self._op(ALU64 | MOV | X, dst, src)

    def mov_k(self, dst: int, imm: int) -> None:
        self._op(ALU64 | MOV | K, dst, imm=imm)

    def alu_k(self, op: int, dst: int, imm: int) -> None:
        self._op(ALU64 | op | K, dst, imm=imm)

    def alu(self, op: int, dst: int, src: int) -> None:
        self._op(ALU64 | op | X, dst, src)

    # memory
    def st(self, size: int, dst: int, off: int, imm: int) -> None:
        """``*(size *)(dst + off) = imm``."""
        self._op(ST | MEM | _SIZES[size], dst, 0, off, imm)

    def ldx(self, size: int, dst: int, src: int, off: int) -> None:
        """``dst = *(size *)(src + off)``."""
        self._op(LDX | MEM | _SIZES[size], dst, src, off)

    def ld_abs(self, size: int, at: int) -> None:
        """``r0 = ntoh(packet[at:at+size])`` (the skb in r6; an access past the end ends the program with 0)."""
        self._op(LD | ABS | _SIZES[size], imm=at)

    def ld_map_fd(self, dst: int, fd: int) -> None:
        self._op(LD | DW | IMM, dst, PSEUDO_MAP_FD, 0, fd)
        self._op(0)  # the second half of the 16-byte load: the upper 32 bits, zero

    # jumps
    def ja(self, to: str) -> None:
        self._op(JMP | JA, off=to)

    def jeq_k(self, dst: int, imm: int, to: str) -> None:
        self._op(JMP | JEQ | K, dst, 0, to, imm)

    def jne_k(self, dst: int, imm: int, to: str) -> None:
        self._op(JMP | JNE | K, dst, 0, to, imm)

    def call(self, helper: int) -> None:
        self._op(JMP | CALL, imm=helper)

    def exit(self) -> None:
        self._op(JMP | EXIT)

    def assemble(self) -> bytes:
        out = bytearray()
        for pc, (code, dst, src, off, imm) in enumerate(self._rows):
            if isinstance(off, str):
                off = self._labels[off] - pc - 1
                if not 0 <= off <= 0x7FFF:
                    raise ValueError(f"jump from {pc} out of range")
            regs = (dst << 4) | src if sys.byteorder == "big" else (src << 4) | dst  # C bitfields
            out += struct.pack("=BBhi", code, regs, off, imm)
        return bytes(out)

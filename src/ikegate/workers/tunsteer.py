"""TUN queue steering by eBPF: an outbound LAN packet goes to the queue of the worker holding its flow's SA.

A multi-queue TUN left to itself picks a packet's queue by the flow's hash; a worker reading a flow whose SA
another worker holds must hand the packet over (:mod:`ikegate.workers.mesh`), which costs about what the
second worker gains. ``TUNSETSTEERINGEBPF`` (Linux 4.19) lets a socket-filter program choose instead: the
kernel runs it on each packet sent into the device (``tun_ebpf_select_queue``: the skb starts at the IP
header, a TUN has no link layer) and uses its return value modulo the number of queues.

The program (:func:`program`) reads the inner destination, IPv4 or IPv6, and looks it up in an LPM trie
(:data:`MAP_TYPE_LPM_TRIE`) of destination prefixes, each naming the worker that owns it. Keys are 4 bytes
of prefix length then 16 of address, IPv4 as IPv4-mapped IPv6 (``::ffff:a.b.c.d``, prefix length + 96),
so one trie serves both families. A destination in no prefix gets a symmetric hash of the addresses (the
flow still sticks to one queue; its reader hands it over or passes it in clear as before).
:func:`expected` is the same rule in Python: the reference the tests check the program against.

Queue *i* must be worker *i*: the kernel numbers the queues in the order they were attached and, when one
detaches, moves the last into its place. So the supervisor opens every queue itself, in index order, keeps
them for the life of the device (as it keeps the ``SO_REUSEPORT`` members) and passes queue *i* to worker
*i*: a worker that dies leaves its queue attached and in place for its successor.

Who fills the trie: every worker writes its own entries through the inherited map descriptor
(:class:`Publisher`): the remote prefixes of the site-to-site policies whose peer it owns
(``steering.peer_owner``), and the remote traffic selectors of the SAs it holds (a dial-up SA's flows), added
and removed as they come and go (``Spd.on_change``). Overlapping prefixes of two workers resolve to the last
written; a packet steered wrong is still handed over, so nothing here can make a packet go missing.

If the kernel refuses (no ``bpf()``, no privilege, a verifier that dislikes the program, a kernel before
4.19), the supervisor logs it once and the device runs as before: hash steering and hand-over.
"""

from __future__ import annotations

import collections
import fcntl
import ipaddress
import logging
import struct
from collections.abc import Iterable, Mapping

from ikegate.ike.wire.v2 import TrafficSelector
from ikegate.io import bpf
from ikegate.io.bpf import R0, R1, R2, R3, R4, R6, R7, R10, Asm, Map, Program
from ikegate.io.tun import TunDevice

__all__ = ["KEY_SIZE", "Publisher", "Steerer", "TunQueues", "attach", "destination_owner", "expected", "key_of",
           "prefix_keys", "program"]

log = logging.getLogger("ikegate.workers")

TUNSETSTEERINGEBPF = 0x800454E0  # _IOR('T', 224, int)
MAP_TYPE_LPM_TRIE = bpf.MAP_TYPE_LPM_TRIE
KEY_SIZE, VALUE_SIZE = 20, 4
#: Prefixes the trie holds (each site-to-site rule's remote range is a few; each dial-up SA's one or two).
MAX_ENTRIES = 65536
_V4_MAPPED = bytes(10) + b"\xff\xff"
_MAPPED_NET = ipaddress.IPv6Network("::ffff:0:0/96")
_MAPPED_FIRST, _MAPPED_LAST = int(_MAPPED_NET.network_address), int(_MAPPED_NET.broadcast_address)
_KEY = struct.Struct("=I16s")
_VALUE = struct.Struct("=I")

#: One trie entry: (prefix length over the 128-bit key, 16 address bytes).
Prefix = tuple[int, bytes]


def key_of(prefix: Prefix) -> bytes:
    return _KEY.pack(*prefix)


def prefix_keys(family: int, start: int, end: int) -> list[Prefix]:
    """The trie prefixes covering the address range ``start``..``end`` of ``family`` (4 or 6)."""
    size = end - start + 1
    mapped = family == 6 and start <= _MAPPED_FIRST and end >= _MAPPED_LAST
    if size > 0 and not size & (size - 1) and not start & (size - 1) and not mapped:
        # one prefix (the usual selector, and every SA's: the fast path of an SA install)
        length = (32 if family == 4 else 128) - (size.bit_length() - 1)
        if family == 4:
            return [(96 + length, _V4_MAPPED + start.to_bytes(4, "big"))]
        return [(length, start.to_bytes(16, "big"))]
    cls = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    out: list[Prefix] = []
    for net in ipaddress.summarize_address_range(cls(start), cls(end)):
        if family == 4:
            out.append((96 + net.prefixlen, _V4_MAPPED + net.network_address.packed))
        elif isinstance(net, ipaddress.IPv6Network) and net.supernet_of(_MAPPED_NET):
            # an IPv6 range must not claim the IPv4 destinations mapped into it: leave that /96 out
            out += [(n.prefixlen, n.network_address.packed) for n in net.address_exclude(_MAPPED_NET)]
        else:
            out.append((net.prefixlen, net.network_address.packed))
    return out


# -- the program and its model ----------------------------------------------------------------------------

def program(map_fd: int) -> bytes:
    """The steering program, looking destinations up in the trie ``map_fd``."""
    a = Asm()
    a.mov(R6, R1)  # the skb: LD_ABS reads through r6
    a.ld_abs(1, 0)
    a.alu_k(bpf.RSH, R0, 4)  # IP version
    a.st(8, R10, -24, 0)  # key: u32 prefix length at fp-24, 16 address bytes at fp-20
    a.st(8, R10, -16, 0)
    a.st(4, R10, -8, 0)
    a.st(4, R10, -24, 128)
    a.jeq_k(R0, 6, "v6")
    a.jne_k(R0, 4, "ret0")
    a.st(2, R10, -10, 0xFFFF)  # ::ffff:
    _load(a, 16, -8, 4)  # IPv4 destination into the key's last 4 bytes
    a.ld_abs(4, 12)  # fallback hash: source ^ destination (symmetric), kept in r7 across the call
    a.mov(R7, R0)
    a.ld_abs(4, 16)
    a.alu(bpf.XOR, R7, R0)
    a.ja("lookup")
    a.label("v6")
    _load(a, 24, -20, 16)  # IPv6 destination
    a.ld_abs(4, 20)  # the addresses' last words
    a.mov(R7, R0)
    a.ld_abs(4, 36)
    a.alu(bpf.XOR, R7, R0)
    a.label("lookup")
    a.ld_map_fd(R1, map_fd)
    a.mov(R2, R10)
    a.alu_k(bpf.ADD, R2, -24)
    a.call(bpf.FUNC_MAP_LOOKUP_ELEM)
    a.jeq_k(R0, 0, "miss")
    a.ldx(4, R0, R0, 0)  # the owning worker
    a.exit()
    a.label("miss")  # fold the 32-bit hash into a byte
    a.mov(R0, R7)
    a.alu_k(bpf.RSH, R7, 16)
    a.alu(bpf.XOR, R0, R7)
    a.mov(R7, R0)
    a.alu_k(bpf.RSH, R7, 8)
    a.alu(bpf.XOR, R0, R7)
    a.alu_k(bpf.AND, R0, 0xFF)
    a.exit()
    a.label("ret0")
    a.mov_k(R0, 0)
    a.exit()
    return a.assemble()


def _load(a: Asm, offset: int, to: int, size: int) -> None:
    """``bpf_skb_load_bytes(skb, offset, fp + to, size)``; a packet too short for it goes to queue 0."""
    a.mov(R1, R6)
    a.mov_k(R2, offset)
    a.mov(R3, R10)
    a.alu_k(bpf.ADD, R3, to)
    a.mov_k(R4, size)
    a.call(bpf.FUNC_SKB_LOAD_BYTES)
    a.jne_k(R0, 0, "ret0")


def _lpm(table: Mapping[Prefix, int], address: bytes) -> int | None:
    bits = int.from_bytes(address, "big")
    best: tuple[int, int] | None = None
    for (length, data), value in table.items():
        mask = ((1 << length) - 1) << (128 - length) if length else 0
        if bits & mask == int.from_bytes(data, "big") & mask and (best is None or length > best[0]):
            best = (length, value)
    return None if best is None else best[1]


def expected(packet: bytes, table: Mapping[Prefix, int]) -> int:
    """What :func:`program` returns for ``packet`` with the trie holding ``table`` (the kernel then takes
    it modulo the number of queues)."""
    if not packet:
        return 0
    version = packet[0] >> 4
    if version == 4 and len(packet) >= 20:
        dst, words = _V4_MAPPED + packet[16:20], (packet[12:16], packet[16:20])
    elif version == 6 and len(packet) >= 40:
        dst, words = packet[24:40], (packet[20:24], packet[36:40])
    else:
        return 0
    owner = _lpm(table, dst)
    if owner is not None:
        return owner
    h = int.from_bytes(words[0], "big") ^ int.from_bytes(words[1], "big")
    h ^= h >> 16
    h ^= h >> 8
    return h & 0xFF


def destination_owner(steer_map: Map, packet: bytes) -> int | None:
    """The worker the trie names for ``packet``'s destination (None: no entry, or not an IP packet)."""
    if len(packet) >= 20 and packet[0] >> 4 == 4:
        dst = _V4_MAPPED + packet[16:20]
    elif len(packet) >= 40 and packet[0] >> 4 == 6:
        dst = packet[24:40]
    else:
        return None
    value = steer_map.lookup(_KEY.pack(128, dst))
    return None if value is None else int(_VALUE.unpack(value)[0])


# -- the supervisor's side --------------------------------------------------------------------------------

class Steerer:
    """The trie and the loaded program, made by the supervisor before it starts the workers."""

    def __init__(self) -> None:
        self.map = Map.create(MAP_TYPE_LPM_TRIE, KEY_SIZE, VALUE_SIZE, MAX_ENTRIES, bpf.MAP_F_NO_PREALLOC)
        try:
            self.program = Program.load(bpf.PROG_TYPE_SOCKET_FILTER, program(self.map.fd))
        except BaseException:
            self.map.close()
            raise

    def close(self) -> None:
        self.program.close()
        self.map.close()


class TunQueues:
    """The supervisor's queues: for each TUN, one per worker, attached in index order and kept open for the
    life of the device, so that queue *i* stays worker *i*'s across restarts; and the steering, when the
    kernel takes it (``refused`` says why not: the device then runs on hash steering and hand-over)."""

    def __init__(self, names: Iterable[str], workers: int, *, steer: bool = True) -> None:
        self.queues: dict[str, list[TunDevice]] = {}
        self.steerer: Steerer | None = None
        self.refused: str | None = None
        try:
            for name in names:
                self.queues[name] = [TunDevice.opened(name, multi_queue=True) for _ in range(workers)]
        except BaseException:
            self.close()
            raise
        if not self.queues or not steer:
            return
        try:
            self.steerer = Steerer()
            for devices in self.queues.values():
                attach(devices[0].fd, self.steerer.program.fd)
        except OSError as exc:
            if self.steerer is not None:
                self.steerer.close()
                self.steerer = None
            self.refused = str(exc)

    def handles(self, index: int) -> dict[str, tuple[int, dict[str, object]]]:
        """Worker ``index``'s queue of each TUN, by name: (descriptor, what ``TunDevice.adopt`` needs)."""
        return {name: (devices[index].fd, devices[index].state()) for name, devices in self.queues.items()}

    @property
    def map_fd(self) -> int | None:
        return None if self.steerer is None else self.steerer.map.fd

    def close(self) -> None:
        for devices in self.queues.values():
            for device in devices:
                device.close()
        self.queues = {}
        if self.steerer is not None:
            self.steerer.close()
            self.steerer = None


def attach(queue_fd: int, program_fd: int) -> None:
    """Make ``program_fd`` choose the queue of the TUN device ``queue_fd`` is a queue of (any queue: the
    program is the device's). Raises OSError when the kernel has no such ioctl (before 4.19)."""
    fcntl.ioctl(queue_fd, TUNSETSTEERINGEBPF, struct.pack("i", program_fd))


# -- a worker's side --------------------------------------------------------------------------------------

class Publisher:
    """A worker's entries in the shared trie: the remote networks of the site-to-site policies whose peer it
    owns (:meth:`set_site`, at each configuration) and the remote selectors of the SAs it holds
    (:meth:`sa_change`, at each install and removal: counted per prefix, so a rekey's overlap of two SAs
    writes nothing). The first ``OSError`` (the map full, or gone) stops it: ``failed`` says why, and the
    worker stops steering by it rather than fail an SA's install."""

    def __init__(self, steer_map: Map, index: int) -> None:
        self.map = steer_map
        self.index = index
        self._value = _VALUE.pack(index)
        self._site: set[Prefix] = set()
        self._refs: collections.Counter[Prefix] = collections.Counter()
        self.failed: str | None = None

    def purge(self) -> int:
        """Remove every entry naming this worker (a predecessor's, after a restart: its SAs are gone)."""
        gone = 0
        for key in self.map.all_keys():
            if self.map.lookup(key) == self._value and self.map.delete(key):
                gone += 1
        return gone

    def set_site(self, prefixes: Iterable[Prefix]) -> None:
        new = set(prefixes)
        for prefix in self._site - new:
            if not self._refs[prefix]:
                self._withdraw(prefix)
        for prefix in new - self._site:
            if not self._refs[prefix]:
                self._put(prefix)
        self._site = new

    def sa_change(self, selectors: Iterable[TrafficSelector], delta: int) -> None:
        """An SA with these remote selectors was installed (``delta`` 1) or removed (-1)."""
        refs, site = self._refs, self._site
        for ts in selectors:
            for prefix in prefix_keys(ts.family, ts.start, ts.end):
                refs[prefix] += delta
                count = refs[prefix]
                if count <= 0:
                    del refs[prefix]
                    if prefix not in site:
                        self._withdraw(prefix)
                elif count == 1 and delta > 0 and prefix not in site:
                    self._put(prefix)

    def _put(self, prefix: Prefix) -> None:
        if self.failed is None:
            try:
                self.map.update(key_of(prefix), self._value)
            except OSError as exc:
                self.failed = str(exc)

    def _withdraw(self, prefix: Prefix) -> None:
        if self.failed is None:
            key = key_of(prefix)
            try:
                # an LPM lookup of an entry's own key finds that entry: still ours, not overwritten since
                if self.map.lookup(key) == self._value:
                    self.map.delete(key)
            except OSError as exc:
                self.failed = str(exc)

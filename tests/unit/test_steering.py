"""SPIs that name their worker, and the classic BPF program that reads them, checked without a kernel.

A tiny classic BPF interpreter (only the opcodes the program uses; any other opcode, or a load beyond the
payload, fails the test) runs the program on thousands of synthetic datagrams and must agree with
``Steering.expected_worker``, the rule in Python; separate tests check that the rule sends each kind of
datagram to the worker that owns it. The real kernel runs the same program in tests/system/test_steering_kernel.py.
"""

from __future__ import annotations

import random
import struct

import pytest

from ikegate.workers import steering
from ikegate.workers.steering import (
    MAX_WORKERS,
    Steering,
    esp_spi,
    esp_spi_owner,
    ike_spi,
    ike_spi_owner,
    pack,
)

Program = list[tuple[int, int, int, int]]


def run_bpf(program: Program, data: bytes) -> int:
    """Classic BPF as the kernel runs it for reuseport selection (skb data = the UDP payload). Strict: a
    load beyond the payload raises (the kernel would return 0; the program must guard lengths itself)."""
    a = x = pc = 0
    while True:
        code, jt, jf, k = program[pc]
        pc += 1
        cls = code & 0x07
        if cls == steering.LD:
            mode, size = code & 0xE0, code & 0x18
            if mode == steering.LEN:
                a = len(data)
                continue
            assert mode == steering.ABS, f"opcode {code:#x}"
            width = {steering.W: 4, steering.H: 2, steering.B: 1}[size]
            if k + width > len(data):
                raise IndexError(f"load of {width} at {k} beyond {len(data)} bytes")
            a = int.from_bytes(data[k:k + width], "big")
        elif cls == steering.ALU:
            op, operand = code & 0xF0, (x if code & steering.X else k)
            if op == steering.AND:
                a &= operand
            elif op == steering.XOR:
                a ^= operand
            elif op == steering.MOD:
                a %= operand
            else:
                raise AssertionError(f"opcode {code:#x}")
        elif cls == steering.MISC:
            assert code == steering.MISC | steering.TAX, f"opcode {code:#x}"
            x = a
        elif cls == steering.JMP:
            op = code & 0xF0
            if op == steering.JA:
                pc += k
                continue
            operand = x if code & steering.X else k
            taken = {steering.JEQ: a == operand, steering.JGE: a >= operand,
                     steering.JSET: bool(a & operand)}[op]
            pc += jt if taken else jf
        elif cls == steering.RET:
            return a if code & steering.A else k
        else:
            raise AssertionError(f"opcode {code:#x}")
        a &= 0xFFFFFFFF


def ike_header(spi_i: bytes, spi_r: bytes, *, version: int = 0x20, exchange: int = 37, flags: int = 0,
               body: bytes = b"") -> bytes:
    return spi_i + spi_r + struct.pack("!BBBBII", 46, version, exchange, flags, 0, 28 + len(body)) + body


def _mm1_owner(s: Steering, icookie: bytes) -> int:
    """Main Mode 1 goes by the initiator cookie's byte 7, unless that cookie happens to carry our tag."""
    owner = ike_spi_owner(icookie, s.key, s.workers)
    return icookie[7] % s.workers if owner is None else owner


def _cases(s: Steering, rnd: random.Random) -> list[tuple[str, bytes, bool, int]]:
    """(kind, payload, natt, the worker that must get it) for every kind of datagram the ports see."""
    out: list[tuple[str, bytes, bool, int]] = []
    n = s.workers
    for _ in range(300):
        w = rnd.randrange(n)
        ours = ike_spi(rnd.randbytes, w, s.key)
        peer = rnd.randbytes(8)
        esp = esp_spi(rnd.randbytes, w).to_bytes(4, "big")
        for natt in (False, True):
            m = bytes(4) if natt else b""
            out += [
                ("v2 from initiator", m + ike_header(peer, ours, flags=0x08, body=rnd.randbytes(40)), natt, w),
                ("v2 from responder", m + ike_header(ours, peer, flags=0x20, body=rnd.randbytes(8)), natt, w),
                ("v2 IKE_SA_INIT request", m + ike_header(peer, bytes(8), exchange=34, flags=0x08), natt,
                 peer[7] % n),
                ("v2 COOKIE answer", m + ike_header(ours, bytes(8), exchange=34, flags=0x20), natt, w),
                ("v1 we respond", m + ike_header(peer, ours, version=0x10, exchange=2), natt, w),
                ("v1 MM1", m + ike_header(peer, bytes(8), version=0x10, exchange=2), natt, _mm1_owner(s, peer)),
            ]
            if ike_spi_owner(peer, s.key, n) is None:  # else a mis-steer, measured in its own test
                out.append(("v1 we initiated", m + ike_header(ours, peer, version=0x10, exchange=5), natt, w))
        out.append(("ESP", esp + rnd.randbytes(rnd.randrange(4, 200)), True, w))
    out += [("keepalive", b"\xff", True, 0), ("empty", b"", True, 0), ("empty", b"", False, 0),
            ("short ESP", b"\x01\x02\x03\x04\x05", True, 0), ("marker only", bytes(4), True, 0),
            ("short IKE", bytes(4) + rnd.randbytes(27), True, 0), ("short IKE", rnd.randbytes(27), False, 0)]
    return out


@pytest.mark.parametrize("workers", [1, 2, 3, 4, 7, 256])
def test_program_and_rule_send_each_datagram_to_its_owner(workers: int) -> None:
    rnd = random.Random(workers)
    s = Steering.generate(workers, rnd.randbytes)
    programs = {natt: s.program(natt) for natt in (False, True)}
    for kind, payload, natt, owner in _cases(s, rnd):
        assert s.expected_worker(payload, natt) == owner, kind
        assert run_bpf(programs[natt], payload) == owner, kind


@pytest.mark.parametrize("workers", [1, 2, 4, 5])
def test_program_matches_rule_on_random_datagrams(workers: int) -> None:
    """Junk, headers with random flags/versions, SPIs with our index but a wrong tag, indexes beyond the group:
    whatever arrives, the program and the reference agree and the program never reads past the payload."""
    rnd = random.Random(1000 + workers)
    s = Steering.generate(workers, rnd.randbytes)
    programs = {natt: s.program(natt) for natt in (False, True)}
    for _ in range(3000):
        natt = rnd.random() < 0.5
        length = rnd.choice([rnd.randrange(0, 40), rnd.randrange(40, 300)])
        data = bytearray(rnd.randbytes(length))
        if natt and length >= 4 and rnd.random() < 0.6:
            data[:4] = bytes(4)
        at = 4 if natt and not any(data[:4]) else 0
        if len(data) >= at + 28:
            data[at + 17] = rnd.choice([0x10, 0x20, 0x21, 0x00, data[at + 17]])
            for spi_at in (at, at + 8):
                pick = rnd.random()
                if pick < 0.3:
                    data[spi_at:spi_at + 8] = ike_spi(rnd.randbytes, rnd.randrange(MAX_WORKERS), s.key)
                elif pick < 0.4:
                    data[spi_at:spi_at + 8] = bytes(8)
                elif pick < 0.5:  # index in range, tag off by one bit
                    spi = bytearray(ike_spi(rnd.randbytes, rnd.randrange(workers), s.key))
                    spi[2] ^= 1 << rnd.randrange(8)
                    data[spi_at:spi_at + 8] = spi
        payload = bytes(data)
        for prog_natt in (False, True):  # the other port's program must cope as well
            expected = s.expected_worker(payload, prog_natt)
            assert 0 <= expected < workers
            assert run_bpf(programs[prog_natt], payload) == expected, payload.hex()


def test_ike_v1_missteer_probability_is_exactly_n_over_2_24() -> None:
    """A peer cookie looks like ours only if its bytes 1-2 equal bytes 6-7 XOR key (one value in 2**16) and
    its byte 0 is a worker index (N in 256): over all 2**16 values of bytes 1-2, exactly one passes when
    byte 0 < N, none otherwise. So an IKEv1 SA *we* initiate is mis-steered with probability below
    N / 2**24 (the cookie also has to name another worker than ours), once per SA, and handed over."""
    rnd = random.Random(7)
    s = Steering.generate(4, rnd.randbytes)
    for first in (0, 3, 4, 200):
        cookie = bytearray(rnd.randbytes(8))
        cookie[0] = first
        passing = 0
        for tag in range(1 << 16):
            cookie[1:3] = tag.to_bytes(2, "big")
            passing += ike_spi_owner(bytes(cookie), s.key, s.workers) is not None
        assert passing == (1 if first < s.workers else 0)


def test_esp_spis_encode_the_worker_and_skip_reserved_values() -> None:
    rnd = random.Random(3)
    for index in (0, 1, 17, 255):
        for _ in range(500):
            spi = esp_spi(rnd.randbytes, index)
            assert spi >= 256 and spi < 1 << 32
            assert esp_spi_owner(spi) == index
    # worker 0 with a low random part would give a reserved SPI: drawn again
    draws = iter([b"\x00\x00\xff", b"\x00\x01\x00"])
    assert esp_spi(lambda n: next(draws), 0) == 0x100


def test_esp_spis_stay_random_below_the_index() -> None:
    rnd = random.Random(4)
    spis = {esp_spi(rnd.randbytes, 2) for _ in range(2000)}
    assert len(spis) == 2000
    assert len({spi & 0xFF for spi in spis}) > 200  # the low bytes are the RNG's, not a counter


def test_ike_spis_encode_the_worker_behind_a_keyed_tag() -> None:
    rnd = random.Random(5)
    s = Steering.generate(8, rnd.randbytes)
    other = Steering(8, s.key ^ 0x8000)
    alloc = s.ike_spi_allocator(5, rnd.randbytes)
    for _ in range(1000):
        spi = alloc()
        assert len(spi) == 8 and any(spi)
        assert ike_spi_owner(spi, s.key, s.workers) == 5
        assert ike_spi_owner(spi, other.key, other.workers) is None  # another gateway's key: not ours
        assert ike_spi_owner(spi, s.key, 5) is None  # index beyond the group
    assert ike_spi_owner(bytes(8), s.key) is None
    assert ike_spi_owner(b"\x01" * 7, s.key) is None


def test_allocators_have_the_engines_shape() -> None:
    """Wiring is one line: the engines take ``spi_allocator: Callable[[], int]`` and draw IKE SPIs with
    ``rng(8)``; these are drop-in replacements."""
    rnd = random.Random(6)
    s = Steering.generate(3, rnd.randbytes)
    esp = s.esp_spi_allocator(2, rnd.randbytes)
    ike = s.ike_spi_allocator(1, rnd.randbytes)
    assert esp_spi_owner(esp()) == 2
    assert ike_spi_owner(ike(), s.key, 3) == 1


@pytest.mark.parametrize("bad", [
    lambda: Steering(0, 1), lambda: Steering(257, 1), lambda: Steering(2, 0), lambda: Steering(2, 0x10000),
    lambda: esp_spi(random.Random().randbytes, 256), lambda: ike_spi(random.Random().randbytes, -1, 1),
    lambda: ike_spi(random.Random().randbytes, 1, 0),
])
def test_out_of_range_parameters_are_refused(bad: object) -> None:
    with pytest.raises(ValueError):
        bad()  # type: ignore[operator]


def test_generated_key_is_never_zero() -> None:
    draws = iter([b"\x00\x00", b"\x00\x00", b"\x12\x34"])
    assert Steering.generate(2, lambda n: next(draws)).key == 0x1234


def test_packed_program_is_sock_filter_rows() -> None:
    prog = Steering(4, 0xBEEF).program(True)
    raw = pack(prog)
    assert len(raw) == 8 * len(prog)
    assert struct.unpack_from("=HBBI", raw, 8 * 3) == prog[3]
    assert len(prog) < 64  # small: the kernel caps classic programs at 4096 rows, ours is far below

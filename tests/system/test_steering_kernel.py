"""The steering program in the real kernel: N loopback UDP sockets share a port with SO_REUSEPORT, the program
is attached with SO_ATTACH_REUSEPORT_CBPF, and every datagram must arrive at exactly the socket (in the order
they joined the group) that ``Steering.expected_worker`` names. This is what proves that the kernel runs the
program on the UDP payload and takes its return value as the socket index."""

from __future__ import annotations

import collections
import random
import select
import socket
import time

import pytest

from ikegate.workers.steering import Steering, attach, esp_spi, ike_spi
from tests.unit.test_steering import ike_header
from tests.waiting import DEADLINE

FAMILIES = [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]


def _group(family: int, host: str, n: int) -> list[socket.socket]:
    """``n`` non-blocking sockets bound to one port, in this order in the reuseport group."""
    socks: list[socket.socket] = []
    try:
        port = 0
        for _ in range(n):
            s = socket.socket(family, socket.SOCK_DGRAM)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.setblocking(False)
            s.bind((host, port))
            port = s.getsockname()[1]
    except OSError as e:
        for s in socks:
            s.close()
        pytest.skip(f"cannot bind {n} SO_REUSEPORT sockets on {host}: {e}")
    return socks


def _attached(socks: list[socket.socket], program: list[tuple[int, int, int, int]]) -> tuple[str, int]:
    """Attach ``program`` to the group (skip when the kernel refuses the option); the group's address."""
    try:
        attach(socks[0], program)
    except OSError as e:
        pytest.skip(f"kernel refuses SO_ATTACH_REUSEPORT_CBPF: {e}")
    host, port = socks[0].getsockname()[:2]
    return host, port


def _datagrams(st: Steering, rnd: random.Random, natt: bool) -> list[bytes]:
    """Every kind: IKEv2 both directions and first requests, IKEv1 both roles, ESP-in-UDP, keepalive, junk."""
    out: list[bytes] = []
    m = bytes(4) if natt else b""
    for w in range(st.workers):
        for _ in range(6):
            ours, peer = ike_spi(rnd.randbytes, w, st.key), rnd.randbytes(8)
            out += [
                m + ike_header(peer, ours, flags=0x08, body=rnd.randbytes(60)),
                m + ike_header(ours, peer, flags=0x20),
                m + ike_header(rnd.randbytes(8), bytes(8), exchange=34, flags=0x08),
                m + ike_header(ours, bytes(8), exchange=34, flags=0x20),
                m + ike_header(peer, ours, version=0x10, exchange=2),
                m + ike_header(ours, peer, version=0x10, exchange=5),
                m + ike_header(rnd.randbytes(8), bytes(8), version=0x10, exchange=2),
            ]
            if natt:
                out.append(esp_spi(rnd.randbytes, w).to_bytes(4, "big") + rnd.randbytes(rnd.randrange(4, 120)))
    out += [rnd.randbytes(rnd.randrange(1, 80)) for _ in range(20)]
    out += [b"\xff", b"\x00"] if natt else [b"\xff"]
    return out


def _deliveries(socks: list[socket.socket], sender: socket.socket, dest: tuple[str, int],
                batch: list[bytes]) -> collections.Counter[tuple[bytes, int]]:
    """Send ``batch``, then read until as many datagrams as were sent arrived: (payload, socket index) counts."""
    for payload in batch:
        sender.sendto(payload, dest)
    got: collections.Counter[tuple[bytes, int]] = collections.Counter()
    deadline = time.monotonic() + DEADLINE
    while sum(got.values()) < len(batch):
        left = deadline - time.monotonic()
        assert left > 0, f"only {sum(got.values())} of {len(batch)} datagrams arrived"
        ready, _, _ = select.select(socks, [], [], left)
        for s in ready:
            while True:
                try:
                    data = s.recv(65535)
                except BlockingIOError:
                    break
                got[data, socks.index(s)] += 1
    return got


@pytest.mark.parametrize("workers", [2, 3, 4])
@pytest.mark.parametrize("natt", [False, True], ids=["ike-port", "natt-port"])
@pytest.mark.parametrize(("family", "host"), FAMILIES, ids=["v4", "v6"])
def test_kernel_delivers_each_datagram_to_its_owner(family: int, host: str, natt: bool, workers: int) -> None:
    rnd = random.Random(workers * 10 + natt)
    st = Steering.generate(workers, rnd.randbytes)
    socks = _group(family, host, workers)
    sender = socket.socket(family, socket.SOCK_DGRAM)
    try:
        dest = _attached(socks, st.program(natt))
        datagrams = _datagrams(st, rnd, natt)
        rnd.shuffle(datagrams)
        counts = collections.Counter(st.expected_worker(d, natt) for d in datagrams)
        assert all(counts[w] for w in range(workers))  # every socket has something to receive
        for i in range(0, len(datagrams), 64):
            batch = datagrams[i:i + 64]
            expected = collections.Counter((d, st.expected_worker(d, natt)) for d in batch)
            assert _deliveries(socks, sender, dest, batch) == expected
    finally:
        sender.close()
        for s in socks:
            s.close()


def test_without_the_program_the_kernel_spreads_by_hash() -> None:
    """The control: the same group with no program does not follow our rule (so the test above is about the
    program, not a coincidence of the kernel's hash). Datagrams from different source ports are spread over
    the sockets by the 4-tuple hash, whatever SPI they carry: several must land away from the owner."""
    rnd = random.Random(99)
    st = Steering.generate(2, rnd.randbytes)
    socks = _group(socket.AF_INET, "127.0.0.1", 2)
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(32)]
    try:
        dest = socks[0].getsockname()[:2]
        payload = ike_header(rnd.randbytes(8), ike_spi(rnd.randbytes, 0, st.key), flags=0x08)
        got: collections.Counter[int] = collections.Counter()
        for sender in senders:
            got.update(w for (_, w), c in _deliveries(socks, sender, dest, [payload]).items() for _ in range(c))
        assert got[1] > 0 and got[0] > 0
    finally:
        for s in socks + senders:
            s.close()


def test_closing_a_member_moves_the_last_socket_into_its_place() -> None:
    """A kernel fact the supervisor must design around: when a socket leaves the group, the last one takes its
    index (``__reuseport_detach_sock``), so a worker that closes its socket re-numbers another worker. The
    supervisor therefore keeps every worker's socket open itself (workers get duplicates) and a restarted
    worker reuses the socket of its index instead of binding a new one."""
    rnd = random.Random(5)
    st = Steering.generate(3, rnd.randbytes)
    socks = _group(socket.AF_INET, "127.0.0.1", 3)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        dest = _attached(socks, st.program(False))
        socks[1].close()
        left = [socks[0], socks[2]]
        to = [ike_header(ike_spi(rnd.randbytes, w, st.key), rnd.randbytes(8), flags=0x20) for w in range(3)]
        got = _deliveries(left, sender, dest, to)
        # worker 1's datagram now reaches the old socket 2; worker 2's index is beyond the group: the kernel's
        # hash picks any member, so only its arrival is checked
        assert got[to[0], 0] == 1 and got[to[1], 1] == 1
        assert got[to[2], 0] + got[to[2], 1] == 1
    finally:
        sender.close()
        for s in socks:
            s.close()

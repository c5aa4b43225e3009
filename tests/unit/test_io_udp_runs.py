"""ESP-in-UDP in runs on real loopback sockets: UDP_SEGMENT sends, UDP_GRO receives, the fallbacks.

What must hold whatever the kernel does: every datagram arrives once, whole, in the order it was queued,
and a socket the kernel refuses segmentation on goes back to one datagram per send.
"""

from __future__ import annotations

import asyncio
import errno
import select
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from ikegate.io.udp import GSO_MAX_REFUSALS, SO_NO_CHECK, SOL_UDP, UDP_SEGMENT, _dispatch_udp, _Endpoint

Addr = tuple[str, int]


class _Counting(socket.socket):
    """A real UDP socket that counts its sends (and can be told to refuse segmentation)."""

    refuse: int | None = None

    def __init__(self) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_DGRAM)
        self.sendmsgs = 0
        self.sendtos = 0

    def sendmsg(self, *args: Any, **kw: Any) -> int:  # type: ignore[override]
        self.sendmsgs += 1
        if self.refuse is not None:
            raise OSError(self.refuse, "refused")
        return super().sendmsg(*args, **kw)

    def sendto(self, *args: Any, **kw: Any) -> int:  # type: ignore[override]
        self.sendtos += 1
        return super().sendto(*args, **kw)


class _Runner:
    """What an endpoint needs of its runner: a loop, the clock, ``feed`` and ``flush``."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.fed: list[tuple[bytes, Addr, Addr]] = []
        self.flushes = 0

    def now(self) -> float:
        return 1.0

    def feed(self, data: bytes, local: Addr, remote: Addr, now: float | None = None) -> None:
        self.fed.append((data, local, remote))

    def flush(self) -> None:
        self.flushes += 1


@pytest.fixture
def pair() -> Iterator[tuple[_Endpoint, socket.socket, _Counting]]:
    """A batching endpoint sending from ``tx`` and a plain receiving socket ``rx``."""
    tx = _Counting()
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.bind(("127.0.0.1", 0))
    rx.bind(("127.0.0.1", 0))
    runner = _Runner()
    endpoint = _Endpoint(runner, tx.getsockname(), tx, zero_esp_checksum=True, batch=True)  # type: ignore[arg-type]
    try:
        yield endpoint, rx, tx
    finally:
        tx.close()
        rx.close()
        runner.loop.close()


def _receive(rx: socket.socket, count: int) -> list[bytes]:
    got = []
    for _ in range(count):
        assert select.select([rx], [], [], 5)[0], f"only {len(got)} of {count} datagrams arrived"
        got.append(rx.recv(65535))
    return got


def _esp(n: int, size: int) -> bytes:
    return struct.pack("!II", 0x1000 + n, n) + bytes([n % 256]) * (size - 8)


def test_runs_of_one_length_leave_in_one_send_and_arrive_as_datagrams_in_order(
        pair: tuple[_Endpoint, socket.socket, _Counting]) -> None:
    endpoint, rx, tx = pair
    to = rx.getsockname()
    local = endpoint.local
    other = ("127.0.0.1", 9)  # the discard port: another peer breaks a run
    # 5 of one length and a shorter last one (one run), one to another peer, then a longer one (its own run
    # start), 3 more of that length
    out = [(_esp(i, 1200), local, to) for i in range(5)] + [(_esp(5, 300), local, to)]
    out += [(_esp(6, 1200), local, other)]
    out += [(_esp(7 + i, 1400), local, to) for i in range(4)]
    _dispatch_udp(out, {local: endpoint})
    expected = [data for data, _l, remote in out if remote == to]
    assert _receive(rx, len(expected)) == expected
    if endpoint.gso:  # the kernel took segmentation: 2 runs in 2 sendmsg, the lone datagram by sendto
        assert (tx.sendmsgs, tx.sendtos) == (2, 1)
        assert tx.getsockopt(socket.SOL_SOCKET, SO_NO_CHECK) == 0  # a run carries checksums
    assert not select.select([rx], [], [], 0)[0]  # nothing twice


def test_a_single_datagram_keeps_the_zero_checksum_path(pair: tuple[_Endpoint, socket.socket, _Counting]) -> None:
    endpoint, rx, tx = pair
    _dispatch_udp([(_esp(1, 200), endpoint.local, rx.getsockname())], {endpoint.local: endpoint})
    assert _receive(rx, 1) == [_esp(1, 200)]
    assert (tx.sendmsgs, tx.sendtos) == (0, 1)
    assert tx.getsockopt(socket.SOL_SOCKET, SO_NO_CHECK) == 1


@pytest.mark.parametrize("refusal, keeps", [(errno.EIO, False), (errno.EMSGSIZE, True)])
def test_a_refused_run_goes_datagram_by_datagram(pair: tuple[_Endpoint, socket.socket, _Counting], refusal: int,
                                                 keeps: bool) -> None:
    """EIO (no offload on this socket) switches runs off for good; EMSGSIZE (this run) only for the run."""
    endpoint, rx, tx = pair
    tx.refuse = refusal
    run = [_esp(i, 1000) for i in range(4)]
    endpoint.send_run(run, rx.getsockname())
    assert _receive(rx, 4) == run
    assert (tx.sendmsgs, tx.sendtos) == (1, 4)
    assert endpoint.gso is keeps


def test_coalesced_runs_are_split_back_into_datagrams() -> None:
    """A receiving endpoint with UDP_GRO gets one segmented send as one buffer plus its segment size, and
    feeds the controller each datagram, in order, with the sender's address."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    runner = _Runner()
    try:
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        tx.bind(("127.0.0.1", 0))
        endpoint = _Endpoint(runner, rx.getsockname(), rx, batch=True)  # type: ignore[arg-type]
        run = [_esp(i, 1000) for i in range(6)] + [_esp(6, 120)]
        try:
            tx.sendmsg([b"".join(run)], [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", 1000))], 0, rx.getsockname())
        except OSError as exc:
            pytest.skip(f"no UDP segmentation offload here: {exc}")
        single = _esp(7, 64)
        tx.sendto(single, rx.getsockname())
        while len(runner.fed) < len(run) + 1:
            assert select.select([rx], [], [], 5)[0], runner.fed
            endpoint.on_readable()
        assert [data for data, _l, _r in runner.fed] == [*run, single]
        assert {remote for _d, _l, remote in runner.fed} == {tx.getsockname()}
        assert runner.flushes >= 1
    finally:
        rx.close()
        tx.close()
        runner.loop.close()


def test_runs_refused_again_and_again_switch_segmentation_off(
        pair: tuple[_Endpoint, socket.socket, _Counting]) -> None:
    """An old kernel refuses the option itself with EINVAL, which a single over-long run also gets: after
    GSO_MAX_REFUSALS in a row the endpoint stops trying; every datagram still arrives."""
    endpoint, rx, tx = pair
    tx.refuse = errno.EINVAL
    sent: list[bytes] = []
    for n in range(GSO_MAX_REFUSALS):
        assert endpoint.gso
        run = [_esp(n, 100), _esp(n, 100)]
        endpoint.send_run(run, rx.getsockname())
        sent += run
    assert not endpoint.gso
    assert _receive(rx, len(sent)) == sent
    assert tx.sendmsgs == GSO_MAX_REFUSALS

"""The workers' mesh (ikegate.workers.mesh): raw datagrams to the owner's inbox, never blocking."""

from __future__ import annotations

import os

from ikegate.workers.mesh import WAN, Mesh, MeshEnds, parse_spec, parse_wan, wan_frame


def _ends(mesh: Mesh, index: int) -> MeshEnds:
    """Worker ``index``'s ends as the worker process would build them (from duplicated descriptors)."""
    rx, outs = mesh.fds(index)
    spec = f"{os.dup(rx)}:{','.join(str(os.dup(fd)) if fd >= 0 else '-1' for fd in outs)}"
    return parse_spec(spec)


def test_a_packet_sent_to_the_owner_arrives_whole_in_its_inbox_only() -> None:
    mesh = Mesh(3)
    try:
        zero, two = _ends(mesh, 0), _ends(mesh, 2)
        assert mesh.spec(1).split(":")[1].split(",")[1] == "-1"  # no path to itself
        assert zero.outs[0] is None and zero.send(0, b"x") is None
        assert zero.send(2, b"\x45" + bytes(99)) is True and zero.sent == 1
        assert two.inbox.recv(65536) == b"\x45" + bytes(99)
        assert zero.send(7, b"x") is None  # no such worker
    finally:
        mesh.close()


def test_a_full_inbox_drops_instead_of_blocking() -> None:
    mesh = Mesh(2)
    try:
        zero = _ends(mesh, 0)
        results = [zero.send(1, bytes(1400)) for _ in range(20000)]  # nobody reads worker 1's inbox
        assert results[0] is True and results[-1] is False
        assert zero.sent == results.count(True) < 20000
    finally:
        mesh.close()


def test_a_wan_datagram_crosses_with_its_addresses_and_is_never_taken_for_an_ip_packet() -> None:
    frame = wan_frame(b"\x00\x00\x00\x00ike", ("2001:db8:ff::1", 4500), ("198.51.100.2", 61000))
    assert frame[:1] == WAN and frame[0] >> 4 not in (4, 6)
    assert parse_wan(frame) == (b"\x00\x00\x00\x00ike", ("2001:db8:ff::1", 4500), ("198.51.100.2", 61000))
    for bad in (WAN, WAN + b"1 2 3" + WAN + b"x", WAN + b"a b c d" + WAN, WAN + b"\xff\xfe 1 b 2" + WAN):
        assert parse_wan(bad) is None

"""The TUN steering program (``ikegate.workers.tunsteer``), loaded into this kernel and run on packets with
``BPF_PROG_TEST_RUN``, returns what its Python model says; the workers' publishing of trie entries."""

from __future__ import annotations

import ipaddress
import random
import struct

import pytest

from ikegate.ike.wire.v2 import TrafficSelector
from ikegate.io import bpf
from ikegate.workers import tunsteer
from ikegate.workers.tunsteer import Prefix, Publisher, Steerer, expected, key_of, prefix_keys

pytestmark = pytest.mark.skipif(not bpf.available(), reason="no bpf() here (kernel or privilege)")


def _v4(src: str, dst: str, size: int = 40) -> bytes:
    return bytes([0x45, 0]) + struct.pack("!H", size) + bytes(8) + ipaddress.IPv4Address(src).packed + \
        ipaddress.IPv4Address(dst).packed + bytes(size - 20)


def _v6(src: str, dst: str, size: int = 60) -> bytes:
    return bytes([0x60]) + bytes(7) + ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed + \
        bytes(size - 40)


def _frame(packet: bytes) -> bytes:
    """The Ethernet header ``BPF_PROG_TEST_RUN`` strips before a socket filter sees the packet. Its type is
    the local experimental one: with IPv4's or IPv6's the kernel refuses a truncated header itself, and the
    program never looks at it (a TUN has no link layer)."""
    return bytes(12) + b"\x88\xb5" + packet


@pytest.fixture(scope="module")
def steerer() -> Steerer:
    s = Steerer()
    yield s  # type: ignore[misc]
    s.close()


TABLE: dict[Prefix, int] = {}
for prefix, owner in (("10.2.0.0/16", 1), ("10.2.7.0/24", 2), ("10.2.7.9/32", 3), ("192.0.2.0/24", 0),
                      ("2001:db8:2::/48", 1), ("2001:db8:2:7::/64", 2), ("2001:db8:3::1/128", 3)):
    net = ipaddress.ip_network(prefix)
    for p in prefix_keys(net.version, int(net.network_address), int(net.broadcast_address)):
        TABLE[p] = owner


def _fill(steerer: Steerer) -> None:
    for key in steerer.map.all_keys():
        steerer.map.delete(key)
    for p, owner in TABLE.items():
        steerer.map.update(key_of(p), struct.pack("=I", owner))


def test_program_returns_what_the_model_says(steerer: Steerer) -> None:
    _fill(steerer)
    rng = random.Random(14)
    packets = [
        _v4("10.1.0.5", "10.2.0.7"), _v4("10.1.0.5", "10.2.7.7"), _v4("10.1.0.5", "10.2.7.9"),
        _v4("10.1.0.5", "192.0.2.200"), _v4("10.1.0.5", "10.3.0.1"),
        _v6("2001:db8:1::5", "2001:db8:2::7"), _v6("2001:db8:1::5", "2001:db8:2:7::1"),
        _v6("2001:db8:1::5", "2001:db8:3::1"), _v6("2001:db8:1::5", "2001:db8:3::2"),
        _v4("10.1.0.5", "10.2.0.7")[:19], _v6("2001:db8:1::5", "2001:db8:2::7")[:39],  # truncated
        bytes([0x50]) + bytes(40),  # neither IPv4 nor IPv6
    ]
    for _ in range(300):
        src = ipaddress.IPv4Address(rng.getrandbits(32))
        dst = ipaddress.IPv4Address(rng.choice([0x0A020000, 0x0A020700, 0xC0000200, 0]) | rng.getrandbits(12))
        packets.append(_v4(str(src), str(dst)))
        src6 = ipaddress.IPv6Address(rng.getrandbits(128))
        dst6 = ipaddress.IPv6Address((0x20010DB8 << 96 | rng.choice([2, 3]) << 80) | rng.getrandbits(72))
        packets.append(_v6(str(src6), str(dst6)))
    hits = set()
    for packet in packets:
        want = expected(packet, TABLE)
        assert steerer.program.test_run(_frame(packet)) == want, packet.hex()
        hits.add(want)
    assert {0, 1, 2, 3} <= hits  # every owner, and hashes, were exercised


def test_unknown_destinations_hash_symmetrically() -> None:
    there, back = _v4("198.51.100.1", "203.0.113.9"), _v4("203.0.113.9", "198.51.100.1")
    assert expected(there, {}) == expected(back, {})
    assert len({expected(_v4("198.51.100.1", f"203.0.113.{i}"), {}) for i in range(1, 60)}) > 8


def test_prefix_keys_cover_a_range_exactly() -> None:
    rng = random.Random(7)
    for family, width in ((4, 32), (6, 128)):  # the one-prefix shortcut agrees with the general way
        cls = ipaddress.IPv4Network if family == 4 else ipaddress.IPv6Network
        for _ in range(200):
            length = rng.randrange(1, width + 1)
            net = cls((rng.getrandbits(width) >> (width - length) << (width - length), length))
            keys = prefix_keys(family, int(net.network_address), int(net.broadcast_address))
            head, off = (bytes(10) + b"\xff\xff", 96) if family == 4 else (b"", 0)
            assert keys == [(off + length, head + net.network_address.packed)]
    keys = prefix_keys(4, int(ipaddress.IPv4Address("10.0.0.1")), int(ipaddress.IPv4Address("10.0.0.6")))
    assert sorted(length - 96 for length, _ in keys) == [31, 31, 32, 32]  # .1, .2-.3, .4-.5, .6
    # IPv6 "any" leaves out the IPv4-mapped /96, whose entries are IPv4's
    any6 = prefix_keys(6, 0, (1 << 128) - 1)
    assert len(any6) == 96 and (96, bytes(10) + b"\xff\xff" + bytes(4)) not in any6
    assert {length for length, _ in any6} == set(range(1, 97))


def _ts(first: str, last: str) -> TrafficSelector:
    return TrafficSelector(7, 0, 0, 65535, ipaddress.IPv4Address(first), ipaddress.IPv4Address(last))


def test_publishers_keep_their_own_entries(steerer: Steerer) -> None:
    for key in steerer.map.all_keys():
        steerer.map.delete(key)
    owner = tunsteer.destination_owner
    a, b = Publisher(steerer.map, 0), Publisher(steerer.map, 1)
    a.set_site(prefix_keys(4, 0x0A020000, 0x0A02FFFF))  # 10.2.0.0/16: a site-to-site peer of worker 0
    dial_up = [_ts("10.3.0.0", "10.3.0.255")]
    b.sa_change(dial_up, 1)  # worker 1 holds a dial-up SA to 10.3.0.0/24 ...
    b.sa_change(dial_up, 1)  # ... and its rekeyed successor
    assert owner(steerer.map, _v4("10.1.0.1", "10.2.3.4")) == 0
    assert owner(steerer.map, _v4("10.1.0.1", "10.3.0.4")) == 1
    assert owner(steerer.map, _v4("10.1.0.1", "10.4.0.4")) is None
    b.sa_change(dial_up, -1)  # the old SA goes: the successor still leads there
    assert owner(steerer.map, _v4("10.1.0.1", "10.3.0.4")) == 1
    # the dial-up peer comes back through worker 0 before worker 1's SA is gone: worker 1's withdrawal
    # leaves worker 0's entry alone
    a.sa_change(dial_up, 1)
    b.sa_change(dial_up, -1)
    assert owner(steerer.map, _v4("10.1.0.1", "10.3.0.4")) == 0
    # an SA inside worker 0's site prefix, then the policy removed: the SA's prefix stays
    inner = [_ts("10.2.7.0", "10.2.7.255")]
    a.sa_change(inner, 1)
    a.set_site([])
    assert owner(steerer.map, _v4("10.1.0.1", "10.2.7.4")) == 0
    assert owner(steerer.map, _v4("10.1.0.1", "10.2.3.4")) is None
    # a restarted worker 0 removes what its predecessor published
    assert Publisher(steerer.map, 0).purge() == 2
    assert steerer.map.all_keys() == []
    assert a.failed is None and b.failed is None


def test_a_refused_program_raises_with_the_verifiers_log() -> None:
    a = bpf.Asm()
    a.exit()  # r0 never set
    with pytest.raises(bpf.BpfError) as info:
        bpf.Program.load(bpf.PROG_TYPE_SOCKET_FILTER, a.assemble())
    assert "R0" in info.value.log and "R0" in str(info.value)

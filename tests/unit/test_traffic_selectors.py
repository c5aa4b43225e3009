"""Traffic selectors keep integer addresses (issue 13: no ``ipaddress`` objects per SA on the set-up path),
and narrowing hands back the proposed selector itself when policy allows all of it."""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv6Address

import pytest

from ikegate.ike.core import ts as tsmod
from ikegate.ike.wire.registry import TsType
from ikegate.ike.wire.v2 import TrafficSelector, TSi, decode_payloads, encode_payloads


def net(text: str, proto: int = 0, low: int = 0, high: int = 65535) -> TrafficSelector:
    return tsmod.from_network(ipaddress.ip_network(text), proto, low, high)


def test_decoded_selectors_are_integers_and_give_address_objects_for_display() -> None:
    v4 = TrafficSelector(TsType.TS_IPV4_ADDR_RANGE, 17, 53, 53, IPv4Address("10.0.0.0"), IPv4Address("10.0.0.255"))
    v6 = TrafficSelector(TsType.TS_IPV6_ADDR_RANGE, 0, 0, 65535, IPv6Address("2001:db8::"),
                         IPv6Address("2001:db8::ffff"))
    first, body = encode_payloads([TSi([v4, v6])])
    got = decode_payloads(first, body)[0]
    assert isinstance(got, TSi) and got.selectors == [v4, v6]
    a, b = got.selectors
    assert (type(a.start), a.start, a.end, a.family) == (int, 0x0A000000, 0x0A0000FF, 4)
    assert (b.start_addr, b.end_addr, b.family) == (IPv6Address("2001:db8::"), IPv6Address("2001:db8::ffff"), 6)
    assert tsmod.text(a) == "10.0.0.0/24 17/53-53"
    assert hash(a) == hash(v4) and len({a, v4, b}) == 2
    assert decode_payloads(first, body)[0].selectors[0] is a  # one parse per distinct payload body


def test_constructor_refuses_addresses_of_two_versions_and_encoding_checks_the_family() -> None:
    with pytest.raises(ValueError):
        TrafficSelector(7, 0, 0, 65535, IPv4Address("10.0.0.1"), IPv6Address("::1"))
    with pytest.raises(ValueError):
        encode_payloads([TSi([TrafficSelector(7, 0, 0, 65535, IPv6Address("::"), IPv6Address("::1"))])])


def test_narrowing_returns_the_proposed_selector_when_it_lies_inside_policy() -> None:
    proposed = net("10.1.1.0/24")
    assert tsmod.narrow([proposed], [net("10.1.0.0/16")])[0] is proposed
    # wider than policy: a new, narrowed selector
    wide = net("10.0.0.0/8")
    assert tsmod.narrow([wide], [net("10.1.0.0/16")]) == [net("10.1.0.0/16")]
    # a protocol only policy names: narrowed to it, not the proposal itself
    udp = tsmod.intersect(proposed, net("10.1.0.0/16", 17))
    assert udp == net("10.1.1.0/24", 17) and udp is not proposed
    # no shared protocol, family or range: nothing
    assert tsmod.intersect(net("10.1.1.0/24", 6), net("10.1.0.0/16", 17)) is None
    assert tsmod.intersect(net("10.1.1.0/24"), net("2001:db8::/32")) is None
    assert tsmod.intersect(net("10.1.1.0/24"), net("10.2.0.0/16")) is None

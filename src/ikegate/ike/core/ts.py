"""Traffic selector arithmetic: narrowing (RFC 7296 §2.9) and containment.

A selector is a range of addresses, a protocol (0 = any) and a port range. Narrowing intersects what the
peer proposes with what local policy allows, pair by pair; an empty result means TS_UNACCEPTABLE.
"""

from __future__ import annotations

import ipaddress

from ikegate.ike.wire.registry import TsType
from ikegate.ike.wire.v2 import TrafficSelector

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def from_network(net: IPNetwork, protocol: int = 0, port_low: int = 0, port_high: int = 65535) -> TrafficSelector:
    """A selector covering a whole prefix."""
    ts_type = TsType.TS_IPV4_ADDR_RANGE if net.version == 4 else TsType.TS_IPV6_ADDR_RANGE
    return TrafficSelector(ts_type, protocol, port_low, port_high, int(net.network_address),
                           int(net.broadcast_address), net.version)


def intersect(a: TrafficSelector, b: TrafficSelector) -> TrafficSelector | None:
    """The selector both allow, or None when they share nothing."""
    if a.ts_type != b.ts_type or a.family != b.family:
        return None
    if a.ip_protocol and b.ip_protocol and a.ip_protocol != b.ip_protocol:
        return None
    start = a.start if a.start > b.start else b.start
    end = a.end if a.end < b.end else b.end
    low = a.start_port if a.start_port > b.start_port else b.start_port
    high = a.end_port if a.end_port < b.end_port else b.end_port
    if start > end or low > high:
        return None
    if start == a.start and end == a.end and low == a.start_port and high == a.end_port \
            and (a.ip_protocol or not b.ip_protocol):
        return a  # ``a`` lies inside ``b`` (the usual case: a peer proposes what policy allows)
    return TrafficSelector(a.ts_type, a.ip_protocol or b.ip_protocol, low, high, start, end, a.family)


def narrow(proposed: list[TrafficSelector], allowed: list[TrafficSelector]) -> list[TrafficSelector]:
    """Every non-empty intersection of a proposed and an allowed selector, without duplicates."""
    out: list[TrafficSelector] = []
    for p in proposed:
        for a in allowed:
            ts = intersect(p, a)
            if ts is not None and ts not in out:
                out.append(ts)
    return out


def contains(outer: TrafficSelector, inner: TrafficSelector) -> bool:
    """True when ``inner`` lies wholly inside ``outer``."""
    return intersect(outer, inner) == inner


def all_within(inner: list[TrafficSelector], outer: list[TrafficSelector]) -> bool:
    """True when each selector of ``inner`` lies inside some selector of ``outer``."""
    return all(any(contains(o, i) for o in outer) for i in inner)


def text(ts: TrafficSelector) -> str:
    """``192.0.2.0/24 0/0-65535`` style text as ``display ipsec sa`` prints flows."""
    try:
        nets = list(ipaddress.summarize_address_range(ts.start_addr, ts.end_addr))
    except (TypeError, ValueError):
        nets = []
    addr = str(nets[0]) if len(nets) == 1 else f"{ts.start_addr}-{ts.end_addr}"
    return f"{addr} {ts.ip_protocol}/{ts.start_port}-{ts.end_port}"

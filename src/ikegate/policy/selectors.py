"""ACL rules as IKEv2 traffic selectors, for both address families.

The negotiation (:mod:`ikegate.gateway.translate`, what a policy proposes) and the security policy
database (:mod:`ikegate.dataplane.spd`, what a packet matches and what its ACQUIRE proposes) both turn
ACL rules into selectors. They do it through this one module so that a rule can never be negotiated as
one thing and enforced as another, whichever ACL family (``acl number`` or ``acl ipv6 number``) it
comes from.
"""

from __future__ import annotations

import ipaddress

from ikegate.ike.core.ts import from_network
from ikegate.ike.wire.v2 import TrafficSelector
from ikegate.policy.model import Acl, AclAddress, AclRule, IPNetwork

_ANY: dict[int, IPNetwork] = {4: ipaddress.IPv4Network("0.0.0.0/0"), 6: ipaddress.IPv6Network("::/0")}


def rule_family(acl: Acl | None, rule: AclRule) -> int | None:
    """The address family a rule selects, or None when it does not say.

    Every rule of an IPv6 ACL is IPv6, even ``rule permit ipv6`` without addresses. An IPv4 ACL rule is
    the family of its addresses; an address-less one (``rule permit ip``) names no family, and each user
    decides: the SPD lets it match either, a negotiation proposes IPv4.
    """
    if acl is not None and acl.ipv6:
        return 6
    for side in (rule.source, rule.destination):
        if side is not None:
            return side.address.version
    return None


def side_selector(addr: AclAddress | None, family: int, protocol: int = 0, low: int = 0,
                  high: int = 65535) -> TrafficSelector:
    """One side of a rule (``None`` is ``any``: the whole family) as a selector."""
    return from_network(addr.network if addr is not None else _ANY[family], protocol, low, high)


def rule_selectors(rule: AclRule, family: int) -> tuple[TrafficSelector, TrafficSelector]:
    """A rule's (source, destination) selectors in ``family``: the local and remote side of its flow."""
    proto = rule.ip_protocol
    sp, dp = rule.source_port, rule.destination_port
    return (side_selector(rule.source, family, proto, sp.low, sp.high),
            side_selector(rule.destination, family, proto, dp.low, dp.high))

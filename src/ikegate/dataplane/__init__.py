"""The dataplane: security policy database, userspace ESP (RFC 4303/3948) and the backend interface.

Everything here is sans-I/O. The gateway installs Child SAs and arms traps through
:class:`~ikegate.dataplane.backend.Backend`; the I/O layer feeds packets to
:class:`~ikegate.dataplane.backend.UserspaceBackend` and carries out the actions it returns.
"""

from ikegate.dataplane.backend import (
    Acquire,
    Action,
    Backend,
    Bypass,
    Event,
    HardExpire,
    Send,
    SoftExpire,
    UserspaceBackend,
)
from ikegate.dataplane.esp import (
    ChildSaPair,
    EspError,
    InboundEsp,
    OutboundEsp,
    classify_4500,
    ike_encapsulate,
    is_keepalive,
    udp_encapsulate,
)
from ikegate.dataplane.packet import IpInfo, PacketError, echo_reply_for, echo_request, parse_ip
from ikegate.dataplane.replay import ReplayWindow
from ikegate.dataplane.spd import DYNAMIC_RULE, PolicyKey, Spd, SpdMatch, Trap

__all__ = [
    "DYNAMIC_RULE",
    "Acquire",
    "Action",
    "Backend",
    "Bypass",
    "ChildSaPair",
    "EspError",
    "Event",
    "HardExpire",
    "InboundEsp",
    "IpInfo",
    "OutboundEsp",
    "PacketError",
    "PolicyKey",
    "ReplayWindow",
    "Send",
    "SoftExpire",
    "Spd",
    "SpdMatch",
    "Trap",
    "UserspaceBackend",
    "classify_4500",
    "echo_reply_for",
    "echo_request",
    "ike_encapsulate",
    "is_keepalive",
    "parse_ip",
    "udp_encapsulate",
]

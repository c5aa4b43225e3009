"""The userspace backend end to end: two gateways in memory, LAN packets through ESP-in-UDP and back."""

from __future__ import annotations

import ipaddress
import os
import struct
from collections import Counter
from collections.abc import Sequence

import pytest

from ikegate.dataplane.backend import Acquire, Bypass, HardExpire, Send, SoftExpire, UserspaceBackend
from ikegate.dataplane.esp import ChildSaPair, OutboundEsp
from ikegate.dataplane.packet import UDP, build_ipv4, build_ipv6, echo_request, parse_ip
from ikegate.ike.core.child import ChildSa
from ikegate.ike.core.config import ChildSaConfig, Mode
from ikegate.ike.core.ts import from_network
from ikegate.ike.crypto import EncrAlg, IntegAlg, encr_alg, integ_alg
from ikegate.ike.wire.registry import EncrId, IntegId
from ikegate.ike.wire.v2 import TrafficSelector
from ikegate.policy.model import Acl, AclAddress, AclRule, Config, Interface, IpsecPolicy

GW_A, GW_B = "192.0.2.1", "198.51.100.1"
PEER_OF_A, PEER_OF_B = (GW_B, 4500), (GW_A, 4500)
GCM = encr_alg(EncrId.AES_GCM_16, 256)
CBC = encr_alg(EncrId.AES_CBC, 128)
SHA256 = integ_alg(IntegId.HMAC_SHA2_256_128)


def a(text: str) -> AclAddress:
    addr, wildcard = text.split()
    return AclAddress(ipaddress.ip_address(addr), ipaddress.ip_address(wildcard))


def ts(net: str) -> TrafficSelector:
    return from_network(ipaddress.ip_network(net))


def gateway_config(local: str, remote: str, wan: str) -> Config:
    cfg = Config()
    cfg.interfaces["GE1"] = Interface("GE1", ipv4=[ipaddress.IPv4Interface(f"{wan}/24")], ipsec_policy="map")
    cfg.acls[3000] = Acl(3000, [AclRule(5, source=a(local), destination=a(remote))])
    cfg.ipsec_policies[("map", 10)] = IpsecPolicy("map", 10, acl=3000, ike_peer="peer")
    return cfg


def children(encr: EncrAlg, integ: IntegAlg | None, local: list[TrafficSelector], remote: list[TrafficSelector],
             *, mode: Mode = Mode.TUNNEL, lifetime_kb: int = 0, spis: tuple[int, int] = (0x1001, 0x2002),
             ) -> tuple[ChildSa, ChildSa]:
    """Both ends of one negotiated Child SA, as each gateway's IKE engine would hand it over."""
    keys = [os.urandom(encr.keymat_size) for _ in range(2)]
    ikeys = [os.urandom(integ.key_size) if integ else b"" for _ in range(2)]
    cfg = ChildSaConfig("map", 10, [], local, remote, mode=mode, lifetime_kb=lifetime_kb)
    sa, sb = spis
    ca = ChildSa(sa, sb, cfg, encr, integ, keys[0], ikeys[0], keys[1], ikeys[1], local, remote, mode, True,
                 0.0, None, 3600.0, udp_encap=True)
    cb = ChildSa(sb, sa, cfg, encr, integ, keys[1], ikeys[1], keys[0], ikeys[0], remote, local, mode, False,
                 0.0, None, 3600.0, udp_encap=True)
    return ca, cb


def lan_packet(src: str = "10.1.0.1", dst: str = "10.2.0.1", size: int = 100) -> bytes:
    payload = struct.pack("!HHHH", 5000, 53, size - 28, 0) + bytes(size - 28)
    build = build_ipv4 if ipaddress.ip_address(src).version == 4 else build_ipv6
    return build(src, dst, UDP, payload)


@pytest.fixture
def gateways() -> tuple[UserspaceBackend, UserspaceBackend]:
    ga = UserspaceBackend(gateway_config("10.1.0.0 0.0.255.255", "10.2.0.0 0.0.255.255", GW_A))
    gb = UserspaceBackend(gateway_config("10.2.0.0 0.0.255.255", "10.1.0.0 0.0.255.255", GW_B))
    return ga, gb


def up(ga: UserspaceBackend, gb: UserspaceBackend, encr: EncrAlg = GCM, integ: IntegAlg | None = None,
       **kw: object) -> tuple[ChildSa, ChildSa]:
    ca, cb = children(encr, integ, [ts("10.1.0.0/16")], [ts("10.2.0.0/16")], **kw)  # type: ignore[arg-type]
    assert ga.install_sa(ca, PEER_OF_A, local=GW_A) == []
    assert gb.install_sa(cb, PEER_OF_B, local=GW_B) == []
    return ca, cb


def only_send(actions: Sequence[object]) -> Send:
    assert len(actions) == 1 and isinstance(actions[0], Send), actions
    return actions[0]


# ---------------------------------------------------------------------------------------- traffic


@pytest.mark.parametrize(("encr", "integ"), [(GCM, None), (CBC, SHA256)], ids=["gcm", "cbc"])
def test_both_directions(gateways: tuple[UserspaceBackend, UserspaceBackend], encr: EncrAlg,
                         integ: IntegAlg | None) -> None:
    ga, gb = gateways
    up(ga, gb, encr, integ)
    packet = lan_packet()
    send = only_send(ga.from_lan(packet, 1.0))
    assert send.remote == PEER_OF_A and send.udp_encap
    assert struct.unpack_from("!I", send.payload)[0] == 0x2002
    assert gb.from_wan(send.payload, PEER_OF_B, 1.0) == packet
    reply = lan_packet("10.2.0.1", "10.1.0.1", 1400)
    back = only_send(gb.from_lan(reply, 1.0))
    assert ga.from_wan(back.payload, PEER_OF_A, 1.0) == reply
    pa = ga.sa(0x1001)
    assert pa is not None and (pa.outbound.packets, pa.inbound.packets) == (1, 1)
    assert (pa.outbound.bytes, pa.inbound.bytes) == (100, 1400)
    assert not ga.drops and not gb.drops
    assert ga.poll(2.0) == [] and len(ga) == 1


def test_unprotected_traffic_bypasses(gateways: tuple[UserspaceBackend, UserspaceBackend]) -> None:
    ga, _ = gateways
    packet = lan_packet("10.1.0.1", "8.8.8.8")
    assert ga.from_lan(packet, 0.0) == [Bypass(packet)]
    assert ga.from_lan(b"\x45garbage", 0.0) == []
    assert ga.drops["malformed"] == 1


def test_acquire_hold_and_release(gateways: tuple[UserspaceBackend, UserspaceBackend]) -> None:
    ga, gb = gateways
    first, second = lan_packet(size=60), lan_packet(size=70)
    actions = ga.from_lan(first, 0.0)
    assert len(actions) == 1 and isinstance(actions[0], Acquire)
    acq = actions[0]
    assert (acq.policy_key, acq.rule, acq.interface) == (("map", 10), 5, "GE1")
    assert acq.local == ts("10.1.0.0/16") and acq.remote == ts("10.2.0.0/16")
    assert acq.packet_info == parse_ip(first)
    assert ga.from_lan(second, 0.3) == []  # held, and no second ACQUIRE within a second
    ca, cb = children(GCM, None, [ts("10.1.0.0/16")], [ts("10.2.0.0/16")])
    gb.install_sa(cb, PEER_OF_B, local=GW_B)
    released = ga.install_sa(ca, PEER_OF_A, local=GW_A, now=0.5)
    assert [type(x) for x in released] == [Send, Send]
    assert [gb.from_wan(s.payload, PEER_OF_B, 0.5) for s in released if isinstance(s, Send)] == [first, second]


def test_remove_trap_stops_acquires(gateways: tuple[UserspaceBackend, UserspaceBackend]) -> None:
    ga, _ = gateways
    ga.remove_trap(("map", 10))
    assert ga.from_lan(lan_packet(), 0.0) == []
    ga.install_trap(("map", 10))
    assert isinstance(ga.from_lan(lan_packet(), 5.0)[0], Acquire)


def test_drops_are_counted(gateways: tuple[UserspaceBackend, UserspaceBackend]) -> None:
    ga, gb = gateways
    up(ga, gb)
    send = only_send(ga.from_lan(lan_packet(), 0.0))
    assert gb.from_wan(send.payload, PEER_OF_B, 0.0) is not None
    assert gb.from_wan(send.payload, PEER_OF_B, 0.0) is None  # replayed
    fresh = only_send(ga.from_lan(lan_packet(), 0.0)).payload
    tampered = fresh[:-1] + bytes([fresh[-1] ^ 1])
    assert gb.from_wan(tampered, PEER_OF_B, 0.0) is None
    assert gb.from_wan(b"\x00\x00\x99\x99" + bytes(40), PEER_OF_B, 0.0) is None  # nobody's SPI
    assert gb.from_wan(b"\x00\x00\x20", PEER_OF_B, 0.0) is None
    pb = gb.sa(0x2002)
    assert pb is not None and pb.inbound.drops == {"replay": 1, "icv": 1}
    assert gb.drops == {"spi": 1, "short": 1}


def test_inbound_packet_outside_selectors(gateways: tuple[UserspaceBackend, UserspaceBackend]) -> None:
    """A peer with valid keys still may not inject traffic its SA was not negotiated for."""
    ga, gb = gateways
    up(ga, gb)
    pa = ga.sa(0x1001)
    assert pa is not None
    spoofed = pa.outbound.seal(lan_packet("10.9.0.1", "10.2.0.1"), 4)
    assert gb.from_wan(spoofed, PEER_OF_B, 0.0) is None
    v6_in_v4 = pa.outbound.seal(lan_packet("10.1.0.1", "10.2.0.1"), 41)  # next header lies about the family
    assert gb.from_wan(v6_in_v4, PEER_OF_B, 0.0) is None
    raw_udp = pa.outbound.seal(b"not ip", 17)
    assert gb.from_wan(raw_udp, PEER_OF_B, 0.0) is None
    dummy = pa.outbound.seal(b"", 59)
    assert gb.from_wan(dummy, PEER_OF_B, 0.0) is None
    pb = gb.sa(0x2002)
    assert pb is not None and pb.inbound.drops == {"policy": 1, "protocol": 2, "dummy": 1}


def test_byte_lifetime_events_once(gateways: tuple[UserspaceBackend, UserspaceBackend]) -> None:
    ga, gb = gateways
    up(ga, gb, lifetime_kb=10)  # soft at 9 KiB, hard at 10 KiB
    packet = lan_packet(size=1024)
    events: list[object] = []
    sent = 0
    for i in range(12):
        actions = ga.from_lan(packet, float(i))
        sent += len(actions)
        events += ga.poll(float(i))
    assert sent == 10  # the tenth KiB reaches the hard limit; nothing goes out after it
    assert events == [SoftExpire(0x1001), HardExpire(0x1001)]
    pa = ga.sa(0x1001)
    assert pa is not None and pa.outbound.drops["expired"] == 2
    assert ga.delete_sa(0x1001) and not ga.delete_sa(0x1001)
    assert isinstance(ga.from_lan(packet, 20.0)[0], Acquire)  # the trap is back in charge


def test_inbound_lifetime_reported(gateways: tuple[UserspaceBackend, UserspaceBackend]) -> None:
    ga, gb = gateways
    up(ga, gb, lifetime_kb=2)
    for i in range(2):
        send = only_send(ga.from_lan(lan_packet(size=1024), float(i)))
        gb.from_wan(send.payload, PEER_OF_B, float(i))
    assert gb.poll(3.0) == [SoftExpire(0x2002), HardExpire(0x2002)]
    assert gb.poll(4.0) == []


def test_delete_sa_then_unknown_spi(gateways: tuple[UserspaceBackend, UserspaceBackend]) -> None:
    ga, gb = gateways
    up(ga, gb)
    send = only_send(ga.from_lan(lan_packet(), 0.0))
    assert gb.delete_sa(0x2002)
    assert gb.from_wan(send.payload, PEER_OF_B, 0.0) is None
    assert gb.drops["spi"] == 1


def test_deleted_sas_keep_their_totals(gateways: tuple[UserspaceBackend, UserspaceBackend]) -> None:
    """Retiring an SA folds its counters into the backend's totals; a silent one (a delete-all retires
    thousands) adds no key and makes no drop Counter on the way."""
    ga, gb = gateways
    up(ga, gb)
    send = only_send(ga.from_lan(lan_packet(), 0.0))
    assert gb.from_wan(send.payload, PEER_OF_B, 0.0) is not None
    assert gb.from_wan(send.payload, PEER_OF_B, 0.0) is None  # replayed: one drop on the SA
    before = dict(gb.totals())
    assert gb.delete_sa(0x2002)
    assert dict(gb.totals()) == before == {("packets", "in"): 1, ("bytes", "in"): 100, ("drops", "replay"): 1}
    assert gb.sa(0x2002) is None
    _, cb = children(GCM, None, [ts("10.1.0.0/16")], [ts("10.2.0.0/16")], spis=(0x1003, 0x2003))
    assert gb.install_sa(cb, PEER_OF_B, local=GW_B) == []
    pair = gb.sa(0x2003)
    assert pair is not None
    assert gb.delete_sa(0x2003)
    assert dict(gb.totals()) == before
    assert pair.inbound.drops_seen == {} and not isinstance(pair.inbound.drops_seen, Counter)  # none made


def test_rekey_switches_outbound_to_newest(gateways: tuple[UserspaceBackend, UserspaceBackend]) -> None:
    ga, gb = gateways
    up(ga, gb)
    ca2, cb2 = children(GCM, None, [ts("10.1.0.0/16")], [ts("10.2.0.0/16")], spis=(0x3003, 0x4004))
    ga.install_sa(ca2, PEER_OF_A, local=GW_A)
    gb.install_sa(cb2, PEER_OF_B, local=GW_B)
    send = only_send(ga.from_lan(lan_packet(), 0.0))
    assert struct.unpack_from("!I", send.payload)[0] == 0x4004
    assert gb.from_wan(send.payload, PEER_OF_B, 0.0) is not None
    old = ga.sa(0x1001)
    assert old is not None and old.outbound.packets == 0


def test_ipv6_tunnel() -> None:
    ga = UserspaceBackend(gateway_config("2001:db8:1:: ::ffff:ffff:ffff:ffff", "2001:db8:2:: ::ffff:ffff:ffff:ffff",
                                         GW_A))
    gb = UserspaceBackend(gateway_config("2001:db8:2:: ::ffff:ffff:ffff:ffff", "2001:db8:1:: ::ffff:ffff:ffff:ffff",
                                         GW_B))
    ca, cb = children(CBC, SHA256, [ts("2001:db8:1::/64")], [ts("2001:db8:2::/64")])
    ga.install_sa(ca, PEER_OF_A, local=GW_A)
    gb.install_sa(cb, PEER_OF_B, local=GW_B)
    ping = echo_request("2001:db8:1::5", "2001:db8:2::9", 1, 1, b"hello")
    send = only_send(ga.from_lan(ping, 0.0))
    assert gb.from_wan(send.payload, PEER_OF_B, 0.0) == ping


def test_transport_mode() -> None:
    ga = UserspaceBackend(gateway_config(f"{GW_A} 0.0.0.0", f"{GW_B} 0.0.0.0", GW_A))
    gb = UserspaceBackend(gateway_config(f"{GW_B} 0.0.0.0", f"{GW_A} 0.0.0.0", GW_B))
    ca, cb = children(GCM, None, [ts(f"{GW_A}/32")], [ts(f"{GW_B}/32")], mode=Mode.TRANSPORT)
    ga.install_sa(ca, PEER_OF_A, local=GW_A)
    gb.install_sa(cb, PEER_OF_B, local=GW_B)
    packet = build_ipv4(GW_A, GW_B, UDP, struct.pack("!HHHH", 500, 500, 12, 0) + b"data", ttl=9)
    send = only_send(ga.from_lan(packet, 0.0))
    pa = ga.sa(0x1001)
    assert pa is not None and pa.outbound.bytes == 12  # only the UDP datagram is carried
    got = gb.from_wan(send.payload, PEER_OF_B, 0.0)
    assert got is not None
    assert parse_ip(got)[:9] == parse_ip(packet)[:9] and got[20:] == packet[20:]


def test_install_pair_and_replace(gateways: tuple[UserspaceBackend, UserspaceBackend]) -> None:
    ga, _ = gateways
    ca, _ = children(GCM, None, [ts("10.1.0.0/16")], [ts("10.2.0.0/16")])
    pair = ChildSaPair.from_child(ca)
    ga.install_pair(pair, PEER_OF_A, policy=("map", 10))
    ga.install_pair(ChildSaPair.from_child(ca), PEER_OF_A, policy=("map", 10))  # same SPI: replaced
    assert len(ga) == 1 and ga.sa(0x1001) is not pair
    assert isinstance(ga.sa(0x1001).outbound, OutboundEsp)  # type: ignore[union-attr]


def test_open_wan_hands_over_the_parsed_header(gateways: tuple[UserspaceBackend, UserspaceBackend]) -> None:
    """The decrypting side parses each packet once: the header the selector check used comes back with the
    packet (the gateway routes on it), and ``from_wan`` is the same without it."""
    ga, gb = gateways
    up(ga, gb)
    packet = lan_packet(size=300)
    first, second = (only_send(ga.from_lan(packet, 1.0)).payload for _ in range(2))
    opened = gb.open_wan(first, PEER_OF_B, 1.0)
    assert opened is not None and opened == (packet, parse_ip(packet))
    assert gb.open_wan(first, PEER_OF_B, 1.0) is None  # a replay: dropped and counted as before
    assert gb.from_wan(second, PEER_OF_B, 1.0) == packet
    assert not gb.events  # nothing for the gateway to poll after ordinary traffic

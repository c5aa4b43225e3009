"""Traffic through the userspace ESP dataplane, in memory: pings, traps, selectors from the matched rule."""

from __future__ import annotations

import struct

import pytest

import ikegate.dataplane.backend
import ikegate.gateway.controller
from ikegate.dataplane.packet import build_ipv4, parse_ip
from ikegate.gateway.controller import Gateway
from ikegate.sad import IpsecSaEntry
from tests.protocol.netsim import Net, lab_config


def _lab(b2_extra: dict[str, str] | None = None) -> tuple[Net, Gateway, Gateway, Gateway]:
    net = Net()
    hq = net.add(Gateway(lab_config("hq")))
    b1 = net.add(Gateway(lab_config("branch1")))
    b2 = net.add(Gateway(lab_config("branch2", b2_extra)))
    for gw in (hq, b1, b2):
        gw.start(net.now)
    net.pump()
    return net, hq, b1, b2


def _replies(gw: Gateway) -> list[tuple[int, int]]:
    got: list[tuple[int, int]] = []
    gw.on_echo_reply = lambda ident, seq, now: got.append((ident, seq))
    return got


def test_ping_over_auto_tunnel_and_counters() -> None:
    net, hq, b1, b2 = _lab()
    got = _replies(b1)
    for seq in range(1, 4):
        b1.ping(net.now, "10.1.1.1", "10.0.0.1", 7, seq)
        net.pump()
    assert got == [(7, 1), (7, 2), (7, 3)]
    b1.sync_counters()
    child = next(e for e in b1.sad.entries() if isinstance(e, IpsecSaEntry))
    assert (child.packets_out, child.packets_in) == (3, 3)
    assert child.seq_out == 3 and child.bytes_out == 3 * 84
    esp = [d for d, src, dst in net.seen if src[1] == 4500 and d[:4] != bytes(4)]
    assert len(esp) == 6 and all(struct.unpack("!I", d[:4])[0] in (child.spi_in, child.spi_out) for d in esp)


def test_first_packet_of_traffic_based_policy_triggers_negotiation() -> None:
    net, hq, b1, b2 = _lab()
    got = _replies(b2)
    assert [e.phase for e in b2.sad.entries()] == []
    b2.ping(net.now, "10.1.2.1", "10.0.0.1", 9, 1)  # held while the tunnel comes up, then sent
    net.pump()
    assert sorted(e.phase for e in b2.sad.entries()) == [1, 2]
    assert got == [(9, 1)]
    child = next(e for e in b2.sad.entries() if isinstance(e, IpsecSaEntry))
    assert str(child.local_selectors[0].start) == "10.1.2.0" and str(child.remote_selectors[0].end) == "10.0.0.255"


def test_traffic_matching_no_rule_negotiates_nothing() -> None:
    net, hq, b1, b2 = _lab()
    b2.ping(net.now, "10.1.2.1", "10.9.9.9", 9, 1)
    b2.ping(net.now, "10.1.3.1", "10.0.0.1", 9, 2)
    net.pump()
    assert len(b2.sad) == 0 and b2.stats.lan_dropped == 2


def test_selectors_come_from_the_rule_the_flow_matched() -> None:
    rules = {" rule 5 permit ip source 10.1.2.0 0.0.0.255 destination 10.0.0.0 0.0.0.255":
             " rule 5 permit tcp source 10.1.2.0 0.0.0.255 destination 10.0.0.0 0.0.0.255 destination-port eq 80\n"
             " rule 10 permit udp source 10.1.2.0 0.0.0.255 destination 10.0.0.0 0.0.0.255 destination-port eq 53"}
    net, hq, b1, b2 = _lab(rules)
    udp = build_ipv4("10.1.2.7", "10.0.0.9", 17, struct.pack("!HHHH", 5353, 53, 8, 0))
    b2.from_lan(udp, net.now)
    net.pump()
    children = [e for e in b2.sad.entries() if isinstance(e, IpsecSaEntry)]
    assert len(children) == 1 and children[0].acl_rule == 10
    sel = children[0].remote_selectors[0]
    assert (sel.protocol, sel.port_low, sel.port_high) == (17, 53, 53)
    out = list(hq.lan_out)
    assert len(out) == 1 and parse_ip(out[0]).dst_port == 53  # delivered on HQ's protected side
    tcp = build_ipv4("10.1.2.7", "10.0.0.9", 6, struct.pack("!HHIIBBHHH", 4000, 80, 0, 0, 0x50, 2, 1024, 0, 0))
    b2.from_lan(tcp, net.now)
    net.pump()
    rules_up = sorted(e.acl_rule for e in b2.sad.entries() if isinstance(e, IpsecSaEntry))
    assert rules_up == [5, 10]  # a second IPsec SA under the same IKE SA, for the other rule


def test_reset_then_traffic_brings_traffic_based_tunnel_back() -> None:
    net, hq, b1, b2 = _lab()
    got = _replies(b2)
    b2.ping(net.now, "10.1.2.1", "10.0.0.1", 1, 1)
    net.pump()
    assert b2.reset_ike_sa(net.now) == 2
    net.step(30.0)
    assert len(b2.sad) == 0  # waits
    b2.ping(net.now, "10.1.2.1", "10.0.0.1", 1, 2)
    net.pump()
    assert sorted(e.phase for e in b2.sad.entries()) == [1, 2]
    assert got == [(1, 1), (1, 2)]
    # a phase-2 reset: the IKE SA stays; traffic negotiates only the IPsec SA
    child = next(e for e in b2.sad.entries() if isinstance(e, IpsecSaEntry))
    b2.reset_ike_sa(net.now, conn_id=child.conn_id)
    net.step(30.0)
    assert sorted(e.phase for e in b2.sad.entries()) == [1]
    b2.ping(net.now, "10.1.2.1", "10.0.0.1", 1, 3)
    net.pump()
    assert sorted(e.phase for e in b2.sad.entries()) == [1, 2] and got[-1] == (1, 3)


def test_tampered_esp_is_dropped_and_counted() -> None:
    net, hq, b1, b2 = _lab()
    b1.ping(net.now, "10.1.1.1", "10.0.0.1", 3, 1)
    packets = b1.datagrams_to_send()
    data, local, remote = packets[0]
    bad = bytearray(data)
    bad[-1] ^= 1
    hq.receive_datagram(bytes(bad), remote, local, net.now)
    hq.receive_datagram(data[:6], remote, local, net.now)
    hq.receive_datagram(data, remote, local, net.now)  # the genuine one still works
    hq.receive_datagram(data, remote, local, net.now)  # and its replay is refused
    assert hq.stats.esp_dropped == 3
    assert len(hq.datagrams_to_send()) == 1  # one echo reply


def test_a_decrypted_packet_is_parsed_once_and_reaches_the_lan(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decrypting gateway parses each inner packet once (the backend's selector check and the
    controller's delivery share the parse); a packet for a host goes to ``lan_out`` as it was sent."""
    net, hq, b1, _b2 = _lab()
    b1.ping(net.now, "10.1.1.1", "10.0.0.1", 7, 1)  # brings the auto tunnel's traffic up
    net.pump()
    packet = build_ipv4("10.1.1.5", "10.0.0.20", 17, struct.pack("!HHHH", 4000, 5000, 12, 0) + b"abcd")
    b1.from_lan(packet, net.now)
    wire = b1.datagrams_to_send()
    assert len(wire) == 1
    calls: list[bytes] = []

    def counted(data: bytes) -> object:
        calls.append(data)
        return parse_ip(data)

    for module in (ikegate.dataplane.backend, ikegate.gateway.controller):
        monkeypatch.setattr(module, "parse_ip", counted)
    data, src, dst = wire[0]
    hq.receive_datagram(data, dst, src, net.now)
    assert list(hq.lan_out) == [packet]
    assert calls == [packet]

"""When ESP travels raw (IP protocol 50) and when in UDP 4500, decided in memory for both IKE versions.

The rule: ESP-in-UDP exactly when NAT detection finds a NAT, or when one end cannot carry raw ESP (its I/O
layer opened no raw socket): that end then fakes its NAT-D hash, as strongSwan's ``encap = yes`` does,
so both ends agree (IKEv2 floats to 4500; IKEv1 negotiates UDP-Encapsulated-Tunnel, mode 3).
"""

from __future__ import annotations

import struct

import pytest

from ikegate.gateway.controller import Gateway
from ikegate.ike.v1.sa import IsakmpSa
from ikegate.ike.v2.sa import IkeSa
from ikegate.sad import IkeSaEntry, IpsecSaEntry
from tests.protocol.netsim import Net, lab_config

V1 = {" remote-address 127.0.0.11": " remote-address 127.0.0.11\n undo version 2"}
P1 = {" encryption-algorithm aes-gcm-256\n dh group31": " encryption-algorithm aes-256\n dh group14"}


def _pair(version: int, raw_hq: bool, raw_branch: bool, nat: bool = False) -> tuple[Net, Gateway, Gateway]:
    net = Net()
    if nat:
        net.nat = {"127.0.0.12": "203.0.113.5"}
    hq = Gateway(lab_config("hq", P1 if version == 1 else None))
    br = Gateway(lab_config("branch1", {**P1, **V1} if version == 1 else None))
    hq.raw_esp, br.raw_esp = raw_hq, raw_branch  # what the I/O layer reports after opening its sockets
    net.add(hq)
    net.add(br)
    if nat:
        net.gateways["203.0.113.5"] = br
    br.start(net.now)
    net.pump()
    return net, hq, br


def _ping(net: Net, br: Gateway, count: int = 3) -> list[tuple[int, int]]:
    got: list[tuple[int, int]] = []
    br.on_echo_reply = lambda ident, seq, now: got.append((ident, seq))
    for seq in range(1, count + 1):
        br.ping(net.now, "10.1.1.1", "10.0.0.1", 5, seq)
        net.pump()
    return got


def _child(gw: Gateway) -> IpsecSaEntry:
    return next(e for e in gw.sad.entries() if isinstance(e, IpsecSaEntry))


def _udp_esp(net: Net) -> list[bytes]:
    return [d for d, src, _dst in net.seen if src[1] == 4500 and d[:4] != bytes(4) and d != b"\xff"]


def _engine_children(gw: Gateway) -> list[bool]:
    return [c.udp_encap for sa in gw.engines() if isinstance(sa, IkeSa | IsakmpSa) for c in sa.children.values()]


@pytest.mark.parametrize("version", [1, 2])
def test_no_nat_and_raw_esp_on_both_ends_sends_protocol_50(version: int) -> None:
    net, hq, br = _pair(version, raw_hq=True, raw_branch=True)
    assert _ping(net, br) == [(5, 1), (5, 2), (5, 3)]
    # Six ESP packets crossed as raw IP protocol 50, none in UDP; IKE never left port 500.
    assert len(net.seen_raw) == 6 and _udp_esp(net) == []
    spis = {struct.unpack("!I", p[:4])[0] for p, _s, _d in net.seen_raw}
    assert spis == {_child(br).spi_in, _child(br).spi_out}
    assert all(src[1] == 500 and dst[1] == 500 for _d, src, dst in net.seen)
    for gw in (hq, br):
        assert not _child(gw).udp_encap  # `display ipsec sa` shows what is carried
        assert _engine_children(gw) == [False]  # IKEv1: Tunnel mode (1) negotiated, not mode 3


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize(("raw_hq", "raw_branch"), [(True, False), (False, True), (False, False)])
def test_an_end_without_raw_esp_makes_both_encapsulate(version: int, raw_hq: bool, raw_branch: bool) -> None:
    net, hq, br = _pair(version, raw_hq=raw_hq, raw_branch=raw_branch)
    assert _ping(net, br) == [(5, 1), (5, 2), (5, 3)]
    assert net.seen_raw == [] and len(_udp_esp(net)) == 6
    for gw in (hq, br):
        assert _child(gw).udp_encap
        assert _engine_children(gw) == [True]  # IKEv1: UDP-Encapsulated-Tunnel (3) on both ends
        ike = next(e for e in gw.sad.entries() if isinstance(e, IkeSaEntry))
        assert ike.local_port == 4500 or ike.peer_port == 4500  # IKE floated to the NAT-T port
    # A faked NAT is no real NAT: nobody sends NAT keepalives for it.
    net.step(60.0)
    assert not [d for d, _s, _t in net.seen if d == b"\xff"]


@pytest.mark.parametrize("version", [1, 2])
def test_a_real_nat_encapsulates_although_both_ends_have_raw_esp(version: int) -> None:
    net, hq, br = _pair(version, raw_hq=True, raw_branch=True, nat=True)
    assert _ping(net, br) == [(5, 1), (5, 2), (5, 3)]
    assert net.seen_raw == [] and len(_udp_esp(net)) == 6
    assert _child(hq).udp_encap and _child(br).udp_encap


def test_raw_esp_from_an_unknown_spi_or_short_is_dropped_without_harm() -> None:
    net, hq, br = _pair(2, raw_hq=True, raw_branch=True)
    before = hq.stats.esp_dropped
    hq.receive_esp(b"\x00\x00\x01\x00" + bytes(40), "127.0.0.12", net.now)
    hq.receive_esp(b"\x01", "127.0.0.12", net.now)
    assert hq.stats.esp_dropped == before + 2
    assert _ping(net, br) == [(5, 1), (5, 2), (5, 3)]  # the SA is untouched


@pytest.mark.parametrize("version", [1, 2])
def test_a_nat_mapping_change_moves_the_ike_sa_and_its_esp(version: int) -> None:
    """The NAT in front of the branch maps its 4500 to another outside port (its old mapping timed out):
    HQ learns the new port from the branch's next authenticated IKE message (its periodic DPD here) and
    sends IKE and ESP there (RFC 7296 §2.23): the SA database shows it and pings from HQ's side pass.
    Before, the engine moved but the database and the ESP of the Child SAs stayed on the old port."""
    net = Net()
    net.nat = {"127.0.0.12": "203.0.113.5"}
    dpd = {" remote-address 127.0.0.11": " remote-address 127.0.0.11\n dpd type periodic\n dpd idle-time 10"}
    hq = net.add(Gateway(lab_config("hq", P1 if version == 1 else None)))
    br = net.add(Gateway(lab_config("branch1", {**P1, **V1, **dpd} if version == 1 else dpd)))
    net.gateways["203.0.113.5"] = br
    br.start(net.now)
    net.pump()
    assert _ping(net, br) == [(5, 1), (5, 2), (5, 3)]
    ike = next(e for e in hq.sad.entries() if isinstance(e, IkeSaEntry))
    assert (str(ike.peer_address), ike.peer_port) == ("203.0.113.5", 4500)
    net.nat_ports = {4500: 61000}
    net.step(30.0)  # the branch's DPD goes out through the new mapping
    ike = next(e for e in hq.sad.entries() if isinstance(e, IkeSaEntry))
    assert ike.peer_port == 61000 and _child(hq).peer_port == 61000
    hq.ping(net.now, "10.0.0.1", "10.1.1.1", 7, 1)  # HQ's own ping out of its LAN address
    esp = [(local, remote) for d, local, remote in hq.datagrams_to_send() if d[:4] != bytes(4)]
    assert esp == [(("127.0.0.11", 4500), ("203.0.113.5", 61000))]  # through the new mapping

"""Bad input never raises out of the engine or the gateway, and never touches another SA."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from ikegate.gateway.controller import Gateway
from ikegate.ike.v2.sa import State
from ikegate.ike.wire.registry import ExchangeType, NotifyType
from ikegate.ike.wire.v2 import SKF, Header, Notify, Payload, Unknown, encode_message
from ikegate.sad import IkeSaEntry
from tests.protocol.harness import I_ADDR, establish, make_pair
from tests.protocol.netsim import Net, lab, lab_config


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_and_leave_sa_alone(data: bytes) -> None:
    pair = establish(make_pair())
    other = establish(make_pair())
    pair.responder.receive_datagram(data, I_ADDR, pair.now)
    assert pair.responder.state is State.ESTABLISHED
    assert other.responder.state is State.ESTABLISHED
    assert other.responder.stats.dropped == 0


def test_flipped_bit_in_protected_request_is_dropped_silently() -> None:
    pair = establish(make_pair())
    pair.initiator.liveness_check(pair.now)
    (packet, _local, _peer), = pair.initiator.datagrams_to_send()
    bad = bytearray(packet)
    bad[-5] ^= 0x01
    pair.responder.receive_datagram(bytes(bad), I_ADDR, pair.now)
    assert pair.responder.datagrams_to_send() == []
    assert pair.responder.stats.dropped == 1
    pair.responder.receive_datagram(packet, I_ADDR, pair.now)  # the genuine one still works
    assert len(pair.responder.datagrams_to_send()) == 1


def test_unprotected_message_with_live_spis_is_dropped_and_uses_no_message_id() -> None:
    """Anyone who saw the SPIs can send a message without an SK payload (or with a fragment the peer never
    negotiated). It is not authentic: no answer, and the message ID stays free for the genuine request."""
    pair = establish(make_pair())
    r = pair.responder
    gen = r._gen
    assert gen is not None
    mid = gen.peer_mid
    for chain in ([Notify(NotifyType.INITIAL_CONTACT)], [SKF(0, 1, 1, bytes(48))], []):
        forged = encode_message(Header(gen.spi_i, gen.spi_r, 0, ExchangeType.INFORMATIONAL, 0x08, mid), chain)
        r.receive_datagram(forged, I_ADDR, pair.now)
        assert r.datagrams_to_send() == []
    assert r.stats.dropped == 3 and gen.peer_mid == mid
    answers: list[list[Payload]] = []
    ini = pair.initiator
    ini._queue(lambda t: ini._send_request(ExchangeType.INFORMATIONAL, [], lambda p, n: answers.append(p), None, t),
               pair.now)
    pair.transfer()
    assert answers == [[]]


def test_truncated_and_lying_lengths_are_dropped() -> None:
    pair = establish(make_pair())
    pair.initiator.liveness_check(pair.now)
    (packet, _l, _p), = pair.initiator.datagrams_to_send()
    for bad in (packet[:20], packet[:-1], packet[:24] + struct.pack("!I", len(packet) + 50) + packet[28:]):
        pair.responder.receive_datagram(bad, I_ADDR, pair.now)
    assert pair.responder.datagrams_to_send() == []
    assert pair.responder.state is State.ESTABLISHED


def test_unknown_critical_payload_inside_sk_is_answered() -> None:
    pair = establish(make_pair())
    answers: list[list[Payload]] = []
    ini = pair.initiator
    ini._queue(lambda t: ini._send_request(ExchangeType.INFORMATIONAL, [Unknown(200, b"zz", critical=True)],
                                           lambda p, n: answers.append(p), None, t), pair.now)
    pair.transfer()
    assert answers and isinstance(answers[0][0], Notify)
    assert answers[0][0].notify_type == NotifyType.UNSUPPORTED_CRITICAL_PAYLOAD
    assert answers[0][0].data == bytes([200])
    assert pair.responder.state is State.ESTABLISHED


def test_unknown_non_critical_request_gets_empty_answer() -> None:
    pair = establish(make_pair())
    answers: list[list[Payload]] = []
    ini = pair.initiator
    ini._queue(lambda t: ini._send_request(ExchangeType.INFORMATIONAL, [Notify(40000), Unknown(201, b"q")],
                                           lambda p, n: answers.append(p), None, t), pair.now)
    pair.transfer()
    assert answers == [[]]


def test_gateway_drops_garbage_and_unknown_spis() -> None:
    net, hq, b1, b2 = lab()
    before = len(hq.sad)
    hq.receive_datagram(b"\x00" * 10, ("127.0.0.11", 500), ("127.0.0.99", 500), net.now)
    hq.receive_datagram(b"\x01" * 60, ("127.0.0.11", 500), ("127.0.0.99", 500), net.now)
    hq.receive_datagram(b"\x07" * 8 + b"\x00" * 8 + bytes([0, 0x20, 34, 0x08]) + b"\x00" * 8,
                        ("127.0.0.11", 500), ("127.0.0.99", 500), net.now)
    net.pump()
    assert len(hq.sad) == before
    assert hq.stats.dropped >= 1
    assert all(isinstance(e, IkeSaEntry) or e.parent is not None for e in hq.sad.entries())


def test_cookie_challenge_under_load() -> None:
    net = Net()
    hq = net.add(Gateway(lab_config("hq"), cookie_threshold=0, ike_port=500, natt_port=4500))
    b1 = net.add(Gateway(lab_config("branch1"), ike_port=500, natt_port=4500))
    b1.start(net.now)
    net.pump()
    assert hq.stats.cookies_sent == 1
    assert sorted(e.phase for e in b1.sad.entries()) == [1, 2]


def test_ipv6_outer_addresses() -> None:
    v6 = {"ip address 127.0.0.11 255.0.0.0": "ipv6 enable\n ipv6 address 2001:db8::11/64",
          "ip address 127.0.0.12 255.0.0.0": "ipv6 enable\n ipv6 address 2001:db8::12/64",
          "remote-address 127.0.0.11": "remote-address 2001:db8::11"}
    net = Net()
    hq = net.add(Gateway(lab_config("hq", v6)))
    b1 = net.add(Gateway(lab_config("branch1", v6)))
    b1.start(net.now)
    net.pump()
    assert sorted(e.phase for e in hq.sad.entries()) == [1, 2]
    ike = next(e for e in b1.sad.entries() if isinstance(e, IkeSaEntry))
    assert str(ike.peer_address) == "2001:db8::11" and ike.peer_id_type == "IP"
    assert b1.reset_ike_sa(net.now, remote="2001:db8::11") == 2
    net.pump()
    assert sorted(e.phase for e in b1.sad.entries()) == [1, 2]




def test_nat_detected_floats_to_natt_port_and_sends_keepalives() -> None:
    net = Net(nat={"127.0.0.12": "203.0.113.5"})
    hq = net.add(Gateway(lab_config("hq"), ike_port=500, natt_port=4500))
    b1 = net.add(Gateway(lab_config("branch1"), ike_port=500, natt_port=4500))
    b1.start(net.now)
    net.pump()
    assert sorted(e.phase for e in hq.sad.entries()) == [1, 2]
    ike = next(e for e in hq.sad.entries() if isinstance(e, IkeSaEntry))
    assert (str(ike.peer_address), ike.peer_port) == ("203.0.113.5", 4500)  # seen through the NAT, floated
    child = next(e for e in b1.sad.entries() if not isinstance(e, IkeSaEntry))
    assert child.udp_encap
    ike_auth = [d for d, src, dst in net.seen if src[1] == 4500 and len(d) > 4]
    assert ike_auth and all(d[:4] == bytes(4) for d in ike_auth)  # non-ESP marker on 4500
    net.step(45.0)
    keepalives = [(src, dst) for d, src, dst in net.seen if d == b"\xff"]
    assert len(keepalives) == 2 and all(src == ("203.0.113.5", 4500) for src, _ in keepalives)
    assert sorted(e.phase for e in hq.sad.entries()) == [1, 2]

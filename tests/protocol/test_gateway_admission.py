"""Admission of unauthenticated negotiations, whole gateways in memory: garbage opening messages leave no
state, every half-open SA has a deadline, IKEv1 and IKEv2 half-open state is capped globally and per
source address, and a source that keeps failing authentication is refused for a while."""

from __future__ import annotations

import random

import pytest

from ikegate.cli.logbuffer import record_text
from ikegate.gateway.admission import BLOCK_TIME, opening_ok
from ikegate.gateway.controller import Gateway
from ikegate.policy.model import IkeAdmission
from tests.protocol.netsim import Net, lab, lab_config

LOCAL = ("127.0.0.11", 500)
V1 = {" remote-address 127.0.0.11": " remote-address 127.0.0.11\n undo version 2"}
P1 = {" encryption-algorithm aes-gcm-256\n dh group31": " encryption-algorithm aes-256\n dh group14"}


def _opening(version: int) -> bytes:
    """A real first message (IKE_SA_INIT request or Main Mode message 1), captured from a branch."""
    net = Net()
    hq = net.add(Gateway(lab_config("hq", P1)))
    br = net.add(Gateway(lab_config("branch1", {**P1, **V1} if version == 1 else P1)))
    br.start(net.now)
    data = next(d for d, _src, dst in br.datagrams_to_send() if dst[0] == "127.0.0.11")
    assert hq.engines() == [] and opening_ok(data, version)
    return data


def _spoof(data: bytes, rnd: random.Random) -> bytes:
    return rnd.randbytes(8) + data[8:]


def _hq(**limits: int) -> Gateway:
    gw = Gateway(lab_config("hq", P1))
    for name, value in limits.items():
        setattr(gw.config.ike_admission, name, value)
    return gw


def test_garbage_openings_allocate_nothing() -> None:
    gw, rnd = _hq(), random.Random(7)
    for i in range(3000):
        version = 1 if i % 2 else 2
        exchange = 2 if version == 1 else 34
        length = rnd.randint(28, 120)
        flags = 0 if version == 1 else 0x08
        header = (rnd.randbytes(8) + bytes(8) + bytes((rnd.choice((1, 33, 0)), version << 4, exchange, flags))
                  + bytes(4) + length.to_bytes(4, "big"))
        gw.receive_datagram(header + rnd.randbytes(length - 28), LOCAL, (f"198.51.100.{i % 200}", 500), 0.0)
    assert len(gw._half_open) == 0 and gw.engines() == []
    assert gw.stats.openings_malformed >= 2900  # the few that happen to be well formed are still bounded below
    gw.handle_timer(3600.0)
    assert len(gw._half_open) == 0 and gw.engines() == []


def test_well_formed_but_undecodable_opening_keeps_nothing() -> None:
    """Payload lengths that add up but contents the engine cannot decode: the engine it got is dropped at
    once (before this, it stayed in state NEW with no timer, for ever)."""
    gw, rnd = _hq(per_address=10000), random.Random(1)
    body = b"".join(bytes((nxt, 0)) + (4 + 12).to_bytes(2, "big") + rnd.randbytes(12) for nxt in (34, 40, 0))
    header = bytes(8) + bytes((33, 0x20, 34, 0x08)) + bytes(4) + (28 + len(body)).to_bytes(4, "big")
    for _ in range(3000):
        gw.receive_datagram(rnd.randbytes(8) + header + body, LOCAL, ("198.51.100.7", 500), 0.0)
    assert len(gw._half_open) == 0 and gw.engines() == [] and gw.stats.dropped == 3000
    assert gw.get_timer() is None


def test_every_half_open_sa_has_a_deadline() -> None:
    gw, rnd = _hq(per_address=10000), random.Random(2)
    for version in (1, 2):
        data = _opening(version)
        for _ in range(200):
            gw.receive_datagram(_spoof(data, rnd), LOCAL, ("198.51.100.9", 500), 0.0)
    assert len(gw._half_open) == 400
    gw.datagrams_to_send()
    while (when := gw.get_timer()) is not None and when < 3600:
        gw.handle_timer(when)
    assert len(gw._half_open) == 0 and gw.engines() == []


def test_ikev1_main_mode_flood_is_capped_and_leaves_room_for_ikev2() -> None:
    gw, rnd = _hq(in_negotiation=300), random.Random(3)
    logs: list[str] = []
    gw._log = lambda _m, _s, brief, text, *args: logs.append(f"{brief} {record_text(text, args)}")
    data = _opening(1)
    for i in range(2000):
        gw.receive_datagram(_spoof(data, rnd), LOCAL, (f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 500), 0.0)
    assert len(gw._half_open) == 150 and len(gw.engines()) == 150  # IKEv1: half of the table at most
    assert gw.stats.openings_refused == 1850
    assert len([x for x in logs if x.startswith("IKE_NEGOTIATION_REFUSED")]) == 1  # once per interval, not per datagram
    data2 = _opening(2)
    for i in range(400):
        gw.receive_datagram(_spoof(data2, rnd), LOCAL, (f"10.9.{i >> 8 & 255}.{i & 255}", 500), 0.0)
    assert len(gw._half_open) == 300 and gw._half_open.of_version(2) == 150
    gw.handle_timer(3600.0)
    assert len(gw._half_open) == 0 and gw._half_open.of_version(1) == 0 and gw._half_open.of_version(2) == 0


def test_half_open_per_source_address_is_limited() -> None:
    gw, rnd = _hq(per_address=5), random.Random(4)
    logs: list[str] = []
    gw._log = lambda _m, _s, brief, text, *args: logs.append(f"{brief} {record_text(text, args)}")
    for version in (2, 1):
        data = _opening(version)
        for _ in range(100):
            gw.receive_datagram(_spoof(data, rnd), LOCAL, ("203.0.113.5", 500), 0.0)
    gw.receive_datagram(_spoof(_opening(2), rnd), LOCAL, ("203.0.113.6", 500), 0.0)
    assert gw._half_open.from_source("203.0.113.5") == 5 and gw._half_open.from_source("203.0.113.6") == 1
    refused = [x for x in logs if x.startswith("IKE_NEGOTIATION_REFUSED")]
    assert len(refused) == 1 and "RemoteAddress=203.0.113.5" in refused[0]
    # A retransmission of an admitted opening message still reaches its engine.
    before = gw.stats.openings_refused
    first = _opening(2)
    gw2 = _hq(per_address=1)
    gw2.receive_datagram(first, LOCAL, ("203.0.113.5", 500), 0.0)
    gw2.receive_datagram(first, LOCAL, ("203.0.113.5", 500), 0.5)
    assert gw2.stats.openings_refused == 0 and len(gw2._half_open) == 1
    assert gw.stats.openings_refused == before


@pytest.mark.parametrize("version", [2, 1])
def test_repeated_authentication_failures_block_the_source(version: int) -> None:
    hq_cfg, br_cfg = (P1, {**P1, **V1}) if version == 1 else ({}, {})
    net = Net()
    hq = net.add(Gateway(lab_config("hq", hq_cfg)))
    hq.config.ike_admission.authentication_failures = 3
    logs: list[str] = []
    hq._log = lambda _m, _s, brief, text, *args: logs.append(f"{brief} {record_text(text, args)}")
    br = net.add(Gateway(lab_config("branch1", {**br_cfg, "ikegate-lab-psk-0123": "wrong-psk-0123"})))
    br.start(net.now)
    net.step(60.0)  # the auto policy retries every few seconds
    assert hq.stats.auth_failures == 4 and hq.stats.sources_blocked == 1
    assert hq.stats.openings_refused >= 1 and len(hq.sad) == 0
    blocked = [x for x in logs if x.startswith("IKE_PEER_BLOCKED")]
    assert len(blocked) == 1 and "RemoteAddress=127.0.0.12" in blocked[0]
    assert len([x for x in logs if x.startswith("IKE_NEGOTIATION_REFUSED")]) == 1
    # The operator fixes the key: once the block has passed, the tunnel comes up.
    br.reload(lab_config("branch1", br_cfg))
    net.step(BLOCK_TIME + 10)
    assert len(hq.sad) == 2 and len(br.sad) == 2


def test_admission_settings_round_trip() -> None:
    from ikegate.cli.loader import load_config
    from ikegate.cli.render.config import system_lines

    text = ("ike call admission limit in-negotiation-sa 100\n"
            "ike call admission limit in-negotiation-sa per-address 7\n"
            "ike call admission limit authentication-failure 3\n")
    cfg, errors = load_config(text)
    assert not errors and cfg.ike_admission == IkeAdmission(100, 7, 3)
    lines = system_lines(cfg)
    assert " ike call admission limit in-negotiation-sa per-address 7" in lines
    again, errors = load_config("\n".join(lines))
    assert not errors and again.ike_admission == cfg.ike_admission
    cfg2, errors = load_config(text + "undo ike call admission limit in-negotiation-sa per-address\n")
    assert not errors and cfg2.ike_admission.per_address == IkeAdmission().per_address
    assert not any("admission" in line for line in system_lines(load_config("")[0]))
    _, errors = load_config("ike call admission limit in-negotiation-sa 0\n")
    assert errors


def test_lab_still_comes_up_with_defaults() -> None:
    net, hq, b1, _b2 = lab()
    assert len(hq._half_open) == 0 and hq.stats.openings_refused == 0 and len(hq.sad) == 2


def test_failure_statistics_keep_one_bucket_for_unknown_notify_numbers() -> None:
    from ikegate.gateway.controller import _failure_label
    from ikegate.ike.v1.registry import NotifyType as V1NotifyType
    from ikegate.ike.wire.registry import NotifyType

    assert _failure_label(NotifyType, 24) == "AUTHENTICATION_FAILED"
    assert _failure_label(V1NotifyType, 16) == V1NotifyType(16).name
    assert {_failure_label(NotifyType, n) for n in range(40000, 41000)} == {"other"}
    assert _failure_label(NotifyType, 0) == "timeout"


def test_cookie_answering_flood_from_many_addresses_is_bounded_and_a_branch_still_gets_in() -> None:
    """400 real addresses that answer COOKIEs (so the COOKIE defence does not stop them) each hold at most
    ``per-address`` half-open SAs; a genuine branch still sets up its tunnel in the middle of it."""
    from ikegate.ike.wire.registry import NotifyType
    from ikegate.ike.wire.v2 import Notify, decode_message, encode_message

    net = Net()
    hq = net.add(Gateway(lab_config("hq", P1)))
    hq.config.ike_admission.per_address = 5
    opening, rnd = _opening(2), random.Random(6)
    for _round in range(8):
        for host in range(400):
            src = (f"203.0.113.{host % 200 + 1}" if host < 200 else f"198.51.100.{host % 200 + 1}", 500)
            data = _spoof(opening, rnd)
            hq.receive_datagram(data, LOCAL, src, net.now)
            for answer, _local, dst in hq.datagrams_to_send():
                first = decode_message(answer).payloads[0]
                if dst == src and isinstance(first, Notify) and first.notify_type == NotifyType.COOKIE:
                    msg = decode_message(data)
                    hq.receive_datagram(encode_message(msg.header, [first, *msg.payloads]), LOCAL, src, net.now)
            hq.datagrams_to_send()
        net.now += 1.0
    assert hq.stats.cookies_sent > 0  # the COOKIE defence was engaged and answered
    assert len(hq._half_open) == 400 * 5
    assert max(hq._half_open.from_source(f"203.0.113.{i}") for i in range(1, 201)) == 5
    branch = net.add(Gateway(lab_config("branch1", P1)))
    branch.start(net.now)
    net.pump()
    assert len(branch.sad) == 2 and len(hq.sad) == 2

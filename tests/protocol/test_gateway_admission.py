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


def _cookie_in(answers: list[tuple[bytes, tuple[str, int], tuple[str, int]]], to: tuple[str, int]) -> bytes | None:
    """The COOKIE notify data among ``answers`` sent to ``to`` (None when there is none)."""
    from ikegate.ike.wire.registry import NotifyType
    from ikegate.ike.wire.v2 import Notify, decode_message

    for answer, _local, dst in answers:
        first = decode_message(answer).payloads[0]
        if dst == to and isinstance(first, Notify) and first.notify_type == NotifyType.COOKIE:
            return first.data
    return None


def _with_cookie(data: bytes, cookie: bytes) -> bytes:
    """``data`` (an IKE_SA_INIT request) repeated with a COOKIE notify in front, as RFC 7296 §2.6 asks."""
    from ikegate.ike.wire.registry import NotifyType
    from ikegate.ike.wire.v2 import Notify, decode_message, encode_message

    msg = decode_message(data)
    return encode_message(msg.header, [Notify(NotifyType.COOKIE, data=cookie), *msg.payloads])


def _open_answering_cookies(gw: Gateway, data: bytes, src: tuple[str, int], now: float) -> bool:
    """Send one opening from ``src``; answer a COOKIE request as a real initiator would. True if asked."""
    gw.receive_datagram(data, LOCAL, src, now)
    cookie = _cookie_in(gw.datagrams_to_send(), src)
    if cookie is not None:
        gw.receive_datagram(_with_cookie(data, cookie), LOCAL, src, now)
        gw.datagrams_to_send()
    return cookie is not None


def test_spoofed_flood_from_one_address_keeps_per_address_sas_and_gets_cookies() -> None:
    """With the defaults, 2,000 IKE_SA_INITs from one address that never answers: 32 half-open SAs, every
    other opening answered with a COOKIE (nothing kept for it), nothing refused silently."""
    gw, rnd = _hq(), random.Random(11)
    src, opening = ("203.0.113.5", 500), _opening(2)
    cookies = 0
    for _ in range(2000):
        gw.receive_datagram(_spoof(opening, rnd), LOCAL, src, 0.0)
        cookies += _cookie_in(gw.datagrams_to_send(), src) is not None
    per_address = IkeAdmission().per_address
    assert gw._half_open.from_source(src[0]) == per_address == len(gw.engines())
    assert cookies == gw.stats.cookies_sent == 2000 - per_address
    assert gw.stats.openings_refused == 0


def test_a_source_returning_cookies_negotiates_far_beyond_the_per_address_cap() -> None:
    """A genuine busy peer (a load generator: many IKE_SA_INITs at once from one address) proves its address
    with each COOKIE and is admitted; its opening with a COOKIE reaches an engine that answers it."""
    gw, rnd = _hq(), random.Random(12)
    src, opening = ("198.51.100.1", 500), _opening(2)
    asked = sum(_open_answering_cookies(gw, _spoof(opening, rnd), src, 0.0) for _ in range(400))
    assert asked == 400 - IkeAdmission().per_address
    assert gw._half_open.from_source(src[0]) == 400 and gw.stats.openings_refused == 0


def test_a_cookie_source_holds_at_most_half_of_the_table_and_a_branch_still_gets_in() -> None:
    """A real address answering COOKIEs (so the COOKIE defence does not stop it) is bounded by half of the
    table; a genuine branch still sets up its tunnel in the middle of its flood."""
    net = Net()
    hq = net.add(Gateway(lab_config("hq", P1)))
    hq.config.ike_admission.in_negotiation = 400
    opening, rnd = _opening(2), random.Random(6)
    for _ in range(1000):
        _open_answering_cookies(hq, _spoof(opening, rnd), ("203.0.113.9", 500), net.now)
    assert hq._half_open.from_source("203.0.113.9") == 200 == len(hq._half_open)
    assert hq.stats.openings_refused == 1000 - 200
    branch = net.add(Gateway(lab_config("branch1", P1)))
    branch.start(net.now)
    net.pump()
    assert len(branch.sad) == 2 and len(hq.sad) == 2


def test_a_cookie_from_another_address_or_an_expired_secret_is_refused() -> None:
    gw, rnd = _hq(per_address=1), random.Random(13)
    opening = _opening(2)
    gw.receive_datagram(_spoof(opening, rnd), LOCAL, ("203.0.113.5", 500), 0.0)  # fills the address's share
    gw.receive_datagram(_spoof(opening, rnd), LOCAL, ("203.0.113.6", 500), 0.0)
    gw.datagrams_to_send()
    data = _spoof(opening, rnd)
    gw.receive_datagram(data, LOCAL, ("203.0.113.5", 500), 0.0)
    cookie = _cookie_in(gw.datagrams_to_send(), ("203.0.113.5", 500))
    assert cookie is not None
    # From another address (which is over its cap too) the same cookie is only answered with a fresh one.
    gw.receive_datagram(_with_cookie(data, cookie), LOCAL, ("203.0.113.6", 500), 1.0)
    fresh = _cookie_in(gw.datagrams_to_send(), ("203.0.113.6", 500))
    assert fresh is not None and fresh != cookie and gw._half_open.from_source("203.0.113.6") == 1
    # After two secret lifetimes the cookie's secret is gone.
    late = 2 * gw._cookies.lifetime + 1.0
    gw.receive_datagram(_with_cookie(data, cookie), LOCAL, ("203.0.113.5", 500), late)
    assert _cookie_in(gw.datagrams_to_send(), ("203.0.113.5", 500)) is not None
    assert gw._half_open.from_source("203.0.113.5") == 1
    # A cookie bound to another SPI (the same address) is refused as well; the right one is admitted.
    gw.receive_datagram(_with_cookie(_spoof(data, rnd), cookie), LOCAL, ("203.0.113.5", 500), 1.0)
    assert gw._half_open.from_source("203.0.113.5") == 1
    gw.datagrams_to_send()
    gw2, src = _hq(per_address=1), ("203.0.113.5", 500)
    gw2.receive_datagram(_spoof(opening, rnd), LOCAL, src, 0.0)
    assert _open_answering_cookies(gw2, data, src, 0.0) and gw2._half_open.from_source(src[0]) == 2


def test_ikev1_source_is_capped_until_it_has_authenticated() -> None:
    """IKEv1 cannot prove an address statelessly: Main Mode openings beyond ``per-address`` from a source
    that never authenticated are dropped; once an IKEv1 SA from that address has authenticated, the source
    may hold up to half of the table (a busy IKEv1 peer is slowed only by its first burst)."""
    net = Net()
    hq = net.add(Gateway(lab_config("hq", P1)))
    opening, rnd = _opening(1), random.Random(14)
    src = ("127.0.0.12", 500)
    for _ in range(100):
        hq.receive_datagram(_spoof(opening, rnd), LOCAL, src, net.now)
    per_address = IkeAdmission().per_address
    assert hq._half_open.from_source(src[0]) == per_address and hq.stats.openings_refused == 100 - per_address
    hq.handle_timer(net.now + 3600.0)  # the spoofed ones expire
    net.now += 3600.0
    hq.datagrams_to_send()
    branch = net.add(Gateway(lab_config("branch1", {**P1, **V1})))
    branch.start(net.now)
    net.pump()
    assert len(branch.sad) == 2 and len(hq.sad) == 2  # an IKEv1 SA from 127.0.0.12 authenticated
    for _ in range(100):
        hq.receive_datagram(_spoof(opening, rnd), LOCAL, src, net.now)
    assert hq._half_open.from_source(src[0]) == 100

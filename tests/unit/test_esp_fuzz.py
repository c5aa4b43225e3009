"""Property tests: whatever a peer (or the LAN) sends, the dataplane answers with EspError/None, never
with another exception, and a packet only ever touches the counters of the SA its SPI names."""

from __future__ import annotations

import ipaddress
import os
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ikegate.dataplane.backend import UserspaceBackend
from ikegate.dataplane.esp import EspError, InboundEsp, OutboundEsp
from ikegate.dataplane.packet import UDP, build_ipv4
from ikegate.ike.core.child import ChildSa
from ikegate.ike.core.config import ChildSaConfig, Mode
from ikegate.ike.core.ts import from_network
from ikegate.ike.crypto import encr_alg, integ_alg
from ikegate.ike.wire.registry import EncrId, IntegId
from ikegate.policy.model import Acl, AclAddress, AclRule, Config, Interface, IpsecPolicy

GCM = encr_alg(EncrId.AES_GCM_16, 128)
CBC = encr_alg(EncrId.AES_CBC, 256)
SHA1 = integ_alg(IntegId.HMAC_SHA1_96)
SUITES = {"gcm": (GCM, None), "cbc": (CBC, SHA1)}
KEYS = {name: (os.urandom(e.keymat_size), os.urandom(i.key_size) if i else b"") for name, (e, i) in SUITES.items()}
SPIS = {"gcm": 0x11110001, "cbc": 0x22220002}


def _sa(name: str) -> tuple[OutboundEsp, InboundEsp]:
    encr, integ = SUITES[name]
    ek, ik = KEYS[name]
    return (OutboundEsp(SPIS[name], encr, integ, ek, ik),
            InboundEsp(SPIS[name], encr, integ, ek, ik, 64))


def _snapshot(sa: InboundEsp) -> tuple[int, int, int, dict[str, int]]:
    return sa.packets, sa.bytes, sa.highest_seq, dict(sa.drops)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(SUITES)), st.binary(max_size=200), st.booleans())
def test_open_random_bytes_only_esp_error(name: str, data: bytes, own_spi: bool) -> None:
    _, inb = _sa(name)
    if own_spi and len(data) >= 4:
        data = struct.pack("!I", SPIS[name]) + data[4:]
    try:
        inb.open(data)
    except EspError as err:
        assert err.reason in ("short", "spi", "replay", "icv", "padding", "decrypt")
    else:  # pragma: no cover - would mean a forged ICV
        raise AssertionError("random bytes were accepted")


@settings(max_examples=300)
@given(st.sampled_from(sorted(SUITES)), st.data())
def test_mutated_genuine_packets_are_refused(name: str, data: st.DataObject) -> None:
    out, inb = _sa(name)
    packet = out.seal(build_ipv4("10.0.0.1", "10.0.0.2", UDP, bytes(data.draw(st.integers(8, 300)))), 4)
    mutated = bytearray(packet)
    kind = data.draw(st.sampled_from(["flip", "truncate", "extend", "splice"]))
    if kind == "flip":
        i = data.draw(st.integers(8, len(packet) - 1))
        mutated[i] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        del mutated[data.draw(st.integers(0, len(packet) - 1)) :]
    elif kind == "extend":
        mutated += data.draw(st.binary(min_size=1, max_size=32))
    else:
        i = data.draw(st.integers(8, len(packet) - 1))
        mutated[i:i] = data.draw(st.binary(min_size=1, max_size=16))
    try:
        inb.open(bytes(mutated))
    except EspError:
        assert inb.highest_seq == 0 and inb.packets == 0
    else:  # pragma: no cover
        raise AssertionError(f"mutated packet accepted ({kind})")


def _backend() -> UserspaceBackend:
    cfg = Config()
    cfg.interfaces["GE1"] = Interface("GE1", ipv4=[ipaddress.IPv4Interface("192.0.2.1/24")], ipsec_policy="map")
    any_ = AclAddress(ipaddress.IPv4Address("10.0.0.0"), ipaddress.IPv4Address("0.255.255.255"))
    cfg.acls[3000] = Acl(3000, [AclRule(5, source=any_, destination=any_)])
    cfg.ipsec_policies[("map", 10)] = IpsecPolicy("map", 10, acl=3000)
    backend = UserspaceBackend(cfg, replay_window=64)
    net = from_network(ipaddress.ip_network("10.0.0.0/8"))
    child_cfg = ChildSaConfig("map", 10, [], [net], [net])
    for name, (encr, integ) in SUITES.items():
        ek, ik = KEYS[name]
        spi = SPIS[name]
        child = ChildSa(spi, spi ^ 0xFFFF, child_cfg, encr, integ, ek, ik, ek, ik, [net], [net], Mode.TUNNEL, True,
                        0.0, None, 3600.0)
        backend.install_sa(child, ("198.51.100.1", 4500), local="192.0.2.1")
    return backend


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([*sorted(SUITES), "none"]), st.binary(max_size=160))
def test_from_wan_random_touches_only_its_sa(target: str, data: bytes) -> None:
    backend = _backend()
    if target != "none" and len(data) >= 4:
        data = struct.pack("!I", SPIS[target]) + data[4:]
    before = {name: _snapshot(backend.sa(spi).inbound) for name, spi in SPIS.items()}  # type: ignore[union-attr]
    global_before = dict(backend.drops)
    assert backend.from_wan(data, ("198.51.100.1", 4500), 0.0) is None
    after = {name: _snapshot(backend.sa(spi).inbound) for name, spi in SPIS.items()}  # type: ignore[union-attr]
    hit = target if target != "none" and len(data) >= 8 else None
    for name in SPIS:
        if name != hit:
            assert after[name] == before[name], name
    if hit is not None:
        assert after[hit] != before[hit]  # the drop was counted on that SA
        assert dict(backend.drops) == global_before
    assert backend.poll(1.0) == []


@settings(max_examples=200)
@given(st.binary(max_size=120))
def test_from_lan_random_never_raises(data: bytes) -> None:
    backend = _backend()
    backend.from_lan(data, 0.0)

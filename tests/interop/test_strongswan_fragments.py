"""IKE fragmentation against strongSwan, over real UDP in network namespaces, IPv4 and IPv6.

    ikg netns: this test's engine + the fragmentation modules == WAN == swan netns: charon

The modules themselves are checked here, standing between a PSK engine (whose configuration leaves its own
fragmentation off) and its sockets; the IKEv2 engine's built-in use of them, with certificate chains, is
checked in test_strongswan_certs.py:

* IKEv2 (RFC 7383): the engine's IKE_AUTH request, made larger than a datagram by an extra Vendor ID
  (AUTH does not cover it), leaves as SKF fragments made by ``v2.fragments.fragment``; strongSwan's
  fragmented IKE_AUTH response (``fragmentation = force``) is put back together by
  ``v2.fragments.Reassembler`` and handed to the engine as one SK message.
* IKEv1 (the FRAGMENTATION extension): every encrypted datagram the engine sends that is larger than
  the budget (MM5 and Quick Mode with a 100-byte fragment size) is cut by ``v1.fragments.fragment``;
  whatever strongSwan fragments (with ``fragment_size = 100``, all of its Main and Quick Mode messages)
  is put back together by ``v1.fragments.Reassembler``.

The IKE SA and its Child SA come up on both sides, and strongSwan's log shows that it reassembled our
fragments and fragmented its own.
"""

from __future__ import annotations

import ctypes
import os
import re
import select
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from ikegate.ike.events import ChildSaEstablished
from ikegate.ike.fragments import FragmentationConfig
from ikegate.ike.v1 import fragments as v1frag
from ikegate.ike.v1.registry import Flag
from ikegate.ike.v1.registry import PayloadType as V1Payload
from ikegate.ike.v1.sa import IsakmpSa
from ikegate.ike.v1.wire import decode_message as v1_decode
from ikegate.ike.v2 import fragments as v2frag
from ikegate.ike.v2.protect import open_sk, seal
from ikegate.ike.v2.sa import IkeSa, State
from ikegate.ike.wire.registry import ExchangeType
from ikegate.ike.wire.v2 import SKF, VendorId, decode_message
from tests.interop import swan
from tests.interop.netns import WAN_A, WAN_B, Lab, Netns, wait_for, wan
from tests.protocol import harness, harness_v1

pytestmark = pytest.mark.interop

PSK = "ikegate-fragments-psk-0123"
LAN_I = {4: "192.0.2.0/26", 6: "2001:db8:a::/64"}
LAN_S = {4: "203.0.113.0/24", 6: "2001:db8:c::/64"}
LAN_S_HOST = {4: "203.0.113.1", 6: "2001:db8:c::1"}
_CLONE_NEWNET = 0x40000000
_MARKER = b"\x00" * 4


def _socket_in(ns: Netns, family: int, addr: str, port: int) -> socket.socket:
    """A UDP socket bound inside ``ns``: this thread enters the namespace, makes it, and comes back."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{ns.name}", os.O_RDONLY)
    try:
        if libc.setns(target, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns into the test namespace")
        try:
            sock = socket.socket(socket.AF_INET if family == 4 else socket.AF_INET6, socket.SOCK_DGRAM)
            sock.bind((addr, port))
        finally:
            if libc.setns(home, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back home")
    finally:
        os.close(target)
        os.close(home)
    sock.setblocking(False)
    return sock


def _swan_conf(family: int, version: int) -> str:
    if version == 2:
        proposals, esp = "aes256-sha256-x25519", "aes256gcm16"
    else:
        proposals, esp = "aes256-sha256-modp2048", "aes256-sha256"
    return f"""connections {{
  ikg {{
    version = {version}
    local_addrs = {WAN_B[family]}
    remote_addrs = {WAN_A[family]}
    proposals = {proposals}
    fragmentation = force
    mobike = no
    local {{
      auth = psk
      id = {WAN_B[family]}
    }}
    remote {{
      auth = psk
      id = {WAN_A[family]}
    }}
    children {{
      net {{
        local_ts = {LAN_S[family]}
        remote_ts = {LAN_I[family]}
        esp_proposals = {esp}
      }}
    }}
  }}
}}
secrets {{
  ike-ikg {{
    id-1 = {WAN_B[family]}
    id-2 = {WAN_A[family]}
    secret = "{PSK}"
  }}
}}
"""


@dataclass
class Bed:
    ikg: Netns
    charon: swan.Charon


@pytest.fixture
def start_bed(lab: Lab) -> Iterator[Callable[[int], Bed]]:
    """Two namespaces on one WAN and charon with the ``fragment_size`` the test asks for."""
    reason = swan.skip_reason()
    if reason:
        pytest.skip(reason)
    started: list[Bed] = []

    def start(size: int) -> Bed:
        ikg, sw = lab.netns("ikg"), lab.netns("swan")
        wan(lab, ikg, sw)
        for family in (4, 6):  # an address inside strongSwan's protected network, for its route
            sw.addr("lo", f"{LAN_S_HOST[family]}/{32 if family == 4 else 128}")
        daemon = swan.Charon(lab, sw, lab.workdir / "swan", settings=f"    fragment_size = {size}\n")
        daemon.start()
        started.append(Bed(ikg, daemon))
        return started[-1]

    try:
        yield start
    finally:
        for bed in started:
            sys.stderr.write(f"\n--- charon log ---\n{bed.charon.log()[-6000:]}\n")


Engine = IkeSa | IsakmpSa
Outbound = Callable[[bytes, int], list[bytes]]  # (datagram, local port) -> what goes on the wire
Inbound = Callable[[bytes, float], bytes | None]  # datagram -> what the engine gets (None: wait)


def _drive(bed: Bed, family: int, engine: Engine, outbound: Outbound, inbound: Inbound,
           done: Callable[[], bool], what: str) -> None:
    """Move datagrams between ``engine`` and charon over real sockets until ``done()`` (or 30 s)."""
    ip = WAN_A[family]
    socks = {port: _socket_in(bed.ikg, family, ip, port) for port in (500, 4500)}
    try:
        def flush() -> None:
            for data, local, peer in engine.datagrams_to_send():
                for piece in outbound(data, local[1]) if len(data) > 1 else [data]:
                    socks[local[1]].sendto(_MARKER + piece if local[1] == 4500 else piece, peer)

        deadline = time.monotonic() + 30.0
        while not done():
            now = time.monotonic()
            assert now < deadline, f"no {what} within 30 s"
            if (timer := engine.get_timer()) is not None and timer <= now:
                engine.handle_timer(now)
            flush()
            timer = engine.get_timer()
            wait = max(0.0, min(deadline, timer if timer is not None else deadline) - time.monotonic())
            ready, _, _ = select.select(list(socks.values()), [], [], min(wait, 0.5))
            for sock in ready:
                data, addr = sock.recvfrom(65535)
                port = sock.getsockname()[1]
                if port == 4500:
                    if data[:4] != _MARKER:
                        continue  # ESP: not this test's business
                    data = data[4:]
                now = time.monotonic()
                whole = inbound(data, now)
                if whole is not None:
                    engine.receive_datagram(whole, (addr[0], addr[1]), now, local=(ip, port))
        flush()  # what the last message made the engine send (IKEv1: Quick Mode 3)
    finally:
        for sock in socks.values():
            sock.close()


ROW = "ikegate<->strongSwan fragmentation"


def _initiate(bed: Bed, family: int, version: int) -> Engine:
    """charon configured for ``version``, and our engine of that version initiating towards it."""
    bed.charon.load(_swan_conf(family, version))
    ip, now = WAN_A[family], time.monotonic()
    engine_class, h = (IkeSa, harness) if version == 2 else (IsakmpSa, harness_v1)
    sa = engine_class(h.ike(PSK.encode(), local_id=ip), initiator=True, local=(ip, 500),
                      peer=(WAN_B[family], 500), now=now)
    sa.initiate(now, h.child(LAN_I[family], LAN_S[family]))
    return sa


def _cells(letter: str, what: str) -> list[object]:
    return [pytest.param(4, marks=pytest.mark.cell(ROW, letter.upper(), f"{what}, IPv4 outer")),
            pytest.param(6, marks=pytest.mark.cell(ROW, letter.lower(), f"{what}, IPv6 outer"))]


@pytest.mark.parametrize("family", _cells("f", "IKEv2 IKE_AUTH in SKF fragments both ways"))
def test_ike_auth_fragmented_both_ways_with_strongswan(start_bed: Callable[[int], Bed], family: int) -> None:
    bed = start_bed(200)
    sa = _initiate(bed, family, 2)
    assert isinstance(sa, IkeSa)
    cfg = FragmentationConfig(fragment_size=0)  # the family's safe minimum: several fragments
    reasm = v2frag.Reassembler(cfg.limits)
    sent: list[int] = []

    def outbound(data: bytes, port: int) -> list[bytes]:
        msg, gen = decode_message(data), sa._gen
        if gen is None or msg.header.exchange != ExchangeType.IKE_AUTH or msg.header.is_response:
            return [data]
        # Where the engine will call protect(): too big for one datagram, so SKF fragments.
        payloads = open_sk(gen.out, msg, data)
        payloads.append(VendorId(b"ikegate-fragmentation-test" + os.urandom(2500)))
        frags = v2frag.fragment(gen.out, msg.header, payloads, os.urandom, cfg.budget(family, natt=port == 4500))
        sent.append(len(frags))
        return frags

    def inbound(data: bytes, now: float) -> bytes | None:
        msg, gen = decode_message(data), sa._gen
        if gen is None or not msg.payloads or not isinstance(msg.payloads[-1], SKF):
            return data
        whole = reasm.add(gen.inp, msg, data, now)
        # Where the engine will take whole.payloads() instead of open_sk(): hand it one SK message.
        return None if whole is None else seal(gen.inp, whole.header, whole.payloads(), os.urandom)

    _drive(bed, family, sa, outbound, inbound, lambda: sa.state is State.ESTABLISHED, "IKEv2 SA")

    assert len(sent) == 1 and sent[0] >= 3
    assert reasm.stats.reassembled == 1 and reasm.stats.dropped == 0
    log = bed.charon.log()
    waiting = re.findall(r"received fragment #(\d+) of (\d+), waiting for complete IKE message", log)
    assert waiting and {int(total) for _, total in waiting} == {sent[0]}
    assert re.search(rf"received fragment #\d+ of {sent[0]}, reassembled fragmented IKE message", log)
    split = re.search(r"splitting IKE message \(\d+ bytes\) into (\d+) fragments", log)
    assert split and int(split.group(1)) == reasm.stats.kept >= 2  # its response, fragment by fragment
    assert re.search(r"parsed IKE_AUTH request \d+ \[ IDi .* V \]", log)  # our padding payload came through
    sas = bed.charon.sas()
    assert sas and sas[0].state == "ESTABLISHED" and sas[0].children and sas[0].children[0].state == "INSTALLED"


@pytest.mark.parametrize("family", _cells("m", "IKEv1 Main and Quick Mode in fragments both ways"))
def test_main_mode_fragmented_both_ways_with_strongswan(start_bed: Callable[[int], Bed], family: int) -> None:
    bed = start_bed(100)
    sa = _initiate(bed, family, 1)
    assert isinstance(sa, IsakmpSa)
    cfg = FragmentationConfig(fragment_size=100)
    reasm = v1frag.Reassembler(cfg.limits)
    sent: list[int] = []
    children: list[ChildSaEstablished] = []

    def outbound(data: bytes, port: int) -> list[bytes]:
        if not data[19] & Flag.ENCRYPTION:
            return [data]  # Main Mode 1-4: strongSwan's first messages are never fragments of ours
        frags = v1frag.fragment(data, cfg.budget(family, natt=port == 4500))
        if len(frags) > 1:
            sent.append(len(frags))
        return frags

    def inbound(data: bytes, now: float) -> bytes | None:
        if data[16] != V1Payload.FRAGMENT:
            return data
        return reasm.add(v1_decode(data), now)

    def up() -> bool:
        while (ev := sa.next_event()) is not None:
            if isinstance(ev, ChildSaEstablished):
                children.append(ev)
        return sa.established and bool(children)

    _drive(bed, family, sa, outbound, inbound, up, "IKEv1 SA with its IPsec SA")

    assert len(sent) >= 2 and min(sent) >= 3  # MM5 and Quick Mode 1 (and 3), several fragments each
    assert reasm.stats.reassembled >= 3 and reasm.stats.malformed == 0  # MM2, MM4, MM6, QM2 of charon
    wait_for(lambda: any(c.state == "INSTALLED" for sa in bed.charon.sas() for c in sa.children), 15,
             "strongSwan to install the IPsec SA after Quick Mode 3")
    assert [(sa.state, sa.version) for sa in bed.charon.sas()] == [("ESTABLISHED", 1)]
    log = bed.charon.log()
    assert len(re.findall(r"reassembled fragmented IKE message", log)) == len(sent)
    assert re.search(r"splitting IKE message \(\d+ bytes\) into \d+ fragments", log)

"""IKEv2 fragmentation (RFC 7383) against strongSwan, over real UDP in network namespaces.

    ikg netns: this test's IkeSa engine + the fragmentation modules == WAN == swan netns: charon

The engines do not use ``ike/v2/fragments.py`` yet, so the test stands where the wiring will be: the
engine's IKE_AUTH request (made larger than a datagram by an extra Vendor ID, which AUTH does not cover)
leaves as SKF fragments made by :func:`~ikegate.ike.v2.fragments.fragment`, and strongSwan's fragmented
IKE_AUTH response (``fragmentation = force``, ``fragment_size = 200``) is put back together by
:class:`~ikegate.ike.v2.fragments.Reassembler` before the engine sees it. The IKE SA and its Child SA
come up on both sides, and strongSwan's log shows it reassembled our fragments and fragmented its own.
"""

from __future__ import annotations

import ctypes
import os
import re
import select
import socket
import sys
import time
from collections.abc import Iterator

import pytest

from ikegate.ike.fragments import FragmentationConfig
from ikegate.ike.v2.fragments import Reassembler, fragment
from ikegate.ike.v2.protect import open_sk, seal
from ikegate.ike.v2.sa import IkeSa, State
from ikegate.ike.wire.registry import ExchangeType
from ikegate.ike.wire.v2 import SKF, VendorId, decode_message
from tests.interop import swan
from tests.interop.netns import WAN_A, WAN_B, Lab, Netns, wan
from tests.protocol.harness import child, ike

pytestmark = pytest.mark.interop

PSK = "ikegate-fragments-psk-0123"
LAN_I = {4: "192.0.2.0/26", 6: "2001:db8:a::/64"}
LAN_S = {4: "203.0.113.0/24", 6: "2001:db8:c::/64"}
LAN_S_HOST = {4: "203.0.113.1", 6: "2001:db8:c::1"}
_CLONE_NEWNET = 0x40000000


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


def _swan_conf(family: int) -> str:
    return f"""connections {{
  ikg {{
    version = 2
    local_addrs = {WAN_B[family]}
    remote_addrs = {WAN_A[family]}
    proposals = aes256-sha256-x25519
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
        esp_proposals = aes256gcm16
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


@pytest.fixture
def charon(lab: Lab) -> Iterator[tuple[Netns, swan.Charon]]:
    reason = swan.skip_reason()
    if reason:
        pytest.skip(reason)
    ikg, sw = lab.netns("ikg"), lab.netns("swan")
    wan(lab, ikg, sw)
    for family in (4, 6):  # an address inside strongSwan's protected network, for its route
        sw.addr("lo", f"{LAN_S_HOST[family]}/{32 if family == 4 else 128}")
    daemon = swan.Charon(lab, sw, lab.workdir / "swan", settings="    fragment_size = 200\n")
    daemon.start()
    try:
        yield ikg, daemon
    finally:
        sys.stderr.write(f"\n--- charon log ---\n{daemon.log()[-6000:]}\n")


@pytest.mark.parametrize("family", [4, 6])
def test_ike_auth_fragmented_both_ways_with_strongswan(charon: tuple[Netns, swan.Charon], family: int) -> None:
    ikg, daemon = charon
    daemon.load(_swan_conf(family))
    socks = {port: _socket_in(ikg, family, WAN_A[family], port) for port in (500, 4500)}
    try:
        _exchange(socks, daemon, family)
    finally:
        for sock in socks.values():
            sock.close()


def _exchange(socks: dict[int, socket.socket], daemon: swan.Charon, family: int) -> None:
    ip = WAN_A[family]
    start = time.monotonic()
    sa = IkeSa(ike(PSK.encode(), local_id=ip), initiator=True, local=(ip, 500), peer=(WAN_B[family], 500),
               now=start)
    sa.initiate(start, child(LAN_I[family], LAN_S[family]))
    frag_cfg = FragmentationConfig(fragment_size=0)  # the family's safe minimum: many fragments
    reasm = Reassembler(frag_cfg.limits)
    sent_fragments = 0

    def send(data: bytes, local_port: int, peer: tuple[str, int]) -> None:
        sock = socks[local_port]
        sock.sendto(b"\x00" * 4 + data if local_port == 4500 else data, peer)

    deadline = start + 30.0
    while sa.state is not State.ESTABLISHED:
        now = time.monotonic()
        assert now < deadline, f"no IKE SA within 30 s (state {sa.state}, fragments {reasm.stats})"
        if (timer := sa.get_timer()) is not None and timer <= now:
            sa.handle_timer(now)
        for data, local, peer in sa.datagrams_to_send():
            msg = decode_message(data) if len(data) > 1 else None
            gen = sa._gen
            if (msg is not None and gen is not None and msg.header.exchange == ExchangeType.IKE_AUTH
                    and not msg.header.is_response):
                # Where the engine will call protect(): make the request too big for one datagram and
                # send it as SKF fragments sized for the path.
                payloads = open_sk(gen.out, msg, data)
                payloads.append(VendorId(b"ikegate-fragmentation-test" + os.urandom(2500)))
                frags = fragment(gen.out, msg.header, payloads, os.urandom,
                                 frag_cfg.budget(family, natt=local[1] == 4500))
                sent_fragments = len(frags)
                for f in frags:
                    send(f, local[1], peer)
            else:
                send(data, local[1], peer)
        timer = sa.get_timer()
        wait = max(0.0, min(deadline, timer if timer is not None else deadline) - time.monotonic())
        ready, _, _ = select.select(list(socks.values()), [], [], min(wait, 0.5))
        for sock in ready:
            data, addr = sock.recvfrom(65535)
            port = sock.getsockname()[1]
            if port == 4500:
                if data[:4] != b"\x00" * 4:
                    continue  # ESP: not this test's business
                data = data[4:]
            now = time.monotonic()
            msg = decode_message(data)
            gen = sa._gen
            if msg.payloads and isinstance(msg.payloads[-1], SKF) and gen is not None:
                done = reasm.add(gen.inp, msg, data, now)
                if done is None:
                    continue
                # Where the engine will take done.payloads() instead of open_sk(): hand it the whole.
                data = seal(gen.inp, done.header, done.payloads(), os.urandom)
            sa.receive_datagram(data, (addr[0], addr[1]), now, local=(ip, port))

    assert sent_fragments >= 3
    assert reasm.stats.reassembled == 1 and reasm.stats.dropped == 0
    log = daemon.log()
    waiting = re.findall(r"received fragment #(\d+) of (\d+), waiting for complete IKE message", log)
    assert waiting and {int(total) for _, total in waiting} == {sent_fragments}
    assert re.search(rf"received fragment #\d+ of {sent_fragments}, reassembled fragmented IKE message", log)
    split = re.search(r"splitting IKE message \(\d+ bytes\) into (\d+) fragments", log)
    assert split and int(split.group(1)) == reasm.stats.kept >= 2  # its response, fragment by fragment
    assert re.search(r"parsed IKE_AUTH request \d+ \[ IDi .* V \]", log)  # our padding payload came through
    sas = daemon.sas()
    assert sas and sas[0].state == "ESTABLISHED" and sas[0].children and sas[0].children[0].state == "INSTALLED"

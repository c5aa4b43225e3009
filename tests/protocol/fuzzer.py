"""A gateway holding live SAs, the datagrams that made them, and a mutator: shared by the CI fuzz test
(tests/protocol/test_gateway_fuzz.py) and the long run (bench/fuzz.py).

HQ answers two branches, one over IKEv2 and one over IKEv1, with ESP traffic both ways; every datagram of
those exchanges (IKE_SA_INIT, IKE_AUTH, Main Mode, Quick Mode, informational, ESP in UDP) is the seed
corpus. Mutated copies are fed to HQ, from the real sources and from strangers; what HQ sends back goes
nowhere, so the branches never see the storm. Afterwards the same SAs must still carry traffic.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

from ikegate.gateway.controller import Gateway
from ikegate.ike.core.config import Addr
from ikegate.ike.v1.quick import REKEY_OVERLAP
from ikegate.sad import IkeSaEntry, IpsecSaEntry
from tests.protocol.netsim import Net, lab_config

#: One suite both IKE versions speak, with a fast group (ECP-256): phase 1 of IKEv1 has no AES-GCM and
#: no Curve25519.
SUITE = {" encryption-algorithm aes-gcm-256\n dh group31": " encryption-algorithm aes-256\n dh group19"}
V1 = {" remote-address 127.0.0.11": " remote-address 127.0.0.11\n undo version 2"}
HQ_WAN = "127.0.0.11"


@dataclass
class Bed:
    net: Net
    hq: Gateway
    b1: Gateway  # IKEv2, auto
    b2: Gateway  # IKEv1, traffic-based
    corpus: list[tuple[bytes, Addr, Addr]]  # (datagram, source, destination) sent to HQ

    def live(self) -> set[tuple[int, bytes, bytes, int, int]]:
        """HQ's SAs as (conn-id, SPIs...): what the storm must leave alone."""
        out: set[tuple[int, bytes, bytes, int, int]] = set()
        for e in self.hq.sad.entries():
            if isinstance(e, IkeSaEntry):
                out.add((e.conn_id, e.spi_i, e.spi_r, 0, 0))
            elif isinstance(e, IpsecSaEntry):
                out.add((e.conn_id, b"", b"", e.spi_in, e.spi_out))
        return out

    def pings(self, seq: int) -> list[tuple[int, int]]:
        """One echo from each branch's LAN to HQ's through the tunnels; the replies that came back."""
        got: list[tuple[int, int]] = []
        for gw in (self.b1, self.b2):
            gw.on_echo_reply = lambda ident, s, now: got.append((ident, s))
        self.b1.ping(self.net.now, "10.1.1.1", "10.0.0.1", 1, seq)
        self.b2.ping(self.net.now, "10.1.2.1", "10.0.0.1", 2, seq)
        self.net.pump()
        return sorted(got)


def bed() -> Bed:
    net = Net()
    hq = net.add(Gateway(lab_config("hq", SUITE)))
    b1 = net.add(Gateway(lab_config("branch1", SUITE)))
    b2 = net.add(Gateway(lab_config("branch2", {**SUITE, **V1})))
    for gw in (hq, b1, b2):
        gw.start(net.now)
    net.pump()
    the_bed = Bed(net, hq, b1, b2, [])
    for seq in range(1, 4):
        assert the_bed.pings(seq) == [(1, seq), (2, seq)]
    for gw in (b1, b2):  # a Child SA rekey and an informational exchange in each version
        child = next(e for e in gw.sad.entries() if isinstance(e, IpsecSaEntry))
        assert isinstance(child.handle, tuple)
        sa, ipsec = child.handle
        sa.rekey_child(ipsec, net.now)
        sa.liveness_check(net.now)
        gw._service(sa, net.now)
    net.pump()
    net.step(REKEY_OVERLAP + 1)  # IKEv1: the replaced pair receives for a while, then goes
    assert the_bed.pings(4) == [(1, 4), (2, 4)]
    the_bed.corpus = [(d, src, dst) for d, src, dst in net.seen if dst[0] == HQ_WAN]
    versions = {d[17] >> 4 for d, _s, dst in the_bed.corpus if dst[1] == 500}
    assert versions == {1, 2} and any(dst[1] == 4500 and d[:4] != bytes(4) for d, _s, dst in the_bed.corpus)
    return the_bed


def mutate(rnd: random.Random, data: bytes, corpus: list[tuple[bytes, Addr, Addr]]) -> bytes:
    """A changed copy: bit flips, overwritten bytes, cuts, insertions, or a splice of two datagrams."""
    raw = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        kind = rnd.randrange(6)
        pos = rnd.randrange(len(raw)) if raw else 0
        if kind == 0 and raw:
            raw[pos] ^= 1 << rnd.randrange(8)
        elif kind == 1 and raw:
            raw[pos] = rnd.randrange(256)
        elif kind == 2 and len(raw) > 1:
            del raw[pos:pos + rnd.randint(1, 64)]
        elif kind == 3:
            raw[pos:pos] = rnd.randbytes(rnd.randint(1, 16))
        elif kind == 4:
            other = rnd.choice(corpus)[0]
            raw = raw[:pos] + bytearray(other[rnd.randrange(len(other)):])
        elif len(raw) >= 28:
            raw[24:28] = len(raw).to_bytes(4, "big")  # a plausible IKE length: the parsers' deeper paths
    return bytes(raw) if bytes(raw) != data else data + b"\0"


def storm(the_bed: Bed, count: int, seed: int, per_second: int = 10000) -> Iterator[int]:
    """Feed ``count`` mutated datagrams to HQ at ``per_second`` of simulated time (the clock and every
    timer move on each 1,000), yielding the running count each time; a third come from addresses the
    gateway has never seen."""
    rnd = random.Random(seed)
    hq, net, corpus = the_bed.hq, the_bed.net, the_bed.corpus
    for i in range(count):
        data, src, dst = rnd.choice(corpus)
        if rnd.random() < 0.33:
            src = (f"198.51.100.{rnd.randrange(1, 255)}", src[1])
        hq.receive_datagram(mutate(rnd, data, corpus), dst, src, net.now)
        hq.datagrams_to_send()  # answers go nowhere
        if i % 1000 == 999:
            net.step(1000 / per_second)
            yield i + 1

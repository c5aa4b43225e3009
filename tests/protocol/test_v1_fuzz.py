"""Mangled, truncated, replayed and random datagrams fed to live IKEv1 engines never raise out of them."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ikegate.ike.v1.sa import DpdType, V1Options
from tests.protocol.harness_v1 import AES256_SHA256_ECP256, AGGRESSIVE, child, establish, ike, make_pair

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _mutate(rnd: random.Random, data: bytes) -> bytes:
    raw = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        kind = rnd.randint(0, 3)
        pos = rnd.randrange(len(raw)) if raw else 0
        if kind == 0 and raw:
            raw[pos] ^= 1 << rnd.randint(0, 7)
        elif kind == 1 and len(raw) > 1:
            del raw[pos:]
        elif kind == 2:
            raw[pos:pos] = rnd.randbytes(rnd.randint(1, 8))
        elif raw:
            raw[pos] = rnd.randint(0, 255)
    return bytes(raw)


@FUZZ
@given(st.integers(0, 2**32 - 1), st.booleans(), st.floats(0.05, 0.6))
def test_mangled_exchanges_never_raise(seed: int, aggressive: bool, rate: float) -> None:
    rnd = random.Random(seed)
    opts = AGGRESSIVE if aggressive else V1Options(dpd_type=DpdType.PERIODIC)
    pair = make_pair(ike(proposals=[AES256_SHA256_ECP256]), ike(local_id="198.51.100.1",
                     proposals=[AES256_SHA256_ECP256]), i_opts=opts, r_opts=opts)
    pair.mangle = lambda data, who: _mutate(rnd, data) if rnd.random() < rate else data
    pair.initiator.initiate(pair.now, child())
    pair.step(200)
    for sa in pair.i.engines + pair.r.engines:
        assert sa.stats.messages_in >= 0  # alive and consistent enough to be asked


@FUZZ
@given(st.lists(st.binary(min_size=0, max_size=200), max_size=20), st.integers(0, 2**32 - 1))
def test_established_engines_survive_garbage_and_replays(garbage: list[bytes], seed: int) -> None:
    rnd = random.Random(seed)
    pair = establish(make_pair(ike(proposals=[AES256_SHA256_ECP256]),
                               ike(local_id="198.51.100.1", proposals=[AES256_SHA256_ECP256])))
    history = pair.sent_i + pair.sent_r
    for blob in garbage:
        for sa in (pair.initiator, pair.responder):
            old = rnd.choice(history)
            # Keep real cookies so the garbage reaches the deep paths: header of a real message + junk.
            sa.receive_datagram(old[:28] + blob, ("192.0.2.1", 500), pair.now)
            sa.receive_datagram(_mutate(rnd, old), ("192.0.2.1", 500), pair.now)
            sa.receive_datagram(old, ("192.0.2.1", 500), pair.now)
    pair.transfer()
    assert pair.initiator.established and pair.responder.established
    assert len(pair.initiator.children) == 1 and len(pair.responder.children) == 1

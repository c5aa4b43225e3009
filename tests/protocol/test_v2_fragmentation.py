"""RFC 7383 wired into the IKEv2 engine: certificate IKE_AUTH messages cut into SKF fragments when both ends
announced support, put back together through loss, duplication and reordering, bogus fragments counted and
dropped, IPv4 and IPv6 sizes."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from ikegate.ike.events import IkeSaEstablished
from ikegate.ike.fragments import FragmentationConfig, message_budget
from ikegate.ike.v2.sa import IkeSa
from ikegate.ike.wire.v2 import SKF, decode_message
from tests.protocol.harness import Pair, StaticPolicy, child, establish, make_pair
from tests.protocol.test_v2_certificates import ecdsa_cfg, rsa_cfg

ON = FragmentationConfig(enabled=True, fragment_size=576)


def _fragmenting(size: int = 576) -> Pair:
    frag = FragmentationConfig(enabled=True, fragment_size=size)
    return make_pair(replace(rsa_cfg(), fragmentation=frag), replace(ecdsa_cfg(), fragmentation=frag))


def _skf(data: bytes) -> SKF | None:
    last = decode_message(data).payloads[-1]
    return last if isinstance(last, SKF) else None


def test_ike_auth_is_fragmented_when_both_announce() -> None:
    pair = establish(_fragmenting())
    assert pair.initiator.established and pair.responder.established
    assert pair.initiator.fragmentation and pair.responder.fragmentation
    auth = pair.sent_i[1:]
    assert len(auth) >= 4 and all(_skf(d) is not None for d in auth)
    assert max(len(d) for d in auth) <= message_budget(576, 4, natt=False)
    assert {_skf(d).total for d in auth} == {len(auth)}  # type: ignore[union-attr]
    # The responder's answer (ECDSA, one certificate) is fragmented too, within the same budget.
    assert all(_skf(d) is not None and len(d) <= message_budget(576, 4, natt=False) for d in pair.sent_r[1:])
    # A size that fits the whole answer sends it whole.
    roomy = establish(_fragmenting(1500))
    assert roomy.responder.fragmentation and len(roomy.sent_r) == 2 and _skf(roomy.sent_r[1]) is None


def test_no_fragmentation_unless_both_announce() -> None:
    pair = establish(make_pair(replace(rsa_cfg(), fragmentation=ON), ecdsa_cfg()))
    assert pair.initiator.established and not pair.initiator.fragmentation
    assert len(pair.sent_i) == 2 and len(pair.sent_i[1]) > 2000


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_loss_duplication_and_reordering(seed: int) -> None:
    """The first transmission of IKE_AUTH loses a fragment and arrives shuffled and duplicated; the
    retransmission of every fragment completes it."""
    rng = random.Random(seed)
    pair = _fragmenting()
    pair.initiator.initiate(pair.now, child())
    init = pair.initiator.datagrams_to_send()
    for data, local, peer in init:
        pair.responder.receive_datagram(data, local, pair.now, local=peer)
    for data, local, peer in pair.responder.datagrams_to_send():
        pair.initiator.receive_datagram(data, local, pair.now, local=peer)
    fragments = pair.initiator.datagrams_to_send()
    assert len(fragments) >= 4
    lost = rng.randrange(len(fragments))
    kept = [f for i, f in enumerate(fragments) if i != lost]
    hostile = [*kept, kept[0], kept[-1]]
    rng.shuffle(hostile)
    for data, local, peer in hostile:
        pair.responder.receive_datagram(data, local, pair.now, local=peer)
    assert not pair.responder.established and not pair.responder.datagrams_to_send()
    pair.step(1.5)  # the initiator retransmits all fragments
    assert pair.initiator.established and pair.responder.established
    assert pair.initiator.stats.retransmits >= 1


def test_bogus_fragments_are_counted_and_dropped() -> None:
    pair = establish(_fragmenting())
    gen = pair.responder._gen
    assert gen is not None and gen.frags is not None
    first = pair.sent_i[1]
    dropped = pair.responder.stats.dropped
    # A fragment of the next request (INFORMATIONAL, message ID 2) with a flipped byte: the ICV fails,
    # nothing is kept. (Another message ID is dropped before any crypto, §2.6.1.)
    forged = bytearray(first)
    forged[18] = 37
    forged[20:24] = (2).to_bytes(4, "big")
    forged[-1] ^= 1
    for _ in range(50):
        pair.responder.receive_datagram(bytes(forged), pair.initiator.local, pair.now, local=pair.responder.local)
    assert pair.responder.stats.dropped == dropped + 50
    assert gen.frags.held == 0 and gen.frags.stats.bad_icv == 50
    assert pair.responder.established


def test_fragments_without_negotiation_are_dropped() -> None:
    pair = establish(make_pair(rsa_cfg(), ecdsa_cfg()))
    fragmented = establish(_fragmenting())
    dropped = pair.responder.stats.dropped
    pair.responder.receive_datagram(fragmented.sent_i[2], pair.initiator.local, pair.now, local=pair.responder.local)
    assert pair.responder.stats.dropped == dropped + 1 and pair.responder.established


def test_ipv6_budget() -> None:
    frag = FragmentationConfig(enabled=True, fragment_size=0)  # the family's minimum: 1280 for IPv6
    i_cfg, r_cfg = replace(rsa_cfg(), fragmentation=frag), replace(ecdsa_cfg(), fragmentation=frag)
    i_addr, r_addr = ("2001:db8::1", 500), ("2001:db8::2", 500)
    policy = StaticPolicy(r_cfg, [child("10.2.0.0/24", "10.1.0.0/24")])
    ini = IkeSa(i_cfg, initiator=True, local=i_addr, peer=r_addr, now=0.0)

    def factory() -> IkeSa:
        return IkeSa(None, initiator=False, local=r_addr, peer=i_addr, now=0.0, policy=policy)

    pair = establish(Pair(ini, factory(), 0.0, responder_factory=factory))
    assert pair.initiator.established
    sizes = [len(d) for d in pair.sent_i[1:]]
    assert len(sizes) >= 2 and max(sizes) <= message_budget(1280, 6, natt=False) == 1232


def test_vrp_command_and_defaults() -> None:
    from ikegate.cli.loader import load_config
    from ikegate.cli.render.config import ike_peer_lines
    from ikegate.gateway.translate import fragmentation

    text = ("ike proposal 10\n authentication-method rsa-signature\n#\nike peer cert\n ike-proposal 10\n#\n"
            "ike peer psk\n pre-shared-key Abc12345\n#\nike peer tuned\n pre-shared-key Abc12345\n"
            " ikev2 fragmentation mtu 600\n#\nike peer plain\n pre-shared-key Abc12345\n ikev2 fragmentation\n")
    config, errors = load_config(text)
    assert not errors
    peers = config.ike_peers
    assert fragmentation(config, peers["psk"]) is None  # USG default: off
    assert fragmentation(config, peers["cert"]) == FragmentationConfig(enabled=True, fragment_size=0)
    assert fragmentation(config, peers["tuned"]) == FragmentationConfig(enabled=True, fragment_size=600)
    assert fragmentation(config, peers["plain"]) == FragmentationConfig(enabled=True, fragment_size=0)
    assert " ikev2 fragmentation mtu 600" in ike_peer_lines(peers["tuned"])
    assert " ikev2 fragmentation" in ike_peer_lines(peers["plain"])
    assert not [line for line in ike_peer_lines(peers["psk"]) if "fragmentation" in line]
    _, bad = load_config("ike peer x\n ikev2 fragmentation mtu 100\n")
    assert bad and bad[0].line_number == 2


def test_lost_fragmented_answer_is_resent_from_the_cache() -> None:
    """The responder's fragmented IKE_AUTH answer is lost once: the initiator's retransmission of all its
    fragments makes the responder resend its cached fragments (on fragment 1 only, RFC 7383 §2.6.1),
    without processing the request twice."""
    pair = _fragmenting()
    lost: list[bytes] = []

    def drop(data: bytes, who: str) -> bool:
        if who == "r" and _skf(data) is not None and not lost:
            lost.append(data)
            return True
        return False

    pair.initiator.initiate(pair.now, child())
    pair.transfer(drop)
    assert lost and pair.responder.established and not pair.initiator.established
    answers = len(pair.sent_r)
    pair.step(1.5)
    assert pair.initiator.established
    resent = pair.sent_r[answers:]
    assert len(resent) == len(pair.sent_r[1:answers]) and lost[0] in resent  # the same bytes, every fragment
    assert len(pair.events("r", IkeSaEstablished)) == 1

"""Aggressive Mode refusal and the diagnostics of failed negotiations (issue 10 items 10 and 16), in memory."""

from __future__ import annotations

from prometheus_client import generate_latest

from ikegate.cli.logbuffer import record_text
from ikegate.gateway.controller import Gateway
from ikegate.gateway.local import LocalDevice
from ikegate.ike.events import NegotiationFailed
from ikegate.ike.v1.registry import ExchangeType, NotifyType, ProtocolId
from ikegate.ike.v1.sa import State
from ikegate.ike.v1.wire import Header, Notify, decode_message, encode_message
from ikegate.mgmt.metrics import registry_for
from tests.protocol import harness
from tests.protocol.harness_v1 import (
    AES128_SHA1_MODP2048,
    AES256_SHA256_MODP2048,
    AGGRESSIVE,
    ESP_3DES_SHA1,
    ESP_AES128_SHA1,
    ESP_AES256_SHA256,
    child,
    establish,
    ike,
    make_pair,
)
from tests.protocol.netsim import Net, lab_config

P1 = {" encryption-algorithm aes-gcm-256\n dh group31": " encryption-algorithm aes-256\n dh group14"}
BRANCH_AM = {" remote-address 127.0.0.11": " remote-address 127.0.0.11\n undo version 2\n exchange-mode aggressive"}
HQ_AM = {" ike-proposal 10\n#\nipsec proposal": " ike-proposal 10\n exchange-mode aggressive\n#\nipsec proposal"}


def _exchanges(net: Net, src: str) -> list[int]:
    return [data[18] for data, s, _d in net.seen if s[0] == src and len(data) > 18]


def _am_lab(hq: dict[str, str]) -> tuple[Net, Gateway, Gateway, list[str]]:
    logged: list[str] = []
    net = Net()
    h = net.add(Gateway(lab_config("hq", {**P1, **hq}), log=lambda m, sev, brief, text, *args:
                        logged.append(record_text(text, args))))
    b = net.add(Gateway(lab_config("branch1", {**P1, **BRANCH_AM})))
    b.start(net.now)
    net.pump()
    return net, h, b, logged


# ----------------------------------------------------------------------------------- Aggressive Mode


def test_aggressive_mode_refused_when_responder_is_main_mode() -> None:
    net, hq, br, logged = _am_lab({})
    assert ExchangeType.AGGRESSIVE in _exchanges(net, "127.0.0.12")  # the branch did ask
    assert ExchangeType.AGGRESSIVE not in _exchanges(net, "127.0.0.11")  # no AM2 (no HASH_R to crack)
    assert len(hq.sad) == 0 and len(br.sad) == 0
    refusals = [d for d, s, _ in net.seen if s[0] == "127.0.0.11"]
    assert refusals and all(len(d) < 100 for d in refusals)  # a bare Notify, nothing keyed
    notify = decode_message(refusals[0]).payloads[0]
    assert isinstance(notify, Notify) and notify.notify_type == NotifyType.INVALID_EXCHANGE_TYPE
    assert hq.stats.negotiations_failed == {"INVALID_EXCHANGE_TYPE": 1}
    assert any("aggressive mode refused" in line and "127.0.0.12" in line for line in logged)


def test_aggressive_mode_works_when_configured_for_the_peer() -> None:
    net, hq, br, _logged = _am_lab(HQ_AM)
    phases = sorted(f"v{e.version}:{e.phase}" for e in hq.sad.entries())
    assert phases == ["v1:1", "v1:2"]
    assert ExchangeType.AGGRESSIVE in _exchanges(net, "127.0.0.11")


def test_engine_refuses_aggressive_mode_without_option() -> None:
    pair = make_pair(i_opts=AGGRESSIVE)  # the responder is left at Main Mode
    establish(pair)
    assert not any(d[18] == ExchangeType.AGGRESSIVE for d in pair.sent_r)
    (failed,) = pair.events("r", NegotiationFailed)
    assert failed.notify == NotifyType.INVALID_EXCHANGE_TYPE
    assert pair.responder.state is State.DEAD and not pair.initiator.established


# ----------------------------------------------------------------------------------- received proposals


def test_v1_phase1_no_proposal_chosen_lists_received_proposals() -> None:
    pair = make_pair(ike(proposals=[AES128_SHA1_MODP2048]), r_proposals=[AES256_SHA256_MODP2048])
    establish(pair)
    (failed,) = pair.events("r", NegotiationFailed)
    assert failed.notify == NotifyType.NO_PROPOSAL_CHOSEN
    assert "received proposals: IKE:AES_CBC_128/HMAC_SHA1_96/PRF_HMAC_SHA1/MODP_2048" in failed.detail


def test_v1_phase2_no_proposal_chosen_lists_received_proposals() -> None:
    pair = make_pair(r_children=[child("10.2.0.0/24", "10.1.0.0/24", proposals=[ESP_3DES_SHA1])])
    establish(pair, child(proposals=[ESP_AES256_SHA256, ESP_AES128_SHA1]))
    (failed,) = pair.events("r", NegotiationFailed)
    assert failed.notify == NotifyType.NO_PROPOSAL_CHOSEN and failed.child_only
    assert "received proposals: ESP:AES_CBC_256/HMAC_SHA2_256_128/TUNNEL, ESP:AES_CBC_128/HMAC_SHA1_96/TUNNEL" \
        in failed.detail


def test_v2_no_proposal_chosen_lists_received_proposals() -> None:
    pair = harness.make_pair(harness.ike(proposals=[harness.CBC_X25519]),
                             r_proposals=[harness.GCM_ECP])
    harness.establish(pair)
    failed = [e for e in pair.r_events if isinstance(e, NegotiationFailed)]
    assert failed and failed[0].notify == 14
    assert "received proposals: IKE:AES_CBC_256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/CURVE_25519" in failed[0].detail


def test_v2_child_no_proposal_chosen_lists_received_proposals() -> None:
    pair = harness.make_pair(r_children=[harness.child("10.2.0.0/24", "10.1.0.0/24", proposals=[harness.ESP_CBC])])
    harness.establish(pair, harness.child(proposals=[harness.ESP_GCM]))
    failed = [e for e in pair.r_events if isinstance(e, NegotiationFailed)]
    assert failed and failed[0].notify == 14 and "received proposals: ESP:AES_GCM_16_256/NO_ESN" in failed[0].detail


# ----------------------------------------------------------------------------------- MM5 timeout hint


def test_wrong_psk_silent_peer_says_likely_cause() -> None:
    """A responder that drops an MM5 it cannot decrypt (strongSwan does): the initiator times out at MM5."""
    pair = make_pair(ike(psk=b"one"), ike(psk=b"two", local_id="198.51.100.1"))
    pair.initiator.initiate(pair.now, child())
    # the responder's refusal (an unprotected Notify) is lost, as strongSwan never sends one
    pair.step(60.0, drop=lambda data, who: who == "r" and data[18] == ExchangeType.INFORMATIONAL)
    failed = pair.events("i", NegotiationFailed)
    assert failed and failed[0].notify == 0
    assert "no answer to MM5" in failed[0].detail and "pre-shared key" in failed[0].detail


# ----------------------------------------------------------------------------------- metrics label


def test_v1_notify_16_is_named_in_failure_stats() -> None:
    """ISAKMP notify 16 is PAYLOAD-MALFORMED (RFC 2408), not the unassigned IKEv2 value 16."""
    net = Net()
    b = net.add(Gateway(lab_config("branch1", {**P1, " remote-address 127.0.0.11":
                                               " remote-address 127.0.0.11\n undo version 2"})))
    b.start(net.now)
    (mm1, local, remote), = b.datagrams_to_send()
    # the responder's unprotected refusal of our MM1: PAYLOAD-MALFORMED
    refusal = encode_message(Header(mm1[:8], bytes(8), 0, ExchangeType.INFORMATIONAL, 0, 0),
                             [Notify(NotifyType.PAYLOAD_MALFORMED, ProtocolId.ISAKMP, mm1[:8] + bytes(8))])
    b.receive_datagram(refusal, local, remote, net.now)
    assert b.stats.negotiations_failed == {"PAYLOAD_MALFORMED": 1}
    scrape = generate_latest(registry_for(LocalDevice(b))).decode()
    assert 'ikegate_negotiation_failures_total{reason="PAYLOAD_MALFORMED"} 1.0' in scrape
    assert "NOTIFYTYPE" not in scrape

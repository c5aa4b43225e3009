"""IKEv1 Main, Aggressive and Quick Mode between two in-memory engines: suites, refusals, NAT-T."""

from __future__ import annotations

import pytest

from ikegate.ike.core.child import ChildSa
from ikegate.ike.core.config import EspProposalSpec, IkeProposalSpec, Mode
from ikegate.ike.events import (
    ChildSaEstablished,
    DeleteReason,
    IkeSaDeleted,
    IkeSaEstablished,
    InitialContact,
    NegotiationFailed,
)
from ikegate.ike.v1.registry import (
    VID_FRAGMENTATION,
    VID_NATT_RFC3947,
    VID_STRONGSWAN,
    VID_XAUTH,
    EncapMode,
    ExchangeType,
    NotifyType,
)
from ikegate.ike.v1.sa import State
from ikegate.ike.v1.wire import SA, Notify, VendorId, decode_message, encode_message
from ikegate.ike.wire.registry import DhId, EncrId, IntegId, PrfId
from tests.protocol.harness_v1 import (
    AES128_SHA1_MODP2048,
    AES256_SHA256_ECP256,
    AES256_SHA256_MODP2048,
    AGGRESSIVE,
    ESP_3DES_SHA1,
    ESP_AES128_SHA1,
    ESP_AES256_SHA256,
    ESP_GCM128,
    TDES_SHA1_MODP1024,
    Pair,
    child,
    establish,
    ike,
    make_pair,
)


def _pair_keys_match(a: ChildSa, b: ChildSa) -> None:
    assert a.spi_in == b.spi_out and a.spi_out == b.spi_in
    assert a.encr_key_in == b.encr_key_out and a.encr_key_out == b.encr_key_in
    assert a.integ_key_in == b.integ_key_out and a.integ_key_out == b.integ_key_in
    assert a.encr_key_in != a.encr_key_out  # the two directions are keyed by different SPIs


def _children(pair: Pair) -> tuple[ChildSa, ChildSa]:
    (ci,) = pair.events("i", ChildSaEstablished)
    (cr,) = pair.events("r", ChildSaEstablished)
    return ci.child, cr.child


SUITES = [
    pytest.param(AES256_SHA256_MODP2048, ESP_AES256_SHA256, "AES-CBC-256", "HMAC-SHA2-256-128",
                 id="aes256-sha256-modp2048"),
    pytest.param(AES128_SHA1_MODP2048, ESP_AES128_SHA1, "AES-CBC-128", "HMAC-SHA1-96", id="aes128-sha1-group14"),
    pytest.param(TDES_SHA1_MODP1024, ESP_3DES_SHA1, "3DES-CBC", "HMAC-SHA1-96", id="3des-sha1-modp1024"),
    pytest.param(AES256_SHA256_ECP256, ESP_GCM128, "AES-GCM-16-128", None, id="aes256-sha256-ecp256-gcm"),
]


@pytest.mark.parametrize(("ike_spec", "esp_spec", "encr", "integ"), SUITES)
def test_main_mode_and_quick_mode(ike_spec: IkeProposalSpec, esp_spec: EspProposalSpec, encr: str,
                                  integ: str | None) -> None:
    pair = make_pair(ike(proposals=[ike_spec]), ike(local_id="198.51.100.1", proposals=[ike_spec]),
                     r_children=[child("10.2.0.0/24", "10.1.0.0/24", [esp_spec])])
    establish(pair, child(proposals=[esp_spec]))
    i, r = pair.initiator, pair.responder
    assert i.state is State.ESTABLISHED and r.state is State.ESTABLISHED
    assert len(pair.events("i", IkeSaEstablished)) == 1 and len(pair.events("r", IkeSaEstablished)) == 1
    ci, cr = _children(pair)
    _pair_keys_match(ci, cr)
    assert ci.encr.name == encr and (ci.integ.name if ci.integ else None) == integ
    assert ci.initiator and not cr.initiator and ci.mode is Mode.TUNNEL and not ci.udp_encap
    assert [str(t.start_addr) for t in ci.ts_local] == ["10.1.0.0"]
    assert [str(t.start_addr) for t in cr.ts_local] == ["10.2.0.0"]
    chosen = i.chosen
    assert chosen is not None and r.chosen == chosen
    assert chosen.dh == ike_spec.dh[0] and chosen.prf == ike_spec.prf[0]
    assert r.peer_id == (1, bytes([192, 0, 2, 1])) and i.peer_id == (1, bytes([198, 51, 100, 1]))
    assert i.spi_i == r.spi_i and i.spi_r == r.spi_r and i.local_spis == [i.spi_i] and r.local_spis == [r.spi_r]
    assert i.is_initiator and not r.is_initiator
    assert i.expire_at == 86400.0 and i.rekey_at is not None and r.rekey_at is None
    # The messages strongSwan shows for Main Mode: 3 round trips, then 3 quick mode messages.
    exchanges = [m[18] for m in pair.sent_i + pair.sent_r]
    assert exchanges.count(ExchangeType.ID_PROT) == 6 and exchanges.count(ExchangeType.QUICK) == 3


def test_aggressive_mode() -> None:
    pair = establish(make_pair(i_opts=AGGRESSIVE, r_opts=AGGRESSIVE))
    assert pair.initiator.established and pair.responder.established
    exchanges = [m[18] for m in pair.sent_i + pair.sent_r]
    assert exchanges.count(ExchangeType.AGGRESSIVE) == 3
    ci, cr = _children(pair)
    _pair_keys_match(ci, cr)
    assert pair.responder.peer_id == (1, bytes([192, 0, 2, 1]))


def test_aggressive_mode_responder_asks_policy_by_identity() -> None:
    pair = make_pair(ike(local_id="192.0.2.77"), i_opts=AGGRESSIVE, r_opts=AGGRESSIVE)
    establish(pair)
    policy = pair.responder.policy
    assert policy is not None and (1, bytes([192, 0, 2, 77])) in policy.asked  # type: ignore[attr-defined]


def test_main_mode_responder_asks_policy_by_address() -> None:
    pair = establish(make_pair())
    assert pair.responder.policy.asked == [(1, bytes([192, 0, 2, 1]))]  # type: ignore[union-attr]


def test_wrong_psk_main_mode_is_authentication_failed() -> None:
    pair = make_pair(ike(psk=b"one"), ike(psk=b"two", local_id="198.51.100.1"))
    establish(pair)
    (ri,) = pair.events("r", NegotiationFailed)
    (ii,) = pair.events("i", NegotiationFailed)
    assert ri.notify == NotifyType.AUTHENTICATION_FAILED and ii.notify == NotifyType.AUTHENTICATION_FAILED
    assert pair.events("i", IkeSaDeleted)[0].reason is DeleteReason.NEGOTIATION_FAILED
    assert pair.initiator.finished and pair.responder.finished
    assert pair.responder.stats.auth_failures == 1
    assert not pair.events("i", IkeSaEstablished) and not pair.events("r", IkeSaEstablished)


def test_wrong_psk_aggressive_mode() -> None:
    pair = make_pair(ike(psk=b"one"), ike(psk=b"two", local_id="198.51.100.1"), i_opts=AGGRESSIVE,
                     r_opts=AGGRESSIVE)
    establish(pair)
    (ii,) = pair.events("i", NegotiationFailed)
    assert ii.notify == NotifyType.AUTHENTICATION_FAILED and pair.initiator.stats.auth_failures == 1
    (ri,) = pair.events("r", NegotiationFailed)
    assert ri.notify == NotifyType.AUTHENTICATION_FAILED
    assert pair.initiator.finished and pair.responder.finished


def test_unexpected_remote_identity_fails() -> None:
    pair = make_pair(ike(remote_id=(2, b"someone.else")))
    establish(pair)
    (ii,) = pair.events("i", NegotiationFailed)
    assert ii.notify == NotifyType.AUTHENTICATION_FAILED


def test_no_proposal_chosen_phase1() -> None:
    pair = make_pair(ike(proposals=[AES256_SHA256_MODP2048]), r_proposals=[TDES_SHA1_MODP1024])
    establish(pair)
    (ri,) = pair.events("r", NegotiationFailed)
    (ii,) = pair.events("i", NegotiationFailed)
    assert ri.notify == ii.notify == NotifyType.NO_PROPOSAL_CHOSEN
    assert pair.initiator.finished and pair.responder.finished


def test_initiator_picks_from_several_proposals() -> None:
    pair = make_pair(ike(proposals=[AES256_SHA256_ECP256, AES128_SHA1_MODP2048]),
                     r_proposals=[AES128_SHA1_MODP2048])
    establish(pair)
    assert pair.initiator.established
    chosen = pair.initiator.chosen
    assert chosen is not None and chosen.dh == DhId.MODP_2048 and chosen.prf == PrfId.HMAC_SHA1


def test_quick_mode_no_proposal_keeps_isakmp_sa() -> None:
    pair = make_pair(r_children=[child("10.2.0.0/24", "10.1.0.0/24", [ESP_3DES_SHA1])])
    establish(pair, child(proposals=[ESP_AES256_SHA256]))
    assert pair.initiator.established and pair.responder.established
    (ii,) = pair.events("i", NegotiationFailed)
    (ri,) = pair.events("r", NegotiationFailed)
    assert ii.child_only and ri.child_only and ii.notify == ri.notify == NotifyType.NO_PROPOSAL_CHOSEN
    assert not pair.initiator.children and not pair.responder.children


def test_quick_mode_unknown_selectors_is_invalid_id() -> None:
    pair = establish(make_pair(), child("10.9.0.0/24", "10.2.0.0/24"))
    (ii,) = pair.events("i", NegotiationFailed)
    assert ii.notify == NotifyType.INVALID_ID_INFORMATION and ii.child_only
    assert pair.initiator.established


def test_quick_mode_with_pfs() -> None:
    pfs = EspProposalSpec(ESP_AES256_SHA256.encr, ESP_AES256_SHA256.integ, (DhId.MODP_2048,))
    pair = make_pair(r_children=[child("10.2.0.0/24", "10.1.0.0/24", [pfs])])
    establish(pair, child(proposals=[pfs]))
    ci, cr = _children(pair)
    _pair_keys_match(ci, cr)
    assert ci.dh == cr.dh == DhId.MODP_2048
    # Without PFS the same selectors give different keys: the g^xy of the quick mode went in.
    plain = establish(make_pair())
    assert plain.events("i", ChildSaEstablished)[0].child.dh is None


def test_pfs_mismatch_is_refused() -> None:
    pfs = EspProposalSpec(ESP_AES256_SHA256.encr, ESP_AES256_SHA256.integ, (DhId.ECP_256,))
    pair = make_pair(r_children=[child("10.2.0.0/24", "10.1.0.0/24", [ESP_AES256_SHA256])])
    establish(pair, child(proposals=[pfs]))
    (ii,) = pair.events("i", NegotiationFailed)
    assert ii.notify == NotifyType.NO_PROPOSAL_CHOSEN


def test_transport_mode() -> None:
    pair = make_pair(r_children=[child("10.2.0.0/24", "10.1.0.0/24", mode=Mode.TRANSPORT)])
    establish(pair, child(mode=Mode.TRANSPORT))
    ci, cr = _children(pair)
    assert ci.mode is cr.mode is Mode.TRANSPORT


def test_responder_lifetime_notify_lowers_initiator_lifetime() -> None:
    pair = make_pair(r_children=[child("10.2.0.0/24", "10.1.0.0/24", lifetime=1800)])
    establish(pair, child(lifetime=3600))
    ci, cr = _children(pair)
    assert cr.expire_at == 1800 and ci.expire_at == 1800
    assert ci.config.lifetime == 1800 and ci.config.name == "p1"


def test_initial_contact() -> None:
    pair = make_pair()
    pair.initiator.initial_contact = True
    establish(pair)
    assert len(pair.events("r", InitialContact)) == 1
    assert not pair.events("i", InitialContact)


def test_additional_children_queued_before_establishment() -> None:
    pair = make_pair(r_children=[child("10.2.0.0/24", "10.1.0.0/24"), child("10.2.1.0/24", "10.1.1.0/24")])
    pair.initiator.initiate(pair.now, child())
    pair.initiator.create_child(child("10.1.1.0/24", "10.2.1.0/24"), pair.now)
    pair.transfer()
    assert len(pair.initiator.children) == 2 and len(pair.responder.children) == 2


def test_responder_can_start_quick_mode() -> None:
    pair = establish(make_pair(r_children=[child("10.2.0.0/24", "10.1.0.0/24"), child("10.2.1.0/24", "10.1.1.0/24")]),
                     child())
    pair.initiator.config.children.append(child("10.1.1.0/24", "10.2.1.0/24"))  # type: ignore[union-attr]
    pair.responder.create_child(child("10.2.1.0/24", "10.1.1.0/24"), pair.now)
    pair.transfer()
    assert len(pair.initiator.children) == 2
    newest = pair.events("i", ChildSaEstablished)[-1].child
    assert not newest.initiator and str(newest.ts_local[0].start_addr) == "10.1.1.0"


def _behind_nat() -> Pair:
    pair = make_pair(i_addr=("10.0.0.2", 500))
    pair.nat_ip = "203.0.113.7"
    return establish(pair)


def test_nat_traversal_floats_and_encapsulates() -> None:
    pair = _behind_nat()
    i, r = pair.initiator, pair.responder
    assert i.established and r.established
    assert i.nat_local and not i.nat_remote and r.nat_remote and not r.nat_local
    assert i.local == ("10.0.0.2", 4500) and i.peer == ("198.51.100.1", 4500)
    assert r.local == ("198.51.100.1", 4500) and r.peer == ("203.0.113.7", 44500)
    ci, cr = _children(pair)
    assert ci.udp_encap and cr.udp_encap
    _pair_keys_match(ci, cr)
    # MM1-MM4 went on port 500, MM5 on: 4500 (the owner adds the non-ESP marker there).
    assert "NAT-T (RFC 3947)" in i.peer_vendors and "DPD" in r.peer_vendors


def test_nat_traversal_quick_mode_proposes_udp_tunnel() -> None:
    pair = _behind_nat()
    # udp_encap on a child comes from the negotiated encapsulation mode attribute (UDP-Encapsulated-Tunnel).
    for sa in (pair.initiator, pair.responder):
        assert sa.children and all(c.udp_encap and c.mode is Mode.TUNNEL for c in sa.children.values())
    assert pair.initiator._encap(Mode.TUNNEL) == EncapMode.UDP_TUNNEL
    assert pair.initiator._encap(Mode.TRANSPORT) == EncapMode.UDP_TRANSPORT


def test_nat_traversal_disabled() -> None:
    pair = make_pair(ike(nat_traversal=False), i_addr=("10.0.0.2", 500))
    pair.nat_ip = "203.0.113.7"
    establish(pair)
    assert pair.initiator.established and not pair.initiator.udp_encap
    assert pair.initiator.local[1] == 500


def test_aggressive_mode_behind_nat() -> None:
    pair = make_pair(i_addr=("10.0.0.2", 500), i_opts=AGGRESSIVE, r_opts=AGGRESSIVE)
    pair.nat_ip = "203.0.113.7"
    establish(pair)
    assert pair.initiator.udp_encap and pair.responder.udp_encap
    assert pair.responder.local[1] == 4500
    ci, cr = _children(pair)
    assert ci.udp_encap and cr.udp_encap


def test_strongswan_vendor_ids_are_recognised_and_ignored() -> None:
    pair = make_pair()
    pair.initiator.initiate(pair.now, child())
    (mm1, _local, _peer), = pair.initiator.datagrams_to_send()
    msg = decode_message(mm1)
    extra = [VendorId(VID_XAUTH), VendorId(VID_FRAGMENTATION + bytes(4)), VendorId(VID_STRONGSWAN)]
    forged = encode_message(msg.header, [*msg.payloads, *extra])
    responder = pair.r.factory(("198.51.100.1", 500), ("192.0.2.1", 500), 0.0)  # type: ignore[misc]
    responder.receive_datagram(forged, ("192.0.2.1", 500), 0.0)
    assert responder.state is State.MM_SENT2
    assert {"XAuth", "FRAGMENTATION", "strongSwan", "DPD", "NAT-T (RFC 3947)"} <= set(responder.peer_vendors)
    (answer, _l, _p), = responder.datagrams_to_send()
    reply = decode_message(answer)
    sa = reply.get(SA)
    assert isinstance(sa, SA) and len(sa.proposals[0].transforms) == 1
    assert all(v.data != VID_XAUTH for v in reply.payloads if isinstance(v, VendorId))


def test_gcm_keymat_includes_salt() -> None:
    pair = make_pair(r_children=[child("10.2.0.0/24", "10.1.0.0/24", [ESP_GCM128])])
    establish(pair, child(proposals=[ESP_GCM128]))
    ci, _cr = _children(pair)
    assert len(ci.encr_key_in) == 20 and ci.integ is None and ci.integ_key_in == b""


def test_3des_key_length_attribute_absent() -> None:
    pair = make_pair(ike(proposals=[TDES_SHA1_MODP1024]), r_proposals=[TDES_SHA1_MODP1024],
                     r_children=[child("10.2.0.0/24", "10.1.0.0/24", [ESP_3DES_SHA1])])
    establish(pair, child(proposals=[ESP_3DES_SHA1]))
    ci, _ = _children(pair)
    assert ci.encr.id == EncrId.TRIPLE_DES and ci.integ is not None and ci.integ.id == IntegId.HMAC_SHA1_96


def test_malformed_phase1_message_is_answered_with_its_notify() -> None:
    pair = make_pair()
    pair.initiator.initiate(pair.now, child())
    pair.transfer(lambda d, w: w == "i" and d[18] == ExchangeType.ID_PROT and d[8:16] != bytes(8))  # stop at MM3
    r = pair.responder
    assert r.state is State.MM_SENT2
    mm3 = bytearray(next(d for d in pair.sent_i if d[18] == ExchangeType.ID_PROT and d[8:16] != bytes(8)))
    mm3[16] = 99  # first payload type unknown
    r.receive_datagram(bytes(mm3), ("192.0.2.1", 500), pair.now)
    (answer, _l, _p), = r.datagrams_to_send()
    msg = decode_message(answer)
    note = msg.get(Notify)
    assert msg.header.exchange == ExchangeType.INFORMATIONAL and isinstance(note, Notify)
    assert note.notify_type == NotifyType.INVALID_PAYLOAD_TYPE and note.data == b"\x63"
    assert r.state is State.MM_SENT2 and r.stats.malformed == 1 and r.stats.notifies_sent == 1


def test_draft_nat_traversal() -> None:
    def drafts_only(data: bytes, who: str) -> bytes:
        if data[18] != ExchangeType.ID_PROT or data[19] & 1 or data[8:16] != bytes(8):
            return data
        msg = decode_message(data)
        kept = [x for x in msg.payloads if not (isinstance(x, VendorId) and x.data == VID_NATT_RFC3947)]
        return encode_message(msg.header, kept)

    pair = make_pair(i_addr=("10.0.0.2", 500))
    pair.nat_ip = "203.0.113.7"
    pair.mangle = drafts_only
    establish(pair)
    assert pair.initiator.udp_encap and pair.responder.udp_encap
    assert "NAT-T draft-02" in pair.initiator.peer_vendors
    assert pair.initiator._encap(Mode.TUNNEL) == EncapMode.UDP_TUNNEL_DRAFT
    ci, cr = _children(pair)
    assert ci.udp_encap and cr.udp_encap
    mm3 = next(d for d in pair.sent_i if d[18] == ExchangeType.ID_PROT and d[8:16] != bytes(8))
    assert 130 in {p.TYPE for p in decode_message(mm3).payloads}  # NAT-D in its draft payload number

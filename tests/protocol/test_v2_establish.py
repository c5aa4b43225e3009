"""IKE_SA_INIT + IKE_AUTH between two in-memory engines."""

from __future__ import annotations

from ikegate.ike.events import ChildSaEstablished, IkeSaDeleted, IkeSaEstablished, NegotiationFailed
from ikegate.ike.v2.sa import State
from ikegate.ike.wire.registry import NotifyType
from tests.protocol.harness import CBC_X25519, GCM_ECP, child, establish, ike, make_pair


def test_establish_ike_and_child_sa() -> None:
    pair = establish(make_pair())
    assert pair.initiator.state is State.ESTABLISHED
    assert pair.responder.state is State.ESTABLISHED
    assert len(pair.events("i", IkeSaEstablished)) == 1
    assert len(pair.events("r", IkeSaEstablished)) == 1
    ic = pair.events("i", ChildSaEstablished)[0].child
    rc = pair.events("r", ChildSaEstablished)[0].child
    assert ic.spi_in == rc.spi_out and ic.spi_out == rc.spi_in
    assert ic.encr_key_out == rc.encr_key_in and ic.encr_key_in == rc.encr_key_out
    assert ic.integ_key_out == rc.integ_key_in
    assert ic.encr.name == rc.encr.name
    assert pair.initiator.spi_r == pair.responder.spi_r and pair.initiator.spi_i == pair.responder.spi_i
    assert len(pair.sent_i) == 2 and len(pair.sent_r) == 2


def test_wrong_psk_is_authentication_failed() -> None:
    pair = establish(make_pair(r_cfg=ike(psk=b"other", local_id="198.51.100.1")))
    assert pair.initiator.finished and pair.responder.finished
    fails = pair.events("i", NegotiationFailed)
    assert fails and fails[0].notify == NotifyType.AUTHENTICATION_FAILED
    assert pair.events("i", IkeSaDeleted)
    assert not pair.events("i", IkeSaEstablished)


def test_no_common_proposal() -> None:
    pair = establish(make_pair(i_cfg=ike(proposals=[CBC_X25519]), r_proposals=[GCM_ECP]))
    fails = pair.events("i", NegotiationFailed)
    assert fails and fails[0].notify == NotifyType.NO_PROPOSAL_CHOSEN
    assert pair.initiator.finished


def test_invalid_ke_payload_retry_with_requested_group() -> None:
    both = [CBC_X25519, GCM_ECP]
    from ikegate.ike.core.config import IkeProposalSpec

    multi = IkeProposalSpec(CBC_X25519.encr, CBC_X25519.prf, CBC_X25519.integ, (31, 19))
    pair = establish(make_pair(i_cfg=ike(proposals=[multi]),
                               r_proposals=[IkeProposalSpec(CBC_X25519.encr, CBC_X25519.prf, CBC_X25519.integ, (19,))]))
    assert pair.initiator.state is State.ESTABLISHED, pair.i_events
    assert pair.initiator.chosen is not None and pair.initiator.chosen.dh == 19
    assert len(pair.sent_i) == 3  # INIT (group 31), INIT again (group 19), AUTH
    assert both


def test_ts_unacceptable_keeps_ike_sa() -> None:
    pair = establish(make_pair(r_children=[child("10.9.0.0/24", "10.8.0.0/24")]))
    assert pair.initiator.state is State.ESTABLISHED
    fails = pair.events("i", NegotiationFailed)
    assert fails and fails[0].notify == NotifyType.TS_UNACCEPTABLE and fails[0].child_only
    assert not pair.events("i", ChildSaEstablished)

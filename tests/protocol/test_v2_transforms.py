"""Every transform ikegate offers, negotiated end to end in memory, and every identity type."""

from __future__ import annotations

import pytest

from ikegate.gateway.controller import Gateway
from ikegate.ike.core.config import EspProposalSpec, IkeProposalSpec
from ikegate.ike.events import ChildSaEstablished
from ikegate.ike.v2.sa import State
from ikegate.ike.wire.registry import DhId, EncrId, IntegId, PrfId
from ikegate.sad import IkeSaEntry
from tests.protocol.harness import child, establish, ike, make_pair
from tests.protocol.netsim import Net, lab_config

CBC256 = ((EncrId.AES_CBC, 256),)
SHA256 = (IntegId.HMAC_SHA2_256_128,)


def _run(spec: IkeProposalSpec, esp: EspProposalSpec) -> None:
    pair = establish(make_pair(i_cfg=ike(proposals=[spec]), r_cfg=ike(proposals=[spec], local_id="198.51.100.1"),
                               r_children=[child("10.2.0.0/24", "10.1.0.0/24", proposals=[esp])]),
                     child(proposals=[esp]))
    assert pair.initiator.state is State.ESTABLISHED and pair.responder.state is State.ESTABLISHED
    chosen = pair.initiator.chosen
    assert chosen is not None and chosen.encr == spec.encr[0][0] and chosen.dh == spec.dh[0]
    ic = pair.events("i", ChildSaEstablished)[0].child
    rc = pair.events("r", ChildSaEstablished)[0].child
    assert ic.encr_key_out == rc.encr_key_in and ic.integ_key_out == rc.integ_key_in
    assert (ic.encr.id, ic.encr.key_bits) == esp.encr[0]
    pair.initiator.liveness_check(pair.now)  # a protected exchange after the first ones
    pair.transfer()
    assert pair.initiator.stats.dropped == 0 and pair.responder.stats.dropped == 0


@pytest.mark.parametrize("group", [DhId.MODP_1024, DhId.MODP_1536, DhId.MODP_2048, DhId.MODP_3072,
                                   DhId.MODP_4096, DhId.ECP_256, DhId.ECP_384, DhId.ECP_521, DhId.CURVE_25519])
def test_dh_groups(group: int) -> None:
    _run(IkeProposalSpec(CBC256, (PrfId.HMAC_SHA2_256,), SHA256, (group,)), EspProposalSpec(CBC256, SHA256))


@pytest.mark.parametrize("encr", [(EncrId.AES_CBC, 128), (EncrId.AES_CBC, 192), (EncrId.AES_CBC, 256),
                                  (EncrId.AES_GCM_16, 128), (EncrId.AES_GCM_16, 256)])
def test_ciphers(encr: tuple[int, int]) -> None:
    aead = encr[0] == EncrId.AES_GCM_16
    integ = () if aead else SHA256
    _run(IkeProposalSpec((encr,), (PrfId.HMAC_SHA2_256,), integ, (DhId.ECP_256,)), EspProposalSpec((encr,), integ))


@pytest.mark.parametrize("prf", [PrfId.HMAC_SHA1, PrfId.HMAC_SHA2_256, PrfId.HMAC_SHA2_384, PrfId.HMAC_SHA2_512])
def test_prfs(prf: int) -> None:
    _run(IkeProposalSpec(CBC256, (prf,), SHA256, (DhId.CURVE_25519,)), EspProposalSpec(CBC256, SHA256))


@pytest.mark.parametrize("integ", [IntegId.HMAC_SHA1_96, IntegId.HMAC_SHA2_256_128, IntegId.HMAC_SHA2_384_192,
                                   IntegId.HMAC_SHA2_512_256])
def test_integrity(integ: int) -> None:
    _run(IkeProposalSpec(CBC256, (PrfId.HMAC_SHA2_256,), (integ,), (DhId.CURVE_25519,)),
         EspProposalSpec(CBC256, (integ,)))


@pytest.mark.parametrize(("kind", "value", "shown"), [("fqdn", "branch1.example", "FQDN"),
                                                      ("user-fqdn", "vpn@branch1.example", "USER-FQDN")])
def test_identity_types(kind: str, value: str, shown: str) -> None:
    net = Net()
    hq_cfg = lab_config("hq", {" ike-proposal 10\n#": f" ike-proposal 10\n remote-id-type {kind}\n"
                                                        f" remote-id {value}\n#"})
    hq = net.add(Gateway(hq_cfg))
    b1 = net.add(Gateway(
        lab_config("branch1", {" remote-address 127.0.0.11": f" remote-address 127.0.0.11\n local-id-type {kind}\n"
                                                              f" local-id {value}"})))
    b1.start(net.now)
    net.pump()
    ike_sa = next(e for e in hq.sad.entries() if isinstance(e, IkeSaEntry))
    assert (ike_sa.peer_id_type, ike_sa.peer_id) == (shown, value)
    assert sorted(e.phase for e in b1.sad.entries()) == [1, 2]


def test_wrong_remote_id_is_refused() -> None:
    net = Net()
    hq = net.add(Gateway(lab_config("hq", {" ike-proposal 10\n#": " ike-proposal 10\n remote-id-type fqdn\n"
                                                                  " remote-id other.example\n#"})))
    b1 = net.add(Gateway(lab_config("branch1", {" remote-address 127.0.0.11": " remote-address 127.0.0.11\n"
                                                                             " local-id-type fqdn\n"
                                                                             " local-id branch1.example"})))
    b1.start(net.now)
    net.pump()
    assert len(hq.sad) == 0 and len(b1.sad) == 0
    assert "AUTHENTICATION_FAILED" in b1.stats.negotiations_failed


def test_chacha20_poly1305_ike_and_esp() -> None:
    """RFC 7634 end to end: SK payloads and ESP keyed with ChaCha20-Poly1305 (no Key Length attribute, a
    36-byte keymat per direction), then a protected INFORMATIONAL under it."""
    chacha = ((EncrId.CHACHA20_POLY1305, None),)
    spec = IkeProposalSpec(chacha, (PrfId.HMAC_SHA2_256,), (), (DhId.CURVE_25519,))
    esp = EspProposalSpec(chacha, ())
    pair = establish(make_pair(i_cfg=ike(proposals=[spec]), r_cfg=ike(proposals=[spec], local_id="198.51.100.1"),
                               r_children=[child("10.2.0.0/24", "10.1.0.0/24", proposals=[esp])]),
                     child(proposals=[esp]))
    assert pair.initiator.state is State.ESTABLISHED and pair.responder.state is State.ESTABLISHED
    chosen = pair.initiator.chosen
    assert chosen is not None and chosen.encr == EncrId.CHACHA20_POLY1305 and chosen.key_bits is None
    ic = pair.events("i", ChildSaEstablished)[0].child
    rc = pair.events("r", ChildSaEstablished)[0].child
    assert ic.encr.id == EncrId.CHACHA20_POLY1305 and len(ic.encr_key_out) == 36
    assert ic.encr_key_out == rc.encr_key_in and ic.integ is None
    pair.initiator.liveness_check(pair.now)
    pair.transfer()
    assert pair.initiator.stats.dropped == 0 and pair.responder.stats.dropped == 0

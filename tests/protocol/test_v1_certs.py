"""IKEv1 phase 1 with certificates, in memory: two ikegate engines authenticating with RSA and ECDSA
signatures in Main and Aggressive Mode (RFC 2409 §5.1), a responder holding PSK and certificate peers
side by side, and each way a peer certificate is refused, with its log reason and Notify."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta

import pytest
from cryptography import x509

from ikegate.ike.core.config import Addr, ChildSaConfig, IkeProposalSpec, IkeSaConfig
from ikegate.ike.events import ChildSaEstablished, IkeSaEstablished, NegotiationFailed
from ikegate.ike.v1.fragments import Reassembler
from ikegate.ike.v1.registry import AuthMethod, NotifyType, PayloadType
from ikegate.ike.v1.sa import IsakmpSa
from ikegate.ike.v1.wire import Cert, CertReq, Message, Signature, decode_message
from ikegate.pki.auth import AuthSettings, CertificateAuthenticator, LocalCredential
from ikegate.pki.names import dn_text
from ikegate.policy.model import AuthenticationMethod, IdType
from tests.protocol.harness_v1 import AGGRESSIVE, I_ADDR, R_ADDR, Pair, Side, child, ike, make_pair
from tests.unit.pki_factory import (
    NOW,
    SERVER,
    Issued,
    certificate,
    crl,
    dns,
    ec_key,
    ip,
    key_usage,
    rsa_key,
    standard_pki,
)

PKI = standard_pki()
ROGUE = certificate("Rogue CA", rsa_key(2048, 9), ca=True, key_usage=key_usage(key_cert_sign=True))


def _leaf(cn: str, addr: str, *, ecdsa: bool = False, issuer: Issued | None = None, index: int = 0,
          **kw: object) -> Issued:
    key = ec_key("secp256r1", index) if ecdsa else rsa_key(2048, 20 + index)
    return certificate(cn, key, issuer or PKI.intermediate, sans=[dns(cn), ip(addr)],
                       key_usage=key_usage(digital_signature=True), eku=SERVER, **kw)  # type: ignore[arg-type]


I_RSA = _leaf("initiator.example", I_ADDR[0], index=1)
R_RSA = _leaf("responder.example", R_ADDR[0], index=2)
I_EC = _leaf("initiator.example", I_ADDR[0], ecdsa=True, index=1)
R_EC = _leaf("responder.example", R_ADDR[0], ecdsa=True, index=2)


def at_now(settings: AuthSettings) -> CertificateAuthenticator:
    """The certificate authenticator, its wall clock pinned to the test PKI's ``NOW``."""
    return CertificateAuthenticator(settings, clock=lambda: NOW)


def signer(own: Issued, *, cas: tuple[x509.Certificate, ...] = (PKI.root.cert,), send_chain: bool = True,
           crls: tuple[x509.CertificateRevocationList, ...] = (), remote_id: tuple[IdType, str] | None = None,
           method: AuthenticationMethod = AuthenticationMethod.RSA_SIGNATURE) -> CertificateAuthenticator:
    chain = (PKI.intermediate.cert,) if own.cert.issuer == PKI.intermediate.cert.subject else ()
    return at_now(AuthSettings(method, local=LocalCredential(own.cert, own.key, chain), send_chain=send_chain,
                               cas=cas, crls=crls, remote_id=remote_id))


def cert_ike(own: Issued, local: str, **kw: object) -> IkeSaConfig:
    return ike(psk=b"", local_id=local, auth=signer(own, **kw))  # type: ignore[arg-type]


@dataclass
class Policy:
    """A responder holding several peers for the initiator's address (PSK and certificate alike)."""

    candidates: list[IkeSaConfig]
    children: list[ChildSaConfig] = field(default_factory=lambda: [child("10.2.0.0/24", "10.1.0.0/24")])

    def ike_proposals(self, peer: Addr) -> list[IkeProposalSpec]:
        return self.candidates[0].proposals

    def authenticate(self, peer: Addr, id_type: int, id_data: bytes) -> list[IkeSaConfig]:
        return list(self.candidates)

    def select_child(self, sa: object, tsi: list, tsr: list) -> ChildSaConfig | None:  # type: ignore[type-arg]
        return self.children[0]


def pair_with(i_cfg: IkeSaConfig, candidates: list[IkeSaConfig], *, aggressive: bool = False) -> Pair:
    pair = make_pair(i_cfg, candidates[0], i_opts=AGGRESSIVE if aggressive else None,
                     r_opts=AGGRESSIVE if aggressive else None)
    policy = Policy(candidates)
    r_opts = AGGRESSIVE if aggressive else None

    def r_factory(local: Addr, remote: Addr, t: float) -> IsakmpSa:
        return IsakmpSa(None, initiator=False, local=local, peer=remote, now=t, policy=policy, v1=r_opts)

    pair.r = Side("r", [], r_factory)
    return pair


def run(pair: Pair) -> Pair:
    pair.initiator.initiate(pair.now, child())
    pair.transfer()
    return pair


def whole_datagrams(datagrams: list[bytes]) -> list[bytes]:
    """The datagrams sent, fragments put back together."""
    reasm = Reassembler()
    out = []
    for d in datagrams:
        if d[16] == PayloadType.FRAGMENT:
            whole = reasm.add(decode_message(d), 0.0)
            if whole is None:
                continue
            d = whole
        out.append(d)
    return out


def whole_messages(datagrams: list[bytes]) -> list[Message]:
    """The plaintext messages sent, fragments put back together."""
    return [decode_message(d) for d in whole_datagrams(datagrams) if not d[19] & 1]


def failure(pair: Pair, who: str) -> NegotiationFailed:
    (fail,) = pair.events(who, NegotiationFailed)
    assert isinstance(fail, NegotiationFailed)
    return fail


# --------------------------------------------------------------------------------------------- success
@pytest.mark.parametrize("aggressive", [False, True], ids=["main", "aggressive"])
@pytest.mark.parametrize(("i_own", "r_own", "method"), [
    (I_RSA, R_RSA, AuthMethod.RSA_SIG),
    (I_EC, R_EC, AuthMethod.ECDSA_256),
], ids=["rsa", "ecdsa"])
def test_signatures_establish_both_roles(i_own: Issued, r_own: Issued, method: int, aggressive: bool) -> None:
    ecdsa = method != AuthMethod.RSA_SIG
    kind = AuthenticationMethod.ECDSA_SIGNATURE if ecdsa else AuthenticationMethod.RSA_SIGNATURE
    pair = run(pair_with(cert_ike(i_own, I_ADDR[0], method=kind),
                         [cert_ike(r_own, R_ADDR[0], method=kind)], aggressive=aggressive))
    assert pair.events("i", IkeSaEstablished) and pair.events("r", IkeSaEstablished)
    assert pair.events("i", ChildSaEstablished) and pair.events("r", ChildSaEstablished)
    for sa, other in ((pair.initiator, r_own), (pair.responder, i_own)):
        assert sa._p1.auth_method == method
        assert sa.peer_auth is not None and sa.peer_auth.subject == dn_text(other.cert.subject)
        assert sa.peer_auth.text == ("ECDSA_SIG" if ecdsa else "RSA_SIG")
    # What travelled: CERTREQ both ways, our certificate and the intermediate, a SIG and no HASH in phase 1.
    plain = whole_messages(pair.sent_i + pair.sent_r)
    assert any(isinstance(p, CertReq) for m in plain for p in m.payloads)
    if aggressive:  # AM2/AM3 are in the clear: CERT and SIG visible
        certs = [p for m in plain for p in m.payloads if isinstance(p, Cert)]
        assert len(certs) == 4 and any(isinstance(p, Signature) for m in plain for p in m.payloads)


def test_mixed_psk_and_certificate_peers_on_one_responder() -> None:
    """One responder, two peers for the same address: a PSK initiator and a certificate initiator both get
    in, each with its own method, and each is matched to its own peer configuration."""
    psk_peer = ike(psk=b"shared", local_id=R_ADDR[0], name="psk-peer")
    cert_peer = replace(cert_ike(R_RSA, R_ADDR[0]), name="cert-peer")
    for i_cfg, expected, method in ((ike(psk=b"shared"), "psk-peer", AuthMethod.PRE_SHARED),
                                    (cert_ike(I_RSA, I_ADDR[0]), "cert-peer", AuthMethod.RSA_SIG)):
        pair = run(pair_with(i_cfg, [psk_peer, cert_peer]))
        assert pair.events("i", IkeSaEstablished) and pair.events("r", IkeSaEstablished)
        assert pair.responder.config is not None and pair.responder.config.name == expected
        assert pair.responder._p1.auth_method == method


def test_wrong_psk_beside_certificate_peer_still_refused() -> None:
    pair = run(pair_with(ike(psk=b"wrong"), [ike(psk=b"shared", local_id=R_ADDR[0]), cert_ike(R_RSA, R_ADDR[0])]))
    assert not pair.events("r", IkeSaEstablished)
    assert failure(pair, "r").notify == NotifyType.AUTHENTICATION_FAILED


# --------------------------------------------------------------------------------------------- refusals
_EXPIRED = _leaf("initiator.example", I_ADDR[0], index=1, not_before=NOW - timedelta(days=30),
                 not_after=NOW - timedelta(days=1))
_FUTURE = _leaf("initiator.example", I_ADDR[0], index=1, not_before=NOW + timedelta(days=30),
                not_after=NOW + timedelta(days=60))
_ROGUE_LEAF = _leaf("initiator.example", I_ADDR[0], issuer=ROGUE, index=1)
_REVOKED = _leaf("initiator.example", I_ADDR[0], index=1, serial=0x7E57)
_OTHER_NAME = _leaf("intruder.example", "192.0.2.99", index=1)
_NO_SIG_USAGE = certificate("initiator.example", rsa_key(2048, 21), PKI.intermediate,
                            sans=[ip(I_ADDR[0])], key_usage=key_usage(key_encipherment=True))


@pytest.mark.parametrize(("i_auth", "r_kw", "reason", "notify"), [
    (signer(_EXPIRED), {}, "peer certificate expired on", NotifyType.AUTHENTICATION_FAILED),
    (signer(_FUTURE), {}, "peer certificate not valid before", NotifyType.AUTHENTICATION_FAILED),
    (signer(_ROGUE_LEAF), {}, "issuer not trusted: C=CN, O=ikegate, CN=Rogue CA",
     NotifyType.AUTHENTICATION_FAILED),
    (signer(_REVOKED), {"crls": (crl(PKI.intermediate, [0x7E57]),)},
     "revoked (CRL of C=CN, O=ikegate, CN=Test Intermediate CA, serial 7E:57)", NotifyType.AUTHENTICATION_FAILED),
    (signer(_OTHER_NAME), {}, "ID ip:192.0.2.1 does not match certificate subject", NotifyType.AUTHENTICATION_FAILED),
    (signer(I_RSA), {"remote_id": (IdType.FQDN, "someone-else.example")},
     "remote-id fqdn:someone-else.example does not match", NotifyType.AUTHENTICATION_FAILED),
    (signer(_NO_SIG_USAGE), {}, "key usage does not allow signatures", NotifyType.AUTHENTICATION_FAILED),
    (at_now(AuthSettings(AuthenticationMethod.RSA_SIGNATURE,  # our certificate, another key signs
                         local=LocalCredential(I_RSA.cert, rsa_key(2048, 30), (PKI.intermediate.cert,)),
                         send_chain=True, cas=(PKI.root.cert,))),
     {}, "peer SIG does not verify", NotifyType.INVALID_SIGNATURE),
], ids=["expired", "not-yet-valid", "untrusted", "revoked", "id-mismatch", "remote-id", "key-usage", "bad-sig"])
def test_responder_refuses_initiator_certificate(i_auth: CertificateAuthenticator, r_kw: dict[str, object], reason: str,
                                                  notify: int) -> None:
    i_cfg = ike(psk=b"", auth=i_auth)
    r_cfg = ike(psk=b"", local_id=R_ADDR[0], auth=signer(R_RSA, **r_kw))  # type: ignore[arg-type]
    pair = run(pair_with(i_cfg, [r_cfg]))
    assert not pair.events("r", IkeSaEstablished) and not pair.events("i", IkeSaEstablished)
    fail = failure(pair, "r")
    assert reason in fail.detail and fail.notify == notify
    assert fail.auth_failure == ("bad-signature" if notify == NotifyType.INVALID_SIGNATURE else fail.auth_failure)
    assert fail.auth_failure not in ("", "bad-signature") or notify == NotifyType.INVALID_SIGNATURE
    assert pair.responder.stats.auth_failures == 1
    # The refusal reached the initiator as a Notify of that type (so its log names it too).
    assert failure(pair, "i").notify == notify


def test_initiator_refuses_responder_certificate() -> None:
    pair = run(pair_with(cert_ike(I_RSA, I_ADDR[0], crls=(crl(PKI.intermediate, [R_RSA.cert.serial_number]),)),
                         [cert_ike(R_RSA, R_ADDR[0])]))
    assert not pair.events("i", IkeSaEstablished)
    assert "revoked (CRL of C=CN, O=ikegate, CN=Test Intermediate CA" in failure(pair, "i").detail
    assert pair.initiator.stats.auth_failures == 1


def test_method_not_configured() -> None:
    """A certificate initiator against a PSK-only responder: a readable reason, not 'no proposal'."""
    pair = run(pair_with(cert_ike(I_RSA, I_ADDR[0]), [ike(psk=b"shared", local_id=R_ADDR[0])]))
    fail = failure(pair, "r")
    assert fail.detail == "peer uses an authentication method not configured: RSA signature"
    assert fail.notify == NotifyType.NO_PROPOSAL_CHOSEN


def test_ecdsa_certificate_under_rsa_method_refused() -> None:
    """Methods follow the key: an ECDSA initiator offers method 9, which an RSA-only responder refuses."""
    pair = run(pair_with(cert_ike(I_EC, I_ADDR[0], method=AuthenticationMethod.ECDSA_SIGNATURE),
                         [cert_ike(R_RSA, R_ADDR[0])]))
    assert failure(pair, "r").detail == "peer uses an authentication method not configured: ECDSA signature"


def test_no_local_certificate_fails_before_sending() -> None:
    i_cfg = ike(psk=b"", auth=at_now(AuthSettings(AuthenticationMethod.RSA_SIGNATURE, cas=(PKI.root.cert,))))
    pair = run(pair_with(i_cfg, [cert_ike(R_RSA, R_ADDR[0])]))
    assert pair.sent_i == []
    assert "no local certificate and key configured" in failure(pair, "i").detail


def test_mm5_carries_cert_chain_and_signature() -> None:
    """Without decrypting, the sizes tell: with send-chain MM5 carries the intermediate too (a responder
    that holds the intermediate needs only the leaf), and MM3/MM4 carry one CERTREQ per trusted CA."""
    sizes = []
    cas = (PKI.root.cert, PKI.intermediate.cert)
    for chain in (True, False):
        pair = run(pair_with(cert_ike(I_RSA, I_ADDR[0], send_chain=chain, cas=cas),
                             [cert_ike(R_RSA, R_ADDR[0], cas=cas)]))
        assert pair.events("r", IkeSaEstablished)
        mm5 = next(d for d in whole_datagrams(pair.sent_i) if d[19] & 1)
        sizes.append(len(mm5))
        for mm34 in (decode_message(pair.sent_i[1]), decode_message(pair.sent_r[1])):
            assert mm34.payloads[0].TYPE == PayloadType.KE
            assert [p.authority for p in mm34.payloads if isinstance(p, CertReq)] == [
                c.subject.public_bytes() for c in cas]
    assert sizes[0] - sizes[1] >= len(PKI.intermediate.cert.tbs_certificate_bytes)

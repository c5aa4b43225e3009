"""IKEv2 certificate authentication between two in-memory engines: RSA and ECDSA, RFC 7427 and the
classic methods, both roles, and each refusal with its reason, metrics label and Notify."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from ikegate.ike.core.config import IkeSaConfig
from ikegate.ike.events import IkeSaEstablished, NegotiationFailed
from ikegate.ike.v2.sa import State
from ikegate.ike.wire.registry import AuthMethod, NotifyType
from ikegate.ike.wire.v2 import Notify, decode_message
from ikegate.pki.auth import AuthSettings, CertificateAuthenticator, LocalCredential
from ikegate.pki.verify import serial_text
from ikegate.policy.model import AuthenticationMethod, IdType
from tests.protocol.harness import CBC_X25519, Pair, establish, ike, make_pair
from tests.unit.pki_factory import (
    NOW,
    Issued,
    certificate,
    crl,
    dns,
    ec_key,
    key_usage,
    rsa_key,
    standard_pki,
)

PKI = standard_pki()
FQDN = 2
DN = 9


class Legacy(CertificateAuthenticator):
    """A peer that announces no SIGNATURE_HASH_ALGORITHMS (pre-RFC 7427)."""

    def hash_algorithms(self) -> bytes:
        return b""


def cert_cfg(issued: Issued, fqdn: str, *, chain: tuple[Issued, ...] = (), crls: tuple[object, ...] = (),
             remote_id: tuple[IdType, str] | None = None, legacy: bool = False,
             cas: tuple[Issued, ...] | None = None, pss: bool = False) -> IkeSaConfig:
    rsa = not hasattr(issued.key, "curve")
    settings = AuthSettings(
        method=AuthenticationMethod.RSA_SIGNATURE if rsa else AuthenticationMethod.ECDSA_SIGNATURE,
        local=LocalCredential(issued.cert, issued.key, tuple(c.cert for c in chain)),
        send_chain=bool(chain), cas=tuple(c.cert for c in (cas if cas is not None else (PKI.root,))),
        crls=crls, remote_id=remote_id, rsa_pss=pss)  # type: ignore[arg-type]
    kind = Legacy if legacy else CertificateAuthenticator
    return IkeSaConfig([CBC_X25519], b"", (FQDN, fqdn.encode()), auth=kind(settings, clock=lambda: NOW))


def rsa_cfg(**kw: object) -> IkeSaConfig:
    return cert_cfg(PKI.gateway, "gw1.example", chain=(PKI.intermediate,), **kw)  # type: ignore[arg-type]


def ecdsa_cfg(**kw: object) -> IkeSaConfig:
    return cert_cfg(PKI.ecdsa, "gw2.example", **kw)  # type: ignore[arg-type]


def auth_methods(pair: Pair) -> tuple[int, int]:
    i, r = pair.initiator.peer_auth, pair.responder.peer_auth
    assert i is not None and r is not None
    return i.method, r.method


def failure(pair: Pair, who: str) -> NegotiationFailed:
    fails = pair.events(who, NegotiationFailed)
    assert fails, f"no failure on {who}"
    return fails[0]


@pytest.mark.parametrize("rsa_initiates", [True, False])
def test_rsa_and_ecdsa_with_rfc7427(rsa_initiates: bool) -> None:
    i_cfg, r_cfg = (rsa_cfg(), ecdsa_cfg()) if rsa_initiates else (ecdsa_cfg(), rsa_cfg())
    pair = establish(make_pair(i_cfg, r_cfg))
    assert pair.initiator.state is State.ESTABLISHED and pair.responder.state is State.ESTABLISHED
    assert auth_methods(pair) == (AuthMethod.DIGITAL_SIGNATURE, AuthMethod.DIGITAL_SIGNATURE)
    subjects = {pair.initiator.peer_auth.subject, pair.responder.peer_auth.subject}  # type: ignore[union-attr]
    assert subjects == {"C=CN, O=ikegate, CN=gw1.example", "C=CN, O=ikegate, CN=gw2.example"}
    # The RSA side sent its certificate and the intermediate (send-chain); the ECDSA side only its own.
    rsa_sent = pair.sent_i if rsa_initiates else pair.sent_r
    assert len(rsa_sent[1]) > 2000


def test_classic_methods_with_a_legacy_peer() -> None:
    """No SIGNATURE_HASH_ALGORITHMS from the peer: method 1 (RSA SHA-1) and 9 (ECDSA P-256)."""
    pair = establish(make_pair(rsa_cfg(legacy=True), ecdsa_cfg(legacy=True)))
    assert pair.initiator.established and pair.responder.established
    assert auth_methods(pair) == (AuthMethod.ECDSA_SHA256_P256, AuthMethod.RSA_SIG)
    one_sided = establish(make_pair(ecdsa_cfg(legacy=True), rsa_cfg()))
    # The legacy initiator announced nothing: the responder signs classically; it announced: 14 from it.
    assert auth_methods(one_sided) == (AuthMethod.RSA_SIG, AuthMethod.DIGITAL_SIGNATURE)


def test_rsa_pss_and_rsa_on_both_ends() -> None:
    other = certificate("gw3.example", rsa_key(3072, 7), PKI.root, sans=[dns("gw3.example")])
    pair = establish(make_pair(rsa_cfg(pss=True), cert_cfg(other, "gw3.example")))
    assert pair.initiator.established and auth_methods(pair) == (14, 14)


@pytest.mark.parametrize("local_id", [(1, bytes([192, 0, 2, 1])), (3, b"vpn@gw1.example"),
                                      (5, bytes.fromhex("20010db8000000000000000000000001"))],
                         ids=["ipv4-san", "user-fqdn-san", "ipv6-san"])
def test_id_bound_by_subject_alt_name(local_id: tuple[int, bytes]) -> None:
    pair = establish(make_pair(replace(rsa_cfg(), local_id=local_id), ecdsa_cfg()))
    assert pair.responder.established and pair.responder.peer_id == local_id


def test_initiator_id_is_the_certificate_dn() -> None:
    cfg = rsa_cfg()
    cfg.local_id = (DN, PKI.gateway.cert.subject.public_bytes())
    pair = establish(make_pair(cfg, ecdsa_cfg(remote_id=(IdType.DN, "C=CN,O=ikegate,CN=gw1.example"))))
    assert pair.responder.established and pair.responder.peer_id == cfg.local_id


def _refused_by_responder(pair: Pair, reason: str, kind: str) -> None:
    fail = failure(pair, "r")
    assert fail.notify == NotifyType.AUTHENTICATION_FAILED
    assert fail.detail.startswith(reason), fail.detail
    assert fail.auth_failure == kind
    assert pair.responder.stats.auth_failures == 1
    assert failure(pair, "i").notify == NotifyType.AUTHENTICATION_FAILED
    assert pair.initiator.finished and not pair.events("i", IkeSaEstablished)


def test_expired_certificate_refused() -> None:
    old = certificate("gw1.example", rsa_key(2048, 3), PKI.root, sans=[dns("gw1.example")],
                      not_before=NOW - timedelta(days=400), not_after=NOW - timedelta(days=35))
    pair = establish(make_pair(cert_cfg(old, "gw1.example"), ecdsa_cfg()))
    _refused_by_responder(pair, "peer certificate expired on 2026-10-24 09:00:00 UTC", "expired")


def test_not_yet_valid_certificate_refused() -> None:
    early = certificate("gw1.example", rsa_key(2048, 3), PKI.root, sans=[dns("gw1.example")],
                        not_before=NOW + timedelta(days=2), not_after=NOW + timedelta(days=40))
    pair = establish(make_pair(cert_cfg(early, "gw1.example"), ecdsa_cfg()))
    _refused_by_responder(pair, "peer certificate not valid before 2026-11-30 09:00:00 UTC", "not-yet-valid")


def test_key_usage_without_signatures_refused() -> None:
    encipher = certificate("gw1.example", rsa_key(2048, 3), PKI.root, sans=[dns("gw1.example")],
                           key_usage=key_usage(key_encipherment=True))
    pair = establish(make_pair(cert_cfg(encipher, "gw1.example"), ecdsa_cfg()))
    _refused_by_responder(pair, "peer certificate key usage does not allow signatures", "key-usage")


def test_untrusted_issuer_refused() -> None:
    rogue = certificate("Rogue CA", rsa_key(2048, 5), ca=True, key_usage=key_usage(key_cert_sign=True))
    leaf = certificate("gw1.example", rsa_key(2048, 3), rogue, sans=[dns("gw1.example")])
    pair = establish(make_pair(cert_cfg(leaf, "gw1.example"), ecdsa_cfg()))
    _refused_by_responder(pair, "issuer not trusted: C=CN, O=ikegate, CN=Rogue CA", "untrusted")


def test_revoked_certificate_refused() -> None:
    revoked = crl(PKI.intermediate, [PKI.gateway.cert.serial_number])
    pair = establish(make_pair(rsa_cfg(), ecdsa_cfg(crls=(revoked,))))
    _refused_by_responder(pair, f"revoked (CRL of C=CN, O=ikegate, CN=Test Intermediate CA, serial "
                                f"{serial_text(PKI.gateway.cert.serial_number)})", "revoked")


def test_id_not_in_certificate_refused() -> None:
    cfg = replace(rsa_cfg(), local_id=(FQDN, b"other.example"))
    pair = establish(make_pair(cfg, ecdsa_cfg()))
    _refused_by_responder(pair, "ID fqdn:other.example does not match certificate subject C=CN, O=ikegate, "
                                "CN=gw1.example", "id-mismatch")


def test_remote_id_mismatch_refused() -> None:
    pair = establish(make_pair(rsa_cfg(), ecdsa_cfg(remote_id=(IdType.FQDN, "gw9.example"))))
    _refused_by_responder(pair, "remote-id fqdn:gw9.example does not match certificate subject", "remote-id-mismatch")


def test_psk_responder_refuses_a_signing_peer() -> None:
    # A PSK responder announces no hashes: the initiator signs with a classic method.
    pair = establish(make_pair(rsa_cfg(), ike(local_id="198.51.100.1")))
    _refused_by_responder(pair, "peer uses an authentication method not configured: RSA signature",
                          "method-not-configured")
    ecdsa = establish(make_pair(ecdsa_cfg(), ike(local_id="198.51.100.1")))
    assert failure(ecdsa, "r").detail == "peer uses an authentication method not configured: ECDSA signature"


def test_certificate_responder_refuses_a_psk_peer() -> None:
    pair = establish(make_pair(ike(), ecdsa_cfg()))
    _refused_by_responder(pair, "peer uses an authentication method not configured: pre-shared key",
                          "method-not-configured")


def test_bad_signature_refused() -> None:
    """A certificate that verifies, and an AUTH made with another key (a stolen certificate)."""
    thief = cert_cfg(PKI.gateway, "gw1.example", chain=(PKI.intermediate,))
    assert isinstance(thief.auth, CertificateAuthenticator)
    stolen = replace(thief.auth.settings, local=LocalCredential(PKI.gateway.cert, rsa_key(2048, 9),
                                                                (PKI.intermediate.cert,)))
    thief.auth = CertificateAuthenticator(stolen, clock=lambda: NOW)
    pair = establish(make_pair(thief, ecdsa_cfg()))
    _refused_by_responder(pair, "peer AUTH does not verify", "bad-signature")


def test_initiator_refuses_the_responder_and_says_so() -> None:
    revoked = crl(PKI.root, [PKI.ecdsa.cert.serial_number])
    pair = establish(make_pair(rsa_cfg(crls=(revoked,)), ecdsa_cfg()))
    fail = failure(pair, "i")
    assert fail.notify == NotifyType.AUTHENTICATION_FAILED and fail.detail.startswith("revoked (CRL of")
    assert fail.auth_failure == "revoked" and pair.initiator.finished
    # §2.21.2: the responder heard it in an INFORMATIONAL (its SA is up, then told).
    last = pair.sent_i[-1]
    assert decode_message(last).header.exchange == 37
    assert pair.responder.established or pair.responder.finished


def test_no_local_key_is_a_local_failure() -> None:
    cfg = rsa_cfg()
    assert isinstance(cfg.auth, CertificateAuthenticator)
    cfg.auth = CertificateAuthenticator(replace(cfg.auth.settings, local=None), clock=lambda: NOW)
    pair = establish(make_pair(cfg, ecdsa_cfg()))
    assert failure(pair, "i").detail.startswith("no local certificate and key")
    assert failure(pair, "i").auth_failure == "no-credential"


def test_certreq_and_hash_algorithms_in_ike_sa_init() -> None:
    pair = establish(make_pair(rsa_cfg(), ecdsa_cfg()))
    request, response = decode_message(pair.sent_i[0]), decode_message(pair.sent_r[0])
    for msg in (request, response):
        assert any(isinstance(p, Notify) and p.notify_type == NotifyType.SIGNATURE_HASH_ALGORITHMS
                   for p in msg.payloads)
    certreqs = [p for p in response.payloads if getattr(p, "payload_type", None) == 38]
    assert len(certreqs) == 1 and certreqs[0].data[0] == 4 and len(certreqs[0].data) == 21
    psk = establish(make_pair())
    assert not any(isinstance(p, Notify) and p.notify_type == NotifyType.SIGNATURE_HASH_ALGORITHMS
                   for p in decode_message(psk.sent_i[0]).payloads)


def test_ecdsa_p384() -> None:
    p384 = certificate("gw4.example", ec_key("secp384r1"), PKI.root, sans=[dns("gw4.example")])
    pair = establish(make_pair(ecdsa_cfg(legacy=True), cert_cfg(p384, "gw4.example")))
    assert pair.initiator.established and auth_methods(pair) == (AuthMethod.ECDSA_SHA384_P384, 14)

"""Certificate chain, revocation and identity checks: every refusal has its own readable reason."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from ikegate.ike.wire.registry import IdType as Wire
from ikegate.pki.auth import AuthError, AuthSettings, LocalCredential
from ikegate.pki.names import dn_matches, dn_text, encode_dn
from ikegate.pki.verify import (
    CertificateError,
    Failure,
    ca_key_hash,
    certreq_data,
    chain_for_certreq,
    check_identity,
    check_remote_id,
    split_certreq,
    verify_chain,
)
from ikegate.policy.model import AuthenticationMethod, IdType
from tests.unit.pki_factory import (
    NOW,
    SERVER,
    certificate,
    crl,
    dns,
    ec_key,
    key_usage,
    name,
    rsa_key,
    standard_pki,
)

PKI = standard_pki()
CAS = [PKI.root.cert]


def test_valid_chain_through_an_intermediate_the_peer_sent() -> None:
    verified = verify_chain(PKI.gateway.cert, [PKI.intermediate.cert], CAS, [], NOW)
    assert verified.path == (PKI.gateway.cert, PKI.intermediate.cert, PKI.root.cert)
    assert verified.anchor == PKI.root.cert


def test_intermediate_we_hold_as_ca_is_an_anchor() -> None:
    verified = verify_chain(PKI.gateway.cert, [], [PKI.root.cert, PKI.intermediate.cert], [], NOW)
    assert verified.anchor == PKI.intermediate.cert


def test_missing_intermediate_means_issuer_not_trusted() -> None:
    with pytest.raises(CertificateError, match=r"^issuer not trusted: C=CN, O=ikegate, CN=Test Intermediate CA$"):
        verify_chain(PKI.gateway.cert, [], CAS, [], NOW)


def test_wrong_ca() -> None:
    other = certificate("Other Root", rsa_key(2048, 9), ca=True)
    with pytest.raises(CertificateError, match=r"issuer not trusted: .*CN=Test Root CA"):
        verify_chain(PKI.gateway.cert, [PKI.intermediate.cert], [other.cert], [], NOW)


def test_same_name_other_key_is_not_the_ca() -> None:
    impostor = certificate("Test Root CA", rsa_key(2048, 8), ca=True, key_usage=key_usage(key_cert_sign=True))
    with pytest.raises(CertificateError, match=r"issuer not trusted"):
        verify_chain(PKI.gateway.cert, [PKI.intermediate.cert], [impostor.cert], [], NOW)


def test_self_signed_peer_not_imported() -> None:
    lone = certificate("lone", ec_key("secp256r1", 5))
    with pytest.raises(CertificateError, match=r"issuer not trusted: .*CN=lone \(self-signed, not imported\)"):
        verify_chain(lone.cert, [], CAS, [], NOW)


def test_expired() -> None:
    old = certificate("old", ec_key(), PKI.root, not_before=NOW - timedelta(days=400),
                      not_after=NOW - timedelta(days=35))
    with pytest.raises(CertificateError, match=r"^peer certificate expired on 2026-10-24 09:00:00 UTC$") as info:
        verify_chain(old.cert, [], CAS, [], NOW)
    assert info.value.kind is Failure.EXPIRED


def test_not_yet_valid() -> None:
    early = certificate("early", ec_key(), PKI.root, not_before=NOW + timedelta(days=2))
    with pytest.raises(CertificateError, match=r"^peer certificate not valid before 2026-11-30 09:00:00 UTC$"):
        verify_chain(early.cert, [], CAS, [], NOW)


def test_expired_intermediate_names_the_ca() -> None:
    stale = certificate("Stale CA", rsa_key(2048, 4), PKI.root, ca=True, not_after=NOW - timedelta(days=1))
    leaf = certificate("leaf", ec_key(), stale)
    with pytest.raises(CertificateError, match=r"^CA certificate C=CN, O=ikegate, CN=Stale CA expired on"):
        verify_chain(leaf.cert, [stale.cert], CAS, [], NOW)


def test_revoked_by_the_issuer_crl() -> None:
    revocations = crl(PKI.intermediate, [0x1A2B, 7])
    with pytest.raises(CertificateError,
                       match=r"^revoked \(CRL of C=CN, O=ikegate, CN=Test Intermediate CA, serial 1A:2B\)$"):
        verify_chain(PKI.gateway.cert, [PKI.intermediate.cert], CAS, [revocations], NOW)


def test_crl_of_another_issuer_or_forged_is_ignored() -> None:
    other_issuer = crl(PKI.root, [0x1A2B])  # the root did not issue the gateway certificate
    forged_signer = certificate("Test Intermediate CA", rsa_key(2048, 8), ca=True)
    forged = crl(forged_signer, [0x1A2B])  # right issuer name, wrong key
    verify_chain(PKI.gateway.cert, [PKI.intermediate.cert], CAS, [other_issuer, forged], NOW)


def test_revoked_intermediate() -> None:
    revocations = crl(PKI.root, [PKI.intermediate.cert.serial_number])
    with pytest.raises(CertificateError, match=r"revoked \(CRL of .*CN=Test Root CA, serial "):
        verify_chain(PKI.gateway.cert, [PKI.intermediate.cert], CAS, [revocations], NOW)


def test_key_usage_without_digital_signature() -> None:
    bad = certificate("enc-only", ec_key(), PKI.root, key_usage=key_usage(key_encipherment=True))
    with pytest.raises(CertificateError, match=r"^peer certificate key usage does not allow signatures"):
        verify_chain(bad.cert, [], CAS, [], NOW)


def test_extended_key_usage_without_an_ike_purpose() -> None:
    bad = certificate("code", ec_key(), PKI.root, eku=[ExtendedKeyUsageOID.CODE_SIGNING])
    with pytest.raises(CertificateError, match=r"extended key usage does not allow IKE \(codeSigning\)"):
        verify_chain(bad.cert, [], CAS, [], NOW)
    ipsec_ike = certificate("ike", ec_key(), PKI.root, eku=[x509.ObjectIdentifier("1.3.6.1.5.5.7.3.17")])
    verify_chain(ipsec_ike.cert, [], CAS, [], NOW)


def test_issuer_must_be_a_ca() -> None:
    not_ca = certificate("Not A CA", rsa_key(2048, 4), PKI.root)
    leaf = certificate("leaf", ec_key(), not_ca)
    with pytest.raises(CertificateError, match=r"issuer C=CN, O=ikegate, CN=Not A CA is not a CA"):
        verify_chain(leaf.cert, [not_ca.cert], CAS, [], NOW)


def test_ca_without_key_cert_sign() -> None:
    weak = certificate("Weak CA", rsa_key(2048, 4), PKI.root, ca=True, key_usage=key_usage(digital_signature=True))
    leaf = certificate("leaf", ec_key(), weak)
    with pytest.raises(CertificateError, match=r"may not sign certificates"):
        verify_chain(leaf.cert, [weak.cert], CAS, [], NOW)


def test_path_length_constraint() -> None:
    # The intermediate has pathLenConstraint 0: it may not sign another CA.
    sub = certificate("Sub CA", rsa_key(2048, 4), PKI.intermediate, ca=True)
    leaf = certificate("leaf", ec_key(), sub)
    with pytest.raises(CertificateError, match=r"path too long for CA .*Test Intermediate CA \(pathLenConstraint 0\)"):
        verify_chain(leaf.cert, [sub.cert, PKI.intermediate.cert], CAS, [], NOW)


# --- identity -----------------------------------------------------------------------------------------
GW = PKI.gateway.cert


@pytest.mark.parametrize(("id_type", "data"), [
    (Wire.ID_FQDN, b"gw1.example"),
    (Wire.ID_FQDN, b"GW1.Example"),
    (Wire.ID_RFC822_ADDR, b"vpn@gw1.example"),
    (Wire.ID_IPV4_ADDR, bytes([192, 0, 2, 1])),
    (Wire.ID_IPV6_ADDR, bytes.fromhex("20010db8000000000000000000000001")),
    (Wire.ID_DER_ASN1_DN, GW.subject.public_bytes()),
    (Wire.ID_DER_ASN1_DN, encode_dn("C=CN,O=ikegate,CN=gw1.example")),
])
def test_ike_id_bound_to_the_certificate(id_type: int, data: bytes) -> None:
    check_identity(GW, id_type, data)


@pytest.mark.parametrize(("id_type", "data", "shown"), [
    (Wire.ID_FQDN, b"x", "fqdn:x"),
    (Wire.ID_RFC822_ADDR, b"boss@gw1.example", "user-fqdn:boss@gw1.example"),
    (Wire.ID_IPV4_ADDR, bytes([192, 0, 2, 9]), "ip:192.0.2.9"),
    (Wire.ID_DER_ASN1_DN, encode_dn("CN=gw9"), "dn:CN=gw9"),
    (Wire.ID_KEY_ID, b"\x01\x02", "type 11:0102"),
])
def test_ike_id_mismatch_reason(id_type: int, data: bytes, shown: str) -> None:
    with pytest.raises(CertificateError) as info:
        check_identity(GW, id_type, data)
    assert str(info.value) == (
        f"ID {shown} does not match certificate subject C=CN, O=ikegate, CN=gw1.example (subjectAltName "
        "fqdn:gw1.example, user-fqdn:vpn@gw1.example, ip:192.0.2.1, ip:2001:db8::1)")


@pytest.mark.parametrize(("id_type", "value"), [
    (IdType.DN, "C=CN,O=ikegate,CN=gw1.example"),
    (IdType.DN, "CN=gw1.example, O=ikegate, C=CN"),  # the other order, spaces after commas
    (IdType.DN, "cn=GW1.example,  o=IKEGATE,c=cn"),
    (IdType.FQDN, "gw1.example"),
    (IdType.USER_FQDN, "vpn@gw1.example"),
    (IdType.IP, "2001:db8::1"),
])
def test_remote_id_matches_subject_or_alt_name(id_type: IdType, value: str) -> None:
    check_remote_id(GW, id_type, value)


@pytest.mark.parametrize(("id_type", "value"), [
    (IdType.DN, "CN=gw1.example"),  # a part of the DN is not the DN
    (IdType.DN, "not a dn"),
    (IdType.FQDN, "gw2.example"),
    (IdType.IP, "192.0.2.2"),
    (IdType.IP, "bogus"),
])
def test_remote_id_mismatch(id_type: IdType, value: str) -> None:
    with pytest.raises(CertificateError, match=f"^remote-id {id_type.value}:{value} does not match"):
        check_remote_id(GW, id_type, value)


def test_dn_text_and_matching() -> None:
    assert dn_text(name("x")) == "C=CN, O=ikegate, CN=x"
    assert dn_matches("C=CN/O=ikegate/CN=x", name("x"))
    assert not dn_matches("C=CN,O=ikegate,CN=y", name("x"))


# --- CERTREQ ------------------------------------------------------------------------------------------
def _spki_sha1(cert: x509.Certificate) -> bytes:
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha1(der).digest()


def test_certreq_is_sha1_of_each_ca_subject_public_key_info() -> None:
    data = certreq_data([PKI.root.cert, PKI.intermediate.cert, PKI.root.cert])
    assert data == _spki_sha1(PKI.root.cert) + _spki_sha1(PKI.intermediate.cert)
    assert split_certreq(data + b"\x00" * 5) == [_spki_sha1(PKI.root.cert), _spki_sha1(PKI.intermediate.cert)]
    assert ca_key_hash(PKI.root.cert) == _spki_sha1(PKI.root.cert)


def test_chain_trimmed_to_the_ca_the_peer_asked_for() -> None:
    chain = [PKI.intermediate.cert]
    cas = [PKI.root.cert, PKI.intermediate.cert]
    # Peer trusts the root: send the intermediate.
    assert chain_for_certreq(GW, chain, cas, [ca_key_hash(PKI.root.cert)]) == [PKI.intermediate.cert]
    # Peer holds the intermediate itself: the certificate alone is enough.
    assert chain_for_certreq(GW, chain, cas, [ca_key_hash(PKI.intermediate.cert)]) == []
    # A CA we do not chain to: no answer (the caller sends everything).
    assert chain_for_certreq(GW, chain, cas, [b"\x00" * 20]) is None


# --- AuthSettings: what the engines will call ---------------------------------------------------------
def _settings(**kwargs: object) -> AuthSettings:
    local = LocalCredential(PKI.ecdsa.cert, PKI.ecdsa.key, ())
    defaults: dict[str, object] = {"method": AuthenticationMethod.ECDSA_SIGNATURE, "local": local,
                                   "cas": (PKI.root.cert,), "crls": ()}
    defaults.update(kwargs)
    return AuthSettings(**defaults)  # type: ignore[arg-type]


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def test_auth_settings_end_to_end_sign_and_verify() -> None:
    ours = _settings()
    theirs = _settings(local=LocalCredential(PKI.gateway.cert, PKI.gateway.key, (PKI.intermediate.cert,)),
                       method=AuthenticationMethod.RSA_SIGNATURE, send_chain=True,
                       remote_id=(IdType.FQDN, "gw2.example"))
    # Peer announced SHA-256: RFC 7427 with ECDSA.
    method, data, scheme = ours.sign(b"octets", [2])
    assert int(method) == 14 and scheme is not None
    sent = theirs.certificates_to_send(ours.certreq())
    assert sent == [PKI.gateway.cert, PKI.intermediate.cert]
    verified = ours.verify_peer(_der(sent[0]), [_der(c) for c in sent[1:]], Wire.ID_FQDN, b"gw1.example", NOW)
    assert verified.certificate == PKI.gateway.cert
    peer_method, peer_data, _ = theirs.sign(b"their octets", None)
    assert int(peer_method) == 1
    ours.verify_signature(verified, peer_method, b"their octets", peer_data)
    with pytest.raises(AuthError, match=r"^peer AUTH does not verify: RSA signature"):
        ours.verify_signature(verified, peer_method, b"other octets", peer_data)
    # The ECDSA side verified by the RSA side, its remote-id checked on the certificate.
    mine = theirs.verify_peer(_der(PKI.ecdsa.cert), [], Wire.ID_FQDN, b"gw2.example", NOW)
    theirs.verify_signature(mine, method, b"octets", data)


def test_auth_settings_refusals() -> None:
    psk = AuthSettings(method=AuthenticationMethod.PRE_SHARE, psk=b"secret")
    with pytest.raises(AuthError, match=r"^peer uses an authentication method not configured: RSA signature$") as info:
        psk.check_method(1)
    assert info.value.kind is Failure.METHOD
    with pytest.raises(AuthError, match=r"not configured: pre-shared key$"):
        _settings().check_method(2)
    assert psk.certreq() == b"" and psk.certificates_to_send() == []
    pinned = _settings(remote_id=(IdType.DN, "CN=someone-else"))
    with pytest.raises(AuthError, match=r"^remote-id dn:CN=someone-else does not match certificate subject") as fail:
        pinned.verify_peer(_der(PKI.ecdsa.cert), [], Wire.ID_FQDN, b"gw2.example", NOW)
    assert fail.value.kind is Failure.REMOTE_ID_MISMATCH
    with pytest.raises(AuthError, match=r"^peer certificate cannot be parsed"):
        pinned.verify_peer(b"\x30\x03\x02\x01\x00", [], Wire.ID_FQDN, b"gw2.example", NOW)
    with pytest.raises(AuthError, match=r"^ID fqdn:gw9.example does not match"):
        _settings().verify_peer(_der(PKI.ecdsa.cert), [], Wire.ID_FQDN, b"gw9.example", NOW)


def test_chain_not_sent_without_send_chain() -> None:
    settings = _settings(local=LocalCredential(PKI.gateway.cert, PKI.gateway.key, (PKI.intermediate.cert,)))
    assert settings.certificates_to_send() == [PKI.gateway.cert]


def test_server_eku_accepted() -> None:
    leaf = certificate("srv", ec_key(), PKI.root, eku=SERVER, sans=[dns("srv")])
    verify_chain(leaf.cert, [], CAS, [], NOW)


# --- CertificateAuthenticator: the engines' seam over AuthSettings -------------------------------------
def test_certificate_authenticator_for_both_versions() -> None:
    """IKEv2 AUTH and IKEv1 SIG through the version-neutral seam (ike/core/auth.py)."""
    from ikegate.ike.core.auth import AuthFailure, PeerCredentials, PskAuthenticator
    from ikegate.ike.crypto import prf_alg
    from ikegate.ike.wire.registry import AuthMethod, PrfId
    from ikegate.pki.auth import CertificateAuthenticator

    prf = prf_alg(PrfId.HMAC_SHA2_256)
    rsa = CertificateAuthenticator(_settings(local=LocalCredential(PKI.gateway.cert, PKI.gateway.key,
                                                                   (PKI.intermediate.cert,)),
                                             method=AuthenticationMethod.RSA_SIGNATURE, send_chain=True),
                                   clock=lambda: NOW)
    ecdsa = CertificateAuthenticator(_settings(), clock=lambda: NOW)
    assert rsa.uses_certificates and rsa.method == AuthMethod.RSA_SIG and ecdsa.method == AuthMethod.ECDSA_SHA256_P256
    chain = tuple(rsa.certificates(ecdsa.certreq()))
    assert [x509.load_der_x509_certificate(d) for d in chain] == [PKI.gateway.cert, PKI.intermediate.cert]
    peer = PeerCredentials(Wire.ID_FQDN, b"gw1.example", chain)
    # IKEv2: method 14 when the peer announced SHA-256, verified with the scheme it names.
    method, data = rsa.sign(prf, b"octets", [2])
    verdict = ecdsa.verify(prf, b"octets", method, data, peer)
    assert (verdict.method, verdict.subject) == (14, "C=CN, O=ikegate, CN=gw1.example")
    assert verdict.text == "DIGITAL_SIG (RSASSA-PKCS1-v1_5 with SHA-256)"
    with pytest.raises(AuthFailure, match=r"^peer sent no certificate$") as none:
        ecdsa.verify(prf, b"octets", method, data, PeerCredentials(Wire.ID_FQDN, b"gw1.example"))
    assert none.value.kind == "no-certificate"
    with pytest.raises(AuthFailure, match="not configured: pre-shared key"):
        ecdsa.verify(prf, b"octets", AuthMethod.SHARED_KEY_MIC, data, peer)
    # IKEv1: SIG over HASH_I, the same chain and ID checks; SKEYID from the nonces and g^xy.
    hash_i = bytes(range(32))
    verdict = ecdsa.verify_hash(hash_i, rsa.sign_hash(hash_i), peer)
    assert verdict.subject.endswith("CN=gw1.example")
    with pytest.raises(AuthFailure, match=r"^peer SIG does not verify") as bad:
        ecdsa.verify_hash(hash_i[::-1], rsa.sign_hash(hash_i), peer)
    assert bad.value.kind == "bad-signature"
    assert rsa.skeyid(prf, b"ni", b"nr", b"gxy") == prf.compute(b"ninr", b"gxy")
    with pytest.raises(AuthFailure):
        PskAuthenticator(b"k").sign_hash(hash_i)

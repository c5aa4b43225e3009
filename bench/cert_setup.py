"""CPU per IKEv2 set-up (IKE_SA_INIT + IKE_AUTH with its Child SA), in memory, by authentication method.

Two engines in one process, datagrams handed over by hand (no sockets): what the certificate work adds to
a set-up on each side. Cases: PSK; ECDSA P-256 both ends (RFC 7427); RSA-3072 both ends (RFC 7427, the
initiator sends its chain, IKE_AUTH in 576-byte SKF fragments); RSA-3072 with the classic method 1.
Certificates are made here with ``cryptography`` (root -> intermediate -> end entities).

    .venv/bin/python bench/cert_setup.py [-n 200]
"""

from __future__ import annotations

import argparse
import ipaddress
import time
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ikegate.ike.core import ts
from ikegate.ike.core.config import ChildSaConfig, EspProposalSpec, IkeProposalSpec, IkeSaConfig
from ikegate.ike.fragments import FragmentationConfig
from ikegate.ike.v2.sa import IkeSa
from ikegate.ike.wire.registry import DhId, EncrId, IntegId, PrfId
from ikegate.pki.auth import AuthSettings, CertificateAuthenticator, LocalCredential
from ikegate.policy.model import AuthenticationMethod

NOW = datetime.now(UTC)
IKE = IkeProposalSpec(((EncrId.AES_CBC, 256),), (PrfId.HMAC_SHA2_256,), (IntegId.HMAC_SHA2_256_128,),
                      (DhId.CURVE_25519,))
ESP = EspProposalSpec(((EncrId.AES_GCM_16, 256),), ())
Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _cert(cn: str, key: Key, issuer: tuple[x509.Certificate, Key] | None, ca: bool) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(issuer[0].subject if issuer else name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _child(local: str, remote: str) -> ChildSaConfig:
    return ChildSaConfig("p", 10, [ESP], [ts.from_network(ipaddress.ip_network(local))],
                         [ts.from_network(ipaddress.ip_network(remote))])


class _Policy:
    def __init__(self, cfg: IkeSaConfig) -> None:
        self.cfg = cfg

    def ike_proposals(self, peer: object) -> list[IkeProposalSpec]:
        return self.cfg.proposals

    def authenticate(self, peer: object, id_type: int, id_data: bytes) -> list[IkeSaConfig]:
        return [self.cfg]

    def announce(self, peer: object) -> object:
        return self.cfg.auth

    def fragmentation(self, peer: object) -> FragmentationConfig | None:
        return self.cfg.fragmentation

    def select_child(self, sa: object, tsi: object, tsr: object) -> ChildSaConfig:
        return _child("10.2.0.0/24", "10.1.0.0/24")


def _configs(kind: str) -> tuple[IkeSaConfig, IkeSaConfig]:
    if kind == "psk":
        return (IkeSaConfig([IKE], b"bench-psk", (2, b"i.example")),
                IkeSaConfig([IKE], b"bench-psk", (2, b"r.example")))
    root_key = rsa.generate_private_key(65537, 3072)
    root = _cert("root", root_key, None, True)
    inter_key = rsa.generate_private_key(65537, 3072)
    inter = _cert("inter", inter_key, (root, root_key), True)
    out = []
    for cn in ("i.example", "r.example"):
        key: Key = ec.generate_private_key(ec.SECP256R1()) if kind == "ecdsa" else rsa.generate_private_key(65537, 3072)
        cert = _cert(cn, key, (inter, inter_key), False)
        method = AuthenticationMethod.ECDSA_SIGNATURE if kind == "ecdsa" else AuthenticationMethod.RSA_SIGNATURE
        # ECDSA: the intermediate imported as a CA on both ends (no chain sent); RSA: the chain is sent.
        chain = kind != "ecdsa"
        settings = AuthSettings(method=method, local=LocalCredential(cert, key, (inter,)), send_chain=chain,
                                cas=(root,) if chain else (root, inter))
        auth = CertificateAuthenticator(settings, clock=lambda: NOW)
        if kind == "rsa-classic":
            class Legacy(CertificateAuthenticator):
                def hash_algorithms(self) -> bytes:
                    return b""
            auth = Legacy(settings, clock=lambda: NOW)
        frag = FragmentationConfig(enabled=True, fragment_size=576) if kind == "rsa" else None
        out.append(IkeSaConfig([IKE], b"", (2, cn.encode()), auth=auth, fragmentation=frag))
    return out[0], out[1]


def run(kind: str, n: int) -> tuple[float, float, int]:
    i_cfg, r_cfg = _configs(kind)
    policy = _Policy(r_cfg)
    i_addr, r_addr = ("192.0.2.1", 500), ("198.51.100.1", 500)
    i_cpu = r_cpu = 0.0
    datagrams = 0
    for _ in range(n):
        t = time.process_time()
        ini = IkeSa(i_cfg, initiator=True, local=i_addr, peer=r_addr, now=0.0)
        ini.initiate(0.0, _child("10.1.0.0/24", "10.2.0.0/24"))
        i_cpu += time.process_time() - t
        res = IkeSa(None, initiator=False, local=r_addr, peer=i_addr, now=0.0, policy=policy)  # type: ignore[arg-type]
        for _round in range(4):
            t = time.process_time()
            out = ini.datagrams_to_send()
            i_cpu += time.process_time() - t
            t = time.process_time()
            for data, _, _ in out:
                res.receive_datagram(data, i_addr, 0.0, local=r_addr)
            back = res.datagrams_to_send()
            r_cpu += time.process_time() - t
            datagrams += len(out) + len(back)
            t = time.process_time()
            for data, _, _ in back:
                ini.receive_datagram(data, r_addr, 0.0, local=i_addr)
            i_cpu += time.process_time() - t
        if not (ini.established and res.established):
            raise SystemExit(f"{kind}: not established: {[ini.next_event(), res.next_event()]}")
    return 1000 * i_cpu / n, 1000 * r_cpu / n, datagrams // n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=200)
    args = ap.parse_args()
    print(f"IKEv2 set-up CPU per SA, in memory, {args.n} set-ups, X25519/AES-CBC-256/SHA2-256, Child SA in IKE_AUTH")
    print(f"  {'authentication':42} {'initiator ms':>12} {'responder ms':>12} {'datagrams':>9}")
    for kind, label in (("psk", "PSK"), ("ecdsa", "ECDSA P-256, RFC 7427"),
                        ("rsa", "RSA-3072 + chain, RFC 7427, 576 B fragments"), ("rsa-classic", "RSA-3072, method 1")):
        i_ms, r_ms, grams = run(kind, args.n)
        print(f"  {label:42} {i_ms:12.3f} {r_ms:12.3f} {grams:9d}")


if __name__ == "__main__":
    main()

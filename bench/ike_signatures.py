"""CPU cost of the signatures IKE authenticates with, per operation, on one core (best of --repeat runs).

IKEv1 (RFC 2409 §5.1): RSA block type 1 without DigestInfo through ``cryptography``'s ``NoDigestInfo`` (the
last session's pure-Python blinded exponentiation took 9-14 ms for RSA-2048), ECDSA over the bare
HASH_I. IKEv2: AUTH method 1 (RSA PKCS#1 v1.5 SHA-1) and 14 (RFC 7427, ECDSA with SHA-256) for comparison.
Also the AEADs of SK payloads and ESP for a 1,400-byte message: AES-GCM-256 and ChaCha20-Poly1305.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ikegate.ike.crypto import encr_alg
from ikegate.ike.wire.registry import AuthMethod, EncrId
from ikegate.pki.signature import HashAlgorithm, Scheme, SchemeKind, auth_sign, ikev1_sign, ikev1_verify


def best(run: Callable[[], object], count: int, repeat: int) -> float:
    """Microseconds per call, the best of ``repeat`` batches of ``count``."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(count):
            run()
        times.append((time.perf_counter() - start) / count)
    return min(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    hash_i = bytes(range(32))
    keys: list[tuple[str, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey]] = [
        ("RSA-2048", rsa.generate_private_key(65537, 2048)), ("RSA-3072", rsa.generate_private_key(65537, 3072)),
        ("ECDSA-P256", ec.generate_private_key(ec.SECP256R1())),
        ("ECDSA-P384", ec.generate_private_key(ec.SECP384R1()))]
    for name, key in keys:
        sig = ikev1_sign(key, hash_i)
        sign = best(lambda k=key: ikev1_sign(k, hash_i), args.count, args.repeat)
        verify = best(lambda k=key, s=sig: ikev1_verify(k.public_key(), hash_i, s), args.count, args.repeat)
        print(f"IKEv1 SIG  {name:11s} sign {sign:8.1f} us   verify {verify:7.1f} us")
    octets = bytes(600)
    rsa2048 = keys[0][1]
    p256 = keys[2][1]
    method1 = best(lambda: auth_sign(AuthMethod.RSA_SIG, rsa2048, octets), args.count, args.repeat)
    print(f"IKEv2 AUTH RSA-2048 method 1  sign {method1:8.1f} us")
    scheme = Scheme(SchemeKind.ECDSA, HashAlgorithm.SHA2_256)
    method14 = best(lambda: auth_sign(AuthMethod.DIGITAL_SIGNATURE, p256, octets, scheme), args.count, args.repeat)
    print(f"IKEv2 AUTH P-256 method 14    sign {method14:8.1f} us")
    message, iv = bytes(1400), bytes(8)
    for label, encr_id, bits in (("AES-GCM-256", EncrId.AES_GCM_16, 256),
                                 ("ChaCha20-Poly1305", EncrId.CHACHA20_POLY1305, None)):
        alg = encr_alg(encr_id, bits)
        cipher = alg.keyed(bytes(alg.keymat_size))
        seal = best(lambda c=cipher: c.encrypt(iv, message, b"aad"), args.count * 10, args.repeat)
        print(f"AEAD 1400 B {label:18s} seal {seal:6.2f} us")


if __name__ == "__main__":
    main()

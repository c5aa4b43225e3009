"""IKE transforms, Diffie-Hellman groups and key derivation, all on the `cryptography` package."""

from ikegate.ike.crypto.dh import DhGroup, DhKey, dh_group
from ikegate.ike.crypto.errors import CryptoError, UnsupportedTransform
from ikegate.ike.crypto.keys import (
    ChildKeys,
    IkeKeys,
    derive_child_keys,
    derive_ike_keys,
    psk_auth,
    rekey_skeyseed,
    signed_octets,
    skeyseed,
)
from ikegate.ike.crypto.transforms import (
    Cipher,
    EncrAlg,
    IntegAlg,
    Mac,
    PrfAlg,
    encr_alg,
    integ_alg,
    prf_alg,
)

__all__ = [
    "ChildKeys",
    "Cipher",
    "CryptoError",
    "DhGroup",
    "DhKey",
    "EncrAlg",
    "IkeKeys",
    "IntegAlg",
    "Mac",
    "PrfAlg",
    "UnsupportedTransform",
    "derive_child_keys",
    "derive_ike_keys",
    "dh_group",
    "encr_alg",
    "integ_alg",
    "prf_alg",
    "psk_auth",
    "rekey_skeyseed",
    "signed_octets",
    "skeyseed",
]

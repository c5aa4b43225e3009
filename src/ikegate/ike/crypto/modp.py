"""Finite-field (MODP) Diffie-Hellman, shielded from the library's FFDH deprecation.

cryptography 50 deprecated ``hazmat.primitives.asymmetric.dh`` (every attribute access warns) and
FFDH may move to ``hazmat.decrepit`` or go away. IKE peers, Huawei USGs first, still offer MODP
groups, so this module takes FFDH from ``decrepit`` when it exists, else from ``primitives`` with the
warning silenced once at import, and else falls back to pure-Python ``pow()``: about ten times slower,
but enough for the few legacy peers that need it. The backends are objects so a test can run both on
the same numbers and prove they agree.

The primes are those of RFC 2409 §6.2 (group 2) and RFC 3526 §2-§5 (groups 5, 14, 15, 16), all with
generator 2; the unit tests re-derive every one from the RFCs' formula rather than trusting this hex.
"""

from __future__ import annotations

import importlib
import secrets
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from ikegate.ike.crypto.errors import CryptoError
from ikegate.ike.wire.registry import DhId

__all__ = [
    "MODP_GROUPS",
    "LibraryBackend",
    "ModpBackend",
    "ModpParams",
    "ModpPrivate",
    "PureBackend",
    "check_peer_value",
    "default_backend",
    "library_backend",
]


def _hex(text: str) -> int:
    return int(text.replace(" ", ""), 16)


# RFC 2409 §6.2 (Second Oakley Group) and RFC 3526 §2, §3, §4, §5; each RFC defines its prime as
# p = 2^N - 2^(N-64) - 1 + 2^64 * (floor(2^(N-130) * pi) + K) and prints it in this hex.
_P2 = _hex(
    "FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1 29024E08 8A67CC74"
    "020BBEA6 3B139B22 514A0879 8E3404DD EF9519B3 CD3A431B 302B0A6D F25F1437"
    "4FE1356D 6D51C245 E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED"
    "EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE65381 FFFFFFFF FFFFFFFF"
)

_P5 = _hex(
    "FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1 29024E08 8A67CC74"
    "020BBEA6 3B139B22 514A0879 8E3404DD EF9519B3 CD3A431B 302B0A6D F25F1437"
    "4FE1356D 6D51C245 E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED"
    "EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D C2007CB8 A163BF05"
    "98DA4836 1C55D39A 69163FA8 FD24CF5F 83655D23 DCA3AD96 1C62F356 208552BB"
    "9ED52907 7096966D 670C354E 4ABC9804 F1746C08 CA237327 FFFFFFFF FFFFFFFF"
)

_P14 = _hex(
    "FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1 29024E08 8A67CC74"
    "020BBEA6 3B139B22 514A0879 8E3404DD EF9519B3 CD3A431B 302B0A6D F25F1437"
    "4FE1356D 6D51C245 E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED"
    "EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D C2007CB8 A163BF05"
    "98DA4836 1C55D39A 69163FA8 FD24CF5F 83655D23 DCA3AD96 1C62F356 208552BB"
    "9ED52907 7096966D 670C354E 4ABC9804 F1746C08 CA18217C 32905E46 2E36CE3B"
    "E39E772C 180E8603 9B2783A2 EC07A28F B5C55DF0 6F4C52C9 DE2BCBF6 95581718"
    "3995497C EA956AE5 15D22618 98FA0510 15728E5A 8AACAA68 FFFFFFFF FFFFFFFF"
)

_P15 = _hex(
    "FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1 29024E08 8A67CC74"
    "020BBEA6 3B139B22 514A0879 8E3404DD EF9519B3 CD3A431B 302B0A6D F25F1437"
    "4FE1356D 6D51C245 E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED"
    "EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D C2007CB8 A163BF05"
    "98DA4836 1C55D39A 69163FA8 FD24CF5F 83655D23 DCA3AD96 1C62F356 208552BB"
    "9ED52907 7096966D 670C354E 4ABC9804 F1746C08 CA18217C 32905E46 2E36CE3B"
    "E39E772C 180E8603 9B2783A2 EC07A28F B5C55DF0 6F4C52C9 DE2BCBF6 95581718"
    "3995497C EA956AE5 15D22618 98FA0510 15728E5A 8AAAC42D AD33170D 04507A33"
    "A85521AB DF1CBA64 ECFB8504 58DBEF0A 8AEA7157 5D060C7D B3970F85 A6E1E4C7"
    "ABF5AE8C DB0933D7 1E8C94E0 4A25619D CEE3D226 1AD2EE6B F12FFA06 D98A0864"
    "D8760273 3EC86A64 521F2B18 177B200C BBE11757 7A615D6C 770988C0 BAD946E2"
    "08E24FA0 74E5AB31 43DB5BFC E0FD108E 4B82D120 A93AD2CA FFFFFFFF FFFFFFFF"
)

_P16 = _hex(
    "FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1 29024E08 8A67CC74"
    "020BBEA6 3B139B22 514A0879 8E3404DD EF9519B3 CD3A431B 302B0A6D F25F1437"
    "4FE1356D 6D51C245 E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED"
    "EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D C2007CB8 A163BF05"
    "98DA4836 1C55D39A 69163FA8 FD24CF5F 83655D23 DCA3AD96 1C62F356 208552BB"
    "9ED52907 7096966D 670C354E 4ABC9804 F1746C08 CA18217C 32905E46 2E36CE3B"
    "E39E772C 180E8603 9B2783A2 EC07A28F B5C55DF0 6F4C52C9 DE2BCBF6 95581718"
    "3995497C EA956AE5 15D22618 98FA0510 15728E5A 8AAAC42D AD33170D 04507A33"
    "A85521AB DF1CBA64 ECFB8504 58DBEF0A 8AEA7157 5D060C7D B3970F85 A6E1E4C7"
    "ABF5AE8C DB0933D7 1E8C94E0 4A25619D CEE3D226 1AD2EE6B F12FFA06 D98A0864"
    "D8760273 3EC86A64 521F2B18 177B200C BBE11757 7A615D6C 770988C0 BAD946E2"
    "08E24FA0 74E5AB31 43DB5BFC E0FD108E 4B82D120 A9210801 1A723C12 A787E6D7"
    "88719A10 BDBA5B26 99C32718 6AF4E23C 1A946834 B6150BDA 2583E9CA 2AD44CE8"
    "DBBBC2DB 04DE8EF9 2E8EFC14 1FBECAA6 287C5947 4E6BC05D 99B2964F A090C3A2"
    "233BA186 515BE7ED 1F612970 CEE2D7AF B81BDD76 2170481C D0069127 D5B05AA9"
    "93B4EA98 8D8FDDC1 86FFB7DC 90A6C08F 4DF435C9 34063199 FFFFFFFF FFFFFFFF"
)


@dataclass(frozen=True, slots=True)
class ModpParams:
    """One MODP group: prime, generator, KE size, and the exponent size for the pure backend."""

    group_id: int
    name: str
    p: int
    g: int
    size: int  # bytes of p, hence of the KE data and of g^ir
    exponent_bits: int  # twice the group's strength estimate (RFC 3526 §8), for the pow() fallback


MODP_GROUPS: dict[int, ModpParams] = {
    params.group_id: params
    for params in (
        ModpParams(int(DhId.MODP_1024), "MODP-1024", _P2, 2, 128, 160),
        ModpParams(int(DhId.MODP_1536), "MODP-1536", _P5, 2, 192, 200),
        ModpParams(int(DhId.MODP_2048), "MODP-2048", _P14, 2, 256, 256),
        ModpParams(int(DhId.MODP_3072), "MODP-3072", _P15, 2, 384, 320),
        ModpParams(int(DhId.MODP_4096), "MODP-4096", _P16, 2, 512, 384),
    )
}


def check_peer_value(params: ModpParams, y: int) -> None:
    """Refuse a peer public value outside 2..p-2 (RFC 6989 §2.1): 0, 1 and p-1 give known secrets."""
    if not 2 <= y <= params.p - 2:
        raise CryptoError(f"{params.name} public value out of range")


class ModpPrivate(ABC):
    """One side's ephemeral MODP key."""

    __slots__ = ()

    @property
    @abstractmethod
    def public(self) -> int:
        """g^x mod p."""

    @abstractmethod
    def shared(self, peer: int) -> bytes:
        """peer^x mod p, big-endian and left-padded to len(p) as IKE requires (RFC 7296 §2.14).

        The caller has range-checked ``peer`` already.
        """


class ModpBackend(ABC):
    """Where the modular exponentiations happen."""

    name: str

    @abstractmethod
    def generate(self, params: ModpParams) -> ModpPrivate:
        """A fresh ephemeral key."""

    @abstractmethod
    def from_private(self, params: ModpParams, x: int) -> ModpPrivate:
        """A key with a given exponent, for known-answer tests and backend cross-checks."""


# ---------------------------------------------------------------------------- pure Python backend


class _PurePrivate(ModpPrivate):
    __slots__ = ("_params", "_public", "_x")

    def __init__(self, params: ModpParams, x: int) -> None:
        self._params = params
        self._x = x
        self._public = pow(params.g, x, params.p)

    @property
    def public(self) -> int:
        return self._public

    def shared(self, peer: int) -> bytes:
        params = self._params
        return pow(peer, self._x, params.p).to_bytes(params.size, "big")


class PureBackend(ModpBackend):
    """``pow()`` on Python ints: always available; short exponents keep it at a few ms per exchange."""

    name = "pure"

    def generate(self, params: ModpParams) -> ModpPrivate:
        bits = params.exponent_bits
        return _PurePrivate(params, secrets.randbelow((1 << bits) - 2) + 2)

    def from_private(self, params: ModpParams, x: int) -> ModpPrivate:
        return _PurePrivate(params, x)


# ------------------------------------------------------------------------------ library backend


def _load_ffdh() -> tuple[str, Any, Any, Any] | None:
    """(module, DHParameterNumbers, DHPublicNumbers, DHPrivateNumbers) from the best home, or None.

    The names are fetched once, inside ``catch_warnings``: the deprecation warning fires on attribute
    access to the module, not on use of the classes, so nothing leaks afterwards.
    """
    for module in (
        "cryptography.hazmat.decrepit.asymmetric.dh",
        "cryptography.hazmat.primitives.asymmetric.dh",
    ):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mod = importlib.import_module(module)
                return module, mod.DHParameterNumbers, mod.DHPublicNumbers, mod.DHPrivateNumbers
        except (ImportError, AttributeError):
            continue
    return None


_FFDH = _load_ffdh()


class _LibraryPrivate(ModpPrivate):
    __slots__ = ("_key", "_numbers", "_params", "_public", "_public_numbers")

    def __init__(self, params: ModpParams, numbers: Any, public_numbers: Any, key: Any) -> None:
        self._params = params
        self._numbers = numbers  # DHParameterNumbers of the group
        self._public_numbers = public_numbers  # the DHPublicNumbers class
        self._key = key
        self._public: int = key.public_key().public_numbers().y

    @property
    def public(self) -> int:
        return self._public

    def shared(self, peer: int) -> bytes:
        try:
            peer_key = self._public_numbers(peer, self._numbers).public_key()
            secret: bytes = self._key.exchange(peer_key)
        except ValueError as exc:
            raise CryptoError(f"{self._params.name} public value rejected: {exc}") from None
        return secret.rjust(self._params.size, b"\0")


class LibraryBackend(ModpBackend):
    """OpenSSL through ``cryptography``: full-size exponents at about half a millisecond per exchange."""

    def __init__(
        self, module: str, parameter_numbers: Any, public_numbers: Any, private_numbers: Any
    ) -> None:
        self.name = module
        self._parameter_numbers = parameter_numbers
        self._public_numbers = public_numbers
        self._private_numbers = private_numbers
        # Building DHParameters validates the group, which is slow: once per group per process.
        self._cache: dict[int, tuple[Any, Any]] = {}

    def _group(self, params: ModpParams) -> tuple[Any, Any]:
        cached = self._cache.get(params.group_id)
        if cached is None:
            numbers = self._parameter_numbers(params.p, params.g)
            cached = (numbers, numbers.parameters())
            self._cache[params.group_id] = cached
        return cached

    def generate(self, params: ModpParams) -> ModpPrivate:
        numbers, parameters = self._group(params)
        return _LibraryPrivate(params, numbers, self._public_numbers, parameters.generate_private_key())

    def from_private(self, params: ModpParams, x: int) -> ModpPrivate:
        numbers, _ = self._group(params)
        public = self._public_numbers(pow(params.g, x, params.p), numbers)
        try:
            key = self._private_numbers(x, public).private_key()
        except ValueError as exc:
            raise CryptoError(f"{params.name} private value rejected: {exc}") from None
        return _LibraryPrivate(params, numbers, self._public_numbers, key)


_LIBRARY: LibraryBackend | None = LibraryBackend(*_FFDH) if _FFDH is not None else None
_PURE = PureBackend()


def library_backend() -> LibraryBackend | None:
    """The ``cryptography`` backend, or None when this version no longer ships FFDH."""
    return _LIBRARY


def default_backend() -> ModpBackend:
    """The library when present, else ``pow()``."""
    return _LIBRARY if _LIBRARY is not None else _PURE

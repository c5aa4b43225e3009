"""Diffie-Hellman groups of the IKEv2 KE payload: MODP, NIST ECP and Curve25519.

Each group turns the library's key objects into the byte strings IKE carries, so the state machines
see only ``public`` (KE payload data) and ``shared()`` (g^ir). The encodings differ per family and are
easy to get subtly wrong, so they live here and nowhere else:

- MODP: y big-endian, left-padded to len(p) (RFC 7296 §3.4); g^ir likewise padded.
- ECP: x | y without the 0x04 point-format octet, each coordinate padded to the field size; g^ir is
  x alone (RFC 5903 §7, §9).
- Curve25519: the raw 32-byte u-coordinate both ways (RFC 8031 §2).

Every peer value is validated before use (RFC 7296 §5.12, RFC 6989, RFC 8031 §3); a failure raises
``CryptoError``, which the exchange answers with INVALID_SYNTAX or a failed negotiation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ikegate.ike.crypto import modp
from ikegate.ike.crypto.errors import CryptoError, UnsupportedTransform
from ikegate.ike.wire.registry import DhId

__all__ = ["DhGroup", "DhKey", "ModpGroup", "dh_group"]


class DhKey(ABC):
    """One side's ephemeral key: its KE payload data and the computation of g^ir."""

    __slots__ = ("group", "public")

    def __init__(self, group: DhGroup, public: bytes) -> None:
        self.group = group
        self.public = public

    @abstractmethod
    def shared(self, peer_public: bytes) -> bytes:
        """g^ir from the peer's KE data; an invalid peer value raises ``CryptoError``."""


class DhGroup(ABC):
    """A Diffie-Hellman group of the IKEv2 transform type 4 registry."""

    __slots__ = ("id", "name", "public_size")

    def __init__(self, group_id: int, name: str, public_size: int) -> None:
        self.id = group_id
        self.name = name
        self.public_size = public_size

    def __repr__(self) -> str:
        return f"<DhGroup {self.id} {self.name}>"

    @abstractmethod
    def generate(self) -> DhKey:
        """A fresh ephemeral key."""

    @abstractmethod
    def from_private(self, private: bytes) -> DhKey:
        """A key from fixed private bytes, for known-answer tests.

        Big-endian integer for MODP and ECP, the raw 32-byte scalar for Curve25519.
        """

    def _check_length(self, peer_public: bytes) -> None:
        if len(peer_public) != self.public_size:
            raise CryptoError(f"{self.name} KE data must be {self.public_size} bytes, got {len(peer_public)}")


# -------------------------------------------------------------------------------------------- MODP


class _ModpKey(DhKey):
    __slots__ = ("_private",)

    group: ModpGroup

    def __init__(self, group: ModpGroup, private: modp.ModpPrivate) -> None:
        super().__init__(group, private.public.to_bytes(group.public_size, "big"))
        self._private = private

    def shared(self, peer_public: bytes) -> bytes:
        group = self.group
        group._check_length(peer_public)
        y = int.from_bytes(peer_public, "big")
        modp.check_peer_value(group.params, y)
        return self._private.shared(y)


class ModpGroup(DhGroup):
    """A MODP group on a chosen backend; ``dh_group()`` picks the library, tests may pick ``pow()``."""

    __slots__ = ("backend", "params")

    def __init__(self, params: modp.ModpParams, backend: modp.ModpBackend) -> None:
        super().__init__(params.group_id, params.name, params.size)
        self.params = params
        self.backend = backend

    def generate(self) -> DhKey:
        return _ModpKey(self, self.backend.generate(self.params))

    def from_private(self, private: bytes) -> DhKey:
        x = int.from_bytes(private, "big")
        if not 1 < x < self.params.p - 1:
            raise CryptoError(f"{self.name} private exponent out of range")
        return _ModpKey(self, self.backend.from_private(self.params, x))


# --------------------------------------------------------------------------------------------- ECP


class _EcpKey(DhKey):
    __slots__ = ("_private",)

    group: _EcpGroup

    def __init__(self, group: _EcpGroup, private: ec.EllipticCurvePrivateKey) -> None:
        point = private.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        super().__init__(group, point[1:])
        self._private = private

    def shared(self, peer_public: bytes) -> bytes:
        group = self.group
        group._check_length(peer_public)
        try:
            peer = ec.EllipticCurvePublicKey.from_encoded_point(group.curve, b"\x04" + peer_public)
            return self._private.exchange(ec.ECDH(), peer)
        except ValueError:
            raise CryptoError(f"{group.name} public value is not a point on the curve") from None


class _EcpGroup(DhGroup):
    __slots__ = ("curve",)

    def __init__(self, group_id: int, name: str, curve: ec.EllipticCurve, coordinate_size: int) -> None:
        super().__init__(group_id, name, 2 * coordinate_size)
        self.curve = curve

    def generate(self) -> DhKey:
        return _EcpKey(self, ec.generate_private_key(self.curve))

    def from_private(self, private: bytes) -> DhKey:
        try:
            key = ec.derive_private_key(int.from_bytes(private, "big"), self.curve)
        except ValueError:
            raise CryptoError(f"{self.name} private scalar out of range") from None
        return _EcpKey(self, key)


# -------------------------------------------------------------------------------------- Curve25519


class _X25519Key(DhKey):
    __slots__ = ("_private",)

    def __init__(self, group: _X25519Group, private: x25519.X25519PrivateKey) -> None:
        super().__init__(group, private.public_key().public_bytes_raw())
        self._private = private

    def shared(self, peer_public: bytes) -> bytes:
        self.group._check_length(peer_public)
        try:
            secret = self._private.exchange(x25519.X25519PublicKey.from_public_bytes(peer_public))
        except ValueError:
            # The library refuses an all-zero result, i.e. a low-order peer point (RFC 8031 §3).
            raise CryptoError("Curve25519 public value is a low-order point") from None
        if not any(secret):  # the check RFC 8031 §3 demands, kept in case a backend stops doing it
            raise CryptoError("Curve25519 shared secret is all zero")
        return secret


class _X25519Group(DhGroup):
    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(int(DhId.CURVE_25519), "Curve25519", 32)

    def generate(self) -> DhKey:
        return _X25519Key(self, x25519.X25519PrivateKey.generate())

    def from_private(self, private: bytes) -> DhKey:
        if len(private) != 32:
            raise CryptoError("Curve25519 private key must be 32 bytes")
        return _X25519Key(self, x25519.X25519PrivateKey.from_private_bytes(private))


def _build_groups() -> dict[int, DhGroup]:
    backend = modp.default_backend()
    groups: list[DhGroup] = [ModpGroup(params, backend) for params in modp.MODP_GROUPS.values()]
    groups += [
        _EcpGroup(int(DhId.ECP_256), "ECP-256", ec.SECP256R1(), 32),
        _EcpGroup(int(DhId.ECP_384), "ECP-384", ec.SECP384R1(), 48),
        _EcpGroup(int(DhId.ECP_521), "ECP-521", ec.SECP521R1(), 66),
        _X25519Group(),
    ]
    return {group.id: group for group in groups}


_GROUPS = _build_groups()


def dh_group(group_id: int) -> DhGroup:
    """The group for a transform ID, or ``UnsupportedTransform`` (answered with INVALID_KE_PAYLOAD)."""
    try:
        return _GROUPS[group_id]
    except KeyError:
        raise UnsupportedTransform(f"DH group {DhId.text(group_id)} is not supported") from None

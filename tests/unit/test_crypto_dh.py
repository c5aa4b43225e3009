"""Diffie-Hellman groups: RFC known answers, the MODP primes re-derived, both MODP backends, bad peers."""

from __future__ import annotations

import importlib
import subprocess
import sys
from decimal import Decimal, localcontext
from functools import cache

import pytest

from ikegate.ike.crypto import CryptoError, UnsupportedTransform, dh_group, modp
from ikegate.ike.crypto.dh import ModpGroup
from ikegate.ike.wire.registry import DhId

H = bytes.fromhex

# ---------------------------------------------------------------------------------------------------
# RFC 5903 §8.1 (256-bit), §8.2 (384-bit), §8.3 (521-bit) random ECP groups: i, g^i = (x, y), r,
# g^r = (x, y) and the x coordinate of g^ir, which is all IKEv2 uses as the shared secret (§9).
# ---------------------------------------------------------------------------------------------------
_RFC5903 = {
    DhId.ECP_256: dict(
        i="c88f01f510d9ac3f70a292daa2316de544e9aab8afe84049c62a9c57862d1433",
        gix="dad0b65394221cf9b051e1feca5787d098dfe637fc90b9ef945d0c3772581180",
        giy="5271a0461cdb8252d61f1c456fa3e59ab1f45b33accf5f58389e0577b8990bb3",
        r="c6ef9c5d78ae012a011164acb397ce2088685d8f06bf9be0b283ab46476bee53",
        grx="d12dfb5289c8d4f81208b70270398c342296970a0bccb74c736fc7554494bf63",
        gry="56fbf3ca366cc23e8157854c13c58d6aac23f046ada30f8353e74f33039872ab",
        girx="d6840f6b42f6edafd13116e0e12565202fef8e9ece7dce03812464d04b9442de",
    ),
    DhId.ECP_384: dict(
        i="099f3c7034d4a2c699884d73a375a67f7624ef7c6b3c0f160647b67414dce655e35b538041e649ee3faef896783ab194",
        gix="667842d7d180ac2cde6f74f37551f55755c7645c20ef73e31634fe72b4c55ee6"
        "de3ac808acb4bdb4c88732aee95f41aa",
        giy="9482ed1fc0eeb9cafc4984625ccfc23f65032149e0e144ada024181535a0f38e"
        "eb9fcff3c2c947dae69b4c634573a81c",
        r="41cb0779b4bdb85d47846725fbec3c9430fab46cc8dc5060855cc9bda0aa2942e0308312916b8ed2960e4bd55a7448fc",
        grx="e558dbef53eecde3d3fccfc1aea08a89a987475d12fd950d83cfa41732bc509d"
        "0d1ac43a0336def96fda41d0774a3571",
        gry="dcfbec7aacf3196472169e838430367f66eebe3c6e70c416dd5f0c68759dd1ff"
        "f83fa40142209dff5eaad96db9e6386c",
        girx="11187331c279962d93d604243fd592cb9d0a926f422e47187521287e7156c5c4"
        "d603135569b9e9d09cf5d4a270f59746",
    ),
    DhId.ECP_521: dict(
        i="0037ade9319a89f4dabdb3ef411aaccca5123c61acab57b5393dce47608172a0"
        "95aa85a30fe1c2952c6771d937ba9777f5957b2639bab072462f68c27a57382d4a52",
        gix="0015417e84dbf28c0ad3c278713349dc7df153c897a1891bd98bab4357c9ecbe"
        "e1e3bf42e00b8e380aeae57c2d107564941885942af5a7f4601723c4195d176ced3e",
        giy="017cae20b6641d2eeb695786d8c946146239d099e18e1d5a514c739d7cb4a10a"
        "d8a788015ac405d7799dc75e7b7d5b6cf2261a6a7f1507438bf01beb6ca3926f9582",
        r="0145ba99a847af43793fdd0e872e7cdfa16be30fdc780f97bccc3f078380201e"
        "9c677d600b343757a3bdbf2a3163e4c2f869cca7458aa4a4effc311f5cb151685eb9",
        grx="00d0b3975ac4b799f5bea16d5e13e9af971d5e9b984c9f39728b5e5739735a21"
        "9b97c356436adc6e95bb0352f6be64a6c2912d4ef2d0433ced2b6171640012d9460f",
        gry="015c68226383956e3bd066e797b623c27ce0eac2f551a10c2c724d9852077b87"
        "220b6536c5c408a1d2aebb8e86d678ae49cb57091f4732296579ab44fcd17f0fc56a",
        girx="01144c7d79ae6956bc8edb8e7c787c4521cb086fa64407f97894e5e6b2d79b04"
        "d1427e73ca4baa240a34786859810c06b3c715a3a8cc3151f2bee417996d19f3ddea",
    ),
}


@pytest.mark.parametrize("group_id", list(_RFC5903))
def test_ecp_matches_rfc5903(group_id: DhId) -> None:
    v = _RFC5903[group_id]
    group = dh_group(group_id)
    initiator = group.from_private(H(v["i"]))
    responder = group.from_private(H(v["r"]))
    assert initiator.public == H(v["gix"] + v["giy"])  # x | y, no 0x04 octet (RFC 5903 §7)
    assert responder.public == H(v["grx"] + v["gry"])
    assert initiator.shared(responder.public) == H(v["girx"])
    assert responder.shared(initiator.public) == H(v["girx"])


# RFC 7748 §6.1: Alice's and Bob's X25519 keys and their shared secret (RFC 8031 §2 carries them raw).
_X25519_ALICE = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
_X25519_ALICE_PUB = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
_X25519_BOB = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
_X25519_BOB_PUB = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
_X25519_SHARED = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"


def test_x25519_matches_rfc7748() -> None:
    group = dh_group(DhId.CURVE_25519)
    alice = group.from_private(H(_X25519_ALICE))
    bob = group.from_private(H(_X25519_BOB))
    assert alice.public == H(_X25519_ALICE_PUB)
    assert bob.public == H(_X25519_BOB_PUB)
    assert alice.shared(bob.public) == H(_X25519_SHARED)
    assert bob.shared(alice.public) == H(_X25519_SHARED)


# ---------------------------------------------------------------------------------------------------
# The MODP primes, re-derived from the definitions instead of compared with a second copy of the hex:
# RFC 2409 §6.2 and RFC 3526 §2-§5 define p = 2^N - 2^(N-64) - 1 + 2^64 * (floor(2^(N-130) pi) + K).
# ---------------------------------------------------------------------------------------------------
_MODP_DEFINITIONS = {  # group: (N, K)
    DhId.MODP_1024: (1024, 129093),  # RFC 2409 §6.2
    DhId.MODP_1536: (1536, 741804),  # RFC 3526 §2
    DhId.MODP_2048: (2048, 124476),  # RFC 3526 §3
    DhId.MODP_3072: (3072, 1690314),  # RFC 3526 §4
    DhId.MODP_4096: (4096, 240904),  # RFC 3526 §5
}


@cache
def _pi(digits: int) -> Decimal:
    """pi by Machin's formula, pi = 16 atan(1/5) - 4 atan(1/239), to ``digits`` decimal places."""
    with localcontext() as ctx:
        ctx.prec = digits + 10
        eps = Decimal(10) ** -(digits + 5)

        def atan_inv(n: int) -> Decimal:
            x = Decimal(1) / n
            x2 = x * x
            power, total, k, sign = x, x, 1, 1
            while True:
                power *= x2
                k += 2
                sign = -sign
                term = power / k
                if term < eps:
                    return total
                total += sign * term

        return 16 * atan_inv(5) - 4 * atan_inv(239)


def _rfc_prime(bits: int, k: int) -> int:
    digits = 1300  # 2^3966 * pi has about 1195 integer digits; the rest guards the floor()
    with localcontext() as ctx:
        ctx.prec = digits + 10
        scaled = int((Decimal(2) ** (bits - 130)) * _pi(digits))
    return (1 << bits) - (1 << (bits - 64)) - 1 + ((scaled + k) << 64)


def test_machin_pi_is_pi() -> None:
    assert str(_pi(60))[:52] == "3.14159265358979323846264338327950288419716939937510"


@pytest.mark.parametrize("group_id", list(_MODP_DEFINITIONS))
def test_modp_prime_matches_rfc_formula(group_id: DhId) -> None:
    bits, k = _MODP_DEFINITIONS[group_id]
    params = modp.MODP_GROUPS[group_id]
    assert params.p == _rfc_prime(bits, k)
    assert params.p.bit_length() == bits
    assert params.g == 2
    assert params.size == bits // 8 == dh_group(group_id).public_size


def _probably_prime(n: int, bases: tuple[int, ...] = (2, 3, 5)) -> bool:
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in bases:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


@pytest.mark.parametrize("group_id", [DhId.MODP_1024, DhId.MODP_2048])
def test_modp_prime_is_a_safe_prime(group_id: DhId) -> None:
    # Independent of any published digits: p and (p-1)/2 both pass Miller-Rabin.
    p = modp.MODP_GROUPS[group_id].p
    assert _probably_prime(p)
    assert _probably_prime((p - 1) // 2)
    assert not _probably_prime(p + 2)  # the test can fail


# ---------------------------------------------------------------------------------------------------
# MODP: the library and pow() backends agree
# ---------------------------------------------------------------------------------------------------
def _backends() -> list[modp.ModpBackend]:
    library = modp.library_backend()
    return [modp.PureBackend()] + ([library] if library is not None else [])


def test_library_backend_is_the_default_when_present() -> None:
    library = modp.library_backend()
    group = dh_group(DhId.MODP_2048)
    assert isinstance(group, ModpGroup)
    if library is None:
        assert isinstance(group.backend, modp.PureBackend)
    else:
        assert group.backend is library


@pytest.mark.parametrize("group_id", [DhId.MODP_1024, DhId.MODP_2048])
def test_modp_backends_agree(group_id: DhId) -> None:
    library = modp.library_backend()
    if library is None:
        pytest.skip("this cryptography release no longer ships FFDH")
    params = modp.MODP_GROUPS[group_id]
    lib_group = ModpGroup(params, library)
    pure_group = ModpGroup(params, modp.PureBackend())

    # A library key and a pow() key reach the same secret from both ends ...
    alice, bob = lib_group.generate(), pure_group.generate()
    secret = alice.shared(bob.public)
    assert secret == bob.shared(alice.public)
    assert len(secret) == params.size == len(alice.public) == len(bob.public)

    # ... and the same exponent gives the same public value and secret in either backend.
    x = bytes(range(1, 33))
    same_lib, same_pure = lib_group.from_private(x), pure_group.from_private(x)
    assert (
        same_lib.public
        == same_pure.public
        == pow(2, int.from_bytes(x, "big"), params.p).to_bytes(params.size, "big")
    )
    assert same_lib.shared(bob.public) == same_pure.shared(bob.public)


def test_modp_secret_keeps_leading_zeros() -> None:
    # g^ir is padded to len(p) (RFC 7296 §2.14): find a peer value whose secret starts with 0x00.
    params = modp.MODP_GROUPS[DhId.MODP_1024]
    for backend in _backends():
        key = ModpGroup(params, backend).from_private((3).to_bytes(1, "big"))
        y = next(y for y in range(2, 10_000) if pow(y, 3, params.p).bit_length() <= params.size * 8 - 8)
        secret = key.shared(y.to_bytes(params.size, "big"))
        assert len(secret) == params.size and secret[0] == 0
        assert int.from_bytes(secret, "big") == pow(y, 3, params.p)


def test_ffdh_import_leaks_no_warning() -> None:
    code = (
        "import warnings; warnings.simplefilter('error');"
        "from ikegate.ike.crypto import dh_group;"
        "g = dh_group(14); a = g.generate(); b = g.generate();"
        "assert a.shared(b.public) == b.shared(a.public)"
    )
    result = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_ffdh_loader_falls_back_when_nothing_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(name: str) -> object:
        raise ImportError(name)

    monkeypatch.setattr(importlib, "import_module", refuse)
    assert modp._load_ffdh() is None


# ---------------------------------------------------------------------------------------------------
# Invalid peer values (RFC 7296 §5.12, RFC 6989 §2, RFC 8031 §3)
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("group_id", [DhId.MODP_1024, DhId.MODP_2048])
def test_modp_rejects_degenerate_and_misframed_peer_values(group_id: DhId) -> None:
    params = modp.MODP_GROUPS[group_id]
    p, size = params.p, params.size
    bad_values = [0, 1, p - 1, p, p + 1, 2 ** (8 * size) - 1]
    for backend in _backends():
        key = ModpGroup(params, backend).generate()
        for y in bad_values:
            with pytest.raises(CryptoError):
                key.shared(y.to_bytes(size, "big"))
        with pytest.raises(CryptoError):
            key.shared(key.public[1:])
        with pytest.raises(CryptoError):
            key.shared(b"\0" + key.public)
        # The edges of the valid range are accepted.
        assert len(key.shared((2).to_bytes(size, "big"))) == size
        assert len(key.shared((p - 2).to_bytes(size, "big"))) == size


@pytest.mark.parametrize("group_id", [DhId.ECP_256, DhId.ECP_384, DhId.ECP_521])
def test_ecp_rejects_off_curve_and_misframed_points(group_id: DhId) -> None:
    group = dh_group(group_id)
    key, peer = group.generate(), group.generate()
    half = group.public_size // 2
    off_curve = bytearray(peer.public)
    off_curve[-1] ^= 1  # y + 1 or y - 1: not on the curve for the same x
    for bad in (
        bytes(off_curve),
        bytes(group.public_size),  # (0, 0): the "point at infinity" has no x | y encoding
        b"\xff" * group.public_size,  # coordinates >= p
        peer.public[:half] + bytes(half),
        peer.public[:-1],
        peer.public + b"\0",
        b"\x04" + peer.public,  # the X9.62 prefix does not belong in the KE payload
    ):
        with pytest.raises(CryptoError):
            key.shared(bad)
    assert key.shared(peer.public) == peer.shared(key.public)


@pytest.mark.parametrize(
    "low_order",
    [
        "0000000000000000000000000000000000000000000000000000000000000000",  # u = 0
        "0100000000000000000000000000000000000000000000000000000000000000",  # u = 1
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",  # order 8
    ],
)
def test_x25519_rejects_low_order_points(low_order: str) -> None:
    key = dh_group(DhId.CURVE_25519).generate()
    with pytest.raises(CryptoError):
        key.shared(H(low_order))


def test_x25519_rejects_wrong_length() -> None:
    group = dh_group(DhId.CURVE_25519)
    key, peer = group.generate(), group.generate()
    for bad in (peer.public[:-1], peer.public + b"\0", b""):
        with pytest.raises(CryptoError):
            key.shared(bad)
    with pytest.raises(CryptoError):
        group.from_private(bytes(31))


# ---------------------------------------------------------------------------------------------------
# Group table
# ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("group_id", "name", "size"),
    [
        (DhId.MODP_1024, "MODP-1024", 128),
        (DhId.MODP_1536, "MODP-1536", 192),
        (DhId.MODP_2048, "MODP-2048", 256),
        (DhId.MODP_3072, "MODP-3072", 384),
        (DhId.MODP_4096, "MODP-4096", 512),
        (DhId.ECP_256, "ECP-256", 64),
        (DhId.ECP_384, "ECP-384", 96),
        (DhId.ECP_521, "ECP-521", 132),
        (DhId.CURVE_25519, "Curve25519", 32),
    ],
)
def test_group_table_and_round_trip(group_id: DhId, name: str, size: int) -> None:
    group = dh_group(group_id)
    assert (group.id, group.name, group.public_size) == (group_id, name, size)
    assert dh_group(group_id) is group
    a, b = group.generate(), group.generate()
    assert a.group is group
    assert len(a.public) == size and a.public != b.public
    assert a.shared(b.public) == b.shared(a.public)


@pytest.mark.parametrize("group_id", [DhId.NONE, DhId.MODP_768, DhId.MODP_8192, DhId.CURVE_448, 24, 999])
def test_unknown_group_is_unsupported(group_id: int) -> None:
    with pytest.raises(UnsupportedTransform):
        dh_group(group_id)


@pytest.mark.parametrize("private", [0, 1])
def test_modp_from_private_range(private: int) -> None:
    with pytest.raises(CryptoError):
        dh_group(DhId.MODP_2048).from_private(private.to_bytes(32, "big"))

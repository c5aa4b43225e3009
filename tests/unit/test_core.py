"""The small shared pieces of ike/core, each alone: tables, Child SA moves, SPIs, lifetimes, outbox."""

from __future__ import annotations

import enum
import itertools

import pytest

from ikegate.ike.core.child import CHILD_TABLE, ChildState, ChildTrigger
from ikegate.ike.core.errors import ProtocolViolation
from ikegate.ike.core.ids import random_spi, spi_allocator
from ikegate.ike.core.lifetimes import jitter, soft_lifetime
from ikegate.ike.core.plumbing import Outbox
from ikegate.ike.core.table import Table


class S(enum.Enum):
    A = "a"
    B = "b"
    GONE = "gone"


class T(enum.Enum):
    GO = "go"
    END = "end"


def test_table_moves_and_refuses() -> None:
    table: Table[S, T] = Table("demo", {(S.A, T.GO): S.B}, anywhere={T.END: S.GONE})
    assert table.move(S.A, T.GO) is S.B
    assert table.move(S.B, T.END) is S.GONE
    with pytest.raises(ProtocolViolation, match="demo: go is not allowed in state b"):
        table.move(S.B, T.GO)
    assert table.allows(S.A, T.GO) and not table.allows(S.B, T.GO)
    assert list(table.edges()) == [(S.A, T.GO, S.B)]


def test_protocol_violation_is_not_bad_input() -> None:
    """The engines catch ValueError, KeyError, IndexError as bad input: a violation must be none of them."""
    assert not issubclass(ProtocolViolation, ValueError | KeyError | IndexError | ArithmeticError)


def test_child_table_lifecycle() -> None:
    s = CHILD_TABLE.move(ChildState.INSTALLED, ChildTrigger.REKEY)
    assert s is ChildState.REKEYING
    assert CHILD_TABLE.move(s, ChildTrigger.RESTORE) is ChildState.INSTALLED
    assert CHILD_TABLE.move(s, ChildTrigger.REPLACED) is ChildState.REKEYED
    assert CHILD_TABLE.move(ChildState.REKEYED, ChildTrigger.DELETE) is ChildState.DELETING
    for state in ChildState:
        assert CHILD_TABLE.move(state, ChildTrigger.DROP) is ChildState.DELETED


@pytest.mark.parametrize(("state", "trigger"), [
    (ChildState.REKEYING, ChildTrigger.REKEY),  # one rekey at a time
    (ChildState.REKEYED, ChildTrigger.REKEY),  # a replaced pair is not rekeyed again
    (ChildState.DELETING, ChildTrigger.REKEY),
    (ChildState.DELETED, ChildTrigger.REPLACED),
    (ChildState.DELETED, ChildTrigger.DELETE),
])
def test_child_table_refuses(state: ChildState, trigger: ChildTrigger) -> None:
    with pytest.raises(ProtocolViolation):
        CHILD_TABLE.move(state, trigger)


def _rng_from(chunks: list[bytes]):  # type: ignore[no-untyped-def]
    it = iter(chunks)
    return lambda n: next(it)[:n]


def test_random_spi_skips_reserved_range() -> None:
    rng = _rng_from([bytes(4), (255).to_bytes(4, "big"), (256).to_bytes(4, "big")])
    assert random_spi(rng) == 256


def test_spi_allocator_prefers_the_owners() -> None:
    counter = itertools.count(1000)
    assert spi_allocator(_rng_from([]), lambda: next(counter))() == 1000
    assert spi_allocator(_rng_from([(0x12345678).to_bytes(4, "big")]))() == 0x12345678


def test_jitter_spans_the_range() -> None:
    assert jitter(_rng_from([b"\x00\x00"]), 3.0) == 0.0
    assert jitter(_rng_from([b"\xff\xff"]), 3.0) == 3.0


def test_soft_lifetime_initiator_and_responder() -> None:
    zero = _rng_from([b"\x00\x00"] * 4)
    assert soft_lifetime(1000.0, True, zero) == 900.0
    assert soft_lifetime(1000.0, False, zero) == 950.0
    full = _rng_from([b"\xff\xff"])
    assert soft_lifetime(1000.0, True, full) == pytest.approx(870.0)


def test_outbox_drains_in_order() -> None:
    box: Outbox[str] = Outbox()
    box.send(b"1", ("a", 1), ("b", 2))
    box.send(b"2", ("a", 1), ("b", 2))
    box.report("up")
    box.report("down")
    assert [d[0] for d in box.datagrams()] == [b"1", b"2"]
    assert box.datagrams() == []
    assert (box.next_event(), box.next_event(), box.next_event()) == ("up", "down", None)


def test_psk_authenticator_signs_verifies_and_hides_the_key() -> None:
    import pytest

    from ikegate.ike.core.auth import AuthFailure, PeerCredentials, PskAuthenticator, authenticator_for
    from ikegate.ike.core.config import IkeSaConfig
    from ikegate.ike.crypto import prf_alg
    from ikegate.ike.wire.registry import AuthMethod, PrfId

    prf = prf_alg(PrfId.HMAC_SHA2_256)
    auth = authenticator_for(IkeSaConfig([], b"very-secret", (1, bytes(4))))
    peer = PeerCredentials(1, bytes(4))
    assert auth.method == AuthMethod.SHARED_KEY_MIC and not auth.uses_certificates
    assert auth.certreq() == auth.hash_algorithms() == b"" and auth.certificates(b"") == []
    method, mac = auth.sign(prf, b"octets")
    assert method == AuthMethod.SHARED_KEY_MIC
    assert auth.verify(prf, b"octets", method, mac, peer).method == AuthMethod.SHARED_KEY_MIC
    for octets, key, data in ((b"octets!", auth, mac), (b"octets", PskAuthenticator(b"other"), mac),
                              (b"octets", auth, mac[:-1])):
        with pytest.raises(AuthFailure, match="does not verify") as info:
            key.verify(prf, octets, method, data, peer)
        assert info.value.kind == "bad-psk"
    with pytest.raises(AuthFailure, match=r"^peer uses an authentication method not configured: RSA signature$"):
        auth.verify(prf, b"octets", AuthMethod.RSA_SIG, mac, peer)
    assert "very-secret" not in repr(auth)
    # IKEv1: the PSK enters SKEYID = prf(PSK, Ni | Nr)
    assert auth.skeyid(prf, b"ni", b"nr", b"gxy") == prf.compute(b"very-secret", b"ninr")

"""What an established SA keeps (issue 13, memory per SA): no cipher context, DH key or IKE_SA_INIT material
once authentication is done. Checked by walking the objects the engine references, so a field that starts
holding such an object again fails here, not only in a benchmark's megabytes."""

from __future__ import annotations

import gc

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ikegate.ike.crypto.dh import DhKey
from ikegate.ike.events import ChildSaEstablished, IkeSaEstablished
from tests.protocol import harness, harness_v1


def _held(root: object) -> list[object]:
    """Every object reachable from ``root`` (classes, modules and functions excluded: shared code)."""
    seen: dict[int, object] = {}
    stack = [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type) or type(obj).__name__ in ("module", "function"):
            continue
        seen[id(obj)] = obj
        stack.extend(gc.get_referents(obj))
    return list(seen.values())


def _kinds(root: object) -> set[str]:
    return {type(o).__name__ for o in _held(root) if isinstance(o, AESGCM | DhKey)}


def test_established_ikev2_sa_holds_no_cipher_context_dh_key_or_nonces() -> None:
    pair = harness.establish(harness.make_pair(i_cfg=harness.ike(proposals=[harness.GCM_ECP]),
                                               r_cfg=harness.ike(local_id="198.51.100.1",
                                                                 proposals=[harness.GCM_ECP])))
    assert pair.events("r", IkeSaEstablished) and pair.events("r", ChildSaEstablished)
    for sa in (pair.initiator, pair.responder):
        assert _kinds(sa) == set(), _kinds(sa)
        assert sa._ni == sa._nr == b"" and sa._init_request == sa._init_response == b""
    # the SK context keys its cipher on use: an INFORMATIONAL still goes both ways
    pair.initiator.delete(pair.now)
    pair.transfer()
    assert pair.initiator.finished and pair.responder.finished


def test_established_ikev1_sa_holds_no_dh_material() -> None:
    pair = harness_v1.establish(harness_v1.make_pair())
    responder = pair.responder
    assert responder.established and responder.children
    p1 = responder._p1
    assert p1.dh is None and p1.g_xi == p1.g_xr == p1.g_xy == p1.sai_b == b"" and not p1.candidates
    assert not any(isinstance(o, DhKey) for o in _held(responder))


def test_first_child_sa_is_keyed_from_the_ike_sa_init_nonces() -> None:
    """KEYMAT = prf+(SK_d, Ni | Nr) (RFC 7296 §2.17) with the nonces of IKE_SA_INIT, although the
    established SA no longer keeps them: both ends computing it from the same wrong input would still
    agree with each other, so the value is checked against the messages on the wire."""
    from ikegate.ike.wire.v2 import Nonce, decode_message

    pair = harness.establish(harness.make_pair())
    ni = decode_message(pair.sent_i[0]).get(Nonce)
    nr = decode_message(pair.sent_r[0]).get(Nonce)
    assert ni is not None and nr is not None
    for sa in (pair.initiator, pair.responder):
        gen = sa._gen
        assert gen is not None
        (child,) = sa.children.values()
        size = child.encr.keymat_size
        integ = child.integ.key_size if child.integ else 0
        keymat = gen.prf.plus(gen.keys.sk_d, ni.data + nr.data, 2 * (size + integ))
        to_responder, to_initiator = keymat[:size], keymat[size + integ: 2 * size + integ]
        mine_out = to_responder if sa.initiator else to_initiator
        assert (child.encr_key_out, child.encr_key_in) == (mine_out, to_initiator if sa.initiator else to_responder)

"""IKEv1 key derivation against published answers, and the hashes/IVs by independent construction.

Sources of the known answers (data only):

* NIST CAVP SP 800-135 "IKEv1 KDF" component-test records, as carried by NSS's gtests
  (``gtests/common/testvectors/ike-sha1-vectors.h`` and ``ike-sha256-vectors.h``, the entries marked
  "these vectors are from this NIST samples"): SKEYID for signatures and for pre-shared keys, and
  SKEYID_d/a/e. In those tables the "Ni"/"Nr" columns of the SKEYID_x rows hold CKY-I/CKY-R.
* The same NSS files' self-generated Appendix B entries: the phase-1 key expansion (K1 = prf(K, 0)) and the
  quick-mode KEYMAT expansion with a seed of one zero octet.
* RUB NDS IPsec-StateMachineExtractor (Apache-2.0), ``IKEv1HandshakeSessionSecretsTest``: a complete
  PSK phase 1 (AES-128/SHA-1/MODP-1024) with SKEYID..SKEYID_e, the AES key, the phase-1 IV and HASH_R.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest

from ikegate.ike.crypto import CryptoError, prf_alg
from ikegate.ike.v1 import crypto as c1
from ikegate.ike.wire.registry import PrfId

H = bytes.fromhex
SHA1 = prf_alg(PrfId.HMAC_SHA1)
SHA256 = prf_alg(PrfId.HMAC_SHA2_256)


# ------------------------------------------------------------------------------------ NIST via NSS

NIST = {
    "sha1": dict(
        prf=SHA1,
        gxy="8ba4cbc73c0187301dc19a975823854dbd641c597f637f8d053a83b9514673eb",
        ni="69a62284195f1680", nr="80c94ba25c8abda5",
        skeyid_sig="707197817fb2d90cf54d1842606bdea59b9f4823",
        cky_i="8c3bcd3a69831d7f", cky_r="d2d9a7ff4fbe95a7",
        d="384be709a8a5e63c3ed160cfe3921c4b37d5b32d",
        a="48b327575abe3adba0f279849e289022a13e2b47",
        e="a4a415c8e0c38c0da847c356cc61c24df8025560",
        psk="c0", psk_ni="03a6f25a83c8c2a3", psk_nr="9d958a6618f77e7f",
        skeyid_psk="ab3be41bc62f2ef0c41a3076d58768be77fadd2e",
    ),
    "sha256": dict(
        prf=SHA256,
        gxy="a1ff3dc6cf9b4c04709943cb4ca1f1789bcf360b03f1d027de3ae8ee039e9155",
        ni="b1dee62505b47b223bae14ce7a5b757402ad1587511618d09f94950d47f1d8d4ce86aca12d78db9854d86019ad735757ae79d89"
           "32ac0c7db842c85060150ca875ea5d47e3cfcb2a05922ebb7959d49b9797a2289676ee79a1d9a18b790f87e4771ddaf4be3376057"
           "a553162f68fe429aca73b07234543801ba2122b1bde82251770d05df813cf556a11ca4dc43ffcb85a97dbed16e2fda6985e07e31b"
           "e6364899e63c507c7c616e5eb7765a53560f76772de43918ba07badfe85244dcdcd917cb065afb60e3b7e68b54dd94bfc7c31c8b7"
           "52892781ed3cc4b7f28fbc0ab9af908f5ae1f09f893f80100a7b3135993161b51fbba3bbb24b9f88c6147de82cd6f0",
        nr="f0acfef2ad1f7add0eaafda78c1cf1097d9fc91cb04a7c145069ac426fd164cbe661b1dd2df0fb84e19512181f0d8ea50b786"
           "0845f332757a8e56d2a3b7be436b5718a2d49baa996a4616684a208c2d611cd65e605dca6e3d3f116859b4410fe13679696bb2e"
           "23c08a40c7e1316d54b4c9c0286701c221151b3642cb4112ca1a53e0e597a7e29c634caed86ca3c31973d37b4c346134fd6784cd"
           "99913feedf3d29d89a0a02a5a750f02f5738109dcc670bb27701fb59f78e83b76860c3fec079a1fc8c937ddb58ae7500422b7e49"
           "ce63759c65b6bc439381d56bcc159edede894b073841036ebfa050a5b3e7c876a3f18def26b1768a263ac66c9d83b680eb5e",
        skeyid_sig="750c5c94b9c2ec20b68033e024dadf0fa87e8b48c6561b21c72478451a06583d",
        cky_i="6c6beb72631ddc3d", cky_r="b84e24b22cffbd14",
        d="a4f7ca7de913814813e3312099e7c943bd293483f387532330237f1b20957310",
        a="1d4b705746c43b0a6fcbb8db33983c0f24ff6f8b6543e3779fed227c6067f004",
        e="03e6f16cd9ce9f64b5cdc5b34cca7163483ba5389a30afebef3d14640b0a815e",
        psk="a0", psk_ni="ead9ced494868f41", psk_nr="f1aff4f425a94f18",
        skeyid_psk="558a99b299773d267cf7c8ef073bf3b7af362c206c75a538403c5ef884d4cace",
    ),
}


@pytest.mark.parametrize("name", sorted(NIST))
def test_nist_skeyid_and_derived_keys(name: str) -> None:
    v = NIST[name]
    prf = v["prf"]
    assert isinstance(prf, type(SHA1))
    assert c1.skeyid_sig(prf, H(v["ni"]), H(v["nr"]), H(v["gxy"])) == H(v["skeyid_sig"])
    assert c1.skeyid_psk(prf, H(v["psk"]), H(v["psk_ni"]), H(v["psk_nr"])) == H(v["skeyid_psk"])
    keys = c1.derive_phase1(prf, H(v["skeyid_sig"]), H(v["gxy"]), H(v["cky_i"]), H(v["cky_r"]), 16)
    assert keys.skeyid_d == H(v["d"])
    assert keys.skeyid_a == H(v["a"])
    assert keys.skeyid_e == H(v["e"])
    assert keys.enc_key == H(v["e"])[:16]
    assert "redacted" in repr(keys)


APP_B = {  # NSS self-generated: (prf, key, 132-byte Ka, 132-byte KEYMAT with seed 00)
    "sha1": (SHA1, "63e81194946ebd05df7df5ebf5d8750056bf1f1d",
             "933347a07de5782247dd36d1562ffe0eecade1eb4134165257e3af1000af8ae3f165063828cbb60d910b7db38fa3c7f62c4afa"
             "af3203da065c841729853edb23e9e7ac8286ae65c8cb6c667d79268c0bd6705abb9131698eb822b1c1f9dd142fc7be2c1010ee"
             "0152e10195add98999c6b6d42c8fe9c1b134d56ad5f2c6f20e815bd25c52",
             "933347a07de5782247dd36d1562ffe0eecade1ebaeaa476a5f578c34a9b2b7101a621202f61db924c5ef9efa3bb26980958416"
             "03b7ac8a880329a927ecd4ad53a944b607a5ac2f3d154e2748c188d7370d76be83fc204fdacf0f66b99dd760ba619ffac65eda"
             "1420c8a936dac5a599afaf4043b29ef2b65dc042724355b550875316c6fd"),
    "sha256": (SHA256, "5f00d1bd2c58ec224b1e6b71fa0f19a1faa7a193952c444411b47c1a9d8ba6fe",
               "b10fff32cbeaa1e7afe6ab0b191e0bd63cd524849a4b56019146d232a24cf9af6b89494d2a360b06825db8bb0324c15cecf4"
               "7fc0bc99e39bf1171a7f4bf1733dc49ef64c642e73b054b2e82456e34fa3c822da475e27e403b3da3929da50e6aa9e7f9252"
               "c68fa069b4b0edd374e80d35378c4f5e8ec285a1b169c92bbb5353d05ba94165",
               "b10fff32cbeaa1e7afe6ab0b191e0bd63cd524849a4b56019146d232a24cf9af59f18ed9aabbb2dbbafecf48d72a34a8f72f"
               "ab2ff4f37e5c917288a78ce00933612e9531a7469995c7f7cc33c7627cac3efbc819330c4fe3bfa3788799630f37bcb74800"
               "d82bbebd17b1906e304a786f4f810c266c15be1a30576039c293272748d65966"),
}


@pytest.mark.parametrize("name", sorted(APP_B))
def test_appendix_b_expansions(name: str) -> None:
    prf, key, ka, km = APP_B[name]
    assert c1.expand_key(prf, H(key), 132) == H(ka)
    assert c1.expand_key(prf, H(key), 15) == H(key)[:15]  # long enough: just the prefix
    # KEYMAT with protocol 0 and no SPI/nonces: the seed is the single zero octet of the NSS vector.
    assert c1.keymat(prf, H(key), 0, b"", b"", b"", 132) == H(km)
    assert c1.keymat(prf, H(key), 0, b"", b"", b"", 15) == H(km)[:15]


# ----------------------------------------------------------------------------------- RUB phase 1

RUB = dict(
    cky_i="7116900aa5c2880d", cky_r="047ad6f8b3d0abb7", ni="4654fdd74594982a",
    nr="3673e64987b4956dbb8b933399251a5abf88f557a723b802b345f838667e9a4e",
    gxi="75fb75db0749d4b15d9bb067b63399f790246dd7919d0c0a88fc34dd76eb9ad204e162b261914c0966a2d32d05178d4c0f0ec38176"
        "92fca675678f2fd2a6869188b943e33ad44cc859a5af98d6d5332c538cff4174ee737c8624de910cc40bd953f7940d1b2d8a681cee"
        "03c85199fbe773bfa100ffea5fcb82eed25a399b0b3e",
    gxr="2096a31ff922e5224d9d19f06a41e2d9aebe1180d4e5cbc3d6ea166e2b8810d5ddd048375025ae9bf895ad40c508cd8b9398bded0d"
        "00ae7e77c1a1eb31930495106892630152a926a45037606cda4651340082fc10558786b4d8c4e6d72222d580d9a30d9c3b7fe9c348"
        "a6eadc5e79a24fe4b4364297b5ff71914ef8a6980e73",
    gxy="19B67B23EB5F792EC9D7E11D16501CA20F2A2D0B230D525CD824DFB16867B515DC2CE9560B20B2149BFB360C1662C26A5AD7FE1FAA"
        "86E66213238C80B2ED46CCB821BF5043093027EB6E32C71685A093306DF20C24190C7F93947FA21E56D10E4C5B7063B2B4DC1747F1"
        "DF0BD46975D1825EEDE335E3ACBAD71A063CECF866C7",
    sai_b="00000001000000010000002c01010001000000240101000080010007800e0080800200028004000280030001800b0001800c7080",
    idr_b="010000000a00030a",
)


def test_rub_psk_phase1() -> None:
    v = RUB
    suite = c1.Suite.from_attributes(7, 128, 2)  # AES-CBC-128, SHA
    assert suite.encr.name == "AES-CBC-128" and suite.prf.name == "HMAC-SHA1"
    skeyid = c1.skeyid_psk(suite.prf, b"AAAA", H(v["ni"]), H(v["nr"]))
    assert skeyid == H("49856BC53F30DB8CE55F5BEFAE9E42431279550C")
    keys = c1.derive_phase1(suite.prf, skeyid, H(v["gxy"]), H(v["cky_i"]), H(v["cky_r"]), suite.encr.key_size)
    assert keys.skeyid_d == H("E5D7368180A8766F09C90CC9AC15182D3CD492EE")
    assert keys.skeyid_a == H("92DE109FE83047C95812B600820F1476CD24AA49")
    assert keys.skeyid_e == H("DE5D24679AD21491E63E2D7173017769CD7B9BC5")
    assert keys.enc_key == H("DE5D24679AD21491E63E2D7173017769")
    assert c1.phase1_iv(suite, H(v["gxi"]), H(v["gxr"])) == H("139568606DF1337CBCBC8FA7D201C8A8")
    assert c1.hash_r(suite.prf, skeyid, H(v["gxi"]), H(v["gxr"]), H(v["cky_i"]), H(v["cky_r"]), H(v["sai_b"]),
                     H(v["idr_b"])) == H("BA8C49CFD796BDC78E63FF6B5A858FC289DAD933")


# ------------------------------------------------------------------------- by independent construction


def _hmac(key: bytes, data: bytes, name: str = "sha256") -> bytes:
    return hmac.new(key, data, name).digest()


def test_hashes_by_construction() -> None:
    skeyid, a = b"S" * 32, b"A" * 32
    gxi, gxr, ci, cr, sai, idi = b"x" * 8, b"y" * 8, b"i" * 8, b"r" * 8, b"SA", b"ID"
    assert c1.hash_i(SHA256, skeyid, gxi, gxr, ci, cr, sai, idi) == _hmac(skeyid, gxi + gxr + ci + cr + sai + idi)
    assert c1.hash_r(SHA256, skeyid, gxi, gxr, ci, cr, sai, idi) == _hmac(skeyid, gxr + gxi + cr + ci + sai + idi)
    mid = 0x0A0B0C0D
    mid_b = bytes([10, 11, 12, 13])
    assert c1.qm_hash1(SHA256, a, mid, b"rest") == _hmac(a, mid_b + b"rest")
    assert c1.qm_hash2(SHA256, a, mid, b"Ni", b"rest") == _hmac(a, mid_b + b"Ni" + b"rest")
    assert c1.qm_hash3(SHA256, a, mid, b"Ni", b"Nr") == _hmac(a, b"\x00" + mid_b + b"Ni" + b"Nr")
    assert c1.info_hash(SHA256, a, mid, b"N/D") == _hmac(a, mid_b + b"N/D")


def test_keymat_by_construction() -> None:
    d, spi, ni, nr, gqm = b"D" * 32, bytes([1, 2, 3, 4]), b"n" * 16, b"m" * 16, b"g" * 256
    seed = gqm + b"\x03" + spi + ni + nr
    k1 = _hmac(d, seed)
    k2 = _hmac(d, k1 + seed)
    assert c1.keymat(SHA256, d, 3, spi, ni, nr, 64, gqm) == k1 + k2
    seed_nopfs = b"\x03" + spi + ni + nr
    assert c1.keymat(SHA256, d, 3, spi, ni, nr, 20) == _hmac(d, seed_nopfs)[:20]


def test_expand_key_by_construction() -> None:
    e = b"E" * 20
    k1 = _hmac(e, b"\x00", "sha1")
    k2 = _hmac(e, k1, "sha1")
    assert c1.expand_key(SHA1, e, 32) == (k1 + k2)[:32]


def test_message_iv_and_chain() -> None:
    suite = c1.Suite.from_attributes(7, 256, 4)
    last = bytes(range(16))
    assert c1.message_iv(suite, last, 0x01020304) == hashlib.sha256(last + bytes([1, 2, 3, 4])).digest()[:16]
    key = bytes(32)
    sender = c1.IvChain(suite.encr, key, b"\x11" * 16)
    receiver = c1.IvChain(suite.encr, key, b"\x11" * 16)
    first = sender.encrypt(b"hello")
    assert len(first) == 16 and sender.iv == first[-16:]
    assert receiver.decrypt(first)[:5] == b"hello"
    assert receiver.decrypt(sender.encrypt(b"x" * 20))[:20] == b"x" * 20
    assert receiver.iv == sender.iv
    forked = sender.fork(b"\x22" * 16)
    assert forked.iv == b"\x22" * 16 and sender.iv != forked.iv
    with pytest.raises(CryptoError):
        receiver.decrypt(b"short")


def test_rub_informational_iv() -> None:
    """RUB's second case: the IV of M-ID d8029d42 right after a phase 1 with no encrypted message."""
    suite = c1.Suite.from_attributes(7, 128, 2)
    gxi = H("a8b04c567a6bb3ab17da6a07f3f1667e6c70fb992ffe0a01dccc0877214c1936cc13a66aa97e4cd9ebfd61f6a7119859bba763255b"
            "54364d37a59f969d230f877cce6d77ca843e5f0cb24e354d51a429aabf75238f5a17ef5801f3b02d9f35dcd3562c35e6aeff67e9"
            "c71961f9313b6306c2c1adb428d6e70e713f894d9b7eda")
    gxr = H("7947cdf90ed5f07ca325c9c9e6de95a82e5728b2e1daf44866100723ad2bed0f09e8383cf89c7645c805c2942d4aebfa1b6c351a96"
            "66faa1f4988c3a557cb411a3b73fd3e094144e646ef5eb85118a61f06c6359e0f19b43a99720b49ae322155d462004be5e09140c"
            "fc843e0622c6735bc90ab730577fc311b23b25a8d283fa")
    iv0 = c1.phase1_iv(suite, gxi, gxr)
    assert iv0 == H("0E09ED33BAC3584D1D10762A9BD026C1")
    assert c1.message_iv(suite, iv0, 0xD8029D42) == H("0BF60ED4C34FEA8A12077A204DFD413F")


def test_suite_mapping_and_3des() -> None:
    tdes = c1.Suite.from_attributes(5, None, 2)
    assert tdes.encr.name == "3DES-CBC" and tdes.encr.block_size == 8
    assert c1.Suite.from_attributes(7, 256, 6).prf.name == "HMAC-SHA2-512"
    assert c1.Suite.from_attributes(7, 192, 5).hash_name == "sha384"
    with pytest.raises(CryptoError):
        c1.Suite.from_attributes(1, None, 2)  # single DES
    with pytest.raises(CryptoError):
        c1.Suite.from_attributes(7, 128, 3)  # Tiger
    # 3DES with SHA-1 needs Appendix B expansion: 24 key bytes from a 20-byte SKEYID_e.
    keys = c1.derive_phase1(tdes.prf, b"k" * 20, b"g" * 128, b"i" * 8, b"r" * 8, tdes.encr.key_size)
    assert len(keys.enc_key) == 24 and keys.enc_key[:20] != keys.skeyid_e  # expanded, not truncated

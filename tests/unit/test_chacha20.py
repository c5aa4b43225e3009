"""ChaCha20-Poly1305 for IKEv2 SK payloads and ESP (RFC 7634): the transform's sizes, RFC 8439's AEAD test
vector through our nonce construction (4-byte salt from the KDF | 8-byte IV), ESP packets, the VRP word."""

from __future__ import annotations

import pytest

from ikegate.dataplane.esp import EspError, InboundEsp, OutboundEsp
from ikegate.gateway import translate
from ikegate.ike.crypto import CryptoError, UnsupportedTransform, encr_alg
from ikegate.ike.wire.registry import ENCR_TEXT, EncrId
from ikegate.policy.model import Config, IkePeer, IkeProposal, IpsecPolicySettings, IpsecProposal

CHACHA = int(EncrId.CHACHA20_POLY1305)

# RFC 8439 §2.8.2: the AEAD_CHACHA20_POLY1305 example. Its 12-byte nonce 07000000 40414243 44454647 is,
# in RFC 7634 terms, salt 07000000 and IV 4041424344454647.
KEY = bytes(range(0x80, 0xA0))
SALT = bytes.fromhex("07000000")
IV = bytes.fromhex("4041424344454647")
AAD = bytes.fromhex("50515253c0c1c2c3c4c5c6c7")
PLAINTEXT = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, "
             b"sunscreen would be it.")
CIPHERTEXT = bytes.fromhex(
    "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b"
    "1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
    "3ff4def08e4b7a9de576d26586cec64b6116")
TAG = bytes.fromhex("1ae10b594f09e26a7e902ecbd0600691")


def test_transform_sizes_rfc7634() -> None:
    alg = encr_alg(CHACHA, None)
    assert (alg.key_size, alg.salt_size, alg.keymat_size, alg.iv_size, alg.icv_size, alg.aead) == (32, 4, 36, 8, 16,
                                                                                                   True)
    with pytest.raises(UnsupportedTransform):  # RFC 7634 §4: no Key Length attribute
        encr_alg(CHACHA, 256)
    assert ENCR_TEXT[(EncrId.CHACHA20_POLY1305, None)] == "CHACHA20-POLY1305"


def test_rfc8439_aead_vector() -> None:
    cipher = encr_alg(CHACHA, None).keyed(KEY + SALT)
    assert cipher.encrypt(IV, PLAINTEXT, AAD) == CIPHERTEXT + TAG
    assert cipher.decrypt(IV, CIPHERTEXT + TAG, AAD) == PLAINTEXT
    for bad in (CIPHERTEXT[:-1] + bytes([CIPHERTEXT[-1] ^ 1]) + TAG, CIPHERTEXT + TAG[:-1] + b"\x00"):
        with pytest.raises(CryptoError, match="ICV mismatch"):
            cipher.decrypt(IV, bad, AAD)
    with pytest.raises(CryptoError, match="ICV mismatch"):
        cipher.decrypt(IV, CIPHERTEXT + TAG, AAD[:-1])
    with pytest.raises(CryptoError, match="8-byte IV"):
        cipher.encrypt(IV[:4], PLAINTEXT)


def test_esp_packets_rfc7634() -> None:
    """ESP with ChaCha20-Poly1305: SPI | seq | IV (8) | ciphertext | ICV (16), the header as AAD; padding
    to 4 octets; a flipped bit anywhere is an ICV failure."""
    alg = encr_alg(CHACHA, None)
    keymat = bytes(range(36))
    out = OutboundEsp(0x01020304, alg, None, keymat)
    inb = InboundEsp(0x01020304, alg, None, keymat)
    inner = bytes(range(61))
    packet = out.seal(inner, 4)
    assert packet[:8] == bytes.fromhex("0102030400000001")
    assert len(packet) == 8 + 8 + 64 + 16  # 61 + 2 trailer octets padded to 64
    assert inb.open(packet) == (4, inner)
    # The nonce is salt | IV and the header is authenticated: the AEAD alone reproduces the packet.
    iv = packet[8:16]
    body = alg.keyed(keymat).decrypt(iv, packet[16:], packet[:8])
    assert body[:61] == inner and body[-1] == 4
    for where in (3, 12, 40, len(packet) - 1):
        tampered = bytearray(out.seal(inner, 4))
        tampered[where] ^= 0x01
        with pytest.raises(EspError):
            inb.open(bytes(tampered))
    assert inb.drops["icv"] >= 3


def test_vrp_keyword_makes_aead_proposals() -> None:
    config = Config()
    config.ike_proposals[10] = IkeProposal(10, encryption=["chacha20-poly1305", "aes-256"])
    peer = IkePeer("p", ike_proposals=[10])
    specs = translate.ike_proposal_specs(config, peer, 2)
    chacha = next(s for s in specs if s.encr == ((CHACHA, None),))
    assert chacha.integ == () and chacha.prf  # AEAD: no integrity transform, a PRF still
    config.ipsec_proposals["e"] = IpsecProposal("e", esp_encryption=["chacha20-poly1305"])
    esp = translate.esp_proposal_specs(config, IpsecPolicySettings("pol", 10, proposals=["e"]))
    assert esp[0].encr == ((CHACHA, None),) and esp[0].integ == ()

"""The IKEv2 codec's per-suite caches (encoded transforms we send, parsed transforms we receive) must not
change a byte, and must not keep what a peer can make large."""

from __future__ import annotations

from ikegate.ike.core.negotiated import Chosen
from ikegate.ike.wire import v2
from ikegate.ike.wire.registry import ProtocolId


def _esp_sa(spi: bytes, transforms: list[v2.Transform]) -> bytes:
    return v2.encode_payloads([v2.SA([v2.Proposal(1, ProtocolId.ESP, spi, transforms)])])[1]


def test_same_suite_under_two_spis_decodes_and_encodes_identically() -> None:
    suite = [v2.Transform(1, 20, 256), v2.Transform(1, 20, 128), v2.Transform(5, 0)]
    first, second = _esp_sa(b"\x00\x00\x00\x01", suite), _esp_sa(b"\x00\x00\x00\x02", suite)
    a, b = v2.decode_payloads(33, first)[0], v2.decode_payloads(33, second)[0]
    assert isinstance(a, v2.SA) and isinstance(b, v2.SA)
    assert a.proposals[0].spi == b"\x00\x00\x00\x01" and b.proposals[0].spi == b"\x00\x00\x00\x02"
    assert a.proposals[0].transforms == b.proposals[0].transforms == suite
    assert a.proposals[0].transforms is not b.proposals[0].transforms  # each decode owns its list
    assert v2.encode_payloads([a])[1] == first and v2.encode_payloads([b])[1] == second


def test_answer_transforms_encode_as_built_by_hand() -> None:
    chosen = Chosen(3, b"", 20, 256, None, None, None)
    by_hand = v2.Proposal(3, ProtocolId.ESP, b"abcd", [v2.Transform(1, 20, 256), v2.Transform(5, 0)])
    for _ in range(2):  # the second answer comes from the caches
        proposal = chosen.to_proposal(ProtocolId.ESP, b"abcd")
        assert proposal == by_hand
        assert v2.encode_payloads([v2.SA([proposal])]) == v2.encode_payloads([v2.SA([by_hand])])


def test_long_transform_run_is_parsed_but_not_cached() -> None:
    long_suite = [v2.Transform(4, group) for group in range(1, 41)]  # 40 transforms, 320 bytes
    data = _esp_sa(b"\x00\x00\x00\x03", long_suite)
    before = v2._parse_transforms.cache_info().currsize
    sa = v2.decode_payloads(33, data)[0]
    assert isinstance(sa, v2.SA) and sa.proposals[0].transforms == long_suite
    assert v2._parse_transforms.cache_info().currsize == before

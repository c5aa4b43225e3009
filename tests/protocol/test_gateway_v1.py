"""IKEv1 through the whole gateway in memory: v1:1/v1:2 entries, the seed's resets, and the
`ikev1 phase1-phase2 sa dependent` setting."""

from __future__ import annotations

import json

from ikegate.gateway.controller import Gateway
from ikegate.sad import IkeSaEntry, IpsecSaEntry
from tests.conftest import device_shell
from tests.protocol.netsim import Net, ike_view, lab_config

V1 = {" remote-address 127.0.0.11": " remote-address 127.0.0.11\n undo version 2"}
# IKEv1 phase 1 knows no AES-GCM and no Curve25519: the v1 lab uses AES-CBC and MODP-2048.
P1 = {" encryption-algorithm aes-gcm-256\n dh group31": " encryption-algorithm aes-256\n dh group14"}


def _lab(branch: dict[str, str] | None = None, hq: dict[str, str] | None = None) -> tuple[Net, Gateway, Gateway]:
    net = Net()
    h = net.add(Gateway(lab_config("hq", {**P1, **(hq or {})})))
    b = net.add(Gateway(lab_config("branch1", {**P1, **V1, **(branch or {})})))
    b.start(net.now)
    net.pump()
    return net, h, b


def _phases(gw: Gateway) -> list[str]:
    return sorted(f"v{e.version}:{e.phase}" for e in gw.sad.entries())


def test_v1_tunnel_and_display() -> None:
    net, hq, br = _lab()
    assert _phases(br) == ["v1:1", "v1:2"] and _phases(hq) == ["v1:1", "v1:2"]
    shell = device_shell(br, clock=lambda: net.now)
    rows = json.loads("\n".join(shell.run("display ike sa | json").lines))["ike_sa"]
    assert {r["conn_id"]: r["phase"] for r in rows} and all(r["version"] == 1 for r in rows)
    table = "\n".join(shell.run("display ike sa").lines)
    assert "v1:1" in table and "v1:2" in table and "RD|ST|A" in table
    ike = next(e for e in br.sad.entries() if isinstance(e, IkeSaEntry))
    assert ike.exchange_mode == "main"


def test_v1_reset_phase1_deletes_both_and_auto_renegotiates() -> None:
    net, hq, br = _lab()
    ike = next(e for e in br.sad.entries() if isinstance(e, IkeSaEntry))
    old = {e.conn_id for e in br.sad.entries()}
    hq_old = {e.conn_id for e in hq.sad.entries()}
    assert br.reset_ike_sa(net.now, conn_id=ike.conn_id) == 2
    net.pump()
    assert _phases(br) == ["v1:1", "v1:2"] and not old & {e.conn_id for e in br.sad.entries()}
    assert _phases(hq) == ["v1:1", "v1:2"] and not hq_old & {e.conn_id for e in hq.sad.entries()}
    assert {r.reason for r in hq.sad.offline.entries()} == {"peer request"}


def test_v1_reset_phase2_keeps_isakmp_sa() -> None:
    net, hq, br = _lab()
    ike = next(e for e in br.sad.entries() if isinstance(e, IkeSaEntry))
    child = next(e for e in br.sad.entries() if isinstance(e, IpsecSaEntry))
    assert br.reset_ike_sa(net.now, conn_id=child.conn_id) == 1
    net.pump()
    assert br.sad.ike(ike.conn_id) is not None and _phases(br) == ["v1:1", "v1:2"]
    new = next(e for e in br.sad.entries() if isinstance(e, IpsecSaEntry))
    assert new.conn_id != child.conn_id and new.parent == ike.conn_id


def test_v1_reset_on_template_side_peer_comes_back() -> None:
    net, hq, br = _lab()
    assert hq.reset_ike_sa(net.now) == 2
    net.pump()
    assert _phases(hq) == [] and _phases(br) == []
    net.step(2.0)
    assert _phases(br) == ["v1:1", "v1:2"] and _phases(hq) == ["v1:1", "v1:2"]


def _expire_phase1(net: Net, drop_main_mode: bool = True) -> None:
    net.drop = lambda data, src, dst: drop_main_mode and ike_view(data)[18:19] == b"\x02"  # Main Mode
    net.step(200.0)
    net.drop = lambda data, src, dst: False


def test_v1_without_dependency_ipsec_sa_survives_its_isakmp_sa() -> None:
    shorter = {" sa duration 86400": " sa duration 60"}
    net, hq, br = _lab(shorter, shorter)
    child = next(e for e in hq.sad.entries() if isinstance(e, IpsecSaEntry))
    _expire_phase1(net)
    hq_kinds = sorted((e.phase, e.parent is None) for e in hq.sad.entries())
    assert (2, True) in hq_kinds  # an orphan IPsec SA: no IKE SA above it, still in service
    assert hq.sad.ipsec(child.conn_id) is not None
    assert "phase1 hard expiry" in {r.reason for r in hq.sad.offline.entries()}


def test_v1_with_dependency_ipsec_sa_goes_with_its_isakmp_sa() -> None:
    dep = {"#\nike proposal 10": "#\nikev1 phase1-phase2 sa dependent\n#\nike proposal 10", " sa duration 86400":
           " sa duration 60"}
    net, hq, br = _lab(dep, dep)
    child = next(e for e in hq.sad.entries() if isinstance(e, IpsecSaEntry))
    _expire_phase1(net)
    assert hq.sad.ipsec(child.conn_id) is None
    assert all(e.parent is not None for e in hq.sad.entries() if isinstance(e, IpsecSaEntry))


def test_v1_peer_with_only_aead_proposal_fails_cleanly() -> None:
    net = Net()
    b = net.add(Gateway(lab_config("branch1", V1)))
    b.start(net.now)
    net.pump()
    assert len(b.sad) == 0 and b.stats.negotiations_failed == {"configuration": 1}

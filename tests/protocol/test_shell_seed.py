"""The seed's matrix through the VRP shell, on whole gateways in memory, checked on both ends.

Forms: phase-1 conn-id, phase-2 conn-id, no conn-id, remote IPv4, remote IPv6, slot/cpu; policies:
template (HQ), site-to-site auto (Branch1), site-to-site traffic-based (Branch2).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from ikegate.gateway.device import DeviceModel, make_device
from tests.conftest import device_shell, gateway_for
from tests.protocol.netsim import Net, lab_config

V6 = {"ip address 127.0.0.11 255.0.0.0": "ipv6 enable\n ipv6 address 2001:db8::11/64",
      "ip address 127.0.0.12 255.0.0.0": "ipv6 enable\n ipv6 address 2001:db8::12/64",
      "ip address 127.0.0.13 255.0.0.0": "ipv6 enable\n ipv6 address 2001:db8::13/64",
      "remote-address 127.0.0.11": "remote-address 2001:db8::11"}


class Node:
    def __init__(self, net: Net, name: str, replace: dict[str, str], model: DeviceModel) -> None:
        self.gw = net.add(gateway_for(lab_config(name, replace), model))
        self.shell = device_shell(self.gw, model, clock=lambda: net.now)

    def run(self, line: str) -> list[str]:
        out = self.shell.run(line)
        assert out.error is None, out.lines
        return out.lines

    def sas(self) -> list[dict[str, Any]]:
        data = json.loads("\n".join(self.run("display ike sa | json")))
        return data["ike_sa"]

    def phases(self) -> list[int]:
        return sorted(s["phase"] for s in self.sas())

    def ids(self) -> set[int]:
        return {s["conn_id"] for s in self.sas()}

    def one(self, phase: int) -> dict[str, Any]:
        return next(s for s in self.sas() if s["phase"] == phase)


def build(v6: bool = False, model: str | None = None) -> tuple[Net, Node, Node, Node]:
    net = Net()
    device = make_device(model, None)
    replace = V6 if v6 else {}
    hq, b1, b2 = (Node(net, n, replace, device) for n in ("hq", "branch1", "branch2"))
    for node in (hq, b1, b2):
        node.gw.start(net.now)
    net.pump()
    assert hq.phases() == [1, 2] and b1.phases() == [1, 2] and b2.phases() == []
    return net, hq, b1, b2


def _form(node: Node, form: str, other: Node) -> str:
    if form == "phase1":
        return f"reset ike sa conn-id {node.one(1)['conn_id']}"
    if form == "phase2":
        return f"reset ike sa conn-id {node.one(2)['conn_id']}"
    if form == "all":
        return "reset ike sa"
    if form == "remote":
        return f"reset ike sa remote {node.one(1)['peer_address']}"
    if form == "slot":
        sa = node.one(1)
        return f"reset ike sa slot {sa['slot']} cpu {sa['cpu']}"
    raise AssertionError(form)


FORMS = [("phase1", False, None), ("phase2", False, None), ("all", False, None), ("remote", False, None),
         ("remote", True, None), ("slot", False, "USG6680E")]


@pytest.mark.parametrize(("form", "v6", "model"), FORMS)
def test_reset_on_auto_side(form: str, v6: bool, model: str | None) -> None:
    net, hq, b1, b2 = build(v6, model)
    before_b1, before_hq = b1.ids(), hq.ids()
    ike_before = b1.one(1)["conn_id"]
    assert b1.run(_form(b1, form, hq)) == []  # the USG prints nothing on success
    if form == "phase2":
        # only the IPsec SA went; the IKE SA stays and the IPsec SA is negotiated again under it
        assert b1.phases() == [1] or b1.phases() == [1, 2]
        net.pump()
        assert b1.one(1)["conn_id"] == ike_before
        assert b1.phases() == [1, 2] and b1.one(2)["conn_id"] not in before_b1
        assert hq.phases() == [1, 2] and hq.one(2)["conn_id"] not in before_hq
        assert hq.one(1)["conn_id"] in before_hq
        return
    # phase 1 (and all, remote, slot): IKE SA and IPsec SA deleted at once, renegotiated at once
    assert not before_b1 & b1.ids()
    net.pump()
    assert b1.phases() == [1, 2] and not before_b1 & b1.ids()
    assert hq.phases() == [1, 2] and not before_hq & hq.ids()
    offline = json.loads("\n".join(hq.run("display ike offline-info | json")))["offline"]
    assert any(o["reason"] == "peer request" for o in offline)
    mine = json.loads("\n".join(b1.run("display ike offline-info | json")))["offline"]
    assert {o["reason"] for o in mine} == {"config modify or manual offline"}


@pytest.mark.parametrize(("form", "v6", "model"), FORMS)
def test_reset_on_template_side(form: str, v6: bool, model: str | None) -> None:
    net, hq, b1, b2 = build(v6, model)
    before_b1, before_hq = b1.ids(), hq.ids()
    ike_hq = hq.one(1)["conn_id"]
    assert hq.run(_form(hq, form, b1)) == []
    if form == "phase2":
        assert hq.phases() == [1]  # HQ negotiates nothing itself
        net.pump()
        # Branch1 got the Delete; being auto, it negotiates the IPsec SA again; HQ answers
        assert hq.one(1)["conn_id"] == ike_hq
        assert hq.phases() == [1, 2] and hq.one(2)["role"] == "responder"
        assert hq.one(2)["conn_id"] not in before_hq
        return
    assert hq.phases() == []
    net.pump()
    assert hq.phases() == [] and b1.phases() == []  # the branch was told; nobody negotiated yet
    net.step(2.0)  # the peer (auto) triggers the negotiation
    assert b1.phases() == [1, 2] and not before_b1 & b1.ids()
    assert hq.phases() == [1, 2] and all(s["role"] == "responder" for s in hq.sas())


@pytest.mark.parametrize("phase", [1, 2])
def test_traffic_based_waits_for_matching_traffic(phase: int) -> None:
    net, hq, b1, b2 = build()
    assert b2.gw.acquire(net.now, ("site", 10), 5)  # traffic matching ACL 3001 rule 5
    net.pump()
    assert b2.phases() == [1, 2]
    child = b2.one(2)
    assert child["local_selectors"] == ["10.1.2.0-10.1.2.255 0/0-65535"]
    assert child["remote_selectors"] == ["10.0.0.0-10.0.0.255 0/0-65535"]
    b2.run(f"reset ike sa conn-id {b2.one(phase)['conn_id']}")
    net.step(60.0)
    assert b2.phases() == ([] if phase == 1 else [1])  # nothing comes back by itself
    assert not b2.gw.acquire(net.now, ("site", 10), 99)  # traffic matching no rule: nothing
    net.pump()
    assert b2.phases() == ([] if phase == 1 else [1])
    assert b2.gw.acquire(net.now, ("site", 10), 5)
    net.pump()
    assert b2.phases() == [1, 2]


def test_nonexistent_conn_id_and_remote_change_nothing() -> None:
    net, hq, b1, b2 = build()
    before = hq.ids()
    for line in ("reset ike sa conn-id 4294967295", "reset ike sa remote 192.0.2.77",
                 "reset ike sa remote 2001:db8::99"):
        assert hq.run(line) == ["Info: No SA matches the specified conditions; nothing was deleted."]
    assert hq.ids() == before


def test_slot_parameter_by_model() -> None:
    net, hq, b1, b2 = build(model="USG6680E")
    out = hq.shell.run("reset ike sa slot 7 cpu 0")
    assert out.error == "Error: Wrong parameter found at '^' position."
    assert out.lines[0].index("^") == len("<HQ>reset ike sa slot ")
    out = hq.shell.run("reset ike sa slot 1 cpu 5")
    assert out.lines[0].index("^") == len("<HQ>reset ike sa slot 1 cpu ")
    net2, hq2, _, _ = build()
    out = hq2.shell.run("reset ike sa slot 1 cpu 0")
    assert out.error is not None and out.lines[0].index("^") == len("<HQ>reset ike sa ")


def test_reset_requires_level_3_and_user_view() -> None:
    net, hq, b1, b2 = build()
    hq.shell.level = 1
    out = hq.shell.run("reset ike sa")
    assert out.error == "Error: Unrecognized command found at '^' position."
    assert hq.phases() == [1, 2]
    hq.shell.level = 3
    hq.run("system-view")
    out = hq.shell.run("reset ike sa")
    assert out.error is not None
    assert hq.phases() == [1, 2]

"""The ``IPSEC_TUNNEL_TEARED_DOWN`` log carries ``IfIndex`` between ``PolicyName`` and ``SeqNum``, in the
order of Huawei's log reference (research notes a.16); gateways in memory, torn down by ``reset``."""

from __future__ import annotations

import re

from ikegate.cli.logbuffer import record_text
from ikegate.gateway.controller import Gateway
from tests.protocol.netsim import Net, lab_config


def test_teardown_log_fields_in_order() -> None:
    net = Net()
    logs: list[str] = []
    hq = net.add(Gateway(lab_config("hq"), log=lambda module, severity, brief, text, *args:
                             logs.append(f"{brief}:{record_text(text, args)}")))
    b1 = net.add(Gateway(lab_config("branch1")))
    for gw in (hq, b1):
        gw.start(net.now)
    net.pump()
    assert hq.sad.count(phase=2) == 1
    hq.reset_ike_sa(net.now)
    net.pump()
    (down,) = [line for line in logs if line.startswith("IPSEC_TUNNEL_TEARED_DOWN:")]
    fields = re.findall(r"(\w+)=", down)
    assert fields[:4] == ["PolicyName", "IfIndex", "SeqNum", "RuleNum"]
    interface = next(iter(hq.config.interfaces))
    assert f"PolicyName=hq, IfIndex={hq.config.if_index(interface)}, SeqNum=10," in down
    assert hq.config.if_index(interface) == 1 and hq.config.if_index("GigabitEthernet9/9/9") == 0

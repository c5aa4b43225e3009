"""Traffic between `ikegate run` processes: ping through a traffic-based tunnel, and the packet API."""

from __future__ import annotations

import random
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from ikegate.dataplane.packet import build_ipv4, parse_ip
from tests.system.procs import free_port_pair, gateway, lab_text
from tests.waiting import DEADLINE, wait_for

pytestmark = pytest.mark.system


def _ping(control: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ikegate", "cli", "--control", control, "-c", command],
                          capture_output=True, text=True, timeout=DEADLINE)


def test_ping_triggers_traffic_based_tunnel_and_packet_api(tmp_path: Path) -> None:
    port = free_port_pair()
    n = random.randrange(20, 120)
    hq_addr, br_addr = f"127.0.5.{n}", f"127.0.5.{n + 100}"
    hq_cfg = lab_text("hq", **{"127.0.0.11": hq_addr})
    br_cfg = lab_text("branch2", **{"127.0.0.11": hq_addr, "127.0.0.13": br_addr})
    with gateway(tmp_path, "hq", hq_cfg, port) as hq, gateway(tmp_path, "br", br_cfg, port) as br:
        assert br.phases() == []
        # The first echo request negotiates. Its reply has ping's 2 s, which a busy machine may not give
        # the negotiation: it is held or lost, either is right; the tunnel must come up and carry the rest.
        first = _ping(br.control, "ping -a 10.1.2.1 -c 1 10.0.0.1")
        assert "PING 10.0.0.1: 56  data bytes" in first.stdout, first.stdout + first.stderr
        wait_for(lambda: br.phases() == [1, 2] and hq.phases() == [1, 2], what="the triggered tunnel")
        out = _ping(br.control, "ping -a 10.1.2.1 -c 3 10.0.0.1")
        assert out.returncode == 0, out.stdout + out.stderr
        assert out.stdout.count("Reply from 10.0.0.1: bytes=56") == 3, out.stdout
        assert "0.00% packet loss" in out.stdout
        assert br.phases() == [1, 2]
        ipsec = br.call("shell", lines=["display ipsec sa"])["output"]
        counted = re.findall(r"SA (encrypted|decrypted) packets \(number/bytes\): (\d+)/", ipsec)
        assert len(counted) == 2 and counted[0][1] == counted[1][1] and int(counted[0][1]) in (3, 4), ipsec
        # a UDP flow from a host behind HQ to one behind the branch, through the packet API
        udp = build_ipv4("10.0.0.20", "10.1.2.30", 17, struct.pack("!HHHH", 4000, 5000, 12, 0) + b"abcd")
        assert hq.call("inject", packets=[udp.hex()])["injected"] == 1
        got: list[str] = []
        wait_for(lambda: bool(got.extend(br.call("lan")["packets"]) or got), what="packet out on the branch side")
        info = parse_ip(bytes.fromhex(got[0]))
        assert (str(info.src_ip), str(info.dst_ip), info.dst_port) == ("10.0.0.20", "10.1.2.30", 5000)


def test_ping_without_tunnel_times_out(tmp_path: Path) -> None:
    port = free_port_pair()
    n = random.randrange(20, 120)
    hq_cfg = lab_text("hq", **{"127.0.0.11": f"127.0.6.{n}"})
    with gateway(tmp_path, "hq", hq_cfg, port) as hq:
        out = _ping(hq.control, "ping -c 1 10.1.1.1")
        assert "Request time out" in out.stdout and "100.00% packet loss" in out.stdout

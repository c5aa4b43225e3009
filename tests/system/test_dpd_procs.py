"""Dead peer detection between `ikegate run` processes: SIGKILL HQ, restart it, ping from behind the branch
until the auto tunnel is back (issue 10 item 3, where no reply came for 150 s)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from ikegate.dataplane.packet import echo_request, parse_ip
from tests.system.procs import Proc, free_port_pair, gateway, lab_text
from tests.waiting import wait_for

pytestmark = pytest.mark.system

IDLE, INTERVAL, RETRIES = 10, 2, 3
DPD = f"\n dpd idle-time {IDLE}\n dpd retransmit-interval {INTERVAL}\n dpd retry-limit {RETRIES}"
V1 = {"\n dh group31": "\n dh group14", "encryption-algorithm aes-gcm-256\n dh": "encryption-algorithm aes-256\n dh"}


class Pinger:
    """A host behind the branch (10.1.1.50) pinging 10.0.0.1 (HQ) about once a second, through the packet API."""

    def __init__(self, branch: Proc) -> None:
        self.branch = branch
        self.seq = 0
        self.sent_at = 0.0
        self.replies: list[int] = []

    def tick(self) -> bool:
        """Send the next request when a second has passed; True once a reply to the latest one came back."""
        if time.monotonic() - self.sent_at >= 1.0:
            self.seq += 1
            self.sent_at = time.monotonic()
            self.branch.call("inject", packets=[echo_request("10.1.1.50", "10.0.0.1", 9, self.seq, bytes(16)).hex()])
        for hexed in self.branch.call("lan")["packets"]:
            packet = bytes.fromhex(hexed)
            info = parse_ip(packet)
            if str(info.src_ip) == "10.0.0.1" and info.protocol == 1 and info.icmp_type == 0:
                self.replies.append(int.from_bytes(packet[info.header_len + 6:info.header_len + 8], "big"))
        return bool(self.replies) and self.replies[-1] == self.seq


@pytest.mark.parametrize("version", [1, 2])
def test_restarted_peer_is_found_by_on_demand_dpd_and_the_tunnel_comes_back(tmp_path: Path, version: int) -> None:
    port = free_port_pair()
    n = random.randrange(20, 120)
    hq_addr, br_addr = f"127.0.7.{n}", f"127.0.7.{n + 100}"
    edits_hq = {"127.0.0.11": hq_addr, " ike-proposal 10\n#\nipsec proposal": " ike-proposal 10" + DPD
                + "\n#\nipsec proposal"}
    edits_br = {"127.0.0.11": hq_addr, "127.0.0.12": br_addr,
                f" remote-address {hq_addr}": f" remote-address {hq_addr}" + DPD
                + ("\n undo version 2" if version == 1 else "")}
    if version == 1:
        edits_hq |= V1
        edits_br |= V1
    hq_cfg = lab_text("hq", **edits_hq)
    br_cfg = lab_text("branch1", **edits_br)
    assert f"dpd idle-time {IDLE}" in hq_cfg and br_cfg.count("dpd retry-limit") == 1  # the edits took
    with gateway(tmp_path, "br", br_cfg, port) as br:
        with gateway(tmp_path, "hq", hq_cfg, port) as hq:
            wait_for(lambda: br.phases() == [1, 2], what="the auto tunnel")
            pinger = Pinger(br)
            wait_for(pinger.tick, what="a first reply")
            killed = time.monotonic()
            hq.popen.kill()  # SIGKILL: no Delete, every SA of HQ gone
            hq.popen.wait()
        pinger.replies.clear()
        pinger.sent_at = 0.0  # the next tick pings at once; only a reply to a later ping counts
        with gateway(tmp_path, "hq2", hq_cfg, port):  # restarted: knows none of the branch's SAs
            wait_for(pinger.tick, 120, "a reply through a new tunnel")
            took = time.monotonic() - killed
            offline = br.call("offline")["offline"]
            dead_at = [r["time"] for r in offline if r["reason"] == "dpd timeout"]
            assert dead_at, offline
            assert br.phases() == [1, 2]
    # When the branch declared HQ dead, on its own clock (the event loop's: CLOCK_MONOTONIC, as this
    # test's): idle + retries x interval, plus the pings' spacing. How long the restarted HQ then takes to
    # start and negotiate is the machine's load, so the tunnel's return is only waited for.
    detected = dead_at[0] - killed
    print(f"IKEv{version}: peer declared dead {detected:.1f} s, tunnel back {took:.1f} s after SIGKILL")
    assert detected < IDLE + RETRIES * INTERVAL + 10, detected

"""Placement workers as real processes (``ikegate run --workers N``) on loopback: the kernel steers every
datagram to the worker owning its SA, the supervisor's CLI routes and merges, a killed worker comes back
without touching the others' tunnels, configuration reaches every worker before the prompt returns.

One HQ with two workers and Branch1 (one process, loading extra SAs) serve the module; Branch2 with two
workers checks the initiator side and traffic triggers; a USG6680E with four placements checks slot/cpu."""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ikegate.workers.steering import peer_owner
from tests.system.procs import Proc, free_port_pair, gateway, lab_text
from tests.waiting import wait_for

pytestmark = pytest.mark.system

LOADED = 24
ADMISSION = "#\nike call admission limit in-negotiation-sa per-address 100000\n#\nreturn"


def _shell(proc: Proc, *lines: str) -> str:
    answer = proc.call("shell", lines=list(lines))
    assert not answer["error"], answer["output"]
    return str(answer["output"])


def _cli(proc: Proc, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ikegate", "cli", "--control", proc.control, "-c", command],
                          capture_output=True, text=True, timeout=120)


def _stats(proc: Proc) -> dict[str, Any]:
    return proc.call("stats")["stats"]


def _workers(proc: Proc) -> list[dict[str, Any]]:
    return proc.call("workers")["workers"]


def _owner(conn_id: int, workers: int) -> int:
    return (conn_id - 1) % workers


def _ike_rows(proc: Proc) -> list[dict[str, Any]]:
    return [s for s in proc.sas() if s["phase"] == 1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Proc, str, int]]:
    tmp = tmp_path_factory.mktemp("workers")
    port = free_port_pair()
    n = random.randrange(20, 120)
    hq_addr, br_addr = f"127.0.5.{n}", f"127.0.5.{n + 100}"
    hq_cfg = lab_text("hq", **{"127.0.0.11": hq_addr}).replace("#\nreturn", ADMISSION)
    br_cfg = lab_text("branch1", **{"127.0.0.11": hq_addr, "127.0.0.12": br_addr})
    with gateway(tmp, "hq", hq_cfg, port, "--workers", "2") as hq, \
            gateway(tmp, "br", br_cfg, port, "--workers", "1") as br:
        wait_for(lambda: br.phases() == [1, 2], what="Branch1's auto tunnel")
        br.call("load", count=LOADED)
        wait_for(lambda: _stats(hq)["ipsec_sas"] == LOADED + 1 and _stats(br)["ipsec_sas"] == LOADED + 1,
                 what="the loaded SAs on both sides")
        yield hq, br, hq_addr, port


def test_kernel_steers_every_datagram_to_the_worker_owning_its_spi(lab: tuple[Proc, Proc, str, int]) -> None:
    hq, br, _, _ = lab
    st = _stats(hq)
    assert st["workers"] == 2 and st["ike_sas"] == LOADED + 1
    rows = hq.sas()
    owners = {_owner(r["conn_id"], 2) for r in rows}
    assert owners == {0, 1}, "the SAs spread over both workers (IKE_SA_INIT by initiator SPI)"
    for r in rows:
        owner = _owner(r["conn_id"], 2)
        if r["phase"] == 1:
            assert bytes.fromhex(r["spi_r"])[0] == owner, r  # our (responder) SPI names its worker
        else:
            assert r["spi_in"] >> 24 == owner, r  # our inbound ESP SPI too
    # ESP flows through the tunnel (ESP-in-UDP on the steered 4500 group), then nothing was misrouted
    esp_in = _stats(hq)["esp_packets_in"]
    _shell(br, "ping -a 10.1.1.1 -c 3 10.0.0.1")  # (a reply late on a loaded machine is not the point)
    st = _stats(hq)
    assert st["esp_packets_in"] >= esp_in + 3
    # Branch1 is an ikegate: its UDP_SEGMENT runs reach the worker of their first datagram, which passes
    # the others on (counted by both); the kernel's program alone is checked against strongSwan (interop)
    assert st["misrouted"] <= st["handed_over"]
    text = _cli(hq, "display ike statistics").stdout
    assert re.search(r"Workers\s+: 2", text) and re.search(r"Datagrams misrouted\s+: \d+", text), text


def test_the_cli_lists_all_workers_in_conn_id_order_and_routes_conn_ids(lab: tuple[Proc, Proc, str, int]) -> None:
    hq, _, _, _ = lab
    text = _cli(hq, "display ike sa").stdout
    listed = [int(line.split()[0]) for line in text.splitlines() if re.match(r"^ \d+ ", line)]
    assert listed == sorted((r["conn_id"] for r in hq.sas()), reverse=True)
    assert f"Number of IKE SA : {len(listed)}" in text
    # a conn-id goes to its owner only: worker 1's SA is reset, worker 0 loses nothing
    victim = max(r["conn_id"] for r in _ike_rows(hq) if _owner(r["conn_id"], 2) == 1)
    before = {r["conn_id"] for r in hq.sas() if _owner(r["conn_id"], 2) == 0}
    out = _shell(hq, f"reset ike sa conn-id {victim}")
    assert "Error" not in out
    wait_for(lambda: victim not in {r["conn_id"] for r in hq.sas()}, what="the reset SA to go")
    assert before <= {r["conn_id"] for r in hq.sas()}


def test_cpu_and_memory_usage_read_every_worker(lab: tuple[Proc, Proc, str, int]) -> None:
    hq, _, _, _ = lab
    pids = [w["pid"] for w in _workers(hq)]
    text = _cli(hq, "display cpu-usage").stdout
    listed = [line.split("%")[0].rsplit(None, 1)[0] for line in text.splitlines() if line.endswith("%")
              and not line.startswith("CPU")]
    assert listed == ["supervisor", "worker 0", "worker 1"], text
    text = _cli(hq, "display memory-usage").stdout
    lines = {line.split(":")[0].strip(): int(line.split()[-2]) for line in text.splitlines() if "bytes" in line}
    assert lines["worker 0"] > 0 and lines["worker 1"] > 0 and lines["supervisor"] > 0
    assert lines["ikegate process resident memory"] == lines["supervisor"] + lines["worker 0"] + lines["worker 1"]
    assert pids == [w["pid"] for w in _workers(hq)]


def test_a_configuration_change_reaches_every_worker_before_the_prompt(lab: tuple[Proc, Proc, str, int]) -> None:
    hq, _, _, _ = lab
    old = {w["config_digest"] for w in _workers(hq)}
    assert len(old) == 1 and None not in old
    _shell(hq, "system-view", "ike proposal 77", "encryption-algorithm aes-256", "quit", "quit")
    new = {w["config_digest"] for w in _workers(hq)}
    assert len(new) == 1 and new != old  # all changed, to the same configuration
    assert "ike proposal 77" in _shell(hq, "display current-configuration")


def test_a_killed_worker_restarts_and_the_other_workers_tunnel_loses_nothing(
        lab: tuple[Proc, Proc, str, int]) -> None:
    hq, br, _, _ = lab
    # the IPsec SA Branch1's ping uses (the newest covering the flow: one process, so the highest conn-id):
    # its outbound SPI is HQ's inbound one, which names HQ's worker
    auto = max((r for r in br.sas() if r["phase"] == 2), key=lambda r: r["conn_id"])
    carrying = auto["spi_out"] >> 24
    victim = 1 - carrying
    held = [r for r in _ike_rows(hq) if _owner(r["conn_id"], 2) == victim]
    kept = {r["conn_id"] for r in hq.sas() if _owner(r["conn_id"], 2) == carrying}
    assert held, "the victim holds SAs"
    wait_for(lambda: next(w["reported_sas"] for w in _workers(hq) if w["index"] == victim) == len(held),
             what="the victim's SAs reported to the supervisor")
    pid = next(w["pid"] for w in _workers(hq) if w["index"] == victim)
    result: list[str] = []
    pinger = threading.Thread(target=lambda: result.append(_shell(br, "ping -a 10.1.1.1 -c 8 10.0.0.1")))
    before = _stats(br)["esp_packets_in"]
    pinger.start()
    wait_for(lambda: _stats(br)["esp_packets_in"] > before, what="the ping to flow")
    os.kill(pid, signal.SIGKILL)
    pinger.join(120)
    assert result and "0.00% packet loss" in result[0], result
    wait_for(lambda: all(w["pid"] not in (None, pid) for w in _workers(hq)), what="the worker to come back")
    assert next(w["restarts"] for w in _workers(hq) if w["index"] == victim) == 1
    assert kept <= {r["conn_id"] for r in hq.sas()}, "the other worker's SAs are untouched"
    offline = [r for r in hq.call("offline")["offline"] if r["reason"] == "worker restart"]
    assert len(offline) == len(held)
    assert "worker restart" in _cli(hq, "display ike offline-info").stdout
    assert _stats(hq)["workers"] == 2


def test_reset_of_hundreds_of_sas_returns_while_the_workers_log_them(lab: tuple[Proc, Proc, str, int]) -> None:
    """A reset of hundreds of SAs over both workers: the command returns, every peer hears its Deletes, the
    teardown records reach the supervisor's log (the channel's own no-blocking rule is in
    tests/unit/test_fanout.py)."""
    hq, br, _, _ = lab
    before, br_before = _stats(hq)["ipsec_sas"], _stats(br)["ike_sas"]
    br.call("load", count=300)
    wait_for(lambda: _stats(hq)["ipsec_sas"] >= before + 300, what="300 more SAs")
    done = _cli(hq, "reset ike sa")
    assert done.returncode == 0, done.stdout + done.stderr
    # every SA HQ held went, and Branch1 heard it (its auto SA comes back; the SAs of the worker killed
    # above stay on Branch1, which has no DPD here)
    wait_for(lambda: _stats(br)["ike_sas"] <= br_before, what="Branch1 to hear every Delete")
    assert "IPSEC_TUNNEL_TEARED_DOWN" in hq.stderr()


def test_branch_with_two_workers_initiates_once_and_routes_traffic_to_the_policy_owner(
        lab: tuple[Proc, Proc, str, int], tmp_path: Path) -> None:
    """Branch2 (traffic-based, two workers): the first ping reaches the worker owning the policy, which
    negotiates; its IKE SPIs name it, answers come back to it, and no other worker ever initiated."""
    hq, _, hq_addr, port = lab
    br_addr = hq_addr.rsplit(".", 1)[0] + ".250"
    cfg = lab_text("branch2", **{"127.0.0.11": hq_addr, "127.0.0.13": br_addr})
    with gateway(tmp_path, "br2", cfg, port, "--workers", "2") as br2:
        assert br2.sas() == []
        owner = peer_owner(hq_addr, 2)
        wait_for(lambda: "0.00% packet loss" in _shell(br2, "ping -a 10.1.2.1 -c 2 10.0.0.1"), 120,
                 what="a ping through the triggered tunnel")
        rows = br2.sas()
        ike = [r for r in rows if r["phase"] == 1]
        assert len(ike) == 1 and _owner(ike[0]["conn_id"], 2) == owner
        assert bytes.fromhex(ike[0]["spi_i"])[0] == owner
        st = _stats(br2)
        assert st["negotiations_started"] == 1 and st["misrouted"] <= st["handed_over"]


def test_slot_model_workers_are_its_placements(tmp_path: Path) -> None:
    """USG6680E with four placements: four workers; ``display``/``reset ike sa slot S cpu C`` ask only that
    worker, and a reset there leaves every other placement's SAs as they were."""
    port = free_port_pair()
    n = random.randrange(20, 120)
    hq_addr, br_addr = f"127.0.4.{n}", f"127.0.4.{n + 100}"
    hq_cfg = lab_text("hq", **{"127.0.0.11": hq_addr}).replace("#\nreturn", ADMISSION)
    br_cfg = lab_text("branch1", **{"127.0.0.11": hq_addr, "127.0.0.12": br_addr})
    placements = ["1/0", "1/1", "3/0", "3/1"]
    with gateway(tmp_path, "hq", hq_cfg, port, "--model", "USG6680E", "--placements", ",".join(placements)) as hq, \
            gateway(tmp_path, "br", br_cfg, port, "--workers", "1") as br:
        assert [(w["slot"], w["cpu"]) for w in _workers(hq)] == [(1, 0), (1, 1), (3, 0), (3, 1)]
        wait_for(lambda: br.phases() == [1, 2], what="Branch1's auto tunnel")
        br.call("load", count=23)
        wait_for(lambda: _stats(hq)["ipsec_sas"] == 24, what="the loaded SAs")

        def by_place() -> dict[tuple[int, int], set[int]]:
            out: dict[tuple[int, int], set[int]] = {}
            for r in hq.sas():
                assert _owner(r["conn_id"], 4) == placements.index(f"{r['slot']}/{r['cpu']}"), r
                out.setdefault((r["slot"], r["cpu"]), set()).add(r["conn_id"])
            return out

        before = by_place()
        target = max(before, key=lambda p: len(before[p]))
        listed = _cli(hq, f"display ike sa slot {target[0]} cpu {target[1]}").stdout
        ids = {int(line.split()[0]) for line in listed.splitlines() if re.match(r"^ \d+ ", line)}
        assert ids == before[target]
        _shell(hq, f"reset ike sa slot {target[0]} cpu {target[1]}")
        after = by_place()
        for place, conn_ids in before.items():
            if place != target:
                assert conn_ids <= after.get(place, set()), place  # no other placement lost any
        assert not (before[target] & after.get(target, set()))


def test_sigterm_deletes_every_sa_on_every_worker(tmp_path: Path) -> None:
    port = free_port_pair()
    n = random.randrange(20, 120)
    hq_addr, br_addr = f"127.0.3.{n}", f"127.0.3.{n + 100}"
    hq_cfg = lab_text("hq", **{"127.0.0.11": hq_addr}).replace("#\nreturn", ADMISSION)
    br_cfg = lab_text("branch1", **{"127.0.0.11": hq_addr, "127.0.0.12": br_addr})
    with gateway(tmp_path, "br", br_cfg, port, "--workers", "1") as br:
        with contextlib.ExitStack() as stack:
            hq = stack.enter_context(gateway(tmp_path, "hq", hq_cfg, port, "--workers", "2"))
            wait_for(lambda: br.phases() == [1, 2], what="Branch1's auto tunnel")
            br.call("load", count=9)
            wait_for(lambda: {_owner(r["conn_id"], 2) for r in hq.sas()} == {0, 1}
                     and _stats(hq)["ipsec_sas"] == 10, what="SAs on both workers")
            pids = [w["pid"] for w in _workers(hq)]
            hq.popen.send_signal(signal.SIGTERM)
            assert hq.popen.wait(60) == 0
        # every worker told Branch1: its SAs with HQ are gone (the auto policy comes back by itself later)
        deleted = [r for r in br.call("offline")["offline"] if r["reason"] == "peer request"]
        assert len(deleted) >= 20, deleted
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


def test_offline_info_after_workers_are_killed_lists_every_sa_they_held_even_the_newest(tmp_path: Path) -> None:
    """Both of HQ's workers are SIGKILLed the moment Branch1 has its loaded SAs up, without waiting for any
    report: every IKE SA they held is in ``display ike offline-info`` as ``worker restart`` (a worker tells
    the supervisor of an SA before the datagram that completes it leaves; the supervisor reads a dead
    worker's last words from the socket)."""
    port = free_port_pair()
    n = random.randrange(20, 120)
    hq_addr, br_addr = f"127.0.2.{n}", f"127.0.2.{n + 100}"
    hq_cfg = lab_text("hq", **{"127.0.0.11": hq_addr}).replace("#\nreturn", ADMISSION)
    br_cfg = lab_text("branch1", **{"127.0.0.11": hq_addr, "127.0.0.12": br_addr})
    count = 60
    with gateway(tmp_path, "br", br_cfg, port, "--workers", "1") as br, \
            gateway(tmp_path, "hq", hq_cfg, port, "--workers", "2") as hq:
        wait_for(lambda: br.phases() == [1, 2], what="Branch1's auto tunnel")
        pids = [w["pid"] for w in _workers(hq)]
        br.call("load", count=count - 1, concurrency=count)
        wait_for(lambda: _stats(br)["ipsec_sas"] == count, what="the loaded SAs at Branch1", step=0.005)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: all(w["pid"] not in (None, *pids) for w in _workers(hq)), what="the workers to come back")
        offline = [r for r in hq.call("offline")["offline"] if r["reason"] == "worker restart"]
        assert len(offline) == count, (len(offline), count)
        assert {(r["peer"], r["version"]) for r in offline} == {(br_addr, 2)}
        assert hq.sas() == [] and sum(w["reported_sas"] for w in _workers(hq)) == 0

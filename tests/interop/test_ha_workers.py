"""A hot-standby pair whose nodes each run two placement workers (``--workers 2``, issues 14 and 17).

The lab of tests/interop/test_ha_pair.py; here each node's supervisor runs keepalived and tells its workers
their role, and each worker syncs its SAs to the worker of the same index on the other node (its own port).
The tests run in order: the tunnel up with the standby following, then ``kill -9`` of the active's
supervisor (its workers and keepalived die with it): the other node's workers carry on with strongSwan's
SPIs unchanged.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from ikegate.workers.steering import peer_owner
from tests.interop import swan
from tests.interop.netns import Lab, skip_reason
from tests.interop.test_ha_pair import IKG_LAN, SW_HOST, SW_WAN, Pair, _build
from tests.interop.vrp import display_json
from tests.waiting import wait_for

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    for reason in (skip_reason(), swan.skip_reason(),
                   None if shutil.which("keepalived") else "keepalived is not installed (apt-get install keepalived)"):
        if reason:
            pytest.skip(reason)
    lab = Lab(tmp_path_factory.mktemp("haw"))
    try:
        p = _build(lab)
        # a site-to-site policy to strongSwan: its SAs live on the worker owning that peer, worker 1 (so
        # the sync of a worker other than 0, on its own port, is what the tests see)
        p.args, p.remote = ["--workers", "2"], SW_WAN
        assert peer_owner(SW_WAN, 2) == 1
        p.start("a")
        p.start("b")
        yield p
    finally:
        for name in ("a", "b"):
            log = lab.workdir / f"node{name}.log"
            if log.exists():
                sys.stderr.write(f"\n--- node {name} ---\n{log.read_text(errors='replace')[-3000:]}")
        lab.close()


def test_workers_follow_the_pair(pair: Pair) -> None:
    wait_for(lambda: pair.role("a") == "active" and pair.role("b") == "standby", what="VRRP to elect node a")
    assert [w["index"] for w in pair.procs["b"].call("workers")["workers"]] == [0, 1]
    out = pair.charon.initiate("net")
    assert out.returncode == 0, out.stdout + out.stderr
    sent, got = pair.ping(5)
    assert got == sent
    a_rows = {(r["conn_id"], r["phase"]) for r in display_json(pair.procs["a"], "display ike sa")["ike_sa"]}
    wait_for(lambda: {(r["conn_id"], r["phase"]) for r in display_json(pair.procs["b"], "display ike sa")["ike_sa"]}
             == a_rows, what="the standby's table to match")
    # the SA is on the worker of the same index on both nodes (its SPIs name that worker)
    def holders(name: str) -> list[int]:
        return [w["index"] for w in pair.procs[name].call("workers")["workers"] if w["reported_sas"]]

    wait_for(lambda: holders("a") == holders("b") == [1], what="the SA on worker 1 of both nodes")
    st = pair.hrp("b")
    assert st["peer_role"] == "active" and st["counters"]["sas_applied"] >= 1 and st["vrrp"][0]["state"] == "Backup"
    refused = pair.procs["b"].call("shell", lines=["reset ike sa"])
    assert "HRP standby state" in refused["output"] and refused["error"]
    config = pair.procs["b"].call("shell", lines=["system-view", "ike proposal 20"])
    assert "HRP standby state" in config["output"]
    done = pair.procs["a"].call("shell", lines=["system-view", "ike proposal 20", "dh group14"])
    assert not done["error"], done

    def mirrored() -> bool:
        text = pair.procs["b"].call("shell", lines=["display current-configuration"])["output"]
        return "ike proposal 20" in text and "vrrp vrid 1 virtual-ip 198.51.100.1 standby" in text

    wait_for(mirrored, what="the configuration on the standby (every worker through the supervisor)")
    digests = {w["config_digest"] for w in pair.procs["b"].call("workers")["workers"]}
    assert len(digests) == 1  # both of the standby's workers took it


def test_kill_active_supervisor_standby_workers_take_over(pair: Pair) -> None:
    before, established = pair.sw_sas(), pair.established_count()
    assert len(before) == 1
    ping = subprocess.Popen(["ip", "netns", "exec", pair.sw.name, "ping", "-i", "0.2", "-W", "1", "-c", "30", "-I",
                             SW_HOST, IKG_LAN], stdout=subprocess.PIPE, text=True)
    pair.procs["a"].popen.kill()  # kill -9: its workers and keepalived die with it
    pair.procs["a"].popen.wait()
    wait_for(lambda: pair.role("b") == "active", what="node b to become active")
    out, _ = ping.communicate(timeout=60)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    assert int(m.group(1)) - int(m.group(2)) <= 20, out
    assert pair.sw_sas() == before and pair.established_count() == established  # same SPIs, no new IKE SA
    sent, got = pair.ping(5)
    assert got == sent
    assert pair.sw_sas() == before

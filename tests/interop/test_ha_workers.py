"""A hot-standby pair whose nodes each run two placement workers (``--workers 2``, issues 14 and 17).

The lab of tests/interop/test_ha_pair.py; here each node's supervisor runs keepalived and tells its workers
their role, and each worker syncs its SAs to the worker of the same index on the other node (its own port).
A site-to-site policy to strongSwan puts its SAs on the worker owning that peer, worker 1, so what the
tests see is the sync of a worker other than 0. In order: the tunnel up with the standby following (its
shell refusing resets and configuration, the active's configuration mirrored to every worker), then
``kill -9`` of the active's supervisor (its workers and keepalived die with it): the other node's workers
carry on with strongSwan's SPIs unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ikegate.workers.steering import peer_owner
from tests.interop.test_ha_pair import (
    SW_WAN,
    Pair,
    check_standby_guard_and_mirroring,
    kill_a_during_ping,
    open_pair,
    tunnel_up_and_followed,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    assert peer_owner(SW_WAN, 2) == 1
    yield from open_pair(tmp_path_factory, ["--workers", "2"], remote=SW_WAN)


def _holders(pair: Pair, name: str) -> list[int]:
    """The workers of node ``name`` holding IKE SAs."""
    return [w["index"] for w in pair.procs[name].call("workers")["workers"] if w["reported_sas"]]


def test_workers_follow_the_pair(pair: Pair) -> None:
    assert [w["index"] for w in pair.procs["b"].call("workers")["workers"]] == [0, 1]
    tunnel_up_and_followed(pair)
    # the SA is on the worker of the same index on both nodes (its SPIs name that worker)
    wait_for(lambda: _holders(pair, "a") == _holders(pair, "b") == [1], what="the SA on worker 1 of both nodes")
    st = pair.hrp("b")
    assert st["peer_role"] == "active" and st["counters"]["sas_applied"] >= 1 and st["vrrp"][0]["state"] == "Backup"
    shown = pair.procs["b"].call("shell", lines=["display hrp state verbose"])["output"]
    assert "Role: standby, peer: active" in shown and "vrrp vrid 1: backup" in shown
    check_standby_guard_and_mirroring(pair)
    digests = {w["config_digest"] for w in pair.procs["b"].call("workers")["workers"]}
    assert len(digests) == 1  # both of the standby's workers took the mirrored configuration


def test_kill_active_supervisor_standby_workers_take_over(pair: Pair) -> None:
    before, established = pair.sw_sas(), pair.established_count()
    assert len(before) == 1
    assert kill_a_during_ping(pair, 30) <= 20  # its workers and keepalived die with the supervisor
    assert pair.sw_sas() == before and pair.established_count() == established  # same SPIs, no new IKE SA
    sent, got = pair.ping(5)
    assert got == sent
    assert pair.sw_sas() == before and _holders(pair, "b") == [1]

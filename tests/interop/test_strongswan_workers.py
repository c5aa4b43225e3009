"""strongSwan against ikegate with two placement workers (``ikegate run --workers 2``), whatever the CPU count.

The namespaces and strongSwan of tests/interop/test_strongswan.py; ikegate's TUN is multi-queue (one queue
per worker). Each cell brings a tunnel up, pings through it both ways, checks that both sides counted the
packets on the same Child SA, that the kernel steered every datagram to the worker whose SPI it carries
(``misrouted`` 0) and that the SAs live with the worker owning the peer (site-to-site) or where the
opening was steered (template)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ikegate.workers.steering import peer_owner
from tests.interop.netns import Lab
from tests.interop.test_strongswan import CHILD, CONN, DEFAULT, V1, Bed, SuiteCase, make_bed, show_logs
from tests.interop.test_strongswan_unique import _exactly_one
from tests.interop.vrp import ike_sas, ipsec_sas
from tests.waiting import wait_for

pytestmark = pytest.mark.interop
ROW = "placement workers (--workers 2, IPv4)"
WORKERS = 2


@pytest.fixture
def bed(lab: Lab) -> Iterator[Bed]:
    the_bed = make_bed(lab, "")
    the_bed.extra_args = ["--workers", str(WORKERS)]
    try:
        yield the_bed
    finally:
        show_logs(the_bed)


def _steered(bed: Bed) -> dict[str, Any]:
    assert bed.gw is not None
    st = bed.gw.call("stats")["stats"]
    assert st["workers"] == WORKERS and st["misrouted"] == 0, st
    for row in ike_sas(bed.gw):
        owner = (row["conn_id"] - 1) % WORKERS
        ours = row["spi_i"] if row["role"] == "initiator" else row["spi_r"]
        assert int(ours[:2], 16) == owner, row  # our IKE SPI names the worker holding the SA
    for row in ipsec_sas(bed.gw):
        assert row["spi_in"] >> 24 == (row["conn_id"] - 1) % WORKERS, row  # and our ESP SPI
    return st


@pytest.mark.parametrize(("case", "initiator"), [
    pytest.param(DEFAULT, True, id="v2-I", marks=pytest.mark.cell(ROW, "I", "IKEv2, ikegate initiates (auto)")),
    pytest.param(DEFAULT, False, id="v2-R", marks=pytest.mark.cell(ROW, "R", "IKEv2, strongSwan initiates")),
    pytest.param(V1, True, id="v1-I", marks=pytest.mark.cell(ROW, "1", "IKEv1 Main + Quick Mode, ikegate "
                                                                        "initiates")),
])
def test_tunnel_through_two_workers(bed: Bed, case: SuiteCase, initiator: bool) -> None:
    bed.start(case, initiator=initiator)
    if not initiator:
        answer = bed.charon.initiate(CHILD)
        assert answer.returncode == 0, answer.stdout + answer.stderr
    bed.wait_up()
    assert bed.ping_from_ikegate_side().returncode == 0
    assert bed.ping_from_strongswan().returncode == 0
    bed.assert_counted(6)
    assert len(bed.sw_ike()) == 1
    _steered(bed)


@pytest.mark.cell(ROW, "r", "reset ike sa on the supervisor: every worker asked, the auto policy comes back")
def test_reset_reaches_the_worker_and_the_tunnel_returns(bed: Bed) -> None:
    gw = bed.start(DEFAULT, initiator=True)
    bed.wait_up()
    first = {r["conn_id"] for r in ike_sas(gw)}
    out = gw.call("shell", lines=["reset ike sa"])
    assert not out["error"], out
    wait_for(lambda: bool(ike_sas(gw)) and not first & {r["conn_id"] for r in ike_sas(gw)}
             and len(bed.sw_ike()) == 1, what="a new IKE SA after the reset")
    bed.wait_up()
    assert bed.ping_from_ikegate_side().returncode == 0
    st = _steered(bed)
    assert st["negotiations_started"] == 2  # the owner initiated twice, no other worker ever did


@pytest.mark.cell(ROW, "T", "strongSwan terminates and initiates towards ikegate's auto policy: its opening is "
                            "passed to the peer's worker, one IKE SA")
def test_peer_initiated_sa_lands_on_the_peers_worker(bed: Bed) -> None:
    gw = bed.start(DEFAULT, initiator=True)
    bed.wait_up()
    owner = peer_owner(bed.sw_wan, WORKERS)
    old = bed.sw_ike()[0].uniqueid
    assert bed.charon.terminate("--ike", CONN).returncode == 0
    assert bed.charon.initiate(CHILD).returncode == 0
    wait_for(lambda: any(sa.uniqueid != old for sa in bed.sw_ike()), what="strongSwan's new IKE SA")
    ours = _exactly_one(bed)
    assert (ours["conn_id"] - 1) % WORKERS == owner, ours
    bed.wait_up()
    assert bed.ping_from_strongswan().returncode == 0
    _steered(bed)
    assert gw.call("stats")["stats"]["negotiations_started"] >= 1

"""One IKE SA per auto policy against strongSwan, whoever initiated it (issue 10, item 1).

ikegate re-evaluates its configuration after every shell command; an auto policy whose live IKE SA was
set up by strongSwan -- after ``swanctl --terminate`` and ``--initiate``, or by strongSwan's periodic
re-authentication (``reauth_time``), make-before-break or not -- must not get a second IKE SA from that.
Same namespaces as tests/interop/test_strongswan.py: ikegate's auto policy towards strongSwan, whose
connection can initiate too.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.interop.netns import Lab
from tests.interop.test_strongswan import CHILD, CONN, DEFAULT, V1, Bed, SuiteCase, make_bed, show_logs
from tests.interop.vrp import ike_sas
from tests.waiting import DEADLINE, wait_for

pytestmark = pytest.mark.interop
ROW = "one IKE SA per auto policy (IPv4)"


@pytest.fixture
def swan_bed(lab: Lab, request: Any) -> Iterator[Bed]:
    """The bed of test_strongswan.py; an indirect parameter adds charon settings."""
    the_bed = make_bed(lab, getattr(request, "param", ""))
    try:
        yield the_bed
    finally:
        show_logs(the_bed)


def _display(bed: Bed) -> None:
    """``ikegate cli -c "display ike sa"``: a read-only command, after which the daemon re-evaluates."""
    assert bed.gw is not None
    out = subprocess.run([sys.executable, "-m", "ikegate", "cli", "--control", bed.gw.control,
                          "-c", "display ike sa"], capture_output=True, text=True, timeout=DEADLINE)
    assert out.returncode == 0, out.stdout + out.stderr


def _settled(bed: Bed) -> bool:
    """Nothing in negotiation on either side (a duplicate would show up as one)."""
    assert bed.gw is not None
    ours = ike_sas(bed.gw)
    return bool(ours) and all("NEG" not in r["flags"] for r in ours) \
        and all(sa.state == "ESTABLISHED" for sa in bed.charon.sas())


def _exactly_one(bed: Bed) -> dict[str, Any]:
    assert bed.gw is not None
    wait_for(lambda: _settled(bed), what="both sides settled")
    ours, theirs = ike_sas(bed.gw), bed.charon.sas()
    assert len(ours) == 1 and len(theirs) == 1, (ours, theirs)
    assert (ours[0]["spi_i"], ours[0]["spi_r"]) == (theirs[0].raw["initiator-spi"], theirs[0].raw["responder-spi"])
    return ours[0]


@pytest.mark.parametrize("case", [
    pytest.param(DEFAULT, id="v2", marks=pytest.mark.cell(ROW, "T", "swanctl --terminate, then --initiate by "
                                                          "strongSwan, then ikegate commands")),
    pytest.param(V1, id="v1", marks=pytest.mark.cell(ROW, "1", "the same over IKEv1 (Main Mode)")),
])
def test_peer_initiated_sa_then_commands(swan_bed: Bed, case: SuiteCase) -> None:
    bed = swan_bed
    bed.start(case, initiator=True)
    bed.wait_up()
    old = bed.sw_ike()[0].uniqueid
    out = bed.charon.terminate("--ike", CONN)
    assert out.returncode == 0, out.stdout + out.stderr
    answer = bed.charon.initiate(CHILD)
    assert answer.returncode == 0, answer.stdout + answer.stderr
    wait_for(lambda: any(sa.uniqueid != old for sa in bed.sw_ike()), what="strongSwan's new IKE SA")
    for _ in range(5):
        _display(bed)
    first = _exactly_one(bed)
    for _ in range(3):
        _display(bed)
    assert _exactly_one(bed)["conn_id"] == first["conn_id"]
    bed.wait_up()
    assert bed.ping_from_strongswan().returncode == 0


@pytest.mark.parametrize("swan_bed", [
    pytest.param("    make_before_break = no\n", id="break-before-make",
                 marks=pytest.mark.cell(ROW, "a", "strongSwan re-authenticates (reauth_time 10s, break-before-make) "
                                        "while ikegate runs commands")),
    pytest.param("    make_before_break = yes\n", id="make-before-break",
                 marks=pytest.mark.cell(ROW, "A", "strongSwan re-authenticates (reauth_time 10s, make-before-break) "
                                        "while ikegate runs commands")),
], indirect=True)
def test_reauthentication_by_strongswan_while_commands_run(swan_bed: Bed) -> None:
    bed = swan_bed
    bed.start(DEFAULT, initiator=True, swan_conn={"reauth_time": "10s", "rand_time": "0", "over_time": "30s"})
    bed.wait_up()
    first = bed.sw_ike()[0].uniqueid

    def reauthenticated() -> bool:
        _display(bed)  # commands keep coming while strongSwan re-authenticates
        return any(sa.uniqueid != first for sa in bed.sw_ike())

    wait_for(reauthenticated, what="strongSwan's re-authentication", step=0.5)
    for _ in range(3):
        _display(bed)
    ours = _exactly_one(bed)
    assert ours["role"] == "responder"  # the new IKE SA is strongSwan's, and it serves the auto policy
    bed.wait_up()
    assert bed.ping_from_ikegate_side().returncode == 0
    bed.assert_counted(3)

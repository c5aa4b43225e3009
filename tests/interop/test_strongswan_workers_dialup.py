"""A dial-up (template) peer's SAs spread over ikegate's two workers, against strongSwan (issue 14).

Only site-to-site peers have a worker that owns all their SAs (their openings are handed to it); a
template peer's new IKE SA lands where the kernel steers its IKE_SA_INIT: byte 7 of its initiator SPI, mod
the number of workers. So one peer's old and new SAs may live on different workers, and whatever concerns
"all SAs of this peer" must reach every worker:

* INITIAL_CONTACT heard by one worker removes that identity's SAs on the others (the peer restarted);
* ``reset ike sa remote A`` removes the peer's SAs on every worker;
* strongSwan's re-authentication (make-before-break or break-before-make) leaves one IKE SA at ikegate,
  whichever worker the new one lands on, and the tunnel carries traffic afterwards.

To choose the worker, strongSwan's own IKE SPIs are labelled (``charon.spi_mask``/``spi_label``, which set
bits of every IKE SPI it makes): charon restarted with another label puts its next SA on the other worker.
One lab for the module: the namespaces, strongSwan and ikegate (``--workers 2``, a template for the peer)
come up once; each test starts from a peer with no SA.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop.netns import Lab, skip_reason
from tests.interop.test_strongswan import CHILD, DEFAULT, Bed, make_bed, show_logs
from tests.interop.vrp import ike_sas, ipsec_sas
from tests.waiting import wait_for

pytestmark = pytest.mark.interop
ROW = "dial-up peer over two workers (IPv4)"
WORKERS = 2


def _label(worker: int | None) -> str:
    """charon settings that put byte 7 of its IKE SPIs at ``worker`` (None: random SPIs)."""
    if worker is None:
        return ""
    return f"spi_mask = 0x{0xFF:016x}\nspi_label = 0x{worker:016x}\n"


@pytest.fixture(scope="module")
def dialup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bed]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    lab = Lab(Path(tmp_path_factory.mktemp("dialup")))
    try:
        bed = make_bed(lab, _label(0))
        bed.extra_args = ["--workers", str(WORKERS)]
        bed.start(DEFAULT, initiator=False)  # no remote address: the peer comes in through a template
        try:
            yield bed
        finally:
            show_logs(bed)
    finally:
        lab.close()


def _restart_charon(bed: Bed, *, worker: int | None, conn: dict[str, str] | None = None,
                    settings: str = "") -> None:
    """SIGKILL charon (it tells ikegate nothing) and start it again whose next IKE SA lands on ``worker``."""
    bed.charon.popen.kill()
    bed.charon.popen.wait()
    bed.charon.settings = _label(worker) + settings
    bed.charon.start()
    bed.charon.load(bed.swan_conf(DEFAULT, conn=conn))


def _worker(row: dict[str, Any]) -> int:
    return int((row["conn_id"] - 1) % WORKERS)


def _initiate(bed: Bed) -> None:
    answer = bed.charon.initiate(CHILD)
    assert answer.returncode == 0, answer.stdout + answer.stderr


def _shared(bed: Bed, rows: list[dict[str, Any]]) -> bool:
    """Every one of ``rows`` (ikegate's IKE SAs) is one strongSwan holds too (same SPIs), and vice versa."""
    theirs = {(sa.raw["initiator-spi"], sa.raw["responder-spi"]) for sa in bed.sw_ike()}
    return {(r["spi_i"], r["spi_r"]) for r in rows} == theirs


@pytest.fixture
def fresh(dialup: Bed) -> Iterator[Bed]:
    """The module's bed with no SA anywhere: ikegate resets everything, charon starts over."""
    assert dialup.gw is not None
    gw = dialup.gw
    gw.call("shell", lines=["reset ike sa"])
    wait_for(lambda: not ike_sas(gw) and not ipsec_sas(gw), what="ikegate without SAs")
    _restart_charon(dialup, worker=0)
    yield dialup
    st = gw.call("stats")["stats"]
    assert st["workers"] == WORKERS and st["misrouted"] == 0, st


@pytest.mark.cell(ROW, "C", "strongSwan restarts (INITIAL_CONTACT) and its new SA lands on the other worker: "
                            "the old one goes")
def test_initial_contact_removes_the_old_sa_on_the_other_worker(fresh: Bed) -> None:
    bed = fresh
    assert bed.gw is not None
    _initiate(bed)
    bed.wait_up()
    (old,) = ike_sas(bed.gw)
    assert _worker(old) == 0, old
    _restart_charon(bed, worker=1)  # charon forgot its SA; its next one carries INITIAL_CONTACT
    _initiate(bed)

    def only_the_new_one() -> bool:
        rows = ike_sas(bed.gw)  # type: ignore[arg-type]
        return len(rows) == 1 and _shared(bed, rows) and _worker(rows[0]) == 1

    wait_for(only_the_new_one, what="the old IKE SA gone from worker 0, the new one on worker 1")
    assert [_worker(r) for r in ipsec_sas(bed.gw)] == [1]
    bed.wait_up()
    assert bed.ping_from_strongswan().returncode == 0
    assert bed.ping_from_ikegate_side().returncode == 0


@pytest.mark.cell(ROW, "x", "reset ike sa remote: the peer's SAs on both workers go")
def test_reset_remote_reaches_every_worker(fresh: Bed) -> None:
    bed = fresh
    assert bed.gw is not None
    gw = bed.gw
    # unique = never: strongSwan sends no INITIAL_CONTACT, so the SA of its previous life stays at ikegate
    never = {"unique": "never"}
    _restart_charon(bed, worker=0, conn=never)
    _initiate(bed)
    wait_for(lambda: len(ike_sas(gw)) == 1, what="the first IKE SA")
    _restart_charon(bed, worker=1, conn=never)
    _initiate(bed)
    wait_for(lambda: sorted(_worker(r) for r in ike_sas(gw)) == [0, 1], what="one IKE SA of the peer on each worker")
    out = gw.call("shell", lines=[f"reset ike sa remote {bed.sw_wan}"])
    assert not out["error"], out
    wait_for(lambda: not ike_sas(gw) and not ipsec_sas(gw), what="no SA of the peer on any worker")
    wait_for(lambda: not bed.sw_ike(), what="strongSwan told (its live SA deleted)")


@pytest.mark.parametrize("mbb", [
    pytest.param("yes", id="make-before-break",
                 marks=pytest.mark.cell(ROW, "A", "strongSwan re-authenticates (make-before-break): one IKE SA "
                                                  "left, on whichever worker, traffic flows")),
    pytest.param("no", id="break-before-make",
                 marks=pytest.mark.cell(ROW, "a", "strongSwan re-authenticates (break-before-make): one IKE SA "
                                                  "left, on whichever worker, traffic flows")),
])
def test_reauthentication_leaves_one_sa_whichever_worker(fresh: Bed, mbb: str) -> None:
    """strongSwan's IKE SPIs are random here (charon's label applies to every SA of one life, so a fixed
    one would keep every re-authentication on the first SA's worker): each re-authentication lands on
    worker 0 or 1 at random. Rounds go on until one landed on another worker than the SA it replaced
    (at most four: 15 runs in 16 see it); every round must leave one SA and carry traffic."""
    bed = fresh
    assert bed.gw is not None
    gw = bed.gw
    _restart_charon(bed, worker=None, conn={"reauth_time": "8s", "rand_time": "0", "over_time": "30s"},
                    settings=f"make_before_break = {mbb}\n")
    _initiate(bed)
    bed.wait_up()
    landed = [_worker(ike_sas(gw)[0])]
    for _ in range(4):
        if len(set(landed)) > 1:  # a re-authentication moved the SA to the other worker
            break
        before = {sa.uniqueid for sa in bed.sw_ike()}

        def reauthenticated(before: set[int] = before) -> bool:
            now = {sa.uniqueid for sa in bed.sw_ike()}
            return bool(now) and not before & now

        wait_for(reauthenticated, what="strongSwan's re-authentication", step=0.5)

        def settled() -> bool:
            rows = ike_sas(gw)
            return len(rows) == 1 and len(bed.sw_ike()) == 1 and _shared(bed, rows) \
                and all("NEG" not in r["flags"] for r in rows)

        wait_for(settled, what="one IKE SA on both sides, the same")
        landed.append(_worker(ike_sas(gw)[0]))
        bed.wait_up()
        assert len(ipsec_sas(gw)) == 1, ipsec_sas(gw)
        assert bed.ping_from_ikegate_side().returncode == 0
        assert bed.ping_from_strongswan().returncode == 0
    print(f"re-authentications landed on workers {landed}")

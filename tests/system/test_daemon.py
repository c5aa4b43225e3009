"""Two `ikegate run` processes on loopback: establishment, reset, peer Deletes, shutdown, bad config."""

from __future__ import annotations

import random
import signal
from pathlib import Path

import pytest

from tests.system.procs import free_port_pair, gateway, lab_text
from tests.waiting import DEADLINE, wait_for

pytestmark = pytest.mark.system


def _addrs() -> tuple[str, str]:
    n = random.randrange(20, 120)
    return f"127.0.1.{n}", f"127.0.1.{n + 100}"


def _configs(hq: str, br: str, mode: str = "auto") -> tuple[str, str]:
    hq_cfg = lab_text("hq", **{"127.0.0.11": hq})
    br_cfg = lab_text("branch1", **{"127.0.0.11": hq, "127.0.0.12": br, "trigger-mode auto": f"trigger-mode {mode}"})
    return hq_cfg, br_cfg


def test_tunnel_up_reset_and_clean_shutdown(tmp_path: Path) -> None:
    port = free_port_pair()
    hq_addr, br_addr = _addrs()
    hq_cfg, br_cfg = _configs(hq_addr, br_addr)
    with gateway(tmp_path, "hq", hq_cfg, port) as hq, gateway(tmp_path, "br", br_cfg, port) as br:
        wait_for(lambda: br.phases() == [1, 2] and hq.phases() == [1, 2], what="tunnel up")
        hq_sas = hq.sas()
        br_sas = br.sas()
        ike_hq = next(s for s in hq_sas if s["phase"] == 1)
        ike_br = next(s for s in br_sas if s["phase"] == 1)
        assert ike_hq["spi_i"] == ike_br["spi_i"] and ike_hq["spi_r"] == ike_br["spi_r"]
        assert "ST" in ike_br["flags"] and "ST" not in ike_hq["flags"]
        # Moved ports: no raw ESP, so UDP encapsulation is forced and IKE floats to the NAT-T port (port + 1).
        assert ike_br["peer"] == f"{hq_addr}:{port + 1}"
        child_br = next(s for s in br_sas if s["phase"] == 2)
        child_hq = next(s for s in hq_sas if s["phase"] == 2)
        assert child_br["spi_in"] == child_hq["spi_out"] and child_br["spi_out"] == child_hq["spi_in"]
        assert child_hq["template"] == "branches"

        # reset ike sa conn-id <phase 1> on the branch (auto): gone, Delete sent, back at once.
        old = {s["conn_id"] for s in br_sas}
        assert br.call("reset", conn_id=ike_br["conn_id"])["deleted"] == 2
        wait_for(lambda: br.phases() == [1, 2] and not old & {s["conn_id"] for s in br.sas()}, what="re-established")
        wait_for(lambda: any(o["reason"] == "peer request" for o in hq.call("offline")["offline"]),
                 what="HQ saw the Delete")
        new_ike = next(s for s in br.sas() if s["phase"] == 1)
        assert new_ike["spi_i"] != ike_br["spi_i"]

        # reset on the template side: HQ waits, the branch comes back by itself.
        ike_hq = next(s for s in hq.sas() if s["phase"] == 1)
        assert hq.call("reset", conn_id=ike_hq["conn_id"])["deleted"] == 2
        wait_for(lambda: hq.phases() == [1, 2] and next(s for s in hq.sas() if s["phase"] == 1)["conn_id"]
                 != ike_hq["conn_id"], what="branch re-initiated")
        assert all(s["role"] == "responder" for s in hq.sas())

        # a conn-id that does not exist changes nothing
        assert hq.call("reset", conn_id=999999)["deleted"] == 0

        # SIGTERM on the branch: it deletes its SAs at the peer and exits 0
        br.popen.send_signal(signal.SIGTERM)
        assert br.popen.wait(DEADLINE) == 0
        wait_for(lambda: hq.phases() == [], what="HQ told of the shutdown")


def test_bad_config_line_is_reported_and_rest_loads(tmp_path: Path) -> None:
    port = free_port_pair()
    hq_addr, br_addr = _addrs()
    hq_cfg, br_cfg = _configs(hq_addr, br_addr)
    lines = br_cfg.splitlines()
    lines.insert(3, "ike proposal 10 bogus-word")
    lines.insert(5, " encryption-algorithm des-40")
    br_cfg = "\n".join(lines) + "\n"
    with gateway(tmp_path, "hq", hq_cfg, port) as hq, gateway(tmp_path, "br", br_cfg, port) as br:
        wait_for(lambda: br.phases() == [1, 2] and hq.phases() == [1, 2], what="tunnel up despite bad lines")
        err = br.stderr()
        assert "br.cfg:4:" in err and "br.cfg:6:" in err


def test_wrong_psk_gives_no_tunnel(tmp_path: Path) -> None:
    port = free_port_pair()
    hq_addr, br_addr = _addrs()
    hq_cfg, br_cfg = _configs(hq_addr, br_addr)
    br_cfg = br_cfg.replace("pre-shared-key ikegate-lab-psk-0123", "pre-shared-key another-key-999")
    with gateway(tmp_path, "hq", hq_cfg, port) as hq, gateway(tmp_path, "br", br_cfg, port) as br:
        wait_for(lambda: br.call("stats")["stats"]["negotiations_failed"], what="failure reported")
        assert br.phases() == [] and hq.phases() == []
        assert "AUTHENTICATION_FAILED" in br.call("stats")["stats"]["negotiations_failed"]

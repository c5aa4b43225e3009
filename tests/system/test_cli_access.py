"""The shell of a running gateway: `ikegate cli -c` and an interactive session through a real pty."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from tests.system.procs import free_port_pair, gateway, lab_text
from tests.waiting import DEADLINE, wait_for

pytestmark = pytest.mark.system


def _pair_configs() -> tuple[str, str]:
    n = random.randrange(20, 120)
    hq, br = f"127.0.4.{n}", f"127.0.4.{n + 100}"
    return (lab_text("hq", **{"127.0.0.11": hq}),
            lab_text("branch1", **{"127.0.0.11": hq, "127.0.0.12": br}))


def _cli(control: str, *commands: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "ikegate", "cli", "--control", control]
    for c in commands:
        args += ["-c", c]
    return subprocess.run(args, capture_output=True, text=True, timeout=DEADLINE)


def test_cli_commands_and_exit_status(tmp_path: Path) -> None:
    port = free_port_pair()
    hq_cfg, br_cfg = _pair_configs()
    with gateway(tmp_path, "hq", hq_cfg, port), gateway(tmp_path, "br", br_cfg, port) as br:
        wait_for(lambda: br.phases() == [1, 2], what="tunnel")
        ok = _cli(br.control, "display ike sa", "display ike sa verbose connection-id 1")
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.startswith("<Branch1>display ike sa\n")
        assert "Number of IKE SA : 2" in ok.stdout and "RD|ST|A" in ok.stdout
        bad = _cli(br.control, "display ike sa", "dispaly ike sa")
        assert bad.returncode == 1
        assert "<Branch1>dispaly ike sa\n         ^\nError: Unrecognized command found at '^' position." in bad.stdout
        conn = next(s for s in br.sas() if s["phase"] == 1)["conn_id"]
        reset = _cli(br.control, f"reset ike sa conn-id {conn}")
        assert reset.returncode == 0 and reset.stdout == f"<Branch1>reset ike sa conn-id {conn}\n"
        wait_for(lambda: br.phases() == [1, 2] and conn not in {s["conn_id"] for s in br.sas()}, what="back")
        # configuration through the shell, then save with its confirmation, written to the config file
        out = _cli(br.control, "system-view", "sysname BranchX", "return", "save", "y")
        assert out.returncode == 0, out.stdout
        assert "Continue? [Y/N]:" in out.stdout and "<BranchX>" in out.stdout
        assert "sysname BranchX" in (tmp_path / "br.cfg").read_text()
        assert "%^%#" in (tmp_path / "br.cfg").read_text()
        assert "ikegate-lab-psk-0123" not in (tmp_path / "br.cfg").read_text()


def test_interactive_session_through_a_pty(tmp_path: Path) -> None:
    port = free_port_pair()
    hq_cfg, br_cfg = _pair_configs()
    with gateway(tmp_path, "hq", hq_cfg, port) as hq, gateway(tmp_path, "br", br_cfg, port):
        wait_for(lambda: hq.phases() == [1, 2], what="tunnel")
        child = pexpect.spawn(sys.executable, ["-m", "ikegate", "cli", "--control", hq.control],
                              timeout=DEADLINE, encoding="utf-8", dimensions=(50, 200))
        try:
            child.expect_exact("<HQ>")
            child.send("dis ike sa\r")
            child.expect_exact("Number of IKE SA : 2")
            child.expect_exact("<HQ>")
            child.send("display ike ?")
            child.expect("offline-info")
            child.expect_exact("<HQ>display ike ")
            child.send("\x15")  # Ctrl+U clears the line
            child.send("sy\t")
            child.expect_exact("system-view")
            child.send("\r")
            child.expect_exact("[HQ]")
            child.send("reset ike sa\r")
            child.expect_exact("Error: Unrecognized command found at '^' position.")
            child.send("\x1a")  # Ctrl+Z: back to user view
            child.expect_exact("<HQ>")
            child.send("quit\r")
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
        assert hq.phases() == [1, 2]

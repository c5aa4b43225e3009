"""``ikegate demo`` through a real pty: HQ's console says that ``quit`` ends the lab, and each gateway
has its own configuration file, so ``save`` and ``display saved-configuration`` work."""

from __future__ import annotations

import re
import sys

import pexpect
import pytest

from ikegate.lab.demo import LAB_ENDS
from tests.system.procs import free_port_pair
from tests.waiting import DEADLINE

pytestmark = pytest.mark.system


def test_demo_save_and_saved_configuration() -> None:
    child = pexpect.spawn(sys.executable, ["-m", "ikegate", "demo", "--base-port", str(free_port_pair())],
                          timeout=DEADLINE, encoding="utf-8", dimensions=(50, 200))
    try:
        child.expect(r"hq\s+(\S+)\.sock\s+(\S+hq\.cfg)")
        hq_cfg = str(child.match.group(2))
        child.expect_exact(LAB_ENDS)
        child.expect_exact("<HQ>")
        child.send("display saved-configuration | include sysname\r")
        child.expect_exact("sysname HQ\r\n<HQ>")
        child.send("system-view\r")
        child.expect_exact("[HQ]")
        child.send("sysname HQ-SAVED\r")
        child.expect_exact("[HQ-SAVED]")
        child.send("return\r")
        child.expect_exact("<HQ-SAVED>")
        child.send("save\r")
        child.expect_exact("[Y/N]:")
        child.send("y\r")
        child.expect_exact("Info: Save the configuration successfully.")
        child.expect_exact("<HQ-SAVED>")
        child.send("display saved-configuration | include sysname\r")
        child.expect_exact("sysname HQ-SAVED\r\n<HQ-SAVED>")
        with open(hq_cfg) as f:
            assert re.search(r"^ ?sysname HQ-SAVED$", f.read(), re.M)
        child.send("quit\r")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0

"""Pager keys through a real pty (``ikegate cli`` against a running gateway), as an operator types them."""

from __future__ import annotations

import sys
from pathlib import Path

import pexpect
import pytest

from ikegate.cli.pager import MORE
from tests.system.procs import free_port_pair, gateway, lab_text
from tests.waiting import DEADLINE

pytestmark = pytest.mark.system


def test_pager_keys_through_a_pty(tmp_path: Path) -> None:
    with gateway(tmp_path, "hq", lab_text("hq"), free_port_pair()) as hq:
        child = pexpect.spawn(sys.executable, ["-m", "ikegate", "cli", "--control", hq.control],
                              timeout=DEADLINE, encoding="utf-8", dimensions=(50, 200))
        try:
            child.expect_exact("<HQ>")
            child.send("screen-length 10 temporary\r")
            child.expect_exact("<HQ>")
            child.send("display current-configuration\r")
            child.expect_exact(MORE)
            child.send(" ")  # Space: the next screen
            child.expect_exact(MORE)
            # A command typed at the pager: its first key stops the display, the rest is the next line.
            child.send("xdisplay version\r")
            child.expect_exact("<HQ>display version\r\n")
            child.expect_exact("Huawei Versatile Routing Platform Software")
            child.expect_exact("<HQ>")
            child.send("display current-configuration\r")
            child.expect_exact(MORE)
            child.send("\x1b[A")  # an arrow key stops it too, and recalls nothing
            child.expect_exact("<HQ>")
            child.send("dis ike sa | count\r")
            child.expect_exact("dis ike sa | count\r\n")
            child.expect_exact("Total lines: ")
            child.expect_exact("<HQ>")
            child.send("quit\r")
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)

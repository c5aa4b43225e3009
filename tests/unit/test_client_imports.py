"""``ikegate cli -c`` imports only what one control request needs: not the daemon, the gateway, asyncssh or
asyncio (each costs tens of milliseconds, and scripts run the client in loops)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("asyncio", "asyncssh", "cryptography", "ikegate.daemon", "ikegate.gateway.controller",
         "ikegate.gateway.device", "ikegate.mgmt.control", "ikegate.mgmt.ssh", "ikegate.sad")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport json, sys; print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_client_path_imports_no_daemon() -> None:
    # What `ikegate cli --control PATH -c ...` runs, up to the request (which fails: nobody listens there).
    loaded = _modules_after(
        "from ikegate.__main__ import main\n"
        "assert main(['cli', '--control', '/nonexistent/ikegate.sock', '-c', 'display ike sa']) == 2")
    assert "ikegate.mgmt.client" in loaded  # the path really ran
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_run_path_still_imports_the_daemon() -> None:
    """The check above can fail: the same probe sees the daemon once ``run`` is what is asked for."""
    loaded = _modules_after(
        "from ikegate.__main__ import main\n"
        "assert main(['run', '/nonexistent/gw.cfg']) == 2")
    assert {"ikegate.daemon", "asyncio", "ikegate.gateway.device"} <= loaded

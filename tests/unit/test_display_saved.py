"""``display saved-configuration``: the file ``save`` writes, read back; an error without one."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ikegate.cli.loader import load_config
from ikegate.cli.shell import Shell
from tests.conftest import device_shell, gateway_for


def shell(path: Path | None) -> Shell:
    config, _ = load_config(resources.files("ikegate.lab").joinpath("hq.cfg").read_text())
    return device_shell(gateway_for(config), config_path=str(path) if path else None,
                        shell={"save_callback": path.write_text if path else None})


def test_saved_not_running(tmp_path: Path) -> None:
    path = tmp_path / "gw.cfg"
    path.write_text("#\nsysname OLD\n#\nreturn\n")
    sh = shell(path)
    assert sh.run("display saved-configuration").lines == ["#", "sysname OLD", "#", "return"]
    sh.run("system-view")
    sh.run("sysname NEW")
    sh.run("return")
    sh.run("save")
    assert sh.run("y").ok
    assert " sysname NEW" in sh.run("display saved-configuration").lines


def test_without_a_file_or_unreadable(tmp_path: Path) -> None:
    out = shell(None).run("display saved-configuration")
    assert out.error == "Error: No configuration file is set for this device."
    out = shell(tmp_path / "missing.cfg").run("display saved-configuration")
    assert out.error is not None and out.error.startswith("Error: Failed to read the configuration file:")

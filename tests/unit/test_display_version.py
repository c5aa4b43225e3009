"""``display version``: the USG banner netmiko's autodetect looks for, the model from ``--model``,
ikegate's version, the process uptime; parsed by ntc-templates' own template and by ours."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import pytest
from textfsm import clitable

import ikegate
from ikegate.cli.loader import load_config
from ikegate.cli.render.version import uptime_text
from ikegate.cli.shell import Shell
from ikegate.gateway.device import make_device
from ikegate.textfsm import INDEX, template_dir
from tests.conftest import device_shell, gateway_for


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def shell(model: str | None, clock: Clock) -> Shell:
    config, _ = load_config(resources.files("ikegate.lab").joinpath("hq.cfg").read_text())
    device = make_device(model, None)
    return device_shell(gateway_for(config, device), device, monotonic=clock, booted=clock())


def test_layout_model_version_and_uptime() -> None:
    clock = Clock()
    sh = shell("usg6680e", clock)
    clock.now += 2 * 86400 + 3 * 3600 + 4 * 60 + 59
    out = sh.run("display version")
    assert out.error is None
    assert out.lines[:3] == [
        "Huawei Versatile Routing Platform Software",
        f"VRP (R) software, Version 5.170 (USG6680E ikegate {ikegate.__version__})",
        "HUAWEI USG6680E uptime is 0 week, 2 days, 3 hours, 4 minutes",
    ]
    assert out.lines[3] == "" and "not Huawei software" in out.lines[4]
    assert json.loads(sh.run("dis ver | json").text)["version"] == {
        "model": "USG6680E", "vrp_version": "5.170", "ikegate_version": ikegate.__version__,
        "uptime_seconds": 2 * 86400 + 3 * 3600 + 4 * 60 + 59}
    default = shell(None, Clock()).run("display version").lines[2]
    assert default == "HUAWEI USG6000V uptime is 0 week, 0 day, 0 hour, 0 minute"


@pytest.mark.parametrize(("seconds", "text"), [
    (59, "0 week, 0 day, 0 hour, 0 minute"),
    (60, "0 week, 0 day, 0 hour, 1 minute"),
    (3600 + 120, "0 week, 0 day, 1 hour, 2 minutes"),
    (15 * 86400 + 86400 + 7200, "2 weeks, 2 days, 2 hours, 0 minute"),
])
def test_uptime_units(seconds: float, text: str) -> None:
    assert uptime_text(seconds) == text


def _parse(directory: str, text: str) -> list[dict[str, str]]:
    table = clitable.CliTable(INDEX, directory)
    table.ParseCmd(text, {"Command": "display version", "Platform": "huawei_vrp"})
    return [dict(zip(table.header, row, strict=True)) for row in table]


def test_ntc_templates_and_ours_parse_it() -> None:
    """Scripts that already use ntc-templates' ``huawei_vrp_display_version`` get the model and uptime."""
    import ntc_templates

    text = "\n".join(shell("USG6655E", Clock()).run("display version").lines) + "\n"
    ntc_dir = str(Path(ntc_templates.__file__).parent / "templates")
    (ntc,) = _parse(ntc_dir, text)
    assert (ntc["MODEL"], ntc["VRP_VERSION"], ntc["UPTIME"]) == ("USG6655E", "5.170", "0 week, 0 day, 0 hour, 0 minute")
    (ours,) = _parse(template_dir(), text)
    assert ours == {"MODEL": "USG6655E", "VRP_VERSION": "5.170",
                    "PRODUCT_VERSION": f"USG6655E ikegate {ikegate.__version__}",
                    "UPTIME": "0 week, 0 day, 0 hour, 0 minute", "IKEGATE_VERSION": ikegate.__version__}


def test_netmiko_autodetect_pattern_matches() -> None:
    """The patterns netmiko's SSH autodetect applies to this output for ``huawei``."""
    from netmiko.ssh_autodetect import SSH_MAPPER_DICT

    entry = SSH_MAPPER_DICT["huawei"]
    assert entry["cmd"] == "display version"
    text = shell(None, Clock()).run(str(entry["cmd"])).text
    assert any(re.search(p, text) for p in entry["search_patterns"])

"""TextFSM through netmiko itself: ``send_command(..., use_textfsm=True)`` over real SSH against an
``ikegate run`` process with a tunnel up, with both device types netmiko offers for VRP (``huawei``, the
one the README recommends, and ``huawei_vrp``). netmiko passes its device type as the index's Platform,
so a template keyed on one name only silently gives the other raw text; every shipped template is driven
here, and each parsed table is checked against the ``| json`` records of the same display."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest

from ikegate.textfsm import template_dir
from tests.system.procs import free_port_pair, gateway
from tests.system.test_ssh import ADMIN_PW, NETMIKO_WAITS, access_config, free_tcp_port, netmiko_lab
from tests.waiting import wait_for

pytestmark = pytest.mark.system


@pytest.mark.parametrize("device_type", ["huawei", "huawei_vrp"])
def test_every_template_through_netmiko(tmp_path: Path, device_type: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from netmiko import ConnectHandler

    monkeypatch.setenv("NET_TEXTFSM", template_dir())
    with netmiko_lab(tmp_path, 3) as lab:
        br_addr = lab.br_addr
        device = ConnectHandler(device_type=device_type, host=lab.hq_addr, port=lab.ssh_port, username="admin",
                                password=ADMIN_PW, fast_cli=True, **NETMIKO_WAITS)
        try:
            def parsed(command: str) -> list[dict[str, Any]]:
                rows = device.send_command(command, use_textfsm=True)
                assert isinstance(rows, list), f"{device_type}: {command!r} came back as raw text:\n{rows}"
                return rows

            def records(command: str, key: str) -> list[dict[str, Any]]:
                text = device.send_command(command + " | json")
                assert isinstance(text, str)
                return list(json.loads(text)[key])

            sas = parsed("display ike sa")
            assert [(int(r["conn_id"]), r["peer"], int(r["phase"])) for r in sas] == [
                (r["conn_id"], r["peer_address"], r["phase"]) for r in records("display ike sa", "ike_sa")]
            assert {r["peer"] for r in sas} == {br_addr} and sorted(r["phase"] for r in sas) == ["1", "2"]

            (sa,) = parsed("dis ips sa")  # abbreviated, as the index allows
            (rec,) = records("display ipsec sa", "ipsec_sa")
            assert (int(sa["conn_id"]), int(sa["inbound_spi"]), int(sa["outbound_spi"])) == (
                rec["conn_id"], rec["spi_in"], rec["spi_out"])
            assert sa["remote_address"] == br_addr

            brief = parsed("display ipsec sa brief")
            assert {int(r["spi"]) for r in brief} == {rec["spi_in"], rec["spi_out"]}

            proposals = parsed("display ike proposal")
            assert [p["number"] for p in proposals] == [
                *(str(p["number"]) for p in records("display ike proposal", "ike_proposal")), "Default"]

            peers = parsed("display ike peer")
            assert [p["name"] for p in peers] == [p["name"] for p in records("display ike peer", "ike_peer")]
            assert peers and [p["name"] for p in parsed("display ike peer brief")] == [p["name"] for p in peers]

            (ver,) = parsed("display version")
            assert ver["model"] == "USG6000V" and ver["uptime"].startswith("0 week, 0 day, 0 hour")

            # No template for this layout: netmiko hands back the text unchanged.
            verbose = device.send_command("display ike sa verbose connection-id 1", use_textfsm=True)
            assert isinstance(verbose, str)
        finally:
            device.disconnect()


def test_empty_table_comes_back_as_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no SA the USG prints the timestamp line only; the template finds no row and netmiko then
    returns the raw text (its ``_textfsm_parse`` treats ``[]`` as "no structured data"), as the README
    documents."""
    from netmiko import ConnectHandler

    monkeypatch.setenv("NET_TEXTFSM", template_dir())
    address = f"127.0.4.{random.randrange(2, 250)}"
    port = free_tcp_port(address)
    with gateway(tmp_path, "gw", access_config(address, port), free_port_pair()):
        device = ConnectHandler(device_type="huawei", host=address, port=port, username="admin",
                                password=ADMIN_PW, fast_cli=True, **NETMIKO_WAITS)
        try:
            out = device.send_command("display ike sa", use_textfsm=True)
            assert isinstance(out, str) and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", out.strip())
        finally:
            device.disconnect()


def test_netmiko_autodetect_finds_huawei(tmp_path: Path) -> None:
    """netmiko's SSH autodetect sends ``display version`` and must land on the ``huawei`` driver."""
    from netmiko import SSHDetect

    address = f"127.0.5.{random.randrange(2, 250)}"
    port = free_tcp_port(address)
    with gateway(tmp_path, "gw", access_config(address, port), free_port_pair(), "--model", "USG6680E"):
        detect = SSHDetect(device_type="autodetect", host=address, port=port, username="admin", password=ADMIN_PW,
                           **NETMIKO_WAITS)
        try:
            assert detect.autodetect() == "huawei"
            assert max(detect.potential_matches, key=detect.potential_matches.__getitem__) == "huawei"
        finally:
            detect.connection.disconnect()


def test_reset_and_save_the_ways_automation_writes_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Against the default ``ikegate run`` (a worker per CPU): ``reset ike sa`` by ``send_command``,
    ``send_command_timing`` and with an ``expect_string`` allowing a ``[Y/N]`` question (the USG asks
    none), a conn-id taken from the TextFSM table; ``save`` answered by ``send_multiline``;
    ``send_config_set(error_pattern=...)`` raising on a bad line. HQ is a
    template (it waits) and Branch1's auto policy brings the tunnel back after each reset."""
    import os

    from netmiko import ConfigInvalidException, ConnectHandler

    monkeypatch.setenv("NET_TEXTFSM", template_dir())
    with netmiko_lab(tmp_path, 8) as lab:
        assert lab.hq.call("stats")["stats"]["workers"] == (os.cpu_count() or 1)
        device = ConnectHandler(device_type="huawei", host=lab.hq_addr, port=lab.ssh_port, username="admin",
                                password=ADMIN_PW, fast_cli=True, **NETMIKO_WAITS)
        try:
            def phase1() -> list[dict[str, Any]]:
                rows = device.send_command("display ike sa", use_textfsm=True)
                return [r for r in rows if r["phase"] == "1"] if isinstance(rows, list) else []

            def back(old: set[str]) -> bool:  # through the control socket: cheaper to poll than SSH
                rows = [r for r in lab.hq.sas() if r["phase"] == 1]
                return len(rows) == 1 and str(rows[0]["conn_id"]) not in old and lab.hq.phases() == [1, 2]

            for how in ("command", "timing", "expect"):
                (sa,) = phase1()
                command = f"reset ike sa conn-id {sa['conn_id']}" if how == "command" else "reset ike sa"
                if how == "command":
                    out = device.send_command(command)
                elif how == "timing":
                    out = device.send_command_timing(command)
                else:
                    out = device.send_command(command, expect_string=r"\[Y/N\]|<HQ>")
                assert "Error" not in out and "[Y/N]" not in out, out
                wait_for(lambda old={sa["conn_id"]}: back(old), what=f"the tunnel back after reset ({how})")

            out = device.send_multiline([["save", r"\[Y/N\]"], ["Y", r"<HQ>"]])
            assert "Save the configuration successfully" in out, out

            with pytest.raises(ConfigInvalidException):
                device.send_config_set(["ike proposal 30", "no such command"], error_pattern=r"Error")
            device.exit_config_mode()
            assert device.find_prompt() == "<HQ>"
            out = device.send_command("reset ike sa conn-id 4294967295")
            assert out.startswith("Info:") and "nothing was deleted" in out, out
        finally:
            device.disconnect()

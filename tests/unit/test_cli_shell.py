"""The shell session on its byte path: prompts, views, paging, save, the command log, key secrecy."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from ikegate.cli.commands import default_tree
from ikegate.cli.logbuffer import LogBuffer
from ikegate.cli.pager import MORE
from ikegate.cli.shell import Shell
from ikegate.cli.tree import MANAGE
from ikegate.policy.model import Config

TREE = default_tree()
KEY = "Sup3r-Secret-Key"


def session(**kwargs: Any) -> Shell:
    return Shell(Config(), tree=TREE, **kwargs)


def typed(shell: Shell, *lines: str) -> str:
    return shell.feed(b"".join(line.encode() + b"\r\n" for line in lines)).decode()


def test_first_prompt_and_bare_enter() -> None:
    shell = session()
    assert shell.start() == b"<USG6000>"
    assert shell.feed(b"\r") == b"\r\n<USG6000>"
    assert shell.feed(b"\n") == b""  # the LF of a CR LF split over two reads
    assert shell.feed(b"\n") == b"\r\n<USG6000>"


def test_system_view_echo_message_and_prompt() -> None:
    out = typed(session(), "system-view")
    assert out == "system-view\r\nEnter system view, return user view with Ctrl+Z.\r\n[USG6000]"


def test_sub_view_prompts() -> None:
    shell = session()
    typed(shell, "sy", "sysname FW")
    cases = {
        "ike proposal 10": "[FW-ike-proposal-10]",
        "ike peer B1": "[FW-ike-peer-B1]",
        "ipsec proposal ts": "[FW-ipsec-proposal-ts]",
        "acl number 3000": "[FW-acl-adv-3000]",
        "ipsec policy map1 10 isakmp": "[FW-ipsec-policy-isakmp-map1-10]",
        "ipsec policy-template dyn 5": "[FW-ipsec-policy-templet-dyn-5]",
        "interface GigabitEthernet0/0/1": "[FW-GigabitEthernet0/0/1]",
        "interface LoopBack0": "[FW-LoopBack0]",
    }
    for line, prompt in cases.items():
        assert typed(shell, line).endswith("\r\n" + prompt), line


def test_return_and_ctrl_z_go_to_user_view() -> None:
    shell = session()
    typed(shell, "sy", "ike peer A")
    assert typed(shell, "return").endswith("\r\n<USG6000>")
    typed(shell, "sy", "ike peer A")
    assert shell.feed(b"\x1a") == b"\r\n<USG6000>"


def test_quit_in_user_view_closes_the_session() -> None:
    shell = session()
    assert typed(shell, "quit") == "quit\r\n"
    assert shell.closed
    assert shell.feed(b"display this\r") == b""


def test_error_lines_on_the_byte_path() -> None:
    shell = session()
    out = typed(shell, "display arp all")
    assert out == (
        "display arp all\r\n"
        + " " * len("<USG6000>display ")
        + "^\r\n"
        + "Error: Unrecognized command found at '^' position.\r\n<USG6000>"
    )


# --- paging -------------------------------------------------------------------------------------
def big_config_shell(**kwargs: object) -> Shell:
    shell = session(**kwargs)
    for n in range(1, 31):
        shell.execute("sy")
        shell.execute(f"ike proposal {n}")
        shell.execute("sa duration 3600")
    shell.execute("return")
    return shell


def test_long_output_is_paged_with_more() -> None:
    shell = big_config_shell()
    out = typed(shell, "display current-configuration")
    assert out.endswith(MORE)
    body = out.split("\r\n")[1:-1]
    assert len(body) == 23  # screen-length 24: 23 lines and the pager prompt
    more = shell.feed(b"\r").decode()  # Enter: one more line
    assert more.count("\r\n") == 1 and more.endswith(MORE)
    page = shell.feed(b" ").decode()  # space: a screen more
    assert page.count("\r\n") == 23
    rest = shell.feed(b"q").decode()  # q: stop, back to the prompt
    assert rest.endswith("<USG6000>")
    assert MORE not in rest


def test_paging_to_the_end_gives_the_prompt() -> None:
    shell = big_config_shell()
    out = typed(shell, "display current-configuration")
    while out.endswith(MORE):
        out += shell.feed(b" ").decode()
    assert out.endswith("return\r\n<USG6000>")


def test_crlf_in_the_pager_is_one_line() -> None:
    shell = big_config_shell()
    typed(shell, "display current-configuration")
    assert shell.feed(b"\r\n").decode().count("\r\n") == 1


def test_screen_length_0_temporary_turns_paging_off() -> None:
    shell = big_config_shell()
    out = typed(shell, "screen-length 0 temporary", "display current-configuration")
    assert MORE not in out
    assert out.endswith("return\r\n<USG6000>")
    typed(shell, "undo screen-length temporary")
    assert typed(shell, "display current-configuration").endswith(MORE)


# --- save -------------------------------------------------------------------------------------
def test_save_asks_and_writes_through_the_callback() -> None:
    written: list[str] = []
    shell = session(save_callback=written.append)
    typed(shell, "sy", "sysname SAVED", "return")
    out = typed(shell, "save")
    assert out.endswith("Warning: The current configuration will be written to the device. Continue? [Y/N]:")
    out = typed(shell, "y")
    assert "Info: Save the configuration successfully." in out
    assert out.endswith("<SAVED>")
    assert written and " sysname SAVED" in written[0].splitlines()


def test_save_refused_writes_nothing() -> None:
    written: list[str] = []
    shell = session(save_callback=written.append)
    typed(shell, "save")
    out = typed(shell, "n")
    assert "Info: The configuration was not saved." in out
    assert written == []


def test_save_through_execute() -> None:
    written: list[str] = []
    shell = session(save_callback=written.append)
    assert shell.execute("save").text.endswith("[Y/N]:")
    assert shell.execute("Y").ok
    assert len(written) == 1


# --- the command log ------------------------------------------------------------------------------
def fixed_clock() -> dt.datetime:
    return dt.datetime(2025, 5, 7, 15, 10, 12)


def test_commands_are_recorded_in_the_logbuffer() -> None:
    log = LogBuffer(clock=fixed_clock)
    shell = session(logbuffer=log, user="alice", task="vty1", ip="10.0.0.9")
    typed(shell, "sy", "ike proposal 999")
    records = list(log)
    assert records[0].brief == "CMDRECORD"
    assert records[0].text == ('Recorded command information. (Task=vty1, Ip=10.0.0.9, User=alice, Command="sy")')
    assert records[1].brief == "CMDRECORDFAILED"
    assert 'Command="ike proposal 999"' in records[1].text
    assert "Result=\"Wrong parameter found at '^' position.\"" in records[1].text
    shown = shell.execute("display logbuffer").lines
    assert any(line.startswith("May 07 2025 15:10:12 USG6000 %%01SHELL/5/CMDRECORD(l):") for line in shown)


def test_logbuffer_is_bounded() -> None:
    log = LogBuffer(capacity=3)
    shell = session(logbuffer=log)
    for _ in range(5):
        shell.execute("display this")
    assert len(log) == 3


# --- the pre-shared key never shows in clear --------------------------------------------------------
def test_psk_never_printed_or_logged_in_clear() -> None:
    log = LogBuffer()
    shell = session(logbuffer=log)
    transcript = typed(shell, "sy", "ike peer A", f"pre-shared-key {KEY}", "display this")
    transcript += typed(shell, "display current-configuration", "display logbuffer")
    transcript += typed(shell, f"pre-shared-key {KEY}{'x' * 200}")  # refused: too long, still masked
    assert shell.config.ike_peers["A"].pre_shared_key == KEY
    assert " pre-shared-key %^%#" in transcript
    # the echo of what was typed (prompt + line) is the only place the key appears
    for line in transcript.split("\r\n"):
        if KEY in line:
            assert re.fullmatch(r"\[USG6000-ike-peer-A\]pre-shared-key " + KEY + "x*", line), line
    assert all(KEY not in record.text for record in log)
    assert any('Command="pre-shared-key ******"' in record.text for record in log)


def test_level_is_kept_per_session() -> None:
    shell = session(level=MANAGE)
    assert shell.level == MANAGE


def test_netmiko_huawei_byte_sequence() -> None:
    """The exact sends of netmiko's ``huawei`` driver (research: python-ecosystem §3.2), with LF."""
    written: list[str] = []
    shell = big_config_shell(save_callback=written.append)
    out = shell.start().decode()
    for line in [
        "",
        "",
        "screen-length 0 temporary",
        "",
        "",
        "display current-configuration",
        "",
        "system-view",
        "",
        "sysname USG6000V1",
        "",
        "return",
        "",
        "save",
        "y",
        "",
        "quit",
    ]:
        out += shell.feed(line.encode() + b"\n").decode()
    assert MORE not in out
    assert "screen-length 0 temporary\r\n<USG6000>" in out  # echoed, then a prompt netmiko can find
    assert "[USG6000V1]" in out and "<USG6000V1>" in out
    assert "Continue? [Y/N]:y\r\n" in out
    assert written and shell.closed

"""The ``---- More ----`` pager's keys on the byte path: Space and Enter go on, every other key stops the
display and is consumed, and what is typed after it reaches the next command line whole."""

from __future__ import annotations

import pytest

from ikegate.cli.commands import default_tree
from ikegate.cli.pager import MORE
from ikegate.cli.shell import Shell
from ikegate.policy.model import Config

TREE = default_tree()


def paged() -> Shell:
    shell = Shell(Config(), tree=TREE)
    for n in range(1, 31):
        shell.execute("sy")
        shell.execute(f"ike proposal {n}")
        shell.execute("sa duration 3600")
    shell.execute("return")
    out = shell.feed(b"display current-configuration\r").decode()
    assert out.endswith(MORE)
    return shell


@pytest.mark.parametrize("key", [b"q", b"Q", b"\x03", b"x", b"d", b"\t", b"?", b"\x1a", b"\x7f", b"1"])
def test_any_other_key_stops_and_is_not_typed(key: bytes) -> None:
    shell = paged()
    out = shell.feed(key).decode()
    assert out.endswith("<USG6000>") and MORE not in out
    assert shell.editor.buffer == ""
    # what follows the stopping key is the next command, whole
    assert shell.feed(b"display this\r").decode().startswith("display this\r\n")


def test_typing_a_command_at_the_pager_keeps_all_but_the_first_key() -> None:
    """Typing ahead: the first key stops the display; the rest is the next line as typed after it."""
    shell = paged()
    out = shell.feed(b"xdisplay this\r").decode()
    assert "display this\r\n" in out and out.endswith("<USG6000>")
    assert MORE not in out.split("display this")[-1]


@pytest.mark.parametrize("arrow", [b"\x1b[A", b"\x1b[B", b"\x1bOC", b"\x1b[3~"])
def test_an_arrow_key_stops_and_leaves_no_trace(arrow: bytes) -> None:
    shell = paged()
    shell.feed(arrow[:1])  # the ESC may come alone, the rest in the next read
    shell.feed(arrow[1:])
    assert shell.editor.buffer == ""
    shell.feed(b"sy")
    assert shell.editor.buffer == "sy"


def test_lone_escape_then_text() -> None:
    shell = paged()
    shell.feed(b"\x1b")
    shell.feed(b"dis")
    assert shell.editor.buffer == "dis"


def test_space_and_enter_still_page() -> None:
    shell = paged()
    assert shell.feed(b"\r").decode().count("\r\n") == 1
    assert shell.feed(b" ").decode().count("\r\n") == 23

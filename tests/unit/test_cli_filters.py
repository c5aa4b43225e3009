"""Output filters (``| include``/``exclude``/``begin``/``count``/``no-more``/``json``): declared once in
the tree, so every display command has them with `?`, Tab and the VRP errors; applied in one pass."""

from __future__ import annotations

import json
import re
from collections import deque
from importlib import resources

import pytest

from ikegate.cli import filters, matcher
from ikegate.cli.loader import load_config
from ikegate.cli.pager import MORE
from ikegate.cli.shell import Shell
from ikegate.cli.tree import MANAGE, CommandTree, State
from ikegate.cli.views import ViewKind
from ikegate.gateway.device import make_device
from tests.conftest import device_shell, gateway_for, runtime_tree

DEVICE = make_device(None, None)
TREE = runtime_tree(DEVICE)


def hq() -> Shell:
    config, errors = load_config(resources.files("ikegate.lab").joinpath("hq.cfg").read_text())
    assert not errors
    return device_shell(gateway_for(config, DEVICE), DEVICE)


def lines(shell: Shell, line: str) -> list[str]:
    out = shell.run(line)
    assert out.error is None, out.lines
    return out.lines


def test_include_exclude_begin_count() -> None:
    shell = hq()
    full = lines(shell, "display current-configuration")
    assert lines(shell, "display current-configuration | include ike") == [x for x in full if "ike" in x]
    assert lines(shell, "dis cu | e ^ |#") == [x for x in full if not re.search("^ |#", x)]
    begin = lines(shell, "dis cu | begin ^ipsec policy")
    assert begin[0].startswith("ipsec policy") and begin == full[full.index(begin[0]):]
    assert lines(shell, "dis cu | count") == [f"Total lines: {len(full)}"]
    assert lines(shell, "dis cu | include nothing-like-this") == []


def test_the_expression_is_the_rest_of_the_line() -> None:
    """As on VRP: spaces belong to the expression, and a second ``|`` is an alternation in it."""
    shell = hq()
    assert lines(shell, "dis cu | include ike peer") == ["ike peer branches"]
    assert lines(shell, "dis cu | include sysname|ike peer") == [" sysname HQ", "ike peer branches"]
    assert lines(shell, "dis cu | include x | count") == []  # "x | count": no such line, not a count


def test_leading_quantifier_is_literal_as_on_vrp() -> None:
    shell = hq()
    assert lines(shell, "dis cu | include *") == []  # a literal "*", no line has one
    assert lines(shell, "dis cu | include +") == []


@pytest.mark.parametrize("bad", ["(abc", "[a-", "a{2,1}", "ike\\"])
def test_bad_expression_is_wrong_parameter_with_caret(bad: str) -> None:
    shell = hq()
    line = f"display current-configuration | include {bad}"
    out = shell.run(line)
    assert out.error == "Error: Wrong parameter found at '^' position."
    assert out.lines[0] == " " * (len("<HQ>") + line.index(bad)) + "^"
    # the same on the byte path: echo, caret, error, prompt; no traceback
    echoed = shell.feed(line.encode() + b"\r").decode()
    assert echoed.endswith("Error: Wrong parameter found at '^' position.\r\n<HQ>")


def test_json_combines_with_nothing() -> None:
    shell = hq()
    records = json.loads("\n".join(lines(shell, "display ike peer | json")))
    assert [p["name"] for p in records["ike_peer"]] == ["branches"]
    for line, bad_token in [("display ike peer | json | include x", "|"), ("display ike peer | json x", "x"),
                            ("display ike peer | count | json", "|"), ("display ike peer | no-more json", "json")]:
        out = shell.run(line)
        assert out.error == "Error: Too many parameters found at '^' position.", line
        assert out.lines[0] == " " * (len("<HQ>") + line.rindex(bad_token)) + "^", line
    # a text filter takes "| json" as part of its expression (an alternation): text, never JSON
    assert lines(shell, "display ike peer | include nomatch | json") == []


def test_filters_only_after_display_commands() -> None:
    shell = hq()
    shell.run("system-view")
    out = shell.run("sysname X | include a")
    assert out.error == "Error: Too many parameters found at '^' position."
    assert out.lines[0] == " " * (len("[HQ]") + len("sysname X ")) + "^"
    assert shell.config.sysname == "HQ"


def test_incomplete_filter() -> None:
    shell = hq()
    for line in ("display ike sa |", "display ike sa | include"):
        out = shell.run(line)
        assert out.error == "Error: Incomplete command found at '^' position.", line
    out = shell.run("display ike sa | sort")
    assert out.error == "Error: Unrecognized command found at '^' position."


def test_help_and_tab() -> None:
    shell = hq()
    first = shell.feed(b"display ike sa ?").decode()
    assert "  |                        Matching output\r\n  <cr>\r\n" in first
    shell.feed(b"\x15")
    listed = shell.feed(b"display ike sa | ?").decode()
    words = [x.split()[0] for x in listed.split("\r\n")[1:-1]]
    assert words == ["begin", "count", "exclude", "include", "json", "no-more"]
    shell.feed(b"\x15")
    assert "STRING<1-255>            Regular expression" in shell.feed(b"display ike sa | include ?").decode()
    shell.feed(b"\x15")
    shell.feed(b"dis ike sa | inc\t")
    assert shell.editor.buffer == "dis ike sa | include "
    shell.feed(b"\x15")
    shell.feed(b"dis cu | no\t")
    assert shell.editor.buffer == "dis cu | no-more "


def _display_accepts(tree: CommandTree) -> list[tuple[str, State]]:
    """Every (display command, accepting state outside the filter graph) in every view."""
    found: list[tuple[str, State]] = []
    for view in ViewKind:
        for entry in tree.entries(view, MANAGE):
            if not entry.command.syntax.startswith("display"):
                continue
            seen: set[int] = set()
            todo = deque([entry.start])
            while todo:
                state = todo.popleft()
                if state.id in seen:
                    continue
                seen.add(state.id)
                if state.accept is entry.command:
                    found.append((entry.command.syntax, state))
                todo.extend(state.empty)
                todo.extend(e.target for e in state.edges if e.name != filters.PIPE_NAME)
    return found


def test_every_display_command_has_the_filters() -> None:
    """Structurally: every state where a display command may end (outside the grafted filter graph)
    leads on with ``|`` — the filters are declared once and reach every display command."""
    accepts = _display_accepts(TREE)
    assert {syntax.split(" [")[0] for syntax, _ in accepts} >= {
        "display ike sa", "display ipsec sa", "display current-configuration", "display this", "display ike peer"}
    for syntax, state in accepts:
        assert [e.word for e in state.edges if e.name == filters.PIPE_NAME] == ["|"], syntax
    assert not any(e.word == "|" for entry in TREE.entries(ViewKind.SYSTEM, MANAGE)
                   if not entry.command.syntax.startswith("display") for e in entry.start.edges)


def test_every_display_line_takes_a_filter() -> None:
    """The filter works on the shortest form of every display command the tree can complete."""
    shell = hq()
    for line in ("display ike sa", "display ipsec sa brief", "display ike proposal", "display ike peer",
                 "display current-configuration", "display ike statistics", "display ike offline-info",
                 "display logbuffer", "display this"):
        out = shell.run(f"{line} | count")
        assert out.error is None and len(out.lines) == 1 and out.lines[0].startswith("Total lines: "), line
        assert matcher.match(TREE, ViewKind.USER, MANAGE, f"{line} | no-more")


def test_no_more_skips_the_pager_and_include_is_paged() -> None:
    shell = hq()
    shell.screen_length = 5
    out = shell.feed(b"display current-configuration | no-more\r").decode()
    assert MORE not in out and out.endswith("return\r\n<HQ>")
    out = shell.feed(b"display current-configuration | include ^ \r").decode()  # the indented lines: many
    assert out.endswith(MORE)
    shell.feed(b"q")
    out = shell.feed(b"display current-configuration | count\r").decode()
    assert MORE not in out and "Total lines: " in out


class CountingPattern:
    """A compiled pattern that counts its searches (the work a filter does)."""

    def __init__(self, text: str) -> None:
        self.pattern = re.compile(text)
        self.calls = 0

    def search(self, line: str) -> re.Match[str] | None:
        self.calls += 1
        return self.pattern.search(line)


def test_100000_rows_filter_in_one_pass() -> None:
    """The work over 100,000 SA rows: one search per line (``begin``: up to its first match), the
    pattern compiled once. The time is measured by ``bench/cli_scale.py`` (under 1 s with rendering)."""
    rows = [f" {n:<11}{f'10.{n >> 16}.{(n >> 8) & 255}.{n & 255}:500':<46}{'':<17}{'RD|A':<22}v2:1"
            for n in range(100_000)]
    for kind, expect_calls, expect_rows in [("include", 100_000, 1), ("exclude", 100_000, 99_999),
                                            ("begin", 70_001, 30_000)]:
        pattern = CountingPattern(r"10\.1\.17\.112:")  # row 70,000
        out = filters.OutputFilter(kind, pattern).apply(rows)  # type: ignore[arg-type]
        assert (pattern.calls, len(out)) == (expect_calls, expect_rows), kind
    assert filters.OutputFilter("count").apply(iter(rows)) == ["Total lines: 100000"]

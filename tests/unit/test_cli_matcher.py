"""The matcher through the shell: abbreviation, exact-wins, the five errors and their carets, `?`,
Tab, and levels."""

from __future__ import annotations

import pytest

from ikegate.cli import matcher
from ikegate.cli.commands import default_tree
from ikegate.cli.params import Integer, Ipv4, Ipv6
from ikegate.cli.shell import Shell
from ikegate.cli.tree import MANAGE, MONITOR, Command
from ikegate.cli.views import ViewKind
from ikegate.policy.model import Config

TREE = default_tree()


def shell_at(*lines: str, level: int = MANAGE) -> Shell:
    shell = Shell(Config(), tree=TREE, level=level)
    for line in lines:
        assert shell.execute(line).ok, line
    return shell


def caret_column(text: str) -> int:
    caret = text.splitlines()[0]
    assert caret.strip() == "^", text
    return caret.index("^")


# --- abbreviation ----------------------------------------------------------------------------------
def test_sy_enters_system_view() -> None:
    shell = shell_at()
    out = shell.execute("sy")
    assert out.ok
    assert out.text == "Enter system view, return user view with Ctrl+Z."
    assert shell.prompt == "[USG6000]"


def test_dis_cu_is_display_current_configuration() -> None:
    out = shell_at("sy", "sysn FW1").execute("dis cu")
    assert out.ok
    assert " sysname FW1" in out.lines
    assert out.lines[-1] == "return"


def test_q_leaves_one_view_then_closes_in_user_view() -> None:
    shell = shell_at("sy", "ike pe A")
    assert shell.prompt == "[USG6000-ike-peer-A]"
    shell.execute("q")
    assert shell.prompt == "[USG6000]"
    shell.execute("q")
    assert shell.prompt == "<USG6000>"
    assert not shell.closed
    shell.execute("q")
    assert shell.closed


def test_keywords_are_case_insensitive() -> None:
    shell = shell_at("SYSTEM-VIEW")
    assert shell.execute("IKE PROPOSAL 5").ok
    assert 5 in shell.config.ike_proposals


def test_exact_keyword_wins_over_longer_ones() -> None:
    # ``ip`` is a whole keyword in the interface view and a prefix of ``ipsec`` and ``ipv6``.
    shell = shell_at("sy", "interface GigabitEthernet0/0/1")
    assert shell.execute("ip address 10.0.0.1 24").ok
    assert str(shell.config.interfaces["GigabitEthernet0/0/1"].ipv4[0]) == "10.0.0.1/24"
    # ``policy`` is whole, and a prefix of ``policy-template``.
    assert shell_at("sy").execute("ipsec policy P 10 isakmp").ok


def test_prefix_of_two_keywords_is_ambiguous() -> None:
    out = shell_at("sy").execute("ipsec pol P 10")
    assert out.error == "Error: Ambiguous command found at '^' position."
    assert caret_column(out.text) == len("[USG6000]ipsec ")


# --- the five errors and their carets ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("setup", "line", "message", "offset"),
    [
        ((), "displya this", "Unrecognized command", 0),
        ((), "display foo", "Unrecognized command", len("display ")),
        (("sy",), "ike proposal", "Incomplete command", len("ike proposal")),
        (("sy",), "ike", "Incomplete command", len("ike")),
        (("sy",), "ike proposal 100", "Wrong parameter", len("ike proposal ")),
        (("sy",), "ike proposal ten", "Wrong parameter", len("ike proposal ")),
        (("sy",), "ipsec p x 1", "Ambiguous command", len("ipsec ")),
        (("sy",), "sysname A B", "Too many parameters", len("sysname A ")),
        (("sy", "ike peer P"), "remote-address 1.2.3", "Wrong parameter", len("remote-address ")),
        (("sy", "ike peer P"), "dpd idle-time 5", "Wrong parameter", len("dpd idle-time ")),
        (
            ("sy", "acl 3000"),
            "rule permit ip source 10.0.0.0 0.255.0.255",
            "Wrong parameter",
            len("rule permit ip source 10.0.0.0 "),
        ),
        # ports exist only after tcp/udp; after ``ip`` the rule may end, so the word is one too many
        (("sy", "acl 3000"), "rule permit ip source-port eq 80", "Too many parameters", len("rule permit ip ")),
        (
            ("sy", "acl 3000"),
            "rule permit tcp destination-port eq 80 source any",
            "Too many parameters",
            len("rule permit tcp destination-port eq 80 "),
        ),
        (
            ("sy", "acl 3000"),
            "rule permit tcp source-port range 90 80",
            "Wrong parameter",
            len("rule permit tcp source-port range 90 "),
        ),
        (("sy", "ike proposal 1"), "sa duration", "Incomplete command", len("sa duration")),
    ],
)
def test_error_and_caret(setup: tuple[str, ...], line: str, message: str, offset: int) -> None:
    shell = shell_at(*setup)
    prompt = shell.prompt
    out = shell.execute(line)
    assert out.error == f"Error: {message} found at '^' position."
    assert out.lines[-1] == out.error
    assert caret_column(out.text) == len(prompt) + offset


def test_caret_counts_the_prompt_of_each_view() -> None:
    for setup, prompt in [
        ((), "<USG6000>"),
        (("sy",), "[USG6000]"),
        (("sy", "ike proposal 10"), "[USG6000-ike-proposal-10]"),
    ]:
        shell = shell_at(*setup)
        assert shell.prompt == prompt
        assert caret_column(shell.execute("bogus").text) == len(prompt)


def test_caret_follows_extra_spaces_as_typed() -> None:
    out = shell_at("sy").execute("ike   proposal   100")
    assert caret_column(out.text) == len("[USG6000]ike   proposal   ")


def test_sub_view_falls_back_to_system_view_commands() -> None:
    shell = shell_at("sy", "ike peer A")
    assert shell.execute("ike peer B").ok
    assert shell.prompt == "[USG6000-ike-peer-B]"
    out = shell.execute("ike peer")  # the system view's failure got further than the peer view's
    assert out.error is not None and "Incomplete" in out.error


# --- `?` help and Tab -------------------------------------------------------------------------------
def help_text(shell: Shell, typed: str) -> str:
    """The bytes `?` produced, without the echo of ``typed``."""
    raw = shell.feed(typed.encode() + b"?").decode()
    assert raw.startswith(typed)
    return raw[len(typed) :]


def test_help_after_space_lists_next_words_with_help_and_cr() -> None:
    shell = shell_at("sy", "ike proposal 10")
    shell.start()
    text = help_text(shell, "sa ")
    assert text.startswith("?\r\n")
    lines = text.split("\r\n")
    assert lines[1] == "  duration                 Specify the SA lifetime"
    text = help_text(shell, "duration ")
    lines = text.split("\r\n")
    assert lines[1] == "  INTEGER<60-604800>       IKE SA lifetime in seconds"
    # the prompt and the line typed so far come back
    assert lines[-1] == "[USG6000-ike-proposal-10]sa duration "


def test_help_shows_cr_where_the_command_may_end() -> None:
    shell = shell_at("sy", "interface GigabitEthernet0/0/1")
    lines = help_text(shell, "undo ipv6 address ").split("\r\n")
    assert "  X:X::X:X/M               IPv6 address with prefix length" in lines
    assert "  <cr>" in lines
    lines = help_text(shell_at("sy"), "sysname ").split("\r\n")
    assert "  <cr>" not in lines


def test_help_lists_groups_in_natural_order() -> None:
    lines = help_text(shell_at("sy", "ike proposal 1"), "dh ").split("\r\n")
    names = [line.split()[0] for line in lines[1:-1]]
    assert names[:3] == ["group2", "group5", "group14"]


def test_glued_help_lists_words_with_that_prefix() -> None:
    lines = help_text(shell_at("sy"), "ipsec p").split("\r\n")
    assert lines[1].split() == ["policy", "policy-template", "proposal"]
    assert lines[-1] == "[USG6000]ipsec p"


def test_help_on_an_error_shows_the_caret() -> None:
    lines = help_text(shell_at("sy"), "ike bogus ").split("\r\n")
    assert lines[1] == " " * len("[USG6000]ike ") + "^"
    assert lines[2] == "Error: Unrecognized command found at '^' position."


def test_help_text_is_the_same_for_every_command_using_a_keyword() -> None:
    shell = shell_at()
    first = help_text(shell, "dis").split("\r\n")[1]
    assert first.split() == ["display"]


def test_tab_completes_a_unique_prefix_with_a_space() -> None:
    shell = shell_at("sy")
    echo = shell.feed(b"ike pro\t")
    assert shell.editor.buffer == "ike proposal "
    assert echo.endswith(b"ike proposal ")


def test_tab_on_no_candidate_does_nothing() -> None:
    shell = shell_at("sy")
    shell.feed(b"ike x\t")
    assert shell.editor.buffer == "ike x"


# --- levels -------------------------------------------------------------------------------------
def test_level_1_user_cannot_enter_system_view() -> None:
    shell = Shell(Config(), tree=TREE, level=MONITOR)
    out = shell.execute("system-view")
    assert out.error == "Error: Unrecognized command found at '^' position."
    assert caret_column(out.text) == len("<USG6000>")
    assert shell.prompt == "<USG6000>"
    assert shell.config == Config()


def test_commands_above_level_are_hidden_from_help_and_tab() -> None:
    shell = Shell(Config(), tree=TREE, level=MONITOR)
    lines = shell.feed(b"?").decode().split("\r\n")
    names = [line.split()[0] for line in lines[1:-1]]
    assert "display" in names and "quit" in names
    assert "system-view" not in names and "save" not in names
    shell.feed(b"\x15sys\t")
    assert shell.editor.buffer == "sys"


def test_level_1_user_may_display_but_not_current_configuration() -> None:
    shell = Shell(Config(), tree=TREE, level=MONITOR)
    assert shell.execute("display this").ok
    assert shell.execute("display current-configuration").error is not None


# --- declaring commands ---------------------------------------------------------------------------
def test_runtime_commands_join_through_the_declaration_api() -> None:
    seen: list[tuple[str, object, object]] = []

    def reset(ctx: object) -> None:
        from ikegate.cli.context import CommandContext

        assert isinstance(ctx, CommandContext)
        seen.append(((ctx.keyword("conn-id") and "conn") or "all", ctx.opt_number("conn-id"), ctx.device))

    command = Command(
        "reset ike sa [ conn-id <conn-id> | remote <remote> ] [ slot <slot> cpu <cpu> ]",
        reset,
        frozenset({ViewKind.USER}),
        level=MANAGE,
        params={
            "conn-id": Integer("Connection ID", 1, 4294967295),
            "remote": (Ipv4("Remote IPv4 address"), Ipv6("Remote IPv6 address")),
            "slot": Integer("Slot ID", 0, 15),
            "cpu": Integer("CPU ID", 0, 15),
        },
    )
    device = object()
    shell = Shell(Config(), tree=TREE.extended([command]), device=device)
    assert shell.execute("reset ike sa conn-id 7").ok
    assert seen == [("conn", 7, device)]
    assert shell.execute("res ike sa remote 2001:db8::1 slot 1 cpu 0").ok
    out = shell.execute("reset ike sa conn-id 5 remote 1.1.1.1")
    assert out.error == "Error: Too many parameters found at '^' position."
    out = shell.execute("reset ike sa slot 1")
    assert out.error == "Error: Incomplete command found at '^' position."
    lines = help_text(shell, "reset ike sa ").split("\r\n")
    assert [line.split()[0] for line in lines[1:-1]] == ["conn-id", "remote", "slot", "<cr>"]


def test_matcher_reports_the_token_index() -> None:
    result = matcher.match(TREE, ViewKind.SYSTEM, MANAGE, "ike proposal 0")
    assert isinstance(result, matcher.Failure)
    assert result.index == 2


# --- Tab cycling (VRP: Tab again shows the next candidate) ---------------------------------------
def test_tab_cycles_through_ambiguous_candidates() -> None:
    shell = shell_at("sy")
    shell.feed(b"ipsec poli\t")
    assert shell.editor.buffer == "ipsec policy"
    shell.feed(b"\t")
    assert shell.editor.buffer == "ipsec policy-template"
    echo = shell.feed(b"\t")  # round again
    assert shell.editor.buffer == "ipsec policy"
    assert echo.endswith(b"ipsec policy" + b" " * len("-template") + b"\b" * len("-template"))


def test_tab_cycle_in_help_order_and_stops_at_another_key() -> None:
    shell = shell_at("sy")
    words = " ".join(help_text(shell, "i").split("\r\n")[1:-1]).split()  # glued `i?`: the names
    assert len(words) > 2 and "ike" in words and "ipsec" in words
    shell.feed(b"\x15i")
    seen = []
    for _ in range(len(words) + 1):
        shell.feed(b"\t")
        seen.append(shell.editor.buffer)
    assert seen == [*words, words[0]]
    shell.feed(b"\x15dis\t")  # unique: completed with a space, no cycle
    assert shell.editor.buffer == "display "
    shell.feed(b"\t")  # after a space: nothing to complete
    assert shell.editor.buffer == "display "
    shell.feed(b"\x15ipsec poli\t")
    shell.feed(b" \t")  # a key other than Tab ends the cycle; Tab after a space does nothing
    assert shell.editor.buffer == "ipsec policy "


def test_tab_cycle_keeps_text_after_the_cursor() -> None:
    shell = shell_at("sy")
    shell.feed(b"ipsec poli 5")
    shell.feed(b"\x1b[D\x1b[D")  # cursor back before " 5"
    shell.feed(b"\t\t")
    assert shell.editor.buffer == "ipsec policy-template 5"
    assert shell.editor.cursor == len("ipsec policy-template")

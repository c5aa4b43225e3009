"""The sans-I/O line editor: echo, Enter forms, editing keys, history."""

from __future__ import annotations

from ikegate.cli.editor import (
    CtrlC,
    CtrlZ,
    Echo,
    EditorEvent,
    HelpRequested,
    LineEditor,
    LineEntered,
    TabPressed,
)


def lines(events: list[EditorEvent]) -> list[str]:
    return [e.text for e in events if isinstance(e, LineEntered)]


def echo(events: list[EditorEvent]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Echo))


def test_printable_input_is_echoed() -> None:
    editor = LineEditor()
    assert echo(editor.feed(b"display")) == b"display"
    assert editor.buffer == "display"


def test_each_enter_form_gives_exactly_one_line() -> None:
    for enter in (b"\r", b"\n", b"\r\n"):
        editor = LineEditor()
        events = editor.feed(b"sy" + enter + b"q" + enter)
        assert lines(events) == ["sy", "q"], enter
        assert echo(events).count(b"\r\n") == 2


def test_crlf_split_across_feeds_is_one_enter() -> None:
    editor = LineEditor()
    assert lines(editor.feed(b"sy\r")) == ["sy"]
    assert lines(editor.feed(b"\n")) == []
    assert lines(editor.feed(b"\n")) == [""]  # a second, real Enter


def test_bare_enter_gives_an_empty_line() -> None:
    assert lines(LineEditor().feed(b"\r")) == [""]


def test_backspace_erases_with_bs_space_bs() -> None:
    for key in (b"\x7f", b"\b"):
        editor = LineEditor()
        editor.feed(b"dis")
        events = editor.feed(key)
        assert echo(events) == b"\b \b"
        assert editor.buffer == "di"
    editor = LineEditor()
    assert echo(editor.feed(b"\x7f")) == b""  # nothing to erase


def test_ctrl_a_and_ctrl_e_move_and_insert_in_the_middle() -> None:
    editor = LineEditor()
    editor.feed(b"play")
    assert echo(editor.feed(b"\x01")) == b"\b\b\b\b"
    assert editor.cursor == 0
    out = echo(editor.feed(b"dis"))
    assert out == b"d" + b"play" + b"\b" * 4 + b"i" + b"play" + b"\b" * 4 + b"s" + b"play" + b"\b" * 4
    assert editor.buffer == "display"
    assert echo(editor.feed(b"\x05")) == b"play"
    assert editor.cursor == len("display")


def test_ctrl_u_erases_to_the_start() -> None:
    editor = LineEditor()
    editor.feed(b"ike proposal")
    assert echo(editor.feed(b"\x15")) == b"\b \b" * len("ike proposal")
    assert editor.buffer == ""


def test_ctrl_w_erases_the_word_before_the_cursor() -> None:
    editor = LineEditor()
    editor.feed(b"ike proposal  ")
    editor.feed(b"\x17")
    assert editor.buffer == "ike "
    editor.feed(b"\x17")
    assert editor.buffer == ""


def test_arrows_move_and_delete_in_the_middle_redraws_the_tail() -> None:
    editor = LineEditor()
    editor.feed(b"abcd")
    editor.feed(b"\x1b[D\x1b[D")
    assert editor.cursor == 2
    events = editor.feed(b"\x7f")
    assert editor.buffer == "acd"
    assert echo(events) == b"\b" + b"cd" + b" " + b"\b" * 3
    editor.feed(b"\x1b[C")
    assert editor.cursor == 2


def test_history_up_and_down() -> None:
    editor = LineEditor()
    editor.feed(b"display this\r")
    editor.feed(b"system-view\r")
    editor.feed(b"draft")
    editor.feed(b"\x1b[A")
    assert editor.buffer == "system-view"
    editor.feed(b"\x1b[A")
    assert editor.buffer == "display this"
    editor.feed(b"\x1b[A")  # at the oldest: stays
    assert editor.buffer == "display this"
    editor.feed(b"\x1b[B")
    assert editor.buffer == "system-view"
    editor.feed(b"\x1b[B")
    assert editor.buffer == "draft"
    assert lines(editor.feed(b"\r")) == ["draft"]


def test_history_echo_rewrites_the_line() -> None:
    editor = LineEditor()
    editor.feed(b"sy\r")
    editor.feed(b"display")
    out = echo(editor.feed(b"\x1b[A"))
    assert out == b"\b" * 7 + b"sy" + b" " * 5 + b"\b" * 5


def test_escape_sequence_split_across_feeds() -> None:
    editor = LineEditor()
    editor.feed(b"sy\r")
    editor.feed(b"\x1b")
    editor.feed(b"[")
    editor.feed(b"A")
    assert editor.buffer == "sy"


def test_help_tab_and_control_events() -> None:
    editor = LineEditor()
    events = editor.feed(b"dis?")
    assert HelpRequested("dis") in events
    assert editor.buffer == "dis"  # the ? is not part of the line
    assert TabPressed("dis") in editor.feed(b"\t")
    assert CtrlZ() in editor.feed(b"\x1a")
    assert editor.buffer == ""
    editor.feed(b"abc")
    assert CtrlC() in editor.feed(b"\x03")
    assert editor.buffer == ""


def test_replace_and_redraw() -> None:
    editor = LineEditor()
    editor.feed(b"ike pro")
    assert editor.replace("ike proposal ") == b"\b" * 7 + b"ike proposal "
    assert editor.redraw() == b"ike proposal "

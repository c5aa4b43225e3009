"""A sans-I/O line editor: keystrokes in, echo bytes and line events out.

The shell feeds it the raw bytes of an SSH channel (asyncssh with ``line_editor=False``), a console in
raw mode or a test, and acts on the events. The editor does its own echo because VRP does and because
netmiko waits for the echoed command before reading the output; it never writes anything else.

Keys: printable text is inserted at the cursor; Enter is ``\\r``, ``\\n`` or ``\\r\\n`` (one Enter);
Backspace is ``\\x7f`` or ``\\b`` (echo ``\\b \\b``); Ctrl+A/E start/end, Ctrl+B/F and Left/Right move,
Ctrl+U erases to the start, Ctrl+W the word before the cursor, Delete the character under it;
Up/Down and Ctrl+P/N walk the history; ``?`` asks for help, Tab for completion, Ctrl+Z and Ctrl+C are
reported as events.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

BACKSPACE_ECHO = b"\b \b"


@dataclass(frozen=True)
class Echo:
    data: bytes


@dataclass(frozen=True)
class LineEntered:
    text: str


@dataclass(frozen=True)
class HelpRequested:
    text: str  # the line up to the cursor, without the ``?``


@dataclass(frozen=True)
class TabPressed:
    text: str  # the line up to the cursor


@dataclass(frozen=True)
class CtrlZ:
    pass


@dataclass(frozen=True)
class CtrlC:
    pass


EditorEvent = Echo | LineEntered | HelpRequested | TabPressed | CtrlZ | CtrlC

_ESCAPES = {
    "[A": "up",
    "[B": "down",
    "[C": "right",
    "[D": "left",
    "[H": "home",
    "[F": "end",
    "[3~": "delete",
    "OA": "up",
    "OB": "down",
    "OC": "right",
    "OD": "left",
    "OH": "home",
    "OF": "end",
}
_CONTROL = {
    "\x01": "home",
    "\x05": "end",
    "\x02": "left",
    "\x06": "right",
    "\x10": "up",
    "\x0e": "down",
    "\x15": "kill-start",
    "\x17": "kill-word",
    "\x7f": "backspace",
    "\b": "backspace",
    "\x04": "delete",
}


def _b(text: str) -> bytes:
    return text.encode("utf-8", "replace")


class LineEditor:
    def __init__(self, history_size: int = 10) -> None:
        self.buffer = ""
        self.cursor = 0
        self.history: list[str] = []
        self._history_size = history_size
        self._history_pos: int | None = None
        self._draft = ""
        self._escape: str | None = None
        self._after_cr = False
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    # -- public -----------------------------------------------------------------------------------
    def feed(self, data: bytes) -> list[EditorEvent]:
        events: list[EditorEvent] = []
        for char in self._decoder.decode(data):
            self._key(char, events)
        return _merged(events)

    def redraw(self) -> bytes:
        """The bytes that show the current line after a fresh prompt (cursor where it was)."""
        return _b(self.buffer) + b"\b" * (len(self.buffer) - self.cursor)

    def replace(self, text: str) -> bytes:
        """Replace the whole line (Tab completion, history); returns the echo, cursor at the end."""
        old, old_cursor = self.buffer, self.cursor
        self.buffer, self.cursor = text, len(text)
        extra = max(0, len(old) - len(text))
        return b"\b" * old_cursor + _b(text) + b" " * extra + b"\b" * extra

    def reset(self) -> None:
        """Forget the current line (after Enter, Ctrl+C, or a pager/confirmation answer)."""
        self.buffer, self.cursor, self._history_pos = "", 0, None

    # -- keys -------------------------------------------------------------------------------------
    def _key(self, char: str, events: list[EditorEvent]) -> None:
        if self._escape is not None:
            self._escape += char
            action = _ESCAPES.get(self._escape)
            if action is not None:
                self._escape = None
                self._act(action, events)
            elif len(self._escape) >= 3 or (len(self._escape) == 1 and char not in "[O"):
                self._escape = None
            return
        after_cr, self._after_cr = self._after_cr, char == "\r"
        if char == "\n" and after_cr:
            return
        if char in "\r\n":
            line = self.buffer
            events.append(Echo(b"\r\n"))
            if line.strip() and (not self.history or self.history[-1] != line):
                self.history = [*self.history, line][-self._history_size :]
            self.reset()
            events.append(LineEntered(line))
        elif char == "\x1b":
            self._escape = ""
        elif char == "?":
            events.append(HelpRequested(self.buffer[: self.cursor]))
        elif char == "\t":
            events.append(TabPressed(self.buffer[: self.cursor]))
        elif char == "\x1a":
            self.reset()
            events.append(CtrlZ())
        elif char == "\x03":
            self.reset()
            events.append(CtrlC())
        elif char in _CONTROL:
            self._act(_CONTROL[char], events)
        elif char >= " ":
            self._insert(char, events)

    def _insert(self, char: str, events: list[EditorEvent]) -> None:
        tail = self.buffer[self.cursor :]
        self.buffer = self.buffer[: self.cursor] + char + tail
        self.cursor += 1
        events.append(Echo(_b(char + tail) + b"\b" * len(tail)))

    def _erase(self, start: int, events: list[EditorEvent]) -> None:
        """Erase ``buffer[start:cursor]`` and redraw the tail."""
        start = max(0, start)
        count = self.cursor - start
        if count <= 0:
            return
        tail = self.buffer[self.cursor :]
        self.buffer = self.buffer[:start] + tail
        self.cursor = start
        if not tail:
            events.append(Echo(BACKSPACE_ECHO * count))
        else:
            events.append(Echo(b"\b" * count + _b(tail) + b" " * count + b"\b" * (len(tail) + count)))

    def _act(self, action: str, events: list[EditorEvent]) -> None:
        if action == "backspace":
            self._erase(self.cursor - 1, events)
        elif action == "delete":
            if self.cursor < len(self.buffer):
                self.cursor += 1
                events.append(Echo(_b(self.buffer[self.cursor - 1])))
                self._erase(self.cursor - 1, events)
        elif action == "kill-start":
            self._erase(0, events)
        elif action == "kill-word":
            start = self.cursor
            while start > 0 and self.buffer[start - 1] == " ":
                start -= 1
            while start > 0 and self.buffer[start - 1] != " ":
                start -= 1
            self._erase(start, events)
        elif action == "home":
            events.append(Echo(b"\b" * self.cursor))
            self.cursor = 0
        elif action == "end":
            events.append(Echo(_b(self.buffer[self.cursor :])))
            self.cursor = len(self.buffer)
        elif action == "left":
            if self.cursor > 0:
                self.cursor -= 1
                events.append(Echo(b"\b"))
        elif action == "right":
            if self.cursor < len(self.buffer):
                events.append(Echo(_b(self.buffer[self.cursor])))
                self.cursor += 1
        elif action in ("up", "down"):
            self._walk_history(-1 if action == "up" else 1, events)

    def _walk_history(self, step: int, events: list[EditorEvent]) -> None:
        if not self.history:
            return
        if self._history_pos is None:
            if step > 0:
                return
            self._draft = self.buffer
            position = len(self.history) - 1
        else:
            position = self._history_pos + step
        if position < 0:
            return
        if position >= len(self.history):
            self._history_pos, text = None, self._draft
        else:
            self._history_pos, text = position, self.history[position]
        events.append(Echo(self.replace(text)))


def _merged(events: list[EditorEvent]) -> list[EditorEvent]:
    """Adjacent echoes joined, so a burst of typing gives one write."""
    out: list[EditorEvent] = []
    for event in events:
        if isinstance(event, Echo) and out and isinstance(out[-1], Echo):
            out[-1] = Echo(out[-1].data + event.data)
        else:
            out.append(event)
    return out

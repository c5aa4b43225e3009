"""One VRP shell session: bytes in, bytes out (console, SSH, control socket), or one line at a time.

The shell owns the session state — the view stack, the user and level, screen-length, a pending
``[Y/N]`` question, the pager — and nothing else: the configuration it edits, the command tree, the
log buffer and the runtime ``device`` API are given to it, so many sessions share them.

Two entries, one engine (:meth:`Shell.run`):

* :meth:`Shell.feed` for interactive bytes: the line editor echoes, ``?``/Tab answer in place, output
  lines end with ``\\r\\n`` and are paged, and every answer ends with the next prompt;
* :meth:`Shell.execute` for a line given whole (``ikegate cli -c``, scripts): ``\\n``-separated text,
  no paging, no prompt, and the ``Error:`` line (if any) reported separately.

Large displays are rendered a chunk at a time (:mod:`ikegate.cli.render.chunks`) so that drivers in an
event loop can let negotiation run between chunks: :meth:`Shell.receive` takes keystrokes and returns
what is ready, and while :attr:`Shell.streaming` the driver calls :meth:`Shell.resume` for one chunk
more (keys typed meanwhile wait their turn, except Ctrl+C, which stops the display);
``run(line, lazy=True)`` hands the chunks of a whole line to a non-interactive driver. :meth:`feed` and
:meth:`execute` do all of it at once, for callers without a loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass

from ikegate.cli import filters, matcher
from ikegate.cli.commands import default_tree
from ikegate.cli.commands.session import DEFAULT_SCREEN_LENGTH
from ikegate.cli.context import CommandContext
from ikegate.cli.editor import CtrlC, CtrlZ, Echo, HelpRequested, LineEditor, LineEntered, TabPressed
from ikegate.cli.errors import CommandError, ErrorKind, ParamError, caret_line
from ikegate.cli.logbuffer import LogBuffer
from ikegate.cli.pager import Output, crlf
from ikegate.cli.render.chunks import flatten, json_chunks
from ikegate.cli.tree import MANAGE, Command, CommandTree
from ikegate.cli.views import USER_FRAME, ViewFrame, ViewKind
from ikegate.policy.model import Config

HELP_NAME_WIDTH = 24
#: Commands of the configuration views that only move between views: they leave the configuration as it is.
_NAVIGATION = frozenset({"quit", "return"})
HELP_LINE_WIDTH = 79


@dataclass(frozen=True)
class Outcome:
    """What one line did: the lines printed, and the ``Error:`` line if it failed."""

    lines: list[str]
    error: str | None = None
    #: A command that finishes later (``ping``): its remaining lines, for the driver to await.
    pending: Awaitable[list[str]] | None = None
    #: ``| no-more``: print at once, whatever the screen length.
    no_more: bool = False
    #: ``run(line, lazy=True)``: the output lines after :attr:`lines`, rendered a chunk at a time as the
    #: caller takes them (None: everything is in :attr:`lines`).
    more: Iterator[list[str]] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def format_help(items: list[matcher.HelpItem], glued: bool) -> list[str]:
    """`?` output: two columns (name padded, help text), or for a glued ``dis?`` the bare names."""
    if not glued:
        return [f"  {i.name:<{HELP_NAME_WIDTH}} {i.help}".rstrip() for i in items]
    lines: list[str] = []
    current = " "
    for item in items:
        if len(current) + 2 + len(item.name) > HELP_LINE_WIDTH and current.strip():
            lines.append(current)
            current = " "
        current += " " + item.name
    if current.strip():
        lines.append(current)
    return lines


class Shell:
    def __init__(
        self,
        config: Config,
        *,
        tree: CommandTree | None = None,
        device: object | None = None,
        logbuffer: LogBuffer | None = None,
        user: str = "admin",
        level: int = MANAGE,
        task: str = "vty0",
        ip: str = "127.0.0.1",
        save_callback: Callable[[str], None] | None = None,
        loading: bool = False,
    ) -> None:
        self.config = config
        self.tree = tree if tree is not None else default_tree()
        self.device = device
        self.logbuffer = logbuffer if logbuffer is not None else LogBuffer()
        self.user = user
        self.level = level
        self.task = task
        self.ip = ip
        self.save_callback = save_callback
        self.loading = loading
        #: Asked before each command runs: an error line refuses it (the standby of a hot-standby pair
        #: refuses backed-up configuration, see ``ikegate.cli.commands.hrp.backed_up``).
        self.guard: Callable[[Command], str | None] | None = None
        self.screen_length = DEFAULT_SCREEN_LENGTH
        self.closed = False
        self.editor = LineEditor()
        self._stack: list[ViewFrame] = [USER_FRAME]
        self._question: tuple[str, Callable[[str], list[str]]] | None = None
        self._output: Output | None = None  # a command's output still being shown (rendered, paged)
        self._typeahead = bytearray()  # keys received while an output renders: they wait their turn
        #: Set when a line may have changed the configuration (anything but a display); see take_changes.
        self._changed = False
        self.pending: Awaitable[list[str]] | None = None  # output of a command still running (ping)
        self._after_cr = False
        #: The rest of an escape sequence whose ESC stopped the pager, being dropped: "esc" just after the
        #: ESC, "csi" inside ``ESC [ …`` / ``ESC O …``, None otherwise.
        self._dropping: str | None = None
        #: Tab cycling: (line before the word, the candidates, the one shown), until another key.
        self._tab_cycle: tuple[str, list[str], int] | None = None

    # -- the Session protocol used by handlers ----------------------------------------------------
    @property
    def frame(self) -> ViewFrame:
        return self._stack[-1]

    @property
    def prompt(self) -> str:
        return self.frame.prompt(self.config.sysname)

    def enter_view(self, frame: ViewFrame) -> None:
        """Enter ``frame``: from the system view or one of its sub-views, a sub-view replaces the
        current sub-view (VRP has no nesting below the system view)."""
        if frame.kind is ViewKind.SYSTEM:
            self._stack = [USER_FRAME, frame]
        else:
            self._stack = [*self._stack[:2], frame]

    def leave_view(self) -> None:
        if len(self._stack) == 1:
            self.closed = True
        else:
            self._stack.pop()

    def return_to_user_view(self) -> None:
        self._stack = [USER_FRAME]

    def ask(self, question: str, on_answer: Callable[[str], list[str]]) -> None:
        self._question = (question, on_answer)

    # -- the engine -------------------------------------------------------------------------------
    def _match(self, line: str) -> matcher.Match | matcher.Failure:
        """Match in the current view, then in the enclosing views (a sub-view accepts the system view's
        commands and leaves for it). The failure reported is the one that got furthest."""
        best: matcher.Failure | None = None
        for depth in range(len(self._stack) - 1, -1, -1):
            if depth < len(self._stack) - 1 and self._stack[depth].kind is ViewKind.USER:
                break
            result = matcher.match(self.tree, self._stack[depth].kind, self.level, line)
            if isinstance(result, matcher.Match):
                del self._stack[depth + 1 :]
                return result
            if best is None or result.index > best.index:
                best = result
        assert best is not None
        return best

    def take_changes(self) -> bool:
        """Whether a line run since the last call may have changed the configuration (every line but the
        ``display`` commands, which only read it): the driver then lets the device take the change.
        Skipping it after a display matters: applying a configuration re-attaches every installed SA."""
        changed, self._changed = self._changed, False
        return changed

    def run(self, line: str, *, lazy: bool = False) -> Outcome:
        """Run one line as typed at the current prompt (or as the answer to a pending question). With
        ``lazy``, the output is left in :attr:`Outcome.more`, rendered as the caller takes it."""
        return self._run(line, lazy, ask=True)

    def _run(self, line: str, lazy: bool, ask: bool) -> Outcome:
        """:meth:`run`; ``ask`` False leaves a ``[Y/N]`` question out of the output (the byte path
        prints it as the output's tail)."""
        if self._question is not None:
            _, on_answer = self._question
            self._question = None
            self._changed = True
            self.config.touch()
            lines = on_answer(line)
            return Outcome(lines, next((x for x in lines if x.startswith("Error:")), None))
        if not line.strip():
            return Outcome([])
        prompt_length = len(self.prompt)
        result = self._match(line)
        if isinstance(result, matcher.Match):
            try:
                output_filter = filters.from_match(result, line)
            except filters.BadRegex as exc:
                result = matcher.Failure(ErrorKind.WRONG_PARAMETER, exc.index, result.tokens, result.sensitive)
        if isinstance(result, matcher.Failure):
            message = result.kind.message
            self._record(line, result.sensitive, message)
            return Outcome([caret_line(result.column(prompt_length)), message], message)
        if self.guard is not None and not self.loading and (refusal := self.guard(result.command)) is not None:
            self._record(line, result.sensitive, refusal)
            return Outcome([refusal], refusal)
        as_json = output_filter.json
        if not result.command.syntax.startswith("display "):
            self._changed = True
            if self.frame.kind is not ViewKind.USER and result.command.syntax not in _NAVIGATION:
                self.config.touch()  # a configuration command: the device applies it (Config.generation)
        ctx = CommandContext(self.config, self, result, device=self.device, loading=self.loading, json=as_json)
        try:
            result.command.handler(ctx)
        except CommandError as exc:
            ctx.lines.append(str(exc))
            self._record(line, result.sensitive, str(exc))
            return Outcome(ctx.lines, str(exc))
        except ParamError as exc:
            failure = matcher.Failure(exc.kind, result.index_of(exc.name, exc.index), result.tokens, result.sensitive)
            message = exc.kind.message
            self._record(line, result.sensitive, message)
            return Outcome([caret_line(failure.column(prompt_length)), message], message)
        if result.command.record:
            self._record(line, result.sensitive, None)
        stream = ctx.stream if ctx.stream is not None else iter(())
        if as_json:
            data = ctx.data if ctx.data is not None else {"lines": ctx.lines + flatten(stream)}
            chunks = json_chunks(data)
        else:
            chunks = output_filter.chunks(_then([ctx.lines], stream))
        if ask and self._question is not None:
            chunks = _then([], chunks, [[self._question[0]]])
        if lazy and ctx.pending is None:
            return Outcome([], no_more=output_filter.no_more, more=chunks)
        lines = flatten(chunks)
        if ctx.pending is not None:
            return Outcome(lines, pending=ctx.pending)
        return Outcome(lines, no_more=output_filter.no_more)

    def mask(self, line: str) -> str:
        """``line`` as it may be echoed anywhere (logs, error reports, transcripts): its secrets masked,
        judged by the command tree whatever the view (:func:`matcher.mask_secrets`)."""
        return matcher.mask_secrets(self.tree, line)

    def _record(self, line: str, sensitive: frozenset[int], error: str | None) -> None:
        if self.loading:
            return
        hidden = sensitive | matcher.secret_tokens(self.tree, line)
        command = matcher.masked(matcher.tokenize(line.replace("\t", " ")), hidden)
        result = None if error is None else error.removeprefix("Error: ")
        self.logbuffer.record_command(task=self.task, ip=self.ip, user=self.user, command=command, result=result)

    def execute(self, line: str) -> Outcome:
        """Run one line non-interactively: ``outcome.text`` is the output (``\\n``-separated, no prompt,
        no paging), ``outcome.error`` the ``Error:`` line if the line failed. A ``[Y/N]`` question ends
        the text; the next :meth:`execute` call is its answer."""
        return self.run(line)

    # -- the byte path ----------------------------------------------------------------------------
    def start(self) -> bytes:
        """The first prompt of an interactive session."""
        return self.prompt.encode()

    def _prompt_bytes(self) -> bytes:
        if self.closed:
            return b""
        if self._question is not None:
            return b""  # the question itself was the last output line, printed without CRLF
        return self.prompt.encode()

    def _show(self, chunks: Iterable[list[str]], paged: bool = True) -> bytes:
        """Start printing output lines, paging when they do not fit the screen (unless ``| no-more``); a
        pending ``[Y/N]`` question, or else the prompt, follows them. Returns nothing: the lines come
        from :meth:`resume`."""
        tail = self._question[0].encode() if self._question is not None else self._prompt_bytes()
        self._output = Output(chunks, self.screen_length if paged else 0, tail)
        return b""

    def finish(self, lines: list[str]) -> bytes:
        """The rest of a command that finished later (see :attr:`Outcome.pending`), then the prompt."""
        self.pending = None
        return self._show([lines]) + self.resume()

    @property
    def streaming(self) -> bool:
        """An output is being rendered: the driver calls :meth:`resume` (letting its loop run in between)."""
        return self._output is not None and self._output.rendering

    def resume(self) -> bytes:
        """One chunk more of the output being shown; when it ends, its tail (prompt or question) and what
        the keys typed meanwhile do."""
        output = self._output
        if output is None:
            return b""
        out = output.step()
        if output.done:
            self._output = None
            out += self._consume()
        return out

    def receive(self, data: bytes) -> bytes:
        """Process keystrokes as far as they can be now; return what the terminal must show (echo,
        output, prompts). While :attr:`streaming` afterwards, the rest waits for :meth:`resume`."""
        self._typeahead += data
        return self._consume()

    def feed(self, data: bytes) -> bytes:
        """:meth:`receive` and every :meth:`resume` it calls for, at once (no event loop to yield to)."""
        out = self.receive(data)
        while self.streaming:
            out += self.resume()
        return out

    def _consume(self) -> bytes:
        out = bytearray()
        pending = self._typeahead
        while pending and not self.closed:
            output = self._output
            if output is not None and output.rendering:
                if 0x03 in pending:  # Ctrl+C stops the display; what was typed before it is dropped
                    del pending[: pending.index(0x03) + 1]
                    output.stop()
                    self._output = None
                    out += self._prompt_bytes()  # every line shown ended with CR LF: a fresh line
                    continue
                break
            byte = pending[0]
            del pending[0]
            out += self._key(byte)
        if self.closed:
            pending.clear()
        return bytes(out)

    def _key(self, code: int) -> bytes:
        # CR LF is one Enter whoever takes the CR (the editor, or the pager it starts), so the pair
        # is folded here and the editor and pager only ever see LF.
        after_cr, self._after_cr = self._after_cr, code == 0x0D
        if after_cr and code == 0x0A:
            return b""
        byte = b"\n" if code == 0x0D else bytes((code,))
        output = self._output
        if output is not None and output.waiting:
            shown = output.key(byte.decode("latin-1"))
            if output.done:
                self._output = None
                if byte == b"\x1b":
                    self._dropping = "esc"
            return shown
        if self._dropping is not None and self._drop_escape(code):
            return b""
        return b"".join(self._event(event) for event in self.editor.feed(byte))

    def _drop_escape(self, byte: int) -> bool:
        """True when ``byte`` belongs to the escape sequence that stopped the pager (an arrow key's
        ``ESC [ A``), so it does not reach the editor as text."""
        if self._dropping == "esc":
            self._dropping = "csi" if byte in (0x5B, 0x4F) else None  # "[" or "O"
            return self._dropping is not None
        if 0x30 <= byte <= 0x3F:  # parameter bytes
            return True
        self._dropping = None
        return 0x40 <= byte <= 0x7E  # the final byte ends the sequence

    def _tab(self, text: str) -> str | None:
        """Tab, as on VRP: a unique keyword is completed (with a space); on an ambiguous prefix the first
        candidate is shown, and each further Tab shows the next one, round and round, until another key."""
        cycle = self._tab_cycle
        if cycle is not None and text == cycle[0] + cycle[1][cycle[2]]:
            stem, words, index = cycle[0], cycle[1], (cycle[2] + 1) % len(cycle[1])
        else:
            stem, words = matcher.tab_candidates(self.tree, self.frame.kind, self.level, text)
            index = 0
            if not words:
                return None
        if len(words) == 1:
            self._tab_cycle = None
            return stem + words[0] + " "
        self._tab_cycle = (stem, words, index)
        return stem + words[index]

    def _event(self, event: object) -> bytes:
        if not isinstance(event, TabPressed):
            self._tab_cycle = None
        if isinstance(event, Echo):
            return event.data
        if isinstance(event, LineEntered):
            outcome = self._run(event.text, lazy=True, ask=False)
            if outcome.pending is not None:
                self.pending = outcome.pending  # the driver awaits it, then calls finish()
                return crlf(outcome.lines)
            chunks = outcome.more if outcome.more is not None else iter(())
            return self._show(_then([outcome.lines] if outcome.lines else [], chunks), paged=not outcome.no_more)
        if isinstance(event, HelpRequested):
            return b"?\r\n" + self._help(event.text) + self.prompt.encode() + self.editor.redraw()
        if isinstance(event, TabPressed):
            completed = self._tab(event.text)
            if completed is None:
                return b""
            tail = self.editor.buffer[self.editor.cursor :]
            echo = self.editor.replace(completed + tail)
            self.editor.cursor = len(completed)
            return echo + b"\b" * len(tail)
        if isinstance(event, CtrlZ):
            self._question = None
            self.return_to_user_view()
            return b"\r\n" + self.prompt.encode()
        if isinstance(event, CtrlC):
            self._question = None
            return b"\r\n" + self.prompt.encode()
        return b""

    def _help(self, text: str) -> bytes:
        found = matcher.help_items(self.tree, self.frame.kind, self.level, text)
        if isinstance(found, matcher.Failure):
            column = found.column(len(self.prompt))
            return crlf([caret_line(column), found.kind.message])
        glued = bool(text) and not text.endswith(" ")
        return crlf(format_help(found, glued))


def _then(*parts: Iterable[list[str]]) -> Iterator[list[str]]:
    """The parts' chunks one after the other (none rendered before it is asked for)."""
    for part in parts:
        yield from part

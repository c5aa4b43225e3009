"""Matching a typed line against a view's graph, with VRP abbreviation; `?` help and Tab completion.

Rules, applied token by token to every command of the view at once:

* a keyword (or a :class:`~ikegate.cli.params.Choice` word) is matched by any prefix, case-insensitive;
  a token equal to a keyword wins over the longer keywords it also prefixes (``ip`` vs ``ipsec``);
  a prefix of two different keywords is *Ambiguous*, unless a value parameter accepts the token;
* a keyword beats a value parameter; a value parameter takes the token only if it parses;
* nothing takes the token: *Too many parameters* if the command could already end there, *Wrong
  parameter* if a value was expected, else *Unrecognized command*;
* the line ends before any command is complete: *Incomplete command*, caret just after the line.

Commands above the user's level are simply absent from the walk, so they fail like unknown words.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from ikegate.cli.errors import ErrorKind
from ikegate.cli.params import ParamValueError
from ikegate.cli.tree import Command, CommandTree, Edge, State
from ikegate.cli.views import ViewKind

#: Higher than any command's level: :func:`secret_tokens` must see every command.
_EVERY_LEVEL = 15


@dataclass(frozen=True)
class Token:
    text: str
    start: int
    end: int


def tokenize(line: str) -> list[Token]:
    """Split on spaces, keeping each token's offsets in the line as typed."""
    tokens: list[Token] = []
    pos = 0
    for part in line.split(" "):
        if part:
            tokens.append(Token(part, pos, pos + len(part)))
        pos += len(part) + 1
    return tokens


@dataclass(frozen=True)
class Bound:
    """One token's meaning: a keyword (``name`` None, value = full word) or a parameter value."""

    name: str | None
    value: object
    index: int


@dataclass(frozen=True)
class _Thread:
    state: State
    bindings: tuple[Bound, ...]
    order: int  # declaration order of the command, to break (unexpected) ties


@dataclass(frozen=True)
class Match:
    command: Command
    bindings: tuple[Bound, ...]
    tokens: list[Token]
    sensitive: frozenset[int]

    def values(self, name: str) -> list[object]:
        return [b.value for b in self.bindings if b.name == name]

    def index_of(self, name: str, nth: int = 0) -> int:
        """Token index of the ``nth`` value bound to ``name`` (for a handler's *Wrong parameter*)."""
        found = [b.index for b in self.bindings if b.name == name]
        return found[nth] if nth < len(found) else len(self.tokens) - 1

    @property
    def keywords(self) -> tuple[str, ...]:
        return tuple(str(b.value) for b in self.bindings if b.name is None)


@dataclass(frozen=True)
class Failure:
    kind: ErrorKind
    index: int  # token index; len(tokens) means "after the line"
    tokens: list[Token]
    sensitive: frozenset[int]

    def column(self, prompt_length: int) -> int:
        """Caret column counted from the start of the prompt line."""
        if self.index < len(self.tokens):
            return prompt_length + self.tokens[self.index].start
        return prompt_length + (self.tokens[-1].end if self.tokens else 0)


MASK = "******"


def masked(tokens: list[Token], sensitive: Iterable[int]) -> str:
    """The line with sensitive tokens (keys) replaced, for the command log."""
    hidden = set(sensitive)
    return " ".join(MASK if i in hidden else t.text for i, t in enumerate(tokens))


def secret_tokens(tree: CommandTree, line: str) -> frozenset[int]:
    """Indexes of the tokens of ``line`` that may be secret, whatever the view and level the line is
    typed in and whether or not it parses.

    This is the one place that knows which words of a line must never be echoed. Everything from the
    first secret token to the end of the line is hidden (a pass phrase typed with spaces, or a key after
    a keyword ikegate does not have, is still a secret). A token starts the secret part when

    * a secret-taking parameter (:attr:`ValueParam.sensitive`) may stand at its position after the words
      before it, in any view at the highest level (so abbreviations count, and ``pre-shared-key KEY
      junk`` typed in the wrong view or with too many words still hides KEY); or
    * it follows a run of keywords that lead to a secret in some command (:func:`_secret_leads`:
      ``pre-shared-key``, ``password``, ``irreversible-cipher``), wherever they stand — so ``undo
      pre-shared-key KEY`` or ``local-user u password cipher PW`` (VRP forms ikegate lacks) are hidden too.
    """
    tokens = tokenize(line.replace("\t", " "))  # a tab must not glue a secret to its keyword
    starts = [len(tokens)]
    for view in ViewKind:
        _, sensitive = _walk(_start(tree, view, _EVERY_LEVEL), tokens)
        starts.extend(sensitive)
    leads = _secret_leads(tree)
    for index, token in enumerate(tokens):
        if token.text.lower() in leads:
            end = index + 1
            while end < len(tokens) and tokens[end].text.lower() in leads:
                end += 1
            starts.append(end)
            break
    return frozenset(range(min(starts), len(tokens)))


@functools.lru_cache(maxsize=8)
def _secret_leads(tree: CommandTree) -> frozenset[str]:
    """Keywords followed, through keywords only, by a secret-taking parameter in some command."""
    memo: dict[int, bool] = {}

    def leads_to_secret(state: State) -> bool:
        if state.id not in memo:
            memo[state.id] = False  # a loop does not lead anywhere new
            memo[state.id] = any(e.sensitive or (e.word is not None and e.name is None and leads_to_secret(e.target))
                                 for s in _closure([_Thread(state, (), 0)]) for e in s.state.edges)
        return memo[state.id]

    words: set[str] = set()
    seen: set[int] = set()
    stack = [entry.start for view in ViewKind for entry in tree.entries(view, _EVERY_LEVEL)]
    while stack:
        state = stack.pop()
        if state.id in seen:
            continue
        seen.add(state.id)
        for edge in state.edges:
            if edge.word is not None and edge.name is None and leads_to_secret(edge.target):
                words.add(edge.word.lower())
            stack.append(edge.target)
        stack.extend(state.empty)
    return frozenset(words)


def mask_secrets(tree: CommandTree, line: str) -> str:
    """``line`` with each secret token (:func:`secret_tokens`) replaced by ``******`` and everything else,
    spacing included, as typed: what error messages, transcripts and logs may echo."""
    hidden = secret_tokens(tree, line)
    if not hidden:
        return line
    tokens = tokenize(line.replace("\t", " "))
    out: list[str] = []
    pos = 0
    for index in sorted(hidden):
        token = tokens[index]
        out += [line[pos : token.start], MASK]
        pos = token.end
    out.append(line[pos:])
    return "".join(out)


def _closure(threads: Iterable[_Thread]) -> list[_Thread]:
    out: list[_Thread] = []
    seen: set[tuple[int, tuple[Bound, ...]]] = set()
    stack = list(threads)[::-1]
    while stack:
        thread = stack.pop()
        key = (thread.state.id, thread.bindings)
        if key in seen:
            continue
        seen.add(key)
        out.append(thread)
        stack.extend(_Thread(s, thread.bindings, thread.order) for s in reversed(thread.state.empty))
    return out


def _start(tree: CommandTree, view: ViewKind, level: int) -> list[_Thread]:
    return _closure(_Thread(e.start, (), i) for i, e in enumerate(tree.entries(view, level)))


def _word_edges(threads: list[_Thread]) -> list[tuple[_Thread, Edge]]:
    return [(t, e) for t in threads for e in t.state.edges if e.word is not None]


def _step(threads: list[_Thread], token: str, index: int) -> list[_Thread] | ErrorKind:
    """Advance every thread over one token, or say why none can."""
    low = token.lower()
    words = _word_edges(threads)
    chosen: list[tuple[_Thread, Edge, object]] = []
    exact = [(t, e) for t, e in words if e.word is not None and e.word.lower() == low]
    if exact:
        chosen = [(t, e, e.word) for t, e in exact]
    else:
        prefixed = [(t, e) for t, e in words if e.word is not None and e.word.lower().startswith(low)]
        distinct = {e.word for _, e in prefixed}
        values: list[tuple[_Thread, Edge, object]] = []
        for t in threads:
            for e in t.state.edges:
                if e.param is None:
                    continue
                try:
                    values.append((t, e, e.param.parse(token)))
                except ParamValueError:
                    continue
        if len(distinct) == 1:
            chosen = [(t, e, e.word) for t, e in prefixed]
        elif values:
            chosen = values
        elif len(distinct) > 1:
            return ErrorKind.AMBIGUOUS
    if not chosen:
        if any(t.state.accept is not None for t in threads):
            return ErrorKind.TOO_MANY
        if any(e.param is not None for t in threads for e in t.state.edges):
            return ErrorKind.WRONG_PARAMETER
        return ErrorKind.UNRECOGNIZED
    return _closure(_Thread(e.target, (*t.bindings, Bound(e.name, value, index)), t.order) for t, e, value in chosen)


def _sensitive_here(threads: list[_Thread]) -> bool:
    return any(e.sensitive for t in threads for e in t.state.edges)


def _walk(threads: list[_Thread], tokens: list[Token]) -> tuple[list[_Thread], set[int]] | tuple[Failure, set[int]]:
    sensitive: set[int] = set()
    for index, token in enumerate(tokens):
        if _sensitive_here(threads):
            sensitive.add(index)
        result = _step(threads, token.text, index)
        if isinstance(result, ErrorKind):
            return Failure(result, index, tokens, frozenset(sensitive)), sensitive
        threads = result
    return threads, sensitive


def match(tree: CommandTree, view: ViewKind, level: int, line: str) -> Match | Failure:
    """Match a whole line (which must contain at least one token) in ``view`` for a user of ``level``."""
    tokens = tokenize(line)
    threads, sensitive = _walk(_start(tree, view, level), tokens)
    if isinstance(threads, Failure):
        return threads
    done = sorted((t for t in threads if t.state.accept is not None), key=lambda t: t.order)
    if not done or not tokens:
        return Failure(ErrorKind.INCOMPLETE, len(tokens), tokens, frozenset(sensitive))
    command = done[0].state.accept
    assert command is not None
    return Match(command, done[0].bindings, tokens, frozenset(sensitive))


def _natural(pair: tuple[str, str]) -> list[tuple[int, str]]:
    """Sort key putting ``group2`` before ``group14`` (numbers compared as numbers)."""
    return [(int(part), "") if part.isdigit() else (-1, part) for part in re.split(r"(\d+)", pair[0]) if part]


@dataclass(frozen=True)
class HelpItem:
    name: str
    help: str


CR = HelpItem("<cr>", "")


def help_items(tree: CommandTree, view: ViewKind, level: int, line: str) -> list[HelpItem] | Failure:
    """What `?` lists for ``line`` (the text before the ``?``).

    After a space (or on an empty line): every keyword and parameter that may come next, then ``<cr>``
    if the command may end here. Glued to a word (``dis?``): the keywords starting with that word.
    """
    tokens = tokenize(line)
    glued = bool(tokens) and not line.endswith(" ")
    done_tokens = tokens[:-1] if glued else tokens
    threads, _ = _walk(_start(tree, view, level), done_tokens)
    if isinstance(threads, Failure):
        return threads
    if glued:
        prefix = tokens[-1].text.lower()
        words = {(e.word, e.help) for _, e in _word_edges(threads) if e.word and e.word.lower().startswith(prefix)}
        return [HelpItem(w, h) for w, h in sorted(words, key=_natural)]
    keywords = {(e.word, e.help) for _, e in _word_edges(threads) if e.word is not None}
    items = [HelpItem(w, h) for w, h in sorted(keywords, key=_natural)]
    seen: set[tuple[str, str]] = set()
    for thread in threads:
        for edge in thread.state.edges:
            if edge.param is not None and (edge.param.display, edge.help) not in seen:
                seen.add((edge.param.display, edge.help))
                items.append(HelpItem(edge.param.display, edge.help))
    if any(t.state.accept is not None for t in threads):
        items.append(CR)
    return items


def tab_candidates(tree: CommandTree, view: ViewKind, level: int, line: str) -> tuple[str, list[str]]:
    """What Tab may put in place of the line's last word: ``(stem, words)``, the line before that word
    and the keywords it is a prefix of, in `?` order; no words when Tab does nothing (after a space, a
    bad line before the word, or no keyword starting so)."""
    tokens = tokenize(line)
    if not tokens or line.endswith(" "):
        return line, []
    threads, _ = _walk(_start(tree, view, level), tokens[:-1])
    if isinstance(threads, Failure):
        return line, []
    last = tokens[-1]
    low = last.text.lower()
    words = {e.word for _, e in _word_edges(threads) if e.word and e.word.lower().startswith(low)}
    return line[: last.start], [w for w, _ in sorted(((w, "") for w in words), key=_natural)]


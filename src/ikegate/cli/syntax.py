"""The syntax notation of command declarations, as Huawei's command references write it.

``reset ike sa [ conn-id <conn-id> | remote <remote> ] [ slot <slot> cpu <cpu> ]``

* a bare word is a keyword;
* ``<name>`` is a parameter whose type the declaration gives in its ``params`` mapping;
* ``[ a | b ]`` is an optional choice, ``{ a | b }`` a required one;
* ``+`` right after ``>`` or ``}`` repeats that element one or more times (``<alg>+``).

Writing declarations in the reference's own notation makes them easy to check against the documents;
this module turns the text into a small tree that :mod:`ikegate.cli.tree` compiles into a graph.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Word:
    text: str


@dataclass(frozen=True)
class ParamRef:
    name: str


@dataclass(frozen=True)
class Seq:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Alt:
    options: tuple[Node, ...]
    optional: bool


@dataclass(frozen=True)
class Repeat:
    item: Node


Node = Word | ParamRef | Seq | Alt | Repeat

_LEX = re.compile(r"\s*(\[|\]|\{|\}\+?|\||<[^<>\s]+>\+?|[^\s\[\]{}|<>]+)")


class SyntaxDeclarationError(ValueError):
    """A declaration's syntax text is malformed (a programming error, raised at import time)."""


def _lex(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        found = _LEX.match(text, pos)
        if found is None:
            raise SyntaxDeclarationError(f"cannot read {text[pos:]!r} in {text!r}")
        tokens.append(found.group(1))
        pos = found.end()
    return tokens


def parse_syntax(text: str) -> Seq:
    """Parse a syntax line into a :class:`Seq`."""
    tokens = _lex(text)
    seq, pos = _parse_seq(tokens, 0, text)
    if pos != len(tokens):
        raise SyntaxDeclarationError(f"unbalanced {tokens[pos]!r} in {text!r}")
    return seq


def _parse_seq(tokens: list[str], pos: int, text: str) -> tuple[Seq, int]:
    items: list[Node] = []
    while pos < len(tokens) and tokens[pos] not in ("]", "}", "}+", "|"):
        token = tokens[pos]
        if token in ("[", "{"):
            closer = "]" if token == "[" else "}"
            options: list[Node] = []
            pos += 1
            while True:
                option, pos = _parse_seq(tokens, pos, text)
                options.append(option)
                if pos >= len(tokens):
                    raise SyntaxDeclarationError(f"unclosed {token!r} in {text!r}")
                if tokens[pos] == "|":
                    pos += 1
                    continue
                break
            end = tokens[pos]
            if end.rstrip("+") != closer:
                raise SyntaxDeclarationError(f"{token!r} closed by {end!r} in {text!r}")
            node: Node = Alt(tuple(options), optional=token == "[")
            if end.endswith("+"):
                node = Repeat(node)
            items.append(node)
            pos += 1
        elif token.startswith("<"):
            ref = ParamRef(token.rstrip("+")[1:-1])
            items.append(Repeat(ref) if token.endswith("+") else ref)
            pos += 1
        else:
            items.append(Word(token))
            pos += 1
    return Seq(tuple(items)), pos

"""Transition tables that govern (h11's ``_state.py``): every state change goes through :meth:`Table.move`.

A table maps (state, trigger) to the next state. Anything not listed is a :class:`ProtocolViolation`.
The engines keep one table per machine (IKE SA, IKEv1 phase 1, Quick Mode, Child SA), so the docs'
state diagrams can be read off (:meth:`Table.edges`) and a stray assignment shows up in review.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from ikegate.ike.core.errors import ProtocolViolation

S = TypeVar("S")
T = TypeVar("T")


class Table(Generic[S, T]):
    """One state machine's moves; ``anywhere`` lists (trigger -> state) allowed from every state."""

    __slots__ = ("anywhere", "moves", "name")

    def __init__(self, name: str, moves: Mapping[tuple[S, T], S], anywhere: Mapping[T, S] | None = None) -> None:
        self.name = name
        self.moves = dict(moves)
        self.anywhere = dict(anywhere or {})

    def move(self, state: S, trigger: T) -> S:
        """The state after ``trigger`` in ``state``; a move the table does not list is a bug."""
        nxt = self.moves.get((state, trigger))
        if nxt is None:
            nxt = self.anywhere.get(trigger)
        if nxt is None:
            raise ProtocolViolation(f"{self.name}: {_text(trigger)} is not allowed in state {_text(state)}")
        return nxt

    def allows(self, state: S, trigger: T) -> bool:
        return (state, trigger) in self.moves or trigger in self.anywhere

    def edges(self) -> Iterator[tuple[S, T, S]]:
        """Every (state, trigger, next state), for diagrams and tests."""
        for (state, trigger), nxt in self.moves.items():
            yield state, trigger, nxt


def _text(x: object) -> str:
    return str(getattr(x, "value", x))


__all__ = ["Table"]

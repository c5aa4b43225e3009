"""The device model: which USG this gateway plays, and where (slot, cpu) its SAs may live.

Only the USG6635E, USG6655E, USG6680E, USG6712E and USG6716E accept ``slot … cpu …`` in ``reset ike sa``
and ``display ike sa`` (the seed). Those models get a configured set of placements; every other model
has the single placement (0, 0) and refuses the parameter.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ikegate.sad import DEFAULT_PLACEMENT, Placement

SLOT_MODELS = frozenset({"USG6635E", "USG6655E", "USG6680E", "USG6712E", "USG6716E"})
DEFAULT_MODEL = "USG6000V"
#: Placements a slot model gets when none are configured: two SPUs with two cores each.
DEFAULT_SLOT_PLACEMENTS = (Placement(1, 0), Placement(1, 1), Placement(3, 0), Placement(3, 1))


@dataclass(frozen=True)
class Device:
    model: str = DEFAULT_MODEL
    placements: tuple[Placement, ...] = field(default=(DEFAULT_PLACEMENT,))

    @property
    def has_slots(self) -> bool:
        return self.model in SLOT_MODELS

    def has_placement(self, slot: int, cpu: int) -> bool:
        return Placement(slot, cpu) in self.placements


def parse_placements(text: str) -> tuple[Placement, ...]:
    """``1/0,1/1,3/0`` -> placements; raises ValueError with a readable message."""
    out: list[Placement] = []
    for part in text.split(","):
        slot, sep, cpu = part.strip().partition("/")
        if not sep or not slot.isdigit() or not cpu.isdigit():
            raise ValueError(f"placement {part!r} is not SLOT/CPU")
        out.append(Placement(int(slot), int(cpu)))
    if not out or len(set(out)) != len(out):
        raise ValueError("placements must be distinct and at least one")
    return tuple(sorted(out))


def make_device(model: str | None, placements: str | None) -> Device:
    model = (model or DEFAULT_MODEL).upper()
    if model in SLOT_MODELS:
        return Device(model, parse_placements(placements) if placements else DEFAULT_SLOT_PLACEMENTS)
    if placements:
        raise ValueError(f"model {model} has no slots; --placements needs one of {', '.join(sorted(SLOT_MODELS))}")
    return Device(model)

"""The interop matrix: rows of cells, each a letter that is shown when its test passed."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _Row:
    letters: dict[str, str] = field(default_factory=dict)  # letter -> what it means, in declaration order
    status: dict[str, str] = field(default_factory=dict)  # letter -> pass | fail | skip


_ROWS: dict[str, _Row] = {}


def declare(row: str, letter: str, what: str = "") -> None:
    _ROWS.setdefault(row, _Row()).letters.setdefault(letter, what)


def record(row: str, letter: str, status: str) -> None:
    declare(row, letter)
    _ROWS[row].status[letter] = status


def render() -> list[str]:
    """One line per row: passing letters, ``-`` failed, ``.`` skipped or not run; then the legend."""
    if not any(r.status for r in _ROWS.values()):
        return []
    rows = {name: row for name, row in _ROWS.items() if row.status}  # rows deselected as a whole stay out
    width = max(len(name) for name in rows) + 2
    lines = []
    for name, row in rows.items():
        cells = "".join(
            letter if row.status.get(letter) == "pass" else "-" if row.status.get(letter) == "fail" else "."
            for letter in row.letters
        )
        passed = sum(1 for s in row.status.values() if s == "pass")
        lines.append(f"{name:<{width}}{cells:<8} {passed}/{len(row.letters)}")
    lines.append("")
    lines.append("legend ('-' failed, '.' skipped or not run):")
    seen: dict[str, list[str]] = {}
    for name, row in rows.items():
        key = "; ".join(f"{letter}={what}" for letter, what in row.letters.items())
        seen.setdefault(key, []).append(name)
    for key, names in seen.items():
        label = names[0] if len(names) == 1 else f"{names[0]} (and {len(names) - 1} more)"
        lines.append(f"  {label}: {key}")
    return lines

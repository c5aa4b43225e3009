"""The one-way imports of ARCHITECTURE.md, checked on the source (every ``import`` statement, including
those under ``TYPE_CHECKING`` and inside functions), so a shortcut across layers fails here first.

- ``ike/`` imports nothing of ikegate outside ``ike/`` (it is sans-I/O and knows no gateway);
- the shared layers of ``ike/`` (``core``, ``wire``, ``crypto``, ``events``) know neither version;
- ``ike/v1`` and ``ike/v2`` do not import each other;
- outside ``ike/``, only the gateway's engine factory (the controller and the configuration translation
  feeding it) names a version package; the dataplane, policy, io and the rest see ``ike.core`` & co.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "ikegate"
SHARED_IKE = ("ikegate.ike.core", "ikegate.ike.wire", "ikegate.ike.crypto", "ikegate.ike.events")
VERSIONS = ("ikegate.ike.v1", "ikegate.ike.v2")
ENGINE_FACTORY = {"gateway/controller.py", "gateway/translate.py"}


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Absolute names of every ikegate module ``path`` imports (relative imports resolved)."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    return imports_in(path.read_text(), package)


def imports_in(text: str, package: list[str]) -> set[str]:
    """Every ikegate name imported by source ``text`` living in ``package``, at any depth of the tree."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{alias.name}" for alias in node.names)
    return {m for m in out if m == "ikegate" or m.startswith("ikegate.")}


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(SRC).as_posix()


def _ike_inward(here: str, rel: str, name: str) -> bool:
    return _under(here, "ikegate.ike") and not _under(name, "ikegate.ike")


def _shared_versionless(here: str, rel: str, name: str) -> bool:
    return any(_under(here, s) for s in SHARED_IKE) and any(_under(name, v) for v in VERSIONS)


def _versions_apart(here: str, rel: str, name: str) -> bool:
    v1, v2 = VERSIONS
    return (_under(here, v1) and _under(name, v2)) or (_under(here, v2) and _under(name, v1))


def _versions_private(here: str, rel: str, name: str) -> bool:
    outside = not _under(here, "ikegate.ike") and rel not in ENGINE_FACTORY
    return outside and any(_under(name, v) for v in VERSIONS)


RULES: dict[str, Callable[[str, str, str], bool]] = {
    "ike-inward": _ike_inward,
    "shared-versionless": _shared_versionless,
    "versions-apart": _versions_apart,
    "versions-private": _versions_private,
}


def _violations(rule: str) -> list[str]:
    broken = RULES[rule]
    return [f"{_rel(path)}: {name}" for path in _sources() for name in sorted(imports_of(path))
            if broken(_module_name(path), _rel(path), name)]


@pytest.mark.parametrize("rule", sorted(RULES))
def test_layering(rule: str) -> None:
    assert _violations(rule) == []



def test_the_checker_sees_imports() -> None:
    """The parser must find plain, from-, relative and TYPE_CHECKING imports, or the rules prove nothing."""
    assert "ikegate.ike.core.config.Mode" in imports_of(SRC / "dataplane" / "esp.py")
    assert any(_under(n, "ikegate.ike.v2") for n in imports_of(SRC / "gateway" / "controller.py"))
    assert _module_name(SRC / "ike" / "core" / "__init__.py") == "ikegate.ike.core"
    hidden = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..v2.sa import IkeSa\n"
    assert "ikegate.ike.v2.sa.IkeSa" in imports_in(hidden, ["ikegate", "ike", "core"])
    assert "ikegate.sad" in imports_in("def f():\n    import ikegate.sad\n", ["ikegate", "ike"])

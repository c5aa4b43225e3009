"""The management plane reaches the gateway only through the Device seam (issue 12, item 4).

``cli/``, ``mgmt/``, ``daemon.py`` (and the demo lab, which drives daemons) may import, of the gateway
side, only :mod:`ikegate.gateway.device`: no controller, no engine (``ike``), no dataplane, no sockets
(``io``). The seam module itself carries plain data only: at import time it loads nothing but the SA
database's row types and the configuration model. (The rules for ``ike/`` are in test_layering.py.)
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import ikegate

SRC = Path(ikegate.__file__).parent
MANAGEMENT = ["cli", "mgmt", "daemon.py", "lab"]
SEAM = "ikegate.gateway.device"
#: Packages behind the seam: the management plane names none of them.
BEHIND = ("ikegate.gateway", "ikegate.ike", "ikegate.dataplane", "ikegate.io")


def _modules(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for name in paths:
        path = SRC / name
        out += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return out


def imports(tree: ast.AST, *, top_level_only: bool = False) -> list[tuple[int, str]]:
    """(line, dotted module) for every import in ``tree`` — inside functions and ``TYPE_CHECKING`` blocks
    too, unless ``top_level_only``; ``from a import b`` counts as ``a.b`` (``b`` may be a module)."""
    nodes = ast.iter_child_nodes(tree) if top_level_only else ast.walk(tree)
    out: list[tuple[int, str]] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return out


def violations(source: str) -> list[str]:
    """What in ``source`` (a management module) imports the gateway side other than through the seam."""
    bad: list[str] = []
    for line, name in imports(ast.parse(source)):
        if name == SEAM or name.startswith(SEAM + "."):
            continue
        if any(name == b or name.startswith(b + ".") for b in BEHIND):
            bad.append(f"{line}: {name}")
    return bad


@pytest.mark.parametrize("path", _modules(MANAGEMENT), ids=lambda p: str(p.relative_to(SRC)))
def test_management_imports_the_gateway_only_through_the_device(path: Path) -> None:
    assert violations(path.read_text()) == []


@pytest.mark.parametrize("path", _modules(MANAGEMENT), ids=lambda p: str(p.relative_to(SRC)))
def test_management_never_follows_a_row_to_its_engine(path: Path) -> None:
    """SA rows cross the seam; their ``handle`` (the engine, in one process) is not part of the contract,
    and a fan-out's rows do not have it."""
    used = [node.lineno for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Attribute) and node.attr == "handle"]
    assert used == []


@pytest.mark.parametrize("source", [
    "from ikegate.gateway.controller import Gateway",
    "import ikegate.gateway.local",
    "from ikegate.gateway import translate",
    "from ikegate.io.udp import UdpRunner",
    "from ikegate.dataplane.backend import UserspaceBackend",
    "def f():\n    from ikegate.ike.v2.sa import IkeSa\n",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ikegate.gateway.controller import GatewayStats\n",
])
def test_the_check_catches_a_way_around(source: str) -> None:
    assert violations(source)


def test_the_check_allows_the_seam_and_plain_data() -> None:
    assert violations("from ikegate.gateway.device import Device, Selection\nfrom ikegate.sad import SaEntry\n"
                      "from ikegate.policy.model import Config\nfrom ikegate.gateway import device\n") == []


def test_the_seam_module_imports_only_plain_data() -> None:
    """At module level; its one function-level import (the local implementation, in ``open_local``) is
    what lets a caller build a device without naming the controller."""
    tree = ast.parse((SRC / "gateway" / "device.py").read_text())
    project = sorted({name for _, name in imports(tree, top_level_only=True) if name.startswith("ikegate.")})
    assert all(name.startswith(("ikegate.sad.", "ikegate.policy.model.")) for name in project), project


def test_importing_the_seam_loads_no_engine_or_controller() -> None:
    code = ("import sys, ikegate.gateway.device; "
            "print(sorted(m for m in sys.modules if m.startswith(('ikegate.gateway.controller', "
            "'ikegate.gateway.local', 'ikegate.ike', 'ikegate.io', 'ikegate.dataplane'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"

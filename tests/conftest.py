"""Settings for every test package.

Hypothesis, by default, fails an example that runs longer than 200 ms (``deadline``) and a test whose
data takes long to generate (``HealthCheck.too_slow``): both measure the machine, not the code, and fail
at random on a busy one (CI: two shared cores). Turned off here for every property test, including those
that pass their own ``@settings`` (they inherit what they do not set). Loaded before any test module.

What tests of the management plane used to copy between files: a VRP shell on a gateway (through the
in-process Device, as the daemon builds it), a shell in the system view, and the "this line must work /
must fail" checks.

They are plain functions rather than fixtures: class-based helpers and module-level tables call them
outside any test function.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from functools import cache
from typing import Any

from hypothesis import HealthCheck, settings

from ikegate.cli.commands import default_tree
from ikegate.cli.commands.runtime import Runtime, runtime_commands
from ikegate.cli.shell import Shell
from ikegate.cli.tree import CommandTree
from ikegate.gateway.controller import Gateway
from ikegate.gateway.device import DeviceModel
from ikegate.gateway.local import LocalDevice
from ikegate.policy.model import Config


@cache
def runtime_tree(model: DeviceModel = DeviceModel()) -> CommandTree:  # noqa: B008 (frozen, hashable)
    """The full command tree for ``model`` (built once per model: trees are immutable once built)."""
    return default_tree(runtime_commands(model))


def gateway_for(config: Config, model: DeviceModel | None = None) -> Gateway:
    """A controller with ``model``'s placements, as the daemon makes it."""
    return Gateway(config, placements=(model or DeviceModel()).placements)


def device_shell(gateway: Gateway, model: DeviceModel | None = None, *, clock: Callable[[], float] = lambda: 0.0,
                 wall: Callable[[], dt.datetime] | None = None, shell: dict[str, Any] | None = None,
                 **runtime: Any) -> Shell:
    """A VRP shell on ``gateway`` through a :class:`LocalDevice` (never opened: in-memory tests step
    ``clock`` themselves). ``runtime`` goes to :class:`Runtime` (``monotonic``, ``booted``,
    ``config_path``), ``shell`` to :class:`Shell`."""
    model = model or DeviceModel(placements=tuple(gateway.placements))
    device = LocalDevice(gateway, model, clock=clock)
    if wall is not None:
        runtime["wall"] = wall
    return Shell(gateway.config, tree=runtime_tree(model), device=Runtime(device, **runtime), **(shell or {}))


def system_shell(*lines: str, config: Config | None = None, tree: CommandTree | None = None,
                 level: int = 3) -> Shell:
    """A shell in the system view after running ``lines`` (each must succeed)."""
    shell = Shell(config if config is not None else Config(), tree=tree or config_tree(), level=level)
    ok(shell, "system-view")
    for line in lines:
        ok(shell, line)
    return shell


@cache
def config_tree() -> CommandTree:
    """The command tree without runtime commands (configuration tests need no device)."""
    return default_tree()


def ok(shell: Shell, line: str) -> list[str]:
    """Run ``line``, which must succeed; its output lines."""
    out = shell.run(line)
    assert out.error is None, f"{line}: {out.lines}"
    return out.lines


def fails(shell: Shell, line: str) -> str:
    """Run ``line``, which must fail; its error text."""
    outcome = shell.run(line)
    assert outcome.error is not None, line
    return outcome.error




settings.register_profile("ikegate", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ikegate")

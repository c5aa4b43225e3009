"""Loading a configuration file through the shell engine itself.

A file is the text ``display current-configuration`` prints: sections separated by ``#``, sub-commands
indented. It is applied line by line, as if typed from the system view, by the same matcher and handlers
an operator uses — so there is no second parser to keep in step. Views are entered by the lines
themselves, and a line a sub-view does not know falls back to the system view (as VRP does), which is
why no ``quit`` is needed between sections. Reference checks and the bound-policy rule are skipped
while loading (the file is judged as a whole). A bad line becomes a :class:`ConfigError`; the rest
still loads.
"""

from __future__ import annotations

from dataclasses import dataclass

from ikegate.cli.shell import Shell
from ikegate.cli.tree import CommandTree
from ikegate.cli.views import SYSTEM_FRAME, ViewKind
from ikegate.policy.model import Config


@dataclass(frozen=True)
class ConfigError:
    line_number: int  # 1-based
    line: str
    message: str

    def __str__(self) -> str:
        return f"line {self.line_number}: {self.line.strip()}: {self.message}"


def load_config(text: str, tree: CommandTree | None = None) -> tuple[Config, list[ConfigError]]:
    """Build a :class:`Config` from configuration text; report the lines that could not be applied."""
    config = Config()
    shell = Shell(config, tree=tree, loading=True)
    shell.enter_view(SYSTEM_FRAME)
    errors: list[ConfigError] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        if shell.frame.kind is ViewKind.USER:
            shell.enter_view(SYSTEM_FRAME)  # after a ``return``, later lines are system-view lines again
        outcome = shell.run(line)
        if outcome.error is not None:
            errors.append(ConfigError(number, raw, outcome.error))
    return config, errors

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
from pathlib import Path

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


def load_config(text: str, tree: CommandTree | None = None,
                directory: str | Path | None = None) -> tuple[Config, list[ConfigError]]:
    """Build a :class:`Config` from configuration text; report the lines that could not be applied.

    ``directory`` is where the file lives: the ``pki import`` lines name files next to it.
    """
    config = Config()
    config.pki.directory = Path(directory) if directory is not None else None
    shell = Shell(config, tree=tree, loading=True)
    shell.enter_view(SYSTEM_FRAME)
    errors: list[ConfigError] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        if not _printable(line):
            errors.append(ConfigError(number, _escaped(shell.mask(raw)), NOT_TEXT))
            continue
        if shell.frame.kind is ViewKind.USER:
            shell.enter_view(SYSTEM_FRAME)  # after a ``return``, later lines are system-view lines again
        outcome = shell.run(line)
        if outcome.error is not None:
            errors.append(ConfigError(number, shell.mask(raw), outcome.error))
    return config, errors


def decode_config(data: bytes) -> str:
    """The text of a configuration file. Bytes that are not UTF-8 are kept (as lone surrogates) rather
    than failing the whole file: :func:`load_config` reports their lines like any other bad line and
    loads the rest."""
    return data.decode("utf-8", errors="surrogateescape")


NOT_TEXT = "Error: The line contains bytes that are not printable UTF-8 text."


def _printable(line: str) -> bool:
    return line.isprintable() or line.replace("\t", " ").isprintable()


def _escaped(line: str) -> str:
    """A line safe to print on a terminal: undecodable bytes and control characters as ``\\xNN``."""
    out = []
    for char in line:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:  # a byte surrogateescape could not decode
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char.isprintable() or char == " ":
            out.append(char)
        else:
            out.append(char.encode("unicode_escape").decode("ascii"))
    return "".join(out)

"""The local console: a VRP session on this terminal, for ``ikegate demo``."""

from __future__ import annotations

from ikegate.daemon import Daemon
from ikegate.mgmt.pacing import pump
from ikegate.mgmt.terminal import pump_stdin, write_out


async def _drained() -> None:
    """The console writes synchronously (:func:`write_out`): nothing to wait for."""


async def run_console(daemon: Daemon, others: dict[str, Daemon] | None = None) -> int:
    shell = daemon.new_shell(task="con0", ip="console")
    write_out(b"\r\nThis is " + daemon.device.config.sysname.encode() + b"'s console. `quit` in user view leaves.")
    if others:
        write_out(b"\r\nThe others: " + b", ".join(
            f"{d.device.config.sysname}: ikegate cli --control {d.options.control}".encode()
            for d in others.values()) + b"\r\n")
    write_out(b"\r\n" + shell.start())

    async def typed(data: bytes) -> bool:
        await pump(shell, data, write_out, _drained, daemon.after_command)
        return not shell.closed

    await pump_stdin(typed)
    write_out(b"\r\n")
    return 0

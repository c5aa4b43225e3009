"""The local console: a VRP session on this terminal, for ``ikegate demo``."""

from __future__ import annotations

from ikegate.daemon import Daemon
from ikegate.mgmt.terminal import pump_stdin, write_out


async def run_console(daemon: Daemon, others: dict[str, Daemon] | None = None) -> int:
    shell = daemon.new_shell(task="con0", ip="console")
    write_out(b"\r\nThis is " + daemon.device.config.sysname.encode() + b"'s console. `quit` in user view leaves.")
    if others:
        write_out(b"\r\nThe others: " + b", ".join(
            f"{d.device.config.sysname}: ikegate cli --control {d.options.control}".encode()
            for d in others.values()) + b"\r\n")
    write_out(b"\r\n" + shell.start())

    async def typed(data: bytes) -> bool:
        out = shell.feed(data)
        if b"\r" in data or b"\n" in data:
            daemon.after_command()
        write_out(out)
        if shell.pending is not None:
            write_out(shell.finish(await shell.pending))
        return not shell.closed

    await pump_stdin(typed)
    write_out(b"\r\n")
    return 0

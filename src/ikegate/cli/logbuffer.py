"""The log buffer: a bounded ring of VRP-style log records (``display logbuffer``).

One buffer per device, shared by every shell session (and later by the gateway for tunnel events), so
it is passed into the :class:`~ikegate.cli.shell.Shell` rather than owned by it. The clock is a
parameter so tests can pin the time.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class LogRecord:
    time: dt.datetime
    module: str
    severity: int
    brief: str
    text: str

    def render(self, sysname: str) -> str:
        """``Aug  6 2011 20:34:46 HOST %%01SHELL/5/CMDRECORD(l):text`` (VRP log line layout)."""
        stamp = self.time.strftime("%b %d %Y %H:%M:%S")
        return f"{stamp} {sysname} {self.body()}"

    def body(self) -> str:
        """``%%01SHELL/5/CMDRECORD(l):text``: the line without time and host, which syslog carries in
        header fields of their own (:mod:`ikegate.mgmt.syslog`)."""
        return f"%%01{self.module}/{self.severity}/{self.brief}(l):{self.text}"


def _quote(value: str) -> str:
    return value.replace('"', "'")


class LogBuffer:
    def __init__(self, capacity: int = 1024, clock: Callable[[], dt.datetime] = dt.datetime.now) -> None:
        self._records: deque[LogRecord] = deque(maxlen=capacity)
        self._clock = clock
        #: Called with every new record, in order, after it is stored: how records leave the device
        #: (syslog) without every producer knowing where they go. A listener must not raise: it runs
        #: inside the command or the gateway event that logged.
        self.listeners: list[Callable[[LogRecord], None]] = []

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[LogRecord]:
        return iter(self._records)

    def log(self, module: str, severity: int, brief: str, text: str) -> LogRecord:
        record = LogRecord(self._clock(), module, severity, brief, text)
        self._records.append(record)
        for listener in self.listeners:
            listener(record)
        return record

    def record_command(self, *, task: str, ip: str, user: str, command: str, result: str | None = None) -> LogRecord:
        """``SHELL/5/CMDRECORD`` for a command that ran, ``CMDRECORDFAILED`` (with ``Result``) else.
        ``command`` must already have its secrets masked."""
        fields = f'Task={task}, Ip={ip}, User={user}, Command="{_quote(command)}"'
        if result is None:
            return self.log("SHELL", 5, "CMDRECORD", f"Recorded command information. ({fields})")
        return self.log(
            "SHELL",
            5,
            "CMDRECORDFAILED",
            f'Recorded command information. ({fields}, Result="{_quote(result)}")',
        )

    def render(self, sysname: str) -> list[str]:
        """Lines of ``display logbuffer``: newest first, as VRP lists them."""
        lines = [
            "Logging buffer configuration and contents : enabled",
            f"Allowed max buffer size : {self._records.maxlen}",
            f"Actual buffer size : {len(self._records)}",
            "",
        ]
        lines.extend(r.render(sysname) for r in reversed(self._records))
        return lines

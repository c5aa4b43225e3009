"""The log buffer: a bounded ring of VRP-style log records (``display logbuffer``).

One buffer per device, shared by every shell session and the gateway, so it is passed into the
:class:`~ikegate.cli.shell.Shell` rather than owned by it. The clock is a parameter so tests can pin the
time.

Two defences keep a flood from wiping the evidence an operator needs (a half-open flood once wrote
17,111 ``NEGOTIATION_FAILED`` lines in 35 s and flushed every SSH login failure):

* **Repeated failures are aggregated** (:class:`Suppressor`), syslog style: per (module, brief, source
  address) the first :data:`SOURCE_BURST` failures of a :data:`REPEAT_INTERVAL` window are kept, the
  rest counted, and when the window ends one line with the count stands for them (``… (Suppressed N
  similar messages from this source in the last 30 s.)``). A flood from many (spoofed) sources is capped
  the same way per (module, brief) at :data:`KIND_BURST` a window, summarised in one line. This happens
  before a record is stored, so the stderr and syslog mirrors (listeners) see exactly what the buffer
  keeps.
* **Security records have a reserved share** of the buffer (:func:`is_security`: SSH logins and
  failures, the command record, blocked sources). Either class may use free space, but when the buffer
  is full the class over its share loses its oldest record: noise cannot evict security records below
  their share (:data:`SECURITY_SHARE`), nor a burst of security records all the rest.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

#: Seconds in one aggregation window (syslogd's "last message repeated" also flushes after 30 s).
REPEAT_INTERVAL = 30.0
#: Failures kept in full per (module, brief, source) and window before the rest are only counted.
SOURCE_BURST = 3
#: Failures kept in full per (module, brief) and window, all sources together (spoofed floods).
KIND_BURST = 50
#: Most (module, brief, source) windows followed at once; beyond, new sources are held to KIND_BURST only.
MAX_KEYS = 4096
#: Share of the buffer reserved for security records.
SECURITY_SHARE = 0.5

_K = TypeVar("_K")
_SOURCE = re.compile(r"\b(?:RemoteAddress|Ip|SourceAddress|Source)=([^,)\s]+)")


def format_text(template: str, args: tuple[object, ...]) -> str:
    """A record's text from its parts: ``template % args`` (printf style, as :mod:`logging` does). The one
    place a record's text is made, so a test can count how often that happens."""
    return template % args


def record_text(text: str, args: tuple[object, ...]) -> str:
    """The text of a record given as a :class:`~ikegate.gateway.device.LogSink` gets it: ``text`` itself
    without arguments, else the template formatted (for sinks that want the line at once)."""
    return format_text(text, args) if args else text


class LogRecord:
    """One record; treat as immutable. Its text is kept in parts, a template and its arguments, and made
    only when something reads :attr:`text` (``display logbuffer``, the stderr mirror, a syslog target, the
    failure aggregation), then kept: every tunnel up and down makes a record, and on a gateway whose log
    nobody reads (stderr on /dev/null, no loghost) the text of a delete-all of 100,000 was pure cost.

    Without arguments the template *is* the text, taken verbatim (a ``%`` in it means nothing). The
    arguments must be immutable values (str, int, addresses): they are formatted later.
    """

    __slots__ = ("_args", "_text", "brief", "module", "severity", "time")

    def __init__(self, time: dt.datetime, module: str, severity: int, brief: str, text: str,
                 args: tuple[object, ...] = ()) -> None:
        self.time = time
        self.module = module
        self.severity = severity
        self.brief = brief
        self._text = text
        self._args = args

    @property
    def text(self) -> str:
        if self._args:
            self._text, self._args = format_text(self._text, self._args), ()
        return self._text

    @property
    def formatted(self) -> bool:
        """Whether the text has been made (or never needed making)."""
        return not self._args

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LogRecord):
            return NotImplemented
        return (self.time, self.module, self.severity, self.brief, self.text) == (
            other.time, other.module, other.severity, other.brief, other.text)

    __hash__ = None  # type: ignore[assignment]  # mutable-looking value type, as the dataclass was

    def __repr__(self) -> str:
        return (f"LogRecord(time={self.time!r}, module={self.module!r}, severity={self.severity!r}, "
                f"brief={self.brief!r}, text={self.text!r})")

    def render(self, sysname: str) -> str:
        """``Aug  6 2011 20:34:46 HOST %%01SHELL/5/CMDRECORD(l):text`` (VRP log line layout)."""
        return f"{_stamp(self.time)} {sysname} {self.body()}"

    def body(self) -> str:
        """``%%01SHELL/5/CMDRECORD(l):text``: the line without time and host, which syslog carries in
        header fields of their own (:mod:`ikegate.mgmt.syslog`)."""
        return f"%%01{self.module}/{self.severity}/{self.brief}(l):{self.text}"


_last_stamp: tuple[tuple[int, int, int, int, int, int], str] = ((0, 0, 0, 0, 0, 0), "")


def _stamp(time: dt.datetime) -> str:
    """``Aug 06 2011 20:34:46``: strftime once per second, however many records share it."""
    global _last_stamp
    key = (time.second, time.minute, time.hour, time.day, time.month, time.year)
    last_key, text = _last_stamp
    if key != last_key:
        text = time.strftime("%b %d %Y %H:%M:%S")
        _last_stamp = (key, text)
    return text


def _quote(value: str) -> str:
    return value.replace('"', "'")


def is_security(module: str, brief: str) -> bool:
    """Records an investigation needs after an attack: SSH logins, logouts and failures, the command
    record (the audit trail), and sources blocked for abuse. They get the buffer's reserved share."""
    return module in ("SSH", "SHELL") or "LOGIN" in brief or "BLOCK" in brief


def is_failure(module: str, brief: str) -> bool:
    """Records the :class:`Suppressor` aggregates: failures and refusals. The command record never is:
    every command an operator ran belongs in the audit trail."""
    return ("FAIL" in brief or "REFUSED" in brief) and module != "SHELL"


def source_of(text: str) -> str | None:
    """The source address a record is about (``RemoteAddress=``, ``Ip=`` …), if it names one."""
    m = _SOURCE.search(text)
    return m.group(1) if m else None


@dataclass
class _Window:
    start: dt.datetime
    passed: int = 0
    suppressed: int = 0
    last: LogRecord | None = None
    sources: set[str] = field(default_factory=set)


class Suppressor:
    """Which failure records to keep and, at the end of each window, the summary lines of those not kept
    (see the module docstring). Bookkeeping only: the buffer stores and forwards."""

    def __init__(self, interval: float = REPEAT_INTERVAL, source_burst: int = SOURCE_BURST,
                 kind_burst: int = KIND_BURST, max_keys: int = MAX_KEYS) -> None:
        self.interval = interval
        self.source_burst = source_burst
        self.kind_burst = kind_burst
        self.max_keys = max_keys
        self._by_source: dict[tuple[str, str, str], _Window] = {}
        self._by_kind: dict[tuple[str, str], _Window] = {}

    def admit(self, record: LogRecord) -> bool:
        """Whether ``record`` is kept (True) or only counted (False)."""
        if not is_failure(record.module, record.brief):
            return True
        source = source_of(record.text) or record.text
        kind = (record.module, record.brief)
        by_kind = self._by_kind.get(kind)
        if by_kind is None:
            by_kind = self._by_kind[kind] = _Window(record.time)
        key = (record.module, record.brief, source)
        by_source = self._by_source.get(key)
        if by_source is None and len(self._by_source) < self.max_keys:
            by_source = self._by_source[key] = _Window(record.time)
        if by_source is not None and by_source.passed >= self.source_burst:
            by_source.suppressed += 1
            by_source.last = record
            return False
        if by_kind.passed >= self.kind_burst:
            by_kind.suppressed += 1
            by_kind.last = record
            if len(by_kind.sources) < self.max_keys:
                by_kind.sources.add(source)
            return False
        by_kind.passed += 1
        if by_source is not None:
            by_source.passed += 1
        return True

    def due(self, now: dt.datetime) -> list[LogRecord]:
        """Summary records of the windows that ended by ``now``; those windows close."""
        if not self._by_source and not self._by_kind:
            return []  # the usual case, checked at every record
        return [*self._close(self._by_source, now, lambda w: "from this source"),
                *self._close(self._by_kind, now, self._sources)]

    def _sources(self, window: _Window) -> str:
        count = len(window.sources)
        return f"from {count}{'+' if count >= self.max_keys else ''} sources"  # the set stops at max_keys

    def _close(self, table: dict[_K, _Window], now: dt.datetime, origin: Callable[[_Window], str]) -> list[LogRecord]:
        out: list[LogRecord] = []
        # Windows are opened in time order, so the due ones are at the front: stop at the first that is
        # not (this runs at every record, so it must not walk thousands of open windows).
        while table:
            key, window = next(iter(table.items()))
            if 0 <= (now - window.start).total_seconds() < self.interval:
                break
            del table[key]
            last = window.last
            if window.suppressed and last is not None:
                out.append(LogRecord(now, last.module, last.severity, last.brief,
                                     f"{last.text} (Suppressed {window.suppressed} similar messages "
                                     f"{origin(window)} in the last {self.interval:g} s.)"))
        return out


class LogBuffer:
    def __init__(self, capacity: int = 1024, clock: Callable[[], dt.datetime] = dt.datetime.now,
                 suppressor: Suppressor | None = None) -> None:
        self.capacity = capacity
        #: Slots ordinary records cannot take from security records once the buffer is full.
        self.reserved = int(capacity * SECURITY_SHARE)
        self._security: deque[tuple[int, LogRecord]] = deque()
        self._general: deque[tuple[int, LogRecord]] = deque()
        self._seq = 0
        self._clock = clock
        self.suppressor = suppressor if suppressor is not None else Suppressor()
        #: Called with every new record, in order, after it is stored: how records leave the device
        #: (syslog) without every producer knowing where they go. A listener must not raise: it runs
        #: inside the command or the gateway event that logged.
        self.listeners: list[Callable[[LogRecord], None]] = []

    def __len__(self) -> int:
        return len(self._security) + len(self._general)

    def __iter__(self) -> Iterator[LogRecord]:
        """Oldest first: both classes merged in the order they were logged."""
        merged = sorted([*self._security, *self._general], key=lambda item: item[0])
        return iter([record for _, record in merged])

    def log(self, module: str, severity: int, brief: str, text: str, *args: object) -> LogRecord:
        """Store (or, for a repeated failure, only count) one record; returns it either way. With ``args``,
        ``text`` is a template formatted only when the record is read (see :class:`LogRecord`)."""
        now = self._clock()
        self.flush(now)
        record = LogRecord(now, module, severity, brief, text, args)
        if self.suppressor.admit(record):
            self._store(record)
        return record

    def flush(self, now: dt.datetime | None = None) -> None:
        """Store the summaries of aggregation windows that have ended. :meth:`log` does it on the way;
        the daemon also calls it every second so a summary does not wait for the next record."""
        for summary in self.suppressor.due(self._clock() if now is None else now):
            self._store(summary)

    def _store(self, record: LogRecord) -> None:
        security = is_security(record.module, record.brief)
        mine, other = (self._security, self._general) if security else (self._general, self._security)
        other_share = self.capacity - self.reserved if security else self.reserved
        if len(self) >= self.capacity:
            # The class over its share gives up its oldest record; if neither is, the newcomer's own class.
            victim = other if len(other) > other_share or not mine else mine
            victim.popleft()
        self._seq += 1
        mine.append((self._seq, record))
        for listener in self.listeners:
            listener(record)

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
            f"Allowed max buffer size : {self.capacity}",
            f"Actual buffer size : {len(self)}",
            "",
        ]
        lines.extend(r.render(sysname) for r in reversed(list(self)))
        return lines

"""Syslog: every log-buffer record also goes, as RFC 5424 over UDP (RFC 5426), to each ``info-center
loghost``.

The message is ``<PRI>1 TIMESTAMP HOSTNAME ikegate - MSGID - MSG``:

* PRI = facility local7 (23, VRP's default for log hosts) * 8 + the record's severity. VRP's severities
  0..7 (emergencies .. debugging) are syslog's, so they pass through unchanged: a
  ``IPSEC-VPN/5/IPSEC_TUNNEL_TEARED_DOWN`` is ``<189>``.
* TIMESTAMP is the record's time in RFC 3339 with its UTC offset and milliseconds (the log buffer keeps
  local wall-clock time; a collector in another time zone still orders it right).
* HOSTNAME is the ``sysname`` at the time of sending, MSGID the VRP brief (``CMDRECORD``,
  ``IPSEC_TUNNEL_TEARED_DOWN``), which is what collectors route on; APP-NAME is ``ikegate``; PROCID and
  STRUCTURED-DATA are nil.
* MSG is the VRP body ``%%01IPSEC-VPN/5/IPSEC_TUNNEL_TEARED_DOWN(l):An IPSec tunnel is teared down.
  (…)``, so parsers written for Huawei's ``%%01MODULE/SEVERITY/BRIEF`` lines still find the module. It
  is sent as plain octets when ASCII and as UTF-8 behind a BOM otherwise (RFC 5424 §6.4).

The sender is a :class:`~ikegate.cli.logbuffer.LogBuffer` listener. It reads the targets from the live
configuration at every record, so ``info-center loghost`` and its ``undo`` apply from the next message
with no restart, and it never raises into the code that logged: a send that fails is counted, not
retried (UDP syslog is best effort by design, RFC 5426 §3.1).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import socket
from collections.abc import Callable, Iterable

from ikegate.cli.logbuffer import LogRecord
from ikegate.policy.model import LogHost

__all__ = ["APP_NAME", "FACILITY_LOCAL7", "SyslogSender", "format_message", "priority"]

log = logging.getLogger(__name__)

FACILITY_LOCAL7 = 23
APP_NAME = "ikegate"
#: RFC 5426 §3.2: receivers SHOULD take 2048 octets; longer messages are cut there.
MAX_MESSAGE = 2048
_BOM = b"\xef\xbb\xbf"


def priority(severity: int, facility: int = FACILITY_LOCAL7) -> int:
    """``facility * 8 + severity`` (RFC 5424 §6.2.1); the severity is clamped to 0..7."""
    return facility * 8 + min(7, max(0, severity))


def _header_field(text: str, limit: int) -> str:
    """A header field: PRINTUSASCII only (``!`` .. ``~``), at most ``limit`` characters, ``-`` if empty.
    Anything else is replaced by ``_`` rather than dropped, so distinct names stay distinct."""
    cleaned = "".join(c if "!" <= c <= "~" else "_" for c in text[:limit])
    return cleaned or "-"


def _timestamp(when: dt.datetime) -> str:
    """RFC 3339 with an offset; a naive time is taken as local time (that is what the log buffer keeps)."""
    aware = when if when.tzinfo is not None else when.astimezone()
    return aware.isoformat(timespec="milliseconds")


def format_message(record: LogRecord, hostname: str) -> bytes:
    """One RFC 5424 message for ``record`` (see the module docstring for each field)."""
    header = (f"<{priority(record.severity)}>1 {_timestamp(record.time)} {_header_field(hostname, 255)} "
              f"{APP_NAME} - {_header_field(record.brief, 32)} - ").encode("ascii")
    body = record.body()
    msg = body.encode("ascii") if body.isascii() else _BOM + body.encode("utf-8")
    data = header + msg
    if len(data) > MAX_MESSAGE:
        # cut on a character boundary so the tail is still valid UTF-8
        data = data[:MAX_MESSAGE].decode("utf-8", errors="ignore").encode("utf-8")
    return data


class _Socket(asyncio.DatagramProtocol):
    """One sending socket's protocol: counts what the kernel reports back (ICMP port unreachable and the
    like), and follows asyncio's flow control: while the transport's buffer is over its high-water mark
    (the socket would block), new messages are dropped rather than buffered without bound."""

    def __init__(self, owner: SyslogSender) -> None:
        self._owner = owner
        self.paused = False

    def error_received(self, exc: Exception) -> None:
        self._owner.errors += 1

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False


class SyslogSender:
    """Sends each record to every configured log host; see the module docstring.

    ``targets`` and ``hostname`` are read at every record (the daemon passes the live configuration's
    ``loghosts`` and ``sysname``). One unconnected UDP socket per address family serves every host of
    that family; :meth:`open` makes them, records that come before it (or for a family this host cannot
    use) are counted in :attr:`dropped`.
    """

    def __init__(self, targets: Callable[[], Iterable[LogHost]], hostname: Callable[[], str]) -> None:
        self._targets = targets
        self._hostname = hostname
        self._transports: dict[int, tuple[asyncio.DatagramTransport, _Socket]] = {}
        self.sent = 0
        self.dropped = 0
        self.errors = 0

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for version, family in ((4, socket.AF_INET), (6, socket.AF_INET6)):
            if version in self._transports:
                continue
            try:
                transport, protocol = await loop.create_datagram_endpoint(lambda: _Socket(self), family=family)
            except OSError as exc:  # e.g. IPv6 disabled on this host
                log.warning("syslog: no IPv%d socket: %s", version, exc)
                continue
            self._transports[version] = (transport, protocol)

    def close(self) -> None:
        for transport, _ in self._transports.values():
            transport.close()
        self._transports.clear()

    def send(self, record: LogRecord) -> None:
        """The log-buffer listener. Never raises."""
        hosts = list(self._targets())
        if not hosts:
            return
        data = format_message(record, self._hostname())
        for host in hosts:
            found = self._transports.get(host.address.version)
            if found is None or found[0].is_closing() or found[1].paused:
                self.dropped += 1
                continue
            transport = found[0]
            try:
                transport.sendto(data, (str(host.address), host.port))
            except (OSError, ValueError, RuntimeError):
                self.errors += 1
                continue
            self.sent += 1

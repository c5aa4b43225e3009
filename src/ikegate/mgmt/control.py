"""The local control socket: JSON lines over a Unix socket (mode 0600).

One request per line, one answer per line. ``ikegate cli`` and the system tests use it; so may any local
automation. Requests name an ``op``; the daemon supplies the handlers, so this module only frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from typing import Any

from ikegate.mgmt.client import request as request  # the blocking client call, kept importable from here

log = logging.getLogger("ikegate.control")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]] | dict[str, Any]]
MAX_LINE = 1 << 20


MAX_DEPTH = 32  # JSON nesting of a request: ours are two levels deep; a deep one would exhaust the stack


async def _read_line(reader: asyncio.StreamReader) -> bytes | None:
    """The next line (empty at the end of the stream). A line longer than :data:`MAX_LINE` is read
    through and dropped, and None returned, so the client gets an error and the next line starts where
    it should."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial
    except asyncio.LimitOverrunError:
        pass
    while True:
        try:
            await reader.readuntil(b"\n")
            return None
        except asyncio.IncompleteReadError:
            return b""
        except asyncio.LimitOverrunError as exc:
            await reader.readexactly(exc.consumed)


def too_deep(data: bytes) -> bool:
    """Whether ``[``/``{`` nest deeper than :data:`MAX_DEPTH` in a JSON text (brackets inside strings do
    not count): checked before parsing, because the parser recurses once per level."""
    if data.count(b"[") + data.count(b"{") <= MAX_DEPTH:
        return False  # cannot nest deeper than there are brackets: skip the scan
    depth = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > MAX_DEPTH:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


class ControlPathError(OSError):
    """The control socket's path holds something we must not replace."""


def clear_stale_socket(path: str) -> None:
    """Make room for a new control socket at ``path``, refusing unless what is there is a stale socket.

    A regular file, directory, link or device at ``path`` is someone else's: a typo in ``--control``
    must never destroy it. A socket someone answers on belongs to a running gateway (or another
    program): taking it over would leave that one unreachable. Only a socket nobody listens on (left by
    a gateway that died) is removed.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ControlPathError(f"control socket path {path} exists and is not a socket; refusing to replace it")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            pass  # stale: nobody listens
        except OSError as exc:
            raise ControlPathError(f"control socket path {path}: cannot tell whether it is in use "
                                   f"({exc.strerror or exc}); refusing to replace it") from exc
        else:
            raise ControlPathError(f"control socket {path} is in use (another gateway is running?); "
                                   "refusing to replace it")
    os.unlink(path)


Attach = Callable[[asyncio.StreamReader, asyncio.StreamWriter, dict[str, Any]], Awaitable[None]]


class ControlServer:
    """``attach`` turns a connection into a raw terminal stream (``ikegate cli`` without ``-c``)."""

    def __init__(self, path: str, handlers: dict[str, Handler], attach: Attach | None = None) -> None:
        self.path = path
        self.handlers = handlers
        self.attach = attach
        self._server: asyncio.AbstractServer | None = None
        self._ours: tuple[int, int] | None = None  # (device, inode) of the socket this server created

    async def start(self) -> None:
        """Listen on :attr:`path`. Raises :class:`ControlPathError` when something other than a stale
        socket is there (see :func:`clear_stale_socket`)."""
        clear_stale_socket(self.path)
        old = os.umask(0o177)  # the socket is born 0600: only its owner may drive the gateway
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=self.path, limit=MAX_LINE)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        st = os.lstat(self.path)
        self._ours = (st.st_dev, st.st_ino)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        # Only the socket we made: if someone replaced it meanwhile, what is there now is not ours.
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(self.path)
            if self._ours == (st.st_dev, st.st_ino) and stat.S_ISSOCK(st.st_mode):
                os.unlink(self.path)
        self._ours = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (line := await _read_line(reader)) != b"":
                if line is None:
                    writer.write(json.dumps({"ok": False, "error": f"request longer than {MAX_LINE} bytes"})
                                 .encode() + b"\n")
                    await writer.drain()
                    continue
                try:
                    request = parse_request(line)
                except ValueError as exc:
                    answer: dict[str, Any] = {"ok": False, "error": str(exc)}
                else:
                    if self.attach is not None and request.get("op") == "attach":
                        writer.write(b'{"ok": true}\n')
                        await writer.drain()
                        await self.attach(reader, writer, request)
                        return
                    answer = await self._dispatch(request)
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    async def _dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            handler = self.handlers.get(str(request.get("op")))
            if handler is None:
                return {"ok": False, "error": f"unknown op {request.get('op')!r}"}
            result = handler(request)
            if asyncio.iscoroutine(result):
                result = await result
            assert isinstance(result, dict)
            return {"ok": True, **result}
        except (ValueError, TypeError, KeyError) as exc:
            return {"ok": False, "error": str(exc)}
        except Exception as exc:  # a handler bug must not kill the daemon
            log.exception("control request failed")
            return {"ok": False, "error": f"internal error: {exc}"}


def parse_request(line: bytes) -> dict[str, Any]:
    """One request line as an object; ``ValueError`` (with the reason to answer) for anything else."""
    if too_deep(line):
        raise ValueError(f"request nested deeper than {MAX_DEPTH} levels")
    try:
        request = json.loads(line)
    except RecursionError as exc:  # not reachable past too_deep; kept so no input can raise it here
        raise ValueError("request nested too deeply") from exc
    if not isinstance(request, dict):
        raise ValueError("request must be an object")
    return request

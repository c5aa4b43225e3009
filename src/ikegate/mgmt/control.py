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
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("ikegate.control")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]] | dict[str, Any]]
MAX_LINE = 1 << 20


Attach = Callable[[asyncio.StreamReader, asyncio.StreamWriter, dict[str, Any]], Awaitable[None]]


class ControlServer:
    """``attach`` turns a connection into a raw terminal stream (``ikegate cli`` without ``-c``)."""

    def __init__(self, path: str, handlers: dict[str, Handler], attach: Attach | None = None) -> None:
        self.path = path
        self.handlers = handlers
        self.attach = attach
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        old = os.umask(0o177)  # the socket is born 0600: only its owner may drive the gateway
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=self.path, limit=MAX_LINE)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                if self.attach is not None and line.startswith(b'{"op": "attach"'):
                    writer.write(b'{"ok": true}\n')
                    await writer.drain()
                    await self.attach(reader, writer, json.loads(line))
                    return
                answer = await self._dispatch(line)
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    async def _dispatch(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("request must be an object")
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


def request(path: str, message: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """A blocking client call (for ``ikegate cli`` and tests)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps(message).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    answer = json.loads(buf)
    assert isinstance(answer, dict)
    return answer

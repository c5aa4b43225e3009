"""``ikegate cli``: the VRP shell of a running gateway, through its control socket.

With ``-c`` the commands run in order as if typed from user view; the transcript is printed and the exit
status is 1 if any command printed an ``Error:`` line. Without ``-c`` the terminal is attached to a live
session (raw mode; ``quit`` in user view ends it).

``ikegate cli -c`` is what scripts and the benchmarks run in a loop, so this module imports only the
standard library it needs for one request: the server side (:mod:`ikegate.mgmt.control`), asyncio and
the terminal code come in only for an interactive session (``tests/unit/test_client_imports.py``).
"""

from __future__ import annotations

import json
import socket
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse


def request(path: str, message: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
    """A blocking client call of the control socket (for ``ikegate cli``, tests and benchmarks)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(json.dumps(message).encode() + b"\n")
        parts: list[bytes] = []  # joined once: a 100,000-row answer is megabytes (no quadratic +=)
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            parts.append(chunk)
            if chunk.endswith(b"\n"):
                break
    answer = json.loads(b"".join(parts))
    assert isinstance(answer, dict)
    return answer


def main(args: argparse.Namespace) -> int:
    if args.commands:
        try:
            answer = request(args.control, {"op": "shell", "lines": args.commands})
        except OSError as exc:
            print(f"ikegate: cannot reach {args.control}: {exc}", file=sys.stderr)
            return 2
        if not answer.get("ok"):
            print(f"ikegate: {answer.get('error')}", file=sys.stderr)
            return 2
        sys.stdout.write(answer["output"])
        return 1 if answer["error"] else 0
    import asyncio

    try:
        return asyncio.run(_interactive(args.control))
    except OSError as exc:
        print(f"ikegate: cannot reach {args.control}: {exc}", file=sys.stderr)
        return 2


async def _interactive(path: str) -> int:
    import asyncio

    from ikegate.mgmt.terminal import pump_stdin, write_out

    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(b'{"op": "attach"}\n')
    await writer.drain()
    await reader.readline()

    async def to_gateway(data: bytes) -> bool:
        writer.write(data)
        await writer.drain()
        return True

    async def from_gateway() -> None:
        while chunk := await reader.read(4096):
            write_out(chunk)

    output = asyncio.ensure_future(from_gateway())
    typing = asyncio.ensure_future(pump_stdin(to_gateway))
    await asyncio.wait({output, typing}, return_when=asyncio.FIRST_COMPLETED)
    typing.cancel()
    writer.close()
    write_out(b"\r\n")
    return 0

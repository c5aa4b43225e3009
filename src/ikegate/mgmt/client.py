"""``ikegate cli``: the VRP shell of a running gateway, through its control socket.

With ``-c`` the commands run in order as if typed from user view; the transcript is printed and the exit
status is 1 if any command printed an ``Error:`` line. Without ``-c`` the terminal is attached to a live
session (raw mode; ``quit`` in user view ends it).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from ikegate.mgmt.control import request
from ikegate.mgmt.terminal import pump_stdin, write_out


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
    try:
        return asyncio.run(_interactive(args.control))
    except OSError as exc:
        print(f"ikegate: cannot reach {args.control}: {exc}", file=sys.stderr)
        return 2


async def _interactive(path: str) -> int:
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

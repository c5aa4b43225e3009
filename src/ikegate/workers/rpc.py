"""The supervisor's wire to its workers: length-prefixed frames over a socketpair.

Each frame is a 4-byte big-endian length and a pickled tuple. Pickle, not JSON, because what crosses is the
Device seam's plain data (SA rows, :class:`~ikegate.gateway.device.Statistics`, configurations) and both
ends are the same program started by the supervisor itself over a socketpair nobody else holds: there is
no untrusted reader or writer on this channel.

Two channels per worker:

* **call** (:class:`Channel`): blocking request/answer, used from the supervisor's event loop thread for
  the short operations the CLI makes synchronously (``display``, ``reset``, statistics, configuration).
  :func:`gather` sends one request to several workers before reading any answer, so a fan-out costs the
  slowest worker, not the sum.
* **async** (:class:`AsyncChannel`): multiplexed by request id, for what takes long (``ping``, the
  shutdown) and for what the worker says unprompted (log records, id 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import pickle
import select
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["AsyncChannel", "Channel", "WorkerGone", "gather", "read_frame", "write_frame"]

_LEN = struct.Struct(">I")
MAX_FRAME = 1 << 30
CALL_TIMEOUT = 60.0


class WorkerGone(Exception):
    """The worker's end closed or did not answer in time: it is dead or stuck; the supervisor restarts it."""


def encode(message: object) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(body)) + body


def _recv_exact(sock: socket.socket, n: int, deadline: float) -> bytes:
    parts: list[bytes] = []
    while n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise WorkerGone("no answer in time")
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            continue
        try:
            chunk = sock.recv(min(n, 1 << 20))
        except (BlockingIOError, InterruptedError):
            continue
        except OSError as exc:
            raise WorkerGone(str(exc)) from exc
        if not chunk:
            raise WorkerGone("channel closed")
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def read_frame(sock: socket.socket, deadline: float) -> Any:
    (length,) = _LEN.unpack(_recv_exact(sock, _LEN.size, deadline))
    if length > MAX_FRAME:
        raise WorkerGone(f"frame of {length} bytes")
    return pickle.loads(_recv_exact(sock, length, deadline))


def write_frame(sock: socket.socket, message: object) -> None:
    try:
        sock.sendall(encode(message))
    except OSError as exc:
        raise WorkerGone(str(exc)) from exc


class Channel:
    """The supervisor's blocking end of one worker's call channel."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self.sock = sock

    def send(self, op: str, *args: Any) -> None:
        write_frame(self.sock, (op, args))

    def receive(self, timeout: float = CALL_TIMEOUT) -> Any:
        status, value = read_frame(self.sock, time.monotonic() + timeout)
        if status == "error":
            raise RuntimeError(value)
        return value

    def call(self, op: str, *args: Any, timeout: float = CALL_TIMEOUT) -> Any:
        self.send(op, *args)
        return self.receive(timeout)

    def close(self) -> None:
        self.sock.close()


def gather(channels: Sequence[Channel], op: str, *args: Any,
           on_gone: Callable[[int, WorkerGone], None] | None = None,
           each: Sequence[tuple[Any, ...]] | None = None) -> list[Any]:
    """``op`` on every channel at once (with ``args``, or channel i with ``each[i]``); the answers in channel
    order. A worker that is gone answers None (``on_gone`` hears which); the others' answers are still
    read, so no channel is left out of step. If the operation failed on a worker, RuntimeError (its
    message) once every answer is in."""
    sent: list[bool] = []
    for i, channel in enumerate(channels):
        try:
            channel.send(op, *(args if each is None else each[i]))
            sent.append(True)
        except WorkerGone as exc:
            sent.append(False)
            if on_gone is not None:
                on_gone(i, exc)
    out: list[Any] = []
    failure: RuntimeError | None = None
    for i, channel in enumerate(channels):
        if not sent[i]:
            out.append(None)
            continue
        try:
            out.append(channel.receive())
        except WorkerGone as exc:
            out.append(None)
            if on_gone is not None:
                on_gone(i, exc)
        except RuntimeError as exc:  # the operation failed there: read the others first, then say so
            out.append(None)
            failure = failure or exc
    if failure is not None:
        raise failure
    return out


class AsyncChannel:
    """One end of an async channel in an event loop: requests by id, answers resolve their futures,
    anything else (a request from the other end, or an unsolicited message with id 0) goes to ``on_message``
with its id, which :meth:`post` answers with. Used by both the supervisor and the worker."""

    def __init__(self, sock: socket.socket, on_message: Callable[[int, Any], None],
                 on_closed: Callable[[], None] | None = None) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._on_message = on_message
        self._on_closed = on_closed
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next = 1
        self._buf = bytearray()
        self._out = bytearray()
        self._writing = False
        self._soon = False  # a write is scheduled for the end of this pass of the loop
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)
        self.closed = False

    def _readable(self) -> bool:
        """Take in what arrived; False when nothing had (the other end's next words are not there yet)."""
        try:
            data = self.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if not data:
            self.close()
            return True
        self._buf += data
        while len(self._buf) >= _LEN.size:
            (length,) = _LEN.unpack_from(self._buf)
            if len(self._buf) < _LEN.size + length:
                break
            message = pickle.loads(bytes(self._buf[_LEN.size:_LEN.size + length]))
            del self._buf[:_LEN.size + length]
            ident, body = message
            fut = self._pending.pop(ident, None) if ident else None
            if fut is None:
                self._on_message(ident, body)
            elif not fut.done():
                fut.set_result(body)
        return True

    def read_rest(self) -> None:
        """Take in at once everything the other end sent and nobody read yet, up to its end if it is gone
        (a dead worker's last messages stay in the socket after its process ended)."""
        while not self.closed and self._readable():
            pass

    def post(self, body: object, ident: int = 0) -> None:
        """Send without waiting and without ever blocking: what the socket does not take now waits here and
        goes out when it is writable. Blocking would deadlock: the other end may itself be blocked in a
        call on the other channel (a reset whose hundreds of log records fill this socket while the
        supervisor waits for the reset's answer).

        Messages posted by the callbacks of one pass of the event loop leave together in one ``send`` (order
        kept), early in the next pass: a send per message wakes the other process each time, and on a
        machine whose cores are busy each wake-up preempts the sender. A worker setting up SAs posts
        several messages per SA."""
        if self.closed:
            return
        self._out += encode((ident, body))
        if not self._writing and not self._soon:
            self._soon = True
            self._loop.call_soon(self._write)

    def send_now(self) -> None:
        """What is posted leaves now, not at the end of the pass: for a record that must be in the kernel's
        buffer before what this pass sends next (see :meth:`ikegate.workers.worker.Worker._report`)."""
        if self._out and not self._writing and not self.closed:
            self._write()

    def _write(self) -> None:
        self._soon = False
        if not self._out and not self._writing:
            return
        if self.closed:
            return
        try:
            sent = self.sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close()
            return
        del self._out[:sent]
        if self._out and not self._writing:
            self._writing = True
            self._loop.add_writer(self.sock.fileno(), self._write)
        elif not self._out and self._writing:
            self._writing = False
            self._loop.remove_writer(self.sock.fileno())

    async def drain(self, timeout: float = 5.0) -> None:
        """Until everything posted has gone out (a worker's last log records and answer before it exits)."""
        deadline = self._loop.time() + timeout
        while self._out and not self.closed and self._loop.time() < deadline:
            await asyncio.sleep(0.005)

    async def request(self, body: object, timeout: float = CALL_TIMEOUT) -> Any:
        if self.closed:
            raise WorkerGone("channel closed")
        ident = self._next
        self._next += 1
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._pending[ident] = fut
        self.post(body, ident)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError as exc:
            raise WorkerGone("no answer in time") from exc
        finally:
            self._pending.pop(ident, None)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(self.sock.fileno())
            if self._writing:
                self._loop.remove_writer(self.sock.fileno())
        self.sock.close()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(WorkerGone("channel closed"))
        self._pending.clear()
        if self._on_closed is not None:
            self._on_closed()

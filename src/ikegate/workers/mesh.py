"""The workers' direct path for protected-side packets: one datagram socketpair per worker.

A TUN queue gives a flow to whichever worker the kernel picks; when that worker does not hold the flow's
SA, the packet must reach the one that does. Through the supervisor that costs two hops and two pickled
frames per packet (it was slower with two workers than with one, docs/workers.md); here the reader sends the
raw packet, one datagram, straight to the owner's inbox.

The supervisor makes, for each worker ``j``, a connected ``AF_UNIX``/``SOCK_DGRAM`` pair: the receiving
end goes to worker ``j`` only, the sending end to every other worker (a datagram send is atomic, so they
share it). A connected pair has no ``max_dgram_qlen`` limit (the kernel applies it only to senders that are
not the receiver's peer): what bounds the inbox is the sending end's buffer, made large here. Sends never
block: a full inbox (a stuck or restarting owner) drops the packet and counts it. The supervisor keeps both
ends of every pair, so a restarted worker gets its inbox back and the others' sending ends stay valid:
nothing has to be passed to the running workers.

The mesh also carries WAN datagrams one worker received for another (an opening of a peer the other owns, or
one the kernel steered by the first segment of a batch): :func:`wan_frame` puts a zero byte and the two
addresses in front, which no IP packet (version 4 or 6 in its first nibble) can be mistaken for.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Mesh", "MeshEnds", "parse_spec", "parse_wan", "wan_frame"]

#: Bytes queued per inbox before senders drop (about 2,700 full-size packets; the kernel caps it at
#: ``net.core.wmem_max`` unless we are root, then the forcing option applies).
INBOX_BYTES = 4 << 20


def _sized(sock: socket.socket, option: int, forced: int, size: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, forced, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, option, size)


class Mesh:
    """The supervisor's side: both ends of every worker's inbox pair, for the life of the device."""

    def __init__(self, workers: int) -> None:
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        for _ in range(workers):
            rx, tx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
            for sock in (rx, tx):
                sock.setblocking(False)
            _sized(tx, socket.SO_SNDBUF, getattr(socket, "SO_SNDBUFFORCE", 32), INBOX_BYTES)
            _sized(rx, socket.SO_RCVBUF, getattr(socket, "SO_RCVBUFFORCE", 33), INBOX_BYTES)
            self.pairs.append((rx, tx))

    def fds(self, index: int) -> tuple[int, list[int]]:
        """Worker ``index``'s inbox and the sending ends of the others' (-1 in its own place)."""
        return self.pairs[index][0].fileno(), [tx.fileno() if j != index else -1
                                               for j, (_, tx) in enumerate(self.pairs)]

    def spec(self, index: int) -> str:
        """The command-line form :func:`parse_spec` reads."""
        rx, txs = self.fds(index)
        return f"{rx}:{','.join(map(str, txs))}"

    def close(self) -> None:
        for rx, tx in self.pairs:
            rx.close()
            tx.close()
        self.pairs = []


@dataclass
class MeshEnds:
    """A worker's side: its inbox and the others' sending ends (None in its own place)."""

    inbox: socket.socket
    outs: Sequence[socket.socket | None]
    sent: int = 0

    def send(self, owner: int, packet: bytes) -> bool | None:
        """True: on its way; False: the owner's inbox is full (dropped); None: no direct path."""
        out = self.outs[owner] if 0 <= owner < len(self.outs) else None
        if out is None:
            return None
        try:
            out.send(packet, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return None
        self.sent += 1
        return True


Addr = tuple[str, int]
WAN = b"\0"


def wan_frame(data: bytes, local: Addr, remote: Addr) -> bytes:
    """A WAN datagram for another worker's :func:`parse_wan` (addresses as text: no pickling per packet)."""
    return WAN + f"{local[0]} {local[1]} {remote[0]} {remote[1]}".encode() + WAN + data


def parse_wan(frame: bytes) -> tuple[bytes, Addr, Addr] | None:
    """The datagram and its local and remote addresses, or None for anything that is not a good frame."""
    end = frame.find(WAN, 1)
    try:
        la, lp, ra, rp = frame[1:end].decode().split(" ")
        return frame[end + 1:], (la, int(lp)), (ra, int(rp))
    except ValueError:  # also UnicodeDecodeError; a bad frame is dropped, never a crash
        return None


def parse_spec(spec: str) -> MeshEnds:
    inbox, outs = spec.split(":", 1)
    rx = socket.socket(fileno=int(inbox))
    rx.setblocking(False)
    return MeshEnds(rx, [None if fd == "-1" else socket.socket(fileno=int(fd)) for fd in outs.split(",")])

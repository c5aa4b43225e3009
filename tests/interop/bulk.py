"""Bulk TCP transfers run inside the namespaces, checked byte for byte: ``python bulk.py serve PORT`` and
``python bulk.py put|get HOST PORT SIZE``.

The data is a function of its size (a seeded generator), so both ends know what must arrive: ``put`` sends
it and the server answers the SHA-256 of what it received; ``get`` asks for it and compares every byte.
The client exits 0 exactly when the transfer was exact.
"""

from __future__ import annotations

import hashlib
import random
import socket
import struct
import sys
import threading


def data(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def _recv_all(conn: socket.socket) -> bytes:
    chunks = []
    while chunk := conn.recv(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _handle(conn: socket.socket) -> None:
    with conn:
        op, size = struct.unpack("!cQ", conn.recv(9, socket.MSG_WAITALL))
        if op == b"G":
            conn.sendall(data(size))
        else:
            conn.sendall(hashlib.sha256(_recv_all(conn)).digest())


def serve(port: int) -> None:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("::", port))
    sock.listen(16)
    print("ready", flush=True)
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=_handle, args=(conn,), daemon=True).start()


def client(op: str, host: str, port: int, size: int) -> int:
    want = data(size)
    with socket.create_connection((host, port), timeout=60) as conn:
        if op == "put":
            conn.sendall(struct.pack("!cQ", b"P", size) + want)
            conn.shutdown(socket.SHUT_WR)
            return 0 if _recv_all(conn) == hashlib.sha256(want).digest() else 1
        conn.sendall(struct.pack("!cQ", b"G", size))
        got = _recv_all(conn)
    print(f"got {len(got)} of {size} bytes, exact: {got == want}")
    return 0 if got == want else 1


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    else:
        sys.exit(client(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))

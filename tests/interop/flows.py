"""TCP and UDP end points run inside the namespaces: ``python flows.py serve`` and ``python flows.py probe``.

A script rather than ``nc`` because netcat variants disagree on flags and exit codes; this one prints
nothing and exits 0 exactly when an echo came back.

    python flows.py serve PORT [PORT ...]          echo TCP and UDP on each port, both families, until killed
    python flows.py probe tcp|udp HOST PORT [TIMEOUT]
"""

from __future__ import annotations

import selectors
import socket
import sys

PAYLOAD = b"ikegate-interop-probe"


def serve(ports: list[int]) -> None:
    sel = selectors.DefaultSelector()
    for port in ports:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            sock = socket.socket(socket.AF_INET6, kind)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # IPv4 too, as mapped addresses
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("::", port))
            if kind == socket.SOCK_STREAM:
                sock.listen(16)
            sel.register(sock, selectors.EVENT_READ, kind)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data == socket.SOCK_DGRAM:
                data, addr = sock.recvfrom(65535)
                sock.sendto(data, addr)
                continue
            conn, _addr = sock.accept()
            conn.settimeout(5)
            try:
                data = conn.recv(65535)
                conn.sendall(data)
            except OSError:
                pass
            finally:
                conn.close()


def probe(proto: str, host: str, port: int, timeout: float) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(family, kind) as sock:
        sock.settimeout(timeout)
        try:
            if kind == socket.SOCK_STREAM:
                sock.connect((host, port))
                sock.sendall(PAYLOAD)
                data = sock.recv(65535)
            else:
                # UDP: repeat the datagram now and then, the first ones may wait for a tunnel.
                sock.connect((host, port))
                data = b""
                for _ in range(max(1, int(timeout))):
                    sock.send(PAYLOAD)
                    sock.settimeout(1.0)
                    try:
                        data = sock.recv(65535)
                        break
                    except TimeoutError:
                        continue
        except OSError:
            return 1
    return 0 if data == PAYLOAD else 1


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        serve([int(p) for p in argv[1:]])
        return 0
    if argv[:1] == ["probe"] and len(argv) >= 4:
        return probe(argv[1], argv[2], int(argv[3]), float(argv[4]) if len(argv) > 4 else 5.0)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

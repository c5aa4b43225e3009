"""Hostile traffic towards a gateway, run inside an attacker namespace: ``python -m tests.interop.hostile``.

    python -m tests.interop.hostile TARGET SPOOF_PREFIX COUNT

sends, to TARGET's UDP 500 and 4500, ``COUNT`` rounds of: random junk, truncated and oversized IKE
headers, IKE_SA_INIT requests with fresh SPIs (real ones, made by ikegate's own engine with the
proposal the gateway accepts) from this namespace's address and, over a raw socket, from spoofed
addresses of ``SPOOF_PREFIX`` (a /24), and ESP-in-UDP with unknown SPIs. Prints one line,
``sent N``, and exits 0.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import struct
import sys

from ikegate.ike.v2.sa import IkeSa
from tests.protocol.harness import child, ike

NON_ESP = bytes(4)  # RFC 3948: IKE on 4500 starts with four zero bytes


def opening(target: str) -> bytes:
    """A real IKE_SA_INIT request (aes-cbc-256, sha2-256, x25519: the gateway's proposal 10)."""
    sa = IkeSa(ike(local_id="198.51.100.66"), initiator=True, local=("198.51.100.66", 500), peer=(target, 500), now=0.0)
    sa.initiate(0.0, child())
    return sa.datagrams_to_send()[0][0]


def _ipv4_udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload  # checksum 0: none (IPv4)
    total = 20 + len(udp)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, random.getrandbits(16), 0, 64, socket.IPPROTO_UDP, 0,
                         socket.inet_aton(src), socket.inet_aton(dst))
    csum = sum(struct.unpack("!10H", header))
    csum = (csum >> 16) + (csum & 0xFFFF)
    csum = ~(csum + (csum >> 16)) & 0xFFFF
    return header[:10] + struct.pack("!H", csum) + header[12:] + udp


def main(argv: list[str]) -> int:
    target, prefix, count = argv[0], ipaddress.ip_network(argv[1]), int(argv[2])
    rnd = random.Random(1)
    init = opening(target)
    sent = 0
    udp = {port: socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for port in (500, 4500)}
    for port, s in udp.items():
        s.bind(("", port))
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    hosts = list(prefix.hosts())

    def both(data: bytes) -> None:
        nonlocal sent
        udp[500].sendto(data, (target, 500))
        udp[4500].sendto(NON_ESP + data, (target, 4500))
        sent += 2

    for _ in range(count):
        both(rnd.randbytes(rnd.randint(1, 300)))  # junk
        both(init[:rnd.randint(1, len(init) - 1)])  # truncated
        big = bytearray(init + rnd.randbytes(3000))  # oversized: header length claims it all
        big[24:28] = len(big).to_bytes(4, "big")
        both(bytes(big))
        liar = bytearray(init)  # a header length past the datagram's end
        liar[24:28] = (len(init) + 500).to_bytes(4, "big")
        both(bytes(liar))
        both(rnd.randbytes(8) + init[8:])  # a fresh IKE_SA_INIT from us
        # ESP in UDP with unknown SPIs (and a zero-length one, and a keepalive)
        udp[4500].sendto(rnd.randbytes(4) + rnd.randbytes(8) + rnd.randbytes(64), (target, 4500))
        udp[4500].sendto(b"\xff", (target, 4500))
        sent += 2
        for _ in range(4):  # IKE_SA_INIT floods from spoofed sources, both ports
            src = str(rnd.choice(hosts))
            raw.sendto(_ipv4_udp(src, target, 500, 500, rnd.randbytes(8) + init[8:]), (target, 0))
            raw.sendto(_ipv4_udp(src, target, 4500, 4500, NON_ESP + rnd.randbytes(8) + init[8:]), (target, 0))
            sent += 2
    print(f"sent {sent}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

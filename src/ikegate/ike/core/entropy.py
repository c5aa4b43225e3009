"""Random bytes from the kernel, drawn in blocks.

A responder draws random bytes seven times per IKE SA (SPIs, nonce, IVs, lifetime jitter), each a
``getrandom`` system call when taken from :func:`os.urandom` one by one; on a virtual machine that was
a few percent of the CPU per SA. :class:`UrandomPool` takes them from the kernel 4 kB at a time and
hands them out in order, each byte once. The bytes are the kernel's CSPRNG output, unchanged; a forked
child starts with an empty pool (``os.register_at_fork``), so parent and child never hand out the same
bytes (worker processes are forked).
"""

from __future__ import annotations

import os
import weakref

BLOCK = 4096


class UrandomPool:
    """``pool(n)`` → ``n`` random bytes, like :func:`os.urandom`."""

    __slots__ = ("__weakref__", "_buf", "_pos")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0
        ref = weakref.ref(self)

        def forked() -> None:
            pool = ref()
            if pool is not None:
                pool.clear()

        os.register_at_fork(after_in_child=forked)

    def clear(self) -> None:
        self._buf, self._pos = b"", 0

    def __call__(self, n: int) -> bytes:
        pos = self._pos
        end = pos + n
        if end > len(self._buf):
            if n > BLOCK // 4:
                return os.urandom(n)  # large requests are rare: straight from the kernel
            self._buf, pos, end = os.urandom(BLOCK), 0, n
        self._pos = end
        return self._buf[pos:end]


#: The process's pool (engines and the gateway default to it).
urandom_pool = UrandomPool()

__all__ = ["UrandomPool", "urandom_pool"]

"""The urandom pool hands out each kernel byte once, and a forked child never repeats its parent's bytes."""

from __future__ import annotations

import os

from ikegate.ike.core.entropy import BLOCK, UrandomPool


def test_pool_draws_are_fresh_bytes_of_the_asked_length() -> None:
    pool = UrandomPool()
    draws = [pool(n) for n in (8, 32, 2, 4, 8) * 200]  # crosses several 4 kB blocks
    assert [len(d) for d in draws] == [n for n in (8, 32, 2, 4, 8) * 200]
    long = [d for d in draws if len(d) >= 8]
    assert len(set(long)) == len(long)  # no 8+ byte draw repeats (chance of a collision: ~2^-50)
    big = pool(BLOCK)  # larger than a quarter block: straight from the kernel
    assert len(big) == BLOCK and big != pool(BLOCK)


def test_forked_child_starts_with_an_empty_pool() -> None:
    pool = UrandomPool()
    pool(16)  # the pool now holds bytes a child would otherwise inherit
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        os.write(write, pool(16))
        os._exit(0)
    os.close(write)
    child = os.read(read, 16)
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 16 and child != pool(16)

"""The process's own CPU and memory figures for ``display cpu-usage`` and ``display memory-usage``.

Why a sampler: a USG reports its CPU as averages over five seconds, one minute and five minutes and the
highest figure seen; one reading of ``process_time`` says nothing about a window. The daemon's existing
one-second tick calls :meth:`CpuSampler.tick`, which keeps one (monotonic, CPU seconds) pair every
:data:`SAMPLE_INTERVAL` in a ring just long enough for five minutes; a display compares the present
reading with the sample that covers its window. Both clocks are injected so tests step them by hand.

With placement workers (``ikegate run --workers N``) the device is several processes: the supervisor reads
each worker's CPU seconds and resident set from ``/proc/PID`` (:class:`WorkerSamplers`), without asking the
workers anything, so a busy worker is measured, not delayed.

Memory comes from ``/proc`` (Linux): the system's total and available memory from ``/proc/meminfo``
and this process's resident set from ``/proc/self/status``; the parsers are pure functions of text.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

SAMPLE_INTERVAL = 5.0  # seconds between kept samples (the shortest window)
WINDOWS = (5.0, 60.0, 300.0)  # five seconds, one minute, five minutes
#: Enough samples that the oldest is at least five minutes old (plus the one being overtaken).
RING = int(WINDOWS[-1] / SAMPLE_INTERVAL) + 2


def _percent(cpu: float, elapsed: float) -> float:
    """CPU seconds over wall seconds as a percentage, kept to 0..100 (threads may exceed one core)."""
    if elapsed <= 0:
        return 0.0
    return min(100.0, max(0.0, 100.0 * cpu / elapsed))


@dataclass(frozen=True, slots=True)
class CpuUsage:
    """One reading: the averages over :data:`WINDOWS` (percent), the highest five-second figure and the
    monotonic time it was measured at (before the first full interval: the present figure, now)."""

    five_seconds: float
    one_minute: float
    five_minutes: float
    max: float
    max_at: float
    at: float


@dataclass
class CpuSampler:
    """A bounded ring of (monotonic, CPU seconds) samples of this process, taken by :meth:`tick`."""

    monotonic: Callable[[], float] = time.monotonic
    cpu: Callable[[], float] = time.process_time
    interval: float = SAMPLE_INTERVAL
    samples: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=RING))
    max: float = 0.0
    max_at: float | None = None

    def __post_init__(self) -> None:
        if not self.samples:
            self.samples.append((self.monotonic(), self.cpu()))

    def tick(self) -> None:
        """Cheap enough for a one-second loop: a sample only when ``interval`` has passed since the last."""
        now = self.monotonic()
        last_t, last_cpu = self.samples[-1]
        if now - last_t < self.interval:
            return
        cpu = self.cpu()
        figure = _percent(cpu - last_cpu, now - last_t)
        if self.max_at is None or figure > self.max:
            self.max, self.max_at = figure, now
        self.samples.append((now, cpu))

    def _average(self, window: float, now: float, cpu: float) -> float:
        """Over the newest sample at least ``window`` old; over all there is when none is that old yet."""
        base_t, base_cpu = self.samples[0]
        for t, c in self.samples:
            if now - t < window:
                break
            base_t, base_cpu = t, c
        return _percent(cpu - base_cpu, now - base_t)

    def usage(self) -> CpuUsage:
        now, cpu = self.monotonic(), self.cpu()
        five, minute, five_min = (self._average(w, now, cpu) for w in WINDOWS)
        if self.max_at is None:  # no full interval yet: the highest figure is the only one there is
            return CpuUsage(five, minute, five_min, five, now, now)
        return CpuUsage(five, minute, five_min, self.max, self.max_at, now)


@dataclass(frozen=True, slots=True)
class MemoryUsage:
    """Bytes: the system's total and available memory, and this process's resident set."""

    total: int
    available: int
    rss: int

    @property
    def used(self) -> int:
        return max(0, self.total - self.available)

    @property
    def percent(self) -> int:
        return round(100 * self.used / self.total) if self.total else 0


def _kib_field(text: str, name: str) -> int:
    """``Name:   1234 kB`` -> 1234 * 1024; KeyError when the field is missing."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            number, *unit = value.split()
            return int(number) * (1024 if unit == ["kB"] else 1)
    raise KeyError(name)


def parse_memory(meminfo: str, status: str) -> MemoryUsage:
    """From the text of ``/proc/meminfo`` and ``/proc/self/status``. Kernels before 3.14 lack
    ``MemAvailable``: then free + buffers + cached stands in for it."""
    total = _kib_field(meminfo, "MemTotal")
    try:
        available = _kib_field(meminfo, "MemAvailable")
    except KeyError:
        available = sum(_kib_field(meminfo, k) for k in ("MemFree", "Buffers", "Cached"))
    return MemoryUsage(total, available, _kib_field(status, "VmRSS"))


def read_memory(meminfo: str = "/proc/meminfo", status: str = "/proc/self/status") -> MemoryUsage:
    """The figures now; OSError or ValueError/KeyError where ``/proc`` is absent or unreadable."""
    with open(meminfo, encoding="ascii") as f:
        info = f.read()
    with open(status, encoding="ascii", errors="replace") as f:
        own = f.read()
    return parse_memory(info, own)


def parse_stat_cpu(stat: str, ticks: int) -> float:
    """CPU seconds (user + system) from the text of ``/proc/PID/stat``: fields 14 and 15, counted after
    the command name's closing parenthesis (the name may hold spaces and parentheses)."""
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / ticks


def process_cpu(pid: int) -> float:
    """Process ``pid``'s CPU seconds now; OSError when it is gone."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
        return parse_stat_cpu(f.read(), os.sysconf("SC_CLK_TCK"))


def process_rss(pid: int) -> int:
    """Process ``pid``'s resident set in bytes; OSError when it is gone."""
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
        return _kib_field(f.read(), "VmRSS")


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass
class WorkerSamplers:
    """One :class:`CpuSampler` per worker process (by process id; a restarted worker is a new one) and one
    for the whole device: the supervisor and every worker, as a share of the cores they may use (so
    100 % means every core busy). :meth:`tick` takes the running workers from the device each time;
    a worker that ended leaves its last reading in the total, which therefore never runs backwards."""

    monotonic: Callable[[], float] = time.monotonic
    own_cpu: Callable[[], float] = time.process_time
    pid_cpu: Callable[[int], float] = process_cpu
    cores: int = field(default_factory=usable_cores)
    samplers: dict[int, CpuSampler] = field(default_factory=dict)
    _last: dict[int, float] = field(default_factory=dict)
    _carried: float = 0.0
    total: CpuSampler = field(init=False)

    def __post_init__(self) -> None:
        self.total = CpuSampler(monotonic=self.monotonic, cpu=self._total_cpu)

    def _read(self, pid: int) -> float:
        with contextlib.suppress(OSError):  # gone since the device listed it: its last reading stands
            self._last[pid] = self.pid_cpu(pid)
        return self._last.get(pid, 0.0)

    def _total_cpu(self) -> float:
        return (self.own_cpu() + self._carried + sum(self._read(pid) for pid in self.samplers)) / self.cores

    def tick(self, pids: Sequence[int]) -> None:
        for gone in set(self.samplers).difference(pids):
            del self.samplers[gone]
            self._carried += self._last.pop(gone, 0.0)
        for pid in pids:
            if pid not in self.samplers:
                self._carried -= self._read(pid)  # the total counts a worker's CPU from when it was seen
                self.samplers[pid] = CpuSampler(monotonic=self.monotonic, cpu=functools.partial(self._read, pid))
        for sampler in self.samplers.values():
            sampler.tick()
        self.total.tick()

    def usage(self, pid: int) -> CpuUsage | None:
        sampler = self.samplers.get(pid)
        return None if sampler is None else sampler.usage()

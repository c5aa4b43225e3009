"""``display cpu-usage``, ``display memory-usage`` and ``display device``: the CPU averages from injected
clocks (no timing), the /proc parsers on fixed text, the layouts with fixed inputs, and each command
through an in-memory shell (abbreviation, filters, ``| json``)."""

from __future__ import annotations

import datetime as dt
import json
from importlib import resources
from typing import Any

import pytest

from ikegate.cli.commands.runtime import Runtime
from ikegate.cli.loader import load_config
from ikegate.cli.render import usage as render
from ikegate.cli.shell import Shell
from ikegate.gateway.device import make_device
from ikegate.gateway.local import LocalDevice
from ikegate.mgmt.usage import RING, CpuSampler, CpuUsage, MemoryUsage, WorkerSamplers, parse_memory, parse_stat_cpu
from ikegate.sad import Placement
from tests.conftest import device_shell, gateway_for, runtime_tree

WALL = dt.datetime(2026, 11, 28, 10, 20, 30, 123000)


class Clocks:
    """A monotonic clock and a CPU-seconds clock, both stepped by the test."""

    def __init__(self) -> None:
        self.t, self.cpu = 1000.0, 50.0

    def run(self, seconds: float, busy: float) -> None:
        """``seconds`` pass, of which the process spends ``busy`` (a fraction) on the CPU."""
        self.t += seconds
        self.cpu += seconds * busy

    def sampler(self) -> CpuSampler:
        return CpuSampler(monotonic=lambda: self.t, cpu=lambda: self.cpu)


def test_averages_over_the_three_windows_and_the_max() -> None:
    c = Clocks()
    s = c.sampler()
    for _ in range(48):  # four minutes at 10 %
        c.run(5, 0.10)
        s.tick()
    for _ in range(11):  # 55 s at 50 %
        c.run(5, 0.50)
        s.tick()
    c.run(5, 0.90)  # the last five seconds at 90 %
    s.tick()
    u = s.usage()
    assert u.five_seconds == pytest.approx(90)
    assert u.one_minute == pytest.approx((55 * 50 + 5 * 90) / 60)
    assert u.five_minutes == pytest.approx((240 * 10 + 55 * 50 + 5 * 90) / 300)
    assert (u.max, u.max_at) == (pytest.approx(90), c.t)
    assert len(s.samples) <= RING


def test_before_enough_samples_the_figures_cover_what_there_is() -> None:
    c = Clocks()
    s = c.sampler()
    c.run(2, 0.25)
    s.tick()  # under the interval: no sample kept
    assert len(s.samples) == 1
    u = s.usage()
    assert (u.five_seconds, u.one_minute, u.five_minutes) == (pytest.approx(25),) * 3
    assert (u.max, u.max_at) == (pytest.approx(25), c.t)  # no full interval yet: the present figure
    c.run(8, 0.25)
    s.tick()
    c.run(20, 0.75)
    assert s.usage().one_minute == pytest.approx((10 * 25 + 20 * 75) / 30)


def test_the_max_keeps_its_time_and_the_ring_is_bounded() -> None:
    c = Clocks()
    s = c.sampler()
    c.run(5, 0.8)
    s.tick()
    peak = c.t
    for _ in range(3 * RING):
        c.run(5, 0.05)
        s.tick()
    assert len(s.samples) == RING
    u = s.usage()
    assert (u.max, u.max_at) == (pytest.approx(80), peak)
    assert u.five_minutes == pytest.approx(5)


def test_figures_are_kept_to_0_100_and_no_time_is_no_load() -> None:
    c = Clocks()
    s = c.sampler()
    assert s.usage().five_seconds == 0  # no time has passed
    c.run(5, 2.0)  # two busy threads
    s.tick()
    assert s.usage().five_seconds == 100


MEMINFO = "MemTotal:        8000000 kB\nMemFree:         1000000 kB\nMemAvailable:    6000000 kB\nBuffers: 10 kB\n"
STATUS = "Name:\tikegate\nVmPeak:\t  90000 kB\nVmRSS:\t   51200 kB\nThreads:\t3\n"


def test_parse_memory() -> None:
    m = parse_memory(MEMINFO, STATUS)
    assert m == MemoryUsage(8000000 * 1024, 6000000 * 1024, 51200 * 1024)
    assert (m.used, m.percent) == (2000000 * 1024, 25)
    old = parse_memory("MemTotal: 100 kB\nMemFree: 10 kB\nBuffers: 5 kB\nCached: 25 kB\n", STATUS)
    assert old.available == 40 * 1024  # before MemAvailable existed
    with pytest.raises(KeyError):
        parse_memory(MEMINFO, "Name:\tx\n")


def test_cpu_layout() -> None:
    u = CpuUsage(12.4, 7.6, 3.0, 41.2, 700.0, 1000.0)
    assert render.cpu(u, WALL) == [
        "CPU Usage Stat. Cycle: 60 (Second)",
        "CPU Usage            : 12% Max: 41%",
        "CPU Usage Stat. Time : 2026-11-28 10:20:30",
        "CPU utilization for five seconds: 12%: one minute: 8%: five minutes: 3%",
        "Max CPU Usage Stat. Time : 2026-11-28 10:15:30",
    ]


def test_memory_layout() -> None:
    assert render.memory(parse_memory(MEMINFO, STATUS), WALL) == [
        "Memory utilization statistics at 2026-11-28 10:20:30 123 ms",
        "System Total Memory Is: 8192000000 bytes",
        "Total Memory Used Is: 2048000000 bytes",
        "Memory Using Percentage Is: 25%",
        "",
        "ikegate process resident memory: 52428800 bytes",
    ]


def test_device_layouts() -> None:
    assert render.device(make_device(None, None)) == [
        "USG6000V's Device status:",
        "Slot #    Type        Online    Register     Status    Primary",
        "-" * 64,
        "0         VFW         Present   Registered   Normal    Master",
        "",
        "ikegate: the boards are this process's SA placements (slot 0 cpu 0), not hardware",
    ]
    lines = render.device(make_device("USG6680E", "1/0,1/1,3/0"))
    assert lines[3:5] == ["1         SPU         Present   Registered   Normal    Master",
                          "3         SPU         Present   Registered   Normal    Slave"]
    assert lines[-1] == ("ikegate: the boards are this process's SA placements (slot 1 cpu 0,1; slot 3 cpu 0), "
                         "not hardware")


def shell(model: str | None, **runtime: object) -> Shell:
    config, _ = load_config(resources.files("ikegate.lab").joinpath("hq.cfg").read_text())
    device = make_device(model, None)
    return device_shell(gateway_for(config, device), device, wall=lambda: WALL, **runtime)


def test_cpu_usage_through_the_shell() -> None:
    c = Clocks()
    sh = shell(None, cpu=c.sampler())
    c.run(5, 0.2)
    out = sh.run("dis cpu-usage | include utilization")
    assert out.error is None
    assert out.lines == ["CPU utilization for five seconds: 20%: one minute: 20%: five minutes: 20%"]
    assert json.loads(sh.run("display cpu-usage | json").text)["cpu_usage"] == {
        "five_seconds": 20, "one_minute": 20, "five_minutes": 20, "max": 20}


def test_memory_usage_through_the_shell() -> None:
    sh = shell(None, memory=lambda: parse_memory(MEMINFO, STATUS))
    assert sh.run("display memory-usage | begin ^Total").lines[:2] == [
        "Total Memory Used Is: 2048000000 bytes", "Memory Using Percentage Is: 25%"]
    assert json.loads(sh.run("dis mem | json").text)["memory_usage"] == {
        "total": 8192000000, "used": 2048000000, "percent": 25, "process_rss": 52428800}

    def unreadable() -> MemoryUsage:
        raise FileNotFoundError("/proc/meminfo")

    out = shell(None, memory=unreadable).run("display memory-usage")
    assert out.error is not None and "cannot be read" in out.text


def test_device_through_the_shell() -> None:
    sh = shell("usg6680e")
    out = sh.run("display device | include SPU")
    assert out.error is None
    assert [line.split()[0] for line in out.lines] == ["1", "3"]
    boards = json.loads(sh.run("display dev | json").text)["device"]["boards"]
    assert [(b["slot"], b["cpus"]) for b in boards] == [("1", [0, 1]), ("3", [0, 1])]
    sh.start()
    listed = sh.feed(b"display ?").decode()
    assert all(word in listed for word in ("cpu-usage", "device", "memory-usage"))
    assert "Matching output" in sh.feed(b"\x15display device ?").decode()
    assert sh.feed(b"\x15display memory-u\t").decode().endswith("display memory-usage ")


# -- with placement workers: the device's figures, then each process's ------------------------------------


def test_parse_stat_cpu_counts_after_the_command_name() -> None:
    stat = "4242 (ikegate (w) 1) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 1 0 100 0 0"
    assert parse_stat_cpu(stat, 100) == pytest.approx(4.0)  # utime 250 + stime 150 ticks


class Workers:
    """CPU seconds of fake worker processes by pid, stepped with the clocks."""

    def __init__(self, clocks: Clocks, pids: dict[int, float]) -> None:
        self.c, self.cpu, self.busy = clocks, {pid: 10.0 for pid in pids}, pids

    def run(self, seconds: float, own: float) -> None:
        self.c.run(seconds, own)
        for pid, busy in self.busy.items():
            self.cpu[pid] += seconds * busy

    def read(self, pid: int) -> float:
        if pid not in self.cpu:
            raise ProcessLookupError(pid)
        return self.cpu[pid]


def test_worker_samplers_give_each_process_and_the_device_share_of_its_cores() -> None:
    c = Clocks()
    w = Workers(c, {101: 0.9, 102: 0.5})
    samplers = WorkerSamplers(monotonic=lambda: c.t, own_cpu=lambda: c.cpu, pid_cpu=w.read, cores=2)
    samplers.tick([101, 102])
    w.run(5, 0.2)
    samplers.tick([101, 102])
    got = {pid: samplers.usage(pid) for pid in (101, 102)}
    assert [u.five_seconds for u in got.values() if u is not None] == [pytest.approx(90), pytest.approx(50)]
    assert samplers.total.usage().five_seconds == pytest.approx((90 + 50 + 20) / 2)
    # worker 102 dies and comes back as 103: the total never runs backwards, the new one starts from zero
    del w.cpu[102], w.busy[102]
    w.cpu[103], w.busy[103] = 2.0, 0.1
    w.run(5, 0.2)
    samplers.tick([101, 103])
    assert samplers.usage(102) is None and samplers.total.usage().five_seconds >= 0
    w.run(5, 0.2)
    samplers.tick([101, 103])
    assert samplers.total.usage().five_seconds == pytest.approx((90 + 10 + 20) / 2)


class _WorkersDevice(LocalDevice):
    def __init__(self, base: LocalDevice, pids: list[tuple[int, Placement, int]]) -> None:
        super().__init__(base.gateway, base.model, clock=lambda: 0.0)
        self._pids = pids

    def worker_pids(self) -> list[tuple[int, Placement, int]]:
        return self._pids


def _workers_shell(model: str | None, pids: list[int], **runtime: Any) -> Shell:
    config, _ = load_config(resources.files("ikegate.lab").joinpath("hq.cfg").read_text())
    device_model = make_device(model, "1/0,1/1" if model else None)
    base = LocalDevice(gateway_for(config, device_model), device_model)
    placements = device_model.placements if model else (device_model.placements[0],) * len(pids)
    device = _WorkersDevice(base, [(i, p, pid) for i, (p, pid) in enumerate(zip(placements, pids, strict=True))])
    return Shell(config, tree=runtime_tree(device_model), device=Runtime(device, wall=lambda: WALL, **runtime))


def test_cpu_usage_with_workers_lists_the_device_then_each_process() -> None:
    c = Clocks()
    w = Workers(c, {101: 0.9, 102: 0.5})
    samplers = WorkerSamplers(monotonic=lambda: c.t, own_cpu=lambda: c.cpu, pid_cpu=w.read, cores=2)
    sh = _workers_shell(None, [101, 102], cpu=c.sampler(), workers_cpu=samplers)
    sh.device.tick()  # the daemon's tick
    w.run(5, 0.2)
    out = sh.run("display cpu-usage")
    assert out.error is None
    assert out.lines[1] == "CPU Usage            : 80% Max: 80%"  # (20 + 90 + 50) % over 2 cores
    assert out.lines[-4:] == ["Process           5 Sec   1 Min   5 Min   Max",
                              "supervisor        20%     20%     20%     20%",
                              "worker 0          90%     90%     90%     90%",
                              "worker 1          50%     50%     50%     50%"]
    record = json.loads(sh.run("display cpu-usage | json").text)["cpu_usage"]
    assert record["five_seconds"] == 80 and record["cores"] == 2
    assert [(p["process"], p.get("index"), p["five_seconds"]) for p in record["processes"]] == [
        ("supervisor", None, 20), ("worker", 0, 90), ("worker", 1, 50)]


def test_cpu_and_memory_usage_on_a_slot_model_name_the_placements() -> None:
    c = Clocks()
    w = Workers(c, {201: 0.3, 202: 0.6})
    samplers = WorkerSamplers(monotonic=lambda: c.t, own_cpu=lambda: c.cpu, pid_cpu=w.read, cores=2)
    rss = {201: 30 << 20, 202: 40 << 20}
    sh = _workers_shell("USG6680E", [201, 202], cpu=c.sampler(), workers_cpu=samplers,
                        memory=lambda: parse_memory(MEMINFO, STATUS), worker_rss=rss.__getitem__)
    w.run(5, 0.1)
    lines = sh.run("display cpu-usage | include ^slot").lines
    assert [line.split()[:4] for line in lines] == [["slot", "1", "cpu", "0"], ["slot", "1", "cpu", "1"]]
    assert sh.run("display memory-usage | begin ikegate").lines == [
        f"ikegate process resident memory: {52428800 + (70 << 20)} bytes",
        "  supervisor: 52428800 bytes",
        f"  slot 1 cpu 0: {30 << 20} bytes",
        f"  slot 1 cpu 1: {40 << 20} bytes"]
    record = json.loads(sh.run("display memory-usage | json").text)["memory_usage"]
    assert record["process_rss"] == 52428800 + (70 << 20)
    assert [(p["process"], p.get("slot"), p.get("cpu"), p["rss"]) for p in record["processes"]] == [
        ("supervisor", None, None, 52428800), ("worker", 1, 0, 30 << 20), ("worker", 1, 1, 40 << 20)]

"""``display cpu-usage``, ``display memory-usage`` and ``display device`` in the USG's layouts.

The figures are this gateway's own (its CPU time, the host's memory, its SA placements as the boards; with
placement workers, every process's, then each one's); the layouts are VRP's as remembered from USG
transcripts [MEM: the corpus has no transcript of these three]; the choices are recorded in docs/cli.md
("Device figures").
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from ikegate.gateway.device import DeviceModel
from ikegate.mgmt.usage import WINDOWS, CpuUsage, MemoryUsage

#: The board type shown for each SPU slot, and for the virtual firewall's single board.
SLOT_BOARD, VIRTUAL_BOARD = "SPU", "VFW"
DEVICE_COLUMNS = (("Slot #", 10), ("Type", 12), ("Online", 10), ("Register", 13), ("Status", 10), ("Primary", 0))


def _stamp(wall: dt.datetime) -> str:
    return f"{wall:%Y-%m-%d %H:%M:%S}"


def cpu(usage: CpuUsage, wall: dt.datetime) -> list[str]:
    """The VRP block; the highest figure's time is the wall time that far back on the monotonic clock."""
    max_at = _stamp(wall - dt.timedelta(seconds=usage.at - usage.max_at))
    return [
        f"CPU Usage Stat. Cycle: {int(WINDOWS[1])} (Second)",
        f"CPU Usage            : {usage.five_seconds:.0f}% Max: {usage.max:.0f}%",
        f"CPU Usage Stat. Time : {_stamp(wall)}",
        f"CPU utilization for five seconds: {usage.five_seconds:.0f}%: one minute: {usage.one_minute:.0f}%: "
        f"five minutes: {usage.five_minutes:.0f}%",
        f"Max CPU Usage Stat. Time : {max_at}",
    ]


def process_name(label: dict[str, Any]) -> str:
    """``supervisor``, ``worker 1``, or on the slot models the placement: ``slot 1 cpu 0``."""
    if label["process"] == "supervisor":
        return "supervisor"
    if "slot" in label:
        return f"slot {label['slot']} cpu {label['cpu']}"
    return f"worker {label['index']}"


#: The per-process table after ``display cpu-usage``'s block when the device is several processes.
PROCESS_COLUMNS = (("Process", 18), ("5 Sec", 8), ("1 Min", 8), ("5 Min", 8), ("Max", 0))


def cpu_processes(rows: list[tuple[dict[str, Any], CpuUsage]], cores: int) -> list[str]:
    """One line per process (percent of one core each); the block above is the device's, every process
    together as a share of its ``cores``."""
    lines = ["", f"ikegate processes (the figures above: all of them, over {cores} core(s)):",
             "".join(name.ljust(width) for name, width in PROCESS_COLUMNS).rstrip()]
    for label, r in rows:
        values = (process_name(label), f"{r.five_seconds:.0f}%", f"{r.one_minute:.0f}%", f"{r.five_minutes:.0f}%",
                  f"{r.max:.0f}%")
        lines.append("".join(v.ljust(width) for v, (_, width) in zip(values, PROCESS_COLUMNS, strict=True)).rstrip())
    return lines


def memory(usage: MemoryUsage, wall: dt.datetime,
           processes: list[tuple[dict[str, Any], int]] | None = None) -> list[str]:
    """The VRP lines describe the host (what a script watching for memory pressure needs); the line after
    the blank one is ikegate's own resident set: with placement workers, all its processes together, then
    each one."""
    own = sum(rss for _, rss in processes) if processes else usage.rss
    return [
        f"Memory utilization statistics at {wall:%Y-%m-%d %H:%M:%S} {wall.microsecond // 1000} ms",
        f"System Total Memory Is: {usage.total} bytes",
        f"Total Memory Used Is: {usage.used} bytes",
        f"Memory Using Percentage Is: {usage.percent}%",
        "",
        f"ikegate process resident memory: {own} bytes",
        *(f"  {process_name(label)}: {rss} bytes" for label, rss in processes or []),
    ]


def device_rows(model: DeviceModel) -> list[dict[str, Any]]:
    """One board per SPU slot of the placements (its CPUs are its placements); one virtual board on the
    models without slots."""
    slots = sorted({p.slot for p in model.placements})
    board = SLOT_BOARD if model.has_slots else VIRTUAL_BOARD
    return [{"slot": str(slot), "type": board, "online": "Present", "register": "Registered", "status": "Normal",
             "primary": "Master" if i == 0 else "Slave",
             "cpus": [p.cpu for p in model.placements if p.slot == slot]}
            for i, slot in enumerate(slots)]


def device(model: DeviceModel) -> list[str]:
    header = "".join(name.ljust(width) for name, width in DEVICE_COLUMNS)
    rows = device_rows(model)
    lines = [f"{model.model}'s Device status:", header.rstrip(), "-" * 64]
    for row in rows:
        values = (row["slot"], row["type"], row["online"], row["register"], row["status"], row["primary"])
        lines.append("".join(v.ljust(width) for v, (_, width) in zip(values, DEVICE_COLUMNS, strict=True)).rstrip())
    lines.append("")
    lines.append("ikegate: the boards are this process's SA placements (" +
                 "; ".join(f"slot {r['slot']} cpu {','.join(map(str, r['cpus']))}" for r in rows) + "), not hardware")
    return lines

"""Packet captures inside a test namespace with Wireshark's dumpcap, read back with tshark.

The wire is the judge of what ikegate sends: raw ESP is IP protocol 50, ESP-in-UDP has a zero checksum,
IKE and ESP decrypt with the key log. Tests skip (with the reason) where dumpcap/tshark are missing; CI
installs Debian's ``tshark`` (.ci/run).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.interop.netns import Lab, Netns
from tests.waiting import DEADLINE, wait_for


def need_tshark() -> None:
    missing = [tool for tool in ("dumpcap", "tshark") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (Debian package tshark)")


@dataclass
class Capture:
    lab: Lab
    path: Path
    popen: subprocess.Popen[bytes]

    def wait_for(self, display_filter: str, count: int, what: str, timeout: float = DEADLINE,
                 config_dir: Path | None = None) -> None:
        """Until the file holds ``count`` packets matching ``display_filter`` (read with the Wireshark
        configuration in ``config_dir``, e.g. a key log): dumpcap hands packets over in blocks, so
        stopping it right after the traffic would lose the last ones."""
        wait_for(lambda: self.path.exists() and _count_partial(self.path, display_filter, config_dir) >= count,
                 timeout, what, step=0.3)

    def stop(self) -> Path:
        """End the capture (dumpcap finishes the file on SIGTERM) and return the file."""
        self.lab.stop(self.popen)
        return self.path


def segment_on_the_link(*ends: tuple[Netns, str]) -> None:
    """Make the kernel cut runs of datagrams (UDP segmentation offload, which ikegate's ESP-in-UDP uses)
    into datagrams before they enter these links, as a NIC does before the wire: a veth otherwise carries
    a run as one buffer, and a capture on it shows one oversized frame that dissects as garbage."""
    for ns, ifname in ends:
        ns.ip("link", "set", "dev", ifname, "gso_max_segs", "1")


def start_capture(lab: Lab, ns: Netns, iface: str, name: str, capture_filter: str = "") -> Capture:
    """dumpcap on ``iface`` of ``ns``; returns once it is capturing (it says so on stderr)."""
    need_tshark()
    path = lab.workdir / f"{name}.pcapng"
    log = lab.workdir / f"{name}.dumpcap.log"
    cmd = ["dumpcap", "-q", "-i", iface, "-w", str(path)]
    if capture_filter:
        cmd += ["-f", capture_filter]
    popen = lab.spawn(ns, cmd, log)

    def started() -> bool:
        if popen.poll() is not None:
            raise AssertionError(f"dumpcap exited: {log.read_text()}")
        return "Capturing on" in log.read_text() or (path.exists() and path.stat().st_size > 0)

    wait_for(started, what="dumpcap to start")
    return Capture(lab, path, popen)


def tshark_fields(path: Path, fields: list[str], display_filter: str = "", options: list[str] | None = None,
                  two_pass: bool = False) -> list[list[str]]:
    """One row per packet of ``path`` matching ``display_filter``: the values of ``fields``."""
    cmd = ["tshark", "-n", "-r", str(path), "-T", "fields", "-E", "separator=\t", "-E", "occurrence=a",
           "-E", "aggregator=,"]
    if two_pass:
        cmd.append("-2")
    for opt in options or []:
        cmd += ["-o", opt]
    for field in fields:
        cmd += ["-e", field]
    if display_filter:
        cmd += ["-Y", display_filter]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True)
    return [line.split("\t") for line in out.stdout.splitlines() if line]


def _count_partial(path: Path, display_filter: str, config_dir: Path | None = None) -> int:
    """Matching packets of a file still being written (tshark reads up to the last complete block)."""
    cmd = ["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "frame.number", "-Y", display_filter]
    env = {**os.environ, "WIRESHARK_CONFIG_DIR": str(config_dir)} if config_dir is not None else None
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False, env=env)
    return len(out.stdout.splitlines())


def tshark_count(path: Path, display_filter: str, options: list[str] | None = None) -> int:
    return len(tshark_fields(path, ["frame.number"], display_filter, options))

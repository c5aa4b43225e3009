"""Gateway processes for system tests: `ikegate run` on loopback, driven through the control socket."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ikegate.mgmt.control import request
from tests.waiting import wait_for

#: What ``ikegate run`` prints on stderr once :meth:`ikegate.daemon.Daemon.start` has returned: every
#: socket is open and auto policies have sent their first message. The control socket appears earlier
#: (it is opened inside ``start``), so a test that checks what a fresh gateway has *not* done waits for this.
READY = "listening on"


def free_port_pair() -> int:
    """An even port P with P and P+1 free for UDP on 127.0.0.1 (IKE and NAT-T)."""
    for _ in range(200):
        port = random.randrange(20000, 60000, 2)
        try:
            socks = []
            for p in (port, port + 1):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.bind(("127.0.0.1", p))
                socks.append(s)
            for s in socks:
                s.close()
            return port
        except OSError:
            continue
    raise RuntimeError("no free port pair")


def lab_text(name: str, **replace: str) -> str:
    text = resources.files("ikegate.lab").joinpath(f"{name}.cfg").read_text()
    for old, new in replace.items():
        text = text.replace(old, new)
    return text


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[str]
    control: str
    stderr_path: Path

    def call(self, op: str, **kw: Any) -> dict[str, Any]:
        answer = request(self.control, {"op": op, **kw})
        assert answer.get("ok"), answer
        return answer

    def sas(self) -> list[dict[str, Any]]:
        return self.call("sas")["sas"]

    def phases(self) -> list[int]:
        return sorted(s["phase"] for s in self.sas())

    def stderr(self) -> str:
        return self.stderr_path.read_text()


@contextmanager
def gateway(tmp: Path, name: str, config: str, port: int, *extra: str,
            prefix: list[str] | None = None) -> Iterator[Proc]:
    cfg = tmp / f"{name}.cfg"
    cfg.write_text(config)
    control = str(tmp / f"{name}.sock")
    err = tmp / f"{name}.stderr"
    cmd = [*(prefix or []), sys.executable, "-m", "ikegate", "run", str(cfg), "--control", control,
           "--ike-port", str(port), "--natt-port", str(port + 1), *extra]
    with open(err, "w") as errf:
        popen = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf, text=True,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
    proc = Proc(name, popen, control, err)
    try:
        wait_for(lambda: READY in err.read_text() or popen.poll() is not None, what=f"{name} to start")
        if popen.poll() is not None:
            raise AssertionError(f"{name} exited: {err.read_text()}")
        yield proc
    finally:
        if popen.poll() is None:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(30)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()

"""One gateway process: configuration, controller, sockets, control socket, logs and clean shutdown.

``ikegate run`` builds a :class:`Daemon`; ``ikegate demo`` builds several in one event loop. The daemon
is glue only: decisions live in the controller, bytes in the UDP runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import random
import signal
import stat
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, TextIO

from ikegate.cli.commands import default_tree
from ikegate.cli.commands.runtime import Runtime, runtime_commands
from ikegate.cli.loader import ConfigError, decode_config, load_config
from ikegate.cli.logbuffer import LogBuffer, LogRecord
from ikegate.cli.shell import Shell
from ikegate.gateway.controller import Gateway
from ikegate.gateway.device import Device
from ikegate.io.keylog import KeyLogWriter
from ikegate.io.tun import TunBridge, open_bridge
from ikegate.io.udp import UdpRunner
from ikegate.mgmt.control import ControlServer, clear_stale_socket
from ikegate.mgmt.metrics import MetricsServer, parse_listen, registry_for
from ikegate.mgmt.records import entry_record
from ikegate.mgmt.ssh import SshService
from ikegate.mgmt.syslog import SyslogSender
from ikegate.policy.model import Config
from ikegate.sad import Placement

log = logging.getLogger("ikegate")

SHUTDOWN_GRACE = 3.0
PING_TIMEOUT = 2.0
STOP_LIMIT = 15.0
LOG_FLUSH_INTERVAL = 1.0  # seconds between checks for ended log aggregation windows


@dataclass
class DaemonOptions:
    ike_port: int = 500
    natt_port: int = 4500
    control: str | None = None
    device: Device = field(default_factory=Device)
    retransmit_tries: int = 5
    log_stream: TextIO | None = None  # where log-buffer lines are mirrored (stderr in ``ikegate run``)
    metrics: str | None = None  # ``--metrics ADDR:PORT``: serve Prometheus metrics there (mgmt/metrics.py)
    #: ``--tun ITF=TUN``: VRP interface name -> Linux TUN device carrying that protected side's packets
    #: (see :mod:`ikegate.io.tun`; routes into the TUN are the operator's job).
    tun: dict[str, str] = field(default_factory=dict)
    #: Take and send raw ESP (IP protocol 50) where no NAT is detected, if a raw socket opens (``False``:
    #: ``--force-udp-encap``).
    raw_esp: bool = True
    #: ``--keylog DIR``: write Wireshark key tables there (see :mod:`ikegate.io.keylog`).
    keylog: str | None = None


def write_atomically(path: str, text: str) -> None:
    """Replace ``path`` by ``text`` so that a crash at any moment leaves either the old file or the new
    one, never a truncated one: a temporary file in the same directory (same file system, so the rename
    is atomic), flushed to disk, given the old file's mode and owner (a 0600 configuration holding keys
    stays 0600), renamed over the old one, and the directory flushed so the rename itself survives. A
    symbolic link is followed: the file it names is replaced, the link stays."""
    path = os.path.realpath(path)
    folder = os.path.dirname(path)
    try:
        old: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        old = None
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            if old is not None:
                os.fchmod(fh.fileno(), stat.S_IMODE(old.st_mode))
                with contextlib.suppress(PermissionError):  # only root may give a file away
                    os.fchown(fh.fileno(), old.st_uid, old.st_gid)
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dirfd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def read_config(path: str) -> tuple[Config, list[ConfigError]]:
    with open(path, "rb") as fh:
        return load_config(decode_config(fh.read()), directory=os.path.dirname(os.path.abspath(path)))


class Daemon:
    def __init__(self, config: Config, options: DaemonOptions, config_path: str | None = None) -> None:
        self.options = options
        self.config_path = config_path
        self.logbuffer = LogBuffer()
        #: Every log-buffer record (commands, tunnel events, failures) also goes to each ``info-center loghost``.
        self.syslog = SyslogSender(lambda: self.gateway.config.loghosts.values(), lambda: self.gateway.config.sysname)
        self.logbuffer.listeners.append(self._mirror)
        self.logbuffer.listeners.append(self.syslog.send)
        self.gateway = Gateway(config, ike_port=options.ike_port, natt_port=options.natt_port,
                               placements=options.device.placements, retransmit_tries=options.retransmit_tries,
                               log=self.log)
        self.runner: UdpRunner | None = None
        self.tun: TunBridge | None = None
        self.control: ControlServer | None = None
        self.metrics: MetricsServer | None = None
        self.ssh = SshService(self, lambda: self.gateway.config)  # listens only with ``stelnet server enable``
        self.tree = default_tree(runtime_commands(options.device))
        self.runtime = Runtime(self.gateway, options.device, clock=self.now, after_change=self._flush,
                               pinger=self.ping, ssh=self.ssh)
        self.runtime.config_path = config_path  # display saved-configuration
        self._stop = asyncio.Event()
        self._log_flush: asyncio.Task[None] | None = None
        self._pings: dict[tuple[int, int], asyncio.Future[float]] = {}
        self.gateway.on_echo_reply = self._echo_reply

    # -- ping ---------------------------------------------------------------------------------------

    def _echo_reply(self, ident: int, seq: int, now: float) -> None:
        fut = self._pings.pop((ident, seq), None)
        if fut is not None and not fut.done():
            fut.set_result(now)

    async def ping(self, source: str, destination: str, count: int, size: int) -> list[str]:
        """VRP's ping: echo requests from a protected-side address through the SPD (a traffic-based policy
        negotiates on the first one), 2 s timeout each, then the statistics."""
        loop = asyncio.get_running_loop()
        ident = random.randrange(1, 0x10000)
        lines = [f"  PING {destination}: {size}  data bytes, press CTRL_C to break"]
        times: list[float] = []
        for seq in range(1, count + 1):
            fut: asyncio.Future[float] = loop.create_future()
            self._pings[(ident, seq)] = fut
            sent = self.now()
            self.gateway.ping(sent, source, destination, ident, seq, size)
            self._flush()
            try:
                got = await asyncio.wait_for(fut, PING_TIMEOUT)
            except TimeoutError:
                self._pings.pop((ident, seq), None)
                lines.append("    Request time out")
                continue
            rtt = (got - sent) * 1000
            times.append(rtt)
            lines.append(f"    Reply from {destination}: bytes={size} Sequence={seq} ttl=64 time={rtt:.0f} ms")
        lines += ["", f"  --- {destination} ping statistics ---", f"    {count} packet(s) transmitted",
                  f"    {len(times)} packet(s) received", f"    {100 * (count - len(times)) / count:.2f}% packet loss"]
        if times:
            lines.append(f"    round-trip min/avg/max = {min(times):.0f}/{sum(times) / len(times):.0f}/"
                         f"{max(times):.0f} ms")
        return lines

    # -- shells -------------------------------------------------------------------------------------

    def new_shell(self, *, user: str = "admin", level: int = 3, task: str = "vty0", ip: str = "127.0.0.1") -> Shell:
        """A VRP session on this gateway: the same engine for the console, the control socket and SSH."""
        return Shell(self.gateway.config, tree=self.tree, device=self.runtime, logbuffer=self.logbuffer, user=user,
                     level=level, task=task, ip=ip, save_callback=self._save if self.config_path else None)

    def _save(self, text: str) -> None:
        assert self.config_path is not None
        write_atomically(self.config_path, text)

    def after_command(self) -> None:
        """The configuration may have changed: let the controller see it, start new auto policies."""
        self.gateway.reload(self.gateway.config)
        if self.runner is not None:
            self.gateway.start(self.runner.now())
            self.runner.flush()
            self.ssh.reconcile()

    def _flush(self) -> None:
        if self.runner is not None:
            self.runner.flush()

    async def run_lines(self, lines: list[str], *, level: int = 3) -> tuple[str, bool]:
        """Run commands as if typed from user view; the transcript as the shell prints it, and whether any
        printed an ``Error:`` line."""
        shell = self.new_shell(level=level, task="api")
        out: list[str] = []
        failed = False
        for line in lines:
            prompt = shell.prompt
            outcome = shell.run(line)
            self.after_command()
            out.append(prompt + shell.mask(line))  # the transcript may end up in a ticket
            out.extend(outcome.lines)
            if outcome.pending is not None:
                out.extend(await outcome.pending)
            failed = failed or outcome.error is not None
            if shell.closed:
                break
        return "\n".join(out) + "\n", failed

    async def attach(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: dict[str, Any]) -> None:
        """A raw terminal session over the control socket."""
        shell = self.new_shell(task="vty0", ip="local")
        writer.write(shell.start())
        await writer.drain()
        while not shell.closed:
            data = await reader.read(1024)
            if not data:
                break
            out = shell.feed(data)
            if b"\n" in data or b"\r" in data:
                self.after_command()
            writer.write(out)
            await writer.drain()
            if shell.pending is not None:
                writer.write(shell.finish(await shell.pending))
                await writer.drain()
        writer.close()

    # -- logging ------------------------------------------------------------------------------------

    def log(self, module: str, severity: int, brief: str, text: str) -> None:
        """Into the log buffer; its listeners mirror it to the log stream and to syslog."""
        self.logbuffer.log(module, severity, brief, text)

    def _mirror(self, record: LogRecord) -> None:
        """Every log-buffer record (command records included) as one line on the log stream."""
        stream = self.options.log_stream
        if stream is not None:
            stream.write(record.render(self.gateway.config.sysname) + "\n")  # stderr is line buffered

    # -- life cycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.options.control:
            # Checked first: a control path held by another running gateway is the clearest reason to
            # stop. The socket itself is made below, once the IKE sockets are open.
            clear_stale_socket(self.options.control)
        await self.syslog.open()
        self.runner = UdpRunner(self.gateway, loop)
        await self.runner.open(self.gateway.local_addresses(), raw_esp=self.options.raw_esp)
        if self.options.keylog:
            self.gateway.keylog = KeyLogWriter(self.options.keylog).write
            self.log("IKE", 3, "KEYLOG_ENABLED", f"WARNING: IKE and ESP keys are written to {self.options.keylog} "
                     "(--keylog): anyone who can read these files can decrypt this gateway's traffic")
        if self.options.tun:
            self.tun = open_bridge(self.gateway, self.options.tun, self.runner)
        if self.options.control:
            self.control = ControlServer(self.options.control, self.handlers(), attach=self.attach)
            await self.control.start()
        if self.options.metrics:
            host, port = parse_listen(self.options.metrics)
            self.metrics = MetricsServer(registry_for(self.gateway), host, port)
            await self.metrics.start()
        await self.ssh.start()
        self._log_flush = loop.create_task(self._flush_log_summaries())
        self.gateway.start(self.runner.now())
        self.runner.flush()

    async def _flush_log_summaries(self) -> None:
        """The "suppressed N similar messages" lines of the log buffer come out when their window ends,
        not only when the next record happens to arrive."""
        while True:
            await asyncio.sleep(LOG_FLUSH_INTERVAL)
            self.logbuffer.flush()

    def request_stop(self) -> None:
        self._stop.set()

    async def wait(self) -> None:
        await self._stop.wait()

    async def stop(self) -> None:
        """Delete every IKE SA (peers get Deletes), wait briefly for the answers, close everything."""
        await self.ssh.stop()
        if self._log_flush is not None:
            self._log_flush.cancel()
        if self.runner is not None:
            self.gateway.shutdown(self.runner.now())
            self.runner.flush()
            deadline = self.runner.now() + SHUTDOWN_GRACE
            while not self.gateway.idle and self.runner.now() < deadline:
                await asyncio.sleep(0.02)
            self.runner.close()
        if self.tun is not None:
            self.tun.close()
        if self.control is not None:
            await self.control.close()
        if self.metrics is not None:
            await self.metrics.close()
        self.syslog.close()  # last: the shutdown's own tunnel-down logs still go out

    # -- control API ----------------------------------------------------------------------------------

    def now(self) -> float:
        return self.runner.now() if self.runner else 0.0

    def handlers(self) -> dict[str, Any]:
        return {
            "sas": self._op_sas,
            "reset": self._op_reset,
            "stats": self._op_stats,
            "offline": self._op_offline,
            "logbuffer": lambda req: {"lines": self.logbuffer.render(self.gateway.config.sysname)},
            "load": self._op_load,
            "shell": self._op_shell,
            "inject": self._op_inject,
            "lan": self._op_lan,
        }

    def _op_sas(self, req: dict[str, Any]) -> dict[str, Any]:
        now = self.now()
        return {"sas": [entry_record(e, now) for e in self.gateway.sad.entries()]}

    def _op_reset(self, req: dict[str, Any]) -> dict[str, Any]:
        placement = None
        if req.get("slot") is not None:
            placement = Placement(int(req["slot"]), int(req["cpu"]))
        conn_id = int(req["conn_id"]) if req.get("conn_id") is not None else None
        deleted = self.gateway.reset_ike_sa(self.now(), conn_id=conn_id, remote=req.get("remote"),
                                            placement=placement)
        if self.runner:
            self.runner.flush()
        return {"deleted": deleted}

    async def _op_shell(self, req: dict[str, Any]) -> dict[str, Any]:
        lines = req.get("lines")
        if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
            raise ValueError("lines must be a list of strings")
        output, failed = await self.run_lines(lines, level=int(req.get("level", 3)))
        return {"output": output, "error": failed}

    def _op_inject(self, req: dict[str, Any]) -> dict[str, Any]:
        """The packet API: raw IP packets into the protected side (hex), as if from the LAN."""
        packets = req.get("packets", [])
        for packet in packets:
            self.gateway.from_lan(bytes.fromhex(packet), self.now())
        self._flush()
        return {"injected": len(packets)}

    def _op_lan(self, req: dict[str, Any]) -> dict[str, Any]:
        """The packet API: what came out on the protected side since the last call (hex), oldest first."""
        out = [p.hex() for p in self.gateway.lan_out]
        self.gateway.lan_out.clear()
        return {"packets": out}

    def _op_load(self, req: dict[str, Any]) -> dict[str, Any]:
        self.gateway.load(self.now(), int(req["count"]), int(req.get("concurrency", 64)))
        if self.runner:
            self.runner.flush()
        return {}

    def _op_stats(self, req: dict[str, Any]) -> dict[str, Any]:
        st = self.gateway.stats
        return {"stats": {
            "negotiations_started": st.negotiations_started,
            "negotiations_succeeded": st.negotiations_succeeded,
            "negotiations_failed": dict(st.negotiations_failed),
            "deletes_sent": st.deletes_sent,
            "deletes_received": st.deletes_received,
            "resets": st.resets,
            "cookies_sent": st.cookies_sent,
            "dropped": st.dropped,
            "engines": len(self.gateway.engines()),
            "ike_sas": self.gateway.sad.count(phase=1),
            "ipsec_sas": self.gateway.sad.count(phase=2),
        }}

    def _op_offline(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"offline": [
            {"peer": str(r.peer_address), "port": r.peer_port, "reason": r.reason, "version": r.version,
             "time": r.time}
            for r in self.gateway.sad.offline.entries()
        ]}


async def run_daemon(config: Config, options: DaemonOptions, config_path: str | None = None) -> int:
    daemon = Daemon(config, options, config_path)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
    try:
        await daemon.start()
    except OSError as exc:
        print(f"ikegate: cannot start: {exc}", file=sys.stderr)
        if daemon.control is not None:
            await daemon.control.close()  # removes the socket only if this process made it
        return 1
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} {config.sysname}: listening on "
          f"{', '.join(daemon.gateway.local_addresses()) or 'no address'} "
          f"(IKE {options.ike_port}, NAT-T {options.natt_port})", file=sys.stderr, flush=True)
    await daemon.wait()
    try:
        # A clean stop takes a few seconds at most; whatever hangs past that must not keep us alive.
        await asyncio.wait_for(daemon.stop(), STOP_LIMIT)
    except TimeoutError:
        print("ikegate: shutdown did not finish in time; exiting anyway", file=sys.stderr)
    return 0

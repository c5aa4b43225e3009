"""One gateway process: configuration, controller, sockets, control socket, logs and clean shutdown.

``ikegate run`` builds a :class:`Daemon`; ``ikegate demo`` builds several in one event loop. The daemon
is glue only: it is the management plane (shells, control socket, SSH, metrics, logs) around one
:class:`~ikegate.gateway.device.Device`, which it reaches only through that interface; decisions live in
the controller behind it, bytes in its UDP runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import logging
import os
import signal
import stat
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from ikegate.cli.commands import default_tree
from ikegate.cli.commands.hrp import merge_mirrored, mirror_text, standby_guard
from ikegate.cli.commands.runtime import Runtime, runtime_commands
from ikegate.cli.loader import ConfigError, decode_config, load_config
from ikegate.cli.logbuffer import LogBuffer, LogRecord
from ikegate.cli.shell import Shell
from ikegate.gateway.device import Device, DeviceError, DeviceModel, Selection, open_device
from ikegate.mgmt.control import ControlServer, clear_stale_socket
from ikegate.mgmt.metrics import MetricsServer, parse_listen, registry_for
from ikegate.mgmt.pacing import chunks_paced, pump
from ikegate.mgmt.records import entry_record
from ikegate.mgmt.ssh import SshService
from ikegate.mgmt.syslog import SyslogSender
from ikegate.policy.model import Config

log = logging.getLogger("ikegate")

SHUTDOWN_GRACE = 3.0
STOP_LIMIT = 15.0
LOG_FLUSH_INTERVAL = 1.0  # seconds between checks for ended log aggregation windows


@dataclass
class DaemonOptions:
    ike_port: int = 500
    natt_port: int = 4500
    control: str | None = None
    model: DeviceModel = field(default_factory=DeviceModel)
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
    #: ``--workers N``: placement worker processes under this one (1: everything in this process).
    workers: int = 1
    #: ``--tun-steering``: with workers, steer the TUN's queues by eBPF (``ikegate.workers.tunsteer``)
    tun_steering: bool = True


def _discards(stream: TextIO | None) -> bool:
    """Whether ``stream`` is open on /dev/null."""
    try:
        return stream is not None and os.path.samestat(os.fstat(stream.fileno()), os.stat(os.devnull))
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):  # no descriptor (StringIO)
        return False


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
        self.syslog = SyslogSender(lambda: self.device.config.loghosts.values(), lambda: self.device.config.sysname)
        self.logbuffer.listeners.append(self._mirror)
        self.logbuffer.listeners.append(self.syslog.send)
        self.device: Device = open_device(config, options.model, options.workers, ike_port=options.ike_port,
                                          natt_port=options.natt_port, retransmit_tries=options.retransmit_tries,
                                          log=self.log, tun=options.tun, raw_esp=options.raw_esp,
                                          keylog=options.keylog, tun_steering=options.tun_steering)
        self._opened = False
        self.control: ControlServer | None = None
        self.metrics: MetricsServer | None = None
        self.ssh = SshService(self, lambda: self.device.config)  # listens only with ``stelnet server enable``
        self.tree = default_tree(runtime_commands(options.model))
        self.runtime = Runtime(self.device, ssh=self.ssh, config_path=config_path)  # display saved-configuration
        self._stop = asyncio.Event()
        self._log_flush: asyncio.Task[None] | None = None
        self._pending_lines: list[LogRecord] = []  # log-stream records of this pass of the event loop
        #: A log stream that is /dev/null (``ikegate run 2>/dev/null``, benchmarks) needs no lines made.
        self._log_stream = None if _discards(options.log_stream) else options.log_stream

    # -- shells -------------------------------------------------------------------------------------

    def new_shell(self, *, user: str = "admin", level: int = 3, task: str = "vty0", ip: str = "127.0.0.1") -> Shell:
        """A VRP session on this gateway: the same engine for the console, the control socket and SSH."""
        shell = Shell(self.device.config, tree=self.tree, device=self.runtime, logbuffer=self.logbuffer, user=user,
                      level=level, task=task, ip=ip, save_callback=self._save if self.config_path else None)
        shell.guard = standby_guard(self.device)
        return shell

    def _save(self, text: str) -> None:
        assert self.config_path is not None
        write_atomically(self.config_path, text)

    def after_command(self) -> None:
        """The configuration may have changed: let the device take it (new auto policies start), and on
        the active node of a hot-standby pair mirror it to the standby (``hrp auto-sync``). A device of
        several workers that could not apply it everywhere applied it nowhere and logged why."""
        with contextlib.suppress(DeviceError):
            self.device.apply_config(self.device.config)
        self._mirror_config()
        if self._opened:
            self.ssh.reconcile()

    def _mirror_config(self) -> None:
        config = self.device.config
        if config.hrp.enabled:
            self.device.hrp_mirror(mirror_text(config), self._apply_mirrored)

    def _apply_mirrored(self, text: str) -> None:
        """The standby: the active's configuration arrived; its backed-up part replaces ours."""
        errors = merge_mirrored(self.device.config, text)
        for error in errors:
            self.log("HRP", 4, "HRP_CONFIG", f"Mirrored configuration line refused: {error}")
        self.device.apply_config(self.device.config)
        self.log("HRP", 5, "HRP_CONFIG", "Configuration mirrored from the active device")

    async def run_lines(self, lines: list[str], *, level: int = 3) -> tuple[str, bool]:
        """Run commands as if typed from user view; the transcript as the shell prints it, and whether any
        printed an ``Error:`` line."""
        shell = self.new_shell(level=level, task="api")
        out: list[str] = []
        failed = False
        for line in lines:
            prompt = shell.prompt
            outcome = shell.run(line, lazy=True)
            if shell.take_changes():
                self.after_command()
            out.append(prompt + shell.mask(line))  # the transcript may end up in a ticket
            out.extend(outcome.lines)
            if outcome.more is not None:
                async for chunk in chunks_paced(outcome.more):
                    out.extend(chunk)
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
            await pump(shell, data, writer.write, writer.drain, self.after_command)
        writer.close()

    # -- logging ------------------------------------------------------------------------------------

    def log(self, module: str, severity: int, brief: str, text: str, /, *args: object) -> None:
        """Into the log buffer; its listeners mirror it to the log stream and to syslog. With ``args`` the
        text is a template, formatted only by a listener that needs it (see :class:`LogRecord`)."""
        self.logbuffer.log(module, severity, brief, text, *args)

    def _mirror(self, record: LogRecord) -> None:
        """Every log-buffer record (command records included) as one line on the log stream. Records logged
        in one pass of the event loop go out in one write at its end (stderr is line buffered: a write
        per line was a system call per tunnel up or down), and their text is made then, by this sink."""
        stream = self._log_stream
        if stream is None:
            return
        if self._pending_lines:
            self._pending_lines.append(record)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a tool driving the daemon by hand): at once
            stream.write(record.render(self.device.config.sysname) + "\n")
            return
        self._pending_lines.append(record)
        loop.call_soon(self._write_lines)

    def _write_lines(self) -> None:
        records, self._pending_lines = self._pending_lines, []
        if records and self._log_stream is not None:
            sysname = self.device.config.sysname
            self._log_stream.write("".join([record.render(sysname) + "\n" for record in records]))

    # -- life cycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Sockets first (a port in use is the likeliest reason to stop), then the management services."""
        loop = asyncio.get_running_loop()
        if self.options.control:
            # Checked first: a control path held by another running gateway is the clearest reason to
            # stop. The socket itself is made below, once the IKE sockets are open.
            clear_stale_socket(self.options.control)
        await self.syslog.open()
        await self.device.open()
        self._opened = True
        self._mirror_config()
        try:
            if self.options.control:
                self.control = ControlServer(self.options.control, self.handlers(), attach=self.attach)
                await self.control.start()
            if self.options.metrics:
                host, port = parse_listen(self.options.metrics)
                self.metrics = MetricsServer(registry_for(self.device), host, port)
                await self.metrics.start()
            await self.ssh.start()
        except BaseException:
            # A gateway that cannot be managed does not stay up: its tunnels go, its sockets close.
            self._opened = False
            await self.device.close(0.0)
            raise
        self._log_flush = loop.create_task(self._flush_log_summaries())

    async def _flush_log_summaries(self) -> None:
        """The "suppressed N similar messages" lines of the log buffer come out when their window ends,
        not only when the next record happens to arrive; the same tick samples the CPU figures."""
        while True:
            await asyncio.sleep(LOG_FLUSH_INTERVAL)
            self.logbuffer.flush()
            self.runtime.tick()  # display cpu-usage: a sample every five seconds, cheap otherwise

    def request_stop(self) -> None:
        self._stop.set()

    async def wait(self) -> None:
        await self._stop.wait()

    async def stop(self) -> None:
        """Delete every IKE SA (peers get Deletes), wait briefly for the answers, close everything."""
        await self.ssh.stop()
        if self._log_flush is not None:
            self._log_flush.cancel()
        if self._opened:
            await self.device.close(SHUTDOWN_GRACE)
            self._opened = False
        if self.control is not None:
            await self.control.close()
        if self.metrics is not None:
            await self.metrics.close()
        self.syslog.close()  # last: the shutdown's own tunnel-down logs still go out
        self._write_lines()

    # -- control API ----------------------------------------------------------------------------------

    def now(self) -> float:
        return self.device.now()

    def handlers(self) -> dict[str, Any]:
        return {
            "sas": self._op_sas,
            "reset": self._op_reset,
            "stats": self._op_stats,
            "offline": self._op_offline,
            "logbuffer": lambda req: {"lines": self.logbuffer.render(self.device.config.sysname)},
            "load": self._op_load,
            "shell": self._op_shell,
            "inject": self._op_inject,
            "lan": self._op_lan,
            "workers": self._op_workers,
            "hrp": self._op_hrp,
        }

    def _op_workers(self, req: dict[str, Any]) -> dict[str, Any]:
        """The processes holding SAs (index, slot, cpu, pid, restarts, configuration digest)."""
        return {"workers": [
            {"index": w.index, "slot": w.placement.slot, "cpu": w.placement.cpu, "pid": w.pid,
             "restarts": w.restarts, "config_digest": w.config_digest, "reported_sas": w.reported_sas}
            for w in self.device.workers()
        ]}

    def _op_hrp(self, req: dict[str, Any]) -> dict[str, Any]:
        """Hot standby's state (``display hrp state`` as data): role, peer, link, counters, VRRP groups."""
        st = self.device.hrp_state()
        return {"hrp": None if st is None else asdict(st)}

    def _op_sas(self, req: dict[str, Any]) -> dict[str, Any]:
        """The selected SA rows (all by default; the keys of :meth:`Selection.from_record`), oldest
        conn-id first."""
        rows = self.device.select(Selection.from_record(req))
        now = self.now()
        return {"sas": [entry_record(e, now) for e in reversed(rows)]}

    def _op_reset(self, req: dict[str, Any]) -> dict[str, Any]:
        """``reset ike sa`` (``conn_id``/``remote``/``slot``+``cpu``), or ``reset ipsec sa`` with
        ``"ipsec": true`` (``remote``/``policy``+``seq``/``spi``): the same device call as the CLI's."""
        selection = Selection.from_record(req)
        if req.get("ipsec"):
            return {"deleted": self.device.reset_ipsec_sa(selection)}
        return {"deleted": self.device.reset_ike_sa(selection)}

    async def _op_shell(self, req: dict[str, Any]) -> dict[str, Any]:
        lines = req.get("lines")
        if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
            raise ValueError("lines must be a list of strings")
        output, failed = await self.run_lines(lines, level=int(req.get("level", 3)))
        return {"output": output, "error": failed}

    def _op_inject(self, req: dict[str, Any]) -> dict[str, Any]:
        """The packet API: raw IP packets into the protected side (hex), as if from the LAN."""
        return {"injected": self.device.inject([bytes.fromhex(p) for p in req.get("packets", [])])}

    def _op_lan(self, req: dict[str, Any]) -> dict[str, Any]:
        """The packet API: what came out on the protected side since the last call (hex), oldest first."""
        return {"packets": [p.hex() for p in self.device.take_lan_output()]}

    def _op_load(self, req: dict[str, Any]) -> dict[str, Any]:
        self.device.load(int(req["count"]), int(req.get("concurrency", 64)))
        return {}

    def _op_stats(self, req: dict[str, Any]) -> dict[str, Any]:
        st = self.device.statistics()
        return {"stats": {
            "negotiations_started": st.negotiations_started,
            "negotiations_succeeded": st.negotiations_succeeded,
            "negotiations_failed": dict(st.negotiations_failed),
            "auth_failure_reasons": dict(st.auth_failure_reasons),
            "deletes_sent": st.deletes_sent,
            "deletes_received": st.deletes_received,
            "resets": st.resets,
            "cookies_sent": st.cookies_sent,
            "dropped": st.dropped,
            "misrouted": st.misrouted,
            "handed_over": st.handed_over,
            "handed_direct": st.handed_direct,
            "handoff_dropped": st.handoff_dropped,
            "lan_missteered": st.lan_missteered,
            "tun_steered": st.tun_steered,
            "workers": st.workers,
            "engines": st.engines,
            "ike_sas": sum(st.ike_sas.values()),
            "ipsec_sas": sum(st.ipsec_sas.values()),
            # ESP packets this gateway accepted and sent, over every SA it ever had (deleted ones included)
            "esp_packets_in": st.esp.get(("packets", "in"), 0),
            "esp_packets_out": st.esp.get(("packets", "out"), 0),
            # ESP packets the dataplane dropped, by reason (spi: no such SA, replay, icv, ...)
            "esp_drops": {reason: n for (kind, reason), n in st.esp.items() if kind == "drops"},
        }}

    def _op_offline(self, req: dict[str, Any]) -> dict[str, Any]:
        return {"offline": [
            {"peer": str(r.peer_address), "port": r.peer_port, "reason": r.reason, "version": r.version,
             "time": r.time}
            for r in self.device.offline()
        ]}

async def run_daemon(config: Config, options: DaemonOptions, config_path: str | None = None) -> int:
    daemon = Daemon(config, options, config_path)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, daemon.request_stop)
    try:
        await daemon.start()
    except (OSError, DeviceError) as exc:  # a port in use; hot standby that cannot run (keepalived missing)
        print(f"ikegate: cannot start: {exc}", file=sys.stderr)
        if daemon.control is not None:
            await daemon.control.close()  # removes the socket only if this process made it
        return 1
    stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    print(f"{stamp} {config.sysname}: listening on "
          f"{', '.join(daemon.device.local_addresses()) or 'no address'} "
          f"(IKE {options.ike_port}, NAT-T {options.natt_port})", file=sys.stderr, flush=True)
    await daemon.wait()
    try:
        # A clean stop takes a few seconds at most; whatever hangs past that must not keep us alive.
        await asyncio.wait_for(daemon.stop(), STOP_LIMIT)
    except TimeoutError:
        print("ikegate: shutdown did not finish in time; exiting anyway", file=sys.stderr)
    return 0

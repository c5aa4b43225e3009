"""Files and sockets of the management plane: ``save`` keeps the file's mode and is atomic, the control
socket refuses to replace what is not a stale socket of ours and survives hostile requests, and the
``ikegate cli -c`` transcript masks secrets."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from pathlib import Path

import pytest

from ikegate.cli.loader import load_config
from ikegate.daemon import Daemon, DaemonOptions, write_atomically
from ikegate.mgmt.control import MAX_DEPTH, MAX_LINE, ControlPathError, ControlServer, request
from tests.system.procs import free_port_pair
from tests.waiting import DEADLINE, until, wait_for

pytestmark = pytest.mark.system


def _daemon(path: Path, control: Path | None = None) -> Daemon:
    config, errors = load_config(path.read_text())
    assert errors == []
    port = free_port_pair()
    return Daemon(config, DaemonOptions(ike_port=port, natt_port=port + 1,
                                        control=str(control) if control else None), str(path))


def test_save_keeps_mode_and_owner_and_replaces_atomically(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.cfg"
    cfg.write_text("sysname OLD\n")
    os.chmod(cfg, 0o600)
    before = os.stat(cfg)
    shell = _daemon(cfg).new_shell()
    shell.run("system-view")
    shell.run("sysname NEW")
    shell.run("return")
    shell.run("save")
    assert shell.run("y").lines[-1] == "Info: Save the configuration successfully."
    after = os.stat(cfg)
    assert stat.S_IMODE(after.st_mode) == 0o600
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
    assert "sysname NEW" in cfg.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gw.cfg"]  # no temporary file left behind


def test_save_through_a_symbolic_link_replaces_its_target(tmp_path: Path) -> None:
    real = tmp_path / "real.cfg"
    real.write_text("sysname OLD\n")
    os.chmod(real, 0o640)
    link = tmp_path / "gw.cfg"
    link.symlink_to(real)
    write_atomically(str(link), "sysname NEW\n")
    assert link.is_symlink() and real.read_text() == "sysname NEW\n"
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o640


def test_failed_save_leaves_the_old_file_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails before the rename (here: the disk refuses the fsync) leaves the old file as it
    was and no temporary file behind."""
    cfg = tmp_path / "gw.cfg"
    cfg.write_text("sysname OLD\n")

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        write_atomically(str(cfg), "sysname NEW\n" * 1000)
    assert cfg.read_text() == "sysname OLD\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gw.cfg"]


def _server(path: Path) -> ControlServer:
    return ControlServer(str(path), {"echo": lambda req: {"echo": req.get("x")}})


def test_control_path_refuses_a_regular_file_and_a_live_socket(tmp_path: Path) -> None:
    async def main() -> None:
        victim = tmp_path / "important.txt"
        victim.write_text("keep me")
        with pytest.raises(ControlPathError, match="not a socket"):
            await _server(victim).start()
        assert victim.read_text() == "keep me"

        folder = tmp_path / "dir"
        folder.mkdir()
        with pytest.raises(ControlPathError):
            await _server(folder).start()
        assert folder.is_dir()

        live = tmp_path / "live.sock"
        first = _server(live)
        await first.start()
        try:
            with pytest.raises(ControlPathError, match="in use"):
                await _server(live).start()
            answer = await asyncio.to_thread(request, str(live), {"op": "echo", "x": 1})
            assert answer == {"ok": True, "echo": 1}  # the first gateway is still reachable
        finally:
            await first.close()
        assert not live.exists()
    asyncio.run(main())


def test_control_path_replaces_a_stale_socket_and_never_deletes_a_stranger(tmp_path: Path) -> None:
    async def main() -> None:
        path = tmp_path / "gw.sock"
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale.bind(str(path))  # bound, never listening: what a killed gateway leaves
        stale.close()
        server = _server(path)
        await server.start()
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
        answer = await asyncio.to_thread(request, str(path), {"op": "echo", "x": "y"})
        assert answer["echo"] == "y"
        # someone replaces our socket by a file while we run: at exit it stays
        os.unlink(path)
        path.write_text("not ours")
        await server.close()
        assert path.read_text() == "not ours"
    asyncio.run(main())


def test_run_refuses_a_control_path_that_is_a_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    cfg = tmp_path / "gw.cfg"
    cfg.write_text("sysname GW\n")
    victim = tmp_path / "notes.txt"
    victim.write_text("precious")
    port = free_port_pair()
    proc = subprocess.run([sys.executable, "-m", "ikegate", "run", str(cfg), "--control", str(victim),
                           "--ike-port", str(port), "--natt-port", str(port + 1)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "not a socket" in proc.stderr and "Traceback" not in proc.stderr
    assert victim.read_text() == "precious"
    # a socket someone answers on: another gateway runs there
    live = tmp_path / "live.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(live))
        listener.listen()
        proc = subprocess.run([sys.executable, "-m", "ikegate", "run", str(cfg), "--control", str(live),
                               "--ike-port", str(port), "--natt-port", str(port + 1)],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1
        assert "is in use (another gateway is running?)" in proc.stderr and "Traceback" not in proc.stderr
        assert stat.S_ISSOCK(os.lstat(live).st_mode)  # still there for its owner


def test_hostile_control_requests_get_errors_and_the_connection_lives(tmp_path: Path) -> None:
    async def main() -> None:
        path = tmp_path / "gw.sock"
        server = _server(path)
        await server.start()
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))

            async def ask(data: bytes) -> dict[str, object]:
                writer.write(data + b"\n")
                await writer.drain()
                answer = json.loads(await reader.readline())
                assert isinstance(answer, dict)
                return answer

            deep = await ask(b"[" * 100_000 + b"]" * 100_000)
            assert deep["ok"] is False and "nested" in str(deep["error"])
            deep_obj = await ask(b'{"op": "attach", "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}")
            assert deep_obj["ok"] is False
            # brackets inside strings do not count
            assert (await ask(json.dumps({"op": "echo", "x": "[" * (MAX_DEPTH * 4)}).encode()))["ok"] is True
            long = await ask(b'{"op": "echo", "x": "' + b"a" * (MAX_LINE * 2) + b'"}')
            assert long["ok"] is False and "longer" in str(long["error"])
            assert (await ask(b"\xff\xfe not json"))["ok"] is False
            assert await ask(b'{"op": "echo", "x": 7}') == {"ok": True, "echo": 7}
            writer.close()
        finally:
            await server.close()
    asyncio.run(main())


def test_cli_transcript_masks_secrets(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.cfg"
    cfg.write_text("sysname GW\n")
    daemon = _daemon(cfg)

    async def main() -> tuple[str, bool]:
        return await daemon.run_lines(["system-view", "ike peer p1", "pre-shared-key S3cretPSK extra-token",
                                       "pre-shared-key S3cretPSK"])
    out, failed = asyncio.run(main())
    assert failed
    assert "S3cretPSK" not in out
    assert "[GW-ike-peer-p1]pre-shared-key ****** ******" in out
    assert "S3cretPSK" not in "\n".join(daemon.logbuffer.render("GW"))


def test_run_reports_bad_and_binary_lines_without_secrets_or_traceback(tmp_path: Path) -> None:
    """The reported case: ``cfg:11: pre-shared-key S3cretPSK extra-token: Error: Too many parameters``
    printed the key; a binary file ended in a ``UnicodeDecodeError`` traceback."""
    import subprocess
    import sys

    cfg = tmp_path / "gw.cfg"
    cfg.write_bytes(b"sysname GW\nike peer p1\n pre-shared-key S3cretPSK extra-token\n\x00\x9f\xff binary\x01\n"
                    b"aaa\n local-user bob password irreversible-cipher Passw0rd!23 more\n")
    control = tmp_path / "gw.sock"
    err = tmp_path / "gw.stderr"
    port = free_port_pair()
    with open(err, "w") as errf:
        proc = subprocess.Popen([sys.executable, "-m", "ikegate", "run", str(cfg), "--control", str(control),
                                 "--ike-port", str(port), "--natt-port", str(port + 1)],
                                stdout=subprocess.DEVNULL, stderr=errf)
    try:
        wait_for(lambda: control.exists() or proc.poll() is not None, what="gateway to start")
        assert proc.poll() is None, err.read_text()
        text = err.read_text()
        assert f"{cfg}:3: pre-shared-key ****** ******: Error: Too many parameters" in text
        assert f"{cfg}:4: \\x00\\x9f\\xff binary\\x01: Error: The line contains bytes" in text
        assert f"{cfg}:6: local-user bob password irreversible-cipher ****** ******: Error:" in text
        assert "S3cretPSK" not in text and "Passw0rd!23" not in text and "Traceback" not in text
        assert request(str(control), {"op": "shell", "lines": ["display current-configuration"]})["ok"]
    finally:
        proc.terminate()
        proc.wait(DEADLINE)
    assert not control.exists()  # our own socket is removed at exit


def test_daemon_log_flood_is_aggregated_on_every_mirror(tmp_path: Path) -> None:
    """A burst of identical failures reaches stderr (and syslog: the same listener path) as a few lines
    and, once the window ends, one summary the daemon flushes by itself."""
    import io

    cfg = tmp_path / "gw.cfg"
    cfg.write_text("sysname GW\n")
    config, _ = load_config(cfg.read_text())
    stream = io.StringIO()
    port = free_port_pair()
    daemon = Daemon(config, DaemonOptions(ike_port=port, natt_port=port + 1, log_stream=stream), str(cfg))
    daemon.logbuffer.suppressor.interval = 0.5  # a short window, so the test need not wait 30 s
    daemon.log("SSH", 4, "LOGIN_FAILED", "Failed to log in through SSH. (Ip=192.0.2.9, UserName=root, "
               "AuthType=password, Times=1, Reason=wrong password)")

    async def main() -> None:
        await daemon.start()
        try:
            for _ in range(5000):
                daemon.log("IKE", 4, "NEGOTIATION_FAILED", "IKE negotiation failed. (RemoteAddress=198.51.100.7, "
                           "Reason=timeout)")
            await until(lambda: "Suppressed" in stream.getvalue(), what="the summary line")
        finally:
            await daemon.stop()

    asyncio.run(main())
    lines = stream.getvalue().splitlines()
    failed = [line for line in lines if "NEGOTIATION_FAILED" in line]
    assert len(failed) == 4  # three in full, one summary
    assert "(Suppressed 4997 similar messages from this source in the last 0.5 s.)" in failed[-1]
    assert any("LOGIN_FAILED" in line for line in lines)
    assert lines == [r.render("GW") for r in daemon.logbuffer]  # the buffer and its mirror agree

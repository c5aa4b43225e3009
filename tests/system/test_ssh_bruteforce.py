"""SSH password guessing from one address with many connections: guesses are serialized and slowed per
address, the address is blocked after repeated failures (no password hash computed for it any more),
and its connections waiting to log in are capped. Real asyncssh clients against an in-process daemon."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncssh
import pytest

from ikegate.cli.loader import load_config
from ikegate.cli.render.config import render_config
from ikegate.daemon import Daemon
from ikegate.mgmt import ssh
from tests.system.test_ssh import ADMIN_PW, access_config, connect, free_tcp_port, log_text, loopback, running
from tests.waiting import until

pytestmark = pytest.mark.system


async def guess(address: str, port: int, source: str, password: str = "wrong-password") -> float:
    """One wrong password on a fresh connection; how long until the client heard the refusal."""
    start = time.monotonic()
    with pytest.raises(asyncssh.PermissionDenied):
        async with connect(address, port, "admin", password, source=source):
            pass
    return time.monotonic() - start


async def refused_before_login(address: str, port: int, source: str) -> None:
    """Even the right password does not get in: the connection is closed before authentication."""
    with pytest.raises((asyncssh.Error, OSError)):
        async with connect(address, port, "admin", ADMIN_PW, source=source):
            pass


async def logs_in(address: str, port: int, source: str) -> None:
    async with connect(address, port, "admin", ADMIN_PW, source=source) as conn:
        result = await conn.run("display version", check=False)
        assert result.exit_status is not None


def with_gateway(tmp_path: Path, scenario: Callable[[Daemon, str, int], Awaitable[None]]) -> None:
    """Run ``scenario(daemon, address, port)`` against an in-process gateway with SSH on a fresh address."""
    address = loopback()
    port = free_tcp_port(address)

    async def main() -> None:
        async with running(tmp_path, access_config(address, port)) as daemon:
            await scenario(daemon, address, port)

    asyncio.run(main())


def test_parallel_guesses_from_one_address_wait_for_each_other(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ssh, "DELAY_BASE", 0.25)

    async def scenario(daemon: Daemon, address: str, port: int) -> None:
        source = "127.0.0.31"
        times = sorted(await asyncio.gather(*(guess(address, port, source)
                                              for _ in range(ssh.MAX_PREAUTH_PER_SOURCE))))
        # Served one after the other: the k-th answer comes after the delays of all before it
        # (0.25, 0.5, 1, 2 s). Each connection waiting only its own delay would answer the last
        # one after 2 s, not 3.75 s. (Lower bounds only: a busy machine makes them later, not earlier.)
        total = 0.0
        for k, elapsed in enumerate(times):
            total += 0.25 * 2 ** k
            assert elapsed >= total - 0.05, (k, times)
        logs = log_text(daemon)
        for k in range(1, 4):  # (later ones are aggregated by the log buffer)
            assert f"Ip={source}, UserName=admin, AuthType=password, Times={k}," in logs
        assert daemon.ssh.source(source).count == ssh.MAX_PREAUTH_PER_SOURCE
        assert daemon.ssh.password_checks == ssh.MAX_PREAUTH_PER_SOURCE
        # another address has its own count: its first failure waits the first delay, not the fifth
        await guess(address, port, "127.0.0.32")
        assert daemon.ssh.source("127.0.0.32").count == 1

    with_gateway(tmp_path, scenario)


def test_an_address_is_blocked_after_repeated_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ssh, "DELAY_BASE", 0.01)

    async def scenario(daemon: Daemon, address: str, port: int) -> None:
        source = "127.0.0.41"
        for _ in range(ssh.BLOCK_FAILURES):
            await guess(address, port, source)
        assert (f"SSH/4/IP_BLOCKED(l):The SSH client address is blocked after repeated login failures. "
                f"(Ip={source}, Failures={ssh.BLOCK_FAILURES}") in log_text(daemon)
        checks = daemon.ssh.password_checks
        await asyncio.gather(*(refused_before_login(address, port, source) for _ in range(10)))
        assert daemon.ssh.password_checks == checks  # no scrypt spent on a blocked address
        assert f"SSH/4/CONNECTION_REFUSED(l):An SSH connection was refused. (Ip={source}, Reason=the source " \
               "address is blocked)" in log_text(daemon)
        await logs_in(address, port, "127.0.0.42")  # others are not affected
        out, _ = await daemon.run_lines(["display ssh server ip-block list", "display ssh server ip-block all"])
        rows = [line.split() for line in out.splitlines() if line.startswith(f" {source} ")]
        assert rows[0][:2] == [source, "_public_"] and 0 < int(rows[0][2]) <= ssh.BLOCK_TIME
        assert rows[1] == [source, "_public_", "BLOCKED", str(ssh.BLOCK_FAILURES)]
        # activate ... unblocks at once; blocking again takes a full run of failures
        out, failed = await daemon.run_lines([f"activate ssh server ip-block ip-address {source}"])
        assert not failed and "not blocked" not in out
        await logs_in(address, port, source)
        out, _ = await daemon.run_lines([f"activate ssh server ip-block ip-address {source}"])
        assert f"Info: The IP address {source} is not blocked." in out
        for _ in range(ssh.BLOCK_FAILURES):
            await guess(address, port, source)
        await refused_before_login(address, port, source)
        # `ssh server ip-block disable` lifts it (the address is remembered, not the setting)
        _, failed = await daemon.run_lines(["system-view", "ssh server ip-block disable"])
        assert not failed
        await logs_in(address, port, source)

    with_gateway(tmp_path, scenario)


def test_connections_waiting_to_log_in_are_capped_per_address(tmp_path: Path) -> None:
    source = "127.0.0.51"

    async def scenario(daemon: Daemon, address: str, port: int) -> None:
        idle: list[socket.socket] = []
        try:
            for _ in range(ssh.MAX_PREAUTH_PER_SOURCE):
                sock = socket.create_connection((address, port), source_address=(source, 0))
                idle.append(sock)  # connected, never says a word
            await until(lambda: _preauth(daemon, source) == ssh.MAX_PREAUTH_PER_SOURCE, what="idle connections counted")
            await refused_before_login(address, port, source)
            assert f"(Ip={source}, Reason=too many connections from the address are logging in)" in log_text(daemon)
            assert daemon.ssh.password_checks == 0
            await logs_in(address, port, "127.0.0.52")
        finally:
            for sock in idle:
                sock.close()
        await until(lambda: _preauth(daemon, source) == 0, what="idle connections gone")
        await logs_in(address, port, source)

    with_gateway(tmp_path, scenario)


def _preauth(daemon: Daemon, source: str) -> int:
    return daemon.ssh.source(source).preauth


def test_authentication_retries_and_ip_block_commands_round_trip() -> None:
    text = access_config("192.0.2.1", 22, "ssh server authentication-retries 2\nssh server ip-block disable")
    config, errors = load_config(text)
    assert errors == []
    assert config.ssh_server.authentication_retries == 2 and config.ssh_server.ip_block is False
    rendered = "\n".join(render_config(config))
    assert "ssh server authentication-retries 2" in rendered and "ssh server ip-block disable" in rendered
    again, errors = load_config(rendered + "\nundo ssh server authentication-retries\nundo ssh server ip-block disable")
    assert errors == []
    assert again.ssh_server.authentication_retries == 3 and again.ssh_server.ip_block is True
    assert "authentication-retries" not in "\n".join(render_config(again))
    _, errors = load_config("ssh server authentication-retries 6")
    assert len(errors) == 1  # VRP's range is 1..5

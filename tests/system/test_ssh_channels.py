"""Several SSH channels on one connection: sequential and concurrent exec channels and shells, each with
its own VTY and its own shell state, within the VTY limit; exec errors echo the line so the caret sits
under the word. Real clients (asyncssh, paramiko) against an in-process daemon."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ikegate.mgmt.ssh import VTY_FULL
from tests.system.test_ssh import ADMIN_PW, Term, access_config, connect, free_tcp_port, log_text, loopback, running
from tests.waiting import DEADLINE

pytestmark = pytest.mark.system


def test_sequential_exec_channels_and_the_caret(tmp_path: Path) -> None:
    address = loopback()
    port = free_tcp_port(address)

    async def scenario() -> None:
        async with running(tmp_path, access_config(address, port)) as daemon:
            async with connect(address, port, "admin", ADMIN_PW) as conn:
                for _ in range(3):
                    result = await conn.run("display this")
                    assert result.exit_status == 0 and "<GW>" not in str(result.stdout)
                ok = await conn.run("display version | include uptime")
                assert ok.exit_status == 0 and str(ok.stdout).startswith("HUAWEI USG6000V uptime is")
                bad = await conn.run("display ike sa foo")
                assert bad.exit_status == 1
                echoed, caret, error = str(bad.stdout).split("\r\n")[:3]
                assert echoed == "<GW>display ike sa foo"
                assert caret == " " * echoed.index("foo") + "^"
                assert error == "Error: Too many parameters found at '^' position."
                assert (await conn.run("display this")).exit_status == 0  # the connection is still there
            assert log_text(daemon).count("Reason=command done") == 6

    asyncio.run(scenario())


def test_concurrent_channels_share_the_vty_limit(tmp_path: Path) -> None:
    address = loopback()
    port = free_tcp_port(address)
    extra = "user-interface maximum-vty 2\n"

    async def scenario() -> None:
        async with running(tmp_path, access_config(address, port, extra)), \
                connect(address, port, "admin", ADMIN_PW) as conn:
            shell = await Term.open(conn)
            await shell.until(b"<GW>")
            assert "Enter system view" in await shell.run("system-view", b"[GW]")
            # a second channel at the same time: its own VTY and its own view (user view, not system)
            own = await conn.run("sysname OTHER")
            assert own.exit_status == 1 and "Error: Unrecognized command" in str(own.stdout)
            second = await Term.open(conn)
            await second.until(b"<GW>")  # a second shell: user view, whatever the first one does
            # both VTYs taken: a third channel is refused, the connection and its shells go on
            refused = await conn.run("display this")
            assert refused.exit_status == 1 and VTY_FULL in str(refused.stdout)
            assert "[GW]" in await shell.run("display this", b"[GW]")
            second.process.stdin.write(b"quit\r")
            assert (await second.process.wait()).exit_status == 0
            # quitting one shell leaves the other: the connection closes with its last shell
            assert "[GW]" in await shell.run("display this", b"[GW]")
            assert (await conn.run("display this")).exit_status == 0  # its VTY is free again
            await shell.run("return", b"<GW>")
            shell.process.stdin.write(b"quit\r")
            assert (await shell.process.wait()).exit_status == 0
            await asyncio.wait_for(conn.wait_closed(), DEADLINE)

    asyncio.run(scenario())


def test_paramiko_exec_twice_on_one_transport(tmp_path: Path) -> None:
    """What netmiko-style tooling does with paramiko: two ``exec_command`` on one transport."""
    import paramiko

    address = loopback()
    port = free_tcp_port(address)

    async def scenario() -> None:
        async with running(tmp_path, access_config(address, port)):
            def client() -> list[tuple[int, str]]:
                ssh = paramiko.SSHClient()
                ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())
                ssh.connect(address, port, username="admin", password=ADMIN_PW, look_for_keys=False,
                            allow_agent=False, timeout=DEADLINE, banner_timeout=DEADLINE, auth_timeout=DEADLINE)
                try:
                    out = []
                    for command in ("display version", "display this"):
                        _, stdout, _ = ssh.exec_command(command, timeout=DEADLINE)
                        text = stdout.read().decode()
                        out.append((stdout.channel.recv_exit_status(), text))
                    return out
                finally:
                    ssh.close()

            (s1, t1), (s2, t2) = await asyncio.to_thread(client)
            assert (s1, s2) == (0, 0) and "Huawei Versatile Routing Platform Software" in t1 and "#" in t2

    asyncio.run(scenario())

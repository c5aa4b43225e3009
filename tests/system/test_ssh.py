"""The SSH server: real logins with asyncssh's client against an in-process daemon, and the netmiko
contract (netmiko's real ``huawei`` driver against an ``ikegate run`` process with a tunnel up)."""

from __future__ import annotations

import asyncio
import random
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import pytest

from ikegate.cli.loader import load_config
from ikegate.daemon import Daemon, DaemonOptions
from ikegate.mgmt.ssh import IDLE_CLOSED, VTY_FULL
from tests.system.procs import Proc, free_port_pair, gateway, lab_text
from tests.waiting import DEADLINE, until, wait_for

pytestmark = pytest.mark.system

ADMIN_PW = "Admin@ikegate1"
VIEWER_PW = "Viewer@ikegate1"
NOSSH_PW = "Console@ikegate1"
#: netmiko's connection, banner and login waits (its defaults, 10-15 s, are short for a loaded machine)
NETMIKO_WAITS: dict[str, float] = {"conn_timeout": DEADLINE, "auth_timeout": DEADLINE, "banner_timeout": DEADLINE}


def free_tcp_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def loopback() -> str:
    return f"127.{random.randrange(1, 250)}.{random.randrange(1, 250)}.{random.randrange(2, 250)}"


def access_config(address: str, port: int, extra: str = "") -> str:
    """A gateway with one interface address (where SSH listens) and three local users."""
    return f"""
sysname GW
interface GigabitEthernet0/0/1
 ip address {address} 255.0.0.0
aaa
 local-user admin password irreversible-cipher {ADMIN_PW}
 local-user admin level 3
 local-user admin service-type ssh
 local-user viewer password irreversible-cipher {VIEWER_PW}
 local-user viewer level 1
 local-user viewer service-type ssh
 local-user console password irreversible-cipher {NOSSH_PW}
 local-user console service-type terminal
stelnet server enable
ssh server port {port}
user-interface vty 0 4
 authentication-mode aaa
{extra}
"""


@asynccontextmanager
async def running(tmp_path: Path, text: str) -> AsyncIterator[Daemon]:
    path = tmp_path / "gw.cfg"
    path.write_text(text)
    config, errors = load_config(text)
    assert errors == []
    ike = free_port_pair()
    daemon = Daemon(config, DaemonOptions(ike_port=ike, natt_port=ike + 1), str(path))
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()


def connect(address: str, port: int, user: str, password: str | None = None, *, source: str | None = None,
            key: asyncssh.SSHKey | None = None) -> AbstractAsyncContextManager[asyncssh.SSHClientConnection]:
    return asyncssh.connect(address, port, username=user, password=password, known_hosts=None,
                            client_keys=[key] if key is not None else None, agent_path=None,
                            local_addr=(source, 0) if source else None, connect_timeout=DEADLINE,
                            login_timeout=DEADLINE)


class Term:
    """An interactive session with a PTY, read until a pattern (as netmiko and people do)."""

    def __init__(self, process: asyncssh.SSHClientProcess[bytes]) -> None:
        self.process = process
        self.seen = b""

    @classmethod
    async def open(cls, conn: asyncssh.SSHClientConnection) -> Term:
        return cls(await conn.create_process(term_type="vt100", encoding=None))

    async def until(self, pattern: bytes, timeout: float = DEADLINE) -> bytes:
        buf = b""
        async with asyncio.timeout(timeout):
            while not buf or pattern not in buf:
                chunk = await self.process.stdout.read(4096)
                if not chunk:
                    break
                buf += chunk
        self.seen += buf
        return buf

    async def run(self, line: str, prompt: bytes) -> str:
        self.process.stdin.write(line.encode() + b"\r")
        return (await self.until(prompt)).decode()


def log_text(daemon: Daemon) -> str:
    return "\n".join(daemon.logbuffer.render("GW"))


def test_password_login_levels_and_logs(tmp_path: Path) -> None:
    address = loopback()
    port = free_tcp_port(address)

    async def scenario() -> None:
        async with running(tmp_path, access_config(address, port)) as daemon:
            async with connect(address, port, "admin", ADMIN_PW) as conn:
                term = await Term.open(conn)
                first = (await term.until(b"<GW>")).decode()
                before_prompt = first[: first.index("<GW>")]
                assert before_prompt.startswith("Info: The max number of VTY users is 5")
                assert not re.search(r"[>\]]\s*$", before_prompt.rstrip("\r\n"))  # netmiko would take it for a prompt
                await term.run("screen-length 5 temporary", b"<GW>")
                assert "Enter system view" in await term.run("system-view", b"[GW]")
                shown = await term.run("display current-configuration", b"---- More ----")
                assert "sysname GW" in shown and "local-user" not in shown
                while b"[GW]" not in term.seen[-8:]:  # space: one more page
                    term.process.stdin.write(b" ")
                    shown += (await term.until(b"")).decode()
                assert "local-user admin password irreversible-cipher %^%#" in shown
                await term.run("return", b"<GW>")
                term.process.stdin.write(b"quit\r")
                assert (await term.process.wait()).exit_status == 0
            async with connect(address, port, "viewer", VIEWER_PW) as conn:
                term = await Term.open(conn)
                await term.until(b"<GW>")
                out = await term.run("system-view", b"<GW>")
                assert "Error: Unrecognized command found at '^' position." in out
                assert "Logging buffer" in await term.run("display logbuffer", b"<GW>")
            logs = log_text(daemon)
            assert "SSH/5/LOGIN(l):The SSH user logged in. (Ip=127.0.0.1, UserName=admin, AuthType=password, " \
                   "Level=3)" in logs
            assert "UserName=viewer, AuthType=password, Level=1" in logs
            assert "Task=vty0, Ip=127.0.0.1, User=admin, Command=\"system-view\"" in logs
            assert "SSH/5/LOGOUT" in logs
            for clear in (ADMIN_PW, VIEWER_PW, NOSSH_PW):
                assert clear not in logs
                assert clear not in (tmp_path / "gw.cfg.ssh_host_ed25519_key").read_text()
            key_file = tmp_path / "gw.cfg.ssh_host_ed25519_key"
            assert key_file.stat().st_mode & 0o777 == 0o600

    asyncio.run(scenario())


def test_failed_logins_are_refused_logged_and_slowed(tmp_path: Path) -> None:
    address = loopback()
    port = free_tcp_port(address)

    async def attempt(user: str, password: str, source: str) -> float:
        start = time.monotonic()
        with pytest.raises(asyncssh.PermissionDenied):
            async with connect(address, port, user, password, source=source):
                pass
        return time.monotonic() - start

    async def twice(user: str, password: str, source: str) -> tuple[float, float]:
        return await attempt(user, password, source), await attempt(user, password, source)

    async def scenario() -> None:
        async with running(tmp_path, access_config(address, port)) as daemon:
            # The pause each failure gets, as the server chose it: how long an attempt takes on a busy
            # machine says only that the pause was at least that (the lower bounds below).
            delays: dict[str, list[float]] = {}
            failed = daemon.ssh.failed

            def recording(ip: str, *args: object) -> float:
                delay = failed(ip, *args)
                delays.setdefault(ip, []).append(delay)
                return delay

            daemon.ssh.failed = recording  # type: ignore[method-assign]
            sources = ["127.0.0.21", "127.0.0.22", "127.0.0.23"]
            (wrong1, wrong2), nossh, unknown = await asyncio.gather(
                twice("admin", "wrong-password", sources[0]),
                attempt("console", NOSSH_PW, sources[1]),  # right password, but no service-type ssh
                attempt("ghost", ADMIN_PW, sources[2]),
            )
            assert delays == {sources[0]: [1.0, 2.0], sources[1]: [1.0], sources[2]: [1.0]}  # 1 s, then 2 s
            assert wrong1 > 0.9 and wrong2 > 1.9 and nossh > 0.9 and unknown > 0.9  # and they were waited
            logs = log_text(daemon)
            assert ("SSH/4/LOGIN_FAILED(l):Failed to log in through SSH. (Ip=127.0.0.21, UserName=admin, "
                    "AuthType=password, Times=2, Reason=wrong password)") in logs
            assert "Ip=127.0.0.22, UserName=console, AuthType=password, Times=1, Reason=the local user has no ssh " \
                   "service type" in logs
            assert "Ip=127.0.0.23, UserName=ghost" in logs
            assert "wrong-password" not in logs and ADMIN_PW not in logs and NOSSH_PW not in logs
            # a success from an address forgets its failures
            async with connect(address, port, "admin", ADMIN_PW, source=sources[0]):
                pass
            assert await attempt("admin", "wrong-again", sources[0]) > 0.9
            assert delays[sources[0]] == [1.0, 2.0, 1.0]

    asyncio.run(scenario())


def test_public_key_login(tmp_path: Path) -> None:
    address = loopback()
    port = free_tcp_port(address)
    alice = asyncssh.generate_private_key("ssh-ed25519")
    stranger = asyncssh.generate_private_key("ssh-ed25519")
    public = alice.export_public_key("openssh").decode().split()
    extra = f"""
ecc peer-public-key alicekey
 public-key {public[0]} {public[1]}
 peer-public-key end
ssh user alice authentication-type ecc
ssh user alice assign ecc-key alicekey
ssh user alice service-type stelnet
aaa
 local-user alice level 2
 local-user alice service-type ssh
"""

    async def scenario() -> None:
        async with running(tmp_path, access_config(address, port, extra)) as daemon:
            async with connect(address, port, "alice", key=alice) as conn:
                term = await Term.open(conn)
                await term.until(b"<GW>")
                assert "Enter system view" in await term.run("system-view", b"[GW]")  # level 2
            async with connect(address, port, "alice", key=alice) as conn:
                result = await conn.run("display this")  # a command without a PTY: exec
                assert result.exit_status == 0
            with pytest.raises(asyncssh.PermissionDenied):
                async with connect(address, port, "alice", key=stranger):
                    pass
            with pytest.raises(asyncssh.PermissionDenied):  # ecc only: no password for alice anyway
                async with connect(address, port, "alice", "whatever-pass"):
                    pass
            logs = log_text(daemon)
            assert "UserName=alice, AuthType=publickey, Level=2" in logs
            assert "UserName=alice, AuthType=publickey, Reason=the public key is not the one assigned" in logs

    asyncio.run(scenario())


def test_session_limit_and_idle_timeout(tmp_path: Path) -> None:
    address = loopback()
    port = free_tcp_port(address)
    extra = "user-interface maximum-vty 2\nuser-interface vty 0 4\n idle-timeout 0 2\n"

    async def scenario() -> None:
        async with running(tmp_path, access_config(address, port, extra)) as daemon:
            loop = asyncio.get_running_loop()
            logouts: list[tuple[float, str]] = []  # when the daemon logged each logout (its own clock)
            daemon.logbuffer.listeners.append(
                lambda r: logouts.append((loop.time(), r.text)) if r.brief == "LOGOUT" else None)
            async with connect(address, port, "admin", ADMIN_PW) as c1, connect(address, port, "admin", ADMIN_PW) as c2:
                t1 = await Term.open(c1)
                await t1.until(b"<GW>")  # t1 holds vty0 before t2 asks for a line
                t2 = await Term.open(c2)
                await t2.until(b"<GW>")
                async with connect(address, port, "viewer", VIEWER_PW) as c3:
                    t3 = await Term.open(c3)
                    refused = await t3.until(b"\n")
                    assert refused.decode().strip() == VTY_FULL
                    assert (await t3.process.wait()).exit_status == 1
                    await asyncio.wait_for(c3.wait_closed(), DEADLINE)
                started = loop.time()
                await t2.run("display this", b"<GW>")  # activity: t2's idle time starts again
                closed = (await t1.until(IDLE_CLOSED.encode())).decode()
                assert IDLE_CLOSED in closed
                await asyncio.wait_for(c1.wait_closed(), DEADLINE)
                await asyncio.wait_for(c2.wait_closed(), DEADLINE)
            logs = log_text(daemon)
            assert "Reason=the number of VTY users reached the upper limit" in logs
            idle = [(t, text) for t, text in logouts if "Reason=idle timeout" in text]
            # t1 (vty0), idle since before the activity, goes first; t2 (vty1) a full idle time after it
            assert [("Task=vty0" in text, "Task=vty1" in text) for _, text in idle] == [(True, False), (False, True)]
            assert idle[1][0] - started >= 2.0, (started, idle)

    asyncio.run(scenario())


def test_listen_addresses_and_reconfiguration(tmp_path: Path) -> None:
    address = loopback()
    port = free_tcp_port(address)
    other = "127.0.0.1"

    def reachable(host: str, p: int) -> bool:
        try:
            socket.create_connection((host, p), timeout=DEADLINE).close()
        except OSError:
            return False
        return True

    # 192.0.2.1 (an interface address this host does not own) is logged and skipped
    extra = "interface GigabitEthernet0/0/2\n ip address 192.0.2.1 255.255.255.0\n"

    async def scenario() -> None:
        async with running(tmp_path, access_config(address, port, extra)) as daemon:
            assert daemon.ssh.bound == [(address, port)]  # the interface addresses only: never 0.0.0.0
            assert "LISTEN_FAILED(l):The SSH server cannot listen. (Address=192.0.2.1" in log_text(daemon)
            assert not reachable(other, port)
            new_port = free_tcp_port(other)
            _, failed = await daemon.run_lines(["system-view", f"ssh server listen-address {other}",
                                                f"ssh server port {new_port}"])
            assert not failed
            await until(lambda: daemon.ssh.bound == [(other, new_port)], what="listening on the new address")
            assert reachable(other, new_port) and not reachable(address, port)
            await daemon.run_lines(["system-view", "undo stelnet server enable"])
            await until(lambda: daemon.ssh.bound == [], what="no longer listening")
            assert not reachable(other, new_port)
            with pytest.raises(OSError):
                async with connect(other, new_port, "admin", ADMIN_PW):
                    pass
            await daemon.run_lines(["system-view", "stelnet server enable"])
            await until(lambda: daemon.ssh.bound == [(other, new_port)], what="listening on the new address")
            async with connect(other, new_port, "admin", ADMIN_PW) as conn:
                assert "sysname GW" in str((await conn.run("display current-configuration")).stdout)

    asyncio.run(scenario())


# --- the netmiko contract ------------------------------------------------------------------------
@dataclass
class NetmikoLab:
    """HQ (SSH on ``hq_addr:ssh_port``) and Branch1, two ``ikegate run`` processes with the tunnel up."""

    hq_addr: str
    br_addr: str
    ssh_port: int
    hq: Proc


@contextmanager
def netmiko_lab(tmp_path: Path, net: int) -> Iterator[NetmikoLab]:
    n = random.randrange(20, 120)
    hq_addr, br_addr = f"127.0.{net}.{n}", f"127.0.{net}.{n + 100}"
    ssh_port = free_tcp_port(hq_addr)
    ike = free_port_pair()
    hq_cfg = lab_text("hq", **{"127.0.0.11": hq_addr}) + access_config(hq_addr, ssh_port).replace("sysname GW", "")
    br_cfg = lab_text("branch1", **{"127.0.0.11": hq_addr, "127.0.0.12": br_addr})
    with gateway(tmp_path, "hq", hq_cfg, ike) as hq, gateway(tmp_path, "br", br_cfg, ike) as br:
        wait_for(lambda: hq.phases() == [1, 2] and br.phases() == [1, 2], what="tunnel up")
        yield NetmikoLab(hq_addr, br_addr, ssh_port, hq)


def test_netmiko_huawei_driver(tmp_path: Path) -> None:
    """netmiko's ``huawei`` driver, unchanged, against ``ikegate run`` with a tunnel up (the brief's
    contract: connect, display, one batched config set, save, disconnect)."""
    from netmiko import ConnectHandler

    with netmiko_lab(tmp_path, 2) as lab:
        hq, hq_addr, br_addr, ssh_port = lab.hq, lab.hq_addr, lab.br_addr, lab.ssh_port
        device = ConnectHandler(device_type="huawei", host=hq_addr, port=ssh_port, username="admin",
                                password=ADMIN_PW, fast_cli=True, **NETMIKO_WAITS)
        try:
            assert device.base_prompt == "HQ"
            table = device.send_command("display ike sa")
            assert "Conn-ID" in table and br_addr in table
            config = device.send_command("display current-configuration")
            assert "---- More ----" not in config and config.rstrip().endswith("return")
            out = device.send_config_set(["sysname HQ-NETMIKO", "ike proposal 20", "sa duration 7200"])
            assert "Error" not in out, out
            assert device.find_prompt() == "<HQ-NETMIKO>"
            saved = device.save_config()
            assert "Save the configuration successfully" in saved
        finally:
            device.disconnect()
        text = (tmp_path / "hq.cfg").read_text()
        assert "sysname HQ-NETMIKO" in text and "ike proposal 20\n sa duration 7200\n" in text
        assert ADMIN_PW not in text and "local-user admin password irreversible-cipher %^%#" in text
        assert (tmp_path / "hq.cfg.ssh_host_ed25519_key").exists()
        logs = "\n".join(hq.call("logbuffer")["lines"])
        assert "SSH/5/LOGIN(l):The SSH user logged in." in logs and 'Command="save"' in logs


def test_three_password_failures_close_the_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """VRP's ``ssh server authentication-retries`` default (3): one connection cannot guess on forever.
    (Driven below the transport: asyncssh's client and paramiko both give up or reconnect after one
    failure, so no stock client retries on the same connection.)"""
    from ikegate.mgmt import ssh

    monkeypatch.setattr(ssh, "DELAY_CAP", 0.0)
    address = loopback()
    port = free_tcp_port(address)

    class FakeConn:
        def __init__(self) -> None:
            self.disconnected: list[int] = []

        def disconnect(self, code: int, reason: str) -> None:
            self.disconnected.append(code)

    async def scenario() -> None:
        async with running(tmp_path, access_config(address, port)) as daemon:
            connection = ssh._Connection(daemon.ssh)
            fake = FakeConn()
            connection.conn = fake  # type: ignore[assignment]
            connection.ip = "127.0.0.99"
            assert not await connection.validate_password("admin", "bad-1")
            assert not await connection.validate_password("admin", "bad-2")
            assert fake.disconnected == []
            assert not await connection.validate_password("admin", "bad-3")
            assert fake.disconnected == [asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE]
            assert "Ip=127.0.0.99, UserName=admin, AuthType=password, Times=3" in log_text(daemon)

    asyncio.run(scenario())

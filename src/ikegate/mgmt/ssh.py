"""The SSH (STelnet) server: the VRP shell over SSH, inside the daemon's event loop.

asyncssh does the transport and authentication; everything after login is the same sans-I/O
:class:`~ikegate.cli.shell.Shell` the console and the control socket drive. asyncssh's own line editor
is off (``line_editor=False``) because the shell echoes and edits itself — VRP's ``?`` and Tab answer
in the middle of a line, which a line-at-a-time editor cannot do — so keystrokes go through as bytes.

Who may log in is the configuration's business (:mod:`ikegate.policy.users`), read afresh at every
attempt so a ``local-user`` change applies to the next login without a restart. The server only adds
what a listener must: the log lines (``SSH/5/LOGIN``, ``SSH/4/LOGIN_FAILED``, ``SSH/5/LOGOUT``,
``SSH/4/IP_BLOCKED``, ``SSH/4/CONNECTION_REFUSED``), the VTY limit (``user-interface maximum-vty``,
default 5) and the idle timeout of ``user-interface vty 0 4``. The client is never told which check refused it.

Password guessing is slowed per client *address*, not per connection, because an attacker opens
connections in parallel (150 connections x 3 guesses once made 450 guesses in 30 s):

* the password attempts of one address are checked one at a time, and after a failure the next one
  waits 1, 2, 4, 8 s (growing per address, :data:`DELAY_CAP`): parallel connections queue behind each
  other instead of each waiting its own delay;
* at most ``ssh server authentication-retries`` (default 3) failures per connection, then it is closed;
* an address with :data:`BLOCK_FAILURES` failures within :data:`BLOCK_PERIOD` s is blocked for
  :data:`BLOCK_TIME` s (VRP's defaults: 6 failures in 5 minutes block for 5 minutes; ``ssh server
  ip-block disable`` turns it off): its new connections are closed before the key exchange and its
  attempts in flight are refused without running the password hash;
* at most :data:`MAX_PREAUTH_PER_SOURCE` connections per address may be waiting to log in; more are
  closed at once, before the key exchange costs anything.

Listening: on ``ssh server listen-address`` when configured, else on every interface address — never on
the wildcard address unless it is configured. An address that cannot be bound (an interface address the
host does not own) is logged and skipped, the others still listen. :meth:`SshService.reconcile` after
each command starts, moves or stops the listeners when the configuration asks; sessions already open
stay open.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import tempfile
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import asyncssh

from ikegate.cli.commands.ssh_blocks import SourceState
from ikegate.cli.pager import crlf
from ikegate.cli.shell import Shell
from ikegate.mgmt.pacing import chunks_paced, pump
from ikegate.policy.model import Config
from ikegate.policy.users import (
    KEY_TYPES,
    KeyKind,
    LocalUser,
    LoginRefused,
    PasswordHash,
    SshAuthType,
    effective_level,
    ssh_login_allowed,
)

DELAY_BASE = 1.0  # seconds: the pause after an address's first failed password (then doubled)
DELAY_CAP = 8.0  # seconds: the longest pause after a failed password
FAILURE_MEMORY = 300.0  # seconds without failure after which an address starts again from 1 s
BLOCK_FAILURES = 6  # failed passwords from one address within BLOCK_PERIOD that block it
BLOCK_PERIOD = 300.0  # seconds
BLOCK_TIME = 300.0  # seconds an address stays blocked
MAX_PREAUTH_PER_SOURCE = 4  # connections from one address not yet logged in
MAX_SOURCES = 4096  # addresses remembered before idle ones are forgotten
READ_SIZE = 4096
CLOSE_GRACE = 2.0  # seconds to let a closing session's output reach the client
HOST_KEY_SUFFIX = ".ssh_host_ed25519_key"

VTY_FULL = "Error: The number of VTY users has reached the upper limit. Try again later."
IDLE_CLOSED = "Info: The connection was closed because it was idle for too long."

# A password check against this hash when the user does not exist costs the same as a real one, so the
# time to fail does not tell which user names exist.
_DUMMY_HASH = PasswordHash.create("ikegate-no-such-user", salt=b"\x00" * 16)


class ShellHost(Protocol):
    """What the SSH server needs from the daemon (kept narrow so tests can drive it directly)."""

    config_path: str | None

    def new_shell(self, *, user: str = ..., level: int = ..., task: str = ..., ip: str = ...) -> Shell: ...

    def after_command(self) -> None: ...

    def log(self, module: str, severity: int, brief: str, text: str, /, *args: object) -> None: ...


def host_key_for(config_path: str | None) -> asyncssh.SSHKey:
    """The server's Ed25519 host key: kept beside the configuration file (mode 0600), created on first
    start, so clients see the same key across restarts. Without a configuration file the key lives in a
    private temporary directory for this process only."""
    if config_path is None:
        folder = tempfile.mkdtemp(prefix="ikegate-ssh-")
        path = os.path.join(folder, "ssh_host_ed25519_key")
    else:
        path = config_path + HOST_KEY_SUFFIX
    if os.path.exists(path):
        return asyncssh.read_private_key(path)
    key = asyncssh.generate_private_key("ssh-ed25519")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.export_private_key("openssh"))
    return key


@dataclass
class _Source:
    """What the server remembers about one client address, shared by all its connections."""

    gate: asyncio.Lock = field(default_factory=asyncio.Lock)  # one password check at a time
    count: int = 0  # failed passwords in a row (the delay grows with it)
    last: float = 0.0  # time of the last failure
    recent: deque[float] = field(default_factory=deque)  # failure times within BLOCK_PERIOD
    blocked_until: float = 0.0
    preauth: int = 0  # connections not logged in yet

    def idle(self, now: float) -> bool:
        return (not self.preauth and not self.gate.locked() and now >= self.blocked_until
                and now - self.last > max(FAILURE_MEMORY, BLOCK_PERIOD))


@dataclass(frozen=True)
class _Listening:
    """What the listeners were opened for; a different value means they must be reopened."""

    port: int
    addresses: tuple[str, ...]


class SshService:
    """The SSH server of one daemon: listeners, login policy and the VTY sessions."""

    def __init__(self, host: ShellHost, config: Callable[[], Config]) -> None:
        self.host = host
        self.config = config
        self._key: asyncssh.SSHKey | None = None
        self._acceptors: list[asyncssh.SSHAcceptor] = []
        self._listening: _Listening | None = None
        self._connections: set[_Connection] = set()
        self._vty: dict[int, str] = {}  # VTY number -> user
        self._sources: dict[str, _Source] = {}
        #: Password hashes computed (scrypt): what a blocked address must no longer cost.
        self.password_checks = 0
        self._change: asyncio.Task[None] | None = None
        #: Where the listeners are bound (address, port), for ``display``-style reports and tests.
        self.bound: list[tuple[str, int]] = []

    # -- listeners ---------------------------------------------------------------------------------
    def _wanted(self) -> _Listening | None:
        config = self.config()
        server = config.ssh_server
        if not server.stelnet:
            return None
        addresses = server.listen_addresses or config.interface_addresses()
        return _Listening(server.port, tuple(dict.fromkeys(str(a) for a in addresses)))

    async def start(self) -> None:
        """Open the listeners the configuration asks for (none when ``stelnet server enable`` is off)."""
        await self._apply(self._wanted())

    def reconcile(self) -> None:
        """After a command: reopen the listeners in the background if their settings changed."""
        if self._wanted() == self._listening or (self._change is not None and not self._change.done()):
            return
        self._change = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        # Loop until the listeners match: the configuration may change again while we rebind.
        while (wanted := self._wanted()) != self._listening:
            await self._apply(wanted)

    async def _apply(self, wanted: _Listening | None) -> None:
        await self._close_listeners()
        self._listening = wanted
        if wanted is None:
            return
        if not wanted.addresses:
            self.host.log("SSH", 4, "LISTEN_FAILED", "The SSH server has no address to listen on. "
                          "(Reason=no interface address and no ssh server listen-address)")
        if self._key is None:
            self._key = host_key_for(self.host.config_path)
        for address in wanted.addresses:
            try:
                acceptor = await asyncssh.create_server(
                    lambda: _Connection(self), address, wanted.port, server_host_keys=[self._key],
                    process_factory=self._session, line_editor=False, encoding=None, allow_scp=False,
                    agent_forwarding=False, x11_forwarding=False, login_timeout=60,
                )
            except OSError as exc:
                self.host.log("SSH", 4, "LISTEN_FAILED", f"The SSH server cannot listen. (Address={address}, "
                              f"Port={wanted.port}, Reason={exc.strerror or exc})")
                continue
            self._acceptors.append(acceptor)
            self.bound.append((address, acceptor.get_port()))

    async def _close_listeners(self) -> None:
        acceptors, self._acceptors, self.bound = self._acceptors, [], []
        for acceptor in acceptors:
            acceptor.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(a.wait_closed() for a in acceptors)), CLOSE_GRACE)

    async def stop(self) -> None:
        """Close the listeners and every session."""
        if self._change is not None:
            self._change.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._change
        await self._close_listeners()
        self._listening = None
        connections = list(self._connections)
        for conn in connections:
            conn.close()
        # A client that vanished (or a session blocked on a full window) must not hold up shutdown.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(conn.wait_closed() for conn in connections)), CLOSE_GRACE)

    # -- login policy ------------------------------------------------------------------------------
    def check(self, name: str, method: SshAuthType) -> LocalUser:
        config = self.config()
        return ssh_login_allowed(config.ssh_server, config.vty, config.local_users, config.ssh_users, name, method)

    def level_of(self, user: LocalUser) -> int:
        return effective_level(user, self.config().vty)

    def key_matches(self, name: str, key: asyncssh.SSHKey) -> SshAuthType:
        """The method a public key logs ``name`` in with; :class:`LoginRefused` unless it is the key the
        user's ``ssh user NAME assign`` names."""
        algorithm = key.get_algorithm()
        kind = KeyKind.RSA if algorithm in KEY_TYPES[KeyKind.RSA] else KeyKind.ECC
        method = SshAuthType.RSA if kind is KeyKind.RSA else SshAuthType.ECC
        self.check(name, method)
        config = self.config()
        ssh_user = config.ssh_users[name]
        assigned = ssh_user.rsa_key if kind is KeyKind.RSA else ssh_user.ecc_key
        stored = config.peer_keys(kind).get(assigned or "")
        text = stored.openssh if stored is not None else None
        if text is None:
            raise LoginRefused(f"no {kind.value} key is assigned to the user")
        if asyncssh.import_public_key(text).public_data != key.public_data:
            raise LoginRefused("the public key is not the one assigned")
        return method

    def source(self, ip: str) -> _Source:
        """The record of address ``ip`` (made on first use; idle ones are forgotten past MAX_SOURCES)."""
        record = self._sources.get(ip)
        if record is None:
            if len(self._sources) >= MAX_SOURCES:
                now = asyncio.get_running_loop().time()
                for old in [a for a, r in self._sources.items() if r.idle(now)]:
                    del self._sources[old]
            record = self._sources[ip] = _Source()
        return record

    def blocked(self, ip: str) -> bool:
        record = self._sources.get(ip)
        return (record is not None and self.config().ssh_server.ip_block
                and asyncio.get_running_loop().time() < record.blocked_until)

    def failed(self, ip: str, name: str, method: str, reason: str, conn: _Connection | None = None) -> float:
        """Log a failed login; for a password, return how long to wait before the client hears the answer:
        ``DELAY_BASE`` s doubling up to ``DELAY_CAP`` s, growing per source address, and block the address
        when it reaches ``BLOCK_FAILURES`` in ``BLOCK_PERIOD`` (a key offer is not counted: it reveals
        nothing secret, and clients legitimately offer several keys)."""
        text = f"Failed to log in through SSH. (Ip={ip}, UserName={name}, AuthType={method}, Reason={reason})"
        if method != "password":
            self.host.log("SSH", 4, "LOGIN_FAILED", text)
            return 0.0
        now = asyncio.get_running_loop().time()
        record = self.source(ip)
        if now - record.last > FAILURE_MEMORY:
            record.count = 0
        record.count += 1
        record.last = now
        record.recent.append(now)
        while record.recent and now - record.recent[0] > BLOCK_PERIOD:
            record.recent.popleft()
        self.host.log("SSH", 4, "LOGIN_FAILED", text.replace(", Reason=", f", Times={record.count}, Reason="))
        if self.config().ssh_server.ip_block and len(record.recent) >= BLOCK_FAILURES:
            self._block(ip, record, now, conn)
        return min(DELAY_CAP, DELAY_BASE * 2.0 ** (record.count - 1))

    def _block(self, ip: str, record: _Source, now: float, current: _Connection | None) -> None:
        """Block ``ip``: close its other connections still logging in (their queued guesses go nowhere);
        ``current``, whose failure blocked it, hears its refusal first and is closed after it."""
        failures = len(record.recent)
        record.blocked_until = now + BLOCK_TIME
        record.recent.clear()
        self.host.log("SSH", 4, "IP_BLOCKED", f"The SSH client address is blocked after repeated login failures. "
                      f"(Ip={ip}, Failures={failures}, Period={BLOCK_PERIOD:g} s, BlockTime={BLOCK_TIME:g} s)")
        for conn in list(self._connections):
            if conn.ip == ip and conn.user is None and conn is not current:
                conn.close()

    def source_states(self) -> list[SourceState]:
        """Addresses with failures counted towards a block, or blocked (``display ssh server ip-block``)."""
        now = asyncio.get_running_loop().time()
        out = []
        for ip, record in self._sources.items():
            blocked_for = max(0.0, record.blocked_until - now) if self.config().ssh_server.ip_block else 0.0
            # (a block clears the failures that caused it; while it lasts, show the run of failures)
            failures = record.count if blocked_for else sum(1 for t in record.recent if now - t <= BLOCK_PERIOD)
            if failures or blocked_for:
                out.append(SourceState(ip, failures, blocked_for))
        return out

    def unblock(self, ip: str) -> bool:
        """``activate ssh server ip-block ip-address``: lift a block now; False if ``ip`` was not blocked."""
        if not self.blocked(ip):
            return False
        record = self._sources[ip]
        record.blocked_until = 0.0
        record.count = 0
        self.host.log("SSH", 5, "IP_UNBLOCKED", f"The SSH client address is unblocked. (Ip={ip})")
        return True

    def succeeded(self, ip: str) -> None:
        record = self._sources.get(ip)
        if record is not None:
            record.count = 0
            record.recent.clear()

    # -- sessions ----------------------------------------------------------------------------------
    def _take_vty(self, user: str) -> int | None:
        limit = self.config().ssh_server.max_vty
        if len(self._vty) >= limit:
            return None
        number = next(n for n in range(limit + 1) if n not in self._vty)
        self._vty[number] = user
        return number

    def _banner(self) -> bytes:
        """VRP's login notice. Its last line must not end in ``>`` or ``]``: netmiko would take it for a
        prompt."""
        stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        lines = [
            f"Info: The max number of VTY users is {self.config().ssh_server.max_vty}, and the number",
            f"      of current VTY users on line is {len(self._vty)}.",
            f"      The current login time is {stamp}.",
        ]
        return "".join(line + "\r\n" for line in lines).encode()

    async def _session(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        """One channel (a shell or an exec command): its own VTY and its own shell state. A connection may
        carry several, one after the other or at once, within the VTY limit; the connection closes when
        an interactive session ends (``quit``, idle) or a channel is refused, and no other channel is open."""
        conn = process.get_extra_info("connection")
        owner = conn.get_owner()
        assert isinstance(owner, _Connection) and owner.user is not None
        name, ip = owner.user, owner.ip
        vty = self._take_vty(name)
        if vty is None:
            self.host.log("SSH", 4, "LOGIN_FAILED", f"Failed to log in through SSH. (Ip={ip}, UserName={name}, "
                          "Reason=the number of VTY users reached the upper limit)")
            process.stdout.write(VTY_FULL.encode() + b"\r\n")
            await _end(process, 1)
            if not owner.channels:
                conn.close()
            return
        owner.channels += 1
        shell = self.host.new_shell(user=name, level=owner.level, task=f"vty{vty}", ip=ip)
        status, reason = 0, "connection lost"
        interactive = process.command is None
        try:
            if not interactive:
                status, reason = await self._exec(process, shell), "command done"
            else:
                reason = await self._interactive(process, shell)
        except (asyncssh.Error, ConnectionError):
            pass
        finally:
            del self._vty[vty]
            owner.channels -= 1
            self.host.log("SSH", 5, "LOGOUT", f"The SSH user logged out. (Ip={ip}, UserName={name}, "
                          f"Task=vty{vty}, Reason={reason})")
        await _end(process, status)
        if interactive and not owner.channels:
            conn.close()  # leaving the (last) shell leaves the device, as on VRP

    async def _exec(self, process: asyncssh.SSHServerProcess[bytes], shell: Shell) -> int:
        """``ssh gw 'display ike sa'``: one line and its output; exit status 1 when it printed ``Error:``.
        The output is the command's alone (``| json`` stays parseable); a failed line is echoed after the
        prompt first, so the error's ``^`` sits under the word it points at."""
        assert process.command is not None
        outcome = shell.run(process.command, lazy=True)
        if shell.take_changes():
            self.host.after_command()
        lines = list(outcome.lines)
        if outcome.pending is not None:
            lines += await outcome.pending
        if not outcome.ok:
            lines.insert(0, shell.prompt + shell.mask(process.command))
        process.stdout.write(crlf(lines))
        if outcome.more is not None:
            async for chunk in chunks_paced(outcome.more):
                process.stdout.write(crlf(chunk))
                await process.stdout.drain()
        return 0 if outcome.ok else 1

    async def _interactive(self, process: asyncssh.SSHServerProcess[bytes], shell: Shell) -> str:
        """The byte pump of :meth:`ikegate.daemon.Daemon.attach`, plus the idle timeout."""
        process.stdout.write(self._banner() + shell.start())
        while not shell.closed:
            idle = self.config().vty.idle_timeout
            try:
                data = await asyncio.wait_for(process.stdin.read(READ_SIZE), idle or None)
            except TimeoutError:
                process.stdout.write(b"\r\n" + IDLE_CLOSED.encode() + b"\r\n")
                return "idle timeout"
            except (asyncssh.TerminalSizeChanged, asyncssh.BreakReceived, asyncssh.SignalReceived):
                continue
            if not data:
                return "connection closed by the client"
            await pump(shell, data, process.stdout.write, process.stdout.drain, self.host.after_command)
        return "user quit"


async def _end(process: asyncssh.SSHServerProcess[bytes], status: int) -> None:
    """Flush what is still queued, send the exit status and wait for the channel to close: closing the
    connection at once would drop output the client's window had not yet taken."""
    with contextlib.suppress(asyncssh.Error, OSError):
        await asyncio.wait_for(process.stdout.drain(), CLOSE_GRACE)
        process.exit(status)
        await asyncio.wait_for(process.wait_closed(), CLOSE_GRACE)
    # (a client that does not answer the close within the grace period is cut off by the caller)


class _Connection(asyncssh.SSHServer):
    """One SSH connection: its authentication, then (through the service) its session."""

    def __init__(self, service: SshService) -> None:
        self.service = service
        self.conn: asyncssh.SSHServerConnection | None = None
        self.ip = "unknown"
        self.user: str | None = None
        self.level = 0
        self.method = ""
        self.password_failures = 0
        self._counted = False  # counted in its address's pre-authentication connections
        self.channels = 0  # open sessions (shell or exec channels), each on its own VTY

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername")
        self.ip = str(peer[0]) if peer else "unknown"
        service = self.service
        source = service.source(self.ip)
        refused = ("the source address is blocked" if service.blocked(self.ip) else
                   "too many connections from the address are logging in"
                   if source.preauth >= MAX_PREAUTH_PER_SOURCE else None)
        if refused is not None:
            # Closed before asyncssh even sends its version: no key exchange work for this one.
            service.host.log("SSH", 4, "CONNECTION_REFUSED", f"An SSH connection was refused. (Ip={self.ip}, "
                             f"Reason={refused})")
            conn.abort()
            return
        source.preauth += 1
        self._counted = True
        service._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.service._connections.discard(self)
        self._done_preauth()

    def _done_preauth(self) -> None:
        if self._counted:
            self._counted = False
            self.service.source(self.ip).preauth -= 1

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    async def wait_closed(self) -> None:
        if self.conn is not None:
            await self.conn.wait_closed()

    def begin_auth(self, username: str) -> bool:
        return True  # every user authenticates

    def password_auth_supported(self) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def kbdint_auth_supported(self) -> bool:
        # asyncssh would otherwise offer the password again as keyboard-interactive, and one wrong guess
        # would count (and be delayed) twice. VRP offers password and publickey.
        return False

    async def validate_password(self, username: str, password: str) -> bool:
        service = self.service
        # One check at a time per address, the delay after a failure served inside: an address's
        # parallel connections wait for each other (see the module docstring).
        async with service.source(self.ip).gate:
            if service.blocked(self.ip):
                self._refuse()  # blocked while this attempt queued: no hash computed for it
                return False
            user: LocalUser | None
            try:
                user = service.check(username, SshAuthType.PASSWORD)
                reason = "wrong password" if user.password is not None else "no password is set"
            except LoginRefused as exc:
                user, reason = None, str(exc)
            stored = user.password if user is not None else None
            # scrypt runs off the event loop so a login does not stall IKE; a refused user is checked
            # against a dummy hash so the time to fail does not tell which names exist.
            service.password_checks += 1
            ok = await asyncio.get_running_loop().run_in_executor(None, (stored or _DUMMY_HASH).verify, password)
            if user is not None and stored is not None and ok:
                self._accept(username, user, "password")
                return True
            self.password_failures += 1
            await asyncio.sleep(service.failed(self.ip, username, "password", reason, self))
        if service.blocked(self.ip) or self.password_failures >= service.config().ssh_server.authentication_retries:
            self._refuse()
        return False

    def _refuse(self) -> None:
        if self.conn is not None:
            self.conn.disconnect(asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "Too many authentication failures")

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        if self.service.blocked(self.ip):
            return False
        try:
            method = self.service.key_matches(username, key)
            user = self.service.check(username, method)
        except LoginRefused as exc:
            self.service.failed(self.ip, username, "publickey", str(exc))
            return False
        self._accept(username, user, "publickey")
        return True

    def _accept(self, username: str, user: LocalUser, method: str) -> None:
        self.user = username
        self.level = self.service.level_of(user)
        self.method = method

    def auth_completed(self) -> None:
        self._done_preauth()
        self.service.succeeded(self.ip)
        self.service.host.log("SSH", 5, "LOGIN", f"The SSH user logged in. (Ip={self.ip}, UserName={self.user}, "
                              f"AuthType={self.method}, Level={self.level})")

"""Management access: the SSH server, ``aaa`` local users, SSH users and their keys, the VTY lines.

All of it is level 3 (management): VRP puts user management and system parameters there, so a
level-2 operator who may change IPsec policies cannot give themselves more rights.

Public keys are entered in one line inside the key view, as OpenSSH writes them::

    ecc peer-public-key alice-key
     public-key ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... [comment]
     peer-public-key end

VRP's own ``public-key-code begin`` / hex lines / ``public-key-code end`` form is not implemented: the
OpenSSH line is what operators have in hand (``~/.ssh/id_ed25519.pub``), and one line keeps the
configuration file greppable. The comment is dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ikegate.cli.context import CommandContext
from ikegate.cli.errors import CommandError, ParamError
from ikegate.cli.guards import require
from ikegate.cli.params import Choice, Integer, Ipv4, Ipv6, ParamValueError, String, ValueParam
from ikegate.cli.tree import MANAGE, Command
from ikegate.cli.views import SYSTEM_FRAME, ViewFrame, ViewKind
from ikegate.policy.users import (
    KEY_TYPES,
    PASSWORD_MAX,
    PASSWORD_MIN,
    KeyKind,
    LocalUser,
    PasswordHash,
    PeerPublicKey,
    ServiceType,
    SshAuthType,
    SshServerSettings,
    SshUser,
    VtySettings,
    check_public_key,
    is_cipher,
)

SYSTEM = frozenset({ViewKind.SYSTEM})
AAA = frozenset({ViewKind.AAA})
UI = frozenset({ViewKind.USER_INTERFACE})
KEY_VIEW = {KeyKind.RSA: ViewKind.RSA_PUBLIC_KEY, KeyKind.ECC: ViewKind.ECC_PUBLIC_KEY}

_USER_NAME = String("User name", 1, 64)
_KEY_NAME = String("Key name", 1, 40)
_LEVEL = Integer("User level", 0, 15)
_ADDRESS = (Ipv4("IPv4 address to listen on"), Ipv6("IPv6 address to listen on"))


@dataclass(frozen=True)
class Password(ValueParam):
    """A local-user password: 8..128 characters in clear, or the ``%^%#...%^%#`` hash form a saved
    configuration holds. The value is the clear text (hashed by the handler, so matching, `?` and Tab
    never pay for scrypt) or the decoded :class:`PasswordHash`."""

    sensitive: bool = field(default=True, kw_only=True)

    @property
    def display(self) -> str:
        return f"STRING<{PASSWORD_MIN}-{PASSWORD_MAX}>"

    def parse(self, token: str) -> str | PasswordHash:
        if "?" in token or any(c.isspace() for c in token):
            raise ParamValueError(token)
        if is_cipher(token):
            try:
                return PasswordHash.from_cipher_text(token)
            except ValueError as exc:
                raise ParamValueError(token) from exc
        if not PASSWORD_MIN <= len(token) <= PASSWORD_MAX:
            raise ParamValueError(token)
        return token


# --- the SSH server ----------------------------------------------------------------------------
def _server(ctx: CommandContext) -> SshServerSettings:
    return ctx.config.ssh_server


def _stelnet(value: bool) -> Command:
    def handler(ctx: CommandContext) -> None:
        _server(ctx).stelnet = value

    return Command(("" if value else "undo ") + "stelnet server enable", handler, SYSTEM, level=MANAGE)


def _port(ctx: CommandContext) -> None:
    _server(ctx).port = ctx.number("port")


def _undo_port(ctx: CommandContext) -> None:
    _server(ctx).port = SshServerSettings().port


def _listen(ctx: CommandContext) -> None:
    address = ctx.ip("address")
    if address not in _server(ctx).listen_addresses:
        _server(ctx).listen_addresses.append(address)


def _undo_listen(ctx: CommandContext) -> None:
    address = ctx.opt_ip("address")
    addresses = _server(ctx).listen_addresses
    if address is None:
        addresses.clear()
    elif address in addresses:
        addresses.remove(address)
    else:
        raise CommandError("Error: The SSH server does not listen on this address.")


def _retries(ctx: CommandContext) -> None:
    _server(ctx).authentication_retries = ctx.number("times")


def _undo_retries(ctx: CommandContext) -> None:
    _server(ctx).authentication_retries = SshServerSettings().authentication_retries


def _ip_block(enabled: bool) -> Callable[[CommandContext], None]:
    def handler(ctx: CommandContext) -> None:
        _server(ctx).ip_block = enabled

    return handler


def _max_vty(ctx: CommandContext) -> None:
    _server(ctx).max_vty = ctx.number("number")


def _undo_max_vty(ctx: CommandContext) -> None:
    _server(ctx).max_vty = SshServerSettings().max_vty


# --- ssh user ----------------------------------------------------------------------------------
def _ssh_user(ctx: CommandContext) -> SshUser:
    """The named SSH user, created on first mention (VRP creates it with any ``ssh user`` line)."""
    name = ctx.string("name")
    return ctx.config.ssh_users.setdefault(name, SshUser(name))


def _existing_ssh_user(ctx: CommandContext) -> SshUser:
    user = ctx.config.ssh_users.get(ctx.string("name"))
    if user is None:
        raise CommandError(f"Error: The SSH user {ctx.string('name')} does not exist.")
    return user


def _create_ssh_user(ctx: CommandContext) -> None:
    _ssh_user(ctx)


def _delete_ssh_user(ctx: CommandContext) -> None:
    ctx.config.ssh_users.pop(_existing_ssh_user(ctx).name)


def _auth_type(ctx: CommandContext) -> None:
    _ssh_user(ctx).authentication_type = SshAuthType(ctx.string("type"))


def _undo_auth_type(ctx: CommandContext) -> None:
    _existing_ssh_user(ctx).authentication_type = None


def _ssh_service(ctx: CommandContext) -> None:
    _ssh_user(ctx).service_type = ctx.string("service")


def _undo_ssh_service(ctx: CommandContext) -> None:
    _existing_ssh_user(ctx).service_type = None


def _assign_kind(ctx: CommandContext) -> KeyKind:
    return KeyKind.RSA if ctx.keyword("rsa-key") else KeyKind.ECC


def _assign(ctx: CommandContext) -> None:
    kind = _assign_kind(ctx)
    key = ctx.string("key")
    require(ctx, key in ctx.config.peer_keys(kind), f"{kind.value.upper()} public key {key}")
    user = _ssh_user(ctx)
    if kind is KeyKind.RSA:
        user.rsa_key = key
    else:
        user.ecc_key = key


def _undo_assign(ctx: CommandContext) -> None:
    user = _existing_ssh_user(ctx)
    if _assign_kind(ctx) is KeyKind.RSA:
        user.rsa_key = None
    else:
        user.ecc_key = None


# --- peer public keys --------------------------------------------------------------------------
def _enter_key(kind: KeyKind) -> Command:
    def handler(ctx: CommandContext) -> None:
        name = ctx.string("name")
        key = ctx.config.peer_keys(kind).setdefault(name, PeerPublicKey(name, kind))
        ctx.session.enter_view(ViewFrame(KEY_VIEW[kind], f"{kind.value}-public-key", key))

    return Command(f"{kind.value} peer-public-key <name>", handler, SYSTEM, level=MANAGE, params={"name": _KEY_NAME})


def _delete_key(kind: KeyKind) -> Command:
    def handler(ctx: CommandContext) -> None:
        name = ctx.string("name")
        keys = ctx.config.peer_keys(kind)
        require(ctx, name in keys, f"{kind.value.upper()} public key {name}")
        users = [u.name for u in ctx.config.ssh_users.values()
                 if (u.rsa_key if kind is KeyKind.RSA else u.ecc_key) == name]
        if users and not ctx.loading:
            raise CommandError(f"Error: The key {name} is assigned to SSH user {users[0]} and cannot be deleted.")
        keys.pop(name, None)

    return Command(f"undo {kind.value} peer-public-key <name>", handler, SYSTEM, level=MANAGE,
                   params={"name": _KEY_NAME})


def _public_key(kind: KeyKind) -> list[Command]:
    views = frozenset({KEY_VIEW[kind]})

    def handler(ctx: CommandContext) -> None:
        key = ctx.target_as(PeerPublicKey)
        key_type, data = ctx.string("type"), ctx.string("data")
        try:
            check_public_key(kind, key_type, data)
        except ValueError as exc:
            raise ParamError("data") from exc
        key.key_type, key.key_data = key_type, data

    def undo(ctx: CommandContext) -> None:
        key = ctx.target_as(PeerPublicKey)
        key.key_type = key.key_data = None

    types = Choice({t: f"OpenSSH {t} public key" for t in KEY_TYPES[kind]})
    return [
        Command("public-key <type> <data> [ <comment> ]", handler, views, level=MANAGE,
                params={"type": types, "data": String("Base64 key data", 1, 8192),
                        "comment": String("Key comment (ignored)", 1, 255)}),
        Command("undo public-key", undo, views, level=MANAGE),
    ]


def _key_end(ctx: CommandContext) -> None:
    ctx.session.enter_view(SYSTEM_FRAME)


# --- aaa / local-user --------------------------------------------------------------------------
def _enter_aaa(ctx: CommandContext) -> None:
    ctx.session.enter_view(ViewFrame(ViewKind.AAA, "aaa"))


def _local_user(ctx: CommandContext) -> LocalUser:
    name = ctx.string("name")
    return ctx.config.local_users.setdefault(name, LocalUser(name))


def _existing_local_user(ctx: CommandContext) -> LocalUser:
    user = ctx.config.local_users.get(ctx.string("name"))
    if user is None:
        raise CommandError(f"Error: The local user {ctx.string('name')} does not exist.")
    return user


def _drop_if_empty(ctx: CommandContext, user: LocalUser) -> None:
    """A user with nothing left has no line to be rendered by, so it goes (keeps the round trip exact)."""
    if user.empty:
        ctx.config.local_users.pop(user.name, None)


def _password(ctx: CommandContext) -> None:
    (value,) = ctx.values("password")
    _local_user(ctx).password = value if isinstance(value, PasswordHash) else PasswordHash.create(str(value))


def _level(ctx: CommandContext) -> None:
    _local_user(ctx).level = ctx.number("level")


def _undo_level(ctx: CommandContext) -> None:
    user = _existing_local_user(ctx)
    user.level = None
    _drop_if_empty(ctx, user)


def _service_types(ctx: CommandContext) -> None:
    _local_user(ctx).service_types = {ServiceType(w) for w in ctx.words("service")}


def _undo_service_types(ctx: CommandContext) -> None:
    user = _existing_local_user(ctx)
    user.service_types = set()
    _drop_if_empty(ctx, user)


def _delete_local_user(ctx: CommandContext) -> None:
    ctx.config.local_users.pop(_existing_local_user(ctx).name)


# --- user-interface ----------------------------------------------------------------------------
def _enter_vty(ctx: CommandContext) -> None:
    first = ctx.number("first")
    last = ctx.opt_number("last")
    if last is not None and last < first:
        raise ParamError("last")
    label = f"ui-vty{first}" if last is None else f"ui-vty{first}-{last}"
    ctx.session.enter_view(ViewFrame(ViewKind.USER_INTERFACE, label, ctx.config.vty))


def _vty(ctx: CommandContext) -> VtySettings:
    return ctx.target_as(VtySettings)


def _auth_mode(ctx: CommandContext) -> None:
    _vty(ctx).authentication_aaa = True


def _undo_auth_mode(ctx: CommandContext) -> None:
    _vty(ctx).authentication_aaa = False


def _privilege(ctx: CommandContext) -> None:
    _vty(ctx).privilege_level = ctx.number("level")


def _undo_privilege(ctx: CommandContext) -> None:
    _vty(ctx).privilege_level = VtySettings().privilege_level


def _idle(ctx: CommandContext) -> None:
    _vty(ctx).idle_timeout = ctx.number("minutes") * 60 + (ctx.opt_number("seconds") or 0)


def _undo_idle(ctx: CommandContext) -> None:
    _vty(ctx).idle_timeout = VtySettings().idle_timeout


_NAME = {"name": _USER_NAME}
_IP_BLOCK_HELP = {"ip-block": "Block client addresses after repeated login failures",
                  "disable": "Do not block client addresses (not recommended)"}

COMMANDS = [
    _stelnet(True),
    _stelnet(False),
    Command("ssh server port <port>", _port, SYSTEM, level=MANAGE, params={"port": Integer("Port number", 1, 65535)}),
    Command("undo ssh server port", _undo_port, SYSTEM, level=MANAGE),
    Command("ssh server listen-address <address>", _listen, SYSTEM, level=MANAGE, params={"address": _ADDRESS}),
    Command("undo ssh server listen-address [ <address> ]", _undo_listen, SYSTEM, level=MANAGE,
            params={"address": _ADDRESS}),
    Command("ssh server authentication-retries <times>", _retries, SYSTEM, level=MANAGE,
            params={"times": Integer("Password failures before a connection is closed (default 3)", 1, 5)}),
    Command("undo ssh server authentication-retries", _undo_retries, SYSTEM, level=MANAGE),
    Command("ssh server ip-block disable", _ip_block(False), SYSTEM, level=MANAGE,
            help=_IP_BLOCK_HELP),
    Command("undo ssh server ip-block disable", _ip_block(True), SYSTEM, level=MANAGE,
            help=_IP_BLOCK_HELP),
    Command("ssh user <name>", _create_ssh_user, SYSTEM, level=MANAGE, params=_NAME),
    Command("undo ssh user <name>", _delete_ssh_user, SYSTEM, level=MANAGE, params=_NAME),
    Command("ssh user <name> authentication-type <type>", _auth_type, SYSTEM, level=MANAGE,
            params={**_NAME, "type": Choice({
                "all": "Password or public key authentication",
                "ecc": "ECC public key authentication",
                "password": "Password authentication",
                "rsa": "RSA public key authentication",
            })}),
    Command("undo ssh user <name> authentication-type", _undo_auth_type, SYSTEM, level=MANAGE, params=_NAME),
    Command("ssh user <name> service-type <service>", _ssh_service, SYSTEM, level=MANAGE,
            params={**_NAME, "service": Choice({"all": "All SSH services", "stelnet": "Secure Telnet"})}),
    Command("undo ssh user <name> service-type", _undo_ssh_service, SYSTEM, level=MANAGE, params=_NAME),
    Command("ssh user <name> assign { rsa-key | ecc-key } <key>", _assign, SYSTEM, level=MANAGE,
            params={**_NAME, "key": _KEY_NAME}),
    Command("undo ssh user <name> assign { rsa-key | ecc-key }", _undo_assign, SYSTEM, level=MANAGE, params=_NAME),
    *(command for kind in KeyKind for command in (_enter_key(kind), _delete_key(kind), *_public_key(kind))),
    Command("peer-public-key end", _key_end, frozenset(KEY_VIEW.values()), level=MANAGE),
    Command("aaa", _enter_aaa, SYSTEM, level=MANAGE),
    Command("local-user <name> password irreversible-cipher <password>", _password, AAA, level=MANAGE,
            params={**_NAME, "password": Password(
                f"Password: {PASSWORD_MIN}-{PASSWORD_MAX} characters in clear, or the %^%#...%^%# hash form")}),
    Command("local-user <name> level <level>", _level, AAA, level=MANAGE, params={**_NAME, "level": _LEVEL}),
    Command("undo local-user <name> level", _undo_level, AAA, level=MANAGE, params=_NAME),
    Command("local-user <name> service-type <service>+", _service_types, AAA, level=MANAGE,
            params={**_NAME, "service": Choice({"ssh": "SSH (STelnet) access", "terminal": "Console access"})}),
    Command("undo local-user <name> service-type", _undo_service_types, AAA, level=MANAGE, params=_NAME),
    Command("undo local-user <name>", _delete_local_user, AAA, level=MANAGE, params=_NAME),
    Command("user-interface maximum-vty <number>", _max_vty, SYSTEM, level=MANAGE,
            params={"number": Integer("Maximum number of VTY users", 0, 20)}),  # USG: VTY 0..20
    Command("undo user-interface maximum-vty", _undo_max_vty, SYSTEM, level=MANAGE),
    Command("user-interface vty <first> [ <last> ]", _enter_vty, SYSTEM, level=MANAGE,
            params={"first": Integer("First VTY number", 0, 4), "last": Integer("Last VTY number", 0, 4)}),
    Command("authentication-mode <mode>", _auth_mode, UI, level=MANAGE,
            params={"mode": Choice({"aaa": "Authenticate users through AAA (local users)"})}),
    Command("undo authentication-mode", _undo_auth_mode, UI, level=MANAGE),
    Command("user privilege level <level>", _privilege, UI, level=MANAGE, params={"level": _LEVEL}),
    Command("undo user privilege level", _undo_privilege, UI, level=MANAGE),
    Command("idle-timeout <minutes> [ <seconds> ]", _idle, UI, level=MANAGE,
            params={"minutes": Integer("Idle timeout in minutes (0 0: never)", 0, 35791),
                    "seconds": Integer("And seconds", 0, 59)}),
    Command("undo idle-timeout", _undo_idle, UI, level=MANAGE),
]

"""Who may manage the gateway, and how: local users, SSH users, their public keys, the VTY lines.

This is the ``aaa`` / ``ssh user`` / ``rsa|ecc peer-public-key`` / ``user-interface vty`` part of a VRP
configuration as plain data (no sockets, no asyncssh), plus the one piece of crypto it owns: local-user
passwords are kept only as a salted scrypt hash. The configuration shows that hash in the ``%^%#...%^%#``
shape VRP uses for ``irreversible-cipher`` passwords, and accepts it back when a file is loaded, so
``load -> display -> load`` keeps the same hash and the clear password never exists outside the moment
it is typed. Unlike the pre-shared-key cipher form (:mod:`ikegate.policy.secret`), this one cannot be
turned back into the password by anyone.

Who may log in over SSH (the rules :func:`ssh_login_allowed` and :func:`effective_level` write once):

* ``stelnet server enable`` is on, and the VTY lines use ``authentication-mode aaa`` (VRP requires AAA
  for STelnet);
* the name is a ``local-user`` with ``service-type ssh``;
* if ``ssh user NAME`` exists, its ``service-type`` is ``stelnet`` or ``all`` and its
  ``authentication-type`` allows the method used; without an ``ssh user`` entry the method is password
  (VRP's default authentication type);
* a public key must be the one ``ssh user NAME assign rsa-key|ecc-key KEY`` names.

The session level is the local user's ``level`` when set, else the VTY's ``user privilege level``.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import ipaddress
import os
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization

CIPHER_MARK = "%^%#"
PASSWORD_MIN, PASSWORD_MAX = 8, 128

# scrypt cost: 2**14 x 8 x 1 is ~16 MiB and a few tens of milliseconds per check, which is what makes
# an offline guess expensive while a login stays instant. The parameters travel with the hash, so they
# can be raised later without breaking stored passwords.
_SCRYPT_LOG2_N, _SCRYPT_R, _SCRYPT_P = 14, 8, 1
_SALT, _DERIVED = 16, 32
_FORMAT_VERSION = 1
_HEADER = struct.Struct("!BBBB")


@dataclass(frozen=True)
class PasswordHash:
    """A salted scrypt hash of a local-user password, with its cost parameters."""

    salt: bytes
    digest: bytes
    log2_n: int = _SCRYPT_LOG2_N
    r: int = _SCRYPT_R
    p: int = _SCRYPT_P

    @classmethod
    def create(cls, password: str, salt: bytes | None = None) -> PasswordHash:
        salt = os.urandom(_SALT) if salt is None else salt
        return cls(salt, _scrypt(password, salt, _SCRYPT_LOG2_N, _SCRYPT_R, _SCRYPT_P))

    def verify(self, password: str) -> bool:
        candidate = _scrypt(password, self.salt, self.log2_n, self.r, self.p)
        return hmac.compare_digest(candidate, self.digest)

    def cipher_text(self) -> str:
        """The ``%^%#...%^%#`` form the configuration shows (version, cost, salt and digest)."""
        raw = _HEADER.pack(_FORMAT_VERSION, self.log2_n, self.r, self.p) + self.salt + self.digest
        return CIPHER_MARK + base64.urlsafe_b64encode(raw).decode().rstrip("=") + CIPHER_MARK

    @classmethod
    def from_cipher_text(cls, text: str) -> PasswordHash:
        """Read back :meth:`cipher_text`; ``ValueError`` for anything else (including a pre-shared-key
        cipher text, which has the same marks but not this layout)."""
        if not is_cipher(text):
            raise ValueError("not in cipher form")
        body = text[len(CIPHER_MARK) : -len(CIPHER_MARK)]
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except ValueError as exc:
            raise ValueError("malformed password cipher text") from exc
        if len(raw) != _HEADER.size + _SALT + _DERIVED:
            raise ValueError("malformed password cipher text")
        version, log2_n, r, p = _HEADER.unpack_from(raw)
        # Bounds keep a hostile file from asking for gigabytes of scrypt memory at login.
        if version != _FORMAT_VERSION or not (10 <= log2_n <= 20 and 1 <= r <= 32 and 1 <= p <= 16):
            raise ValueError("unsupported password cipher text")
        salt = raw[_HEADER.size : _HEADER.size + _SALT]
        return cls(salt, raw[_HEADER.size + _SALT :], log2_n, r, p)


def _scrypt(password: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    n = 1 << log2_n
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + (1 << 20),
                          dklen=_DERIVED)


def is_cipher(text: str) -> bool:
    return len(text) > 2 * len(CIPHER_MARK) and text.startswith(CIPHER_MARK) and text.endswith(CIPHER_MARK)


class ServiceType(enum.Enum):
    """``local-user NAME service-type``: the access services a local user may use."""

    SSH = "ssh"
    TERMINAL = "terminal"


@dataclass
class LocalUser:
    """``aaa`` / ``local-user NAME ...``. ``level`` None: the VTY's ``user privilege level`` applies."""

    name: str
    password: PasswordHash | None = None
    level: int | None = None
    service_types: set[ServiceType] = field(default_factory=set)

    @property
    def empty(self) -> bool:
        return self.password is None and self.level is None and not self.service_types


class SshAuthType(enum.Enum):
    """``ssh user NAME authentication-type``; ``all`` accepts a password or either kind of key."""

    PASSWORD = "password"
    RSA = "rsa"
    ECC = "ecc"
    ALL = "all"


class KeyKind(enum.Enum):
    """Which ``peer-public-key`` family a key belongs to (VRP keeps RSA and ECC keys apart)."""

    RSA = "rsa"
    ECC = "ecc"


# The OpenSSH key types each family accepts. ikegate files Ed25519 under ``ecc`` (an elliptic curve key;
# VRP's ECC keys are ECDSA, which are accepted too).
KEY_TYPES: dict[KeyKind, tuple[str, ...]] = {
    KeyKind.RSA: ("ssh-rsa",),
    KeyKind.ECC: ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"),
}


@dataclass
class SshUser:
    """``ssh user NAME`` and its ``authentication-type``, ``service-type`` and assigned keys."""

    name: str
    authentication_type: SshAuthType | None = None
    service_type: str | None = None  # ``stelnet`` or ``all``; unset refuses logins, as in VRP
    rsa_key: str | None = None
    ecc_key: str | None = None


@dataclass
class PeerPublicKey:
    """``rsa|ecc peer-public-key NAME`` with its ``public-key TYPE BASE64`` line (None until given)."""

    name: str
    kind: KeyKind
    key_type: str | None = None
    key_data: str | None = None

    @property
    def openssh(self) -> str | None:
        """The key as one ``authorized_keys`` line, or None when the view holds no key yet."""
        if self.key_type is None or self.key_data is None:
            return None
        return f"{self.key_type} {self.key_data}"


def check_public_key(kind: KeyKind, key_type: str, key_data: str) -> None:
    """Raise ``ValueError`` unless ``key_type key_data`` is a well-formed OpenSSH public key of the
    family ``kind`` (cryptography also checks that the blob's own type name is the one typed)."""
    if key_type not in KEY_TYPES[kind]:
        raise ValueError(f"{key_type} is not an {kind.value.upper()} key type")
    try:
        base64.b64decode(key_data, validate=True)
        serialization.load_ssh_public_key(f"{key_type} {key_data}".encode())
    except (ValueError, TypeError) as exc:
        raise ValueError("malformed public key") from exc


@dataclass
class VtySettings:
    """``user-interface vty 0 4``: ikegate treats the five VTY lines as one group, as they are
    almost always configured."""

    authentication_aaa: bool = False
    privilege_level: int = 0
    idle_timeout: int = 600  # seconds; 0 disables (``idle-timeout 0 0``)


DEFAULT_MAX_VTY = 5
DEFAULT_SSH_PORT = 22
DEFAULT_AUTHENTICATION_RETRIES = 3  # VRP's default for ``ssh server authentication-retries``


@dataclass
class SshServerSettings:
    """``stelnet server enable``, ``ssh server port N``, ``ssh server listen-address A``,
    ``user-interface maximum-vty N`` (the session limit), ``ssh server authentication-retries N`` and
    ``ssh server ip-block disable``."""

    stelnet: bool = False
    port: int = DEFAULT_SSH_PORT
    listen_addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = field(default_factory=list)
    max_vty: int = DEFAULT_MAX_VTY
    #: ``ssh server authentication-retries N`` (1..5): password failures before a connection is closed.
    authentication_retries: int = DEFAULT_AUTHENTICATION_RETRIES
    #: ``ssh server ip-block disable`` turns this off: client addresses with too many failed logins are
    #: blocked for a while (see :mod:`ikegate.mgmt.ssh`).
    ip_block: bool = True


class LoginRefused(Exception):
    """Why a login is refused (for the log only; the client is never told which check failed)."""


def ssh_login_allowed(
    server: SshServerSettings,
    vty: VtySettings,
    local_users: dict[str, LocalUser],
    ssh_users: dict[str, SshUser],
    name: str,
    method: SshAuthType,
) -> LocalUser:
    """The local user ``name`` if it may log in over SSH with ``method`` (``PASSWORD``, or ``RSA``/``ECC``
    for a public key); raises :class:`LoginRefused` otherwise. The credential itself is checked by the
    caller."""
    if not server.stelnet:
        raise LoginRefused("stelnet server is disabled")
    if not vty.authentication_aaa:
        raise LoginRefused("the VTY authentication mode is not aaa")
    user = local_users.get(name)
    if user is None:
        raise LoginRefused("no such local user")
    if ServiceType.SSH not in user.service_types:
        raise LoginRefused("the local user has no ssh service type")
    ssh_user = ssh_users.get(name)
    allowed = ssh_user.authentication_type if ssh_user is not None else None
    allowed = allowed or SshAuthType.PASSWORD
    if allowed is not SshAuthType.ALL and allowed is not method:
        raise LoginRefused(f"authentication type {method.value} is not allowed for the user")
    if method is not SshAuthType.PASSWORD and ssh_user is None:
        raise LoginRefused("no ssh user for public key authentication")
    if ssh_user is not None and ssh_user.service_type is None:
        raise LoginRefused("the ssh user has no stelnet service type")
    return user


def effective_level(user: LocalUser, vty: VtySettings) -> int:
    return user.level if user.level is not None else vty.privilege_level

"""The device PKI commands: importing CA and local certificates, key pairs and CRLs from files, and the
``display pki`` family.

``pki import-certificate ca|local filename FILE``, ``pki import rsa-key-pair|ecc-key-pair NAME pem|der
filename FILE [ password P ]`` and ``pki import-crl filename FILE`` are system-view configuration lines
here (on a USG they are one-off operations whose result lives in flash): ``display
current-configuration`` lists them, so a saved configuration brings its certificates back when it is
loaded, from the same files next to it. ``undo`` of each forgets the import. The file is parsed before
anything is recorded (see ikegate.pki.store), so a bad file is an ``Error:`` naming it and why, and the
device keeps what it had.
"""

from __future__ import annotations

from collections.abc import Callable

from ikegate.cli.context import CommandContext
from ikegate.cli.errors import CommandError
from ikegate.cli.params import Secret, String
from ikegate.cli.render import pki as render
from ikegate.cli.tree import MANAGE, MONITOR, Command
from ikegate.cli.views import ALL_VIEWS, ViewKind
from ikegate.pki.store import CertRole, KeyEncoding, PkiError
from ikegate.policy.users import KeyKind

SYSTEM = frozenset({ViewKind.SYSTEM})

_FILE = String("File name in the configuration directory", 1, 63)
_PARAMS = {
    "filename": _FILE,
    "key-name": String("Key pair name", 1, 30),
    "password": Secret("Password of an encrypted key file", 63),
}
_HELP = {
    "pki": "PKI module",
    "import-certificate": "Import a certificate from a file",
    "import": "Import a key pair from a file",
    "import-crl": "Import a certificate revocation list from a file",
    "ca": "CA certificate (a trusted root or intermediate)",
    "local": "Local certificate (the device's own)",
    "filename": "Specify the file name",
    "rsa-key-pair": "RSA key pair",
    "ecc-key-pair": "ECC (ECDSA) key pair",
    "pem": "PEM format",
    "der": "DER format",
    "password": "Password of the key file",
    "certificate": "Certificate",
    "crl": "Certificate revocation list",
}


def _failed(what: str, exc: PkiError) -> CommandError:
    return CommandError(f"Error: Failed to import the {what} file {exc.filename}: {exc.reason}.")


def _role(ctx: CommandContext) -> CertRole:
    return CertRole.LOCAL if ctx.keyword("local") else CertRole.CA


def _kind(ctx: CommandContext) -> KeyKind:
    return KeyKind.ECC if ctx.keyword("ecc-key-pair") else KeyKind.RSA


def _import_certificate(ctx: CommandContext) -> None:
    role = _role(ctx)
    try:
        ctx.config.pki.import_certificate(role, ctx.string("filename"))
    except PkiError as exc:
        raise _failed(f"{role.value} certificate", exc) from None


def _undo_certificate(ctx: CommandContext) -> None:
    store = ctx.config.pki
    table = store.locals if _role(ctx) is CertRole.LOCAL else store.cas
    name = ctx.string("filename")
    users = sorted(p.name for p in ctx.config.ike_peers.values() if p.certificate_local == name)
    if table is store.locals and users and not ctx.loading:
        raise CommandError(f"Error: The local certificate {name} is used by IKE peer {', '.join(users)}.")
    if not store.remove(table, name) and not ctx.loading:
        raise CommandError(f"Error: The {_role(ctx).value} certificate {name} is not imported.")


def _import_key(ctx: CommandContext) -> None:
    kind = _kind(ctx)
    encoding = KeyEncoding.DER if ctx.keyword("der") else KeyEncoding.PEM
    try:
        ctx.config.pki.import_key(ctx.string("key-name"), kind, encoding, ctx.string("filename"),
                                  ctx.opt_string("password"))
    except PkiError as exc:
        raise _failed(f"{kind.value.upper()} key pair", exc) from None


def _undo_key(ctx: CommandContext) -> None:
    store = ctx.config.pki
    name = ctx.string("key-name")
    entry = store.keys.get(name)
    if entry is None or entry.kind is not _kind(ctx):
        if ctx.loading:
            return
        raise CommandError(f"Error: The {_kind(ctx).value.upper()} key pair {name} does not exist.")
    store.remove(store.keys, name)


def _import_crl(ctx: CommandContext) -> None:
    try:
        ctx.config.pki.import_crl(ctx.string("filename"))
    except PkiError as exc:
        raise _failed("CRL", exc) from None


def _undo_crl(ctx: CommandContext) -> None:
    store = ctx.config.pki
    name = ctx.string("filename")
    if not store.remove(store.crls, name) and not ctx.loading:
        raise CommandError(f"Error: The CRL {name} is not imported.")


def _emit(ctx: CommandContext, data: Callable[[], object], text: Callable[[], list[str]]) -> None:
    if ctx.json:
        ctx.data = data()
        return
    for line in text():
        ctx.write(line.rstrip())


def _display_certificate(ctx: CommandContext) -> None:
    store = ctx.config.pki
    local = ctx.keyword("local")
    name = ctx.opt_string("filename")
    table = store.locals if local else store.cas
    entries = [e for n, e in table.items() if name is None or n == name]
    _emit(ctx, lambda: {"certificate": [render.certificate_record(e, store) for e in entries]},
          lambda: render.certificates(store, local, name))


def _display_crl(ctx: CommandContext) -> None:
    store = ctx.config.pki
    name = ctx.opt_string("filename")
    entries = [e for n, e in store.crls.items() if name is None or n == name]
    _emit(ctx, lambda: {"crl": [render.crl_record(e) for e in entries]}, lambda: render.crls(store, name))


def _command(syntax: str, handler: Callable[[CommandContext], None], views: frozenset[ViewKind] = SYSTEM,
             level: int = MANAGE) -> Command:
    used = {k: v for k, v in _PARAMS.items() if f"<{k}>" in syntax}
    return Command(syntax, handler, views, level=level, params=used, help=_HELP)


_KEY = "{ rsa-key-pair | ecc-key-pair } <key-name>"

COMMANDS = [
    _command("pki import-certificate { ca | local } filename <filename>", _import_certificate),
    _command("undo pki import-certificate { ca | local } filename <filename>", _undo_certificate),
    _command(f"pki import {_KEY} {{ pem | der }} filename <filename> [ password <password> ]", _import_key),
    _command(f"undo pki import {_KEY}", _undo_key),
    _command("pki import-crl filename <filename>", _import_crl),
    _command("undo pki import-crl filename <filename>", _undo_crl),
    _command("display pki certificate { ca | local } [ filename <filename> ]", _display_certificate, ALL_VIEWS,
             MONITOR),
    _command("display pki crl [ filename <filename> ]", _display_crl, ALL_VIEWS, MONITOR),
]

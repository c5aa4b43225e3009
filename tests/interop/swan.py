"""strongSwan as the peer: one charon per namespace, driven with swanctl over its own vici socket.

How strongSwan runs on these machines (see the shared lab's FINDINGS): the kernel has no ESP, so charon
uses the ``kernel-libipsec`` plugin (ESP in userspace through a TUN ``ipsec0``, routes in table 220) with
``kernel-netlink`` behind it for addresses and routes. ``charon-systemd`` is used because it writes no pid
file, so several instances can run at once; without systemd it logs nowhere unless told, hence the
``filelog``. Every instance gets its own ``STRONGSWAN_CONF`` and vici socket in a private directory, and
swanctl is always called with ``--uri`` (and ``--file`` for loading).

libipsec in 5.9.8 fakes NAT detection, so the IKE SA floats to 4500 and ESP is always UDP-encapsulated:
the gateway under test has to do NAT-T, which it does on its own 500/4500 in its own namespace.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.interop.netns import Lab, Netns
from tests.waiting import wait_for

CHARON = "/usr/sbin/charon-systemd"
PLUGINS = ("random nonce aesni aes sha1 sha2 hmac kdf openssl gcm curve25519 gmp pem pkcs1 pkcs8 pubkey x509 "
           "revocation constraints "
           "kernel-libipsec kernel-netlink socket-default vici")
PACKAGES = ("strongswan-swanctl charon-systemd libcharon-extra-plugins libstrongswan-extra-plugins "
            "libstrongswan-standard-plugins")


def skip_reason() -> str | None:
    if shutil.which("swanctl") is None or not os.path.exists(CHARON):
        return f"strongSwan is not installed (apt-get install {PACKAGES}; .ci/run does it as root)"
    if not os.path.exists("/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so"):
        return "strongSwan's kernel-libipsec plugin is missing (libcharon-extra-plugins)"
    return None


def strongswan_conf(run: Path, extra: str = "") -> str:
    """``extra``: more ``charon`` settings, one ``key = value`` a line (e.g. ``make_before_break = yes``)."""
    return f"""charon {{
    load = {PLUGINS}
{extra}    install_routes = yes
    # short retransmits: a lost message should not stall a test for long
    retransmit_timeout = 1.0
    retransmit_base = 1.4
    retransmit_tries = 4
    plugins {{
        vici {{
            socket = unix://{run}/charon.vici
        }}
    }}
    filelog {{
        ikg {{
            path = {run}/charon.log
            time_format = %H:%M:%S
            time_add_ms = yes
            ike_name = yes
            append = no
            flush_line = yes
            default = 1
            ike = 2
            cfg = 2
            knl = 1
        }}
    }}
    journal {{
        default = -1
    }}
    syslog {{
        daemon {{
            default = -1
        }}
    }}
}}
swanctl {{
    load = pem pkcs1 pkcs8 x509 openssl
}}
"""


@dataclass
class ChildSa:
    name: str
    uniqueid: int
    state: str
    spi_in: int
    spi_out: int
    bytes_in: int
    packets_in: int
    bytes_out: int
    packets_out: int
    raw: dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass
class IkeSa:
    name: str
    uniqueid: int
    state: str
    version: int
    local_port: int
    remote_port: int
    children: list[ChildSa]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass
class Charon:
    """One charon in ``ns``; its state lives in ``run``."""

    lab: Lab
    ns: Netns
    run: Path
    #: more ``charon`` settings for strongswan.conf (see :func:`strongswan_conf`)
    settings: str = ""

    def start(self) -> None:
        self.run.mkdir(parents=True, exist_ok=True)
        for sub in ("x509", "x509ca", "x509ocsp", "x509aa", "x509ac", "x509crl", "pubkey", "private", "rsa",
                    "ecdsa", "bliss", "pkcs8", "pkcs12"):
            (self.run / "swanctl" / sub).mkdir(parents=True, exist_ok=True)  # or swanctl complains per folder
        (self.run / "strongswan.conf").write_text(strongswan_conf(self.run, self.settings))
        self.popen = self.lab.spawn(self.ns, [CHARON], self.run / "charon.stdout",
                                    env={"STRONGSWAN_CONF": str(self.run / "strongswan.conf")})

        def up() -> bool:
            if self.popen.poll() is not None:
                raise AssertionError(f"charon exited: {self.log()[-2000:]}")
            return (self.run / "charon.vici").exists() and self.swanctl("--stats", check=False).returncode == 0

        wait_for(up, what="charon to come up")

    def log(self) -> str:
        path = self.run / "charon.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def swanctl(self, *args: str, check: bool = True, timeout: float = 60.0) -> Any:
        return self.ns.exec("env", f"STRONGSWAN_CONF={self.run / 'strongswan.conf'}", "swanctl", *args,
                            "--uri", f"unix://{self.run / 'charon.vici'}", check=check, timeout=timeout)

    def load(self, conf: str) -> None:
        """Replace every connection and secret with those of ``conf`` (swanctl.conf syntax)."""
        path = self.run / "swanctl" / "swanctl.conf"
        path.write_text(conf)
        self.swanctl("--load-all", "--noprompt", "--clear", "--file", str(path))

    def initiate(self, child: str, timeout: int = 60) -> Any:
        return self.swanctl("--initiate", "--child", child, "--timeout", str(timeout), check=False,
                            timeout=timeout + 5)

    def terminate(self, *args: str) -> Any:
        return self.swanctl("--terminate", *args, "--timeout", "30", check=False, timeout=60)

    def sas(self) -> list[IkeSa]:
        return parse_list_sas(self.swanctl("--list-sas", "--raw").stdout)


# ------------------------------------------------------------------------- `swanctl --raw` parser

_TOKEN = re.compile(r"\s*([^\s={}\[\]]+)\s*=\s*|\s*([{}\[\]])\s*|\s*([^\s{}\[\]]+)")


def parse_raw(text: str) -> dict[str, Any]:
    """One ``--raw`` vici message (``name {key=value list=[a b] section {...}}``) as nested dicts and lists.

    The raw form is swanctl's dump of the vici message tree: sections in braces, lists in brackets,
    ``key=value`` pairs, values without spaces (vici values are printed as-is, and those we read --
    numbers, names, states, SPIs, addresses -- never contain blanks or brackets).
    """
    tokens: list[tuple[str, str]] = []
    for m in _TOKEN.finditer(text):
        if m.group(1) is not None:
            tokens.append(("key", m.group(1)))
        elif m.group(2) is not None:
            tokens.append(("punct", m.group(2)))
        elif m.group(3) is not None:
            tokens.append(("word", m.group(3)))
    pos = 0

    def section() -> dict[str, Any]:
        nonlocal pos
        out: dict[str, Any] = {}
        while pos < len(tokens):
            kind, value = tokens[pos]
            if kind == "punct" and value == "}":
                pos += 1
                return out
            if kind == "key":
                pos += 1
                nkind, nvalue = tokens[pos]
                if nkind == "punct" and nvalue == "[":
                    pos += 1
                    items = []
                    while tokens[pos] != ("punct", "]"):
                        items.append(tokens[pos][1])
                        pos += 1
                    pos += 1
                    out[value] = items
                else:
                    out[value] = nvalue
                    pos += 1
            elif kind == "word" and pos + 1 < len(tokens) and tokens[pos + 1] == ("punct", "{"):
                pos += 2
                out[value] = section()
            else:
                pos += 1
        return out

    return section()


def parse_list_sas(text: str) -> list[IkeSa]:
    """``swanctl --list-sas --raw``: one ``list-sa event {...}`` line per IKE SA (and a final reply)."""
    sas: list[IkeSa] = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("list-sa event"):
            continue
        body = parse_raw(line[len("list-sa event"):].strip().removeprefix("{").removesuffix("}"))
        for name, ike in body.items():
            if not isinstance(ike, dict):
                continue
            children = []
            for child_key, child in (ike.get("child-sas") or {}).items():
                if not isinstance(child, dict):
                    continue
                children.append(ChildSa(
                    name=child.get("name", child_key),
                    uniqueid=int(child.get("uniqueid", 0)),
                    state=child.get("state", ""),
                    spi_in=int(child.get("spi-in", "0"), 16),
                    spi_out=int(child.get("spi-out", "0"), 16),
                    bytes_in=int(child.get("bytes-in", 0)),
                    packets_in=int(child.get("packets-in", 0)),
                    bytes_out=int(child.get("bytes-out", 0)),
                    packets_out=int(child.get("packets-out", 0)),
                    raw=child,
                ))
            sas.append(IkeSa(
                name=name,
                uniqueid=int(ike.get("uniqueid", 0)),
                state=ike.get("state", ""),
                version=int(ike.get("version", 0)),
                local_port=int(ike.get("local-port", 0)),
                remote_port=int(ike.get("remote-port", 0)),
                children=children,
                raw=ike,
            ))
    return sas

"""Throw-away network namespaces for tests on real sockets, TUN devices and routing.

A :class:`Lab` owns everything it creates: namespaces (uniquely named ``ikg-<pid>-<n>``, because other test
runs share this machine), the veth links between them (created directly inside their namespaces, so
their short names never meet anyone else's in the root namespace), and the processes started inside them.
:meth:`Lab.close` kills those processes by the PIDs it recorded (``ip netns exec`` execs the command, so
the PID is the command's own) and deletes the namespaces, which takes their links and routes with them.
It is written to run from a fixture finalizer: each step is attempted even when an earlier one failed.

Only documentation prefixes are used (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32), and
IPv6 addresses are added with ``nodad`` so they are usable at once instead of after duplicate detection.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.waiting import wait_for

_COUNTER = itertools.count(1)
PREFIX = f"ikg-{os.getpid()}"


def skip_reason() -> str | None:
    """Why namespace tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth, TUN)"
    if shutil.which("ip") is None:
        return "needs iproute2 (`ip`)"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    return None


def run(cmd: Sequence[str], *, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    return out


@dataclass
class Netns:
    """One namespace. ``name`` is globally unique; ``role`` is what the tests call it."""

    name: str
    role: str

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["ip", "-n", self.name, *args], check=check)

    def exec(self, *cmd: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return run(["ip", "netns", "exec", self.name, *cmd], check=check, timeout=timeout)

    def sysctl(self, key: str, value: str) -> None:
        self.exec("sysctl", "-qw", f"{key}={value}")

    def addr(self, ifname: str, cidr: str) -> None:
        iface = ipaddress.ip_interface(cidr)
        extra = ["nodad"] if iface.version == 6 else []
        self.ip("addr", "add", cidr, "dev", ifname, *extra)

    def route(self, prefix: str, *via: str) -> None:
        family = "-6" if ipaddress.ip_network(prefix, strict=False).version == 6 else "-4"
        run(["ip", "-n", self.name, family, "route", "replace", prefix, *via])


@dataclass
class Lab:
    """Namespaces, links and processes of one test topology; see the module docstring."""

    workdir: Path
    namespaces: list[Netns] = field(default_factory=list)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def netns(self, role: str, *, forwarding: bool = False) -> Netns:
        ns = Netns(f"{PREFIX}-{next(_COUNTER)}", role)
        run(["ip", "netns", "add", ns.name])
        self.namespaces.append(ns)
        ns.ip("link", "set", "lo", "up")
        if forwarding:
            ns.sysctl("net.ipv4.ip_forward", "1")
            ns.sysctl("net.ipv6.conf.all.forwarding", "1")
        return ns

    def link(self, a: Netns, a_if: str, b: Netns, b_if: str) -> None:
        """A veth pair with one end in each namespace, both up."""
        run(["ip", "link", "add", a_if, "netns", a.name, "type", "veth", "peer", "name", b_if, "netns", b.name])
        a.ip("link", "set", a_if, "up")
        b.ip("link", "set", b_if, "up")

    def spawn(self, ns: Netns, cmd: Sequence[str], log: Path,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``cmd`` inside ``ns`` with stdout and stderr in ``log``; it is killed by :meth:`close`."""
        with open(log, "wb") as fh:
            popen = subprocess.Popen(["ip", "netns", "exec", ns.name, *cmd], stdout=fh, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
                                     start_new_session=True)
        self.procs.append((ns.name, popen))
        return popen

    def stop(self, popen: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; only ever the PID we started."""
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    popen.kill()
                popen.wait(5)
        return popen.returncode

    def close(self) -> None:
        for _ns, popen in reversed(self.procs):
            with contextlib.suppress(Exception):
                self.stop(popen, timeout=5.0)
        self.procs.clear()
        for ns in reversed(self.namespaces):
            run(["ip", "netns", "del", ns.name], check=False)
        self.namespaces.clear()


# ---------------------------------------------------------------------------------- the topology

#: Addresses of the two-site topology (documentation prefixes only).
SITE_A_V4, SITE_B_V4 = "192.0.2.0/26", "192.0.2.64/26"
SITE_A_V6, SITE_B_V6 = "2001:db8:a::/64", "2001:db8:b::/64"
HOST_A = {4: "192.0.2.10", 6: "2001:db8:a::10"}
GW_A_LAN = {4: "192.0.2.1", 6: "2001:db8:a::1"}
HOST_B = {4: "192.0.2.74", 6: "2001:db8:b::10"}
GW_B_LAN = {4: "192.0.2.65", 6: "2001:db8:b::1"}
WAN_A = {4: "198.51.100.1", 6: "2001:db8:ff::1"}
WAN_B = {4: "198.51.100.2", 6: "2001:db8:ff::2"}
WAN_PREFIX = {4: 24, 6: 64}
TUN = "tun-lan"


@dataclass
class Site:
    """A host behind a gateway namespace: ``host`` -- ``gw`` (LAN veth; the TUN is made by ikegate)."""

    host: Netns
    gw: Netns
    lan_v4: str
    lan_v6: str


def make_site(lab: Lab, tag: str, host_addr: dict[int, str], gw_lan: dict[int, str], lan_v4: str,
              lan_v6: str) -> Site:
    host = lab.netns(f"host{tag}")
    gw = lab.netns(f"gw{tag}", forwarding=True)
    lab.link(host, "eth0", gw, "lan0")
    plen4 = ipaddress.ip_network(lan_v4).prefixlen
    host.addr("eth0", f"{host_addr[4]}/{plen4}")
    host.addr("eth0", f"{host_addr[6]}/64")
    gw.addr("lan0", f"{gw_lan[4]}/{plen4}")
    gw.addr("lan0", f"{gw_lan[6]}/64")
    host.route("0.0.0.0/0", "via", gw_lan[4])
    host.route("::/0", "via", gw_lan[6])
    return Site(host, gw, lan_v4, lan_v6)


def two_sites(lab: Lab) -> tuple[Site, Site]:
    """Site A and site B, their gateways joined by the WAN: hostA -- gwA == WAN == gwB -- hostB."""
    a = make_site(lab, "A", HOST_A, GW_A_LAN, SITE_A_V4, SITE_A_V6)
    b = make_site(lab, "B", HOST_B, GW_B_LAN, SITE_B_V4, SITE_B_V6)
    wan(lab, a.gw, b.gw)
    return a, b


def wan(lab: Lab, a: Netns, b: Netns) -> None:
    """The WAN veth between two gateway namespaces, with both address families."""
    lab.link(a, "wan0", b, "wan0")
    for family in (4, 6):
        a.addr("wan0", f"{WAN_A[family]}/{WAN_PREFIX[family]}")
        b.addr("wan0", f"{WAN_B[family]}/{WAN_PREFIX[family]}")


def route_into_tun(gw: Netns, prefixes: Sequence[str], tun: str = TUN) -> None:
    """The operator's part of ``--tun``: route the remote protected networks into the TUN."""
    wait_for(lambda: gw.ip("link", "show", tun, check=False).returncode == 0, what=f"{tun} in {gw.name}")
    for prefix in prefixes:
        gw.route(prefix, "dev", tun)

"""VRP configuration text for the gateways of the interop topologies, and `ikegate run` inside a namespace.

The configurations are written the way an operator would write them (the same text `display
current-configuration` prints), so the tests also cover the loader on realistic input.
"""

from __future__ import annotations

import ipaddress
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.interop.netns import SITE_A_V6, SITE_B_V6, WAN_B, Lab, Netns
from tests.system.procs import READY, Proc
from tests.waiting import wait_for

WAN_ITF = "GigabitEthernet0/0/1"
LAN_ITF = "GigabitEthernet0/0/2"


@dataclass
class Suite:
    """One IKE proposal and one IPsec proposal, in VRP words."""

    encryption: str = "aes-256"
    integrity: str | None = "hmac-sha2-256"  # IKEv2 only
    authentication: str | None = None  # IKEv1 hash (authentication-algorithm)
    prf: str | None = "hmac-sha2-256"
    dh: str = "group31"
    esp_encryption: str = "aes-256"
    esp_authentication: str | None = "sha2-256"
    version: int = 2
    ike_duration: int = 86400


@dataclass
class GatewayConfig:
    sysname: str
    wan: dict[int, str]  # family -> address
    lan: dict[int, str]  # family -> address/prefix (the gateway's own LAN address)
    remote: str | None  # None: a template (site-to-multisite) that only responds
    psk: str
    suite: Suite = field(default_factory=Suite)
    #: "rule 5 permit ip source ... destination ..."; None: no ACL at all (a template then takes whatever
    #: selectors the initiator proposes)
    rules: list[str] | None = field(default_factory=list)
    trigger: str = "auto"  # auto | traffic-based (site-to-site only)
    #: rules of an IPv6 ACL (``acl ipv6 number 3000``, referenced with ``security acl ipv6 3000``)
    rules6: list[str] = field(default_factory=list)
    sa_duration: int | None = None  # IPsec SA lifetime, seconds
    sa_kilobytes: int | None = None  # IPsec SA lifetime, kilobytes
    dpd: list[str] = field(default_factory=list)  # extra ike peer lines, e.g. "dpd type periodic"

    def text(self) -> str:
        s = self.suite
        lines = ["#", f"sysname {self.sysname}", "#", "ike proposal 10", f" encryption-algorithm {s.encryption}"]
        if s.version == 1:
            lines.append(f" authentication-algorithm {s.authentication or 'sha2-256'}")
        else:
            if s.integrity:
                lines.append(f" integrity-algorithm {s.integrity}")
            if s.prf:
                lines.append(f" prf {s.prf}")
        lines += [f" dh {s.dh}", f" sa duration {s.ike_duration}", "#", "ike peer peer1",
                  f" pre-shared-key {self.psk}", " ike-proposal 10"]
        if s.version == 1:
            lines += [" undo version 2", " exchange-mode main"]
        else:
            lines.append(" undo version 1")
        if self.remote:
            lines.append(f" remote-address {self.remote}")
        lines += [f" {d}" for d in self.dpd]
        lines += ["#", "ipsec proposal esp1", " transform esp", f" esp encryption-algorithm {s.esp_encryption}"]
        if s.esp_authentication:
            lines.append(f" esp authentication-algorithm {s.esp_authentication}")
        acl: list[str] = []
        if self.rules is not None:
            lines += ["#", "acl number 3000", *[f" {r}" for r in self.rules]]
            acl = [" security acl 3000"]
        if self.rules6:
            lines += ["#", "acl ipv6 number 3000", *[f" {r}" for r in self.rules6]]
            acl.append(" security acl ipv6 3000")
        lines.append("#")
        duration = [f" sa duration time-based {self.sa_duration}"] if self.sa_duration else []
        duration += [f" sa duration traffic-based {self.sa_kilobytes}"] if self.sa_kilobytes else []
        if self.remote:
            lines += ["ipsec policy pol1 10 isakmp", *acl, " ike-peer peer1", " proposal esp1",
                      f" sa trigger-mode {self.trigger}", *duration]
        else:
            lines += ["ipsec policy-template tpl1 1", *acl, " ike-peer peer1", " proposal esp1",
                      *duration, "#", "ipsec policy pol1 10 isakmp template tpl1"]
        lines += ["#", f"interface {WAN_ITF}"]
        lines += _addresses(self.wan.get(4), self.wan.get(6), 24, 64)
        lines += [" ipsec policy pol1", "#", f"interface {LAN_ITF}"]
        lan4, lan6 = self.lan.get(4), self.lan.get(6)
        lines += _addresses(lan4, lan6, None, None)
        lines += ["#", "return", ""]
        return "\n".join(lines)


@dataclass
class TwoPeersConfig(GatewayConfig):
    """gwA of :func:`two_sites` with two peers: policy 10 (``rules``) to ``remote`` (gwB's IPv4 address), and
    policy 20 (IPv6 inside, site A to site B) to gwB's IPv6 address: two peer addresses, which placement
    workers may own apart."""

    def text(self) -> str:
        peer2 = ["#", "ike peer peer2", f" pre-shared-key {self.psk}", " ike-proposal 10", " undo version 1",
                 f" remote-address {WAN_B[6]}"]
        policy2 = ["#", "acl ipv6 number 3001", f" rule 5 permit ipv6 source {SITE_A_V6} destination {SITE_B_V6}",
                   "#", "ipsec policy pol1 20 isakmp", " security acl ipv6 3001", " ike-peer peer2",
                   " proposal esp1", " sa trigger-mode auto"]
        lines = super().text().split("\n")
        at = lines.index("ipsec proposal esp1") - 1
        lines[at:at] = peer2
        at = lines.index(f"interface {WAN_ITF}") - 1
        lines[at:at] = policy2
        return "\n".join(lines)


def _addresses(v4: str | None, v6: str | None, plen4: int | None, plen6: int | None) -> list[str]:
    out = []
    if v4:
        iface = ipaddress.IPv4Interface(v4 if "/" in v4 else f"{v4}/{plen4}")
        out.append(f" ip address {iface.ip} {iface.netmask}")
    if v6:
        iface6 = ipaddress.IPv6Interface(v6 if "/" in v6 else f"{v6}/{plen6}")
        out += [" ipv6 enable", f" ipv6 address {iface6}"]
    return out


def acl_rule(rule_id: int, source: str, destination: str, protocol: str = "ip", *, sport: int | None = None,
             dport: int | None = None) -> str:
    """``rule N permit PROTO source A W [source-port eq P] destination B W [destination-port eq P]``."""
    src, dst = ipaddress.IPv4Network(source), ipaddress.IPv4Network(destination)
    text = f"rule {rule_id} permit {protocol} source {src.network_address} {src.hostmask}"
    if sport is not None:
        text += f" source-port eq {sport}"
    text += f" destination {dst.network_address} {dst.hostmask}"
    if dport is not None:
        text += f" destination-port eq {dport}"
    return text


def start_ikegate(lab: Lab, ns: Netns, name: str, config: GatewayConfig, *extra: str) -> Proc:
    """``ikegate run`` inside ``ns`` on the standard ports, with its TUN on the LAN interface."""
    cfg = lab.workdir / f"{name}.cfg"
    cfg.write_text(config.text())
    control = lab.workdir / f"{name}.sock"
    log = lab.workdir / f"{name}.log"
    popen = lab.spawn(ns, [sys.executable, "-m", "ikegate", "run", str(cfg), "--control", str(control),
                           "--tun", f"{LAN_ITF}=tun-lan", *extra], log, env={"PYTHONUNBUFFERED": "1"})

    def ready() -> bool:
        if popen.poll() is not None:
            raise AssertionError(f"ikegate {name} exited ({popen.returncode}): {log.read_text()}")
        return READY in log.read_text(errors="replace")

    wait_for(ready, what=f"ikegate {name} to start")
    return Proc(name, popen, str(control), Path(log))  # type: ignore[arg-type]


def display_json(proc: Proc, command: str) -> dict[str, Any]:
    """``COMMAND | json`` through the control socket's shell: the records behind the display."""
    output = proc.call("shell", lines=[f"{command} | json"])["output"]
    start = output.index("\n{") + 1
    data = json.loads(output[start:])
    assert isinstance(data, dict)
    return data


def ipsec_sas(proc: Proc) -> list[dict[str, Any]]:
    """``display ipsec sa | json`` (counters synchronised from the dataplane)."""
    return list(display_json(proc, "display ipsec sa")["ipsec_sa"])


def ike_sas(proc: Proc, phase: int = 1) -> list[dict[str, Any]]:
    return [r for r in display_json(proc, "display ike sa")["ike_sa"] if r["phase"] == phase]

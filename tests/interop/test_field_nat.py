"""strongSwan behind a NAT (iptables MASQUERADE in a middle namespace) against the DEFAULT ``ikegate run``
(a worker per CPU), answering with a template policy -- the usual home-office / branch-behind-DSL case.

    hostA (192.0.2.10) -- gwA [ikegate] wan0 198.51.100.1 == nat: 198.51.100.254 | 192.0.2.129 == sw 192.0.2.130
                                                                                              lo 203.0.113.33

The NAT maps UDP source ports into a range (as consumer routers do), so the IKE and ESP-in-UDP source
port ikegate sees is not 4500. One lab for the module; tests run in file order.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.interop.netns import GW_A_LAN, HOST_A, SITE_A_V4, SITE_A_V6, Lab, Netns, Site, make_site, route_into_tun
from tests.interop.swan import Charon
from tests.interop.swan import skip_reason as swan_skip
from tests.interop.vrp import WAN_ITF, ike_sas, ipsec_sas
from tests.system.procs import READY, Proc
from tests.waiting import wait_for

pytestmark = pytest.mark.interop

PSK = "field-nat-psk-0123"
GW_WAN = "198.51.100.1"
NAT_OUT, NAT_IN, SW_ADDR, SW_HOST, SW_LAN = "198.51.100.254", "192.0.2.129", "192.0.2.130", "203.0.113.33", \
    "203.0.113.32/28"
PORTS = ["31000-31099", "32000-32099"]  # the NAT's port range, before and after the mapping changes

CONFIG = f"""#
sysname GwA
#
ike proposal 10
 encryption-algorithm aes-256
 integrity-algorithm hmac-sha2-256
 prf hmac-sha2-256
 dh group31
#
ike peer roaming
 pre-shared-key {PSK}
 ike-proposal 10
 undo version 1
#
ipsec proposal esp1
 transform esp
 esp encryption-algorithm aes-256
 esp authentication-algorithm sha2-256
#
ipsec policy-template tpl1 1
 ike-peer roaming
 proposal esp1
#
ipsec policy pol1 10 isakmp template tpl1
#
interface {WAN_ITF}
 ip address {GW_WAN} 255.255.255.0
 ipsec policy pol1
#
interface GigabitEthernet0/0/2
 ip address {GW_A_LAN[4]} 255.255.255.192
#
return
"""

SWAN = f"""connections {{
  gw {{
    version = 2
    local_addrs = {SW_ADDR}
    remote_addrs = {GW_WAN}
    proposals = aes256-sha256-x25519
    mobike = no
    dpd_delay = 2s
    local {{
      auth = psk
      id = branch.example
    }}
    remote {{
      auth = psk
      id = {GW_WAN}
    }}
    children {{
      net {{
        local_ts = {SW_LAN}
        remote_ts = {SITE_A_V4}
        esp_proposals = aes256-sha256
      }}
    }}
  }}
}}
secrets {{
  ike-gw {{
    id-1 = branch.example
    id-2 = {GW_WAN}
    secret = "{PSK}"
  }}
}}
"""


@dataclass
class NatLab:
    lab: Lab
    site: Site
    nat: Netns
    sw: Netns
    charon: Charon
    gw: Proc

    def masquerade(self, ports: str) -> None:
        """(Re)map: UDP from the inside leaves with a source port of ``ports``; the old mappings forgotten."""
        self.nat.exec("iptables", "-t", "nat", "-F", "POSTROUTING")
        self.nat.exec("iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-p", "udp", "-j", "MASQUERADE",
                      "--to-ports", ports)
        self.nat.exec("iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE")
        self.nat.exec("conntrack", "-F", check=False)

    def children(self) -> list[Any]:
        return [c for sa in self.charon.sas() if sa.state == "ESTABLISHED" for c in sa.children
                if c.state == "INSTALLED"]

    def up(self) -> bool:
        ours = {(r["spi_in"], r["spi_out"]) for r in ipsec_sas(self.gw)}
        return bool(ours & {(c.spi_out, c.spi_in) for c in self.children()})

    def ping_sw(self, count: int = 3) -> Any:
        return self.site.host.exec("ping", "-c", str(count), "-i", "0.2", "-W", "5", SW_HOST, check=False, timeout=60)

    def ping_host(self, count: int = 3) -> Any:
        return self.sw.exec("ping", "-c", str(count), "-i", "0.2", "-W", "5", "-I", SW_HOST, HOST_A[4], check=False,
                            timeout=60)

    def peer_port(self) -> int:
        (sa,) = ike_sas(self.gw)
        return int(sa["peer"].rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def nl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatLab]:
    reason = swan_skip() or (None if shutil.which("iptables") and shutil.which("conntrack")
                             else "iptables and conntrack are not installed")
    if reason:
        pytest.skip(reason)
    lab = Lab(tmp_path_factory.mktemp("nat"))
    log = lab.workdir / "gwa.log"
    charon: Charon | None = None
    try:
        site = make_site(lab, "A", HOST_A, GW_A_LAN, SITE_A_V4, SITE_A_V6)
        nat = lab.netns("nat", forwarding=True)
        sw = lab.netns("swan", forwarding=True)
        lab.link(site.gw, "wan0", nat, "wan0")
        lab.link(nat, "in0", sw, "wan0")
        site.gw.addr("wan0", f"{GW_WAN}/24")
        nat.addr("wan0", f"{NAT_OUT}/24")
        nat.addr("in0", f"{NAT_IN}/26")
        sw.addr("wan0", f"{SW_ADDR}/26")
        sw.addr("lo", f"{SW_HOST}/32")
        sw.route("0.0.0.0/0", "via", NAT_IN)
        (lab.workdir / "gwa.cfg").write_text(CONFIG)
        control = lab.workdir / "gwa.sock"
        popen = lab.spawn(site.gw, [sys.executable, "-m", "ikegate", "run", str(lab.workdir / "gwa.cfg"),
                                    "--control", str(control), "--tun", "GigabitEthernet0/0/2=tun-lan"], log,
                          env={"PYTHONUNBUFFERED": "1"})
        wait_for(lambda: popen.poll() is None and READY in log.read_text(errors="replace"), what="ikegate")
        route_into_tun(site.gw, ["203.0.113.0/24"])
        charon = Charon(lab, sw, lab.workdir / "swan", settings="    keep_alive = 2s\n")
        charon.start()
        charon.load(SWAN)
        the = NatLab(lab, site, nat, sw, charon, Proc("gwa", popen, str(control), Path(log)))  # type: ignore[arg-type]
        the.masquerade(PORTS[0])
        yield the
    finally:
        sys.stderr.write(f"\n--- ikegate log ---\n{log.read_text()[-4000:] if log.is_file() else ''}\n")
        if charon is not None:
            sys.stderr.write(f"\n--- charon ---\n{charon.log()[-4000:]}\n")
        lab.close()


def test_peer_behind_nat_initiates_and_both_sides_send(nl: NatLab) -> None:
    answer = nl.charon.initiate("net")
    assert answer.returncode == 0, answer.stdout + answer.stderr
    wait_for(nl.up, what="the Child SA on both sides")
    assert "local host is behind NAT" in nl.charon.log()
    assert 31000 <= nl.peer_port() <= 31099  # the NAT's port, not 4500
    assert all(r["udp_encap"] for r in ipsec_sas(nl.gw))
    out = nl.ping_host()
    assert out.returncode == 0, out.stdout
    out = nl.ping_sw()
    assert out.returncode == 0, out.stdout


def test_nat_keepalives_are_taken_quietly(nl: NatLab) -> None:
    """strongSwan's NAT keepalives (every 2 s here) reach the worker holding nothing for them: no SA is
    disturbed and nothing is counted as a dropped IKE datagram."""
    wait_for(nl.up, what="the tunnel")
    dropped = nl.gw.call("stats")["stats"]["dropped"]
    sent = nl.charon.log().count("sending keep alive")
    wait_for(lambda: nl.charon.log().count("sending keep alive") >= sent + 3, what="three more keepalives",
             step=0.5)
    st = nl.gw.call("stats")["stats"]
    assert st["dropped"] == dropped and st["ike_sas"] == 1, st
    assert nl.ping_sw().returncode == 0


def test_nat_mapping_change_is_followed_without_mobike(nl: NatLab) -> None:
    """The NAT forgets its mappings and picks ports from another range: strongSwan's next authenticated
    message (DPD every 2 s) comes from a new port, and ikegate sends IKE and ESP there (RFC 7296 2.23)."""
    wait_for(nl.up, what="the tunnel")
    before = nl.peer_port()
    nl.masquerade(PORTS[1])
    wait_for(lambda: 32000 <= nl.peer_port() <= 32099, what="ikegate following the new mapping", step=0.5)
    out = nl.ping_sw()
    assert out.returncode == 0, (before, out.stdout)
    out = nl.ping_host()
    assert out.returncode == 0, out.stdout
    assert len(nl.charon.sas()) == 1 and nl.gw.call("stats")["stats"]["misrouted"] == 0


def test_reset_of_the_template_sa_waits_for_the_peer(nl: NatLab) -> None:
    """``reset ike sa`` on the template side (site-to-multisite): strongSwan hears the Delete through the
    NAT, ikegate initiates nothing (it could not reach a peer behind a NAT anyway); the peer comes back
    when it initiates again."""
    wait_for(nl.up, what="the tunnel")
    old = nl.charon.sas()[0].uniqueid
    answer = nl.gw.call("shell", lines=["reset ike sa"])
    assert not answer["error"], answer["output"]
    wait_for(lambda: all(sa.uniqueid != old for sa in nl.charon.sas()), what="the Delete at strongSwan")
    assert f"received DELETE for IKE_SA gw[{old}]" in nl.charon.log()
    assert ike_sas(nl.gw) == [] and nl.gw.call("stats")["stats"]["negotiations_started"] == 0
    answer = nl.charon.initiate("net")
    assert answer.returncode == 0, answer.stdout + answer.stderr
    wait_for(nl.up, what="the tunnel again")
    assert nl.ping_sw().returncode == 0 and nl.gw.call("stats")["stats"]["negotiations_started"] == 0

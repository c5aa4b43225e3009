"""A hot-standby pair of ikegate nodes with keepalived, and strongSwan as the peer (issue 17).

    nodeA [ikegate+keepalived] --\\                                  /-- 192.0.2.100 (strongSwan's protected side)
      198.51.100.2, hb 192.0.2.129 \\__ bridge 198.51.100.0/24 __ router __ sw [charon] 203.0.113.2
    nodeB [ikegate+keepalived] --/   VIP 198.51.100.1 (VRRP 1)    .254 | 203.0.113.254
      198.51.100.3, hb 192.0.2.130  (heartbeat: nodeA hb0 == nodeB hb0, 192.0.2.128/30)

strongSwan initiates to the virtual address; the active node answers, the standby follows over the sync
channel. One lab serves the whole module (the tests run in order: up, failover by kill -9, failback by
restart with bulk sync, reset on the pair); strongSwan pings ikegate's own protected-side address
(192.0.2.1) through the tunnel, so no host namespace is needed behind the pair.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.interop import swan
from tests.interop.netns import Lab, Netns, skip_reason
from tests.interop.swan import Charon
from tests.interop.vrp import GatewayConfig, acl_rule, display_json
from tests.system.procs import READY, Proc
from tests.waiting import wait_for

pytestmark = pytest.mark.interop

PSK = "ikegate-ha-psk-0123"
HRP_KEY = "ikegate-ha-sync-key"
VIP = "198.51.100.1"
NODE_WAN = {"a": "198.51.100.2", "b": "198.51.100.3"}
NODE_HB = {"a": "192.0.2.129", "b": "192.0.2.130"}
ROUTER_WAN, ROUTER_SW, SW_WAN = "198.51.100.254", "203.0.113.254", "203.0.113.2"
SW_HOST = "192.0.2.100"
IKG_LAN = "192.0.2.1"
HB_ITF = "GigabitEthernet0/0/3"


def node_config(name: str, remote: str | None = None) -> str:
    """The lab's VRP configuration of one node: the same tunnel configuration on both, HRP and VRRP
    lines of its own (node a is the configured active one). ``remote``: a site-to-site policy to that
    peer (negotiated on traffic) instead of the template."""
    base = GatewayConfig(f"HA_{name.upper()}", {4: NODE_WAN[name]}, {4: f"{IKG_LAN}/26"}, remote, PSK,
                         rules=[acl_rule(5, "192.0.2.0/26", f"{SW_HOST}/32")], trigger="traffic-based",
                         dpd=["dpd type periodic", "dpd idle-time 10"]).text()
    role = "active" if name == "a" else "standby"
    other = NODE_HB["b" if name == "a" else "a"]
    text = base.replace(" ipsec policy pol1\n", f" vrrp vrid 1 virtual-ip {VIP} {role}\n ipsec policy pol1\n", 1)
    hrp = (f"hrp interface {HB_ITF} remote {other}\nhrp authentication-key {HRP_KEY}\nhrp preempt delay 3\n"
           f"hrp enable\n#\ninterface {HB_ITF}\n ip address {NODE_HB[name]} 255.255.255.252\n#\nreturn\n")
    return text.replace("#\nreturn\n", f"#\n{hrp}")


@dataclass
class Pair:
    lab: Lab
    nodes: dict[str, Netns]
    router: Netns
    sw: Netns
    charon: Charon
    procs: dict[str, Proc]
    #: more ``ikegate run`` arguments (``--workers 2``: tests/interop/test_ha_workers.py)
    args: list[str] = field(default_factory=list)
    remote: str | None = None  # see node_config

    def start(self, name: str) -> Proc:
        cfg = self.lab.workdir / f"node{name}.cfg"
        cfg.write_text(node_config(name, self.remote))
        control = self.lab.workdir / f"node{name}.sock"
        log = self.lab.workdir / f"node{name}.log"
        popen = self.lab.spawn(self.nodes[name], [sys.executable, "-m", "ikegate", "run", str(cfg), "--control",
                                                  str(control), *self.args], log, env={"PYTHONUNBUFFERED": "1"})

        def ready() -> bool:
            if popen.poll() is not None:
                raise AssertionError(f"node {name} exited ({popen.returncode}): {log.read_text()}")
            return READY in log.read_text(errors="replace")

        wait_for(ready, what=f"node {name} to start")
        self.procs[name] = Proc(name, popen, str(control), Path(log))  # type: ignore[arg-type]
        return self.procs[name]

    def hrp(self, name: str) -> dict[str, Any]:
        st = self.procs[name].call("hrp")["hrp"]
        assert isinstance(st, dict)
        return st

    def role(self, name: str) -> str:
        return str(self.hrp(name)["role"])

    def active(self) -> str:
        return next(n for n in self.procs if self.procs[n].popen.poll() is None and self.role(n) == "active")

    def sw_sas(self) -> list[tuple[str, str, list[tuple[int, int]]]]:
        """strongSwan's established IKE SAs: (SPIi, SPIr, [(Child SPI in, out)])."""
        out = []
        for sa in self.charon.sas():
            if sa.state == "ESTABLISHED":
                out.append((str(sa.raw.get("initiator-spi")), str(sa.raw.get("responder-spi")),
                            sorted((c.spi_in, c.spi_out) for c in sa.children if c.state == "INSTALLED")))
        return out

    def established_count(self) -> int:
        return len(re.findall(r"IKE_SA \S+ established", self.charon.log()))

    def ping(self, count: int, interval: str = "0.2") -> tuple[int, int]:
        """(sent, received) by a ping from strongSwan's protected side through the tunnel."""
        out = self.sw.exec("ping", "-c", str(count), "-i", interval, "-W", "1", "-I", SW_HOST, IKG_LAN,
                           check=False, timeout=count * 2 + 30).stdout
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        assert m, out
        return int(m.group(1)), int(m.group(2))


def _build(lab: Lab) -> Pair:
    nodes = {n: lab.netns(f"node{n}") for n in ("a", "b")}
    br, router, sw = lab.netns("bridge"), lab.netns("router", forwarding=True), lab.netns("swan", forwarding=True)
    br.ip("link", "add", "br0", "type", "bridge")
    br.ip("link", "set", "br0", "up")
    for name, ns in (("a", nodes["a"]), ("b", nodes["b"]), ("r", router)):
        lab.link(ns, "wan0", br, f"p{name}")
        br.ip("link", "set", f"p{name}", "master", "br0")
    for name, ns in nodes.items():
        ns.addr("wan0", f"{NODE_WAN[name]}/24")
        ns.route("203.0.113.0/24", "via", ROUTER_WAN)
    lab.link(nodes["a"], "hb0", nodes["b"], "hb0")
    for name, ns in nodes.items():
        ns.addr("hb0", f"{NODE_HB[name]}/30")
    router.addr("wan0", f"{ROUTER_WAN}/24")
    lab.link(router, "sw0", sw, "wan0")
    router.addr("sw0", f"{ROUTER_SW}/24")
    sw.addr("wan0", f"{SW_WAN}/24")
    sw.route("0.0.0.0/0", "via", ROUTER_SW)
    sw.addr("lo", f"{SW_HOST}/32")
    charon = Charon(lab, sw, lab.workdir / "swan", settings="    dpd_delay = 2\n")
    charon.start()
    charon.load(f"""connections {{
  ha {{
    version = 2
    local_addrs = {SW_WAN}
    remote_addrs = {VIP}
    proposals = aes256-sha256-x25519
    mobike = no
    dpd_delay = 2
    local {{
      auth = psk
      id = {SW_WAN}
    }}
    remote {{
      auth = psk
      id = {VIP}
    }}
    children {{
      net {{
        local_ts = {SW_HOST}/32
        remote_ts = 192.0.2.0/26
        esp_proposals = aes256-sha256
        dpd_action = restart
      }}
    }}
  }}
}}
secrets {{
  ike-ha {{
    id-1 = {SW_WAN}
    id-2 = {VIP}
    secret = "{PSK}"
  }}
}}
""")
    return Pair(lab, nodes, router, sw, charon, {})


def open_pair(tmp_path_factory: pytest.TempPathFactory, args: list[str] | None = None,
              remote: str | None = None) -> Iterator[Pair]:
    """The module's lab with both nodes started (``args``, ``remote``: see :class:`Pair`); removed after."""
    for reason in (skip_reason(), swan.skip_reason(),
                   None if shutil.which("keepalived") else "keepalived is not installed (apt-get install keepalived)"):
        if reason:
            pytest.skip(reason)
    lab = Lab(tmp_path_factory.mktemp("ha"))
    try:
        p = _build(lab)
        p.args, p.remote = list(args or []), remote
        p.start("a")
        p.start("b")
        yield p
    finally:
        for name in ("a", "b"):
            log = lab.workdir / f"node{name}.log"
            if log.exists():
                sys.stderr.write(f"\n--- node {name} ---\n{log.read_text(errors='replace')[-3000:]}")
        lab.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    yield from open_pair(tmp_path_factory)


def tunnel_up_and_followed(pair: Pair) -> None:
    """Node a active, strongSwan's tunnel up through it, node b's table the same (display ike sa there)."""
    wait_for(lambda: pair.role("a") == "active" and pair.role("b") == "standby", what="VRRP to elect node a")
    out = pair.charon.initiate("net")
    assert out.returncode == 0, out.stdout + out.stderr
    sent, got = pair.ping(5)
    assert got == sent
    # the standby holds the same SAs (display ike sa works there)
    a_rows = {(r["conn_id"], r["phase"]) for r in display_json(pair.procs["a"], "display ike sa")["ike_sa"]}
    wait_for(lambda: {(r["conn_id"], r["phase"]) for r in display_json(pair.procs["b"], "display ike sa")["ike_sa"]}
             == a_rows, what="the standby's table to match")


def check_standby_guard_and_mirroring(pair: Pair) -> None:
    """Node b (standby) refuses resets and configuration; configuration made on node a reaches b."""
    refused = pair.procs["b"].call("shell", lines=["reset ike sa"])
    assert "HRP standby state" in refused["output"] and refused["error"]
    config = pair.procs["b"].call("shell", lines=["system-view", "ike proposal 20"])
    assert "HRP standby state" in config["output"]
    # configuration made on the active is mirrored (hrp auto-sync); the standby's own lines stay its own
    done = pair.procs["a"].call("shell", lines=["system-view", "ike proposal 20", "dh group14"])
    assert not done["error"], done

    def mirrored() -> bool:
        text = pair.procs["b"].call("shell", lines=["display current-configuration"])["output"]
        return "ike proposal 20" in text and "vrrp vrid 1 virtual-ip 198.51.100.1 standby" in text

    wait_for(mirrored, what="the configuration on the standby")


def kill_a_during_ping(pair: Pair, count: int) -> int:
    """``kill -9`` node a while strongSwan pings through the tunnel every 0.2 s, until node b is active;
    how many pings were lost."""
    ping = subprocess.Popen(["ip", "netns", "exec", pair.sw.name, "ping", "-i", "0.2", "-W", "1", "-c", str(count),
                             "-I", SW_HOST, IKG_LAN], stdout=subprocess.PIPE, text=True)
    wait_for(lambda: pair.hrp("b")["counters"]["sas_applied"] >= 1, what="the standby to hold the SA")
    pair.procs["a"].popen.kill()  # kill -9: keepalived follows it (parent-death signal), VRRP moves
    pair.procs["a"].popen.wait()
    wait_for(lambda: pair.role("b") == "active", what="node b to become active")
    out, _ = ping.communicate(timeout=60)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    return int(m.group(1)) - int(m.group(2))


def test_tunnel_up_on_the_virtual_address(pair: Pair) -> None:
    tunnel_up_and_followed(pair)
    shown = pair.procs["a"].call("shell", lines=["display hrp state", "display vrrp"])["output"]
    assert "Role: active, peer: standby" in shown and "State : Master" in shown and f"Virtual IP : {VIP}" in shown
    shown = pair.procs["b"].call("shell", lines=["display hrp state verbose"])["output"]
    assert "Role: standby, peer: active" in shown and "vrrp vrid 1: backup" in shown
    check_standby_guard_and_mirroring(pair)


def test_kill_active_standby_takes_over_without_renegotiation(pair: Pair) -> None:
    before, established = pair.sw_sas(), pair.established_count()
    assert len(before) == 1
    lost = kill_a_during_ping(pair, 40)
    # VRRP's detection (3 x 1 s advertisements at worst; a dying keepalived's priority 0 makes it ~0.6 s)
    # plus an RTT: at 5 pings a second, no more than 20 lost
    assert lost <= 20
    assert pair.sw_sas() == before and pair.established_count() == established  # same SPIs, no new IKE SA
    sent, got = pair.ping(5)
    assert got == sent
    # DPD still answered by the new active: strongSwan probes every 2 s while idle
    dpd = pair.charon.log().count("sending DPD request")
    wait_for(lambda: pair.charon.log().count("sending DPD request") >= dpd + 2, what="two more DPD rounds")
    assert pair.sw_sas() == before


def test_failback_after_restart_with_bulk_sync(pair: Pair) -> None:
    before, established = pair.sw_sas(), pair.established_count()
    pair.start("a")  # comes back as standby, gets a bulk sync, then preempts (priority 120, delay 3 s)
    wait_for(lambda: pair.hrp("a")["counters"]["bulk_received"] >= 1, what="the bulk sync to node a")
    wait_for(lambda: pair.role("a") == "active" and pair.role("b") == "standby", what="failback to node a")
    sent, got = pair.ping(5)
    assert got == sent
    assert pair.sw_sas() == before and pair.established_count() == established


def test_link_down_on_active_moves_the_tunnel(pair: Pair) -> None:
    before, established = pair.sw_sas(), pair.established_count()
    active = pair.active()
    other = "b" if active == "a" else "a"
    pair.nodes[active].ip("link", "set", "wan0", "down")  # keepalived: FAULT, the other node takes over
    try:
        wait_for(lambda: pair.role(other) == "active" and pair.role(active) == "standby", what="the link failover")
        sent, got = pair.ping(5)
        assert got == sent
        assert pair.sw_sas() == before and pair.established_count() == established
    finally:
        pair.nodes[active].ip("link", "set", "wan0", "up")
        pair.nodes[active].route("203.0.113.0/24", "via", ROUTER_WAN)  # the link's routes went with it
    wait_for(lambda: pair.role("a") == "active" and pair.role("b") == "standby", what="node a to preempt again")


def test_reset_on_active_deletes_on_both_nodes_once(pair: Pair) -> None:
    active = pair.active()
    standby = "b" if active == "a" else "a"
    deletes = pair.charon.log().count("received DELETE for IKE_SA")
    out = pair.procs[active].call("shell", lines=["reset ike sa"])
    assert not out["error"], out
    wait_for(lambda: not pair.procs[standby].sas() and not pair.procs[active].sas(), what="both tables empty")
    wait_for(lambda: pair.charon.log().count("received DELETE for IKE_SA") == deletes + 1, what="the Delete")
    assert pair.hrp(standby)["counters"]["deletes_applied"] >= 1
    assert pair.charon.log().count("received DELETE for IKE_SA") == deletes + 1


def test_split_brain_resolved_when_the_links_return(pair: Pair) -> None:
    """Node b loses the heartbeat and stops hearing VRRP (the bridge floods no multicast to it): it becomes
    master too. The heartbeat returns first: the hellos show two active nodes, and the one VRRP would not
    elect (b, priority 100) yields, with a log line; then VRRP settles the same way. What b did alone
    during the split (it answered the peer's DPD) is lost, as on the USG: strongSwan's DPD may find the
    SA gone and negotiate again, with node a. Last in the module for that reason."""
    out = pair.charon.initiate("net")  # the reset before left no tunnel
    assert out.returncode == 0, out.stdout + out.stderr
    wait_for(lambda: pair.procs["b"].sas() != [], what="the standby's copy of the new tunnel")
    b = pair.nodes["b"]
    bridge = next(ns for ns in pair.lab.namespaces if ns.role == "bridge")
    b.ip("link", "set", "hb0", "down")
    bridge.ip("link", "set", "dev", "pb", "type", "bridge_slave", "mcast_flood", "off")  # VRRP is multicast
    try:
        wait_for(lambda: pair.role("b") == "active", what="node b to become active alone")
        assert pair.role("a") == "active"  # both active: split brain
        b.ip("link", "set", "hb0", "up")
        wait_for(lambda: pair.role("b") == "standby", what="node b to yield")
        assert pair.hrp("b")["counters"]["split_brain"] >= 1 and pair.role("a") == "active"
        log = (pair.lab.workdir / "nodeb.log").read_text()
        assert "split brain detected" in log and "this node becomes standby" in log
    finally:
        b.ip("link", "set", "hb0", "up")
        bridge.ip("link", "set", "dev", "pb", "type", "bridge_slave", "mcast_flood", "on")
    wait_for(lambda: pair.hrp("b")["vrrp"][0]["state"] == "Backup" and pair.role("a") == "active",
             what="VRRP to settle on node a")
    wait_for(lambda: pair.ping(2, interval="0.5")[1] >= 1, what="traffic through the tunnel again")

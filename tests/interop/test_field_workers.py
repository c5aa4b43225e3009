"""Two strongSwan peers against one ``ikegate run`` with its DEFAULT workers (one per CPU, no ``--workers``):
the way users and peers meet the gateway. One lab for the module; each peer's SAs live on another worker.

    hostA (192.0.2.10) -- gwA [ikegate] wan0 198.51.100.1, 2001:db8:ff::1 --+-- sw6 [charon, IKEv2 over IPv6]
                                                                          |     2001:db8:ff::4, lo 203.0.113.1
                                                         bridge (ns wan) -+-- sw4 [charon, IKEv1 over IPv4]
                                                                          |     198.51.100.4, lo 203.0.113.17
                                                                          +-- attacker 198.51.100.66

The peers' addresses are chosen so that ``peer_owner`` puts them on different workers when there are two.
Tests run in file order and leave both tunnels up for the next.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ikegate.workers.steering import peer_owner
from tests.interop.netns import GW_A_LAN, HOST_A, SITE_A_V4, SITE_A_V6, Lab, Netns, Site, make_site, route_into_tun
from tests.interop.swan import Charon
from tests.interop.swan import skip_reason as swan_skip
from tests.interop.test_strongswan import _cli
from tests.interop.vrp import WAN_ITF, ike_sas, ipsec_sas
from tests.system.procs import READY, Proc
from tests.waiting import wait_for

pytestmark = pytest.mark.interop

PSK = "field-workers-psk-0123"
GW_WAN = {4: "198.51.100.1", 6: "2001:db8:ff::1"}
WORKERS = os.cpu_count() or 1


@dataclass
class Peer:
    name: str  # the ike peer's name at ikegate and the connection's at strongSwan
    ns: Netns
    charon: Charon
    family: int  # outer
    address: str
    version: int
    lan: str  # its protected /28
    host: str  # an address of it, on its loopback
    conn_extra: str = ""  # more connection settings, "    key = value" lines
    child_extra: str = ""  # more child settings, "        key = value" lines

    def conf(self) -> str:
        proposals = "aes256-sha256-x25519" if self.version == 2 else "aes256-sha256-modp2048"
        return f"""connections {{
  {self.name} {{
    version = {self.version}
    local_addrs = {self.address}
    remote_addrs = {GW_WAN[self.family]}
    proposals = {proposals}
    mobike = no
{self.conn_extra}    local {{
      auth = psk
      id = {self.address}
    }}
    remote {{
      auth = psk
      id = {GW_WAN[self.family]}
    }}
    children {{
      net {{
        local_ts = {self.lan}
        remote_ts = {SITE_A_V4}
        esp_proposals = aes256-sha256
{self.child_extra}      }}
    }}
  }}
}}
secrets {{
  ike-gw {{
    id-1 = {self.address}
    id-2 = {GW_WAN[self.family]}
    secret = "{PSK}"
  }}
}}
"""

    def ike(self) -> list[Any]:
        return [sa for sa in self.charon.sas() if sa.state == "ESTABLISHED"]

    def children(self) -> list[Any]:
        return [c for sa in self.ike() for c in sa.children if c.state == "INSTALLED"]


@dataclass
class Field:
    lab: Lab
    site: Site
    peers: list[Peer]
    attacker: Netns
    bridge: Netns
    gw: Proc | None = None
    log: Path = field(default_factory=Path)

    def ping(self, peer: Peer, count: int = 3, interval: str = "0.2",
             wait: int = 10) -> subprocess.CompletedProcess[str]:
        return self.site.host.exec("ping", "-c", str(count), "-i", interval, "-W", str(wait), peer.host, check=False,
                                   timeout=120 + count)

    def sas_of(self, peer: Peer, phase: int = 1) -> list[dict[str, Any]]:
        assert self.gw is not None
        return [r for r in ike_sas(self.gw, phase) if r["peer_address"] == peer.address]

    def up(self, peer: Peer) -> bool:
        """Both sides hold the same Child SA (SPIs) for ``peer``."""
        assert self.gw is not None
        ours = {(r["spi_in"], r["spi_out"]) for r in ipsec_sas(self.gw) if r["peer_address"] == peer.address}
        return bool(ours & {(c.spi_out, c.spi_in) for c in peer.children()})

    def wait_up(self, *peers: Peer) -> None:
        for peer in peers or self.peers:
            wait_for(lambda p=peer: self.up(p), what=f"the tunnel to {peer.name}", step=0.2)  # type: ignore[misc]

    def config(self) -> str:
        lines = ["#", "sysname GwA", "#", "ike proposal 10", " encryption-algorithm aes-256",
                 " integrity-algorithm hmac-sha2-256", " prf hmac-sha2-256", " dh group31", "#", "ike proposal 20",
                 " encryption-algorithm aes-256", " authentication-algorithm sha2-256", " dh group14", "#"]
        for peer in self.peers:
            lines += [f"ike peer {peer.name}", f" pre-shared-key {PSK}",
                      f" ike-proposal {10 if peer.version == 2 else 20}"]
            lines += [" undo version 1"] if peer.version == 2 else [" undo version 2", " exchange-mode main"]
            lines += [f" remote-address {peer.address}", "#"]
        # a template for any other peer (site-to-multisite), as most deployments have: it makes every
        # IKE_SA_INIT from anywhere a half-open SA with a DH computation
        lines += ["ike peer anyone", f" pre-shared-key {PSK}-tpl", " ike-proposal 10", " undo version 1", "#"]
        lines += ["ipsec proposal esp1", " transform esp", " esp encryption-algorithm aes-256",
                  " esp authentication-algorithm sha2-256", "#"]
        for n, peer in enumerate(self.peers):
            net, _, _plen = peer.lan.partition("/")
            lines += [f"acl number {3001 + n}",
                      f" rule 5 permit ip source 192.0.2.0 0.0.0.63 destination {net} 0.0.0.15", "#"]
        for n, peer in enumerate(self.peers):
            lines += [f"ipsec policy pol1 {10 * (n + 1)} isakmp", f" security acl {3001 + n}", f" ike-peer {peer.name}",
                      " proposal esp1", " sa trigger-mode auto", "#"]
        lines += ["ipsec policy-template tpl1 1", " ike-peer anyone", " proposal esp1", "#",
                  "ipsec policy pol1 100 isakmp template tpl1", "#"]
        lines += [f"interface {WAN_ITF}", f" ip address {GW_WAN[4]} 255.255.255.0", " ipv6 enable",
                  f" ipv6 address {GW_WAN[6]}/64", " ipsec policy pol1", "#", "interface GigabitEthernet0/0/2",
                  f" ip address {GW_A_LAN[4]} 255.255.255.192", "#", "return", ""]
        return "\n".join(lines)

    def start(self) -> Proc:
        cfg = self.lab.workdir / "gwa.cfg"
        cfg.write_text(self.config())
        control = self.lab.workdir / "gwa.sock"
        self.log = self.lab.workdir / "gwa.log"
        popen = self.lab.spawn(self.site.gw, [sys.executable, "-m", "ikegate", "run", str(cfg), "--control",
                                              str(control), "--tun", "GigabitEthernet0/0/2=tun-lan"], self.log,
                               env={"PYTHONUNBUFFERED": "1"})

        def ready() -> bool:
            if popen.poll() is not None:
                raise AssertionError(f"ikegate exited ({popen.returncode}): {self.log.read_text()}")
            return READY in self.log.read_text(errors="replace")

        wait_for(ready, what="ikegate to start")
        self.gw = Proc("gwa", popen, str(control), self.log)  # type: ignore[arg-type]
        route_into_tun(self.site.gw, ["203.0.113.0/24"])
        return self.gw

    def pids(self) -> list[int]:
        """The supervisor (``ip netns exec`` execs it) and its workers."""
        assert self.gw is not None
        root = self.gw.popen.pid
        return [root, *(p for p in _children(root) if _is_ikegate(p))]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(p) for p in out]


def _is_ikegate(pid: int) -> bool:
    try:
        return b"ikegate" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _peer(lab: Lab, bridge: Netns, port: str, name: str, family: int, address: str, version: int, lan: str,
          host: str) -> Peer:
    ns = lab.netns(name, forwarding=True)
    lab.link(ns, "wan0", bridge, port)
    bridge.ip("link", "set", port, "master", "br0")
    ns.addr("wan0", f"{address}/{24 if family == 4 else 64}")
    ns.addr("lo", f"{host}/32")
    charon = Charon(lab, ns, lab.workdir / name)
    charon.start()
    peer = Peer(name, ns, charon, family, address, version, lan, host)
    charon.load(peer.conf())
    return peer


@pytest.fixture(scope="module")
def fld(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Field]:
    reason = swan_skip()
    if reason:
        pytest.skip(reason)
    lab = Lab(tmp_path_factory.mktemp("field"))
    the = None
    try:
        site = make_site(lab, "A", HOST_A, GW_A_LAN, SITE_A_V4, SITE_A_V6)
        bridge = lab.netns("wan")
        bridge.ip("link", "add", "br0", "type", "bridge")
        bridge.ip("link", "set", "br0", "up")
        lab.link(site.gw, "wan0", bridge, "p0")
        bridge.ip("link", "set", "p0", "master", "br0")
        site.gw.addr("wan0", f"{GW_WAN[4]}/24")
        site.gw.addr("wan0", f"{GW_WAN[6]}/64")
        sw6 = _peer(lab, bridge, "p1", "sw6", 6, "2001:db8:ff::4", 2, "203.0.113.0/28", "203.0.113.1")
        sw4 = _peer(lab, bridge, "p2", "sw4", 4, "198.51.100.4", 1, "203.0.113.16/28", "203.0.113.17")
        attacker = lab.netns("attacker")
        lab.link(attacker, "wan0", bridge, "p3")
        bridge.ip("link", "set", "p3", "master", "br0")
        attacker.addr("wan0", "198.51.100.66/24")
        the = Field(lab, site, [sw6, sw4], attacker, bridge)
        the.start()
        yield the
    finally:
        if the is not None:
            sys.stderr.write(f"\n--- ikegate log ---\n{the.log.read_text()[-4000:] if the.log.is_file() else ''}\n")
            for peer in the.peers:
                sys.stderr.write(f"\n--- {peer.name} charon ---\n{peer.charon.log()[-3000:]}\n")
        lab.close()


def _owner(peer: Peer) -> int:
    return peer_owner(peer.address, WORKERS)


# ---------------------------------------------------------------------------------------------- tests


def _each_tunnel_carries_pings_on_its_peers_worker(fld: Field) -> None:
    assert fld.gw is not None
    fld.wait_up()
    for peer in fld.peers:
        out = fld.ping(peer)
        assert out.returncode == 0, out.stdout
        (sa,) = fld.sas_of(peer)
        assert (sa["conn_id"] - 1) % WORKERS == _owner(peer), sa
        assert len(peer.ike()) == 1
    st = fld.gw.call("stats")["stats"]
    assert st["workers"] == WORKERS and st["misrouted"] == 0, st


def test_both_tunnels_come_up_each_on_its_peers_worker(fld: Field) -> None:
    assert WORKERS < 2 or _owner(fld.peers[0]) != _owner(fld.peers[1])  # the lab's premise
    _each_tunnel_carries_pings_on_its_peers_worker(fld)


def _reset_and_back(fld: Field, command: str, reset: list[Peer]) -> None:
    """``command`` on the supervisor's CLI: each peer of ``reset`` hears a Delete at once and the auto
    policy brings its tunnel back; the other peer's SA is untouched."""
    assert fld.gw is not None
    fld.wait_up()
    before = {p.name: p.ike()[0].uniqueid for p in fld.peers}
    out = _cli(fld, command)  # type: ignore[arg-type]
    assert out.returncode == 0 and "Error" not in out.stdout, out.stdout + out.stderr
    for peer in reset:
        old = before[peer.name]
        wait_for(lambda p=peer, o=old: all(sa.uniqueid != o for sa in p.charon.sas()),  # type: ignore[misc]
                 what=f"the Delete at {peer.name}")
        assert f"received DELETE for IKE_SA {peer.name}[{old}]" in peer.charon.log()
    for peer in fld.peers:
        if peer not in reset:
            assert [sa.uniqueid for sa in peer.ike()] == [before[peer.name]]
    for peer in reset:
        wait_for(lambda p=peer: len(p.ike()) == 1 and len(fld.sas_of(p)) == 1,  # type: ignore[misc]
                 what=f"{peer.name} re-established")
    _each_tunnel_carries_pings_on_its_peers_worker(fld)


@pytest.mark.parametrize("index", [0, 1], ids=["v2-worker-of-sw6", "v1-worker-of-sw4"])
def test_reset_conn_id_of_each_workers_ike_sa(fld: Field, index: int) -> None:
    fld.wait_up()
    peer = fld.peers[index]
    (sa,) = fld.sas_of(peer)
    _reset_and_back(fld, f"reset ike sa conn-id {sa['conn_id']}", [peer])


@pytest.mark.parametrize("index", [0, 1], ids=["remote-ipv6", "remote-ipv4"])
def test_reset_remote_each_family(fld: Field, index: int) -> None:
    peer = fld.peers[index]
    _reset_and_back(fld, f"reset ike sa remote {peer.address}", [peer])


def test_reset_all_clears_both_workers(fld: Field) -> None:
    _reset_and_back(fld, "reset ike sa", fld.peers)


@pytest.mark.parametrize("index", [0, 1], ids=["v2", "v1"])
def test_reset_conn_id_of_a_phase2_sa_on_each_worker(fld: Field, index: int) -> None:
    """The phase-2 conn-id: that IPsec SA goes (the peer hears a Delete naming its SPI), the auto policy
    negotiates a new one under the same IKE SA."""
    assert fld.gw is not None
    fld.wait_up()
    peer = fld.peers[index]
    ike_id = peer.ike()[0].uniqueid
    before = {(c.spi_in, c.spi_out) for c in peer.children()}
    (child,) = fld.sas_of(peer, 2)
    out = _cli(fld, f"reset ike sa conn-id {child['conn_id']}")  # type: ignore[arg-type]
    assert out.returncode == 0 and "Error" not in out.stdout, out.stdout
    wait_for(lambda: not {(c.spi_in, c.spi_out) for c in peer.children()} & before,
             what=f"the child Delete at {peer.name}")
    log = peer.charon.log()
    assert any(f"received DELETE for ESP CHILD_SA with SPI {spi:08x}" in log for pair in before for spi in pair)
    wait_for(lambda: fld.up(peer), what="the child re-created")
    assert [sa.uniqueid for sa in peer.ike()] == [ike_id]
    assert fld.ping(peer).returncode == 0


def test_hostile_traffic_spares_the_workers_and_the_tunnels(fld: Field) -> None:
    """Junk, truncated, oversized and lying IKE, IKE_SA_INIT floods from one and from 180 spoofed addresses,
    ESP-in-UDP with unknown SPIs -- to UDP 500 and 4500 -- while hostA pings both peers through their
    tunnels: every process stays up with a bounded RSS, no ping is lost, the established SAs stay, and
    the counters show the drops."""
    assert fld.gw is not None
    gw = fld.gw
    fld.wait_up()
    pids = fld.pids()
    assert len(pids) == 1 + (WORKERS if WORKERS > 1 else 0), pids
    rss = {p: _rss_kb(p) for p in pids}
    sas = {(r["conn_id"], r["spi_i"], r["spi_r"]) for r in ike_sas(gw)}
    st0 = gw.call("stats")["stats"]
    pings: dict[str, subprocess.CompletedProcess[str]] = {}

    def pinger(peer: Peer) -> None:
        pings[peer.name] = fld.ping(peer, count=150, interval="0.1", wait=5)

    threads = [threading.Thread(target=pinger, args=(p,)) for p in fld.peers]
    for t in threads:
        t.start()
    attack = fld.attacker.exec("env", f"PYTHONPATH={Path.cwd()}", sys.executable, "-m", "tests.interop.hostile",
                               GW_WAN[4], "198.51.100.0/24", "400", check=False, timeout=300)
    for t in threads:
        t.join()
    assert attack.returncode == 0, attack.stdout + attack.stderr
    for name, out in pings.items():
        assert out.returncode == 0 and " 0% packet loss" in out.stdout, (name, out.stdout[-300:])
    assert all(Path(f"/proc/{p}").exists() for p in pids) and fld.pids() == pids  # no worker restarted
    assert {(r["conn_id"], r["spi_i"], r["spi_r"]) for r in ike_sas(gw)} >= sas
    st = gw.call("stats")["stats"]
    assert st["dropped"] > st0["dropped"], st  # IKE
    assert st["esp_drops"].get("spi", 0) >= st0["esp_drops"].get("spi", 0) + 400, st  # ESP with unknown SPIs
    # the half-open SAs the floods made stay within the admission limit (``ike call admission limit``,
    # 5000 per worker by default; their expiry is stepped in memory: tests/protocol/test_gateway_admission.py)
    assert st["engines"] <= 5000 * WORKERS + len(sas), st
    grown = {p: _rss_kb(p) - rss[p] for p in pids}
    sys.stderr.write(f"RSS before {rss} growth kB {grown} stats {st}\n")
    assert all(g < 30_000 for g in grown.values()), grown
    fld.wait_up()


@pytest.mark.parametrize("dependent", [True, False], ids=["dependent", "undo-dependent"])
def test_ikev1_reset_conn_id_of_the_isakmp_sa_deletes_the_ipsec_sa_too(fld: Field, dependent: bool) -> None:
    """``reset ike sa conn-id`` of sw4's ISAKMP SA, with ``ikev1 phase1-phase2 sa dependent`` and without
    (the seed's precaution: then too): strongSwan hears the Delete of its IPsec SA and of the ISAKMP SA,
    and the auto policy brings both back."""
    fld.wait_up()
    sw4 = fld.peers[1]
    children = {(c.spi_in, c.spi_out) for c in sw4.children()}
    _shell(fld, "system-view", f"{'' if dependent else 'undo '}ikev1 phase1-phase2 sa dependent", "return")
    try:
        (sa,) = fld.sas_of(sw4)
        _reset_and_back(fld, f"reset ike sa conn-id {sa['conn_id']}", [sw4])
        log = sw4.charon.log()
        assert any(f"received DELETE for ESP CHILD_SA with SPI {spi:08x}" in log for pair in children for spi in pair)
        assert not {(c.spi_in, c.spi_out) for c in sw4.children()} & children
    finally:
        _shell(fld, "system-view", "undo ikev1 phase1-phase2 sa dependent", "return")


def test_rekeys_by_strongswan_under_traffic_lose_no_ping(fld: Field) -> None:
    """Both peers rekey often (IKEv2: Child SA every 4 s, IKE SA every 7 s; IKEv1: Quick Mode every 4 s,
    Main Mode every 7 s) while hostA pings each every 0.1 s: no ping is lost across the rekeys, on
    either worker, and both sides agree on the IKE SAs."""
    assert fld.gw is not None
    fld.wait_up()
    firsts = {}
    for peer in fld.peers:
        peer.conn_extra = "    rekey_time = 7s\n    rand_time = 0\n    over_time = 20s\n"
        peer.child_extra = "        rekey_time = 4s\n        rand_time = 0\n        life_time = 60s\n"
        peer.charon.load(peer.conf())
        firsts[peer.name] = peer.ike()[0].uniqueid
        out = peer.charon.terminate("--ike", peer.name)  # the new settings take effect on a new IKE SA
        assert out.returncode == 0, out.stdout
    try:
        fld.wait_up()
        wait_for(lambda: all(fld.ping(p, count=1, wait=1).returncode == 0 for p in fld.peers), what="traffic")
        def established(peer: Peer) -> int:  # Child SAs strongSwan set up so far (new, rekeyed)
            return sum(1 for line in peer.charon.log().splitlines()
                       if "CHILD_SA net{" in line and "} established with SPIs" in line)

        before = {p.name: established(p) for p in fld.peers}
        pings: dict[str, subprocess.CompletedProcess[str]] = {}
        threads = [threading.Thread(target=lambda p=p: pings.__setitem__(p.name, fld.ping(p, 150, "0.1", 5)))
                   for p in fld.peers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for peer in fld.peers:
            assert established(peer) >= before[peer.name] + 2, peer.name  # rekeyed during the pings
            assert " 0% packet loss" in pings[peer.name].stdout, (peer.name, pings[peer.name].stdout[-400:])
        for peer in fld.peers:  # still rekeying: both sides hold the same IKE SAs (a replaced one may linger)
            wait_for(lambda p=peer: {(r["spi_i"], r["spi_r"]) for r in fld.sas_of(p)}  # type: ignore[misc]
                     == {(sa.raw["initiator-spi"], sa.raw["responder-spi"]) for sa in p.charon.sas()},
                     what=f"the same IKE SAs with {peer.name} on both sides")
        assert fld.gw.call("stats")["stats"]["misrouted"] == 0
    finally:
        # Back to the lab's settings, which take effect on a new IKE SA: ikegate resets (its Deletes are
        # ordered: IPsec SAs first) and the auto policies bring the tunnels back. (A strongSwan-side
        # terminate here once left sw4's tunnel down for a minute in CI: see the session note.)
        for peer in fld.peers:
            peer.conn_extra = peer.child_extra = ""
            peer.charon.load(peer.conf())
            _cli(fld, f"reset ike sa remote {peer.address}")  # type: ignore[arg-type]
        fld.wait_up()


def test_reset_of_a_traffic_based_policy_waits_for_traffic_on_any_worker(fld: Field) -> None:
    """sw6's policy switched to ``sa trigger-mode traffic-based``; ``reset ike sa remote``: nothing is
    negotiated until hostA sends to sw6 (its packets reach the TUN queue of either worker and are handed
    to the owner), then the tunnel comes back; switched back to auto afterwards."""
    assert fld.gw is not None
    gw = fld.gw
    fld.wait_up()
    sw6 = fld.peers[0]
    _shell(fld, "system-view", "ipsec policy pol1 10 isakmp", "sa trigger-mode traffic-based", "return")
    try:
        started = gw.call("stats")["stats"]["negotiations_started"]
        old = sw6.ike()[0].uniqueid
        _shell(fld, f"reset ike sa remote {sw6.address}")
        wait_for(lambda: all(sa.uniqueid != old for sa in sw6.charon.sas()), what="the Delete at sw6")
        # the other peer's tunnel answers a full ping round: by then an auto re-initiation would have begun
        assert fld.ping(fld.peers[1]).returncode == 0
        assert fld.sas_of(sw6) == [] and sw6.ike() == []
        assert gw.call("stats")["stats"]["negotiations_started"] == started
        wait_for(lambda: fld.ping(sw6, count=1, wait=1).returncode == 0, what="traffic bringing sw6 back",
                 step=0.2)
        assert gw.call("stats")["stats"]["negotiations_started"] == started + 1
        (sa,) = fld.sas_of(sw6)
        assert (sa["conn_id"] - 1) % WORKERS == _owner(sw6), sa
    finally:
        _shell(fld, "system-view", "ipsec policy pol1 10 isakmp", "sa trigger-mode auto", "return")
    fld.wait_up()


def _shell(fld: Field, *lines: str) -> str:
    assert fld.gw is not None
    answer = fld.gw.call("shell", lines=list(lines))
    assert not answer["error"], answer["output"]
    return str(answer["output"])


def test_undo_of_a_policy_removes_its_sas_on_their_worker_and_redo_brings_them_back(fld: Field) -> None:
    """``undo ipsec policy pol1 20`` with both tunnels up: sw4 (the other worker's peer) hears the Delete
    and ikegate holds nothing of it, sw6's SA stays; the policy typed again comes back up by itself."""
    assert fld.gw is not None
    fld.wait_up()
    sw6, sw4 = fld.peers
    keep, old = sw6.ike()[0].uniqueid, sw4.ike()[0].uniqueid
    _shell(fld, "system-view", "undo ipsec policy pol1 20", "return")
    wait_for(lambda: all(sa.uniqueid != old for sa in sw4.charon.sas()), what="the Delete at sw4")
    assert f"received DELETE for IKE_SA sw4[{old}]" in sw4.charon.log()
    wait_for(lambda: fld.sas_of(sw4) == [] and fld.sas_of(sw4, 2) == [], what="sw4's SAs gone at ikegate")
    assert [sa.uniqueid for sa in sw6.ike()] == [keep] and fld.ping(sw6).returncode == 0
    reasons = {r["peer"]: r["reason"] for r in fld.gw.call("offline")["offline"]}
    assert reasons.get(sw4.address) == "config modify or manual offline", reasons
    _shell(fld, "system-view", "ipsec policy pol1 20 isakmp", "security acl 3002", "ike-peer sw4", "proposal esp1",
           "sa trigger-mode auto", "return")
    fld.wait_up(sw4)
    assert fld.ping(sw4).returncode == 0
    (sa,) = fld.sas_of(sw4)
    assert (sa["conn_id"] - 1) % WORKERS == _owner(sw4), sa
    assert [sa.uniqueid for sa in sw6.ike()] == [keep]


def test_default_dpd_finds_both_vanished_peers_and_the_tunnels_return(fld: Field) -> None:
    """The default DPD (on-demand, idle 30 s, 3 probes 15 s apart): both peers' WAN links go down while
    hostA pings them, one peer per worker; each worker declares its peer dead (offline reason ``dpd
    timeout``) and drops its SAs; links up again, the auto policies bring both tunnels back."""
    assert fld.gw is not None
    gw = fld.gw
    fld.wait_up()
    ports = {"sw6": "p1", "sw4": "p2"}  # their bridge ports: the peers' own interfaces keep their addresses
    for peer in fld.peers:
        fld.bridge.ip("link", "set", ports[peer.name], "down")
    stop = threading.Event()

    def traffic(peer: Peer) -> None:
        while not stop.is_set():
            fld.ping(peer, count=5, interval="1", wait=1)

    threads = [threading.Thread(target=traffic, args=(p,), daemon=True) for p in fld.peers]
    for t in threads:
        t.start()
    try:
        def dead() -> set[str]:
            return {r["peer"] for r in gw.call("offline")["offline"] if r["reason"] == "dpd timeout"}

        wait_for(lambda: {p.address for p in fld.peers} <= dead(), 200, "both peers declared dead", step=1.0)
        for peer in fld.peers:
            wait_for(lambda p=peer: fld.sas_of(p, 2) == [], what=f"{peer.name}'s IPsec SA gone")  # type: ignore[misc]
    finally:
        for peer in fld.peers:
            fld.bridge.ip("link", "set", ports[peer.name], "up")
        stop.set()
    for peer in fld.peers:
        wait_for(lambda p=peer: fld.up(p), 120, f"{peer.name} back", step=0.5)  # type: ignore[misc]
        assert fld.ping(peer).returncode == 0

"""ikegate against strongSwan as an IKE responder, side by side in one run, and the ratios.

strongSwan's load-tester plugin initiates (its own namespace, 198.51.100.1) towards a responder in a second
namespace (198.51.100.2): first a strongSwan charon, then an ikegate, alternating for ``--rounds``, same
proposal, same count, PSK, FQDN identities, one Child SA per IKE SA. Per responder and round it measures
the setup rate, the responder's CPU per SA (utime + stime), its RSS growth per 1,000 SAs, and the time for
the responder to delete every SA with each Delete acknowledged (strongSwan: ``swanctl --terminate --ike
load-test``; ikegate: ``ikegate cli -c "reset ike sa"``, the client's start-up included, as an operator
sees it). The whole load comes from one address. strongSwan runs with ``dos_protection = no`` (its
``block_threshold`` would drop all but 5 half-open SAs from it); ikegate runs its defaults for IKEv2: past
``per-address`` it asks the address for a COOKIE per SA and admits those that return one (docs/admission.md),
so the figures include that round trip. IKEv1 has no COOKIE: by default an IKEv1 source may hold 32 half-open
SAs until one of its SAs has authenticated, and the load-tester fires its whole count at once, so what
exceeds 32 would wait for its first retransmission (4 s). The IKEv1 scenario therefore lifts the limit
(``ike call admission limit in-negotiation-sa per-address 100000``), as ``dos_protection = no`` does for
strongSwan. Scenarios: IKEv2 with X25519, IKEv2 with MODP-2048, IKEv1 Main Mode + Quick Mode (MODP-2048).

The same measurement as ``../shared/lab/strongswan/vs_ikegate.sh`` (one IKEv2 proposal), carried here
so it runs from the project and covers IKEv1. It needs root (network namespaces), strongSwan from Debian
(``charon-systemd``, ``strongswan-swanctl``, the standard and extra plugins: installed with apt-get when
missing) and the load-tester plugin, which Debian does not ship: ``build-load-tester.sh`` of the lab
builds it from Debian's source package (``--build-script``). When any of that is missing it prints why it
skips and exits 0. Absolute figures swing with whatever else runs on the machine: read the ratios.

    make bench-vs-strongswan            # or: sudo .venv/bin/python bench/vs_strongswan.py -n 2000 --rounds 2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from _procs import cpu_seconds, rss_kb  # summed over the supervisor and its workers

PROJECT = Path(__file__).resolve().parent.parent
LAB_SCRIPT = Path("..", "shared", "lab", "strongswan", "build-load-tester.sh")  # from the project root
PACKAGES = ("charon-systemd", "strongswan-swanctl", "libstrongswan-standard-plugins", "libstrongswan-extra-plugins")
CHARON = "/usr/sbin/charon-systemd"
PLUGINS = ("random nonce aesni aes sha1 sha2 hmac kdf openssl gcm curve25519 gmp x509 pem pkcs1 pkcs8 pubkey "
           "load-tester kernel-netlink socket-default vici")
I_ADDR, R_ADDR = "198.51.100.1", "198.51.100.2"
PSK = "vs-load-test-psk-0123456789"
DELETE_LIMIT = 60.0  # seconds to wait for the initiator to hold no IKE SA after the responder's delete-all


@dataclass(frozen=True)
class Scenario:
    name: str
    version: int
    dh: str  # strongSwan's name
    group: str  # VRP's ``dh`` value


SCENARIOS = {
    "v2-x25519": Scenario("IKEv2 aes256-sha256-x25519, ESP aes256gcm16", 2, "x25519", "group31"),
    "v2-modp2048": Scenario("IKEv2 aes256-sha256-modp2048, ESP aes256gcm16", 2, "modp2048", "group14"),
    "v1-modp2048": Scenario("IKEv1 Main + Quick Mode aes256-sha256-modp2048, ESP aes256gcm16", 1, "modp2048",
                            "group14"),
}


class Skip(Exception):
    """The comparison cannot run here; the message says why."""


# ------------------------------------------------------------------------------------------ prerequisites


def default_build_script() -> Path:
    """The lab's script next to the project root; from a git worktree, next to the main checkout's."""
    roots = [PROJECT]
    common = subprocess.run(["git", "-C", str(PROJECT), "rev-parse", "--git-common-dir"], capture_output=True,
                            text=True).stdout.strip()
    if common:
        roots.append((PROJECT / common).resolve().parent)
    found = [root / LAB_SCRIPT for root in roots if (root / LAB_SCRIPT).is_file()]
    return (found or [PROJECT / LAB_SCRIPT])[0].resolve()


def prerequisites(build_script: Path) -> str:
    """The load-tester plugin's path, after checking root and strongSwan (installing its packages)."""
    if os.geteuid() != 0:
        raise Skip("needs root (network namespaces, charon); run it with sudo")
    for tool in ("ip", "dpkg-query"):
        if shutil.which(tool) is None:
            raise Skip(f"{tool} not found")
    missing = [p for p in PACKAGES if "ok installed" not in subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True).stdout]
    if missing:
        print(f"installing {' '.join(missing)} from Debian ...", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        ok = subprocess.run(["apt-get", "update", "-qq"], env=env).returncode == 0 and subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env,
            stdout=subprocess.DEVNULL).returncode == 0
        if not ok:
            raise Skip(f"cannot install {' '.join(missing)} with apt-get")
    if not build_script.is_file():
        raise Skip(f"no load-tester build script at {build_script} (Debian ships no load-tester plugin)")
    print("load-tester plugin: built from Debian's source unless already there ...", flush=True)
    done = subprocess.run(["bash", str(build_script)], capture_output=True, text=True)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or not Path(lines[-1]).is_file():
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise Skip(f"the load-tester plugin could not be built ({build_script}):\n{tail}")
    for line in lines:
        if "WARNING" in line:
            print(line)
    return lines[-1]


# ------------------------------------------------------------------------------------------ processes


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    """End one process this bench started (by its own handle, never by name)."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Lab:
    """Two namespaces joined by a veth, named after this process so parallel runs do not meet."""

    def __init__(self, run: Path, plugin: str, workers: int | None = None) -> None:
        self.run, self.plugin = run, plugin
        self.workers = workers  # ikegate's --workers (None: its default, one per CPU)
        self.log_level = -1  # charon's filelog level (charon.log in each namespace's folder)
        #: ikegate's ``in-negotiation-sa per-address`` for IKEv2 too (None: the default; IKEv1 always lifts it)
        self.per_address: int | None = None
        tag = os.getpid() % 100000
        self.ns_i, self.ns_r = f"vsI{tag}", f"vsR{tag}"

    def __enter__(self) -> Lab:
        veth_i, veth_r = f"vsi{os.getpid() % 100000}", f"vsr{os.getpid() % 100000}"
        try:
            for cmd in (["netns", "add", self.ns_i], ["netns", "add", self.ns_r],
                        ["link", "add", veth_i, "netns", self.ns_i, "type", "veth", "peer", "name", veth_r,
                         "netns", self.ns_r],
                        ["-n", self.ns_i, "link", "set", "lo", "up"], ["-n", self.ns_r, "link", "set", "lo", "up"],
                        ["-n", self.ns_i, "addr", "add", f"{I_ADDR}/24", "dev", veth_i],
                        ["-n", self.ns_r, "addr", "add", f"{R_ADDR}/24", "dev", veth_r],
                        ["-n", self.ns_i, "link", "set", veth_i, "up"],
                        ["-n", self.ns_r, "link", "set", veth_r, "up"]):
                subprocess.run(["ip", *cmd], check=True)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for ns in (self.ns_i, self.ns_r):
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)

    # -- strongSwan

    def charon_conf(self, ns: str, scenario: Scenario) -> Path:
        folder = self.run / ns
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "strongswan.conf").write_text(f"""charon {{
\tload = {PLUGINS}
\tthreads = 16
\treuse_ikesa = no
\tdos_protection = no
\tikesa_table_size = 1024
\tikesa_table_segments = 16
\tretransmit_tries = 3
\tinstall_routes = no
\tplugins {{
\t\tload-tester {{
\t\t\tenable = yes
\t\t\tfake_kernel = yes
\t\t\tinitiators = 0
\t\t\tinitiator = {I_ADDR}
\t\t\tresponder = {R_ADDR}
\t\t\tproposal = aes256-sha256-{scenario.dh}
\t\t\tesp = aes256gcm16
\t\t\tinitiator_auth = psk
\t\t\tresponder_auth = psk
\t\t\tpreshared_key = {PSK}
\t\t\tversion = {scenario.version}
\t\t\tchild_rekey = 3600
\t\t\tsocket = unix://{folder}/charon.ldt
\t\t}}
\t\tvici {{ socket = unix://{folder}/charon.vici }}
\t}}
\tfilelog {{ lab {{ path = {folder}/charon.log
\t\tappend = no
\t\tdefault = {self.log_level} }} }}
\tjournal {{ default = -1 }}
\tsyslog {{ daemon {{ default = -1 }} }}
}}
""")
        return folder

    def swanctl(self, ns: str, *args: str) -> subprocess.CompletedProcess[str]:
        folder = self.run / ns
        return subprocess.run(["ip", "netns", "exec", ns, "env", f"STRONGSWAN_CONF={folder}/strongswan.conf",
                               "swanctl", *args, "--uri", f"unix://{folder}/charon.vici"],
                              capture_output=True, text=True)

    def udp_drops(self, ns: str) -> int:
        """Datagrams the kernel of ``ns`` dropped because a UDP socket's receive buffer was full."""
        lines = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"], capture_output=True,
                               text=True).stdout.splitlines()
        udp = [line.split()[1:] for line in lines if line.startswith("Udp:")]
        return int(dict(zip(udp[0], udp[1], strict=True))["RcvbufErrors"]) if len(udp) == 2 else 0

    def ike_sas(self, ns: str) -> int | None:
        for line in self.swanctl(ns, "--stats").stdout.splitlines():
            if line.startswith("IKE_SAs:"):
                return int(line.split()[1])
        return None

    @contextmanager
    def charon(self, ns: str, scenario: Scenario) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
        """The charon of ``ns`` and its vici socket."""
        folder = self.charon_conf(ns, scenario)
        with suppress(FileNotFoundError):
            (folder / "charon.vici").unlink()
        with open(folder / "charon.stdout", "wb") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", ns, "env", f"STRONGSWAN_CONF={folder}/strongswan.conf",
                                     f"LD_PRELOAD={self.plugin}", CHARON], stdout=out, stderr=subprocess.STDOUT)
        try:
            for _ in range(200):
                if (folder / "charon.vici").exists() and self.ike_sas(ns) is not None:
                    break
                if proc.poll() is not None:
                    raise RuntimeError(f"charon in {ns} exited; see {folder}/charon.stdout")
                time.sleep(0.05)
            else:
                raise RuntimeError(f"charon in {ns} did not come up; see {folder}/charon.log")
            yield proc, str(folder / "charon.vici")
        finally:
            stop(proc)

    # -- ikegate

    def ikegate_conf(self, scenario: Scenario) -> Path:
        version = "" if scenario.version == 2 else " undo version 2\n"
        # IKEv1 only (see the module's docstring): IKEv2 runs with the default admission.
        per_address = 100000 if scenario.version == 1 else self.per_address
        lift = "" if per_address is None else (
            f"ike call admission limit in-negotiation-sa per-address {per_address}\n#\n")
        path = self.run / "ikegate.cfg"
        path.write_text(f"""#
sysname PERF
#
{lift}ike proposal 10
 encryption-algorithm aes-256
 authentication-algorithm sha2-256
 prf hmac-sha2-256
 dh {scenario.group}
#
ike peer lt
 pre-shared-key {PSK}
 ike-proposal 10
 local-id-type fqdn
 local-id srv.strongswan.org
{version}#
ipsec proposal p1
 transform esp
 esp encryption-algorithm aes-gcm-256
#
acl number 3000
 rule 5 permit ip source {R_ADDR} 0 destination {I_ADDR} 0
#
ipsec policy-template lt 1
 security acl 3000
 ike-peer lt
 proposal p1
#
ipsec policy perf 10 isakmp template lt
#
interface GigabitEthernet0/0/1
 ip address {R_ADDR} 255.255.255.0
 ipsec policy perf
#
return
""")
        return path

    @contextmanager
    def ikegate(self, scenario: Scenario) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
        """An ikegate responder in the responder namespace and its control socket."""
        cfg, control = self.ikegate_conf(scenario), str(self.run / "ikegate.sock")
        with suppress(FileNotFoundError):
            os.unlink(control)
        with open(self.run / "ikegate.log", "wb") as log:
            proc = subprocess.Popen(["ip", "netns", "exec", self.ns_r, sys.executable, "-m", "ikegate", "run",
                                     str(cfg), "--control", control,
                                     *([] if self.workers is None else ["--workers", str(self.workers)])],
                                    stdout=log, stderr=subprocess.STDOUT)
        try:
            for _ in range(200):
                if os.path.exists(control):
                    break
                if proc.poll() is not None:
                    raise RuntimeError(f"ikegate exited; see {self.run}/ikegate.log")
                time.sleep(0.05)
            yield proc, control
        finally:
            stop(proc)


# ------------------------------------------------------------------------------------------ one measurement


@dataclass
class Result:
    established: int
    failed: int
    retransmits: int
    rate: float
    cpu_ms: float
    rss_mb_per_1k: float
    delete_s: float
    delete_drops: int  # datagrams the initiator's kernel dropped (receive buffer full) during the delete
    delete_left: int  # IKE SAs the initiator still held when the wait for the delete ended
    setup_drops: tuple[int, int] = (0, 0)  # datagrams the (initiator, responder) kernel dropped during set-up
    #: ikegate only, after the set-up: IKE SAs each worker reported, datagrams the kernel steered to a worker
    #: that does not own them, COOKIEs sent
    spread: str = ""


def drive(ldt: Path, count: int, timeout: float) -> tuple[int, int, int, float]:
    """Ask the initiator's load-tester for ``count`` IKE SAs: established, failed, retransmits, seconds."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(ldt))
        t0 = time.monotonic()
        s.sendall(b"%d 0\n" % count)
        marks = {"+": 0, "-": 0, "*": 0}
        last = None
        deadline = t0 + timeout
        done = False
        while not done and time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = s.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            for ch in data.decode(errors="replace"):
                if ch in marks:
                    marks[ch] += 1
                if ch in "+-":
                    last = time.monotonic()
                done = done or ch == "\n"
    return marks["+"], marks["-"], marks["*"], (last or time.monotonic()) - t0


def spread_of(control: str) -> str:
    """How the set-up spread over ikegate's workers (one address's IKE_SA_INITs go by initiator SPI)."""
    from ikegate.mgmt.client import request

    workers = request(control, {"op": "workers"}).get("workers", [])
    st = request(control, {"op": "stats"}).get("stats", {})
    held = [w.get("reported_sas") for w in workers]
    return f" workers={held} misrouted={st.get('misrouted')} cookies={st.get('cookies_sent')}"


def measure(lab: Lab, scenario: Scenario, who: str, count: int, timeout: float) -> Result:
    responder = lab.charon(lab.ns_r, scenario) if who == "strongswan" else lab.ikegate(scenario)
    with lab.charon(lab.ns_i, scenario), responder as (proc, control):
        time.sleep(0.5)
        cpu0, rss0 = cpu_seconds(proc.pid), rss_kb(proc.pid)
        setup0 = lab.udp_drops(lab.ns_i), lab.udp_drops(lab.ns_r)
        est, failed, retrans, elapsed = drive(lab.run / lab.ns_i / "charon.ldt", count, timeout)
        cpu1, rss1 = cpu_seconds(proc.pid), rss_kb(proc.pid)
        setup_drops = lab.udp_drops(lab.ns_i) - setup0[0], lab.udp_drops(lab.ns_r) - setup0[1]
        spread = "" if who == "strongswan" else spread_of(control)
        drops0 = lab.udp_drops(lab.ns_i)
        t0 = time.monotonic()
        if who == "strongswan":
            lab.swanctl(lab.ns_r, "--terminate", "--ike", "load-test", "--loglevel", "-1")
        else:
            reset = subprocess.run([str(Path(sys.executable).with_name("ikegate")), "cli", "--control", control,
                                    "-c", "reset ike sa"], capture_output=True, text=True)
            if reset.returncode:
                print(f"  reset ike sa failed: {reset.stdout[-500:]}{reset.stderr[-500:]}", flush=True)
        while (lab.ike_sas(lab.ns_i) or 0) > 0 and time.monotonic() - t0 < DELETE_LIMIT:
            time.sleep(0.02)
        gone = time.monotonic() - t0
        left = lab.ike_sas(lab.ns_i) or 0
        drops = lab.udp_drops(lab.ns_i) - drops0
    per = max(est, 1)
    return Result(est, failed, retrans, est / elapsed if elapsed else 0.0, 1000 * (cpu1 - cpu0) / per,
                  (rss1 - rss0) / 1024 * 1000 / per, gone, drops, left, setup_drops, spread)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("-n", type=int, default=2000, help="IKE SAs per run (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=2, help="strongSwan/ikegate alternations (default: %(default)s)")
    ap.add_argument("--scenario", action="append", choices=sorted(SCENARIOS),
                    help="repeatable; default: all of " + ", ".join(SCENARIOS))
    ap.add_argument("--timeout", type=float, default=240, help="seconds per set-up run (default: %(default)s)")
    ap.add_argument("--build-script", type=Path, default=None,
                    help="builds the load-tester plugin and prints its path last (default: the lab's, "
                         "../shared/lab/strongswan/build-load-tester.sh from the project root)")
    ap.add_argument("--charon-log", type=int, default=-1, metavar="LEVEL",
                    help="charon's log level for each namespace's charon.log (default: %(default)s, off)")
    ap.add_argument("--keep", type=Path, default=None, metavar="DIR",
                    help="run in DIR and keep it (configurations, charon.log, ikegate.log) for a post-mortem")
    ap.add_argument("--workers", type=int, default=None, metavar="N",
                    help="ikegate's worker processes (default: its own, one per CPU; CPU and RSS are summed "
                         "over the supervisor and its workers)")
    ap.add_argument("--per-address", type=int, default=None, metavar="N",
                    help="set ikegate's in-negotiation-sa per-address for IKEv2 too (default: its default, 32, so "
                         "the load-tester answers COOKIEs past it; IKEv1 always runs with 100000)")
    args = ap.parse_args()
    try:
        plugin = prerequisites(args.build_script or default_build_script())
    except Skip as why:
        print(f"SKIP vs_strongswan: {why}")
        return 0
    scenarios = [SCENARIOS[name] for name in (args.scenario or SCENARIOS)]
    load = os.getloadavg()
    print(f"ikegate vs strongSwan {strongswan_version()} as IKE responder, {args.n} IKE + Child SAs per run, PSK, "
          f"load-tester initiator, ikegate --workers {args.workers or 'default'}; "
          f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"on {os.cpu_count()} CPUs (ratios are what counts on a shared machine)")
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            folder = args.keep
        else:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vs-strongswan-")))
        lab = stack.enter_context(Lab(folder, plugin, args.workers))
        lab.log_level = args.charon_log
        lab.per_address = args.per_address
        for scenario in scenarios:
            print(f"\n{scenario.name}")
            runs: dict[str, list[Result]] = {"strongswan": [], "ikegate": []}
            for _ in range(args.rounds):
                for who in runs:
                    r = measure(lab, scenario, who, args.n, args.timeout)
                    runs[who].append(r)
                    print(f"  {who:10} established={r.established} failed={r.failed} retransmits={r.retransmits} "
                          f"(set-up drops: initiator {r.setup_drops[0]}, responder {r.setup_drops[1]}) "
                          f"rate={r.rate:.0f}/s cpu={r.cpu_ms:.3f} ms/SA rss={r.rss_mb_per_1k:.1f} MB/1k "
                          f"delete_all={r.delete_s:.2f} s (initiator dropped {r.delete_drops}, kept {r.delete_left})"
                          f"{r.spread}",
                          flush=True)
            report(runs)
    return 0


def report(runs: dict[str, list[Result]]) -> None:
    """Medians over the rounds, and ikegate's figure as a multiple of strongSwan's."""
    rows = (("setups/s", "rate", "higher is better"), ("responder CPU ms per SA", "cpu_ms", "lower is better"),
            ("responder RSS MB per 1,000 SAs", "rss_mb_per_1k", "lower is better"),
            ("delete all, acknowledged (s)", "delete_s", "lower is better"))
    print(f"  {'median':32} {'strongSwan':>10} {'ikegate':>10} {'ratio':>7}")
    for label, attr, note in rows:
        s = statistics.median(getattr(r, attr) for r in runs["strongswan"])
        g = statistics.median(getattr(r, attr) for r in runs["ikegate"])
        ratio = f"{g / s:6.2f}x" if s else "     -"
        print(f"  {label:32} {s:10.3f} {g:10.3f} {ratio}  ({note})")


def strongswan_version() -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libstrongswan"], capture_output=True, text=True)
    return out.stdout.strip() or "?"


if __name__ == "__main__":
    sys.exit(main())

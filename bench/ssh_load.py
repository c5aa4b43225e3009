"""Does the daemon keep negotiating while 20 SSH sessions run `display ike sa` over N SAs (issue 13: the
management plane never stalls negotiation; goal: >= 80 % of the idle set-up rate at N = 100,000)?

HQ (the responder) holds N established IKE SAs (each with its IPsec SA, negotiated with the project's
``load`` op). Then M more are negotiated twice: once with the management plane idle, once while S SSH
sessions (asyncssh clients with a PTY, as an operator or netmiko would have) run `display ike sa` in a
loop. Prints the set-up rate of both runs, their ratio, and how many displays the sessions completed;
then, on the idle gateway, the wall time of one whole `display ike sa` (2N rows) over SSH, from Enter to
the next prompt, and through `ikegate cli -c`.

    python bench/ssh_load.py -n 100000     # the goal's size (set up in 2-10 minutes, 2 x 2 GB RSS)
    python bench/ssh_load.py -n 10000      # the size of the first measurement (408 -> 26 SAs/s)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import asyncssh
from _procs import HQ, add_worker_options, describe_workers, pair, wait_sas, worker_options

SSH_PORT = 25222
USER = "bench"
KEY = asyncssh.generate_private_key("ssh-ed25519")
_PUBLIC = KEY.export_public_key("openssh").decode().split()
SSH_CONFIG = f"""ecc peer-public-key benchkey
 public-key {_PUBLIC[0]} {_PUBLIC[1]}
 peer-public-key end
ssh user {USER} authentication-type ecc
ssh user {USER} assign ecc-key benchkey
ssh user {USER} service-type stelnet
aaa
 local-user {USER} level 3
 local-user {USER} service-type ssh
#
stelnet server enable
ssh server port {SSH_PORT}
user-interface maximum-vty 20
#
user-interface vty 0 4
 authentication-mode aaa
"""


def _connect() -> asyncssh.SSHClientConnection:
    return asyncssh.connect(HQ, SSH_PORT, username=USER, client_keys=[KEY], known_hosts=None)


async def display(proc: asyncssh.SSHClientProcess[str]) -> bool:
    """One `display ike sa`, read to the next prompt; False if the session ended."""
    proc.stdin.write("display ike sa\r")
    # Read in chunks and watch the tail for the next prompt: readuntil() gives up on a
    # multi-megabyte table (its buffer limit), an operator's terminal does not.
    tail = ""
    while not (tail.endswith("<HQ>") and "NEG--NEGOTIATING" in tail):
        chunk = await proc.stdout.read(1 << 16)
        if not chunk:
            return False
        tail = (tail + chunk)[-4096:]
    return True


async def openssh_session(stop: asyncio.Event, counts: list[int], index: int, key_file: str,
                          ready: asyncio.Event) -> None:
    """A session through OpenSSH's client (C): the bench's own decryption must not eat the cores the two
    gateways negotiate on (20 asyncssh clients take about a core at full display rate)."""
    proc = await asyncio.create_subprocess_exec(
        "ssh", "-tt", "-i", key_file, "-p", str(SSH_PORT), "-o", "StrictHostKeyChecking=no", "-o",
        "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes", f"{USER}@{HQ}",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None

    async def until(done: Callable[[bytes], bool]) -> bool:
        tail = b""
        while not done(tail):
            chunk = await proc.stdout.read(1 << 16)  # type: ignore[union-attr]
            if not chunk:
                return False
            tail = (tail + chunk)[-4096:]
        return True

    await until(lambda t: t.endswith(b"<HQ>"))
    proc.stdin.write(b"screen-length 0 temporary\r")
    await until(lambda t: t.endswith(b"<HQ>"))
    ready.set()
    while not stop.is_set():
        proc.stdin.write(b"display ike sa\r")
        if not await until(lambda t: t.endswith(b"<HQ>") and b"NEG--NEGOTIATING" in t):
            break
        counts[index] += 1
    proc.stdin.write(b"quit\r")
    await proc.wait()


async def session(stop: asyncio.Event, counts: list[int], index: int, key_file: str | None,
                  ready: asyncio.Event) -> None:
    if key_file is not None:
        await openssh_session(stop, counts, index, key_file, ready)
        return
    async with _connect() as conn:
        proc = await conn.create_process(term_type="vt100", term_size=(200, 50))
        await proc.stdout.readuntil("<HQ>")
        proc.stdin.write("screen-length 0 temporary\r")
        await proc.stdout.readuntil("<HQ>")
        ready.set()
        while not stop.is_set():
            if not await display(proc):
                return
            counts[index] += 1
        proc.stdin.write("quit\r")


async def one_display(runs: int) -> list[float]:
    """Wall time of whole `display ike sa` outputs over one SSH session, Enter to prompt."""
    out = []
    async with _connect() as conn:
        proc = await conn.create_process(term_type="vt100", term_size=(200, 50))
        await proc.stdout.readuntil("<HQ>")
        proc.stdin.write("screen-length 0 temporary\r")
        await proc.stdout.readuntil("<HQ>")
        for _ in range(runs):
            start = time.perf_counter()
            await display(proc)
            out.append(time.perf_counter() - start)
        proc.stdin.write("quit\r")
    return out


def cli_display(hq, runs: int, command: str = "display ike sa") -> list[float]:  # type: ignore[no-untyped-def]
    """Wall time of `ikegate cli -c COMMAND` (process start to transcript printed)."""
    exe = [sys.executable, "-m", "ikegate", "cli", "--control", hq.control, "-c", command]
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(exe, check=True, capture_output=True)
        out.append(time.perf_counter() - start)
    return out


def negotiate(br, hq, target: int, more: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    """Negotiate ``more`` SAs; the rate of those that came up, and how many failed. Stops waiting once
    all are up or nothing has come up for 10 s (failed negotiations are retried by nobody)."""
    failed0 = sum(br.call("stats")["stats"]["negotiations_failed"].values())
    start = time.monotonic()
    br.call("load", count=more, concurrency=128)
    last, last_change = 0, time.monotonic()
    while True:
        up = br.call("stats")["stats"]["ipsec_sas"] - target
        if up != last:
            last, last_change = up, time.monotonic()
        if up >= more or time.monotonic() - last_change > 10:
            break
        time.sleep(0.05)
    failed = sum(br.call("stats")["stats"]["negotiations_failed"].values()) - failed0
    return last / (last_change - start), failed


async def with_ssh_load(br, hq, target: int, more: int,  # type: ignore[no-untyped-def]
                        sessions: int, key_file: str | None) -> tuple[tuple[float, int], list[int]]:
    stop = asyncio.Event()
    counts = [0] * sessions
    tasks = []
    for i in range(sessions):  # one login at a time: the server admits 4 logging-in connections per address
        ready = asyncio.Event()
        tasks.append(asyncio.create_task(session(stop, counts, i, key_file, ready)))
        done, _ = await asyncio.wait([tasks[-1], asyncio.create_task(ready.wait())],
                                     return_when=asyncio.FIRST_COMPLETED)
        if tasks[-1] in done:
            tasks[-1].result()  # the session failed to log in: say why
    result = await asyncio.to_thread(negotiate, br, hq, target, more)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    return result, counts


def _own_cpu() -> float:
    """CPU of this process and its finished children (the OpenSSH clients)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10_000, help="SAs established before measuring")
    ap.add_argument("-m", type=int, default=2_000, help="SAs negotiated in each measured run")
    ap.add_argument("-s", type=int, default=20, help="SSH sessions")
    ap.add_argument("--runs", type=int, default=5, help="whole displays timed on the idle gateway")
    ap.add_argument("--rounds", type=int, default=3,
                    help="idle/loaded pairs of runs, alternating (the ratio's median is the figure)")
    ap.add_argument("--client", choices=("openssh", "asyncssh"), default="openssh",
                    help="the displaying sessions' SSH client (openssh: cheaper for the bench itself)")
    add_worker_options(ap)
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="ikegate-bench-key-")
    key_file = None
    if args.client == "openssh":
        key_file = str(Path(tmp.name) / "id_ed25519")
        KEY.write_private_key(key_file)
        os.chmod(key_file, 0o600)
    with pair(port=25300, hq_extra=SSH_CONFIG, workers=worker_options(args)) as (hq, br):
        time.sleep(0.5)
        start = time.monotonic()
        br.call("load", count=args.n, concurrency=128)
        wait_sas(br, args.n, timeout=max(900, args.n / 40))  # the load op slows down as SAs accumulate
        wait_sas(hq, args.n, timeout=900)
        built = time.monotonic() - start
        rounds = []
        for _ in range(args.rounds):  # alternating, so that a change in the machine's load hits both
            base = br.call("stats")["stats"]["ipsec_sas"]
            idle, idle_failed = negotiate(br, hq, base, args.m)
            base = br.call("stats")["stats"]["ipsec_sas"]
            cpu0 = hq.cpu_seconds(), br.cpu_seconds(), _own_cpu()
            (loaded, loaded_failed), counts = asyncio.run(with_ssh_load(br, hq, base, args.m, args.s, key_file))
            cpu = hq.cpu_seconds() - cpu0[0], br.cpu_seconds() - cpu0[1], _own_cpu() - cpu0[2]
            rounds.append((idle, idle_failed, loaded, loaded_failed, counts, cpu))
        rows = hq.call("stats")["stats"]
        rows = rows["ike_sas"] + rows["ipsec_sas"]
        ssh_walls = asyncio.run(one_display(args.runs))
        cli_walls = cli_display(hq, args.runs)
        small_walls = cli_display(hq, args.runs, "display current-configuration")
    print(f"HQ holding {args.n:,} IKE SAs + {args.n:,} IPsec SAs (and more each run); {args.m:,} more negotiated "
          f"per run; {args.s} SSH sessions ({args.client}) displaying in the loaded runs; "
          f"{describe_workers(worker_options(args))}; the {args.n:,} set up in {built:.0f} s")
    for i, (idle, idle_failed, loaded, loaded_failed, counts, cpu) in enumerate(rounds, 1):
        print(f"  round {i}: idle {idle:5.0f} SAs/s ({idle_failed} failed), loaded {loaded:5.0f} SAs/s ({loaded_failed}"
              f" failed), ratio {loaded / idle:4.2f}; {sum(counts)} displays (per session {min(counts)}-"
              f"{max(counts)}); CPU loaded: HQ {cpu[0]:.1f} s, branch {cpu[1]:.1f} s, clients {cpu[2]:.1f} s")
    ratios = [r[2] / r[0] for r in rounds]
    print(f"  ratio loaded / idle, median of {len(ratios)}: {statistics.median(ratios):5.2f}   (goal: >= 0.80)")
    print(f"idle gateway, display ike sa of {rows:,} rows, best / median of {args.runs} (wall, Enter to prompt):")
    print(f"  over SSH (asyncssh client)           : {ssh_walls and min(ssh_walls):6.2f} / "
          f"{statistics.median(ssh_walls):6.2f} s")
    print(f"  ikegate cli -c                       : {min(cli_walls):6.2f} / {statistics.median(cli_walls):6.2f} s"
          f"   (display current-configuration: {min(small_walls):4.2f} / {statistics.median(small_walls):4.2f} s)")


if __name__ == "__main__":
    main()

"""How fast can one address guess SSH passwords with many parallel connections, and what does it cost
the gateway?

Starts ``ikegate run`` (SSH on a loopback address), then opens C connections at once from one source
address, each trying P wrong passwords (the issue-10 attack: 150 x 3). Prints, after D seconds: the
guesses the gateway answered, the connections refused before the key exchange, the gateway's CPU time
(from /proc), and whether a connection from another address still logs in.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time

import asyncssh

GW, SOURCE, OTHER = "127.0.77.1", "127.0.77.2", "127.0.77.3"
USER, PASSWORD = "admin", "Bench-pass-123"
CONFIG = f"""sysname GW
interface GigabitEthernet0/0/1
 ip address {GW} 255.0.0.0
aaa
 local-user {USER} password irreversible-cipher {PASSWORD}
 local-user {USER} level 3
 local-user {USER} service-type ssh
stelnet server enable
ssh server port {{port}}
user-interface vty 0 4
 authentication-mode aaa
"""


class Guesser(asyncssh.SSHClient):
    def __init__(self, tries: int, answered: list[int]) -> None:
        self.left = tries
        self.answered = answered
        self.asked = 0

    def password_auth_requested(self) -> str | None:
        if self.asked:
            self.answered[0] += 1  # the previous guess was answered (refused)
        if self.left == 0:
            return None
        self.left -= 1
        self.asked += 1
        return f"wrong-{self.left}"


async def one(port: int, tries: int, answered: list[int], refused: list[int]) -> None:
    try:
        conn, _ = await asyncssh.create_connection(lambda: Guesser(tries, answered), GW, port, username=USER,
                                                   known_hosts=None, local_addr=(SOURCE, 0), client_keys=None,
                                                   agent_path=None, preferred_auth="password")
        conn.close()
    except asyncssh.PermissionDenied:
        pass
    except (asyncssh.Error, OSError) as exc:
        if "Too many" not in str(exc):
            refused[0] += 1


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main(args: argparse.Namespace) -> None:
    port = 25322
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "gw.cfg")
        with open(cfg, "w") as fh:
            fh.write(CONFIG.format(port=port))
        gw = subprocess.Popen([sys.executable, "-m", "ikegate", "run", cfg, "--control", os.path.join(tmp, "s"),
                               "--ike-port", "25500", "--natt-port", "25501"], stderr=subprocess.DEVNULL)
        try:
            while not os.path.exists(os.path.join(tmp, "s")):
                await asyncio.sleep(0.05)
            cpu0, t0 = cpu_seconds(gw.pid), time.monotonic()
            answered, refused = [0], [0]
            tasks = [asyncio.ensure_future(one(port, args.tries, answered, refused)) for _ in range(args.connections)]
            _, pending = await asyncio.wait(tasks, timeout=args.duration)
            elapsed = time.monotonic() - t0
            cpu = cpu_seconds(gw.pid) - cpu0
            for task in pending:
                task.cancel()
            async with asyncssh.connect(GW, port, username=USER, password=PASSWORD, known_hosts=None,
                                        local_addr=(OTHER, 0), client_keys=None, agent_path=None) as conn:
                other = (await conn.run("display version", check=False)).exit_status is not None
            print(f"{args.connections} connections x {args.tries} guesses from one address, {elapsed:.1f} s: "
                  f"{answered[0]} guesses answered, {refused[0]} connections refused before login, "
                  f"{len(pending)} still waiting; gateway CPU {cpu:.1f} s; other address logs in: {other}")
        finally:
            gw.terminate()
            gw.wait(20)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=150)
    parser.add_argument("--tries", type=int, default=3)
    parser.add_argument("--duration", type=float, default=30.0)
    asyncio.run(main(parser.parse_args()))

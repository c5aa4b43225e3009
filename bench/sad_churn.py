"""The SA database's and the tunnel-down log's share of a delete-all, per IKE SA (one IKE SA + one Child SA):
`remove_tree` of every SA, each entry's offline record, and the teardown log record into a log buffer that
nobody reads (stderr on /dev/null, no loghost), as `reset ike sa` does them, without the protocol.

Best of ``--repeat`` runs (the machine is shared: the minimum is the figure least disturbed by others).
Run it with another tree's interpreter to compare (``/work/main/.venv/bin/python bench/sad_churn.py``).

    python bench/sad_churn.py [-n 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gc
import inspect
import ipaddress
import time

from ikegate.cli.logbuffer import LogBuffer
from ikegate.sad import IkeSaEntry, IpsecSaEntry, Role, SaDatabase

PEER = ipaddress.ip_address("192.0.2.2")
LOCAL = ipaddress.ip_address("192.0.2.1")


def populate(n: int) -> SaDatabase:
    """n IKE SAs from one address (as a load test makes them), each with one Child SA, one template policy."""
    sad = SaDatabase()
    for i in range(n):
        ike = sad.add_ike(IkeSaEntry(version=2, role=Role.RESPONDER, local_address=LOCAL, peer_address=PEER,
                                     peer_id_type="FQDN", peer_id=f"c{i}.example", policy_name="hq", policy_seq=10,
                                     spi_i=i.to_bytes(8, "big"), spi_r=(i + 1 << 32).to_bytes(8, "big")))
        sad.add_ipsec(IpsecSaEntry.from_parent(ike, spi_in=0xC0000000 + i, spi_out=0x10000 + i, acl_rule=5))
    return sad


#: whether this tree's log buffer takes a template and its arguments (lazy records) or the finished text
LAZY = inspect.signature(LogBuffer.log).parameters.keys() >= {"args"}


def churn(sad: SaDatabase, log: LogBuffer) -> None:
    for ike in list(sad.ike_sas()):
        for entry in sad.remove_tree(ike.conn_id):
            sad.offline.record_sa(entry, "config modify or manual offline", 1.0)
            if isinstance(entry, IpsecSaEntry):
                placement = entry.placement
                if LAZY:
                    log.log("IPSEC-VPN", 5, "IPSEC_TUNNEL_TEARED_DOWN",
                            "An IPSec tunnel is teared down. (PolicyName=%s, IfIndex=%s, SeqNum=%s, RuleNum=%s, "
                            "SrcIP=%s, DstIP=%s, InboundSPI=%s, Slot=%s, CpuID=%s, OfflineReason=%s, State=Normal)",
                            entry.policy_name, 1, entry.policy_seq, entry.acl_rule, entry.local_address,
                            entry.peer_address, entry.spi_in, placement.slot, placement.cpu,
                            "config modify or manual offline")
                else:  # a tree whose log takes the finished text only (before lazy records)
                    log.log("IPSEC-VPN", 5, "IPSEC_TUNNEL_TEARED_DOWN",
                            f"An IPSec tunnel is teared down. (PolicyName={entry.policy_name}, IfIndex=1, "
                            f"SeqNum={entry.policy_seq}, RuleNum={entry.acl_rule}, SrcIP={entry.local_address}, "
                            f"DstIP={entry.peer_address}, InboundSPI={entry.spi_in}, Slot={placement.slot}, "
                            f"CpuID={placement.cpu}, OfflineReason=config modify or manual offline, State=Normal)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    best_add = best_del = float("inf")
    gc.disable()
    for _ in range(args.repeat):
        t0 = time.process_time()
        sad = populate(args.n)
        t1 = time.process_time()
        churn(sad, LogBuffer())
        t2 = time.process_time()
        assert len(sad) == 0
        best_add, best_del = min(best_add, t1 - t0), min(best_del, t2 - t1)
        gc.collect()
    per = 1e6 / args.n
    print(f"{args.n} IKE + Child SAs, best of {args.repeat}: add {best_add * per:.1f} us, "
          f"remove + offline record + teardown log {best_del * per:.1f} us per IKE SA")


if __name__ == "__main__":
    main()

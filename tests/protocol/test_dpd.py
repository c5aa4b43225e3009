"""Dead peer detection through whole gateways in memory, IKEv1 and IKEv2, with every ``dpd`` setting.

The peer "dies" the way ``kill -9`` and a restart kill it: the HQ gateway object is dropped and a fresh one
with the same configuration takes its address, so the branch's ESP and DPD probes reach a peer that knows
none of its SAs. The clock is stepped by hand; probes are read off the wire with their times.
"""

from __future__ import annotations

import pytest

from ikegate.gateway.controller import Gateway
from ikegate.ike.events import DeleteReason, IkeSaDeleted
from ikegate.ike.v1.sa import DpdType, V1Options
from ikegate.ike.wire.registry import ExchangeType
from ikegate.sad import IkeSaEntry, IpsecSaEntry
from tests.protocol import harness_v1
from tests.protocol.harness import establish, ike, make_pair
from tests.protocol.netsim import Net, lab_config

BRANCH = "127.0.0.12"
IDLE, INTERVAL, RETRIES = 10, 2, 3
V1_INFORMATIONAL = 5
#: IKEv1 phase 1 knows no AES-GCM and no Curve25519: the v1 lab uses AES-CBC and MODP-2048.
V1_P1 = {" encryption-algorithm aes-gcm-256\n dh group31": " encryption-algorithm aes-256\n dh group14"}


def _dpd_lines(kind: str) -> str:
    return (f"\n dpd type {kind}\n dpd idle-time {IDLE}\n dpd retransmit-interval {INTERVAL}"
            f"\n dpd retry-limit {RETRIES}")


class Lab:
    """HQ (template responder) and Branch1 (auto policy), one IKE version, the branch's DPD as given."""

    def __init__(self, version: int, branch_dpd: str = "on-demand", hq_dpd: str = "on-demand") -> None:
        self.version = version
        extra = "\n undo version 2" if version == 1 else ""
        self.branch_edit = {" remote-address 127.0.0.11": " remote-address 127.0.0.11" + extra + _dpd_lines(branch_dpd)}
        self.hq_edit = {"ike peer branches": "ike peer branches" + _dpd_lines(hq_dpd)}
        if version == 1:
            self.branch_edit |= V1_P1
            self.hq_edit |= V1_P1
        self.probes: list[float] = []  # times of the branch's DPD requests
        self.net = Net(drop=self._watch)
        self.hq = self.net.add(Gateway(lab_config("hq", self.hq_edit)))
        self.branch = self.net.add(Gateway(lab_config("branch1", self.branch_edit)))
        self.replies: list[tuple[float, int]] = []
        self.branch.on_echo_reply = lambda ident, seq, now: self.replies.append((now, seq))
        self.branch.start(self.net.now)
        self.net.pump()
        self.seq = 0
        assert self.tunnels(self.branch) == (1, 1) and self.tunnels(self.hq) == (1, 1)

    def _watch(self, data: bytes, src: tuple[str, int], dst: tuple[str, int]) -> bool:
        """Record the branch's DPD requests (IKEv2 INFORMATIONAL requests; IKEv1 Informationals, which
        carry R-U-THERE here: nothing else is sent in them in these tests). Drops nothing."""
        if src[0] != BRANCH or src[1] not in (500, 4500):
            return False
        if src[1] == 4500:
            if data[:4] != bytes(4):
                return False  # ESP
            data = data[4:]
        if len(data) < 28:
            return False
        if self.version == 2:
            if data[18] == ExchangeType.INFORMATIONAL and not data[19] & 0x20:
                self.probes.append(self.net.now)
        elif data[18] == V1_INFORMATIONAL:
            self.probes.append(self.net.now)
        return False

    @staticmethod
    def tunnels(gw: Gateway) -> tuple[int, int]:
        entries = list(gw.sad.entries())
        return (sum(isinstance(e, IkeSaEntry) for e in entries), sum(isinstance(e, IpsecSaEntry) for e in entries))

    def ping(self) -> None:
        self.seq += 1
        self.branch.ping(self.net.now, "10.1.1.1", "10.0.0.1", 7, self.seq)
        self.net.pump()

    def kill_hq(self) -> None:
        """SIGKILL and restart: every SA of HQ is gone, a fresh gateway with the same configuration answers."""
        self.hq = self.net.add(Gateway(lab_config("hq", self.hq_edit)))
        self.hq.start(self.net.now)

    def dpd_deaths(self) -> list[str]:
        return [r.reason for r in self.branch.sad.offline.entries() if r.reason == "dpd timeout"]


VERSIONS = [pytest.param(1, id="ikev1"), pytest.param(2, id="ikev2")]


@pytest.mark.parametrize("version", VERSIONS)
def test_on_demand_dpd_finds_restarted_peer_under_traffic_and_tunnel_returns(version: int) -> None:
    lab = Lab(version)
    for _ in range(25):  # a live tunnel with traffic: answered, never probed
        lab.ping()
        lab.net.step(1.0)
    assert len(lab.replies) == 25 and lab.probes == []
    last_reply = lab.replies[-1][0]
    lab.kill_hq()
    back_at = None
    for _ in range(40):  # the operator keeps pinging once a second
        lab.ping()
        if lab.replies[-1][0] > last_reply and back_at is None:
            back_at = lab.net.now
        lab.net.step(1.0)
    # retry-limit probes, retransmit-interval apart, the first once the peer has been silent for idle-time
    assert lab.probes[:RETRIES] == [last_reply + IDLE + k * INTERVAL for k in range(RETRIES)]
    assert lab.dpd_deaths() == ["dpd timeout"] * 2  # the IKE SA and its IPsec SA
    # detected idle + retries x interval after the last sign of life; the auto policy re-initiates at once
    assert back_at is not None and back_at <= last_reply + IDLE + RETRIES * INTERVAL + 1.0
    assert lab.tunnels(lab.branch) == (1, 1) and lab.tunnels(lab.hq) == (1, 1)
    assert lab.replies[-1][1] == lab.seq  # traffic flows again
    assert len(lab.probes) == RETRIES  # the new SA with traffic is not probed


@pytest.mark.parametrize("version", VERSIONS)
def test_on_demand_dpd_sends_nothing_without_traffic_then_probes_on_the_first_packet(version: int) -> None:
    lab = Lab(version)
    lab.ping()
    lab.net.step(300.0)
    assert lab.probes == []  # idle tunnel, nothing to send: no probe (periodic would have sent 29)
    lab.kill_hq()
    lab.net.step(300.0)
    assert lab.probes == [] and lab.tunnels(lab.branch) == (1, 1)  # undetectable without traffic, by design
    first = lab.net.now
    lab.ping()  # silent for far longer than idle-time: the first packet out triggers the probe
    lab.net.step(RETRIES * INTERVAL - 0.01)
    assert lab.probes == [first + k * INTERVAL for k in range(RETRIES)] and lab.dpd_deaths() == []
    lab.net.step(0.02)
    assert lab.dpd_deaths()
    assert lab.tunnels(lab.branch) == (1, 1) and lab.tunnels(lab.hq) == (1, 1)  # re-initiated at once
    lab.ping()
    assert lab.replies[-1][1] == lab.seq


@pytest.mark.parametrize("version", VERSIONS)
def test_periodic_dpd_probes_an_idle_peer_every_idle_time_and_finds_it_dead(version: int) -> None:
    lab = Lab(version, branch_dpd="periodic")
    start = lab.net.now
    lab.net.step(3 * IDLE + 1)
    assert lab.probes == [start + IDLE, start + 2 * IDLE, start + 3 * IDLE]  # each answered at once
    assert lab.dpd_deaths() == []
    lab.probes.clear()
    silent_since = lab.net.now - 1
    lab.kill_hq()
    lab.net.step(IDLE + RETRIES * INTERVAL)
    assert lab.probes[:RETRIES] == [silent_since + IDLE + k * INTERVAL for k in range(RETRIES)]
    assert lab.dpd_deaths()
    assert lab.tunnels(lab.branch) == (1, 1) and lab.tunnels(lab.hq) == (1, 1)


@pytest.mark.parametrize("version", VERSIONS)
def test_no_probe_while_traffic_flows_both_ways(version: int) -> None:
    """Inbound ESP is proof of life for both kinds of DPD: periodic DPD stays silent under traffic."""
    lab = Lab(version, branch_dpd="periodic")
    for _ in range(60):
        lab.ping()
        lab.net.step(1.0)
    assert lab.probes == [] and len(lab.replies) == 60


# ------------------------------------------------------------------------------ the IKEv2 engine alone


def test_v2_liveness_round_follows_retransmit_interval_and_retry_limit() -> None:
    """retry-limit 5, retransmit-interval 7: five INFORMATIONALs 7 s apart, dead 35 s after the first
    (not the generic 1, 2, 4, 8 ... s retransmission)."""
    pair = establish(make_pair(i_cfg=ike(dpd_interval=20.0, dpd_on_demand=False, dpd_retransmit=7.0, dpd_retries=5)))
    sent: list[float] = []

    def dead_peer(data: bytes, who: str) -> bool:
        if who == "i" and _requests_from([data]):
            sent.append(pair.now)
        return who == "i"

    pair.step(20 + 35 - 0.01, dead_peer)
    assert sent == [20.0 + 7 * k for k in range(5)] and pair.initiator.established
    pair.step(0.02, dead_peer)
    (down,) = pair.events("i", IkeSaDeleted)
    assert down.reason is DeleteReason.DPD_TIMEOUT and len(sent) == 5


def test_v2_on_demand_engine_probes_only_after_outbound_since_last_heard() -> None:
    quiet = ike(local_id="198.51.100.1", dpd_interval=None)
    pair = establish(make_pair(i_cfg=ike(dpd_interval=30.0, dpd_on_demand=True, dpd_retransmit=5.0, dpd_retries=3),
                               r_cfg=quiet))
    i = pair.initiator
    pair.step(200)
    assert i.awaits_outbound and not _requests_from(pair.sent_i)  # nothing sent, nothing probed
    i.note_outbound(pair.now)  # ESP out after 200 s of silence: the probe is due at once
    assert not i.awaits_outbound and i.get_timer() == i.last_received + 30.0 < pair.now
    pair.step(0.0)
    assert len(_requests_from(pair.sent_i)) == 1 and i.established and i.awaits_outbound  # answered
    i.note_inbound(pair.now + 10)  # ESP in is proof of life as well
    assert i.last_received == pair.now + 10


def _requests_from(sent: list[bytes]) -> list[bytes]:
    return [d for d in sent if len(d) >= 28 and d[18] == ExchangeType.INFORMATIONAL and not d[19] & 0x20]


def test_a_received_ike_message_postpones_dpd_in_both_versions() -> None:
    """Any authentic IKE message from the peer is proof of life: periodic DPD (idle 30 s) probes 30 s after
    the peer's own request at 20 s, not at 30 s."""
    v2 = establish(make_pair(i_cfg=ike(dpd_interval=30.0), r_cfg=ike(local_id="198.51.100.1", dpd_interval=None)))
    v2.step(20.0)
    v2.responder.liveness_check(v2.now)
    v2.transfer()
    v2.step(29.0)
    assert _requests_from(v2.sent_i) == []
    v2.step(2.0)
    assert len(_requests_from(v2.sent_i)) == 1  # at 50 s

    v1 = harness_v1.establish(harness_v1.make_pair(i_opts=V1Options(dpd_type=DpdType.PERIODIC, dpd_idle=30),
                                                   r_opts=V1Options(dpd_type=DpdType.NONE)))
    v1.step(20.0)
    v1.responder.liveness_check(v1.now)
    v1.transfer()
    v1.step(29.0)
    assert v1.initiator.stats.dpd_sent == 0
    v1.step(2.0)
    assert v1.initiator.stats.dpd_sent == 1


@pytest.mark.parametrize("version", VERSIONS)
def test_peer_gone_for_good_is_retried_without_a_hot_loop(version: int) -> None:
    """After a dpd timeout the auto policy initiates at once; while the peer stays away every attempt runs
    its course (retransmissions, then the negotiation timeout) and the next waits RETRY_AFTER_FAILURE."""
    lab = Lab(version)
    lab.ping()
    lab.net.step(1.0)
    del lab.net.gateways["127.0.0.11"]  # HQ switched off, nobody at its address
    lab.ping()
    lab.net.step(IDLE + RETRIES * INTERVAL)
    assert lab.dpd_deaths() and lab.tunnels(lab.branch)[1] == 0  # a new IKE SA in negotiation, no IPsec SA
    opening = ExchangeType.IKE_SA_INIT if version == 2 else 2  # IKEv1 Main Mode
    lab.net.seen.clear()
    lab.net.step(600.0)
    attempts = {d[:8] for d, src, _ in lab.net.seen
                if src[0] == BRANCH and len(d) >= 28 and d[18] == opening and d[8:16] == bytes(8)}
    # one attempt per half-open timeout (30 s) + RETRY_AFTER_FAILURE (5 s): retried, never in a hot loop
    assert 600 / 40 <= len(attempts) <= 600 / 30 + 1
    assert len(lab.net.seen) < 6 * len(attempts)  # a few retransmissions per attempt, no storm

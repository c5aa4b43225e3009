"""The log buffer under a flood: repeated failures are aggregated per source (and per kind across
sources), security records keep a reserved share, and the mirrors see exactly what the buffer keeps."""

from __future__ import annotations

import datetime as dt

from ikegate.cli.logbuffer import KIND_BURST, REPEAT_INTERVAL, SOURCE_BURST, LogBuffer, LogRecord


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 1, 2, 3, 4, 5)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def _negotiation_failed(buf: LogBuffer, address: str) -> None:
    buf.log("IKE", 4, "NEGOTIATION_FAILED", f"IKE negotiation failed. (RemoteAddress={address}, Reason=timeout)")


def _login_failed(buf: LogBuffer, address: str, n: int) -> None:
    buf.log("SSH", 4, "LOGIN_FAILED", f"Failed to log in through SSH. (Ip={address}, UserName=root, "
            f"AuthType=password, Times={n}, Reason=wrong password)")


def test_a_flood_from_one_source_becomes_one_line_with_a_count() -> None:
    clock = Clock()
    buf = LogBuffer(clock=clock)
    seen: list[LogRecord] = []
    buf.listeners.append(seen.append)
    _login_failed(buf, "192.0.2.66", 1)
    for _ in range(17_111):
        _negotiation_failed(buf, "198.51.100.7")
    failed = [r for r in buf if r.brief == "NEGOTIATION_FAILED"]
    assert len(failed) == SOURCE_BURST
    clock.advance(REPEAT_INTERVAL)
    buf.flush()
    summary = list(buf)[-1]
    assert summary.brief == "NEGOTIATION_FAILED" and summary.module == "IKE"
    assert "RemoteAddress=198.51.100.7" in summary.text
    assert f"(Suppressed {17_111 - SOURCE_BURST} similar messages from this source in the last 30 s.)" in summary.text
    assert any(r.brief == "LOGIN_FAILED" for r in buf)
    assert seen == list(buf)  # stderr and syslog mirrors get the same aggregated stream
    # a new window starts afresh: the next failures from that source are kept again
    _negotiation_failed(buf, "198.51.100.7")
    assert list(buf)[-1].text.endswith("Reason=timeout)")
    # a window with nothing suppressed closes without a summary
    clock.advance(REPEAT_INTERVAL)
    count = len(buf)
    buf.flush()
    assert len(buf) == count


def test_a_flood_from_many_sources_is_capped_per_kind() -> None:
    clock = Clock()
    buf = LogBuffer(clock=clock)
    for i in range(3000):
        _negotiation_failed(buf, f"2001:db8::{i:x}")
    assert sum(r.brief == "NEGOTIATION_FAILED" for r in buf) == KIND_BURST
    clock.advance(REPEAT_INTERVAL + 1)
    buf.flush()
    summaries = [r for r in buf if "Suppressed" in r.text]
    assert len(summaries) == 1
    assert f"Suppressed {3000 - KIND_BURST} similar messages from {3000 - KIND_BURST} sources" in summaries[0].text


def test_commands_and_successes_are_never_aggregated() -> None:
    buf = LogBuffer()
    for _ in range(10):
        buf.record_command(task="vty0", ip="10.0.0.1", user="admin", command="display ike sa", result="x")
        buf.log("SSH", 5, "LOGIN", "The SSH user logged in. (Ip=10.0.0.1, UserName=admin)")
    assert len(buf) == 20


def test_noise_cannot_evict_security_records_below_their_share() -> None:
    buf = LogBuffer(capacity=20)
    for n in range(1, 4):
        _login_failed(buf, "192.0.2.66", n)
    buf.record_command(task="vty0", ip="10.0.0.1", user="admin", command="undo ike peer p1")
    for i in range(1000):  # distinct tunnel events: not failures, nothing to aggregate
        buf.log("IPSEC-VPN", 4, "IPSECTUNNELSTART",
                f"An IPSec tunnel is set up. (PeerAddress=10.9.{i // 250}.{i % 250})")
    assert len(buf) == 20
    kept = list(buf)
    assert sum(r.brief == "LOGIN_FAILED" for r in kept) == 3
    assert any(r.brief == "CMDRECORD" for r in kept)
    assert kept[-1].text.endswith("PeerAddress=10.9.3.249)")  # the newest noise is there, the oldest went
    # and a burst of security records cannot push the noise below its share either
    for i in range(1000):
        buf.record_command(task="vty0", ip="10.0.0.1", user="admin", command=f"display ike sa {i}")
    assert sum(r.brief == "IPSECTUNNELSTART" for r in buf) == 10
    rendered = buf.render("GW")
    assert rendered[1:3] == ["Allowed max buffer size : 20", "Actual buffer size : 20"]
    assert "display ike sa 999" in rendered[4]  # newest first

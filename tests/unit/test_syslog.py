"""Syslog: the RFC 5424 message, the log-buffer listener, the sender on a real UDP socket, and the
``info-center loghost`` configuration (commands, errors, rendering, round trip)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import re
import socket

import pytest

from ikegate.cli.commands import default_tree
from ikegate.cli.loader import load_config
from ikegate.cli.logbuffer import LogBuffer, LogRecord
from ikegate.cli.render.config import render_config
from ikegate.cli.shell import Shell
from ikegate.mgmt.syslog import MAX_MESSAGE, SyslogSender, format_message, priority
from ikegate.policy.model import Config, LogHost
from tests.conftest import ok, system_shell

#: RFC 5424 §6 with nil PROCID and STRUCTURED-DATA, as ikegate sends it.
RFC5424 = re.compile(rb"^<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) "
                     rb"(?P<msgid>\S+) (?P<sd>-|\[.*?\]) (?P<msg>.*)$", re.S)
TZ = dt.timezone(dt.timedelta(hours=8))
WHEN = dt.datetime(2026, 11, 26, 23, 40, 1, 250000, tzinfo=TZ)


def _record(text: str = "An IPSec tunnel is teared down. (PolicyName=hq, OfflineReason=peer request)",
            severity: int = 5, brief: str = "IPSEC_TUNNEL_TEARED_DOWN", when: dt.datetime = WHEN) -> LogRecord:
    return LogRecord(when, "IPSEC-VPN", severity, brief, text)


def test_message_fields() -> None:
    data = format_message(_record(), "HQ")
    m = RFC5424.match(data)
    assert m is not None, data
    assert int(m["pri"]) == 23 * 8 + 5 == 189  # local7.notice, what a USG sends for a severity-5 log
    assert m["ts"] == b"2026-11-26T23:40:01.250+08:00"
    assert (m["host"], m["app"], m["procid"], m["msgid"], m["sd"]) == (b"HQ", b"ikegate", b"-",
                                                                        b"IPSEC_TUNNEL_TEARED_DOWN", b"-")
    assert m["msg"] == (b"%%01IPSEC-VPN/5/IPSEC_TUNNEL_TEARED_DOWN(l):An IPSec tunnel is teared down. "
                        b"(PolicyName=hq, OfflineReason=peer request)")


def test_naive_time_is_local_time_with_its_offset() -> None:
    naive = dt.datetime(2026, 1, 2, 3, 4, 5, 6000)
    m = RFC5424.match(format_message(_record(when=naive), "HQ"))
    assert m is not None
    stamp = dt.datetime.fromisoformat(m["ts"].decode())
    assert stamp.tzinfo is not None and stamp == naive.astimezone()


@pytest.mark.parametrize(("severity", "pri"), [(0, 184), (4, 188), (7, 191), (9, 191), (-1, 184)])
def test_priority_is_local7_and_the_vrp_severity(severity: int, pri: int) -> None:
    assert priority(severity) == pri


def test_header_fields_are_printable_ascii() -> None:
    m = RFC5424.match(format_message(_record(brief="X" * 40), "my gw\u00e9"))
    assert m is not None
    assert m["host"] == b"my_gw_" and m["msgid"] == b"X" * 32  # RFC 5424: MSGID is at most 32 characters
    assert RFC5424.match(format_message(_record(), ""))["host"] == b"-"  # type: ignore[index]


def test_non_ascii_message_is_utf8_behind_a_bom_and_long_ones_are_cut() -> None:
    m = RFC5424.match(format_message(_record(text="User=é"), "HQ"))
    assert m is not None and m["msg"].startswith(b"\xef\xbb\xbf%%01") and m["msg"].endswith("é".encode())
    long = format_message(_record(text="é" * 3000), "HQ")
    assert len(long) <= MAX_MESSAGE
    long.decode("utf-8")  # no half character at the cut


def test_log_buffer_listeners_see_every_record_in_order() -> None:
    buf = LogBuffer()
    seen: list[LogRecord] = []
    buf.listeners.append(seen.append)
    buf.log("IKE", 4, "NEGOTIATION_FAILED", "IKE negotiation failed.")
    buf.record_command(task="vty0", ip="10.0.0.1", user="admin", command="display ike sa")
    assert [r.brief for r in seen] == ["NEGOTIATION_FAILED", "CMDRECORD"]
    assert seen == list(buf)
    assert seen[1].body().startswith("%%01SHELL/5/CMDRECORD(l):Recorded command information. (Task=vty0")


# ------------------------------------------------------------------------------------- the sender


def _receiver(family: int, address: str) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((address, 0))
    sock.settimeout(2.0)
    return sock


def test_sender_sends_to_every_loghost_and_follows_the_configuration() -> None:
    receivers = [_receiver(socket.AF_INET, "127.0.0.1"), _receiver(socket.AF_INET, "127.0.0.2")]
    config = Config(sysname="GW")
    for rx in receivers:
        host, port = rx.getsockname()
        config.loghosts[ipaddress.ip_address(host)] = LogHost(ipaddress.ip_address(host), port)
    sender = SyslogSender(lambda: config.loghosts.values(), lambda: config.sysname)

    async def main() -> None:
        sender.send(_record())  # before open: nothing to send with, counted
        assert (sender.dropped, sender.sent) == (2, 0)
        await sender.open()
        sender.send(_record())
        config.sysname = "GW2"  # read at every message
        sender.send(_record(brief="IPSECTUNNELSTART", severity=4))
        del config.loghosts[ipaddress.ip_address("127.0.0.2")]  # ``undo info-center loghost``: at once
        sender.send(_record(brief="CMDRECORD"))
        await asyncio.sleep(0)
        sender.close()

    asyncio.run(main())
    for rx, expect in zip(receivers, (3, 2), strict=True):
        got = [RFC5424.match(rx.recv(4096)) for _ in range(expect)]
        assert all(m is not None for m in got)
        assert [(m["host"], m["msgid"], m["pri"]) for m in got if m] == [
            (b"GW", b"IPSEC_TUNNEL_TEARED_DOWN", b"189"), (b"GW2", b"IPSECTUNNELSTART", b"188"),
            (b"GW2", b"CMDRECORD", b"189")][:expect]
        rx.setblocking(False)  # the sender is closed and loopback delivery is done: nothing is on its way
        with pytest.raises(BlockingIOError):
            rx.recv(4096)
        rx.close()
    assert (sender.sent, sender.dropped, sender.errors) == (5, 2, 0)


def test_sender_ipv6() -> None:
    try:
        rx = _receiver(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback")
    addr = ipaddress.ip_address("::1")
    hosts = [LogHost(addr, rx.getsockname()[1])]
    sender = SyslogSender(lambda: hosts, lambda: "GW")

    async def main() -> None:
        await sender.open()
        sender.send(_record())
        await asyncio.sleep(0)
        sender.close()

    asyncio.run(main())
    assert RFC5424.match(rx.recv(4096)) is not None
    rx.close()


# ---------------------------------------------------------------------------------- configuration




def test_loghost_commands_and_rendering() -> None:
    shell = system_shell()
    ok(shell, "info-center loghost 192.0.2.10")
    ok(shell, "info-center loghost 192.0.2.9 port 5514")
    ok(shell, "info-center loghost ipv6 2001:db8::10 port 6514")
    ok(shell, "info-center loghost ipv6 2001:db8::9")
    ok(shell, "info-center loghost 192.0.2.10 port 1514")  # the same address again: its port changes
    lines = render_config(shell.config)
    assert [line for line in lines if "info-center" in line] == [
        " info-center loghost 192.0.2.9 port 5514",
        " info-center loghost 192.0.2.10 port 1514",
        " info-center loghost ipv6 2001:db8::9",
        " info-center loghost ipv6 2001:db8::10 port 6514",
    ]
    assert " info-center loghost 192.0.2.9 port 5514" in ok(shell, "display this")
    ok(shell, "undo info-center loghost 192.0.2.10")
    ok(shell, "undo info-center loghost ipv6 2001:db8::9")
    assert sorted(str(a) for a in shell.config.loghosts) == ["192.0.2.9", "2001:db8::10"]
    assert shell.config.loghosts[ipaddress.ip_address("2001:db8::10")].port == 6514


def test_loghost_errors() -> None:
    shell = system_shell()
    for line, caret in (("info-center loghost 0.0.0.0", 20), ("info-center loghost 239.1.1.1", 20),
                        ("info-center loghost 192.0.2.1 port 0", 35), ("info-center loghost ipv6 192.0.2.1", 25),
                        ("info-center loghost ipv6 ff02::1", 25), ("info-center loghost 2001:db8::1", 20)):
        out = shell.run(line)
        assert out.error == "Error: Wrong parameter found at '^' position.", (line, out.lines)
        assert out.lines[0].index("^") == len("[USG6000]") + caret, line
    assert shell.run("undo info-center loghost 192.0.2.1").error == "Error: The log host 192.0.2.1 does not exist."
    for n in range(8):
        ok(shell, f"info-center loghost 192.0.2.{n + 1}")
    assert shell.run("info-center loghost 192.0.2.100").error == \
        "Error: The number of log hosts has reached the upper limit (8)."
    ok(shell, "info-center loghost 192.0.2.1 port 600")  # changing one already there is still fine
    assert shell.run("info-center loghost").error == "Error: Incomplete command found at '^' position."
    assert shell.run("return").error is None
    out = shell.run("info-center loghost 192.0.2.1")  # system view only
    assert out.error == "Error: Unrecognized command found at '^' position."


def test_loghost_round_trip() -> None:
    text = ("sysname GW\ninfo-center loghost ipv6 2001:db8::5 port 5514\ninfo-center loghost 10.0.0.1\n"
            "interface GigabitEthernet0/0/1\n ip address 10.0.0.2 255.255.255.0\n"
            "info-center loghost 10.0.0.3 port 514\n")
    config, errors = load_config(text)
    assert errors == []
    first = render_config(config)
    again, errors = load_config("\n".join(first))
    assert errors == [] and render_config(again) == first
    assert first[:5] == ["#", " sysname GW", " info-center loghost 10.0.0.1", " info-center loghost 10.0.0.3",
                         " info-center loghost ipv6 2001:db8::5 port 5514"]


def test_loghost_command_is_logged_and_sent_like_any_command() -> None:
    """The command record of ``info-center loghost`` itself goes to the host it just configured."""
    buf = LogBuffer()
    got: list[LogRecord] = []
    shell = Shell(Config(), tree=default_tree(), logbuffer=buf)
    buf.listeners.append(lambda r: got.append(r) if shell.config.loghosts else None)
    ok(shell, "system-view")
    ok(shell, "info-center loghost 192.0.2.7")
    assert [r.brief for r in got] == ["CMDRECORD"] and 'Command="info-center loghost 192.0.2.7"' in got[0].text

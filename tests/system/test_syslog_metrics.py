"""Syslog and metrics from running daemons: real sockets on loopback, in one asyncio loop.

Log hosts are UDP sockets on 127.0.0.x (and ::1 when the host has IPv6) that parse what arrives as
RFC 5424; the metrics endpoint is scraped over HTTP. One process: gateways are :class:`Daemon` objects,
as in ``ikegate demo``; ``--metrics`` itself is checked once through ``ikegate run``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import re
import socket
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ikegate.cli.loader import load_config
from ikegate.daemon import Daemon, DaemonOptions
from ikegate.gateway.device import Selection
from tests.system.procs import free_port_pair, gateway, lab_text
from tests.waiting import until, wait_for

pytestmark = pytest.mark.system

RFC5424 = re.compile(r"^<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) "
                     r"(?P<msgid>\S+) (?P<sd>-|\[.*?\]) (?P<msg>.*)$", re.S)


class Collector(asyncio.DatagramProtocol):
    """A syslog receiver: every datagram parsed as RFC 5424 (a datagram that does not parse fails)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, str]] = []

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        text = data.decode("utf-8")
        m = RFC5424.match(text.replace("\ufeff", "", 1))
        assert m is not None, text
        assert dt.datetime.fromisoformat(m["ts"]).tzinfo is not None
        self.messages.append(m.groupdict())

    def briefs(self) -> list[str]:
        return [m["msgid"] for m in self.messages]

    def find(self, msgid: str, needle: str = "") -> dict[str, str] | None:
        return next((m for m in self.messages if m["msgid"] == msgid and needle in m["msg"]), None)


async def _listen(host: str) -> tuple[asyncio.DatagramTransport, Collector, int]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(Collector, local_addr=(host, 0))
    return transport, proto, transport.get_extra_info("sockname")[1]


async def _mark(rx: Collector, host: str, port: int, tag: str) -> int:
    """Send a marker datagram to the log host at ``host``:``port`` and wait until it is in; return how many
    messages came before it. Datagrams sent on loopback before it (the gateway's, in this same thread)
    are in the socket's queue ahead of it, so this is "everything sent so far has landed" without
    guessing a time."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(f"<14>1 2026-01-01T00:00:00+00:00 test - - {tag} - marker".encode(), (host, port))
    await until(lambda: rx.find(tag) is not None, what=f"the marker {tag}")
    return rx.messages.index(next(m for m in rx.messages if m["msgid"] == tag))


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _daemon(text: str, port: int, **kw: object) -> Daemon:
    config, errors = load_config(text)
    assert errors == [], errors
    return Daemon(config, DaemonOptions(ike_port=port, natt_port=port + 1, **kw))  # type: ignore[arg-type]


async def _scrape(host: str, port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: ikegate\r\n\r\n")
    await writer.drain()
    data = (await reader.read()).decode()
    writer.close()
    head, _, body = data.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200 OK"), head
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(body) for s in f.samples}


def test_daemons_send_syslog_and_serve_metrics() -> None:
    port = free_port_pair()
    n = random.randrange(20, 120)
    hq_addr, br_addr, bad_addr, rx_addr = (f"127.0.5.{n}", f"127.0.5.{n + 100}", f"127.0.7.{n}", f"127.0.6.{n}")
    ipv6 = _has_ipv6()

    async def main() -> None:
        rx_t, rx, rx_port = await _listen(rx_addr)  # Branch1's log host (configured in its file)
        hq_t, hq_rx, hq_port = await _listen(rx_addr)  # HQ's (configured later, by command)
        v6 = await _listen("::1") if ipv6 else None
        extra = f"info-center loghost {rx_addr} port {rx_port}\n"
        if v6 is not None:
            extra += f"info-center loghost ipv6 ::1 port {v6[2]}\n"
        br_text = lab_text("branch1", **{"127.0.0.11": hq_addr, "127.0.0.12": br_addr}).replace(
            "sysname Branch1\n", "sysname Branch1\n" + extra)
        hq = _daemon(lab_text("hq", **{"127.0.0.11": hq_addr}), port)
        br = _daemon(br_text, port, metrics=f"{rx_addr}:0")
        bad = _daemon(lab_text("branch1", **{"127.0.0.11": hq_addr, "127.0.0.12": bad_addr,
                                             "ikegate-lab-psk-0123": "a-wrong-key"}), port)
        await hq.start()
        out, failed = await hq.run_lines(["system-view", f"info-center loghost {rx_addr} port {hq_port}", "return"])
        assert not failed, out
        await br.start()
        try:
            # the tunnel comes up: Branch1 logs it, to both of its log hosts
            await until(lambda: rx.find("IPSECTUNNELSTART") is not None, what="tunnel-up log")
            up = rx.find("IKE_SA_ESTABLISHED")
            assert up is not None and up["host"] == "Branch1" and up["app"] == "ikegate" and up["pri"] == "190"
            start = rx.find("IPSECTUNNELSTART")
            assert start is not None and start["pri"] == "188"
            assert start["msg"].startswith("%%01IPSEC-VPN/4/IPSECTUNNELSTART(l):The IPSec tunnel is established.")
            assert f"DstIP={hq_addr}" in start["msg"]
            if v6 is not None:
                await until(lambda: "IPSECTUNNELSTART" in v6[1].briefs(), what="IPv6 log host")
            assert br.metrics is not None
            metrics = await _scrape(rx_addr, br.metrics.port)
            assert metrics["ikegate_ike_sas", (("state", "established"), ("version", "2"))] == 1
            assert metrics["ikegate_resets_total", ()] == 0

            # a manual reset: the command record and the teardown with its reason, on both ends
            out, failed = await br.run_lines(["reset ike sa"])
            assert not failed, out
            await until(lambda: rx.find("IPSEC_TUNNEL_TEARED_DOWN") is not None, what="teardown log")
            # the record is logged once the command has run, so after the teardown it caused
            await until(lambda: rx.find("CMDRECORD", 'Command="reset ike sa"') is not None, what="command record")
            cmd = rx.find("CMDRECORD", 'Command="reset ike sa"')
            assert cmd is not None and cmd["pri"] == "189" and "Task=api" in cmd["msg"]
            down = rx.find("IPSEC_TUNNEL_TEARED_DOWN")
            assert down is not None and "OfflineReason=config modify or manual offline" in down["msg"]
            await until(lambda: hq_rx.find("IPSEC_TUNNEL_TEARED_DOWN") is not None, what="HQ teardown log")
            hq_down = hq_rx.find("IPSEC_TUNNEL_TEARED_DOWN")
            assert hq_down is not None and hq_down["host"] == "HQ" and "OfflineReason=peer request" in hq_down["msg"]
            assert hq_rx.find("CMDRECORD", "info-center loghost") is not None  # its own configuration
            assert rx.find("CMDRECORD", "info-center") is None  # each host hears its own gateway only

            await until(lambda: len(br.device.select(Selection(phase=2))) == 1, what="re-established")
            metrics = await _scrape(rx_addr, br.metrics.port)
            assert metrics["ikegate_resets_total", ()] == 1
            assert metrics["ikegate_deletes_total", (("direction", "sent"),)] >= 1
            assert metrics["ikegate_negotiations_total", (("result", "succeeded"),)] >= 2

            # a peer with the wrong key: HQ logs the failed negotiation
            await bad.start()
            await until(lambda: hq_rx.find("NEGOTIATION_FAILED") is not None, what="negotiation failure log")
            fail = hq_rx.find("NEGOTIATION_FAILED")
            assert fail is not None and fail["pri"] == "188" and bad_addr in fail["msg"]

            # undo: nothing more reaches the host
            out, failed = await hq.run_lines(["system-view", f"undo info-center loghost {rx_addr}", "return"])
            assert not failed, out
            before = await _mark(hq_rx, rx_addr, hq_port, "MARK1")  # what was sent before the undo has landed
            await hq.run_lines(["display ike sa"])  # a command record, and the bad peer keeps failing
            after = await _mark(hq_rx, rx_addr, hq_port, "MARK2")
            assert after == before + 1, hq_rx.messages[before:]  # nothing between the two markers
            assert any(r.brief == "CMDRECORD" and "display ike sa" in r.text for r in hq.logbuffer)  # still local
        finally:
            for d in (bad, br, hq):
                await d.stop()
        rx_t.close()
        hq_t.close()
        if v6 is not None:
            v6[0].close()
        assert br.syslog.errors == 0 and br.syslog.dropped == 0

    asyncio.run(main())


def test_ikegate_run_metrics_option(tmp_path: Path) -> None:
    """``ikegate run --metrics ADDR:PORT`` serves on that address, and a bad value stops it at once."""
    port = free_port_pair()
    n = random.randrange(20, 120)
    hq_addr, metrics_addr = f"127.0.8.{n}", f"127.0.8.{n + 100}"
    with socket.socket() as s:
        s.bind((metrics_addr, 0))
        metrics_port = s.getsockname()[1]
    with gateway(tmp_path, "hq", lab_text("hq", **{"127.0.0.11": hq_addr}), port, "--metrics",
                 f"{metrics_addr}:{metrics_port}") as hq:
        url = f"http://{metrics_addr}:{metrics_port}/metrics"

        def scrape() -> str:
            try:
                with urllib.request.urlopen(url, timeout=30) as answer:
                    return str(answer.read().decode())
            except OSError:
                return ""

        wait_for(lambda: "ikegate_ike_sas" in scrape(), what="metrics endpoint")
        assert 'ikegate_ipsec_sas{version="2"} 0.0' in scrape()
        with socket.socket() as other:  # only that address: the same port elsewhere on loopback is closed
            assert other.connect_ex(("127.0.0.1", metrics_port)) != 0
        assert hq.popen.poll() is None

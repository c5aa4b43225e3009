"""Prometheus metrics, read from the device at scrape time (``ikegate run --metrics ADDR:PORT``).

A custom collector, not ``Counter``/``Gauge`` objects: the gateway already counts everything (the SA
database's counts, the controller's statistics, the dataplane's per-SA counters), so a second set of
counters updated alongside would only be a second truth to drift. Each scrape asks the device once for
its :class:`~ikegate.gateway.device.Statistics`:

=========================================  =====  ============================================================
metric                                      type   source
=========================================  =====  ============================================================
``ikegate_ike_sas{version,state}``         gauge  phase-1 entries of the SA database; state ``established``
                                                   or ``negotiating`` (the ``NEG`` flag)
``ikegate_ipsec_sas{version}``             gauge  phase-2 entries of the SA database
``ikegate_negotiations_started_total``     count  negotiations started (as initiator or responder)
``ikegate_negotiations_total{result}``     count  ``succeeded`` / ``failed``
``ikegate_negotiation_failures_total``     count  failures by ``reason`` (the notify or local cause)
``ikegate_deletes_total{direction}``       count  Delete payloads ``sent`` / ``received``
``ikegate_resets_total``                   count  ``reset ike sa`` / ``reset ipsec sa`` commands
``ikegate_cookies_sent_total``             count  IKEv2 COOKIE challenges (the half-open SA defence)
``ikegate_ike_dropped_total``              count  IKE datagrams dropped unparsed (malformed, unknown SPI)
``ikegate_esp_packets_total{direction}``   count  ESP packets ``in`` (decrypted) / ``out`` (encrypted)
``ikegate_esp_bytes_total{direction}``     count  their inner bytes
``ikegate_esp_drops_total{reason}``        count  packets the dataplane dropped: ESP by reason (spi, replay,
                                                   icv, …), clear ones from the LAN (no-sa, malformed)
=========================================  =====  ============================================================

The ESP counters live on each SA; the dataplane adds an SA's counters to its retired totals when it
deletes the SA (:meth:`~ikegate.dataplane.backend.UserspaceBackend.totals`), so the counters exported here
never go down and lose nothing.

The HTTP endpoint is served on the daemon's own event loop (:class:`MetricsServer`) rather than with
``prometheus_client.start_http_server``, whose thread would ask the device while the loop changes it;
here a scrape is just another callback on the loop, so it sees a consistent state.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from ikegate.gateway.device import Device, Statistics

__all__ = ["DeviceCollector", "MetricsServer", "parse_listen", "registry_for"]


def _ike_states(st: Statistics) -> dict[tuple[int, str], int]:
    out: dict[tuple[int, str], int] = {}
    for version in (1, 2):
        negotiating = st.negotiating.get(version, 0)
        out[version, "negotiating"] = negotiating
        out[version, "established"] = st.ike_sas.get(version, 0) - negotiating
    return out


class DeviceCollector(Collector):
    """Asks one device for its statistics at every :meth:`collect` (see the module docstring)."""

    def __init__(self, device: Device) -> None:
        self.device = device

    def collect(self) -> Iterator[Metric]:
        st = self.device.statistics()
        ike = GaugeMetricFamily("ikegate_ike_sas", "IKE (phase 1) SAs in the SA database",
                                labels=["version", "state"])
        for (version, state), n in sorted(_ike_states(st).items()):
            ike.add_metric([str(version), state], n)
        yield ike
        ipsec = GaugeMetricFamily("ikegate_ipsec_sas", "IPsec (phase 2) SA pairs in the SA database",
                                  labels=["version"])
        for version in (1, 2):
            ipsec.add_metric([str(version)], st.ipsec_sas.get(version, 0))
        yield ipsec

        yield CounterMetricFamily("ikegate_negotiations_started", "IKE negotiations started",
                                  value=st.negotiations_started)
        result = CounterMetricFamily("ikegate_negotiations", "IKE negotiations finished, by result",
                                     labels=["result"])
        result.add_metric(["succeeded"], st.negotiations_succeeded)
        result.add_metric(["failed"], sum(st.negotiations_failed.values()))
        yield result
        failures = CounterMetricFamily("ikegate_negotiation_failures", "IKE negotiations failed, by reason",
                                       labels=["reason"])
        for reason, n in sorted(st.negotiations_failed.items()):
            failures.add_metric([reason], n)
        yield failures
        deletes = CounterMetricFamily("ikegate_deletes", "Delete payloads, by direction", labels=["direction"])
        deletes.add_metric(["sent"], st.deletes_sent)
        deletes.add_metric(["received"], st.deletes_received)
        yield deletes
        yield CounterMetricFamily("ikegate_resets", "reset ike sa / reset ipsec sa commands run", value=st.resets)
        yield CounterMetricFamily("ikegate_cookies_sent", "IKEv2 cookie challenges sent", value=st.cookies_sent)
        yield CounterMetricFamily("ikegate_ike_dropped", "IKE datagrams dropped before any SA took them",
                                  value=st.dropped)
        admission = CounterMetricFamily("ikegate_ike_admission", "First messages of IKE negotiations not "
                                        "admitted, and half-open SAs ended by their deadline", labels=["outcome"])
        admission.add_metric(["malformed"], st.openings_malformed)
        admission.add_metric(["refused"], st.openings_refused)
        admission.add_metric(["half_open_expired"], st.half_open_expired)
        yield admission
        yield CounterMetricFamily("ikegate_ike_auth_failures", "Peers that failed to authenticate to us",
                                  value=st.auth_failures)
        by_reason = CounterMetricFamily("ikegate_ike_auth_failure_reasons", "Failed IKE authentications "
                                        "(either role, either side refusing), by reason", labels=["reason"])
        for reason, n in sorted(st.auth_failure_reasons.items()):
            by_reason.add_metric([reason], n)
        yield by_reason
        yield CounterMetricFamily("ikegate_ike_peers_blocked", "Source addresses blocked after repeated "
                                  "authentication failures", value=st.sources_blocked)

        esp = st.esp
        packets = CounterMetricFamily("ikegate_esp_packets", "ESP packets, by direction", labels=["direction"])
        octets = CounterMetricFamily("ikegate_esp_bytes", "Bytes carried in ESP packets (inner packets), "
                                     "by direction", labels=["direction"])
        for direction in ("in", "out"):
            packets.add_metric([direction], esp.get(("packets", direction), 0))
            octets.add_metric([direction], esp.get(("bytes", direction), 0))
        yield packets
        yield octets
        drops = CounterMetricFamily("ikegate_esp_drops", "Packets the ESP dataplane dropped, by reason (no-sa "
                                    "and malformed are clear packets from the protected side)", labels=["reason"])
        for (kind, reason), n in sorted(esp.items()):
            if kind == "drops":
                drops.add_metric([reason], n)
        yield drops


def registry_for(device: Device) -> CollectorRegistry:
    """A registry holding only this device's collector (no process or GC metrics of the default one:
    with several daemons in one process, as in ``ikegate demo`` or tests, they would be shared)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DeviceCollector(device))
    return registry


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT`` or ``[V6ADDR]:PORT`` (the address is required: metrics are served on it only)."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected ADDR:PORT, not {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:  # "::1:80" could be an address with no port at all
        raise ValueError(f"an IPv6 address goes in brackets, [ADDR]:PORT, not {text!r}")
    ipaddress.ip_address(host)  # ValueError for a host name: the address is what gets bound
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port out of range in {text!r}")
    return host, port


_MAX_HEAD = 8192
_READ_TIMEOUT = 5.0


class MetricsServer:
    """A minimal HTTP/1.1 endpoint: ``GET /metrics`` (and ``/``) answers the registry's exposition, in
    OpenMetrics when the scraper asks for it; anything else is 404/405. One request per connection."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self.registry = registry
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]  # the real one when 0 was asked for

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            writer.close()
            return
        try:
            status, ctype, body = self._answer(head[:_MAX_HEAD].decode("latin-1"))
            method = head.split(b" ", 1)[0]
            writer.write(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode("latin-1"))
            if method != b"HEAD":
                writer.write(body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _answer(self, head: str) -> tuple[str, str, bytes]:
        request_line, *header_lines = head.split("\r\n")
        parts = request_line.split()
        if len(parts) != 3:
            return "400 Bad Request", "text/plain", b"bad request\n"
        method, target, _ = parts
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"method not allowed\n"
        if target.split("?", 1)[0] not in ("/metrics", "/"):
            return "404 Not Found", "text/plain", b"not found\n"
        accept = ""
        for line in header_lines:
            name, _, value = line.partition(":")
            if name.strip().lower() == "accept":
                accept = value.strip()
        encoder, ctype = choose_encoder(accept)
        return "200 OK", ctype, encoder(self.registry)

"""Prometheus metrics: the collector read from gateways negotiating in memory, the HTTP endpoint on a
loopback address, and ``--metrics`` parsing."""

from __future__ import annotations

import asyncio
import struct

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ikegate.gateway.controller import Gateway
from ikegate.gateway.local import LocalDevice
from ikegate.mgmt.metrics import MetricsServer, parse_listen, registry_for
from tests.protocol.netsim import Net, lab_config


class Scraper:
    def __init__(self, gw: Gateway) -> None:
        self.registry = registry_for(LocalDevice(gw))

    def __call__(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        assert value is not None, (name, labels)
        return value


def _lab(b2_psk: str | None = None) -> tuple[Net, Gateway, Gateway, Gateway]:
    net = Net()
    hq = net.add(Gateway(lab_config("hq")))
    b1 = net.add(Gateway(lab_config("branch1")))
    b2 = net.add(Gateway(lab_config("branch2", {"ikegate-lab-psk-0123": b2_psk} if b2_psk else None)))
    for gw in (hq, b1, b2):
        gw.start(net.now)
    net.pump()
    return net, hq, b1, b2


def _ping(net: Net, gw: Gateway, count: int, ident: int = 7) -> None:
    for seq in range(1, count + 1):
        gw.ping(net.now, "10.1.1.1", "10.0.0.1", ident, seq)
        net.pump()


def test_sa_gauges_and_negotiation_counters() -> None:
    net, hq, b1, b2 = _lab()
    m, h = Scraper(b1), Scraper(hq)
    assert m("ikegate_ike_sas", version="2", state="established") == 1
    assert m("ikegate_ike_sas", version="2", state="negotiating") == 0
    assert m("ikegate_ike_sas", version="1", state="established") == 0
    assert m("ikegate_ipsec_sas", version="2") == 1 and m("ikegate_ipsec_sas", version="1") == 0
    assert m("ikegate_negotiations_started_total") >= 1
    assert m("ikegate_negotiations_total", result="succeeded") >= 1
    assert m("ikegate_negotiations_total", result="failed") == 0
    assert h("ikegate_ike_sas", version="2", state="established") == 1  # HQ answered Branch1 only
    assert Scraper(b2)("ikegate_ike_sas", version="2", state="established") == 0  # traffic-based: nothing yet

    # reset on the auto side: the SAs go, a Delete goes out, a new negotiation starts at once
    succeeded = m("ikegate_negotiations_total", result="succeeded")
    assert b1.reset_ike_sa(net.now) == 2
    assert m("ikegate_resets_total") == 1
    assert m("ikegate_deletes_total", direction="sent") >= 1
    assert m("ikegate_ike_sas", version="2", state="negotiating") == 1
    assert m("ikegate_ike_sas", version="2", state="established") == 0
    assert m("ikegate_ipsec_sas", version="2") == 0
    net.pump()
    assert m("ikegate_ike_sas", version="2", state="negotiating") == 0
    assert m("ikegate_ike_sas", version="2", state="established") == 1
    assert m("ikegate_negotiations_total", result="succeeded") > succeeded
    assert h("ikegate_deletes_total", direction="received") >= 1
    assert h("ikegate_resets_total") == 0


def test_negotiation_failures_by_reason() -> None:
    net, hq, b1, b2 = _lab(b2_psk="not-the-lab-key")
    assert b2.acquire(net.now, ("site", 10), 5)
    net.pump()
    m, h = Scraper(b2), Scraper(hq)
    assert m("ikegate_negotiations_total", result="failed") >= 1
    families = {f.name: f for f in m.registry.collect()}
    reasons = {s.labels["reason"]: s.value for s in families["ikegate_negotiation_failures"].samples}
    assert reasons and sum(reasons.values()) == m("ikegate_negotiations_total", result="failed")
    assert any("AUTHENTICATION_FAILED" in r for r in reasons), reasons
    assert h("ikegate_negotiations_total", result="failed") >= 1  # HQ refused the bad key
    # ... and HQ counted why it refused, by the failure's kind.
    assert h("ikegate_ike_auth_failure_reasons_total", reason="bad-psk") >= 1


def test_esp_counters_follow_traffic_and_survive_sa_deletion() -> None:
    net, hq, b1, b2 = _lab()
    m, h = Scraper(b1), Scraper(hq)
    assert m("ikegate_esp_packets_total", direction="out") == 0
    _ping(net, b1, 3)
    assert (m("ikegate_esp_packets_total", direction="out"), m("ikegate_esp_packets_total", direction="in")) \
        == (3, 3)
    assert m("ikegate_esp_bytes_total", direction="out") == 3 * 84
    assert (h("ikegate_esp_packets_total", direction="in"), h("ikegate_esp_packets_total", direction="out")) \
        == (3, 3)

    # the SA (and its counters) is deleted and renegotiated; the totals must not go down
    b1.reset_ike_sa(net.now)
    net.pump()
    assert m("ikegate_esp_packets_total", direction="out") == 3
    _ping(net, b1, 2, ident=8)
    assert m("ikegate_esp_packets_total", direction="out") == 5 and m("ikegate_esp_packets_total", direction="in") == 5
    assert m("ikegate_esp_bytes_total", direction="in") == 5 * 84


def test_esp_drops_by_reason() -> None:
    net, hq, b1, b2 = _lab()
    h = Scraper(hq)
    _ping(net, b1, 1)
    hq_addr = hq.local_addresses()[0]
    # an SPI nobody owns: a drop of no SA
    hq.receive_datagram(struct.pack("!II", 0x12345678, 1) + bytes(40), (hq_addr, 4500), ("127.0.0.99", 4500),
                        net.now)
    assert h("ikegate_esp_drops_total", reason="spi") == 1
    # a replay of a packet the HQ already took: a drop on that SA
    esp = next(d for d, src, dst in net.seen if dst[0] == hq_addr and dst[1] == 4500 and d[:4] != bytes(4))
    hq.receive_datagram(esp, (hq_addr, 4500), ("127.0.0.12", 4500), net.now)
    assert h("ikegate_esp_drops_total", reason="replay") == 1
    assert h("ikegate_esp_packets_total", direction="in") == 1  # the replay was not counted as traffic


def test_http_endpoint_on_loopback() -> None:
    net, hq, b1, b2 = _lab()
    _ping(net, b1, 2)
    server = MetricsServer(registry_for(LocalDevice(b1)), "127.0.0.3", 0)

    async def get(path: str, accept: str = "") -> tuple[str, dict[str, str], str]:
        reader, writer = await asyncio.open_connection("127.0.0.3", server.port)
        extra = f"Accept: {accept}\r\n" if accept else ""
        writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
        await writer.drain()
        data = await reader.read()
        writer.close()
        head, _, body = data.decode().partition("\r\n\r\n")
        status, *lines = head.split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        return status, headers, body

    async def main() -> list[tuple[str, dict[str, str], str]]:
        await server.start()
        try:
            return [await get("/metrics"), await get("/nothing"),
                    await get("/metrics", "application/openmetrics-text; version=1.0.0")]
        finally:
            await server.close()

    (status, headers, body), (missing, _, _), (_, om_headers, om_body) = asyncio.run(main())
    assert status == "HTTP/1.1 200 OK" and headers["content-type"].startswith("text/plain; version=0.0.4")
    assert int(headers["content-length"]) == len(body.encode())
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(body) for s in f.samples}
    assert samples["ikegate_esp_packets_total", (("direction", "out"),)] == 2
    assert samples["ikegate_ike_sas", (("state", "established"), ("version", "2"))] == 1
    assert missing == "HTTP/1.1 404 Not Found"
    assert om_headers["content-type"].startswith("application/openmetrics-text") and om_body.endswith("# EOF\n")


@pytest.mark.parametrize(("text", "expect"), [
    ("127.0.0.1:9470", ("127.0.0.1", 9470)),
    ("[::1]:9470", ("::1", 9470)),
    ("0.0.0.0:0", ("0.0.0.0", 0)),
])
def test_parse_listen(text: str, expect: tuple[str, int]) -> None:
    assert parse_listen(text) == expect


@pytest.mark.parametrize("text", ["9470", ":9470", "localhost:9470", "::1:9470", "127.0.0.1:", "127.0.0.1:70000",
                                  "127.0.0.1:http"])
def test_parse_listen_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(text)

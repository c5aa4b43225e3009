"""The shipped TextFSM templates, used the way automation uses them: through ``textfsm.clitable`` and the
ntc-style index, on our own golden outputs and on live displays of gateways negotiating in memory.

The live tests check the parsed text against the ``| json`` records of the same display, so a template
and a renderer that drift apart fail here even when each still looks plausible on its own.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from textfsm import clitable

from ikegate.cli.render import ike_sa
from ikegate.sad import IkeSaEntry, Role, SaDatabase, SaFlag
from ikegate.textfsm import INDEX, PLATFORM, PLATFORMS, template_dir
from tests.conftest import device_shell, gateway_for
from tests.protocol.netsim import Net, lab_config

GOLDEN = Path(__file__).parent.parent / "golden"
V6 = {"ip address 127.0.0.11 255.0.0.0": "ipv6 enable\n ipv6 address 2001:db8::11/64",
      "ip address 127.0.0.12 255.0.0.0": "ipv6 enable\n ipv6 address 2001:db8::12/64",
      "ip address 127.0.0.13 255.0.0.0": "ipv6 enable\n ipv6 address 2001:db8::13/64",
      "remote-address 127.0.0.11": "remote-address 2001:db8::11"}


def parse(command: str, text: str) -> list[dict[str, Any]]:
    """Rows as dicts keyed by lower-case value names (what ntc-templates' ``parse_output`` returns)."""
    table = clitable.CliTable(INDEX, template_dir())
    table.ParseCmd(text, {"Command": command, "Platform": PLATFORM})
    header = [h.lower() for h in table.header]
    return [dict(zip(header, row, strict=True)) for row in table]


def template_for(command: str, platform: str = PLATFORM) -> str | None:
    table = clitable.CliTable(INDEX, template_dir())
    row = table.index.GetRowMatch({"Command": command, "Platform": platform})
    return str(table.index.index[row]["Template"]) if row else None


def golden(name: str) -> str:
    return (GOLDEN / f"{name}.txt").read_text()


# ------------------------------------------------------------------------------------------ the index


@pytest.mark.parametrize(("command", "template"), [
    ("display ike sa", "huawei_vrp_display_ike_sa.textfsm"),
    ("dis ik sa", "huawei_vrp_display_ike_sa.textfsm"),
    ("disp ike sa remote 2001:db8::1", "huawei_vrp_display_ike_sa.textfsm"),
    ("display ike sa slot 1 cpu 0", "huawei_vrp_display_ike_sa.textfsm"),
    ("display ipsec sa", "huawei_vrp_display_ipsec_sa.textfsm"),
    ("dis ips sa policy hq 10", "huawei_vrp_display_ipsec_sa.textfsm"),
    ("display ipsec sa brief", "huawei_vrp_display_ipsec_sa_brief.textfsm"),
    ("dis ips sa b", "huawei_vrp_display_ipsec_sa_brief.textfsm"),
    ("display ike proposal", "huawei_vrp_display_ike_proposal.textfsm"),
    ("dis ik pr number 10", "huawei_vrp_display_ike_proposal.textfsm"),
    ("display ike peer", "huawei_vrp_display_ike_peer_brief.textfsm"),
    ("display version", "huawei_vrp_display_version.textfsm"),
    ("dis ver", "huawei_vrp_display_version.textfsm"),
    ("dis ik pe b", "huawei_vrp_display_ike_peer_brief.textfsm"),
    # output filters that keep the layout's lines
    ("display ike sa | include RD", "huawei_vrp_display_ike_sa.textfsm"),
    ("dis ips sa b | no-more", "huawei_vrp_display_ipsec_sa_brief.textfsm"),
    # other layouts have no template and must not be parsed with a wrong one
    ("display ike sa | count", None),
    ("display ike peer | c", None),
    ("display ipsec sa | json", None),
    ("display ike sa verbose connection-id 1", None),
    ("dis ik sa v remote 10.0.0.1", None),
    ("display ike peer name hq", None),
    ("display ike statistics", None),
    ("display ike offline-info", None),
])
def test_index_picks_template(command: str, template: str | None) -> None:
    assert template_for(command) == template
    for platform in PLATFORMS:  # netmiko passes its device type: "huawei" or "huawei_vrp"
        assert template_for(command, platform) == template


@pytest.mark.parametrize("platform", ["huawei_vrpv8", "huawei_smartax", "huawei_olt", "cisco_ios", "huaweix"])
def test_index_keeps_other_platforms_out(platform: str) -> None:
    """Other huawei_* device types print other layouts (VRP8's ``display ike sa`` is a different table)."""
    assert template_for("display ike sa", platform) is None


def test_every_template_is_indexed_and_packaged() -> None:
    shipped = {p.name for p in Path(template_dir()).glob("*.textfsm")}
    index = (Path(template_dir()) / INDEX).read_text()
    assert shipped == {line.split(",")[0] for line in index.splitlines() if line.startswith("huawei_vrp_")}
    assert len(shipped) == 6


# --------------------------------------------------------------------------------- golden outputs


def test_golden_ike_sa() -> None:
    rows = parse("display ike sa", golden("display_ike_sa"))
    assert rows == [
        {"conn_id": "3", "peer": "2001:db8::99", "peer_port": "4500", "vpn": "", "flags": "RD|ST|A",
         "version": "2", "phase": "1", "remote_type": "FQDN", "remote_id": "branch9.example"},
        {"conn_id": "2", "peer": "127.0.0.12", "peer_port": "500", "vpn": "", "flags": "RD|A",
         "version": "2", "phase": "2", "remote_type": "IP", "remote_id": "127.0.0.12"},
        {"conn_id": "1", "peer": "127.0.0.12", "peer_port": "500", "vpn": "", "flags": "RD|A",
         "version": "2", "phase": "1", "remote_type": "IP", "remote_id": "127.0.0.12"},
    ]
    assert [r["conn_id"] for r in parse("display ike sa remote 2001:db8::99", golden("display_ike_sa_remote"))] \
        == ["3"]
    assert [r["conn_id"] for r in parse("display ike sa slot 1 cpu 0", golden("display_ike_sa_slot"))] == ["2", "1"]


def test_golden_ipsec_sa() -> None:
    (row,) = parse("display ipsec sa", golden("display_ipsec_sa"))
    assert row == {
        "interface": "GigabitEthernet0/0/1", "policy_name": "hq", "sequence": "10", "acl_group": "3000",
        "acl_rule": "5", "mode": "ISAKMP", "conn_id": "2", "encapsulation_mode": "Tunnel",
        "holding_time": "0d 0h 5m 0s", "local_address": "127.0.0.11", "local_port": "500",
        "remote_address": "127.0.0.12", "remote_port": "500",
        "flow_source": ["10.0.0.0/255.255.255.0 0/0-65535"],
        "flow_destination": ["10.1.1.0/255.255.255.0 0/0-65535"],
        "outbound_spi": "197637217", "outbound_spi_hex": "0xbc7b461", "proposal": "ESP-ENCRYPT-AES-GCM-256",
        "outbound_remaining_kb": "10485760", "outbound_remaining_sec": "3300", "max_sent_sequence": "4",
        "udp_encapsulation": "N", "encrypted_packets": "4", "encrypted_bytes": "240",
        "inbound_spi": "194525348", "inbound_spi_hex": "0xb9838a4", "inbound_remaining_kb": "10485760",
        "inbound_remaining_sec": "3300", "max_received_sequence": "3", "decrypted_packets": "3",
        "decrypted_bytes": "180", "anti_replay": "Enable", "anti_replay_window": "1024",
    }


def test_golden_ipsec_sa_brief() -> None:
    rows = parse("display ipsec sa brief", golden("display_ipsec_sa_brief"))
    assert rows == [
        {"source": "127.0.0.11", "destination": "127.0.0.12", "spi": "197637217", "protocol": "ESP",
         "algorithm": "E:AES-GCM-256"},
        {"source": "127.0.0.12", "destination": "127.0.0.11", "spi": "194525348", "protocol": "ESP",
         "algorithm": "E:AES-GCM-256"},
    ]


def test_golden_ike_proposal() -> None:
    rows = parse("display ike proposal", golden("display_ike_proposal"))
    assert [r["number"] for r in rows] == ["10", "Default"]
    assert rows[0] == {"number": "10", "authentication_method": "PRE_SHARED", "authentication_algorithm": "SHA2-256",
                       "encryption_algorithm": "AES-GCM-256", "dh_group": "Curve25519", "duration": "86400",
                       "integrity_algorithm": "HMAC-SHA2-256", "prf_algorithm": "HMAC-SHA2-256"}
    assert rows[1]["encryption_algorithm"].split() == ["AES-256", "AES-192", "AES-128"]
    assert rows[1]["dh_group"] == "MODP-2048"


def test_golden_ike_peer_brief() -> None:
    assert parse("display ike peer", golden("display_ike_peer")) == [
        {"name": "branches", "version": "v1v2", "exchange_mode": "main", "proposal": "10", "id_type": "IP",
         "remote_address": ""},
    ]


def test_empty_ike_sa_parses_to_no_rows() -> None:
    """No SA: the timestamp line only (the USG's empty ``display ike sa``) gives no record, no error."""
    assert parse("display ike sa", golden("display_ike_sa_empty")) == []


def test_filtered_rows_parse() -> None:
    """``| include`` keeps only some lines of the layout; the template still reads them."""
    text = "\n".join(x for x in golden("display_ike_sa").splitlines() if "127.0.0.12" in x)
    assert [r["conn_id"] for r in parse("display ike sa | include 127.0.0.12", text)] == ["2", "1"]


def test_unknown_line_is_an_error_not_a_silent_skip() -> None:
    """ntc's convention (``^. -> Error``): a layout change breaks parsing loudly."""
    text = golden("display_ike_sa").replace("  Number of IKE SA", "  Count of IKE SA")
    with pytest.raises(Exception, match="State Error"):
        parse("display ike sa", text)


def test_ike_sa_rows_with_vpn_and_without_flags() -> None:
    """The VPN and Flag(s) columns may each be blank; all four row forms parse to the right columns."""
    sad = SaDatabase()
    v4 = ipaddress.ip_address
    forms = [("vpn-a", SaFlag.RD | SaFlag.A), ("", SaFlag.NEG), ("blue", SaFlag(0)), ("", SaFlag(0))]
    for n, (vpn, flags) in enumerate(forms, 1):
        sad.add_ike(IkeSaEntry(version=1, role=Role.RESPONDER, flags=flags, local_address=v4("192.0.2.1"),
                               peer_address=v4("198.51.100.7"), peer_port=4500, vpn=vpn, peer_id_type="DN",
                               peer_id="C=CN, O=Example, CN=peer one", spi_i=bytes([n]) * 8))
    neg = sad.add_ike(IkeSaEntry(version=2, role=Role.INITIATOR, flags=SaFlag.NEG, local_address=v4("192.0.2.1"),
                                 peer_address=v4("198.51.100.8"), peer_id_type="", peer_id="", spi_i=b"\x09" * 8))
    text = "\n".join(["2026-11-26 23:40:01.250 ", *(line.rstrip() for line in ike_sa.render(sad.entries()))])
    rows = {r["conn_id"]: r for r in parse("display ike sa", text)}
    assert [(rows[str(i)]["vpn"], rows[str(i)]["flags"]) for i in (1, 2, 3, 4)] == [
        ("vpn-a", "RD|A"), ("", "NEG"), ("blue", ""), ("", "")]
    assert all(rows[str(i)]["remote_id"] == "C=CN, O=Example, CN=peer one" for i in (1, 2, 3, 4))
    assert rows["1"]["version"] == "1" and rows["1"]["peer_port"] == "4500"
    last = rows[str(neg.conn_id)]
    assert (last["flags"], last["phase"], last["remote_type"], last["remote_id"]) == ("ST|NEG", "1", "", "")


# ------------------------------------------------------------------------------------- live displays


class Node:
    def __init__(self, net: Net, name: str, replace: dict[str, str]) -> None:
        self.gw = net.add(gateway_for(lab_config(name, replace)))
        self.shell = device_shell(self.gw, clock=lambda: net.now)

    def text(self, line: str) -> str:
        out = self.shell.run(line)
        assert out.error is None, out.lines
        return "\n".join(out.lines) + "\n"

    def json(self, line: str) -> Any:
        return json.loads(self.text(line + " | json"))


def _lab(v6: bool) -> tuple[Net, Node, Node]:
    net = Net()
    hq, b1, b2 = (Node(net, n, V6 if v6 else {}) for n in ("hq", "branch1", "branch2"))
    for node in (hq, b1, b2):
        node.gw.start(net.now)
    net.pump()
    for seq in range(1, 4):  # some ESP traffic, so the counters are not all zero
        b1.gw.ping(net.now, "10.1.1.1", "10.0.0.1", 7, seq)
        net.pump()
    net.step(65.0)  # a holding time that is not 0s
    return net, hq, b1


def _sel(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    """``10.0.0.0/255.255.255.0 0/0-65535`` (display) or ``10.0.0.0-10.0.0.255 0/0-65535`` (JSON) as the
    first and last address, so the two forms compare."""
    addr = text.split()[0]
    if "/" in addr:
        net = ipaddress.ip_network(addr)
        return net.network_address, net.broadcast_address
    low, high = addr.split("-")
    return ipaddress.ip_address(low), ipaddress.ip_address(high)


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("side", ["hq", "branch1"])
def test_live_displays_parse_like_their_json(v6: bool, side: str) -> None:
    _, hq, b1 = _lab(v6)
    node = hq if side == "hq" else b1
    # display ike sa
    rows = parse("dis ik sa", node.text("display ike sa"))
    records = node.json("display ike sa")["ike_sa"]
    assert len(rows) == len(records) == 2
    for row, rec in zip(rows, records, strict=True):
        assert int(row["conn_id"]) == rec["conn_id"]
        assert ipaddress.ip_address(row["peer"]) == ipaddress.ip_address(rec["peer_address"])
        assert int(row["peer_port"]) == rec["peer_port"]
        assert row["flags"] == rec["flags"] and "RD" in row["flags"].split("|")
        assert ("ST" in row["flags"].split("|")) == (side == "branch1")  # the initiator's mark
        assert (int(row["version"]), int(row["phase"])) == (rec["version"], rec["phase"])
        assert (row["remote_type"], row["remote_id"]) == (rec["remote_type"], rec["remote_id"])
    assert ipaddress.ip_address(rows[0]["peer"]).version == (6 if v6 else 4)
    # display ipsec sa
    (sa,) = parse("display ipsec sa", node.text("display ipsec sa"))
    (rec,) = node.json("display ipsec sa")["ipsec_sa"]
    assert int(sa["conn_id"]) == rec["conn_id"]
    assert (int(sa["inbound_spi"]), int(sa["outbound_spi"])) == (rec["spi_in"], rec["spi_out"])
    assert int(sa["inbound_spi_hex"], 16) == rec["spi_in"]
    assert sa["proposal"] == "ESP-ENCRYPT-AES-GCM-256"
    assert sa["policy_name"] == rec["policy"] and int(sa["sequence"]) == rec["seq"]
    assert [_sel(s) for s in sa["flow_source"]] == [_sel(s) for s in rec["local_selectors"]]
    assert [_sel(s) for s in sa["flow_destination"]] == [_sel(s) for s in rec["remote_selectors"]]
    assert ipaddress.ip_address(sa["remote_address"]) == ipaddress.ip_address(rec["peer_address"])
    assert (int(sa["encrypted_packets"]), int(sa["decrypted_packets"])) == (rec["packets_out"], rec["packets_in"]) \
        == (3, 3)
    assert int(sa["encrypted_bytes"]) == rec["bytes_out"] > 0
    assert sa["holding_time"] == "0d 0h 1m 5s"
    # display ipsec sa brief: both directions of the same SA
    brief = parse("display ipsec sa brief", node.text("display ipsec sa brief"))
    assert {int(r["spi"]) for r in brief} == {rec["spi_in"], rec["spi_out"]}
    # configuration displays
    props = parse("display ike proposal", node.text("display ike proposal"))
    assert [p["number"] for p in props] == [*(str(p["number"]) for p in node.json("display ike proposal")
                                              ["ike_proposal"]), "Default"]
    peers = parse("display ike peer", node.text("display ike peer"))
    assert [p["name"] for p in peers] == [p["name"] for p in node.json("display ike peer")["ike_peer"]]
    if side == "branch1":
        assert peers[0]["remote_address"] == ("2001:db8::11" if v6 else "127.0.0.11")


def test_live_after_reset_the_new_sas_parse() -> None:
    """Conn-ids move on after ``reset ike sa``; the parsed table follows the database, not a cache. The
    auto policy starts again at once, so the table first shows the half-open SA (``NEG``, no identity)."""
    net, hq, b1 = _lab(False)
    before = {r["conn_id"] for r in parse("display ike sa", b1.text("display ike sa"))}
    b1.text("reset ike sa")
    (neg,) = parse("display ike sa", b1.text("display ike sa"))
    assert neg["flags"].split("|")[-1] == "NEG" and neg["phase"] == "1" and neg["conn_id"] not in before
    net.pump()
    after = parse("display ike sa", b1.text("display ike sa"))
    assert sorted(r["phase"] for r in after) == ["1", "2"] and not before & {r["conn_id"] for r in after}

"""Golden tests of every display layout, rendered from a fixed SA database and a fixed clock.

Regenerate after an intended layout change with ``UPDATE_GOLDEN=1 pytest tests/unit/test_display_golden.py``
and review the diff: these files are the USG layouts as ikegate prints them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from importlib import resources
from pathlib import Path

import pytest

from ikegate.cli.loader import load_config
from ikegate.cli.shell import Shell
from ikegate.gateway.device import make_device
from ikegate.sad import IkeSaEntry, IpsecSaEntry, Placement, Role, SaFlag, Selector
from tests.conftest import device_shell, gateway_for

GOLDEN = Path(__file__).parent.parent / "golden"
WALL = dt.datetime(2026, 11, 26, 23, 40, 1, 250000)
NOW = 1000.0


def _shell() -> Shell:
    text = resources.files("ikegate.lab").joinpath("hq.cfg").read_text()
    config, errors = load_config(text)
    assert not errors
    device = make_device("USG6680E", None)
    gw = gateway_for(config, device)
    sad = gw.sad
    v4, v6 = ipaddress.ip_address, ipaddress.ip_address
    ike = sad.add_ike(IkeSaEntry(
        version=2, role=Role.RESPONDER, flags=SaFlag.RD | SaFlag.A, placement=Placement(1, 0),
        local_address=v4("127.0.0.11"), local_port=500, peer_address=v4("127.0.0.12"), peer_port=500,
        peer_id_type="IP", peer_id="127.0.0.12", interface="GigabitEthernet0/0/1", policy_name="hq", policy_seq=10,
        template_name="branches", lifetime_soft=81000, lifetime_hard=86400, created=NOW - 300,
        spi_i=bytes.fromhex("0123456789abcdef"), spi_r=bytes.fromhex("fedcba9876543210"),
        encryption="AES-GCM-16-256", prf="HMAC-SHA2-256", dh="Curve25519", auth_method="PRE_SHARED",
        messages_in=4, messages_out=4))
    sad.add_ipsec(IpsecSaEntry.from_parent(
        ike, flags=SaFlag.RD | SaFlag.A, spi_in=0xB9838A4, spi_out=0xBC7B461, encryption="AES-GCM-16-256",
        local_selectors=(Selector.from_network(ipaddress.ip_network("10.0.0.0/24")),),
        remote_selectors=(Selector.from_network(ipaddress.ip_network("10.1.1.0/24")),),
        lifetime_hard=3600, lifetime_hard_kb=10485760, acl_number=3000, acl_rule=5, created=NOW - 300,
        packets_out=4, bytes_out=240, seq_out=4, packets_in=3, bytes_in=180, seq_in=3))
    ike6 = sad.add_ike(IkeSaEntry(
        version=2, role=Role.INITIATOR, flags=SaFlag.RD | SaFlag.A, placement=Placement(3, 1),
        local_address=v6("2001:db8::11"), local_port=4500, peer_address=v6("2001:db8::99"), peer_port=4500,
        peer_id_type="FQDN", peer_id="branch9.example", created=NOW - 7200, lifetime_hard=86400,
        spi_i=bytes.fromhex("1111111111111111"), spi_r=bytes.fromhex("2222222222222222"),
        encryption="AES-CBC-256", integrity="HMAC-SHA2-256-128", prf="HMAC-SHA2-256", dh="MODP-2048",
        auth_method="PRE_SHARED"))
    assert ike6.conn_id == 3
    sad.offline.record(peer_address="127.0.0.13", peer_port=500, reason="config modify or manual offline",
                       version=2, time=NOW - 60, placement=Placement(1, 1))
    sad.offline.record(peer_address="2001:db8::99", peer_port=4500, reason="peer request", version=2,
                       time=NOW - 30, placement=Placement(3, 1))
    gw.stats.negotiations_started = 5
    gw.stats.negotiations_succeeded = 4
    gw.stats.negotiations_failed["AUTHENTICATION_FAILED"] = 1
    return device_shell(gw, device, clock=lambda: NOW, wall=lambda: WALL)


CASES = {
    "display_ike_sa": "display ike sa",
    "display_ike_sa_remote": "display ike sa remote 2001:db8::99",
    "display_ike_sa_empty": "display ike sa remote 192.0.2.99",
    "display_ike_sa_slot": "display ike sa slot 1 cpu 0",
    "display_ike_sa_verbose": "display ike sa verbose connection-id 1",
    "display_ike_sa_verbose_v6": "display ike sa verbose remote 2001:db8::99",
    "display_ipsec_sa": "display ipsec sa",
    "display_ipsec_sa_brief": "display ipsec sa brief",
    "display_ike_proposal": "display ike proposal",
    "display_ike_peer": "display ike peer",
    "display_ike_peer_name": "display ike peer name branches",
    "display_ike_offline_info": "display ike offline-info",
    "display_ike_statistics": "display ike statistics",
    "display_ike_sa_json": "display ike sa | json",
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden(name: str) -> None:
    out = _shell().run(CASES[name])
    assert out.error is None, out.lines
    text = "\n".join(out.lines) + "\n"
    path = GOLDEN / f"{name}.txt"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_ike_sa_table_columns() -> None:
    """The 132-column table: header and rows share the USG's column starts."""
    lines = _shell().run("display ike sa").lines
    header = next(line for line in lines if line.startswith(" Conn-ID"))
    assert [header.index(word) for word in ("Conn-ID", "Peer", "VPN", "Flag(s)", "Phase", "RemoteType",
                                            "RemoteID")] == [1, 12, 58, 75, 97, 104, 116]
    row = next(line for line in lines if line.startswith(" 1 "))
    assert row[12:].startswith("127.0.0.12:500") and row[75:].startswith("RD|A") and row[97:].startswith("v2:1")
    assert lines[0] == "2026-11-26 23:40:01.250 "


def test_ike_sa_header_and_rows_are_padded_to_132() -> None:
    """The USG pads the header and every row to column 132 (``RemoteID`` then spaces); the rules are 132
    dashes; the other lines carry no trailing spaces."""
    lines = _shell().run("display ike sa").lines
    header = lines.index(next(line for line in lines if line.startswith(" Conn-ID")))
    rows = lines[header + 2: header + 5]
    assert [len(line) for line in [lines[header], *rows]] == [132] * 4
    assert lines[header].endswith("RemoteID" + " " * 8)
    assert all(line == line.rstrip() for line in lines[header + 5:])


def test_ike_sa_without_sas_is_the_timestamp_only() -> None:
    assert _shell().run("display ike sa remote 192.0.2.99").lines == ["2026-11-26 23:40:01.250 "]


def test_ipsec_sa_interface_rule_is_as_long_as_its_line() -> None:
    """USG transcript: ``Interface: GigabitEthernet1/0/0`` (31 characters) between two 31-``=`` rules."""
    lines = _shell().run("display ipsec sa").lines
    at = next(i for i, line in enumerate(lines) if line.startswith("Interface: "))
    assert lines[at - 1] == lines[at + 1] == "=" * len(lines[at]) == "=" * 31


def test_offline_info_columns_as_in_the_usg_example() -> None:
    """USG command reference: title columns at 2/21/29/50/62, row columns at 2/21/30/50/62, a blank line
    after the timestamp, 100 dashes above the titles and 101 below them and after the rows."""
    lines = _shell().run("display ike offline-info").lines
    assert lines[:4] == ["2026-11-26 23:40:01.250 ", "", "  Current info Num :2 ", "  Ike offline information:"]
    assert (lines[4], lines[6], lines[-1]) == ("-" * 100, "-" * 101, "-" * 101)
    title = lines[5]
    assert [title.index(w) for w in ("peer", "port", "offline-reason", "version", "offline-time")] == \
        [2, 21, 29, 50, 62]
    row = lines[8]  # 2001:db8::99, peer request
    assert [row.index(w) for w in ("2001:db8::99", "4500", "peer request", "v2", "2026/11/26")] == \
        [2, 21, 30, 50, 62]


def test_offline_info_long_values_push_the_line_right() -> None:
    """A value wider than its column (a long IPv6 peer, a long reason) pushes the rest right, one space
    apart, never glued to the next value."""
    from ikegate.cli.render import ike_info
    from ikegate.sad import OfflineRecord

    peer = "2001:db8:1234:5678:9abc:def0:1234:5678"
    record = OfflineRecord(peer_address=ipaddress.ip_address(peer), peer_port=4500,
                           reason="config modify or manual offline", version=2, time=NOW)
    (row,) = [line for line in ike_info.offline([record], NOW, WALL) if peer in line]
    assert row == f"  {peer} 4500 config modify or manual offline v2 2026/11/26  23:40:01"


def test_peer_brief_has_dashes_above_the_titles_only() -> None:
    lines = _shell().run("display ike peer").lines
    at = next(i for i, line in enumerate(lines) if line.startswith("Peer name"))
    assert set(lines[at - 1]) == {"-"} and not lines[at + 1].startswith("-")
    assert [lines[at].index(w) for w in ("Version", "Exchange-mode", "Proposal", "Id-type", "RemoteAddr")] == \
        [17, 26, 42, 53, 63]

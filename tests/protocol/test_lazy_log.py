"""Log records of tunnel up and down are complete but lazy: the gateway hands the log buffer a template and
its arguments, and the text is made only when a sink reads it (``display logbuffer``, the stderr mirror, a
syslog target). Formatting is counted, never timed: every text is made by ``logbuffer.format_text``."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import pytest

from ikegate.cli import logbuffer
from ikegate.cli.logbuffer import LogBuffer
from ikegate.daemon import Daemon, DaemonOptions
from ikegate.gateway.controller import Gateway
from ikegate.sad import IkeSaEntry, IpsecSaEntry
from tests.protocol.netsim import Net, lab_config


@pytest.fixture
def formats(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The templates formatted so far."""
    calls: list[str] = []
    real = logbuffer.format_text

    def counting(template: str, args: tuple[object, ...]) -> str:
        calls.append(template)
        return real(template, args)

    monkeypatch.setattr(logbuffer, "format_text", counting)
    yield calls


def test_tunnel_records_reach_the_buffer_unformatted_and_read_as_before(formats: list[str]) -> None:
    buf = LogBuffer()
    net = Net()
    hq = net.add(Gateway(lab_config("hq"), log=buf.log))
    b1 = net.add(Gateway(lab_config("branch1")))
    for gw in (hq, b1):
        gw.start(net.now)
    net.pump()
    ike = next(e for e in hq.sad.entries() if isinstance(e, IkeSaEntry))
    child = next(e for e in hq.sad.entries() if isinstance(e, IpsecSaEntry))
    hq.reset_ike_sa(net.now)
    net.pump()

    records = [r for r in buf if r.module in ("IKE", "IPSEC-VPN")]
    assert [r.brief for r in records] == ["IKE_SA_ESTABLISHED", "IPSECTUNNELSTART", "IPSEC_TUNNEL_TEARED_DOWN"]
    assert formats == [] and not any(r.formatted for r in records)  # nobody read them: no text made

    lines = buf.render("HQ")
    assert len(formats) == 3 and all(r.formatted for r in records)
    # the text is what the eager f-strings made before
    interface = hq.config.if_index(child.interface)
    expected = [
        f"IKE SA established. (ConnID={ike.conn_id}, RemoteAddress={ike.peer_address}, Version=v2)",
        f"The IPSec tunnel is established. (PolicyName={child.policy_name}, SeqNum={child.policy_seq}, "
        f"RuleNum={child.acl_rule}, SrcIP={child.local_address}, DstIP={child.peer_address}, "
        f"InboundSPI={child.spi_in})",
        f"An IPSec tunnel is teared down. (PolicyName={child.policy_name}, IfIndex={interface}, "
        f"SeqNum={child.policy_seq}, RuleNum={child.acl_rule}, SrcIP={child.local_address}, "
        f"DstIP={child.peer_address}, InboundSPI={child.spi_in}, Slot=0, CpuID=0, "
        f"OfflineReason=config modify or manual offline, State=Normal)",
    ]
    assert [r.text for r in records] == expected
    for record, text in zip(records, expected, strict=True):
        assert f" HQ %%01{record.module}/{record.severity}/{record.brief}(l):{text}" in "\n".join(lines)
    buf.render("HQ")
    assert len(formats) == 3  # made once, kept


def test_a_record_without_arguments_is_its_text_verbatim(formats: list[str]) -> None:
    buf = LogBuffer()
    record = buf.log("IKE", 4, "X", "100% of %s is literal")
    assert record.text == "100% of %s is literal" and formats == []


def _daemon(stream: io.TextIOBase) -> Daemon:
    return Daemon(lab_config("hq"), DaemonOptions(log_stream=stream))  # type: ignore[arg-type]


def test_daemon_sinks_format_only_when_they_write(formats: list[str]) -> None:
    """No loghost and stderr on /dev/null: the record is stored, never formatted. A live stream: the mirror
    formats it once, and the line is the one ``display logbuffer`` shows."""
    with open(os.devnull, "w") as null:
        quiet = _daemon(null)  # type: ignore[arg-type]
        quiet.log("IPSEC-VPN", 4, "IPSECTUNNELSTART", "up (SrcIP=%s, InboundSPI=%s)", "192.0.2.1", 7)
        assert formats == [] and len(quiet.logbuffer) == 1

    stream = io.StringIO()
    loud = _daemon(stream)
    loud.log("IPSEC-VPN", 4, "IPSECTUNNELSTART", "up (SrcIP=%s, InboundSPI=%s)", "192.0.2.1", 7)
    (record,) = list(loud.logbuffer)
    sysname = loud.device.config.sysname
    assert stream.getvalue() == record.render(sysname) + "\n"
    assert record.text == "up (SrcIP=192.0.2.1, InboundSPI=7)" and len(formats) == 1
    assert loud.logbuffer.render(sysname)[-1] == stream.getvalue().rstrip("\n") and len(formats) == 1

"""Hot standby's pure parts (issue 17): the record codec, the sync channel, keepalived's configuration
and notices, the hrp/vrrp commands, the standby guard and the displays."""

from __future__ import annotations

import random

import pytest

from ikegate.cli.commands.hrp import backed_up, merge_mirrored, mirror_text, standby_guard
from ikegate.cli.loader import load_config
from ikegate.cli.render import hrp as hrp_render
from ikegate.cli.render.config import render_config
from ikegate.gateway.device import HRP_STANDBY_ERROR, HrpState, VrrpGroupState
from ikegate.ha import keepalived as ka
from ikegate.ha.channel import DATA, HELLO, Channel
from ikegate.ha.codec import CodecError, decode, encode, encode_list
from ikegate.policy.model import Config
from tests.conftest import fails, ok, system_shell

HA_CONFIG = """
sysname HA1
hrp interface GigabitEthernet0/0/3 remote 192.0.2.130
hrp authentication-key sync-key-0123
hrp preempt delay 5
hrp enable
ike proposal 10
 dh group14
interface GigabitEthernet0/0/1
 ip address 198.51.100.2 255.255.255.0
 vrrp vrid 1 virtual-ip 198.51.100.1 active
 vrrp vrid 2 virtual-ip 198.51.100.9 active
interface GigabitEthernet0/0/3
 ip address 192.0.2.129 255.255.255.252
"""


# ----------------------------------------------------------------------------------------- codec

@pytest.mark.parametrize("value", [None, True, False, 0, -1, 2**64 - 1, -(2**63), 1.25, b"", b"\x00" * 300, "", "é",
                                   [1, [2, [b"x"]]], {"a": {"b": [None, 1.5]}}])
def test_codec_round_trips(value: object) -> None:
    assert decode(encode(value)) == value  # type: ignore[arg-type]


def test_codec_lists_of_encoded_items() -> None:
    assert decode(encode_list([encode(1), encode("a"), encode([b"k"])])) == [1, "a", [b"k"]]
    many = [encode(i) for i in range(70000)]
    assert decode(encode_list(many[:20])) == list(range(20)) and decode(encode_list(many)) == list(range(70000))


def test_codec_refuses_what_it_cannot_carry() -> None:
    with pytest.raises(TypeError):
        encode(2**70)  # the replay bitmap travels as bytes for this reason
    with pytest.raises(TypeError):
        encode(object())  # type: ignore[arg-type]
    with pytest.raises(CodecError):
        decode(encode({1: "non-text key"}))


def test_codec_refuses_malformed_input_with_its_own_error_only() -> None:
    rng = random.Random(17)
    sample = encode({"spi": b"\x01" * 8, "mids": [1, 2], "t": 1.5, "name": "peer", "x": [None, True]})
    refused = 0
    for n in range(3000):
        data = bytearray(sample)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        cut = bytes(data[: rng.randrange(len(data) + 1)]) if n % 3 == 0 else bytes(data)
        try:
            decode(cut)
        except CodecError:  # anything else escaping fails the test
            refused += 1
    assert refused > 1000
    with pytest.raises(CodecError):
        decode(b"\xdd\xff\xff\xff\xff")  # an array longer than the input
    with pytest.raises(CodecError):
        decode(b"\x91" * 100000 + b"\xc0")  # nested too deeply
    with pytest.raises(CodecError):
        decode(encode(1) + b"\x00")  # trailing bytes


# --------------------------------------------------------------------------------------- channel

def test_channel_seals_and_rejects() -> None:
    a, b = Channel(b"key"), Channel(b"key")
    hello = a.seal(HELLO, b"hi")
    assert b"hi" not in hello  # never in clear
    opened = b.open(hello)
    assert opened is not None and opened.body == b"hi" and opened.peer_boot == a.boot
    b.peer_boot, a.peer_boot = a.boot, b.boot
    data = a.seal(DATA, b"records")
    assert b.open(data) is not None
    assert b.open(data) is None and b.stats.replayed == 1
    assert Channel(b"other").open(a.seal(HELLO, b"x")) is None
    stale = Channel(b"key", boot=b"\x01" * 8)  # sealed for another life of b
    stale.peer_boot = b"\x02" * 8
    assert b.open(stale.seal(DATA, b"x")) is None and b.stats.forged == 1
    assert b.open(b"short") is None and b.stats.malformed == 1


# ------------------------------------------------------------------------------------ keepalived

def test_keepalived_configuration_from_vrrp_and_hrp() -> None:
    config, errors = load_config(HA_CONFIG)
    assert not errors
    import ipaddress
    groups = ka.instances(config, {ipaddress.IPv4Address("198.51.100.2"): "eth1"})
    assert [(g.name, g.linux_interface, str(g.virtual_ip), g.prefix, g.priority) for g in groups] == [
        ("VI_1", "eth1", "198.51.100.1", 24, ka.ACTIVE_PRIORITY), ("VI_2", "eth1", "198.51.100.9", 24, 120)]
    text = ka.render(config, groups, "/run/x/fifo")
    assert "vrrp_notify_fifo /run/x/fifo" in text and "preempt_delay 5" in text
    assert "vrrp_sync_group HRP" in text and "198.51.100.1/24 dev eth1" in text and "state BACKUP" in text
    config.hrp.preempt = False
    assert "nopreempt" in ka.render(config, groups, "f")
    with pytest.raises(ka.KeepalivedError, match="no Linux interface"):
        ka.instances(config, {})


def test_keepalived_notices() -> None:
    assert ka.parse_notice('INSTANCE "VI_1" MASTER 120\n') == ka.Notice("INSTANCE", "VI_1", "MASTER", 120)
    assert ka.parse_notice('GROUP "HRP" BACKUP') == ka.Notice("GROUP", "HRP", "BACKUP", None)
    assert ka.parse_notice("garbage") is None


def test_missing_keepalived_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ka.shutil, "which", lambda *a, **k: None)
    with pytest.raises(ka.KeepalivedError, match="apt-get install keepalived"):
        ka.find_keepalived()


# -------------------------------------------------------------------------------------- commands

def test_hrp_and_vrrp_commands_round_trip() -> None:
    config, errors = load_config(HA_CONFIG)
    assert not errors
    hrp = config.hrp
    assert hrp.enabled and hrp.interface == "GigabitEthernet0/0/3" and str(hrp.remote) == "192.0.2.130"
    assert hrp.key == "sync-key-0123" and hrp.preempt_delay == 5 and hrp.auto_sync
    text = "\n".join(render_config(config))
    assert "sync-key-0123" not in text and "hrp authentication-key %^%#" in text
    again, errors = load_config(text)
    assert not errors and again.hrp == config.hrp and again.interfaces == config.interfaces
    # with HRP on, IKE listens on the interface's virtual addresses
    assert [str(a) for a in config.local_addresses()] == []  # no ipsec policy bound in this config
    config.interfaces["GigabitEthernet0/0/1"].ipsec_policy = "p"
    assert [str(a) for a in config.local_addresses()] == ["198.51.100.1", "198.51.100.9"]


def test_hrp_command_errors() -> None:
    shell = system_shell("interface GigabitEthernet0/0/1")
    assert "does not exist" in fails(shell, "undo vrrp vrid 3")
    ok(shell, "vrrp vrid 3 virtual-ip 198.51.100.1 standby")
    ok(shell, "quit")
    ok(shell, "interface GigabitEthernet0/0/2")
    assert "already used" in fails(shell, "vrrp vrid 3 virtual-ip 198.51.100.5 active")
    assert fails(shell, "vrrp vrid 300 virtual-ip 198.51.100.5 active")  # out of range: caret error
    ok(shell, "quit")
    ok(shell, "hrp interface GigabitEthernet0/0/3 remote 192.0.2.2")
    assert "not the heartbeat interface" in fails(shell, "undo hrp interface GigabitEthernet0/0/4")
    ok(shell, "undo hrp preempt")
    assert not shell.config.hrp.preempt


def test_backed_up_commands_and_the_standby_guard() -> None:
    shell = system_shell()
    tree = shell.tree

    def command(line: str):  # type: ignore[no-untyped-def]
        from ikegate.cli import matcher
        from ikegate.cli.views import ViewKind
        views = {"sys": ViewKind.SYSTEM, "peer": ViewKind.IKE_PEER, "itf": ViewKind.INTERFACE,
                 "user": ViewKind.USER}
        view, text = line.split(" ", 1)
        result = matcher.match(tree, views[view], 3, text)
        assert isinstance(result, matcher.Match), line
        return result.command

    assert backed_up(command("sys ike proposal 20")) and backed_up(command("sys undo ike peer x"))
    assert backed_up(command("peer pre-shared-key abc")) and backed_up(command("sys acl number 3001"))
    assert not backed_up(command("sys hrp enable")) and not backed_up(command("itf ip address 192.0.2.1 24"))
    assert not backed_up(command("sys sysname X")) and not backed_up(command("user system-view"))

    class FakeDevice:
        role = "standby"

        def hrp_state(self) -> HrpState:
            return HrpState(self.role, "active", 100, 120, True, None, "", True, False, False, True, 60)

    device = FakeDevice()
    guard = standby_guard(device)  # type: ignore[arg-type]
    assert guard(command("sys ike proposal 20")) == HRP_STANDBY_ERROR
    assert guard(command("sys hrp enable")) is None
    device.role = "active"
    assert guard(command("sys ike proposal 20")) is None


def test_mirrored_configuration_keeps_the_standbys_own_part() -> None:
    active, _ = load_config(HA_CONFIG + "ike proposal 20\n dh group31\nike peer p1\n pre-shared-key x1\n")
    standby, _ = load_config(HA_CONFIG.replace("sysname HA1", "sysname HA2").replace(" active", " standby"))
    text = mirror_text(active)
    assert "vrrp" not in text and "hrp" not in text and "sysname" not in text.replace("sysname USG6000", "")
    assert merge_mirrored(standby, text) == []
    assert set(standby.ike_proposals) == {10, 20} and standby.ike_peers["p1"].pre_shared_key == "x1"
    assert standby.sysname == "HA2" and not standby.interfaces["GigabitEthernet0/0/1"].vrrp[1].active


# -------------------------------------------------------------------------------------- displays

def test_display_hrp_state_and_vrrp_layouts() -> None:
    group = VrrpGroupState("GigabitEthernet0/0/1", 1, "Master", "198.51.100.1", 120, True, True, 60, 1)
    st = HrpState("active", "standby", 120, 100, True, 0.0, "standby -> active", True, False, False, True, 60,
                  {"sas_sent": 3, "channel_forged": 1}, (group,))
    lines = hrp_render.state(st, 3725.0)
    assert lines[:2] == [" Role: active, peer: standby", " Running priority: 120, peer: 100"]
    assert " Stable time: 0 days, 1 hours, 2 minutes" in lines
    verbose = hrp_render.state(st, 0.0, verbose=True)
    assert " GigabitEthernet0/0/1 vrrp vrid 1: master" in verbose and any("channel_forged" in x for x in verbose)
    assert " auto-sync configuration:     on" in verbose
    vrrp = hrp_render.vrrp((group,))
    assert vrrp[0] == "  GigabitEthernet0/0/1 | Virtual Router 1" and "    State : Master" in vrrp
    assert "    Virtual MAC : 0000-5e00-0101" in vrrp


def test_displays_without_hrp_say_so() -> None:
    from ikegate.gateway.controller import Gateway
    from tests.conftest import device_shell
    shell = device_shell(Gateway(Config()))
    assert "HRP is not enabled" in fails(shell, "display hrp state")
    assert "HRP is not enabled" in fails(shell, "display vrrp")

"""Management-access configuration: every new command and its undo, the round trip, password hashing,
public-key checks and the login rules (the SSH server itself is tested in tests/system/test_ssh.py)."""

from __future__ import annotations

import ipaddress

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ikegate.cli.loader import load_config
from ikegate.cli.render.config import render_config
from ikegate.cli.shell import Shell
from ikegate.policy import secret
from ikegate.policy.model import Config
from ikegate.policy.users import (
    KeyKind,
    LocalUser,
    LoginRefused,
    PasswordHash,
    ServiceType,
    SshAuthType,
    SshServerSettings,
    SshUser,
    VtySettings,
    check_public_key,
    effective_level,
    ssh_login_allowed,
)
from tests.conftest import config_tree, fails, system_shell

TREE = config_tree()
PASSWORD = "Clear@Text#2026"


def openssh(key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    key_type, data = line.split()[:2]
    return key_type, data


ED_TYPE, ED_DATA = openssh(ed25519.Ed25519PrivateKey.generate())
RSA_TYPE, RSA_DATA = openssh(rsa.generate_private_key(public_exponent=65537, key_size=2048))
EC_TYPE, EC_DATA = openssh(ec.generate_private_key(ec.SECP256R1()))


run = system_shell


FULL = [
    "stelnet server enable",
    "ssh server port 2222",
    "ssh server listen-address 127.0.0.1",
    "ssh server listen-address 2001:db8::1",
    "rsa peer-public-key bobkey",
    f"public-key {RSA_TYPE} {RSA_DATA} bob@laptop",
    "peer-public-key end",
    "ecc peer-public-key alicekey",
    f"public-key {ED_TYPE} {ED_DATA}",
    "quit",
    "ecc peer-public-key carolkey",
    f"public-key {EC_TYPE} {EC_DATA}",
    "ssh user alice",
    "ssh user alice authentication-type ecc",
    "ssh user alice assign ecc-key alicekey",
    "ssh user alice service-type stelnet",
    "ssh user bob authentication-type all",
    "ssh user bob assign rsa-key bobkey",
    "ssh user bob service-type all",
    "aaa",
    f"local-user alice password irreversible-cipher {PASSWORD}",
    "local-user alice level 3",
    "local-user alice service-type terminal ssh",
    "local-user bob service-type ssh",
    "local-user bob level 15",
    "user-interface maximum-vty 8",
    "user-interface vty 0 4",
    "authentication-mode aaa",
    "user privilege level 1",
    "idle-timeout 1 30",
]


def rendered(config: Config) -> str:
    return "\n".join(render_config(config)) + "\n"


def test_every_command_sets_the_model() -> None:
    config = run(*FULL).config
    server = config.ssh_server
    assert server.stelnet and server.port == 2222 and server.max_vty == 8
    assert server.listen_addresses == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("2001:db8::1")]
    assert config.rsa_peer_keys["bobkey"].openssh == f"{RSA_TYPE} {RSA_DATA}"
    assert config.ecc_peer_keys["alicekey"].key_type == "ssh-ed25519"
    assert config.ecc_peer_keys["carolkey"].key_type == EC_TYPE
    assert config.ssh_users["alice"] == SshUser("alice", SshAuthType.ECC, "stelnet", None, "alicekey")
    assert config.ssh_users["bob"] == SshUser("bob", SshAuthType.ALL, "all", "bobkey", None)
    alice = config.local_users["alice"]
    assert alice.level == 3 and alice.service_types == {ServiceType.SSH, ServiceType.TERMINAL}
    assert alice.password is not None and alice.password.verify(PASSWORD) and not alice.password.verify("nope")
    assert config.local_users["bob"].password is None
    assert config.vty == VtySettings(authentication_aaa=True, privilege_level=1, idle_timeout=90)


def test_round_trip_is_a_fixed_point_and_keeps_the_hash() -> None:
    config = run(*FULL).config
    text = rendered(config)
    assert PASSWORD not in text
    again, errors = load_config(text)
    assert errors == []
    assert rendered(again) == text
    assert again.local_users["alice"].password == config.local_users["alice"].password
    assert again.local_users["alice"].password is not None and again.local_users["alice"].password.verify(PASSWORD)


def test_canonical_text() -> None:
    text = rendered(run(*FULL).config)
    alice_hash = text.split("local-user alice password irreversible-cipher ")[1].split("\n")[0]
    assert alice_hash.startswith("%^%#") and alice_hash.endswith("%^%#")
    tail = text[text.index("#\nrsa peer-public-key"):]
    assert tail.split("\n#\n")[:3] == [
        f"#\nrsa peer-public-key bobkey\n public-key {RSA_TYPE} {RSA_DATA}\n peer-public-key end",
        f"ecc peer-public-key alicekey\n public-key {ED_TYPE} {ED_DATA}\n peer-public-key end",
        f"ecc peer-public-key carolkey\n public-key {EC_TYPE} {EC_DATA}\n peer-public-key end",
    ]
    assert text.endswith(
        "#\naaa\n"
        f" local-user alice password irreversible-cipher {alice_hash}\n"
        " local-user alice level 3\n"
        " local-user alice service-type ssh terminal\n"
        " local-user bob level 15\n"
        " local-user bob service-type ssh\n"
        "#\n"
        "stelnet server enable\n"
        "ssh server port 2222\n"
        "ssh server listen-address 127.0.0.1\n"
        "ssh server listen-address 2001:db8::1\n"
        "ssh user alice\n"
        "ssh user alice authentication-type ecc\n"
        "ssh user alice assign ecc-key alicekey\n"
        "ssh user alice service-type stelnet\n"
        "ssh user bob\n"
        "ssh user bob authentication-type all\n"
        "ssh user bob assign rsa-key bobkey\n"
        "ssh user bob service-type all\n"
        "#\n"
        "user-interface maximum-vty 8\n"
        "user-interface vty 0 4\n"
        " authentication-mode aaa\n"
        " user privilege level 1\n"
        " idle-timeout 1 30\n"
        "#\nreturn\n"
    )


def test_defaults_render_nothing() -> None:
    assert rendered(Config()) == "#\n sysname USG6000\n#\nreturn\n"
    config = run("ssh server port 22", "user-interface maximum-vty 5", "user-interface vty 0 4",
                 "idle-timeout 10", "user privilege level 0").config
    assert rendered(config) == "#\n sysname USG6000\n#\nreturn\n"


def test_undo_forms_restore_the_defaults() -> None:
    shell = run(*FULL)
    for line in [
        "undo stelnet server enable",
        "undo ssh server port",
        "undo ssh server listen-address 127.0.0.1",
        "undo ssh server listen-address",
        "undo ssh user alice authentication-type",
        "undo ssh user alice assign ecc-key",
        "undo ssh user alice service-type",
        "undo ssh user alice",
        "undo ssh user bob",
        "undo rsa peer-public-key bobkey",
        "undo ecc peer-public-key alicekey",
        "ecc peer-public-key carolkey",
        "undo public-key",
        "quit",
        "undo ecc peer-public-key carolkey",
        "aaa",
        "undo local-user alice level",
        "undo local-user alice service-type",
        "undo local-user alice",
        "undo local-user bob level",
        "undo local-user bob service-type",
        "undo user-interface maximum-vty",
        "user-interface vty 0 4",
        "undo authentication-mode",
        "undo user privilege level",
        "undo idle-timeout",
    ]:
        outcome = shell.execute(line)
        assert outcome.ok, f"{line}: {outcome.text}"
    assert rendered(shell.config) == rendered(Config())
    assert shell.config.local_users == {}  # bob had only a level and a service type: nothing is left


def test_idle_timeout_in_seconds_and_minutes() -> None:
    shell = run("user-interface vty 0 4", "idle-timeout 0 2")
    assert shell.config.vty.idle_timeout == 2
    assert shell.execute("display this").text == "#\nuser-interface vty 0 4\n idle-timeout 0 2\n#\nreturn"
    assert shell.execute("idle-timeout 0 0").ok
    assert shell.config.vty.idle_timeout == 0
    assert shell.execute("idle-timeout 15").ok
    assert shell.config.vty.idle_timeout == 900
    fails(shell, "idle-timeout 1 60")  # seconds are 0..59


def test_views_and_prompts() -> None:
    shell = run("aaa")
    assert shell.prompt == "[USG6000-aaa]"
    run("ecc peer-public-key k1", config=shell.config)
    shell.execute("ecc peer-public-key k1")
    assert shell.prompt == "[USG6000-ecc-public-key]"
    shell.execute("peer-public-key end")
    assert shell.prompt == "[USG6000]"
    shell.execute("rsa peer-public-key k2")
    assert shell.prompt == "[USG6000-rsa-public-key]"
    shell.execute("user-interface vty 0 4")
    assert shell.prompt == "[USG6000-ui-vty0-4]"


def test_password_is_masked_in_the_command_log_and_never_printed() -> None:
    shell = run("aaa", f"local-user alice password irreversible-cipher {PASSWORD}")
    log = "\n".join(shell.logbuffer.render("X"))
    assert PASSWORD not in log
    assert 'Command="local-user alice password irreversible-cipher ******"' in log
    assert PASSWORD not in shell.execute("display this").text
    assert PASSWORD not in shell.execute("display current-configuration").text


def test_password_rules() -> None:
    shell = run("aaa")
    error = fails(shell, "local-user a password irreversible-cipher short")
    assert error == "Error: Wrong parameter found at '^' position."
    fails(shell, "local-user a password irreversible-cipher " + "x" * 129)
    # a pre-shared-key cipher text has the same marks but is not a password hash
    fails(shell, f"local-user a password irreversible-cipher {secret.encrypt_secret('whatever-key')}")
    fails(shell, "local-user a password irreversible-cipher %^%#AAAA%^%#")
    assert "a" not in shell.config.local_users


def test_password_hash() -> None:
    stored = PasswordHash.create(PASSWORD)
    assert stored.verify(PASSWORD) and not stored.verify(PASSWORD + "x")
    assert PasswordHash.create(PASSWORD) != stored  # a fresh salt every time
    assert PasswordHash.from_cipher_text(stored.cipher_text()) == stored
    assert PASSWORD not in stored.cipher_text()
    with pytest.raises(ValueError):
        PasswordHash.from_cipher_text(stored.cipher_text()[:-6] + "%^%#")
    with pytest.raises(ValueError):
        PasswordHash.from_cipher_text("not a cipher")


def test_public_key_checks() -> None:
    check_public_key(KeyKind.ECC, ED_TYPE, ED_DATA)
    check_public_key(KeyKind.RSA, RSA_TYPE, RSA_DATA)
    with pytest.raises(ValueError):
        check_public_key(KeyKind.RSA, ED_TYPE, ED_DATA)  # wrong family
    with pytest.raises(ValueError):
        check_public_key(KeyKind.ECC, "ssh-ed25519", RSA_DATA)  # the blob says ssh-rsa
    with pytest.raises(ValueError):
        check_public_key(KeyKind.ECC, "ssh-ed25519", "AAAA!!!")
    shell = run("ecc peer-public-key k")
    assert fails(shell, f"public-key ssh-ed25519 {RSA_DATA}") == "Error: Wrong parameter found at '^' position."
    fails(shell, f"public-key ssh-rsa {RSA_DATA}")  # not a key type of the ECC view


def test_reference_rules() -> None:
    shell = run()
    assert fails(shell, "ssh user alice assign ecc-key nokey") == "Error: The ECC public key nokey does not exist."
    run("ecc peer-public-key k", f"public-key {ED_TYPE} {ED_DATA}", "ssh user alice assign ecc-key k",
        config=shell.config)
    assert "assigned to SSH user alice" in fails(shell, "undo ecc peer-public-key k")
    assert fails(shell, "undo ssh user nobody") == "Error: The SSH user nobody does not exist."
    run("aaa", config=shell.config)
    shell.execute("aaa")
    assert fails(shell, "undo local-user nobody") == "Error: The local user nobody does not exist."
    # while loading a file, the order of sections does not matter
    config, errors = load_config("ssh user alice assign ecc-key k\necc peer-public-key k\n"
                                 f" public-key {ED_TYPE} {ED_DATA}\n")
    assert errors == [] and config.ssh_users["alice"].ecc_key == "k"


def test_management_commands_need_level_3() -> None:
    shell = Shell(Config(), tree=TREE, level=2)
    shell.execute("system-view")
    for line in ("aaa", "stelnet server enable", "ssh user x", "user-interface vty 0 4", "ecc peer-public-key k"):
        assert fails(shell, line) == "Error: Unrecognized command found at '^' position."


def test_levels_up_to_15_run_everything() -> None:
    shell = Shell(Config(), tree=TREE, level=15)
    assert shell.execute("system-view").ok
    assert shell.execute("aaa").ok


# --- the login rules ----------------------------------------------------------------------------
def _policy(**server: object) -> tuple[SshServerSettings, VtySettings, dict[str, LocalUser], dict[str, SshUser]]:
    settings = SshServerSettings(stelnet=True)
    for name, value in server.items():
        setattr(settings, name, value)
    users = {
        "ann": LocalUser("ann", PasswordHash.create(PASSWORD), 3, {ServiceType.SSH}),
        "ted": LocalUser("ted", PasswordHash.create(PASSWORD), None, {ServiceType.TERMINAL}),
        "kim": LocalUser("kim", None, None, {ServiceType.SSH}),
        "sam": LocalUser("sam", None, 2, {ServiceType.SSH}),
    }
    ssh_users = {
        "kim": SshUser("kim", SshAuthType.ECC, "stelnet", ecc_key="k"),
        "sam": SshUser("sam", SshAuthType.ALL, None),
    }
    return settings, VtySettings(authentication_aaa=True, privilege_level=1), users, ssh_users


@pytest.mark.parametrize(
    ("name", "method", "why"),
    [
        ("ann", SshAuthType.PASSWORD, None),
        ("ann", SshAuthType.ECC, "not allowed"),  # no ssh user: password only (VRP's default)
        ("ted", SshAuthType.PASSWORD, "no ssh service type"),
        ("nobody", SshAuthType.PASSWORD, "no such local user"),
        ("kim", SshAuthType.ECC, None),
        ("kim", SshAuthType.PASSWORD, "not allowed"),
        ("kim", SshAuthType.RSA, "not allowed"),
        ("sam", SshAuthType.PASSWORD, "no stelnet service type"),
    ],
)
def test_login_rules(name: str, method: SshAuthType, why: str | None) -> None:
    server, vty, users, ssh_users = _policy()
    if why is None:
        assert ssh_login_allowed(server, vty, users, ssh_users, name, method).name == name
    else:
        with pytest.raises(LoginRefused, match=why):
            ssh_login_allowed(server, vty, users, ssh_users, name, method)


def test_login_needs_stelnet_and_aaa() -> None:
    server, vty, users, ssh_users = _policy(stelnet=False)
    with pytest.raises(LoginRefused, match="stelnet server is disabled"):
        ssh_login_allowed(server, vty, users, ssh_users, "ann", SshAuthType.PASSWORD)
    server.stelnet = True
    vty.authentication_aaa = False
    with pytest.raises(LoginRefused, match="not aaa"):
        ssh_login_allowed(server, vty, users, ssh_users, "ann", SshAuthType.PASSWORD)


def test_effective_level() -> None:
    _, vty, users, _ = _policy()
    assert effective_level(users["ann"], vty) == 3
    assert effective_level(users["kim"], vty) == 1  # no level of its own: the VTY's privilege level

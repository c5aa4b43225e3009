"""Secrets are masked in every echo of a line: loader errors, the command log, transcripts — judged by the
command tree (the ``Secret``/``Password`` parameter types), even when the line does not parse."""

from __future__ import annotations

from ikegate.cli.commands import default_tree
from ikegate.cli.loader import NOT_TEXT, decode_config, load_config
from ikegate.cli.logbuffer import LogBuffer
from ikegate.cli.matcher import mask_secrets
from ikegate.cli.shell import Shell
from ikegate.policy.model import Config

PSK = "S3cretPSK"
PW = "Passw0rd!23"


def test_mask_secrets_whatever_the_view_and_parse_state() -> None:
    tree = default_tree()
    # from the secret to the end of the line: extra words may be the rest of a pass phrase
    assert mask_secrets(tree, f" pre-shared-key {PSK} extra-token") == " pre-shared-key ****** ******"
    assert mask_secrets(tree, f"pre-sh {PSK}") == "pre-sh ******"  # abbreviated keyword
    assert mask_secrets(tree, f"pre-shared-key {PSK}?x") == "pre-shared-key ******"  # not a valid key
    assert mask_secrets(tree, f"local-user bob pass irr {PW}") == "local-user bob pass irr ******"
    assert mask_secrets(tree, f" pre-shared-key\t{PSK}") == " pre-shared-key\t******"
    # VRP forms ikegate does not have still hide what follows a secret-leading keyword
    assert mask_secrets(tree, f"pre-shared-key cipher {PSK}") == "pre-shared-key ****** ******"
    assert mask_secrets(tree, f"local-user bob password cipher {PW}") == "local-user bob password ****** ******"
    assert mask_secrets(tree, f"undo pre-shared-key {PSK}") == "undo pre-shared-key ******"
    assert mask_secrets(tree, f"ike peer p1 pre-shared-key {PSK}") == "ike peer p1 pre-shared-key ******"
    # lines without secrets are returned untouched, spacing included
    assert mask_secrets(tree, "  ike peer  p1") == "  ike peer  p1"
    assert mask_secrets(tree, "sysname S3cretPSK") == "sysname S3cretPSK"
    assert mask_secrets(tree, " authentication-method pre-share") == " authentication-method pre-share"
    assert mask_secrets(tree, "ssh user bob authentication-type password") == (
        "ssh user bob authentication-type password")


def test_loader_errors_never_echo_a_secret() -> None:
    text = f"ike peer p1\n pre-shared-key {PSK} extra-token\nsysname GW\npre-shared-key {PSK}\naaa\n" \
           f" local-user bob password irreversible-cipher {PW} extra\n"
    config, errors = load_config(text)
    assert [e.line_number for e in errors] == [2, 4, 6]
    assert config.sysname == "GW"
    for err in errors:
        assert PSK not in str(err) and PW not in str(err)
        assert "******" in err.line
    assert "Too many parameters" in errors[0].message


def test_binary_configuration_lines_are_reported_and_the_rest_loads() -> None:
    data = b"sysname GW\n\x00\xff\xfe\x01 junk\nike proposal 10\n encryption-algorithm aes-256\nsysname \x81X\n"
    config, errors = load_config(decode_config(data))
    assert [(e.line_number, e.message) for e in errors] == [(2, NOT_TEXT), (5, NOT_TEXT)]
    assert errors[0].line == "\\x00\\xff\\xfe\\x01 junk"  # printable, the bytes shown as escapes
    assert errors[1].line == "sysname \\x81X"
    assert config.sysname == "GW"
    assert 10 in config.ike_proposals


def test_command_log_masks_secrets_of_failed_and_misplaced_lines() -> None:
    logs = LogBuffer()
    shell = Shell(Config(), logbuffer=logs)
    shell.run("system-view")
    for line in (f"pre-shared-key {PSK} extra", "ike peer p1", f"pre-shared-key {PSK} extra",
                 f"pre-shared-key {PSK}"):
        shell.run(line)
    text = "\n".join(r.text for r in logs)
    assert PSK not in text
    assert text.count("pre-shared-key ******") == 3

"""``ikegate … --help``: every option says what it does, and every option with a default shows it."""

from __future__ import annotations

import argparse

import pytest

from ikegate.__main__ import build_parser


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


@pytest.mark.parametrize("name", ["run", "demo", "cli"])
def test_every_option_has_help_and_shows_its_default(name: str) -> None:
    sub = _subparsers()[name]
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{name} {action.option_strings or action.dest}: no help text"
        if action.default not in (None, False) and action.default is not argparse.SUPPRESS:
            assert "%(default)s" in action.help or str(action.default) in action.help, action.option_strings


def test_run_help_text(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for expected in ("--ike-port N UDP port for IKE (default: 500)", "(default: 4500)",
                     "default: USG6000V", "(default: 1/0,1/1,3/0,3/1)", "declared dead (default: 5)"):
        assert expected in text

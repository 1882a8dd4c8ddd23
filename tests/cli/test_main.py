"""The dispatcher: `gptoss --version`, and every option's default visible in `--help`."""

from __future__ import annotations

import argparse
import re

import pytest

from gptoss.cli.__main__ import COMMANDS, build_parser, main, version


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"gptoss {version()}\n"
    assert version() == "0.1.0"


def subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_is_offered() -> None:
    assert set(subparsers()) == set(COMMANDS)


def option_blocks(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Option flag -> the help text printed for it (one block per option, as argparse lays them out)."""
    blocks = re.split(r"\n  (?=-)", parser.format_help())
    return {flag: " ".join(block.split()) for block in blocks for flag in re.findall(r"^(--?[\w-]+)", block)}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_shows_every_default(command: str) -> None:
    parser = subparsers()[command]
    blocks = option_blocks(parser)
    for action in parser._actions:
        if not action.option_strings or action.default in (None, False, argparse.SUPPRESS):
            continue
        assert "default" in blocks[action.option_strings[0]], f"gptoss {command} --help: {action.option_strings}"


def test_help_shows_the_serve_port_default() -> None:
    assert "--port PORT default: 8000" in " ".join(subparsers()["serve"].format_help().split())

"""`gptoss {generate,random-checkpoint,render,tokenize,bench,...}`: a thin dispatcher over per-command modules.

A command module defines `HELP: str`, `add_arguments(parser)` and `run(args) -> int`, and keeps its heavy imports
(torch, tiktoken, ...) inside run(), so building the parser stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys

COMMANDS: dict[str, str] = {
    "generate": "gptoss.cli.generate",
    "random-checkpoint": "gptoss.cli.random_checkpoint",
    "render": "gptoss.cli.render",
    "tokenize": "gptoss.cli.tokenize",
    "bench": "gptoss.cli.bench",
    "serve": "gptoss.cli.serve",
    "chat": "gptoss.cli.chat",
    "finetune": "gptoss.cli.finetune",
    "merge": "gptoss.cli.merge",
}


class UserError(Exception):
    """An error caused by the user's input: printed as one line, exit status 2, no traceback."""


def version() -> str:
    try:
        return importlib.metadata.version("gptoss")
    except importlib.metadata.PackageNotFoundError:  # running from a source tree that was never installed
        from gptoss import __version__

        return __version__


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Every option with a real default says it in --help, unless its help text already mentions one."""
    for action in parser._actions:
        if not action.option_strings or action.default in (None, False, argparse.SUPPRESS):
            continue
        if "default" not in (action.help or ""):
            action.help = f"{action.help} (default: %(default)s)" if action.help else "default: %(default)s"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gptoss", description="Run OpenAI's GPT-OSS models.")
    parser.add_argument("--version", action="version", version=f"gptoss {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != module_name:
                raise
            continue  # a command whose module is not written yet is simply not offered
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        show_defaults(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args))
    except UserError as e:
        print(f"gptoss {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ValueError as e:  # config/weights/input validation errors carry a message meant for the user
        print(f"gptoss {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

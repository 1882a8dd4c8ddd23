"""`gptoss tokenize`: text -> o200k_harmony token ids, or ids -> text with `--decode`.

Text comes from the argument or stdin (one trailing newline from stdin is dropped, so `echo hi | gptoss tokenize`
tokenizes `hi`). Ids print comma-separated, the form `gptoss generate --tokens` takes.
"""

from __future__ import annotations

import argparse
import re
import sys

from gptoss.cli.__main__ import UserError

HELP = "tokenize text with o200k_harmony (or --decode token ids back to text)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", nargs="?", help="text to tokenize (default: read stdin)")
    p.add_argument(
        "--special",
        action="store_true",
        help="read special-token text such as <|start|> as the special token (default: as plain text)",
    )
    p.add_argument(
        "--decode", action="store_true", help="the input is token ids (comma/space separated); print the text"
    )


def read_input(text: str | None) -> str:
    if text is not None:
        return text
    data = sys.stdin.read()
    return data[:-1] if data.endswith("\n") else data


def parse_ids(text: str) -> list[int]:
    pieces = [p for p in re.split(r"[\s,]+", text) if p]
    if not pieces:
        raise UserError("no token ids given")
    try:
        return [int(p) for p in pieces]
    except ValueError:
        raise UserError(f"token ids must be integers separated by commas or spaces, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from gptoss.harmony import HarmonyEncodingName, load_harmony_encoding

    encoding = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
    source = read_input(args.text)
    if args.decode:
        from gptoss.harmony.tokenizer import check_token

        ids = parse_ids(source)
        for token in ids:
            check_token(token)
        sys.stdout.write(encoding.decode(ids) + "\n")
        return 0
    if args.special:
        ids = encoding.encode(source, allowed_special="all")
    else:
        ids = encoding.encode(source, disallowed_special=())
    print(",".join(map(str, ids)))
    return 0

"""`gptoss random-checkpoint`: write a random checkpoint in the official layout(s), for tests and benchmarks."""

from __future__ import annotations

import argparse
from pathlib import Path

from gptoss.cli.__main__ import UserError

HELP = "write a random gpt-oss checkpoint (tiny, 20b or 120b shapes) in the official layout"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default="tiny", help="tiny, 20b (gpt-oss-20b) or 120b (gpt-oss-120b)")
    p.add_argument("--out", required=True, help="output folder (must not exist or be empty)")
    p.add_argument("--layout", choices=["hf", "original", "both"], default="hf",
                   help="hf: Hugging Face root; original: original/ folder; both: as the official repo")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard-gb", type=float, default=4.0, help="largest shard size in GB")


def run(args: argparse.Namespace) -> int:
    from gptoss.config import PRESETS
    from gptoss.random_checkpoint import write_random_checkpoint

    if args.preset not in PRESETS:
        raise UserError(f"unknown preset {args.preset!r}; choose from {', '.join(sorted(PRESETS))}")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not an empty folder; refusing to overwrite it")
    if args.shard_gb <= 0:
        raise UserError(f"--shard-gb must be positive, got {args.shard_gb}")
    write_random_checkpoint(out, PRESETS[args.preset], args.layout, args.seed, int(args.shard_gb * 1e9))
    print(f"wrote a random {args.preset} checkpoint ({args.layout} layout) to {out}")
    return 0

"""Trains the demo model from scratch: synthetic data, a random initial checkpoint of the demo shape, then
`gptoss finetune --full --sparse-vocab` with the recipe's settings. Run it under `nice -n 19` on a shared machine.

    python scripts/train_demo.py WORKDIR [--max-steps N]

WORKDIR gets data.jsonl, init/ (the random start) and out/ (the trained checkpoint and metrics.jsonl).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from gptoss.cli.__main__ import main as gptoss_main
from gptoss.demo import data, recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--max-steps", type=int, default=recipe.TRAIN.max_steps)
    args = parser.parse_args()
    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    data.write_jsonl(data.generate(recipe.DATA_COUNT, recipe.DATA_SEED), work / "data.jsonl")
    if not (work / "init" / "config.json").exists():
        recipe.write_initial_checkpoint(work / "init")
    # One thread: on a shared 2-core machine two torch threads spin on each other (measured 12x the CPU per step).
    torch.set_num_threads(1)
    train = dataclasses.replace(recipe.TRAIN, max_steps=args.max_steps)
    argv = recipe.finetune_argv(str(work / "init"), str(work / "data.jsonl"), str(work / "out"), train)
    print("gptoss " + " ".join(argv), flush=True)
    t0 = time.perf_counter()
    code = gptoss_main([*argv, "--quiet"])
    print(f"training took {time.perf_counter() - t0:.0f} s", flush=True)
    raise SystemExit(code)


if __name__ == "__main__":
    main()

"""Trains the demo model from scratch: a random initial checkpoint of the demo shape, then the recipe's phases,
each one `gptoss finetune --full --sparse-vocab` on its synthetic data, starting where the previous one ended.

    python scripts/train_demo.py WORKDIR [--max-steps N]   (N caps every phase's steps, for trying it out)

WORKDIR gets init/ (the random start), and per phase <name>.jsonl and <name>/ (checkpoints, metrics.jsonl); the
last phase's folder is the trained model. Run again, it skips finished phases and resumes an interrupted one.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from gptoss.cli.__main__ import main as gptoss_main
from gptoss.demo import recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--max-steps", type=int, default=None)
    args = parser.parse_args()
    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "init" / "config.json").exists():
        recipe.write_initial_checkpoint(work / "init")
    # One thread: on a shared 2-core machine two torch threads spin on each other (measured 12x the CPU per step).
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    previous: Path | None = None  # the last trained phase
    for phase in recipe.PHASES:
        out = work / phase.name
        if (out / "model.safetensors").exists():
            print(f"phase {phase.name}: already trained in {out}", flush=True)
            previous = out
            continue
        start = (
            work / "init"
            if previous is None
            else recipe.carry_vocabulary_rows(previous, work / "init", work / f"{previous.name}-carried")
        )
        data = work / f"{phase.name}.jsonl"
        data.write_text("".join(line + "\n" for line in recipe.phase_lines(phase)), encoding="utf-8")
        train = phase.train if args.max_steps is None else dataclasses.replace(phase.train, max_steps=args.max_steps)
        argv = recipe.finetune_argv(str(start), str(data), str(out), train)
        argv += ["--resume"] if any(out.glob("checkpoint-*")) else []  # an interrupted phase continues
        print("gptoss " + " ".join(argv), flush=True)
        code = gptoss_main([*argv, "--quiet"])
        print(f"phase {phase.name}: {time.perf_counter() - t0:.0f} s since the start", flush=True)
        if code:
            raise SystemExit(code)
        previous = out


if __name__ == "__main__":
    main()

"""Full-training speed of the demo model's shape (gptoss.demo.recipe): one conversation per forward pass vs the
step's conversations packed (`--pack-tokens`), trained tokens/s and process CPU seconds per step.

    python -m benchmarks.bench_demo_train [--conversations 16] [--steps 3] [--pack-tokens 8192] [--threads 1]

Same conversations (the demo data generator, seed 0), same optimizer; the machine's load average is printed beside
the numbers (wall-clock is noisy on a shared machine; CPU time less so). One torch thread by default, as
scripts/train_demo.py trains. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import cpu_model, emit
from gptoss.demo import data, recipe
from gptoss.finetune.data import Example, encode_line
from gptoss.finetune.full import FullParams
from gptoss.finetune.train import Trainer
from gptoss.finetune.vocab import SparseVocab
from gptoss.harmony import load_harmony_encoding
from gptoss.runtime import load


def examples(n: int) -> list[Example]:
    enc = load_harmony_encoding("HarmonyGptOss")
    out = []
    for i, line in enumerate(data.jsonl_lines(data.generate(n, 0))):
        tokens, mask = encode_line(line, enc, 4096)
        out.append(Example(tokens, mask, i + 1))
    return out


def measure(ckpt: Path, batch: list[Example], steps: int, pack_tokens: int) -> dict[str, Any]:
    model = load(ckpt, dtype=torch.float32)
    vocab = SparseVocab.of((e.tokens for e in batch), model.config.vocab_size)
    full = FullParams(model.transformer, vocab)
    model.transformer.adapter = full
    cfg = dataclasses.replace(recipe.TRAIN, grad_accum=len(batch), pack_tokens=pack_tokens)
    trainer = Trainer(model.transformer, full.params, cfg, [full], vocab)
    trainer.train_step(batch, steps + 1)  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    tokens = sum(trainer.train_step(batch, steps + 1).tokens for _ in range(steps))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"trained_tokens_per_s": tokens / wall, "step_s": wall / steps, "cpu_s_per_step": cpu / steps}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--conversations", type=int, default=16)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--pack-tokens", type=int, default=8192)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    batch = examples(args.conversations)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = recipe.write_initial_checkpoint(Path(tmp) / "demo")
        single = measure(ckpt, batch, args.steps, 0)
        packed = measure(ckpt, batch, args.steps, args.pack_tokens)
    speedup = packed["trained_tokens_per_s"] / single["trained_tokens_per_s"]
    load_avg = os.getloadavg()[0]
    table = [
        ("cpu", f"{cpu_model()} ({os.cpu_count()} cores, {args.threads} torch threads, load average {load_avg:.1f})"),
        ("step", f"{args.conversations} conversations, {sum(len(e.tokens) for e in batch)} tokens"),
        ("one per pass", f"{single['trained_tokens_per_s']:.0f} trained tok/s, {single['cpu_s_per_step']:.2f} cpu s"),
        ("packed", f"{packed['trained_tokens_per_s']:.0f} trained tok/s, {packed['cpu_s_per_step']:.2f} cpu s"),
        ("speed-up", f"{speedup:.1f}x"),
    ]
    result = {"single": single, "packed": packed, "speedup": speedup, "threads": args.threads, "load_average": load_avg}
    emit(table, result)


if __name__ == "__main__":
    main()

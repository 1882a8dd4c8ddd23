"""`gptoss finetune`: LoRA (or full) fine-tuning on a JSONL file of conversations; writes a PEFT adapter."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gptoss.cli.__main__ import UserError

HELP = "fine-tune a model on JSONL conversations (LoRA by default; --full for small models)"
DTYPES = {"bf16": "bfloat16", "fp32": "float32"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, required=True, help="base checkpoint folder")
    p.add_argument("--data", type=Path, required=True, help="JSONL: one chat-format or harmony conversation a line")
    p.add_argument("--out", type=Path, required=True, help="output folder (adapter, checkpoints, metrics.jsonl)")
    lora = p.add_argument_group("LoRA")
    lora.add_argument("--rank", type=int, default=8)
    lora.add_argument("--alpha", type=float, default=16.0)
    lora.add_argument("--dropout", type=float, default=0.0, help="on attention inputs only")
    lora.add_argument("--targets", default="q,k,v,o", help="comma list of q,k,v,o,router,gate_up,down")
    lora.add_argument("--rslora", action="store_true", help="scale by alpha/sqrt(rank) instead of alpha/rank")
    lora.add_argument("--full", action="store_true", help="train every weight instead (fp32; small models)")
    lora.add_argument(
        "--sparse-vocab",
        action="store_true",
        help="with --full: only the tokens the data uses keep vocabulary rows (the others are zero); exact loss",
    )
    t = p.add_argument_group("training")
    t.add_argument("--lr", type=float, default=2e-4)
    t.add_argument("--epochs", type=float, default=1.0)
    t.add_argument("--max-steps", type=int, default=None, help="optimizer steps (overrides --epochs)")
    t.add_argument("--warmup-steps", type=int, default=0)
    t.add_argument("--weight-decay", type=float, default=0.0)
    t.add_argument("--grad-accum", type=int, default=1, help="conversations per optimizer step")
    t.add_argument(
        "--pack-tokens",
        type=int,
        default=0,
        help="run a step's conversations packed into forward passes of up to N tokens (0: one at a time)",
    )
    t.add_argument("--max-grad-norm", type=float, default=1.0, help="clip the gradient norm (0 = off)")
    t.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations: less memory")
    t.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="base model weights (adapters are fp32)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--max-length", type=int, default=None, help="longest conversation in tokens (default: context)")
    t.add_argument("--eval-fraction", type=float, default=0.0, help="conversations held out for eval loss")
    t.add_argument("--eval-every", type=int, default=0, help="steps between evals (0: at the end)")
    t.add_argument("--save-every", type=int, default=0, help="steps between checkpoints (0: none)")
    t.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    t.add_argument("--strict-data", action="store_true", help="a bad JSONL line is fatal (default: skipped)")
    t.add_argument("--device", default="cpu")
    t.add_argument("--quiet", action="store_true", help="no progress bar")


def job(args: argparse.Namespace) -> Any:
    import torch

    from gptoss.finetune.lora import LoraConfig
    from gptoss.finetune.run import Job
    from gptoss.finetune.train import TrainConfig

    for name in ("rank", "grad_accum", "epochs"):
        if getattr(args, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.pack_tokens < 0:
        raise UserError(f"--pack-tokens must be 0 (off) or positive, got {args.pack_tokens}")
    if args.sparse_vocab and not args.full:
        raise UserError("--sparse-vocab needs --full (LoRA leaves the vocabulary rows as they are)")
    if not 0.0 <= args.eval_fraction < 1.0:
        raise UserError(f"--eval-fraction must be in [0, 1), got {args.eval_fraction}")
    targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
    lora = None if args.full else LoraConfig(args.rank, args.alpha, args.dropout, targets, args.rslora)
    train = TrainConfig(
        lr=args.lr, epochs=args.epochs, max_steps=args.max_steps, warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay, grad_accum=args.grad_accum, max_grad_norm=args.max_grad_norm,
        checkpointing=args.gradient_checkpointing, eval_every=args.eval_every, save_every=args.save_every,
        seed=args.seed, pack_tokens=args.pack_tokens,
    )  # fmt: skip
    dtype = torch.float32 if args.full else getattr(torch, DTYPES[args.dtype])
    return Job(
        args.model, args.data, args.out, lora, train, dtype, args.max_length, args.eval_fraction, args.strict_data,
        args.resume, args.device, args.sparse_vocab,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from gptoss.finetune.run import run as run_job

    console = Console(stderr=True)
    the_job = job(args)
    if args.quiet:
        summary = run_job(the_job, None, notice)
    else:
        with ProgressBar(console) as bar:
            summary = run_job(the_job, bar.update, notice)
    notice(f"saved to {args.out}")
    print(json.dumps(summary))
    return 0


def notice(text: str) -> None:
    print(text, file=sys.stderr, flush=True)  # not through rich: file:line references stay on one line


class ProgressBar:
    """A rich progress bar showing the step, loss, learning rate, tokens/s and ETA."""

    def __init__(self, console: Any) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"))
        self.progress = Progress(*columns, TimeRemainingColumn(), console=console)
        self.task = self.progress.add_task("train", total=None, stats="")
        self.tokens = 0

    def __enter__(self) -> ProgressBar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, p: Any) -> None:
        self.tokens += p.result.seen
        rate = self.tokens / p.elapsed if p.elapsed > 0 else 0.0
        stats = f"loss {p.result.loss:.4f}  lr {p.lr:.2e}  {rate:.0f} tok/s"
        if p.eval_loss is not None:
            stats += f"  eval {p.eval_loss:.4f}"
        self.progress.update(self.task, completed=p.step, total=p.total, stats=stats)

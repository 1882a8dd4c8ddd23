"""`gptoss generate`: sample token ids from a checkpoint, printed as they come."""

from __future__ import annotations

import argparse
import sys

from gptoss.cli.__main__ import UserError

HELP = "generate token ids from a prompt of token ids"
DTYPES = {"bf16": "bfloat16", "fp32": "float32", "fp16": "float16"}


def parse_ids(text: str, what: str) -> list[int]:
    try:
        return [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise UserError(f"{what} must be comma-separated integers, got {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="checkpoint folder (Hugging Face root or original/)")
    p.add_argument("--tokens", required=True, help="prompt token ids, comma-separated, e.g. 1,2,3")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stop", default="", help="stop token ids, comma-separated")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--context", type=int, default=None, help="context limit in tokens (default: the model's)")


def run(args: argparse.Namespace) -> int:
    import torch

    import gptoss

    prompt = parse_ids(args.tokens, "--tokens")
    stop = parse_ids(args.stop, "--stop")
    model = gptoss.load(args.model, dtype=getattr(torch, DTYPES[args.dtype]), context_length=args.context)
    stream = model.generate(
        prompt, max_tokens=args.max_tokens, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        min_p=args.min_p, seed=args.seed, stop_tokens=stop,
    )  # fmt: skip
    for i, token in enumerate(stream):
        print(("," if i else "") + str(token), end="", flush=True)
    print()
    sys.stdout.flush()
    return 0

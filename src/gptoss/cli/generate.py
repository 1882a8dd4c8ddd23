"""`gptoss generate`: sample token ids from a checkpoint, printed as they come."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptoss.cli.__main__ import UserError

if TYPE_CHECKING:
    from gptoss.runtime import Model

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
    from gptoss.cli.serve import add_device_argument

    add_device_argument(p)
    p.add_argument(
        "--schema",
        type=Path,
        default=None,
        metavar="FILE.json",
        help="constrain the output to a harmony assistant turn whose final message matches this JSON "
        "Schema (the prompt should end with <|start|>assistant); stops at <|return|>",
    )
    p.add_argument(
        "--max-reasoning-tokens",
        type=int,
        default=None,
        metavar="N",
        help="with --schema: free reasoning before the final message (default: half of --max-tokens)",
    )
    from gptoss.distributed.cli import add_arguments as add_tp_arguments

    add_tp_arguments(p)


def run(args: argparse.Namespace) -> int:
    import torch

    import gptoss
    from gptoss.cli.chat import read_schema
    from gptoss.distributed import cli as tp

    prompt = parse_ids(args.tokens, "--tokens")
    parse_ids(args.stop, "--stop")
    schema = read_schema(args.schema)
    if args.max_reasoning_tokens is not None and args.max_reasoning_tokens < 0:
        raise UserError(f"--max-reasoning-tokens must be >= 0, got {args.max_reasoning_tokens}")
    bad = tp.check(args)
    if bad:
        raise UserError(bad)
    from gptoss.cli.serve import check_device

    check_device(args)
    dtype = getattr(torch, DTYPES[args.dtype])
    if args.tp > 1:
        return tp.run_ranks(args, "generate", dtype, args.context, lambda model: emit(model, args, prompt, schema))
    return emit(
        gptoss.load(args.model, device=args.device, dtype=dtype, context_length=args.context), args, prompt, schema
    )


def emit(model: Model, args: argparse.Namespace, prompt: list[int], schema: dict[str, Any] | None) -> int:
    """Generates and prints the token ids as they come."""
    from gptoss.harmony.grammar import TurnRules
    from gptoss.sampling import SamplingParams
    from gptoss.server.config import ServerConfig
    from gptoss.server.generation import constraint, harmony, reasoning_budget

    stop = parse_ids(args.stop, "--stop")
    turn = None
    if schema is not None:  # read_schema checked it: it compiles
        budget = reasoning_budget(args.max_reasoning_tokens, args.max_tokens, ServerConfig.max_reasoning_tokens)
        turn = constraint(TurnRules(final_schema=schema), budget)
        stop = [*stop, *harmony().stop_tokens_for_assistant_actions()]
    params = SamplingParams(
        args.temperature, args.top_p, args.top_k, args.min_p, args.seed, args.max_tokens, frozenset(stop)
    )
    stream = model.generate_with(prompt, params, turn)
    for i, token in enumerate(stream):
        print(("," if i else "") + str(token), end="", flush=True)
    print()
    sys.stdout.flush()
    return 0

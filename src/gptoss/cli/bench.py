"""`gptoss bench`: load time, resident memory, prefill and decode speed of a checkpoint on this machine."""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gptoss.runtime import Model

HELP = "measure load time, memory, prefill and decode tokens/s on this machine"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="checkpoint folder")
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--decode-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--json", action="store_true", help="print only the JSON result")
    from gptoss.cli.serve import add_device_argument

    add_device_argument(p)
    from gptoss.distributed.cli import add_arguments as add_tp_arguments

    add_tp_arguments(p)


def rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # ru_maxrss is KiB on Linux


def measure(
    model_dir: str, prompt_tokens: int, decode_tokens: int, threads: int | None, device: str = "cpu"
) -> dict[str, Any]:
    """Loads the checkpoint, prefills a random prompt (seed 0), then decodes greedily; returns the numbers."""
    import torch

    import gptoss

    if threads:
        torch.set_num_threads(threads)
    t = time.perf_counter()
    model = gptoss.load(model_dir, device=device, context_length=prompt_tokens + decode_tokens + 1)
    return timed(model, prompt_tokens, decode_tokens, time.perf_counter() - t)


def timed(model: Model, prompt_tokens: int, decode_tokens: int, load_s: float) -> dict[str, Any]:
    """The prefill and decode timings of a loaded model (on rank 0 of a --tp group: of the whole group)."""
    import torch

    from gptoss import ops

    rss_after_load = rss_gb()
    prompt = torch.randint(0, model.config.vocab_size, (prompt_tokens,), generator=torch.Generator().manual_seed(0))
    cuda = model.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else lambda: None  # GPU work is asynchronous: time it once it is done
    cache = model.new_cache()
    t = time.perf_counter()
    logits = model.prefill(cache, prompt.to(model.device))
    sync()
    prefill_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(decode_tokens):
        logits = model.prefill(cache, logits.argmax().view(1))
    sync()
    decode_s = time.perf_counter() - t
    return {
        "ops_backend": "triton" if cuda else ops.BACKEND,
        "device": torch.cuda.get_device_name(model.device) if cuda else "cpu",
        "dtype": str(model.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "load_s": round(load_s, 2),
        "rss_after_load_gb": round(rss_after_load, 2),
        "peak_rss_gb": round(peak_rss_gb(), 2),
        "prefill_tokens": prompt_tokens,
        "prefill_tok_s": round(prompt_tokens / prefill_s, 3),
        "decode_tokens": decode_tokens,
        "decode_tok_s": round(decode_tokens / decode_s, 4) if decode_tokens else None,
        "kernels": ops.native.flavours() if ops.BACKEND == "native" else {},
    }


def report(result: dict[str, Any], json_only: bool) -> int:
    if not json_only:
        for k, v in result.items():
            if isinstance(v, dict):  # which kernel flavour each op ran
                for op, flavour in v.items():
                    print(f"{k + '.' + op:<18} {flavour}")
            else:
                print(f"{k:<18} {v}")
    print(json.dumps(result))
    return 0


def run(args: argparse.Namespace) -> int:
    from gptoss.cli.__main__ import UserError
    from gptoss.distributed import cli as tp

    if args.prompt_tokens < 1 or args.decode_tokens < 0:
        raise UserError("--prompt-tokens must be >= 1 and --decode-tokens >= 0")
    bad = tp.check(args)
    if bad:
        raise UserError(bad)
    from gptoss.cli.serve import check_device

    check_device(args)
    if args.tp == 1:
        result = measure(args.model, args.prompt_tokens, args.decode_tokens, args.threads, args.device)
        return report(result, args.json)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()

    def lead(model: Model) -> int:
        result = timed(model, args.prompt_tokens, args.decode_tokens, time.perf_counter() - start)
        return report({"tp": args.tp, **result}, args.json)  # memory figures are rank 0's

    context = args.prompt_tokens + args.decode_tokens + 1
    return tp.run_ranks(args, "bench", torch.bfloat16, context, lead)

"""Reference-path speed and memory on a random checkpoint of the real gpt-oss-20b (or 120b) shapes.

    python benchmarks/bench_reference.py [--preset 20b] [--prompt-tokens 512] [--decode-tokens 64]

Measures load time, resident memory after load and at peak, prefill tok/s and greedy decode tok/s. The experts go
through whichever ops backend is active (GPTOSS_OPS=ref forces the plain-torch reference). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import time

import torch

import gptoss
from benchmarks.common import cpu_model, emit, peak_rss_gb, random_checkpoint, rss_gb
from gptoss import ops


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="20b")
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    path = random_checkpoint(args.preset)

    t = time.perf_counter()
    model = gptoss.load(path, context_length=args.prompt_tokens + args.decode_tokens + 1)
    load_s = time.perf_counter() - t
    rss_after_load = rss_gb()

    prompt = torch.randint(
        0, model.config.vocab_size, (args.prompt_tokens,), generator=torch.Generator().manual_seed(0)
    )
    cache = model.new_cache()
    t = time.perf_counter()
    logits = model.prefill(cache, prompt)
    prefill_s = time.perf_counter() - t

    t = time.perf_counter()
    for _ in range(args.decode_tokens):
        logits = model.prefill(cache, logits.argmax().view(1))
    decode_s = time.perf_counter() - t

    result = {
        "benchmark": "reference_path",
        "preset": args.preset,
        "ops_backend": ops.BACKEND,
        "dtype": str(model.dtype),
        "threads": args.threads,
        "cpu": cpu_model(),
        "load_s": round(load_s, 2),
        "rss_after_load_gb": round(rss_after_load, 2),
        "peak_rss_gb": round(peak_rss_gb(), 2),
        "prefill_tokens": args.prompt_tokens,
        "prefill_tok_s": round(args.prompt_tokens / prefill_s, 3),
        "decode_tokens": args.decode_tokens,
        "decode_tok_s": round(args.decode_tokens / decode_s, 4),
    }
    emit([(k, str(v)) for k, v in result.items()], result)


if __name__ == "__main__":
    main()

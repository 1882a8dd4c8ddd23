"""gptoss speed and memory on a random checkpoint of the real gpt-oss-20b (or 120b) shapes.

    python -m benchmarks.bench_reference [--preset 20b] [--prompt-tokens 512] [--decode-tokens 64]

Load time, resident memory after load and at peak, prefill tok/s and greedy decode tok/s, through whichever ops
backend is active (GPTOSS_OPS=ref forces the plain-torch reference path). Last line: one JSON object.
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import cpu_model, emit, random_checkpoint
from gptoss.cli.bench import measure


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="20b")
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    path = random_checkpoint(args.preset)
    result = {"benchmark": "gptoss", "preset": args.preset, "cpu": cpu_model()}
    result.update(measure(str(path), args.prompt_tokens, args.decode_tokens, args.threads))
    emit([(k, str(v)) for k, v in result.items()], result)


if __name__ == "__main__":
    main()

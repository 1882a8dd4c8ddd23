"""Where a batched decode step's time goes, by op, for 1, 2, 4 and 8 sequences decoding together.

    python -m benchmarks.bench_batched_decode [--checkpoint DIR] [--streams 1,2,4,8] [--steps 8] [--context 256]

In process, through the batching engine's source (engine/batched.py: one forward over every sequence's next token).
Each op in gptoss.ops is wrapped with a timer; per step, process CPU time (all threads; wall time on a shared machine
says little) goes to: the unembedding, q/k/v/o, the router, the experts, attention (the cache's per-sequence loop
and the kernel), norms and rotary, and "other" (the rest: Python glue, embedding, top-k, sampling). The checkpoint
defaults to the 20b-shape random one under GPTOSS_BENCH_CACHE (~13 GB: run it under the big-memory lock).
Tokens per CPU-second by stream count say how well a step scales; the last line is JSON.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

import gptoss
from benchmarks.common import CACHE, cpu_model, emit
from gptoss import ops
from gptoss.engine import paged
from gptoss.engine.batched import BatchConfig, BatchedModelSource
from gptoss.sampling import SamplingParams

OPS = ("linear", "attention", "moe_experts", "rms_norm", "rope")


class Timers:
    def __init__(self, vocab: int, experts: int) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self.vocab, self.experts = vocab, experts
        self.depth = 0  # attention's kernel runs inside the cache's loop: count the outermost only

    def name(self, op: str, args: tuple[Any, ...]) -> str:
        if op == "linear":
            n = args[1].shape[0]
            return "unembedding" if n == self.vocab else "router" if n == self.experts else "qkvo"
        return {"moe_experts": "experts", "attention": "attention_kernel"}.get(op, "norm_rope")

    def wrap(self, label: Callable[[tuple[Any, ...]], str], fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kw: Any) -> Any:
            t = time.process_time()
            try:
                return fn(*args, **kw)
            finally:
                self.cpu[label(args)] += time.process_time() - t

        return timed


@contextmanager
def instrumented(t: Timers) -> Iterator[None]:
    saved = {name: getattr(ops, name) for name in OPS}
    attend = paged.BatchCache.attend
    try:
        for name in OPS:
            setattr(ops, name, t.wrap(lambda a, n=name: t.name(n, a), saved[name]))
        paged.BatchCache.attend = t.wrap(lambda a: "attention_total", attend)  # type: ignore[method-assign]
        yield
    finally:
        for name, fn in saved.items():
            setattr(ops, name, fn)
        paged.BatchCache.attend = attend  # type: ignore[method-assign]


def measure(model: gptoss.Model, streams: int, steps: int, context: int) -> dict[str, float]:
    src = BatchedModelSource(model, BatchConfig(max_running=streams, max_step_tokens=max(256, streams)))
    g = torch.Generator().manual_seed(streams)
    for s in range(streams):
        ids = torch.randint(0, model.config.vocab_size, (context,), generator=g).tolist()
        src.add(s, ids, SamplingParams(temperature=0.0, max_tokens=steps + 4))
    while src.counts[0] or any(seq.computed < len(seq.tokens) - 1 for seq in src.scheduler.running):
        src.step()  # prefill until every sequence decodes one token per step
    src.step()
    t = Timers(model.config.vocab_size, model.config.num_experts)
    with instrumented(t):
        c0, w0 = time.process_time(), time.perf_counter()
        tokens = sum(len(src.step()) for _ in range(steps))
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    row = {k: v / steps * 1e3 for k, v in t.cpu.items()}  # ms of CPU per step
    row["attention_glue"] = row.pop("attention_total", 0.0) - row.get("attention_kernel", 0.0)
    row["other"] = cpu / steps * 1e3 - sum(row.values())
    row |= {"step_cpu_ms": cpu / steps * 1e3, "step_wall_ms": wall / steps * 1e3, "tok_per_cpu_s": tokens / cpu}
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=CACHE / "random-20b-hf")
    p.add_argument("--streams", default="1,2,4,8")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--context", type=int, default=256, help="prompt tokens per sequence before the timed steps")
    args = p.parse_args()
    model = gptoss.load(args.checkpoint, context_length=args.context + args.steps + 16)
    rows = {int(n): measure(model, int(n), args.steps, args.context) for n in args.streams.split(",")}
    keys = ("unembedding", "qkvo", "router", "experts", "attention_kernel", "attention_glue", "norm_rope", "other")
    table = [("streams", "  ".join(f"{k:>10s}" for k in (*keys, "step cpu", "tok/cpu-s")))]
    for n, r in rows.items():
        vals = [r.get(k, 0.0) for k in keys] + [r["step_cpu_ms"], r["tok_per_cpu_s"]]
        table.append((str(n), "  ".join(f"{v:10.1f}" for v in vals)))
    one = rows[min(rows)]["tok_per_cpu_s"]
    table.append(("tok/cpu-s vs 1 stream", "  ".join(f"{n}: {r['tok_per_cpu_s'] / one:.2f}x" for n, r in rows.items())))
    emit(
        table,
        {
            "bench": "batched_decode",
            "cpu": cpu_model(),
            "threads": torch.get_num_threads(),
            "load_average": list(os.getloadavg()),
            "checkpoint": str(args.checkpoint),
            "ms_cpu_per_step": rows,
        },
    )


if __name__ == "__main__":
    main()

"""Tensor + expert parallel overhead on one machine: 1 process with T threads vs T ranks of 1 thread each.

    python -m benchmarks.bench_distributed [--preset small|20b|120b] [--world 2] [--prompt-tokens 128]
        [--decode-tokens 32]

Each configuration runs `gptoss bench` (prefill of a random prompt, then greedy decode) in fresh processes; the
ranks are started as torchrun would (RANK, WORLD_SIZE, MASTER_ADDR/PORT on 127.0.0.1). Peak RSS per process comes
from the kernel's accounting of each child (wait4's ru_maxrss), expert bytes per rank from the shard plan. On one
machine the ranks share the cores, so this measures overhead, not speed-up: the target is that `world` ranks keep
>= 85% of the throughput of one process with `world` threads, each rank holding 1/world of the experts.
The ranks run twice: as they run by default (the forward pass's collectives over shared memory), then over gloo
alone (GPTOSS_TP_SHM=0). `small` is a custom shape whose experts dominate (2 layers, 16 experts of 6.4 MiB):
cheap to write and run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.common import CACHE, cpu_model, emit, random_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def small_checkpoint() -> Path:
    from gptoss.config import PRESETS
    from gptoss.random_checkpoint import write_random_checkpoint

    path = CACHE / "random-small-experts-hf"
    if not (path / ".complete").exists():
        cfg = dataclasses.replace(
            PRESETS["tiny"], num_hidden_layers=2, hidden_size=1024, intermediate_size=4096, num_experts=16,
            experts_per_token=4, head_dim=64, num_attention_heads=16, num_key_value_heads=4, vocab_size=8192,
            layer_types=(),
        )  # fmt: skip
        write_random_checkpoint(path, cfg, "hf", seed=0)
        (path / ".complete").write_text("ok\n")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_ranks(
    model: Path, world: int, threads: int, args: argparse.Namespace, shm: bool = True
) -> tuple[dict[str, Any], list[float]]:
    """`gptoss bench` on `world` ranks (world 1: no --tp) -> (rank 0's JSON, peak RSS GB of each rank)."""
    argv = [sys.executable, "-m", "gptoss", "bench", "--model", str(model), "--json", "--threads", str(threads),
            "--prompt-tokens", str(args.prompt_tokens), "--decode-tokens", str(args.decode_tokens)]  # fmt: skip
    if world > 1:
        argv += ["--tp", str(world)]
    port = free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_PORT=str(port),
                   MASTER_ADDR="127.0.0.1", OMP_NUM_THREADS=str(threads), GPTOSS_TP_SHM=str(int(shm)))  # fmt: skip
        procs.append(subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True))
    out = procs[0].stdout.read() if procs[0].stdout else ""
    peaks = []
    for p in procs:
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            raise SystemExit(f"a rank of the {world}-process run exited {p.returncode}")
        peaks.append(round(usage.ru_maxrss * 1024 / 1e9, 3))
    return json.loads(out.strip().splitlines()[-1]), peaks


def expert_bytes(model: Path, world: int) -> list[int]:
    from gptoss.distributed.shard import plan
    from gptoss.weights import open_checkpoint

    cfg = open_checkpoint(model).config
    per_block = cfg.num_experts * 3 * 32 * cfg.hidden_size * 17 // 32  # 32 units: gate+up rows and down columns
    spans = [plan(cfg, r, world).blocks for r in range(world)]
    return [cfg.num_hidden_layers * per_block * (b - a) for a, b in spans]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=("small", "20b", "120b"), default="small")
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--decode-tokens", type=int, default=32)
    args = p.parse_args()
    model = small_checkpoint() if args.preset == "small" else random_checkpoint(args.preset)
    one, one_rss = run_ranks(model, 1, args.world, args)
    tp, tp_rss = run_ranks(model, args.world, 1, args)
    gloo, _ = run_ranks(model, args.world, 1, args, shm=False)
    experts = expert_bytes(model, args.world)
    ratio = {k: round(tp[k] / one[k], 3) for k in ("prefill_tok_s", "decode_tok_s")}
    ratio_gloo = {k: round(gloo[k] / one[k], 3) for k in ("prefill_tok_s", "decode_tok_s")}
    table = [
        ("machine", f"{cpu_model()}, {os.cpu_count()} CPUs"),
        ("checkpoint", f"{args.preset} ({model})"),
        (
            f"1 process x {args.world} threads",
            f"prefill {one['prefill_tok_s']} tok/s, decode {one['decode_tok_s']} tok/s, peak RSS {one_rss[0]} GB",
        ),
        (
            f"{args.world} ranks x 1 thread",
            f"prefill {tp['prefill_tok_s']} tok/s, decode {tp['decode_tok_s']} tok/s, peak RSS per rank {tp_rss} GB",
        ),
        ("ranks / one process", f"prefill {ratio['prefill_tok_s']}, decode {ratio['decode_tok_s']} (target >= 0.85)"),
        (
            f"{args.world} ranks, GPTOSS_TP_SHM=0 (gloo)",
            f"prefill {gloo['prefill_tok_s']} tok/s, decode {gloo['decode_tok_s']} tok/s "
            f"(ratios {ratio_gloo['prefill_tok_s']}, {ratio_gloo['decode_tok_s']})",
        ),
        ("expert bytes per rank", f"{[round(b / 1e9, 3) for b in experts]} GB of {round(sum(experts) / 1e9, 3)}"),
    ]
    emit(table, {
        "preset": args.preset, "world": args.world, "prompt_tokens": args.prompt_tokens,
        "decode_tokens": args.decode_tokens, "one_process": {**one, "peak_rss_gb": one_rss[0]},
        "ranks": {**tp, "peak_rss_gb_per_rank": tp_rss}, "ratio": ratio,
        "ranks_gloo": gloo, "ratio_gloo": ratio_gloo, "expert_bytes_per_rank": experts,
    })  # fmt: skip


if __name__ == "__main__":
    main()

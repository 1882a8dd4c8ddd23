"""Read bandwidth of this machine, and the decode ceiling it implies for a gpt-oss config.

    python -m benchmarks.bandwidth [--threads N] [--gb 2] [--repeats 5] [--preset 20b]

Decode of one token must read every weight it uses at least once, so tok/s <= bandwidth / bytes per token. The bytes
are counted from config.json as the checkpoint stores them: MXFP4 experts (top-k of them per layer; 4.25 bits a
value: a nibble plus one E8M0 scale byte per 32), bf16 attention, router, norms and the unembedding, and one bf16
embedding row (cpu-measurements.md §3: 3.708 GB for gpt-oss-20b). The KV cache is left out: at the 512-640 token
contexts of bench_cpu it adds under 1 %. The bandwidth is the best of a few `torch.sum` passes over an fp32 buffer far
larger than the caches, on the benchmark's thread count; on a shared machine expect it to move run to run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import CACHE, cpu_model, emit

DENSE_BYTES = 2  # bf16
MXFP4_BYTES_PER_VALUE = 0.5 + 1 / 32  # a nibble, plus one E8M0 scale byte per block of 32


def read_bandwidth_gbs(threads: int, gb: float = 2.0, repeats: int = 5) -> float:
    """Best-of-`repeats` read bandwidth in GB/s: `torch.sum` over a `gb` GB fp32 buffer on `threads` threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        buf = torch.ones(int(gb * 1e9) // 4, dtype=torch.float32)  # written once, so every page is resident
        buf.sum()  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            buf.sum()
            best = min(best, time.perf_counter() - t)
        return buf.numel() * 4 / best / 1e9
    finally:
        torch.set_num_threads(previous)


def bytes_per_token(config: dict[str, Any]) -> dict[str, float]:
    """Weight bytes one decoded token reads, by part, from a gpt-oss config.json."""
    h, layers = config["hidden_size"], config["num_hidden_layers"]
    heads, kv_heads, head_dim = config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"]
    inter, n_experts = config["intermediate_size"], config["num_local_experts"]
    top_k = config.get("num_experts_per_tok", config.get("experts_per_token"))
    vocab = config["vocab_size"]
    q, kv = heads * head_dim, kv_heads * head_dim
    attention = (h * q + q + 2 * (h * kv + kv) + q * h + h + heads + 2 * h) * DENSE_BYTES  # qkvo + biases, sinks, norms
    router = (h * n_experts + n_experts) * DENSE_BYTES
    expert = (2 * inter * h + h * inter) * MXFP4_BYTES_PER_VALUE + (2 * inter + h) * DENSE_BYTES  # + biases
    parts = {
        "attention": layers * attention,
        "router": layers * router,
        "experts": layers * top_k * expert,
        "unembedding": (vocab * h + h) * DENSE_BYTES,  # lm_head + final norm
        "embedding_row": h * DENSE_BYTES,
    }
    parts["total"] = sum(parts.values())
    return parts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--gb", type=float, default=2.0)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--preset", default="20b", help="config of benchmarks/.cache/random-PRESET-hf")
    args = p.parse_args()
    bw = read_bandwidth_gbs(args.threads, args.gb, args.repeats)
    config = json.loads((Path(CACHE) / f"random-{args.preset}-hf" / "config.json").read_text())
    per_token = bytes_per_token(config)
    result = {
        "benchmark": "bandwidth",
        "cpu": cpu_model(),
        "threads": args.threads,
        "read_gbs": round(bw, 2),
        "bytes_per_token_gb": round(per_token["total"] / 1e9, 4),
        "decode_ceiling_tok_s": round(bw * 1e9 / per_token["total"], 3),
    }
    emit([(k, str(v)) for k, v in result.items()], result)


if __name__ == "__main__":
    main()

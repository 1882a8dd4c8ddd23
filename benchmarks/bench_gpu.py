"""gptoss on one NVIDIA GPU: batch-1 prefill and decode, and batched decode through the engine, each against the
HBM bandwidth ceiling.

    python -m benchmarks.bench_gpu [--presets 20b,120b] [--prompt-tokens 512] [--decode-tokens 128]
                                   [--batches 8,32] [--weights auto|disk|device]

Without a CUDA device it says so and exits 2. Weights: random, of each preset's real shapes. `disk` writes the
random checkpoint once on this machine's disk (benchmarks/common.py; 20b 13.8 GB, 120b ~65 GB) and loads it with
gptoss.load(device="cuda"); `device` draws the same kinds of tensors (bf16 dense, MXFP4 blocks + E8M0 scales) on the
GPU directly; auto = disk where the disk has room for it, else device. Kernels see the same bytes either way.
Ceilings: decode must read every weight a token uses once (benchmarks/bandwidth.py counts the bytes: top-k experts
per layer), so tok/s <= HBM bandwidth / bytes per token; the bandwidth is measured here (the best of a few reads of
a buffer far larger than L2). A batch of B sequences reads the dense weights once and each distinct routed expert
once per step: B * bandwidth / (dense bytes + expected distinct experts * expert bytes). Prints a table, then one
JSON object as the last line.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shutil
import sys
import time
from typing import Any

import torch

import gptoss
from benchmarks.bandwidth import bytes_per_token
from benchmarks.common import CACHE, emit, random_checkpoint
from gptoss.config import PRESETS, ModelConfig
from gptoss.model import AttentionWeights, LayerWeights, MoEWeights, Weights


def hbm_bandwidth_gbs(gb: float = 4.0, repeats: int = 10) -> float:
    buf = torch.ones(int(gb * 1e9) // 4, dtype=torch.float32, device="cuda")
    buf.sum()
    best = float("inf")
    for _ in range(repeats):
        torch.cuda.synchronize()
        t = time.perf_counter()
        buf.sum()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    del buf
    return int(gb * 1e9) // 4 * 4 / best / 1e9


def device_weights(cfg: ModelConfig, seed: int = 0) -> Weights:
    """Random weights of cfg's shapes drawn on the GPU: bf16 dense (std 1/sqrt(fan-in)), MXFP4 experts."""
    torch.manual_seed(seed)
    H, I, E, D, V = cfg.hidden_size, cfg.intermediate_size, cfg.num_experts, cfg.head_dim, cfg.vocab_size
    Hq, Hkv = cfg.num_attention_heads * D, cfg.num_key_value_heads * D

    def dense(*shape: int) -> torch.Tensor:
        return (torch.randn(shape, device="cuda") * shape[-1] ** -0.5).bfloat16()

    def packed(*shape: int) -> tuple[torch.Tensor, torch.Tensor]:
        blocks = torch.randint(0, 256, (*shape[:-1], shape[-1] // 32, 16), dtype=torch.uint8, device="cuda")
        exp = 127 + round(math.log2(1 / (2.9 * math.sqrt(shape[-1]))))  # fp4 codes' rms ~2.9
        return blocks, torch.full((*shape[:-1], shape[-1] // 32), exp, dtype=torch.uint8, device="cuda")

    def ones(n: int) -> torch.Tensor:
        return torch.ones(n, device="cuda")

    layers = []
    for _ in range(cfg.num_hidden_layers):
        sinks = torch.zeros(cfg.num_attention_heads, device="cuda")
        attn = AttentionWeights(ones(H), dense(Hq, H), dense(Hq), dense(Hkv, H), dense(Hkv), dense(Hkv, H),
                                dense(Hkv), dense(H, Hq), dense(H), sinks)  # fmt: skip
        b1, s1 = packed(E, 2 * I, H)
        b2, s2 = packed(E, H, I)
        moe = MoEWeights(ones(H), dense(E, H), dense(E), b1, s1, dense(E, 2 * I), b2, s2, dense(E, H))
        layers.append(LayerWeights(attn, moe))
    return Weights(dense(V, H), layers, ones(H), dense(V, H))


def checkpoint_bytes(cfg: ModelConfig) -> float:
    every_expert = dataclasses.replace(cfg, experts_per_token=cfg.num_experts).to_hf_json()
    per = bytes_per_token(every_expert)
    return per["total"] + cfg.vocab_size * cfg.hidden_size * 2  # + the embedding


def load(preset: str, weights: str, context: int) -> tuple[gptoss.Model, str]:
    cfg = PRESETS[preset]
    if weights == "auto":
        CACHE.mkdir(parents=True, exist_ok=True)
        on_disk = (CACHE / f"random-{preset}-hf" / ".complete").exists()
        weights = "disk" if on_disk or shutil.disk_usage(CACHE).free > 1.1 * checkpoint_bytes(cfg) else "device"
    if weights == "disk":
        return gptoss.load(random_checkpoint(preset), device="cuda", context_length=context), "disk"
    from gptoss.gpu.runtime import load_device

    return load_device(cfg, device_weights(cfg), torch.device("cuda"), torch.bfloat16, context), "device"


def timed(fn: Any) -> float:
    torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t


def batch1(model: gptoss.Model, prompt_tokens: int, decode_tokens: int) -> tuple[float, float]:
    """(prefill tok/s, decode tok/s); a first short run compiles the kernels and captures the graph."""
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, model.config.vocab_size, (prompt_tokens,), generator=g).cuda()

    def run(n_prompt: int, n_decode: int) -> tuple[float, float]:
        cache = model.new_cache()
        out: list[torch.Tensor] = []
        pre = timed(lambda: out.append(model.prefill(cache, prompt[:n_prompt])))

        def decode() -> None:
            logits = out[0]
            for _ in range(n_decode):
                logits = model.prefill(cache, logits.argmax().view(1))

        return pre, timed(decode)

    run(prompt_tokens, 3)  # warm-up: triton compiles, the decode graph is captured
    pre, dec = run(prompt_tokens, decode_tokens)
    return prompt_tokens / pre, decode_tokens / dec


def batched(model: gptoss.Model, batch: int, prompt_tokens: int, steps: int) -> float:
    """Aggregate decode tok/s of `batch` sequences through the engine, timed once all of them are decoding."""
    from gptoss.engine import BatchConfig, BatchedModelSource
    from gptoss.sampling import SamplingParams

    src = BatchedModelSource(model, BatchConfig(max_running=batch, max_step_tokens=max(256, batch)))
    g = torch.Generator().manual_seed(1)
    for i in range(batch):
        ids = torch.randint(0, model.config.vocab_size, (prompt_tokens,), generator=g).tolist()
        src.add(i, ids, SamplingParams(temperature=0.0, max_tokens=steps + 8))
    started: set[object] = set()
    while len(started) < batch:  # prefill every prompt (and a first token each)
        started.update(o.key for o in src.step())
    tokens = 0

    def run() -> None:
        nonlocal tokens
        for _ in range(steps):
            tokens += len(src.step())

    return tokens / timed(run)


def ceilings(cfg: ModelConfig, bw_gbs: float, batch: int) -> float:
    """Aggregate decode tok/s ceiling for `batch` sequences (batch 1: bandwidth / bytes per token)."""
    per = bytes_per_token(cfg.to_hf_json())
    k, E = cfg.experts_per_token, cfg.num_experts
    one_expert = per["experts"] / (cfg.num_hidden_layers * k)
    distinct = E * (1 - (1 - k / E) ** batch)  # expected distinct experts a layer routes the batch to
    step_bytes = per["total"] - per["experts"] + cfg.num_hidden_layers * distinct * one_expert
    return batch * bw_gbs * 1e9 / step_bytes


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="20b,120b")
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--decode-tokens", type=int, default=128)
    p.add_argument("--batches", default="8,32")
    p.add_argument("--batch-steps", type=int, default=32)
    p.add_argument("--weights", choices=("auto", "disk", "device"), default="auto")
    args = p.parse_args()
    from gptoss.gpu import cuda_unavailable

    why = cuda_unavailable(torch.device("cuda"))
    if why is not None:
        print(f"bench_gpu needs a CUDA device: {why}", file=sys.stderr)
        return 2
    bw = hbm_bandwidth_gbs()
    result: dict[str, Any] = {"benchmark": "gpu", "device": torch.cuda.get_device_name(), "hbm_read_gbs": round(bw)}
    table = [("device", result["device"]), ("HBM read GB/s", str(result["hbm_read_gbs"]))]
    batches = [int(b) for b in args.batches.split(",") if b]
    for preset in args.presets.split(","):
        cfg = PRESETS[preset]
        context = args.prompt_tokens + args.decode_tokens + args.batch_steps + 16
        model, source = load(preset, args.weights, context)
        prefill, decode = batch1(model, args.prompt_tokens, args.decode_tokens)
        r: dict[str, Any] = {"weights": source, "prefill_tok_s": round(prefill, 1), "decode_tok_s": round(decode, 1)}
        r["decode_ceiling_tok_s"] = round(ceilings(cfg, bw, 1), 1)
        r["decode_of_ceiling"] = round(decode / r["decode_ceiling_tok_s"], 3)
        table += [(f"{preset} prefill tok/s", str(r["prefill_tok_s"])),
                  (f"{preset} decode tok/s (ceiling)", f"{r['decode_tok_s']} ({r['decode_ceiling_tok_s']}, "
                   f"{r['decode_of_ceiling']:.0%})")]  # fmt: skip
        for b in batches:
            agg, ceil = batched(model, b, 128, args.batch_steps), ceilings(cfg, bw, b)
            r[f"batch{b}_tok_s"], r[f"batch{b}_ceiling_tok_s"] = round(agg, 1), round(ceil, 1)
            table.append((f"{preset} batch {b} tok/s (ceiling)", f"{agg:.1f} ({ceil:.1f}, {agg / ceil:.0%})"))
        result[preset] = r
        del model
        torch.cuda.empty_cache()
    emit(table, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

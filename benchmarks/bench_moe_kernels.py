"""MoE expert kernels alone, on the real gpt-oss-20b expert shapes (H = I = 2880, 32 experts, top-4), random MXFP4.

    python -m benchmarks.bench_moe_kernels [--threads N] [--repeats R] [--prefill-tokens 512] [--no-reference]

* decode: one token through its 4 experts (the GEMV path). "cold" cycles through all 32 experts (8 distinct expert
  sets, 424 MB of packed weights, far beyond the 32 MiB L3), so every call streams its 4 experts from DRAM.
  GB/s = packed bytes read (blocks + scales of mlp1 and mlp2 of the 4 experts, 52.9 MB) / time. Measured for bf16
  activations (int16 GEMV, the production path) and fp32 (exact fp32 GEMV). "hot" repeats one expert (13.2 MB,
  L3-resident): the kernels' compute ceiling.
* prefill: T tokens with random distinct top-4 experts (the GEMM path), bf16 activations; tok/s for the MoE part.
* the same through ops/reference.py (dequantize + matmul), fewer repeats: it is slow.

Timings are wall-clock; the machine may be shared, so each is repeated and the best and the median are reported.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from benchmarks.common import cpu_model, emit, peak_rss_gb
from gptoss.ops import native, reference

E, H, I, K = 32, 2880, 2880, 4
LIMIT = 7.0


def make_weights(seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randint(0, 256, (E, 2 * I, H // 32, 16), dtype=torch.uint8, generator=g),
        torch.randint(118, 125, (E, 2 * I, H // 32), dtype=torch.uint8, generator=g),
        (torch.randn(E, 2 * I, generator=g) * 0.1).bfloat16(),
        torch.randint(0, 256, (E, H, I // 32, 16), dtype=torch.uint8, generator=g),
        torch.randint(118, 125, (E, H, I // 32), dtype=torch.uint8, generator=g),
        (torch.randn(E, H, generator=g) * 0.1).bfloat16(),
    )


def packed_bytes_per_expert(weights: tuple[torch.Tensor, ...]) -> int:
    b1, s1, _, b2, s2, _ = weights
    return sum(t[0].numel() for t in (b1, s1, b2, s2))


def timed(fn: Callable[[int], object], repeats: int, warmup: int = 2) -> list[float]:
    for i in range(warmup):
        fn(i)
    out = []
    for i in range(repeats):
        t = time.perf_counter()
        fn(warmup + i)
        out.append(time.perf_counter() - t)
    return out


def decode_calls(
    moe: Callable[..., torch.Tensor], weights: tuple[torch.Tensor, ...], dtype: torch.dtype, hot: bool
) -> Callable[[int], None]:
    x = torch.randn(1, H).to(dtype)
    w = torch.full((1, K if not hot else 1), 1.0 / K)

    def call(i: int) -> None:
        # cold: the next 4 experts, so 8 calls cover all 32; hot: expert 0 every time
        idx = torch.zeros(1, 1, dtype=torch.int64) if hot else (torch.arange(K) + K * i % E).view(1, K)
        moe(x, idx, w, *weights, LIMIT)

    return call


def prefill_call(
    moe: Callable[..., torch.Tensor], weights: tuple[torch.Tensor, ...], T: int
) -> Callable[[int], object]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, H, generator=g).bfloat16()
    idx = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(T)])
    w = torch.softmax(torch.randn(T, K, generator=g), dim=-1)
    return lambda i: moe(x, idx, w, *weights, LIMIT)


def summary(ts: list[float]) -> tuple[float, float]:
    return min(ts), statistics.median(ts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeats", type=int, default=40, help="decode calls per measurement (prefill: repeats // 8)")
    p.add_argument("--prefill-tokens", type=int, default=512)
    p.add_argument("--no-reference", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ok, why = native.available()
    if not ok:
        raise SystemExit(f"native kernels unavailable: {why}")

    weights = make_weights()
    per_expert = packed_bytes_per_expert(weights)
    token_bytes = K * per_expert
    res: dict[str, object] = {"benchmark": "moe_kernels", "cpu": cpu_model(), "threads": args.threads}
    res["kernels"] = {k: v for k, v in native.flavours().items() if k.startswith("moe")}  # GPTOSS_NATIVE_ISA picks
    res |= {"E": E, "H": H, "I": I, "k": K, "packed_bytes_per_token": token_bytes}
    table = []

    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        best, med = summary(timed(decode_calls(native.moe_experts, weights, dtype, hot=False), args.repeats, 8))
        res[f"decode_{name}_ms_best"], res[f"decode_{name}_ms_median"] = round(best * 1e3, 3), round(med * 1e3, 3)
        res[f"decode_{name}_gbps_best"] = round(token_bytes / best / 1e9, 2)
        res[f"decode_{name}_gbps_median"] = round(token_bytes / med / 1e9, 2)
        table.append((f"decode {name} cold (4 experts)", f"{best * 1e3:.2f} ms best, {med * 1e3:.2f} median; "
                      f"{token_bytes / best / 1e9:.1f} / {token_bytes / med / 1e9:.1f} GB/s"))  # fmt: skip
    best, med = summary(timed(decode_calls(native.moe_experts, weights, torch.bfloat16, hot=True), args.repeats, 4))
    res["decode_bf16_hot_1expert_gbps_best"] = round(per_expert / best / 1e9, 2)
    table.append(("decode bf16 hot (1 expert)", f"{best * 1e3:.2f} ms best; {per_expert / best / 1e9:.1f} GB/s"))

    T = args.prefill_tokens
    best, med = summary(timed(prefill_call(native.moe_experts, weights, T), max(3, args.repeats // 8), 1))
    res["prefill_tokens"] = T
    res["prefill_s_best"], res["prefill_s_median"] = round(best, 3), round(med, 3)
    res["prefill_tok_s_best"], res["prefill_tok_s_median"] = round(T / best, 1), round(T / med, 1)
    res["prefill_gflops_best"] = round(2 * T * K * 3 * H * I / best / 1e9, 1)
    table.append((f"prefill T={T}", f"{best:.3f} s best, {med:.3f} median; {T / best:.0f} / {T / med:.0f} tok/s"))

    if not args.no_reference:
        ref_decode = min(timed(decode_calls(reference.moe_experts, weights, torch.bfloat16, hot=False), 3, 1))
        ref_prefill = min(timed(prefill_call(reference.moe_experts, weights, T), 1, 0))
        res["reference_decode_ms"] = round(ref_decode * 1e3, 1)
        res["reference_prefill_tok_s"] = round(T / ref_prefill, 1)
        res["speedup_decode"] = round(ref_decode / (res["decode_bf16_ms_best"] / 1e3), 1)  # type: ignore[operator]
        res["speedup_prefill"] = round(ref_prefill / best, 1)
        table.append(("reference decode (bf16)", f"{ref_decode * 1e3:.1f} ms"))
        table.append((f"reference prefill T={T}", f"{ref_prefill:.2f} s; {T / ref_prefill:.1f} tok/s"))
    res["peak_rss_gb"] = round(peak_rss_gb(), 2)
    emit(table, res)


if __name__ == "__main__":
    main()

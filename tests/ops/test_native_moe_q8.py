"""The MoE GEMV on int8 activations (GPTOSS_MOE_ACT=int8 for bf16 models), every flavour against its twin.

The twin is an fp64 emulation of exactly what the kernels compute: each token's 32-blocks of x, and of the SwiGLU
outputs between the two matmuls, quantised to int8 like llama.cpp's Q8_0 (scale = max |block| / 127, fp32, round to
nearest even), then exact products with the decoded MXFP4 weights. The kernels differ from it only by fp32
accumulation and the bf16 output rounding, so the bound is tight: |native - twin| <= 2^-8 |twin| + 1e-4 M (M =
max |twin|) + slack, where slack is what a SwiGLU output within 1e-3 of a rounding midpoint could move the output by
if the kernel's fp32 value rounds it the other way (one step of its block's scale). A wrong nibble, lane, block
scale or offset correction moves outputs by O(M / sqrt(K)) or more. The distance to the unquantised fp32 reference
is checked too, loosely (<= 2^-8 |ref| + 0.1 M; int8 is up to ~4e-2 M off on the all-codes case, whose block scales
span 2^40): how much int8 costs end to end is what benchmarks/bench_act_quant.py measures.
"""

from __future__ import annotations

import pytest
import torch

from gptoss.mxfp4 import FP4_VALUES
from gptoss.ops import native, reference
from tests.ops.test_native_moe import GRID, LIMIT, SHAPES, Case, make_case

GEMV = 10**9  # native.GEMM_MIN_TOKENS: every expert on the GEMV path


@pytest.fixture(autouse=True)
def _setup(native_ext: None, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    monkeypatch.setattr(native, "MOE_ACT", "int8")
    monkeypatch.setattr(native, "GEMM_MIN_TOKENS", GEMV)


def q8(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 (..., K) -> (its int8-per-32-block values dequantised (fp64), as moe.c's quantize_block_q8; the step of
    the values within 1e-3 of a rounding midpoint, 0 elsewhere)."""
    b = v.float().reshape(*v.shape[:-1], -1, 32)
    amax = b.abs().amax(-1, keepdim=True)
    inv = torch.where(amax > 0, torch.tensor(127.0) / amax, torch.zeros_like(amax))
    scaled = b * inv
    q = torch.round(scaled).clamp(-127, 127)
    step = (amax / 127.0).double()
    tie = ((scaled - scaled.floor() - 0.5).abs() < 1e-3).double() * step
    return (q.double() * step).reshape(v.shape), tie.reshape(v.shape)


def deq(blocks: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    lut = torch.tensor(FP4_VALUES, dtype=torch.float64)
    vals = torch.stack([lut[(blocks & 15).long()], lut[(blocks >> 4).long()]], dim=-1).flatten(-2)
    return (vals * torch.pow(2.0, scales.double() - 127).unsqueeze(-1)).flatten(-2)


def twin(x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, weights: Case) -> tuple[torch.Tensor, torch.Tensor]:
    """(the emulated output, its slack from near-midpoint SwiGLU outputs); x is quantised bit-exactly as in C."""
    b1, s1, bias1, b2, s2, bias2 = weights
    out = torch.zeros(x.shape, dtype=torch.float64)
    slack = torch.zeros_like(out)
    xq, _ = q8(x)
    for t in range(x.shape[0]):
        for j in range(idx.shape[1]):
            e = int(idx[t, j])
            h = (deq(b1[e], s1[e]) @ xq[t] + bias1[e].double()).float()  # the kernel's SwiGLU runs in fp32
            a, tie = q8(reference.swiglu(h, LIMIT))
            w2 = deq(b2[e], s2[e])
            out[t] += float(w[t, j]) * (w2 @ a + bias2[e].double())
            slack[t] += float(w[t, j]) * (w2.abs() @ tie)
    return out, slack


def check(x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, weights: Case, what: str) -> None:
    xb = x.bfloat16()
    out = native.moe_experts(xb, idx, w, *weights, LIMIT).double()
    exp, slack = twin(xb.float(), idx, w, weights)
    M = exp.abs().max().item()
    d = (out - exp).abs()
    bad = d > 2.0**-8 * exp.abs() + 1e-4 * M + slack
    assert not bad.any(), f"{what}: {int(bad.sum())} off the twin, worst {d.max().item():.3g} (M={M:.3g})"
    ref = reference.moe_experts(xb.float(), idx, w, *weights, LIMIT).double()
    far = (out - ref).abs() > 2.0**-8 * ref.abs() + 0.1 * M
    assert not far.any(), f"{what}: {int(far.sum())} far from the fp32 reference"


@pytest.mark.parametrize(("E", "k", "T"), [c for c in GRID if c[2] <= 33])
def test_matches_twin(E: int, k: int, T: int, isa: str) -> None:
    H, I = SHAPES[GRID.index((E, k, T)) % len(SHAPES)]
    x, idx, w, weights = make_case(E, k, T, H, I, seed=E * 100 + k * 10 + T)
    check(x, idx, w, weights, f"E={E} k={k} T={T} H={H} I={I} {isa}")


@pytest.mark.parametrize(("H", "I"), [(32, 64), (160, 32), (96, 96), (288, 288), (1184, 544)])
def test_odd_and_even_block_counts(H: int, I: int, isa: str) -> None:
    # 1, 5, 3, 9, 37 blocks of x and 2, 1, 3, 9, 17 of the SwiGLU outputs: paired blocks and a last unpaired one;
    # 7 tokens on one expert: token groups of 4 and 3.
    x, idx, w, weights = make_case(3, 2, 7, H, I, seed=H + I)
    idx[:, 0] = 1
    idx[:, 1] = torch.where(idx[:, 1] == 1, 2, idx[:, 1])
    check(x, idx, w, weights, f"H={H} I={I} {isa}")


def test_every_fp4_code_and_byte(isa: str) -> None:
    E, H, I = 3, 256, 64
    x, idx, w, (b1, s1, bias1, b2, s2, bias2) = make_case(E, 2, 9, H, I, seed=5)
    b1 = (torch.arange(b1.numel()) % 256).to(torch.uint8).view_as(b1)
    b2 = (torch.arange(b2.numel()) * 7 % 256).to(torch.uint8).view_as(b2)
    s1 = (100 + torch.arange(s1.numel()) % 41).to(torch.uint8).view_as(s1)
    s2 = (100 + torch.arange(s2.numel()) % 41).to(torch.uint8).view_as(s2)
    check(x, idx, w, (b1, s1, bias1, b2, s2, bias2), f"all codes {isa}")


def test_block_extremes(isa: str) -> None:
    # A block of zeros (scale 0), one with a single large value (everything else rounds to 0), one all at +-max
    # (q = +-127: the largest products and offset corrections), and one of equal values.
    E, H, I = 2, 128, 64
    x, idx, w, weights = make_case(E, 1, 4, H, I, seed=13)
    x[0, :32] = 0
    x[1, 32:64] = 0
    x[1, 40] = 50.0
    x[2, 64:96] = torch.where(torch.arange(32) % 3 == 0, -9.0, 9.0)
    x[3, 96:] = 0.75
    check(x, idx, w, weights, f"extremes {isa}")


def test_fp32_models_stay_exact(isa: str) -> None:
    # int8 is for bf16 activations only: fp32 inputs keep the exact fp32 GEMV.
    x, idx, w, weights = make_case(4, 2, 5, 96, 64, seed=17)
    ref = reference.moe_experts(x, idx, w, *weights, LIMIT)
    out = native.moe_experts(x, idx, w, *weights, LIMIT)
    assert (out - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_non_finite_and_out_of_range_blocks_take_the_fp32_gemv(isa: str) -> None:
    # A block that cannot be quantised (inf, or a max beyond 2^100) sends its expert to the fp32 GEMV: inf propagates
    # to its token only; the huge block is computed exactly enough that the other tokens are unaffected.
    x, idx, w, weights = make_case(4, 2, 6, 64, 32, seed=8)
    x[3, 5] = float("inf")
    out = native.moe_experts(x.bfloat16(), idx, w, *weights, LIMIT)
    assert not torch.isfinite(out[3]).any()
    assert torch.isfinite(out[torch.arange(6) != 3]).all()


def test_switch_values(monkeypatch: pytest.MonkeyPatch) -> None:
    x, idx, w, weights = make_case(4, 2, 3, 64, 32, seed=1)
    xb = x.bfloat16()
    monkeypatch.setattr(native, "MOE_ACT", None)
    monkeypatch.setenv("GPTOSS_MOE_ACT", "int4")
    with pytest.raises(ValueError, match="GPTOSS_MOE_ACT='int4': expected 'int8' or 'int16'"):
        native.moe_experts(xb, idx, w, *weights, LIMIT)
    monkeypatch.delenv("GPTOSS_MOE_ACT")
    assert native.moe_act() == "int16"  # the default
    assert "int8" not in native.flavours()["moe_decode"]
    int16 = native.moe_experts(xb, idx, w, *weights, LIMIT)
    monkeypatch.setenv("GPTOSS_MOE_ACT", "int8")
    assert "int8" in native.flavours()["moe_decode"]
    int8 = native.moe_experts(xb, idx, w, *weights, LIMIT)
    assert not torch.equal(int8, int16)  # the switch reaches the kernels

# mypy: allow-untyped-defs
"""Triton kernels for the MoE experts on the packed MXFP4 weights (the GPU twin of reference.moe_experts).

The weights stay packed in memory: each program loads a tile of MXFP4 bytes and their E8M0 scales, decodes them in
registers (exact in bf16) and multiplies. Two kernels per layer: mlp1 (+ bias, clamped SwiGLU, gate/linear rows
interleaved) writes one activation row per (token, selected slot); mlp2 (+ bias, times the router weight) writes
one output row per (token, slot), and the k slots are summed after. Rows are picked two ways:
- decode (<= DECODE_MAX_TOKENS tokens): one program column per expert, which reads the routing table itself and
  runs all of its tokens at once, so every active expert's weights are read once and nothing is sorted;
- grouped (longer batches and prefill): the (token, slot) pairs are sorted by expert on the device and padded per
  expert to BLOCK_M rows; each program runs one BLOCK_M-row group of one expert (no host sync, fixed grid).
Plain Triton (tl.dot with bf16 or fp32 operands): Ampere and newer, nothing Hopper-only.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gptoss.mxfp4 import BLOCK
from gptoss.ops.reference import SWIGLU_ALPHA

DECODE_MAX_TOKENS = 16
DECODE_BLOCK_N = 32  # decode is bound by reading the weights: narrow tiles spread the few active experts over SMs
GROUPED_BLOCK_M = 64  # at most: smaller (down to 16) when an expert gets fewer tokens on average (a batched decode)
GROUPED_BLOCK_N = 64
BLOCK_K = 64


@triton.jit
def _fp4(code):
    """E2M1 code (0..15) -> its value in fp32: sign bit 3, exponent bits 1-2, mantissa bit 0."""
    c = code.to(tl.int32)
    e = (c >> 1) & 3
    m = (c & 1).to(tl.float32)
    mag = tl.where(e == 0, 0.5 * m, (1.0 + 0.5 * m) * tl.exp2((e - 1).to(tl.float32)))
    return tl.where((c & 8) != 0, -mag, mag)


@triton.jit
def dot(a, b, F32: tl.constexpr):
    """a @ b with fp32 accumulation: fp32 operands multiply exactly (not in TF32); bf16 ones on the tensor cores."""
    if F32:
        return tl.dot(a, b, input_precision="ieee")
    else:
        return tl.dot(a, b)


@triton.jit
def _mx_dot(acc, x_ptr, x_rows, x_ok, x_stride, w_blocks, w_scales, w_rows, w_ok, K,
            BK: tl.constexpr, DOT_F32: tl.constexpr):  # fmt: skip
    """acc (BM, BN) += X[x_rows, :K] @ W[w_rows, :K]^T, W in MXFP4 (blocks (rows, K/2) bytes, scales (rows, K/32)).
    A byte holds elements 2i (low nibble) and 2i+1 (high): even and odd columns of X go into two dots, so the
    nibbles never need interleaving."""
    half = tl.arange(0, BK // 2)
    for k0 in range(0, K, BK):
        byte = k0 // 2 + half  # (BK/2,) byte index within a row
        k_ok = byte < K // 2
        wm = w_ok[:, None] & k_ok[None, :]
        packed = tl.load(w_blocks + w_rows[:, None] * (K // 2) + byte[None, :], mask=wm, other=0)
        sc = tl.load(w_scales + w_rows[:, None] * (K // 32) + (byte // 16)[None, :], mask=wm, other=127)
        # 2**(s-127) in two steps, as mxfp4.dequantize: 2**128 alone overflows fp32.
        f = tl.exp2(sc.to(tl.float32) - 128.0)
        xm = x_ok[:, None] & k_ok[None, :]
        x_even = tl.load(x_ptr + x_rows[:, None] * x_stride + 2 * byte[None, :], mask=xm, other=0.0)
        x_odd = tl.load(x_ptr + x_rows[:, None] * x_stride + 2 * byte[None, :] + 1, mask=xm, other=0.0)
        if DOT_F32:
            x_even, x_odd = x_even.to(tl.float32), x_odd.to(tl.float32)
        w_lo = (_fp4(packed & 15) * f * 2.0).to(x_even.dtype)
        w_hi = (_fp4(packed >> 4) * f * 2.0).to(x_even.dtype)
        acc += dot(x_even, tl.trans(w_lo), DOT_F32)
        acc += dot(x_odd, tl.trans(w_hi), DOT_F32)
    return acc


@triton.jit
def _rows(
    idx, route, block_expert, T, E, KSEL: tl.constexpr, KP: tl.constexpr, BM: tl.constexpr, GROUPED: tl.constexpr
):
    """This program's expert and its BM rows: pair ids (token * KSEL + slot) and which rows are real."""
    if GROUPED:
        e = tl.load(block_expert + tl.program_id(0))
        pair = tl.load(route + tl.program_id(0) * BM + tl.arange(0, BM))
        ok = pair >= 0  # padding, and every row of the blocks past the last expert (e == E)
        pair = tl.maximum(pair, 0)
    else:
        e = tl.program_id(0)
        t = tl.arange(0, BM)
        s = tl.arange(0, KP)
        sel = tl.load(idx + t[:, None] * KSEL + s[None, :], mask=(t[:, None] < T) & (s[None, :] < KSEL), other=-1)
        hit = sel == e
        ok = tl.sum(hit.to(tl.int32), axis=1) > 0
        pair = t * KSEL + tl.sum(tl.where(hit, s[None, :], 0), axis=1)
    return e, pair, ok


@triton.jit
def _moe_mlp1(x, idx, route, block_expert, blocks, scales, bias, act, T, E, H, I, limit, alpha,
              KSEL: tl.constexpr, KP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
              GROUPED: tl.constexpr, DOT_F32: tl.constexpr):  # fmt: skip
    e, pair, ok = _rows(idx, route, block_expert, T, E, KSEL, KP, BM, GROUPED)
    if tl.max(ok.to(tl.int32), axis=0) > 0:
        j = tl.program_id(1) * BN + tl.arange(0, BN)  # activation columns; weight rows 2j (gate) and 2j+1 (linear)
        j_ok = j < I
        eb = e.to(tl.int64)
        wb, ws = blocks + eb * (2 * I) * (H // 2), scales + eb * (2 * I) * (H // 32)
        tok = pair // KSEL
        g = _mx_dot(tl.zeros((BM, BN), tl.float32), x, tok, ok, H, wb, ws, 2 * j, j_ok, H, BK, DOT_F32)
        lin = _mx_dot(tl.zeros((BM, BN), tl.float32), x, tok, ok, H, wb, ws, 2 * j + 1, j_ok, H, BK, DOT_F32)
        g += tl.load(bias + eb * 2 * I + 2 * j, mask=j_ok, other=0.0).to(tl.float32)[None, :]
        lin += tl.load(bias + eb * 2 * I + 2 * j + 1, mask=j_ok, other=0.0).to(tl.float32)[None, :]
        g = tl.minimum(g, limit)
        lin = tl.minimum(tl.maximum(lin, -limit), limit)
        h = g * tl.sigmoid(alpha * g) * (lin + 1.0)
        tl.store(act + pair[:, None] * I + j[None, :], h.to(act.dtype.element_ty), mask=ok[:, None] & j_ok[None, :])


@triton.jit
def _moe_mlp2(act, idx, route, block_expert, wts, blocks, scales, bias, out, T, E, H, I,
              KSEL: tl.constexpr, KP: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
              GROUPED: tl.constexpr, DOT_F32: tl.constexpr):  # fmt: skip
    e, pair, ok = _rows(idx, route, block_expert, T, E, KSEL, KP, BM, GROUPED)
    if tl.max(ok.to(tl.int32), axis=0) > 0:
        n = tl.program_id(1) * BN + tl.arange(0, BN)
        n_ok = n < H
        eb = e.to(tl.int64)
        wb, ws = blocks + eb * H * (I // 2), scales + eb * H * (I // 32)
        y = _mx_dot(tl.zeros((BM, BN), tl.float32), act, pair, ok, I, wb, ws, n, n_ok, I, BK, DOT_F32)
        y += tl.load(bias + eb * H + n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
        y *= tl.load(wts + pair, mask=ok, other=0.0).to(tl.float32)[:, None]
        tl.store(out + pair[:, None] * H + n[None, :], y, mask=ok[:, None] & n_ok[None, :])


def dot_f32(x: torch.Tensor) -> bool:
    """Whether tl.dot gets fp32 operands: for fp32 models, and under TRITON_INTERPRET, whose dot misreads bf16
    operands (triton 3.9); the widening is exact there, so the interpreter checks the same math."""
    return x.dtype == torch.float32 or bool(triton.knobs.runtime.interpret)


def route_by_expert(expert_idx: torch.Tensor, num_experts: int, block_m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, k) expert ids -> (route, block_expert): route (NB * block_m,) int32 holds the pair ids (token * k + slot)
    sorted by expert, each expert's run padded with -1 to a multiple of block_m; block_expert (NB,) int32 is each
    block's expert (num_experts past the last). NB is a bound fixed by the shapes, and nothing here syncs with the
    host (no bincount, no nonzero), so a CUDA graph can hold it."""
    flat = expert_idx.reshape(-1).to(torch.int64)
    P, dev = flat.numel(), flat.device
    sorted_e, order = torch.sort(flat, stable=True)
    bounds = torch.searchsorted(sorted_e, torch.arange(num_experts + 1, device=dev))  # (E+1,) run starts
    counts = bounds[1:] - bounds[:-1]
    padded = (counts + block_m - 1) // block_m * block_m
    pend = torch.cumsum(padded, 0)
    dest = (pend - padded)[sorted_e] + torch.arange(P, device=dev) - bounds[:-1][sorted_e]
    nb = -(-P // block_m) + min(num_experts, P)
    route = torch.full((nb * block_m,), -1, dtype=torch.int32, device=dev)
    route[dest] = order.to(torch.int32)
    block_expert = torch.searchsorted(pend, torch.arange(nb, device=dev) * block_m, right=True).to(torch.int32)
    return route, block_expert


def moe_experts(
    x: torch.Tensor,  # (T, H) normed activations
    expert_idx: torch.Tensor,  # (T, k) int64 selected experts
    expert_weights: torch.Tensor,  # (T, k) softmaxed router weights
    mlp1_blocks: torch.Tensor,  # (E, 2I, H/32, 16) uint8
    mlp1_scales: torch.Tensor,  # (E, 2I, H/32) uint8
    mlp1_bias: torch.Tensor,  # (E, 2I)
    mlp2_blocks: torch.Tensor,  # (E, H, I/32, 16) uint8
    mlp2_scales: torch.Tensor,  # (E, H, I/32) uint8
    mlp2_bias: torch.Tensor,  # (E, H)
    swiglu_limit: float,
) -> torch.Tensor:  # (T, H) in x.dtype: sum_k w_k * (mlp2_e(swiglu(mlp1_e(x))) + b2_e)
    T, H = x.shape
    E, I2 = mlp1_blocks.shape[0], mlp1_blocks.shape[1]
    I, k = I2 // 2, expert_idx.shape[1]
    if H % BLOCK or I % BLOCK or I2 % 2:
        raise ValueError(f"H={H} and I={I} must be multiples of {BLOCK}")
    for name, t, shape in (
        ("mlp1_blocks", mlp1_blocks, (E, I2, H // BLOCK, BLOCK // 2)),
        ("mlp1_scales", mlp1_scales, (E, I2, H // BLOCK)),
        ("mlp2_blocks", mlp2_blocks, (E, H, I // BLOCK, BLOCK // 2)),
        ("mlp2_scales", mlp2_scales, (E, H, I // BLOCK)),
    ):
        if t.dtype != torch.uint8 or t.shape != shape or not t.is_contiguous():
            raise ValueError(f"{name}: expected contiguous uint8 {shape}, got {t.dtype} {tuple(t.shape)}")
    if expert_idx.shape != (T, k) or expert_weights.shape != (T, k):
        raise ValueError(f"expert_idx {tuple(expert_idx.shape)} / expert_weights {tuple(expert_weights.shape)}")
    if mlp1_bias.shape != (E, I2) or mlp2_bias.shape != (E, H):
        raise ValueError(f"mlp1_bias {tuple(mlp1_bias.shape)} / mlp2_bias {tuple(mlp2_bias.shape)}")
    xc = (x if x.dtype in (torch.float32, torch.bfloat16) else x.float()).contiguous()
    idx = expert_idx.to(torch.int32).contiguous()
    wts = expert_weights.to(torch.float32).contiguous()
    act = torch.empty(T * k, I, dtype=xc.dtype, device=x.device)  # bf16 models multiply bf16 x bf16 on the GPU
    out = torch.empty(T * k, H, dtype=torch.float32, device=x.device)  # every (token, slot) row is written once
    kp = triton.next_power_of_2(k)
    if T <= DECODE_MAX_TOKENS:
        route = block_expert = idx  # unused by the decode rows
        bm, bn, grid_m = DECODE_MAX_TOKENS, DECODE_BLOCK_N, E
        grouped = False
    else:
        per_expert = -(-T * k // E)
        bm, bn, grouped = min(GROUPED_BLOCK_M, max(16, triton.next_power_of_2(per_expert))), GROUPED_BLOCK_N, True
        route, block_expert = route_by_expert(expert_idx, E, bm)
        grid_m = block_expert.numel()
    meta = {"KSEL": k, "KP": kp, "BM": bm, "BN": bn, "BK": BLOCK_K, "GROUPED": grouped, "DOT_F32": dot_f32(xc)}
    _moe_mlp1[(grid_m, triton.cdiv(I, bn))](
        xc,
        idx,
        route,
        block_expert,
        mlp1_blocks,
        mlp1_scales,
        mlp1_bias,
        act,
        T,
        E,
        H,
        I,
        float(swiglu_limit),
        SWIGLU_ALPHA,
        **meta,
    )
    _moe_mlp2[(grid_m, triton.cdiv(H, bn))](
        act, idx, route, block_expert, wts, mlp2_blocks, mlp2_scales, mlp2_bias, out, T, E, H, I, **meta
    )
    return out.view(T, k, H).sum(dim=1).to(x.dtype)

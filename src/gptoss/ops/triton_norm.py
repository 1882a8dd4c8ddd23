# mypy: allow-untyped-defs
"""Triton RMSNorm and rotary embedding (the GPU twins of reference.rms_norm and reference.rope): one kernel each
instead of ~8 small torch ops, same math and rounding points (fp32 inside, one rounding to the output dtype)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rms_norm(x, scale, y, H, x_stride, eps, BH: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    c = tl.arange(0, BH)
    ok = c < H
    t = tl.load(x + row * x_stride + c, mask=ok, other=0.0).to(tl.float32)
    r = tl.rsqrt(tl.sum(t * t, axis=0) / H + eps)
    s = tl.load(scale + c, mask=ok, other=0.0).to(tl.float32)
    tl.store(y + row * H + c, (t * r * s).to(y.dtype.element_ty), mask=ok)


def rms_norm(x: torch.Tensor, scale: torch.Tensor, eps: float) -> torch.Tensor:  # (..., H) in x.dtype
    H = x.shape[-1] if x.dim() else 0
    if x.dim() == 0 or scale.shape != (H,):
        raise ValueError(f"rms_norm: x {tuple(x.shape)} and scale {tuple(scale.shape)}: expected (..., H) and (H,)")
    xc = x.reshape(-1, H)
    if xc.stride(1) != 1:
        xc = xc.contiguous()
    y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if xc.shape[0] and H:
        _rms_norm[(xc.shape[0],)](xc, scale, y, H, xc.stride(0), float(eps), BH=triton.next_power_of_2(H))
    return y


@triton.jit
def _rope(x, cos, sin, y, heads, x_stride, HALF: tl.constexpr, BH: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    h = tl.program_id(1)
    j = tl.arange(0, BH)
    ok = j < HALF
    base = x + t * x_stride + h * 2 * HALF
    x1 = tl.load(base + j, mask=ok, other=0.0).to(tl.float32)
    x2 = tl.load(base + HALF + j, mask=ok, other=0.0).to(tl.float32)
    c = tl.load(cos + t * HALF + j, mask=ok, other=0.0).to(tl.float32)
    s = tl.load(sin + t * HALF + j, mask=ok, other=0.0).to(tl.float32)
    out = y + (t * heads + h) * 2 * HALF
    tl.store(out + j, (x1 * c - x2 * s).to(y.dtype.element_ty), mask=ok)
    tl.store(out + HALF + j, (x2 * c + x1 * s).to(y.dtype.element_ty), mask=ok)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:  # (T, heads, D) in x.dtype
    if x.dim() != 3 or x.shape[2] % 2 or cos.shape != (x.shape[0], x.shape[2] // 2) or sin.shape != cos.shape:
        raise ValueError(
            f"rope: x {tuple(x.shape)}, cos {tuple(cos.shape)}, sin {tuple(sin.shape)}: expected (T, heads, D) with "
            "D even and (T, D/2) angles"
        )
    T, heads, D = x.shape
    # Rows may sit apart (a view into a wider projection output); inside a row, heads must be packed.
    xc = x if x.stride(2) == 1 and x.stride(1) == D else x.contiguous()
    c, s = cos.contiguous(), sin.contiguous()
    y = torch.empty(T, heads, D, dtype=x.dtype, device=x.device)
    if x.numel():
        _rope[(T, heads)](xc, c, s, y, heads, xc.stride(0), HALF=D // 2, BH=triton.next_power_of_2(D // 2))
    return y

"""MXFP4 (OCP microscaling FP4) encoding of the MoE expert weights, as stored in the official checkpoints.

A block is 32 E2M1 values packed two per byte (low nibble = even element) plus one shared E8M0 scale byte
(`value = fp4 * 2**(scale - 127)`). Rows are blocked along their last (input) dimension, so a weight of logical
shape [..., N, K] is stored as blocks [..., N, K/32, 16] uint8 and scales [..., N, K/32] uint8.
"""

from __future__ import annotations

import functools

import torch

BLOCK = 32
FP4_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
SCALE_BIAS = 127


@functools.cache
def _byte_table() -> torch.Tensor:
    # One lookup per byte instead of two per nibble: row b holds (value of low nibble, value of high nibble).
    lut = torch.tensor(FP4_VALUES, dtype=torch.float32)
    b = torch.arange(256)
    return torch.stack([lut[b & 0x0F], lut[b >> 4]], dim=1)  # (256, 2) fp32


def dequantize(blocks: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """blocks [..., G, 16] uint8 + scales [..., G] uint8 -> values [..., G*32] in `dtype` (exact in bf16/fp32)."""
    if blocks.dtype != torch.uint8 or scales.dtype != torch.uint8:
        raise TypeError(f"MXFP4 blocks/scales must be uint8, got {blocks.dtype}/{scales.dtype}")
    if blocks.shape[:-1] != scales.shape or blocks.shape[-1] != BLOCK // 2:
        raise ValueError(f"MXFP4 blocks {tuple(blocks.shape)} do not match scales {tuple(scales.shape)}")
    table = _byte_table().to(blocks.device)  # a no-op on the CPU
    # index_select with int32 indices is ~3x faster than advanced indexing with int64 on CPU.
    vals = torch.index_select(table, 0, blocks.reshape(-1).to(torch.int32)).view(*blocks.shape[:-1], BLOCK)
    # fp4 * 2**k is exact in fp32 for every E8M0 scale (the cast to bf16 too: same exponent range). Two steps,
    # because 2**128 (scale 255) alone overflows fp32 although 0.5 * 2**128 does not.
    vals.mul_(torch.exp2(scales.float() - SCALE_BIAS - 1).unsqueeze(-1)).mul_(2.0)  # (..., G, 32)
    return vals.reshape(*scales.shape[:-1], scales.shape[-1] * BLOCK).to(dtype)


def quantize(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """values [..., K] (K % 32 == 0) -> (blocks [..., K/32, 16] uint8, scales [..., K/32] uint8).

    Per block the scale is the smallest power of two that brings the largest magnitude within FP4's range (6.0),
    then each value takes the nearest FP4 code (ties to the lower code index). Dequantized values quantize back to
    the same values (not always the same codes: a block whose largest code is 3.0 gets a smaller scale).
    """
    if w.shape[-1] % BLOCK:
        raise ValueError(f"last dimension {w.shape[-1]} is not a multiple of {BLOCK}")
    x = w.float().reshape(*w.shape[:-1], w.shape[-1] // BLOCK, BLOCK)  # (..., G, 32)
    amax = x.abs().amax(dim=-1)  # (..., G)
    exp = torch.ceil(torch.log2(amax.clamp_min(2.0**-126) / 6.0)).clamp(-SCALE_BIAS, 255 - SCALE_BIAS)
    scaled = x / torch.exp2(exp).unsqueeze(-1)
    lut = torch.tensor(FP4_VALUES)
    codes = (scaled.unsqueeze(-1) - lut).abs().argmin(dim=-1).to(torch.uint8)  # (..., G, 32)
    blocks = codes[..., 0::2] | (codes[..., 1::2] << 4)
    scales = (exp + SCALE_BIAS).to(torch.uint8)
    return blocks.contiguous(), scales.contiguous()

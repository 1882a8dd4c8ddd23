"""The GPU kernel set, with the names and signatures of gptoss.ops (Transformer(kernels=gptoss.gpu.ops)): triton
for the MoE experts, attention (and paged_attention, which the batched engine's cache calls with its block tables),
RMSNorm and rotary; cuBLAS (torch) for the dense bf16 projections."""

from __future__ import annotations

from gptoss.ops.reference import linear, swiglu
from gptoss.ops.triton_attention import attention, paged_attention
from gptoss.ops.triton_moe import moe_experts
from gptoss.ops.triton_norm import rms_norm, rope

BACKEND = "triton"
__all__ = ["BACKEND", "attention", "linear", "moe_experts", "paged_attention", "rms_norm", "rope", "swiglu"]

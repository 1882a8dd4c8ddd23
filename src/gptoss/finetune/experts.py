"""The MoE experts with LoRA on their frozen, packed MXFP4 weights: a custom autograd function.

Plain autograd through ops.reference.moe_experts would keep every routed expert's dequantized weights alive until
the backward pass (the matmul saves its weight): all of them, for every layer. This function saves only its inputs
and, in the backward pass, recomputes one expert at a time (dequantize, run the MLP with the low-rank s * B_e A_e
term beside the frozen product under a local autograd graph, take that expert's gradients, free it), so at most one
expert's dense weights exist at once. For bf16 models on CPUs with a fast bf16 GEMM (AMX) the frozen products run in
bf16 on weights dequantized natively (exact), as inference does; fp32 models stay fp32.
Gradients flow to the activations, the routing weights (hence the router) and the LoRA factors; the MXFP4 weights
and the expert biases stay frozen. Unadapted experts take their forward value from the inference op (the native
kernels when built): only the backward pass needs plain torch. Tested against autograd on the dequantized weights
(tests/finetune).
"""

from __future__ import annotations

from typing import Any

import torch

from gptoss import mxfp4
from gptoss.finetune.objective import inference_moe_experts
from gptoss.model import MoEWeights
from gptoss.ops import native
from gptoss.ops.reference import SWIGLU_ALPHA, swiglu

Pair = tuple[torch.Tensor, torch.Tensor]


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype of the recomputed expert GEMMs: bf16 for a bf16 model on a CPU whose bf16 GEMM is the fast one
    (AMX: ~5x fp32), as the inference kernels do; fp32 otherwise (fp32 models stay exact)."""
    if x.dtype == torch.bfloat16 and x.is_cpu and native.built() and native.linear_gemm_bf16():
        return torch.bfloat16
    return torch.float32


def dense_weights(m: MoEWeights, e: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Expert e's (mlp1 (2I, H), mlp2 (H, I)) dequantized in `dtype` (exact in bf16 too)."""
    if dtype == torch.bfloat16:
        return (
            native.mxfp4_to_bf16(m.mlp1_blocks[e], m.mlp1_scales[e]),
            native.mxfp4_to_bf16(m.mlp2_blocks[e], m.mlp2_scales[e]),
        )
    w1 = mxfp4.dequantize(m.mlp1_blocks[e], m.mlp1_scales[e]).to(dtype)
    return w1, mxfp4.dequantize(m.mlp2_blocks[e], m.mlp2_scales[e]).to(dtype)


def _project(x: torch.Tensor, w: torch.Tensor, lora: Pair | None, scaling: float) -> torch.Tensor:
    """x @ (w + s B A)^T in fp32, the frozen product in w's dtype and the LoRA term low-rank in fp32 (adding
    s B A to a bf16 w would round most of a small update away)."""
    y = (x.to(w.dtype) @ w.T).float()
    if lora is not None:
        a, b = lora
        y = y + ((x.float() @ a.float().T) @ b.float().T) * scaling
    return y


def expert_mlp(
    x: torch.Tensor,  # (n, H) fp32 tokens routed to expert e
    e: int,
    m: MoEWeights,
    up: Pair | None,  # expert e's LoRA factors (A (r, H), B (2I, r)) of mlp1, or None
    down: Pair | None,  # of mlp2: (A (r, I), B (H, r)), or None
    scaling: float,
    limit: float,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:  # (n, H) fp32
    w1, w2 = dense_weights(m, e, dtype)
    h = swiglu(_project(x, w1, up, scaling) + m.mlp1_bias[e].float(), limit)  # (n, I)
    return _project(h, w2, down, scaling) + m.mlp2_bias[e].float()


def swiglu_backward(pre: torch.Tensor, dh: torch.Tensor, limit: float) -> torch.Tensor:
    """d swiglu(pre) / d pre applied to dh: (n, 2I) from pre (n, 2I) and dh (n, I), fp32. Written out because
    autograd's dozen elementwise passes over (n, 2I) were a large part of the backward pass. Clamps pass the
    gradient where the input is within the bound, bound included (as torch.clamp's backward does)."""
    xg, xl = pre[:, 0::2], pre[:, 1::2]
    g, lin = xg.clamp(max=limit), xl.clamp(min=-limit, max=limit)
    s = torch.sigmoid(SWIGLU_ALPHA * g)
    out = torch.empty_like(pre)
    out[:, 0::2] = dh * (lin + 1) * s * (1 + SWIGLU_ALPHA * g * (1 - s)) * (xg <= limit)
    out[:, 1::2] = dh * g * s * ((xl >= -limit) & (xl <= limit))
    return out


def frozen_backward(
    x: torch.Tensor,  # (T, H)
    w: torch.Tensor,  # (T, k) routing weights
    idx: torch.Tensor,  # (T, k)
    grad: torch.Tensor,  # (T, H) upstream gradient
    m: MoEWeights,
    limit: float,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:  # (d x (T, H), d w (T, k)), fp32
    """The gradients of sum_k w_k expert_k(x) when no expert is adapted, written out: per expert, two GEMMs
    recompute it and two take the gradient back through it (no autograd graph, nothing kept between experts)."""
    gx = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
    gw = torch.zeros(w.shape, dtype=torch.float32, device=x.device)
    xs = x.detach().to(dtype)
    for e, tok, slot in _routes(idx):
        w1, w2 = dense_weights(m, e, dtype)
        pre = (xs[tok] @ w1.T).float() + m.mlp1_bias[e].float()  # (n, 2I)
        o = (swiglu(pre, limit).to(dtype) @ w2.T).float() + m.mlp2_bias[e].float()  # (n, H)
        ge = grad[tok].float()
        gw[tok, slot] = (ge * o).sum(dim=1)
        dh = ((ge * w[tok, slot].float().unsqueeze(1)).to(dtype) @ w2).float()  # (n, I)
        gx.index_add_(0, tok, (swiglu_backward(pre, dh, limit).to(dtype) @ w1).float())
    return gx, gw


def expert_factors(a: torch.Tensor, b: torch.Tensor, e: int, num_experts: int) -> Pair:
    """Expert e's (A_e (r, in), B_e (out, r)) from PEFT's stacked layouts (views)."""
    r = a.shape[0] // num_experts
    return a.view(num_experts, r, a.shape[1])[e], b.view(b.shape[0], r, num_experts)[:, :, e]


def _factors(pair: Pair | None, e: int, num_experts: int) -> Pair | None:
    return None if pair is None else expert_factors(pair[0], pair[1], e, num_experts)


def _routes(idx: torch.Tensor) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """(expert, token indices, top-k slots) for every expert some token picked."""
    out = []
    for e in torch.unique(idx).tolist():
        tok, slot = (idx == e).nonzero(as_tuple=True)
        out.append((int(e), tok, slot))
    return out


class LoraExperts(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,  # (T, H)
        w: torch.Tensor,  # (T, k) routing weights
        a1: torch.Tensor | None,
        b1: torch.Tensor | None,
        a2: torch.Tensor | None,
        b2: torch.Tensor | None,
        idx: torch.Tensor,  # (T, k)
        m: MoEWeights,
        scaling: float,
        limit: float,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, w, a1, b1, a2, b2, idx)
        ctx.m, ctx.scaling, ctx.limit = m, scaling, limit
        up = None if a1 is None or b1 is None else (a1, b1)
        down = None if a2 is None or b2 is None else (a2, b2)
        if up is None and down is None and x.is_cpu:  # frozen experts: the inference op's value (native kernels)
            return inference_moe_experts(
                x, idx, w, m.mlp1_blocks, m.mlp1_scales, m.mlp1_bias, m.mlp2_blocks, m.mlp2_scales, m.mlp2_bias, limit
            )
        E, dtype = m.mlp1_blocks.shape[0], compute_dtype(x)
        out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        for e, tok, slot in _routes(idx):
            o = expert_mlp(x[tok].float(), e, m, _factors(up, e, E), _factors(down, e, E), scaling, limit, dtype)
            out.index_add_(0, tok, o * w[tok, slot].float().unsqueeze(1))
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w, a1, b1, a2, b2, idx = ctx.saved_tensors
        m: MoEWeights = ctx.m
        E, dtype = m.mlp1_blocks.shape[0], compute_dtype(x)
        if all(t is None for t in (a1, b1, a2, b2)):
            gx, gw = frozen_backward(x, w, idx, grad, m, ctx.limit, dtype)
            return gx.to(x.dtype), gw.to(w.dtype), None, None, None, None, None, None, None, None
        gx, gw = torch.zeros_like(x, dtype=torch.float32), torch.zeros_like(w, dtype=torch.float32)
        grads = [None if t is None else torch.zeros_like(t) for t in (a1, b1, a2, b2)]
        for e, tok, slot in _routes(idx):
            xe = x[tok].detach().float().requires_grad_()
            we = w[tok, slot].detach().float().requires_grad_()
            leaves = [_leaf(t, e, E, k % 2 == 1) for k, t in enumerate((a1, b1, a2, b2))]
            with torch.enable_grad():
                up = None if leaves[0] is None or leaves[1] is None else (leaves[0], leaves[1])
                down = None if leaves[2] is None or leaves[3] is None else (leaves[2], leaves[3])
                o = expert_mlp(xe, e, m, up, down, ctx.scaling, ctx.limit, dtype)
                out = o * we.unsqueeze(1)
                inputs = [xe, we, *[t for t in leaves if t is not None]]
                got = torch.autograd.grad(out, inputs, grad[tok].float())
            gx.index_add_(0, tok, got[0])
            gw[tok, slot] = got[1]
            rest = iter(got[2:])
            for k, g in enumerate(grads):
                if g is not None:
                    _expert_view(g, e, E, k % 2 == 1).add_(next(rest))
        ga1, gb1, ga2, gb2 = grads
        return gx.to(x.dtype), gw.to(w.dtype), ga1, gb1, ga2, gb2, None, None, None, None


def _expert_view(t: torch.Tensor, e: int, E: int, is_b: bool) -> torch.Tensor:
    """Expert e's slice of a stacked factor (a view: writes land in t)."""
    if is_b:
        return t.view(t.shape[0], t.shape[1] // E, E)[:, :, e]  # (out, r)
    return t.view(E, t.shape[0] // E, t.shape[1])[e]  # (r, in)


def _leaf(t: torch.Tensor | None, e: int, E: int, is_b: bool) -> torch.Tensor | None:
    return None if t is None else _expert_view(t.detach(), e, E, is_b).float().clone().requires_grad_()


def lora_moe_experts(
    x: torch.Tensor,
    idx: torch.Tensor,
    w: torch.Tensor,
    m: MoEWeights,
    up: Pair | None,
    down: Pair | None,
    scaling: float,
    limit: float,
) -> torch.Tensor:
    """sum_k w_k * expert_k(x) with expert weights W + s * B_e A_e; the same value as ops.reference.moe_experts
    on the merged weights."""
    a1, b1 = up if up is not None else (None, None)
    a2, b2 = down if down is not None else (None, None)
    out: torch.Tensor = LoraExperts.apply(x, w, a1, b1, a2, b2, idx, m, scaling, limit)
    return out

"""The MoE experts with LoRA on their frozen, packed MXFP4 weights: a custom autograd function.

Plain autograd through ops.reference.moe_experts would keep every routed expert's dequantized weights alive until
the backward pass (the matmul saves its weight): all of them, for every layer. This function saves only its inputs
and, in the backward pass, recomputes one expert at a time (dequantize, add s * B_e A_e, run the MLP under a local
autograd graph, take that expert's gradients, free it), so at most one expert's dense weights exist at once.
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
from gptoss.ops.reference import swiglu

Pair = tuple[torch.Tensor, torch.Tensor]


def expert_mlp(
    x: torch.Tensor,  # (n, H) fp32 tokens routed to expert e
    e: int,
    m: MoEWeights,
    d1: torch.Tensor | None,  # (2I, H) LoRA update of mlp1, or None
    d2: torch.Tensor | None,  # (H, I) LoRA update of mlp2, or None
    limit: float,
) -> torch.Tensor:  # (n, H) fp32
    w1 = mxfp4.dequantize(m.mlp1_blocks[e], m.mlp1_scales[e])  # (2I, H)
    w1 = w1 if d1 is None else w1 + d1
    h = swiglu(x @ w1.T + m.mlp1_bias[e].float(), limit)  # (n, I)
    w2 = mxfp4.dequantize(m.mlp2_blocks[e], m.mlp2_scales[e])  # (H, I)
    w2 = w2 if d2 is None else w2 + d2
    return h @ w2.T + m.mlp2_bias[e].float()


def expert_factors(a: torch.Tensor, b: torch.Tensor, e: int, num_experts: int) -> Pair:
    """Expert e's (A_e (r, in), B_e (out, r)) from PEFT's stacked layouts (views)."""
    r = a.shape[0] // num_experts
    return a.view(num_experts, r, a.shape[1])[e], b.view(b.shape[0], r, num_experts)[:, :, e]


def _factors(pair: Pair | None, e: int, num_experts: int) -> Pair | None:
    return None if pair is None else expert_factors(pair[0], pair[1], e, num_experts)


def _delta(f: Pair | None, scaling: float) -> torch.Tensor | None:
    return None if f is None else (f[1].float() @ f[0].float()) * scaling  # (out, in)


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
        E = m.mlp1_blocks.shape[0]
        out = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        for e, tok, slot in _routes(idx):
            d1, d2 = _delta(_factors(up, e, E), scaling), _delta(_factors(down, e, E), scaling)
            o = expert_mlp(x[tok].float(), e, m, d1, d2, limit)
            out.index_add_(0, tok, o * w[tok, slot].float().unsqueeze(1))
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w, a1, b1, a2, b2, idx = ctx.saved_tensors
        m: MoEWeights = ctx.m
        E = m.mlp1_blocks.shape[0]
        gx, gw = torch.zeros_like(x, dtype=torch.float32), torch.zeros_like(w, dtype=torch.float32)
        grads = [None if t is None else torch.zeros_like(t) for t in (a1, b1, a2, b2)]
        for e, tok, slot in _routes(idx):
            xe = x[tok].detach().float().requires_grad_()
            we = w[tok, slot].detach().float().requires_grad_()
            leaves = [_leaf(t, e, E, k % 2 == 1) for k, t in enumerate((a1, b1, a2, b2))]
            with torch.enable_grad():
                up = None if leaves[0] is None or leaves[1] is None else (leaves[0], leaves[1])
                down = None if leaves[2] is None or leaves[3] is None else (leaves[2], leaves[3])
                o = expert_mlp(xe, e, m, _delta(up, ctx.scaling), _delta(down, ctx.scaling), ctx.limit)
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

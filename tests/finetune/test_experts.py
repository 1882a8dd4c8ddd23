"""The experts' custom autograd function against plain autograd on the dequantized (merged) weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import gptoss
from gptoss import mxfp4
from gptoss.finetune.experts import lora_moe_experts, swiglu_backward
from gptoss.finetune.lora import LoraAdapter, LoraConfig, expert_delta
from gptoss.finetune.objective import differentiable_ops, loss_sum
from gptoss.model import MoEWeights
from gptoss.ops import reference
from tests.conftest import PARITY_CONFIGS


def random_moe(E: int, H: int, I: int, g: torch.Generator) -> MoEWeights:
    def packed(rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
        return mxfp4.quantize(torch.randn(E, rows, cols, generator=g) / cols**0.5)

    b1, s1 = packed(2 * I, H)
    b2, s2 = packed(H, I)
    return MoEWeights(
        norm=torch.ones(H), router_w=torch.zeros(E, H), router_b=torch.zeros(E),
        mlp1_blocks=b1, mlp1_scales=s1, mlp1_bias=torch.randn(E, 2 * I, generator=g) * 0.1,
        mlp2_blocks=b2, mlp2_scales=s2, mlp2_bias=torch.randn(E, H, generator=g) * 0.1,
    )  # fmt: skip


def dense_reference(
    x: torch.Tensor, idx: torch.Tensor, w: torch.Tensor, m: MoEWeights, factors: list[torch.Tensor], s: float
) -> torch.Tensor:
    """The same MoE with every expert's merged weight materialised and differentiated by autograd."""
    E = m.mlp1_blocks.shape[0]
    out = torch.zeros(x.shape)
    for e in range(E):
        tok, slot = (idx == e).nonzero(as_tuple=True)
        w1 = mxfp4.dequantize(m.mlp1_blocks[e], m.mlp1_scales[e]) + expert_delta(factors[0], factors[1], e, E, s)
        w2 = mxfp4.dequantize(m.mlp2_blocks[e], m.mlp2_scales[e]) + expert_delta(factors[2], factors[3], e, E, s)
        h = reference.swiglu(x[tok] @ w1.T + m.mlp1_bias[e], 3.0)
        out = out.index_add(0, tok, (h @ w2.T + m.mlp2_bias[e]) * w[tok, slot].unsqueeze(1))
    return out


@pytest.mark.parametrize("T", [1, 13])
def test_gradients_equal_autograd_on_dequantized_weights(T: int) -> None:
    E, H, I, r, k, s = 6, 64, 32, 3, 2, 1.5
    g = torch.Generator().manual_seed(T)
    m = random_moe(E, H, I, g)
    x = torch.randn(T, H, generator=g).requires_grad_()
    logits = torch.randn(T, E, generator=g).requires_grad_()
    idx = torch.topk(logits, k, dim=-1).indices
    factors = [
        torch.randn(shape, generator=g).mul_(0.2).requires_grad_()
        for shape in ((r * E, H), (2 * I, r * E), (r * E, I), (H, r * E))
    ]
    upstream = torch.randn(T, H, generator=g)

    def run(fn: object) -> list[torch.Tensor]:
        w = torch.softmax(logits.gather(1, idx), dim=-1)
        if fn is dense_reference:
            out = dense_reference(x, idx, w, m, factors, s)
        else:
            out = lora_moe_experts(x, idx, w, m, (factors[0], factors[1]), (factors[2], factors[3]), s, 3.0)
        return [out.detach(), *torch.autograd.grad(out, [x, logits, *factors], upstream)]

    got, want = run(lora_moe_experts), run(dense_reference)
    for a, b in zip(got, want, strict=True):
        assert a.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("T", [1, 13])
def test_frozen_experts_gradients_equal_autograd(T: int) -> None:
    """No adapted expert: the written-out backward (frozen_backward) against autograd on the dequantized weights."""
    E, H, I, k = 6, 64, 32, 2
    g = torch.Generator().manual_seed(10 + T)
    m = random_moe(E, H, I, g)
    x = torch.randn(T, H, generator=g).requires_grad_()
    logits = torch.randn(T, E, generator=g).requires_grad_()
    idx = torch.topk(logits, k, dim=-1).indices
    zeros = [torch.zeros(shape) for shape in ((E, H), (2 * I, E), (E, I), (H, E))]
    upstream = torch.randn(T, H, generator=g)
    w = torch.softmax(logits.gather(1, idx), dim=-1)
    got = torch.autograd.grad(lora_moe_experts(x, idx, w, m, None, None, 1.0, 3.0), [x, logits], upstream)
    w = torch.softmax(logits.gather(1, idx), dim=-1)
    want = torch.autograd.grad(dense_reference(x, idx, w, m, zeros, 1.0), [x, logits], upstream)
    for a, b in zip(got, want, strict=True):
        assert a.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_swiglu_backward_equals_autograd_at_and_past_the_clamps() -> None:
    limit = 2.0
    g = torch.Generator().manual_seed(0)
    pre = torch.randn(5, 40, generator=g) * 3
    pre[0, :8] = torch.tensor([limit, limit, -limit, -limit, limit + 1e-3, -limit - 1e-3, 0.0, limit])
    dh = torch.randn(5, 20, generator=g)
    leaf = pre.clone().requires_grad_()
    (want,) = torch.autograd.grad(reference.swiglu(leaf, limit), leaf, dh)
    torch.testing.assert_close(swiglu_backward(pre, dh, limit), want, rtol=1e-6, atol=1e-7)


def test_zero_update_equals_the_reference_op() -> None:
    E, H, I, T = 4, 32, 32, 9
    g = torch.Generator().manual_seed(0)
    m = random_moe(E, H, I, g)
    x = torch.randn(T, H, generator=g)
    vals, idx = torch.topk(torch.randn(T, E, generator=g), 2, dim=-1)
    w = torch.softmax(vals, dim=-1)
    zero = (torch.zeros(2 * E, H), torch.zeros(2 * I, 2 * E))
    got = lora_moe_experts(x, idx, w, m, zero, None, 2.0, 7.0)
    want = reference.moe_experts(
        x, idx, w, m.mlp1_blocks, m.mlp1_scales, m.mlp1_bias, m.mlp2_blocks, m.mlp2_scales, m.mlp2_bias, 7.0
    )
    torch.testing.assert_close(got, want)


def saved_expert_weights(model: gptoss.Model, shape: tuple[int, int]) -> int:
    """How many tensors of an expert weight's shape the forward pass saves for the backward pass."""
    found = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal found
        found += tuple(t.shape) in (shape, shape[::-1])  # matmuls save w.T
        return t

    tokens = list(range(1, 40))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), differentiable_ops():
        loss, _ = loss_sum(model.transformer, tokens, [1] * len(tokens))
    loss.backward()
    return found


def test_training_keeps_no_dequantized_expert_alive(checkpoints: dict[str, Path]) -> None:
    """With LoRA on attention only, gradients still flow through every MoE: they must not keep the routed experts'
    dequantized weights for the backward pass (the custom function recomputes them one at a time)."""
    cfg = PARITY_CONFIGS["mqa6"]
    shape = (2 * cfg.intermediate_size, cfg.hidden_size)  # mlp1's, a shape no other tensor of this model has
    model = gptoss.load(checkpoints["mqa6"], dtype=torch.float32)
    model.transformer.w.embedding.requires_grad_()  # plain model: gradients through the reference op, as a guard
    assert saved_expert_weights(model, shape) > 0
    model.transformer.w.embedding.requires_grad_(False)
    model.transformer.adapter = LoraAdapter(model.config, LoraConfig(r=2, targets=("q", "o")))
    assert saved_expert_weights(model, shape) == 0

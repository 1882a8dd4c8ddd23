"""The triton MoE kernels against reference.moe_experts: in triton's interpreter on CPU tensors (no GPU), compiled
on cuda when there is one. Small shapes: the interpreter runs every program in Python."""

from __future__ import annotations

import pytest
import torch

from gptoss import mxfp4
from gptoss.ops import reference, triton_moe

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _problem(T: int, E: int, k: int, H: int, I: int, dtype: torch.dtype, seed: int = 0) -> tuple:  # type: ignore[type-arg]
    g = torch.Generator().manual_seed(seed)
    b1, s1 = mxfp4.quantize(torch.randn(E, 2 * I, H, generator=g) * 0.2)
    b2, s2 = mxfp4.quantize(torch.randn(E, H, I, generator=g) * 0.2)
    x = torch.randn(T, H, generator=g).to(dtype)
    vals, idx = torch.topk(torch.randn(T, E, generator=g), k)
    w = torch.softmax(vals, dim=-1)
    bias1, bias2 = torch.randn(E, 2 * I, generator=g).to(dtype), torch.randn(E, H, generator=g).to(dtype)
    args = (x, idx, w, b1, s1, bias1, b2, s2, bias2)
    return tuple(a.to(DEVICE) for a in args)


@pytest.mark.parametrize(
    ("T", "E", "k", "H", "I"),
    [
        (1, 4, 4, 64, 32),  # batch-1 decode: every expert active
        (3, 8, 2, 96, 64),  # decode path, K not a multiple of BLOCK_K
        (16, 8, 2, 64, 64),  # the last token count on the decode path
        (17, 8, 2, 64, 64),  # the first on the grouped path
        (70, 5, 3, 64, 96),  # grouped: experts with more tokens than one BLOCK_M group
    ],
)
def test_moe_matches_reference_fp32(T: int, E: int, k: int, H: int, I: int) -> None:
    args = _problem(T, E, k, H, I, torch.float32)
    got = triton_moe.moe_experts(*args, 7.0)
    want = reference.moe_experts(*(a.cpu() for a in args), 7.0)
    torch.testing.assert_close(got.cpu(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("T", [2, 40])
def test_moe_matches_reference_bf16(T: int) -> None:
    # The kernels keep the SwiGLU output in bf16 between the two matmuls (the reference in fp32): bf16 tolerance.
    args = _problem(T, 8, 2, 64, 64, torch.bfloat16, seed=1)
    got = triton_moe.moe_experts(*args, 7.0)
    want = reference.moe_experts(*(a.cpu() for a in args), 7.0)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.cpu().float(), want.float(), rtol=2e-2, atol=2e-2)


def test_moe_clamp_and_extreme_scales() -> None:
    # Large activations hit the SwiGLU clamp; scales 0 (2**-127) and 254 (2**127, times small codes) stay exact.
    x, idx, w, b1, s1, bias1, b2, s2, bias2 = _problem(2, 4, 2, 64, 32, torch.float32, seed=2)
    s1 = s1.clone()
    s1[0, 0, 0], s1[1, 3, 1] = 0, 130
    got = triton_moe.moe_experts(x * 50, idx, w, b1, s1, bias1, b2, s2, bias2, 3.0)
    cpu = [t.cpu() for t in (x * 50, idx, w, b1, s1, bias1, b2, s2, bias2)]
    torch.testing.assert_close(got.cpu(), reference.moe_experts(*cpu, 3.0), rtol=1e-5, atol=1e-4)


def test_route_by_expert_groups_pairs_per_expert() -> None:
    idx = torch.tensor([[2, 0], [2, 1], [0, 2], [3, 2]], device=DEVICE)
    route, block_expert = triton_moe.route_by_expert(idx, num_experts=5, block_m=2)
    route, block_expert = route.cpu().tolist(), block_expert.cpu().tolist()
    # Expert 0: pairs 1, 4; expert 1: pair 3 (+ pad); expert 2: pairs 0, 2, 5, 7 (two blocks); expert 3: pair 6.
    assert route[:10] == [1, 4, 3, -1, 0, 2, 5, 7, 6, -1]
    assert block_expert[:5] == [0, 1, 2, 2, 3]
    assert set(block_expert[5:]) <= {5} and set(route[10:]) <= {-1}


def test_moe_bad_shapes_are_named() -> None:
    x, idx, w, b1, s1, bias1, b2, s2, bias2 = _problem(2, 4, 2, 64, 32, torch.float32)
    with pytest.raises(ValueError, match="mlp1_blocks: expected contiguous uint8"):
        triton_moe.moe_experts(x, idx, w, b1.float(), s1, bias1, b2, s2, bias2, 7.0)
    with pytest.raises(ValueError, match="expert_idx"):
        triton_moe.moe_experts(x, idx[:1], w, b1, s1, bias1, b2, s2, bias2, 7.0)
    with pytest.raises(ValueError, match="mlp2_bias"):
        triton_moe.moe_experts(x, idx, w, b1, s1, bias1, b2, s2, bias2[:, :3], 7.0)


@pytest.mark.gpu
@pytest.mark.parametrize("T", [1, 8, 100])
def test_moe_at_the_20b_shapes_on_cuda(T: int) -> None:
    args = _problem(T, 32, 4, 2880, 2880, torch.bfloat16, seed=T)
    got = triton_moe.moe_experts(*args, 7.0)
    want = reference.moe_experts(*args, 7.0)  # the reference, on the same device
    torch.testing.assert_close(got.float(), want.float(), rtol=3e-2, atol=3e-2)

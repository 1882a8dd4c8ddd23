"""ops/flash.attention (torch's CPU flash kernel + sinks from its log-sum-exp) against reference.attention.

Grid: one token (decode) and many (prefill chunks), caches longer than the chunk, GQA ratios 1/2/8, full and banded
attention, ring-buffer caches with slots out of order and empty slots (-1), fp32 and bf16.
Tolerance: fp32 |flash - ref| <= 1e-5 (outputs are convex combinations of values ~N(0,1), so O(1)); bf16 adds the
output's one rounding, 2^-8 * |ref|. A wrong mask, sink or head mapping moves outputs by O(1).
"""

from __future__ import annotations

import pytest
import torch

from gptoss.ops import flash, reference


def ring_positions(S: int, window: int, end: int) -> torch.Tensor:
    """k_pos of a ring of `window` slots after `end` tokens, followed by S - window new tokens' positions."""
    ring = torch.full((window,), -1, dtype=torch.long)
    for p in range(max(0, end - window), end):
        ring[p % window] = p
    return torch.cat([ring, torch.arange(end, end + S - window)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("Hq, Hkv", [(4, 4), (4, 2), (16, 2)])
@pytest.mark.parametrize("T, cached, window", [(1, 0, 0), (1, 40, 0), (7, 0, 0), (33, 20, 0), (1, 9, 8), (17, 30, 8)])
def test_flash_matches_reference(dtype: torch.dtype, Hq: int, Hkv: int, T: int, cached: int, window: int) -> None:
    g = torch.Generator().manual_seed(Hq * 100 + T * 10 + cached + window)
    D = 16
    if window:  # a sliding layer: the ring (out of order, maybe with empty slots) plus the chunk
        S = window + T
        k_pos = ring_positions(S, window, cached)
    else:
        S = cached + T
        k_pos = torch.arange(S)
    q_pos = torch.arange(cached, cached + T)
    q = torch.randn(T, Hq, D, generator=g).to(dtype)
    k, v = torch.randn(S, Hkv, D, generator=g).to(dtype), torch.randn(S, Hkv, D, generator=g).to(dtype)
    sinks = torch.randn(Hq, generator=g) * 2
    got = flash.attention(q, k, v, sinks, q_pos, k_pos, window, D**-0.5)
    ref = reference.attention(q, k, v, sinks, q_pos, k_pos, window, D**-0.5)
    assert got.dtype == dtype and got.shape == ref.shape
    bound = 1e-5 + (2.0**-8 * ref.float().abs() if dtype == torch.bfloat16 else 0)
    assert ((got.float() - ref.float()).abs() <= bound).all()


def test_a_query_that_sees_nothing_gives_zeros_like_the_reference() -> None:
    q, k, v = torch.randn(2, 4, 8), torch.randn(3, 2, 8), torch.randn(3, 2, 8)
    args = (torch.randn(4), torch.tensor([0, 5]), torch.tensor([-1, 3, 4]), 0, 0.3)
    got, ref = flash.attention(q, k, v, *args), reference.attention(q, k, v, *args)
    assert torch.equal(got[0], torch.zeros(32)) and torch.equal(ref[0], torch.zeros(32))
    torch.testing.assert_close(got, ref)

"""The fast attention paths against reference.attention: ops/flash.attention (torch's CPU flash kernel + sinks from
its log-sum-exp) and ops/native.attention (the C decode kernel, AVX2 and portable flavours, at most
ATTENTION_MAX_TOKENS queries; longer chunks there go to flash).

Grid: one token (decode) and many (prefill chunks), caches longer than the chunk, GQA ratios 1/2/8, full and banded
attention, ring-buffer caches with slots out of order and empty slots (-1), fp32 and bf16. Tolerance: fp32 |flash -
ref| <= 1e-5 (outputs are convex combinations of values ~N(0,1), so O(1)); bf16: both outputs are rounded to bf16,
so they may land one bf16 ulp apart, <= 2^-7 * |ref|. A wrong mask, sink or head mapping moves outputs by O(1).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from gptoss.ops import flash, native, reference
from tests.ops.conftest import use_isa

Attention = Callable[..., torch.Tensor]


@pytest.fixture(params=["flash", "native-avx2", "native-scalar"])
def impl(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Attention:
    # The avx512 and amx flavours run the AVX2 attention kernel: no separate case.
    if request.param == "flash":
        return flash.attention
    if not native.built():
        pytest.fail(f"native kernels unavailable: {native.available()[1]}; run `pip install -e .`")
    use_isa(request.param.removeprefix("native-"), monkeypatch)
    return native.attention


def ring_positions(S: int, window: int, end: int) -> torch.Tensor:
    """k_pos of a ring of `window` slots after `end` tokens, followed by S - window new tokens' positions."""
    ring = torch.full((window,), -1, dtype=torch.long)
    for p in range(max(0, end - window), end):
        ring[p % window] = p
    return torch.cat([ring, torch.arange(end, end + S - window)])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("Hq, Hkv", [(4, 4), (4, 2), (16, 2)])
@pytest.mark.parametrize("D", [16, 12])
@pytest.mark.parametrize(
    "T, cached, window",
    [(1, 0, 0), (1, 40, 0), (3, 5, 0), (7, 0, 0), (33, 20, 0), (1, 9, 8), (2, 3, 8), (17, 30, 8), (20, 3, 8)],
)
def test_matches_reference(
    impl: Attention, dtype: torch.dtype, Hq: int, Hkv: int, D: int, T: int, cached: int, window: int
) -> None:
    g = torch.Generator().manual_seed(Hq * 100 + T * 10 + cached + window + D)
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
    got = impl(q, k, v, sinks, q_pos, k_pos, window, D**-0.5)
    ref = reference.attention(q, k, v, sinks, q_pos, k_pos, window, D**-0.5)
    assert got.dtype == dtype and got.shape == ref.shape
    bound = 1e-5 + (2.0**-7 * ref.float().abs() if dtype == torch.bfloat16 else 0)
    assert ((got.float() - ref.float()).abs() <= bound).all()


def test_a_query_that_sees_nothing_gives_zeros_like_the_reference(impl: Attention) -> None:
    q, k, v = torch.randn(2, 4, 8), torch.randn(3, 2, 8), torch.randn(3, 2, 8)
    args = (torch.randn(4), torch.tensor([0, 5]), torch.tensor([-1, 3, 4]), 0, 0.3)
    got, ref = impl(q, k, v, *args), reference.attention(q, k, v, *args)
    assert torch.equal(got[0], torch.zeros(32)) and torch.equal(ref[0], torch.zeros(32))
    torch.testing.assert_close(got, ref)


@pytest.mark.parametrize(
    "q, k, sinks, k_pos, message",
    [
        (torch.ones(1, 4, 8), torch.ones(3, 3, 8), torch.ones(4), torch.arange(3), "do not fit GQA"),
        (torch.ones(1, 4, 8), torch.ones(3, 2, 8), torch.ones(3), torch.arange(3), "do not fit GQA"),
        (torch.ones(1, 4, 8), torch.ones(3, 2, 8), torch.ones(4), torch.arange(2), r"k_pos \(2,\) do not match"),
    ],
)
def test_native_refuses_mismatched_shapes(
    q: torch.Tensor, k: torch.Tensor, sinks: torch.Tensor, k_pos: torch.Tensor, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        native.attention(q, k, k, sinks, torch.zeros(1, dtype=torch.long), k_pos, 0, 1.0)

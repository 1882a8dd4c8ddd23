from __future__ import annotations

import pytest
import torch

from gptoss.ops import dense, reference


@pytest.mark.parametrize("T", [1, 3, 64])
@pytest.mark.parametrize("bias", [True, False])
def test_split_bias_linear_matches_reference(T: int, bias: bool) -> None:
    g = torch.Generator().manual_seed(T)
    x, w, b = torch.randn(T, 96, generator=g), torch.randn(160, 96, generator=g), torch.randn(160, generator=g)
    bb = b if bias else None
    torch.testing.assert_close(dense.linear(x, w, bb), reference.linear(x, w, bb), rtol=1e-6, atol=1e-5)
    # bf16: at most one extra rounding of the output (bf16 has 8 significant bits: 2**-8 relative per rounding).
    fast = dense.linear(x.bfloat16(), w.bfloat16(), None if bb is None else bb.bfloat16()).float()
    ref = reference.linear(x.bfloat16(), w.bfloat16(), None if bb is None else bb.bfloat16()).float()
    assert ((fast - ref).abs() <= 2 * 2**-8 * ref.abs().clamp_min(1.0)).all()

"""MXFP4 decoding against the format's table: every code, nibble order, extreme scales."""

from __future__ import annotations

import pytest
import torch

from gptoss import mxfp4

TABLE = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


@pytest.mark.parametrize("scale", [0, 1, 100, 126, 127, 128, 200, 253, 254, 255])
def test_every_code_and_scale(scale: int) -> None:
    # Byte b holds code b & 15 as element 2i and code b >> 4 as element 2i+1.
    codes = torch.arange(16, dtype=torch.uint8)
    blocks = (codes | (codes.flip(0) << 4)).view(1, 16)  # one block: lows 0..15, highs 15..0
    out = mxfp4.dequantize(blocks, torch.tensor([scale], dtype=torch.uint8))
    order = [c for lo in range(16) for c in (lo, 15 - lo)]
    # fp32 arithmetic, as the format's reference does it: 6 * 2**126 and up overflow to inf, by definition.
    # Exact values (float64), rounded once to fp32: 6 * 2**126 and up overflow to inf, by definition.
    expected = (torch.tensor([TABLE[c] for c in order], dtype=torch.float64) * 2.0 ** (scale - 127)).float()
    assert out.tolist() == expected.tolist()
    assert torch.isinf(out).any().item() == (scale >= 253)
    assert not torch.isnan(out).any()
    assert torch.signbit(out[16]).item()  # code 8 is -0.0


def test_bf16_is_exact() -> None:
    g = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, 256, (3, 5, 4, 16), dtype=torch.uint8, generator=g)
    scales = torch.randint(100, 150, (3, 5, 4), dtype=torch.uint8, generator=g)
    fp32 = mxfp4.dequantize(blocks, scales)
    assert fp32.shape == (3, 5, 128)
    assert torch.equal(mxfp4.dequantize(blocks, scales, torch.bfloat16).float(), fp32)


def test_quantize_round_trips_dequantized_values() -> None:
    w = torch.randn(4, 6, 96, generator=torch.Generator().manual_seed(1))
    blocks, scales = mxfp4.quantize(w)
    values = mxfp4.dequantize(blocks, scales)
    assert (values - w).abs().max() <= w.abs().max() / 6  # within half a step of the coarsest grid
    assert torch.equal(mxfp4.dequantize(*mxfp4.quantize(values)), values)


def test_bad_inputs() -> None:
    with pytest.raises(TypeError, match="must be uint8"):
        mxfp4.dequantize(torch.zeros(1, 16), torch.zeros(1, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"blocks \(2, 16\) do not match scales \(3,\)"):
        mxfp4.dequantize(torch.zeros(2, 16, dtype=torch.uint8), torch.zeros(3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="not a multiple of 32"):
        mxfp4.quantize(torch.zeros(40))

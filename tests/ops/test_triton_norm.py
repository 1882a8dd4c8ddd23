"""The triton RMSNorm and rotary kernels against their reference twins (interpreter without a GPU)."""

from __future__ import annotations

import pytest
import torch

from gptoss.ops import reference, triton_norm

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize(
    ("shape", "dtype"), [((5, 48), torch.float32), ((3, 2, 64), torch.bfloat16), ((1, 7), torch.float32)]
)
def test_rms_norm_matches_reference(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    x, scale = torch.randn(shape).to(dtype), torch.rand(shape[-1]) + 0.5
    got = triton_norm.rms_norm(x.to(DEVICE), scale.to(DEVICE), 1e-5)
    want = reference.rms_norm(x, scale, 1e-5)
    assert got.dtype == dtype and got.shape == x.shape
    tol = 1e-5 if dtype == torch.float32 else 1e-2  # bf16: one rounding, summation order differs
    torch.testing.assert_close(got.cpu().float(), want.float(), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_matches_reference(dtype: torch.dtype) -> None:
    x, cos, sin = torch.randn(5, 6, 16).to(dtype), torch.randn(5, 8), torch.randn(5, 8)
    got = triton_norm.rope(x.to(DEVICE), cos.to(DEVICE), sin.to(DEVICE))
    tol = 0.0 if dtype == torch.float32 else 1e-2  # bf16: a product may round the other way (one ulp)
    torch.testing.assert_close(got.cpu(), reference.rope(x, cos, sin), rtol=tol, atol=tol)


def test_rope_reads_rows_of_a_wider_projection() -> None:
    wide = torch.randn(5, 200)
    x = wide[:, :96].view(5, 6, 16)  # rows 200 apart, heads packed inside
    cos, sin = torch.randn(5, 8), torch.randn(5, 8)
    got = triton_norm.rope(x.to(DEVICE) if DEVICE == "cpu" else wide.to(DEVICE)[:, :96].view(5, 6, 16),
                           cos.to(DEVICE), sin.to(DEVICE))  # fmt: skip
    assert torch.equal(got.cpu(), reference.rope(x, cos, sin))


def test_bad_shapes_are_named() -> None:
    with pytest.raises(ValueError, match="rms_norm: x"):
        triton_norm.rms_norm(torch.randn(2, 8, device=DEVICE), torch.ones(7, device=DEVICE), 1e-5)
    with pytest.raises(ValueError, match="rope: x"):
        triton_norm.rope(
            torch.randn(2, 3, 8, device=DEVICE), torch.ones(2, 3, device=DEVICE), torch.ones(2, 3, device=DEVICE)
        )

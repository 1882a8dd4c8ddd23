"""Native RMSNorm and rotary embedding (ops/native.rms_norm / rope, native_src/norm.c) against ops/reference.py.

Needs the extension (CI builds it): a missing build FAILS. Both do the reference's math with the same rounding points:
rope is elementwise (x1*c - x2*s in fp32), so it must match bit for bit; RMSNorm sums the squares in another order
(double here, fp32 tree in torch), so fp32 outputs may differ by an ulp or two (rtol 1e-6) and bf16 outputs, after
their one rounding, by at most one bf16 ulp (2^-8 relative). Shapes: one token (decode), many tokens (the threaded
path), odd widths, leading dims, a strided row view, empty input.
"""

from __future__ import annotations

import pytest
import torch

from gptoss.ops import native, reference

pytestmark = pytest.mark.usefixtures("native_ext")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 2880), (3, 7), (37, 64), (2, 5, 33), (0, 16)])
def test_rms_norm_matches_reference(shape: tuple[int, ...], dtype: torch.dtype, threads: int) -> None:
    torch.set_num_threads(threads)
    x = (torch.randn(*shape, generator=gen(1)) * 3).to(dtype)
    scale = torch.randn(shape[-1], generator=gen(2))
    got, want = native.rms_norm(x, scale, 1e-5), reference.rms_norm(x, scale, 1e-5)
    assert got.dtype == want.dtype and got.shape == want.shape
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    else:
        assert ((got.float() - want.float()).abs() <= 2**-8 * want.float().abs()).all()


def test_rms_norm_zero_row_and_eps() -> None:
    x = torch.zeros(2, 48)
    x[1, 3] = 1e-3
    scale = torch.ones(48)
    for eps in (1e-5, 1e-2):
        torch.testing.assert_close(native.rms_norm(x, scale, eps), reference.rms_norm(x, scale, eps), rtol=1e-6, atol=0)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 64, 64), (1, 8, 64), (5, 3, 2), (40, 4, 18), (0, 2, 8)])
def test_rope_matches_reference_bit_for_bit(shape: tuple[int, int, int], dtype: torch.dtype, threads: int) -> None:
    torch.set_num_threads(threads)
    T, _, D = shape
    x = torch.randn(*shape, generator=gen(3)).to(dtype)
    angles = torch.rand(T, D // 2, generator=gen(4)) * 100
    cos, sin = angles.cos() * 1.3, angles.sin() * 1.3
    got, want = native.rope(x, cos, sin), reference.rope(x, cos, sin)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert torch.equal(got, want)


def test_rope_reads_a_strided_row_view() -> None:
    # q as a slice of a wider projection output: rows 96 values apart, heads packed inside a row
    wide = torch.randn(6, 96, generator=gen(5)).bfloat16()
    q = wide[:, :64].view(6, 4, 16)
    assert not q.is_contiguous()
    angles = torch.rand(6, 8, generator=gen(6))
    got, want = native.rope(q, angles.cos(), angles.sin()), reference.rope(q, angles.cos(), angles.sin())
    assert torch.equal(got, want)


def test_other_dtypes_take_the_reference() -> None:
    x = torch.randn(3, 16, generator=gen(7)).half()
    assert torch.equal(native.rms_norm(x, torch.ones(16), 1e-5), reference.rms_norm(x, torch.ones(16), 1e-5))
    q = torch.randn(3, 2, 8, generator=gen(8)).half()
    c, s = torch.ones(3, 4), torch.zeros(3, 4)
    assert torch.equal(native.rope(q, c, s), q)


def test_bad_shapes_are_named() -> None:
    with pytest.raises(ValueError, match=r"rms_norm: x \(3, 16\) and scale \(15,\)"):
        native.rms_norm(torch.randn(3, 16), torch.ones(15), 1e-5)
    with pytest.raises(ValueError, match=r"rms_norm: x \(\) and scale \(1,\)"):
        native.rms_norm(torch.tensor(1.0), torch.ones(1), 1e-5)
    with pytest.raises(ValueError, match=r"rope: x \(2, 3, 7\).*D even"):
        native.rope(torch.randn(2, 3, 7), torch.ones(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"rope: x \(2, 3, 8\), cos \(2, 3\)"):
        native.rope(torch.randn(2, 3, 8), torch.ones(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"rope: x \(2, 24\)"):
        native.rope(torch.randn(2, 24), torch.ones(2, 4), torch.ones(2, 4))

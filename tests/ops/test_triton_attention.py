"""The triton attention kernel against reference.attention (interpreter on CPU without a GPU, compiled on cuda)."""

from __future__ import annotations

import pytest
import torch

from gptoss.ops import reference, triton_attention

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _check(T: int, S: int, Hq: int, Hkv: int, D: int, window: int, dtype: torch.dtype, *, shuffle: bool = False,
           empty: int = 0, tol: float = 1e-5) -> None:  # fmt: skip
    g = torch.Generator().manual_seed(T * 1000 + S)
    q = torch.randn(T, Hq, D, generator=g).to(dtype)
    k, v = torch.randn(S, Hkv, D, generator=g).to(dtype), torch.randn(S, Hkv, D, generator=g).to(dtype)
    sinks = torch.randn(Hq, generator=g)
    k_pos = torch.arange(S)
    if shuffle:  # ring-buffer slots are not in position order
        k_pos = k_pos[torch.randperm(S, generator=g)]
    k_pos[:empty] = -1  # never-written slots
    q_pos = torch.arange(S - T, S)
    args = (q, k, v, sinks, q_pos, k_pos, window, 0.3)
    got = triton_attention.attention(*(a.to(DEVICE) if isinstance(a, torch.Tensor) else a for a in args))
    want = reference.attention(*args)
    assert got.dtype == dtype and got.shape == (T, Hq * D)
    torch.testing.assert_close(got.cpu().float(), want.float(), rtol=tol, atol=tol)


@pytest.mark.parametrize(
    ("T", "S", "Hq", "Hkv", "D", "window"),
    [
        (1, 10, 4, 2, 16, 0),  # decode, full layer
        (1, 130, 8, 1, 16, 8),  # decode, band, keys over several BLOCK_N blocks
        (20, 20, 4, 2, 16, 8),  # prefill without a cache, band shorter than the chunk
        (5, 40, 6, 1, 8, 0),  # a chunk after a cache, GQA 6, D < 16
        (3, 9, 4, 2, 24, 0),  # D not a power of two
    ],
)
def test_attention_matches_reference_fp32(T: int, S: int, Hq: int, Hkv: int, D: int, window: int) -> None:
    _check(T, S, Hq, Hkv, D, window, torch.float32)


def test_attention_ring_slots_in_any_order_and_empty() -> None:
    _check(1, 70, 8, 2, 16, 8, torch.float32, shuffle=True, empty=5)
    _check(4, 16, 4, 2, 16, 8, torch.float32, shuffle=True, empty=3)


def test_attention_bf16() -> None:
    _check(20, 150, 4, 1, 64, 0, torch.bfloat16, tol=2e-2)


def test_attention_query_that_sees_nothing_gives_zero() -> None:
    q, k, v = torch.randn(1, 2, 16), torch.randn(3, 1, 16), torch.randn(3, 1, 16)
    dev = [t.to(DEVICE) for t in (q, k, v, torch.zeros(2), torch.tensor([0]), torch.tensor([-1, 5, 6]))]
    out = triton_attention.attention(*dev, 0, 0.25)
    assert torch.equal(out.cpu(), torch.zeros(1, 32))


def test_attention_bad_shapes_are_named() -> None:
    q, k = torch.randn(2, 4, 16, device=DEVICE), torch.randn(3, 3, 16, device=DEVICE)
    pos = torch.arange(3, device=DEVICE)
    with pytest.raises(ValueError, match="do not fit GQA"):
        triton_attention.attention(q, k, k, torch.zeros(4, device=DEVICE), pos[:2], pos, 0, 1.0)
    k = torch.randn(3, 2, 16, device=DEVICE)
    with pytest.raises(ValueError, match="q_pos"):
        triton_attention.attention(q, k, k, torch.zeros(4, device=DEVICE), pos, pos, 0, 1.0)


@pytest.mark.gpu
def test_attention_at_the_real_head_shapes_on_cuda() -> None:
    _check(1, 1000, 64, 8, 64, 128, torch.bfloat16, shuffle=True, tol=2e-2)
    _check(300, 300, 64, 8, 64, 0, torch.bfloat16, tol=2e-2)

"""The triton attention kernel against reference.attention (interpreter on CPU without a GPU, compiled on cuda)."""

from __future__ import annotations

import pytest
import torch

from gptoss.ops import reference, triton_attention
from gptoss.ops.reference import BlockTables

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


def _tables(segs: list[tuple[int, list[int], int]], device: str) -> BlockTables:
    """segs: (rows, block ids, first visible position) per sequence, rows in order in the flat batch."""
    width = max(len(ids) for _, ids, _ in segs)
    ids = torch.tensor([b + [0] * (width - len(b)) for _, b, _ in segs], dtype=torch.int32)
    starts = [sum(n for n, _, _ in segs[:i]) for i in range(len(segs))]
    return BlockTables(
        ids.to(device),
        torch.tensor([len(b) for _, b, _ in segs], dtype=torch.int32, device=device),
        torch.tensor([p for _, _, p in segs], dtype=torch.int64, device=device),
        torch.tensor(starts, dtype=torch.int32, device=device),
        torch.tensor([n for n, _, _ in segs], dtype=torch.int32, device=device),
        max(n for n, _, _ in segs),
    )


@pytest.mark.parametrize(("window", "dtype"), [(0, torch.float32), (6, torch.float32), (0, torch.bfloat16)])
def test_paged_attention_matches_reference(window: int, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(window)
    k_pool, v_pool = (torch.randn(20, 4, 2, 16, generator=g).to(dtype) for _ in range(2))
    # Three sequences: scattered blocks (12 positions, last 3 rows new), a band starting at position 8 (blocks
    # 2 and 9), a 5-token prompt in blocks 0-1 (slots past its end are the future).
    segs = [(3, [5, 17, 7], 0), (1, [2, 9], 8), (5, [0, 1], 0)]
    q_pos = torch.tensor([9, 10, 11, 13, 3, 4, 5, 6, 7])
    q, sinks = torch.randn(9, 4, 16, generator=g).to(dtype), torch.randn(4, generator=g)
    dev = [t.to(DEVICE) for t in (q, k_pool, v_pool, sinks, q_pos)]
    got = triton_attention.paged_attention(*dev, _tables(segs, DEVICE), window, 0.3)
    want = reference.paged_attention(q, k_pool, v_pool, sinks, q_pos, _tables(segs, "cpu"), window, 0.3)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got.cpu().float(), want.float(), rtol=tol, atol=tol)


def test_paged_reference_is_attention_over_each_sequences_blocks() -> None:
    k_pool, v_pool = torch.randn(6, 4, 1, 8), torch.randn(6, 4, 1, 8)
    q, sinks, q_pos = torch.randn(2, 2, 8), torch.randn(2), torch.tensor([6, 7])
    got = reference.paged_attention(q, k_pool, v_pool, sinks, q_pos, _tables([(2, [4, 1], 0)], "cpu"), 0, 0.5)
    keys, values = torch.cat([k_pool[4], k_pool[1]]), torch.cat([v_pool[4], v_pool[1]])
    want = reference.attention(q, keys, values, sinks, q_pos, torch.arange(8), 0, 0.5)
    assert torch.equal(got, want)

"""Cached (chunked) prefill + step-by-step decode must equal the full forward, at every position."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import gptoss
from gptoss.kv_cache import FullLayerCache, KVCache, RingLayerCache
from tests.conftest import PARITY_CONFIGS
from tests.test_model import prompt


def cached_logits(model: gptoss.Model, ids: list[int], chunk: int) -> torch.Tensor:
    """Every position's logits, computed through the cache `chunk` tokens at a time (chunk 1 = pure decode)."""
    cache, out = model.new_cache(), []
    tokens = torch.tensor(ids)
    with torch.inference_mode():
        for start in range(0, len(ids), chunk):
            out.append(model.transformer.unembed(model._feed(cache, tokens[start : start + chunk])))
    return torch.cat(out)


@pytest.mark.parametrize("name", sorted(PARITY_CONFIGS))
@pytest.mark.parametrize("chunk", [1, 3, 8, 17, 1000])
def test_cached_equals_full_forward(checkpoints: dict[str, Path], name: str, chunk: int) -> None:
    cfg = PARITY_CONFIGS[name]
    model = gptoss.load(checkpoints[name], dtype=torch.float32)
    ids = prompt(3 * cfg.sliding_window + 5, cfg.vocab_size, seed=4)
    full = model.logits(ids)
    assert (cached_logits(model, ids, chunk) - full).abs().max() <= 1e-4


def test_prefill_then_decode_matches_full_forward(tiny_dir: Path) -> None:
    model = gptoss.load(tiny_dir, dtype=torch.float32)
    ids = prompt(45, 1024, seed=5)
    cache = model.new_cache()
    last = model.prefill(cache, torch.tensor(ids[:20]), chunk=6)
    full = model.logits(ids)
    assert (last - full[19]).abs().max() <= 1e-4
    for i in range(20, 45):
        last = model.prefill(cache, torch.tensor([ids[i]]))
        assert (last - full[i]).abs().max() <= 1e-4, f"position {i}"


def test_ring_cache_keeps_only_the_window() -> None:
    ring = RingLayerCache(heads=1, head_dim=2, window=4, dtype=torch.float32, device=torch.device("cpu"))
    k = torch.arange(10, dtype=torch.float32).view(10, 1, 1).expand(10, 1, 2)
    _, _, pos = ring.update(k[:6], k[:6], torch.arange(6))
    assert pos.tolist() == [-1, -1, -1, -1, 0, 1, 2, 3, 4, 5]  # empty slots + the chunk
    assert sorted(ring.pos.tolist()) == [2, 3, 4, 5]
    _, _, pos = ring.update(k[6:7], k[6:7], torch.tensor([6]))
    assert sorted(pos.tolist()) == [3, 4, 5, 6]
    assert ring.k.shape[0] == 4  # never grows


def test_full_cache_grows_and_refuses_past_limit() -> None:
    full = FullLayerCache(heads=1, head_dim=2, limit=300, dtype=torch.float32, device=torch.device("cpu"))
    for start in range(0, 300, 100):
        k = torch.full((100, 1, 2), float(start))
        keys, _, pos = full.update(k, k, torch.arange(start, start + 100))
    assert keys.shape[0] == 300 and pos.tolist() == list(range(300))
    assert keys[150, 0, 0] == 100.0
    with pytest.raises(gptoss.InputError, match="context overflow: 301 tokens exceed the cache limit of 300"):
        full.update(k[:1], k[:1], torch.tensor([300]))


def test_cache_positions_check_the_limit() -> None:
    cache = KVCache(PARITY_CONFIGS["tiny"], limit=10, dtype=torch.float32)
    cache.position = 8
    assert cache.positions(2).tolist() == [8, 9]
    with pytest.raises(gptoss.InputError, match="8 cached \\+ 3 new tokens exceed the context limit of 10"):
        cache.positions(3)

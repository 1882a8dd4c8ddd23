"""StaticKVCache: the fixed-shape cache of the GPU path gives the tokens and logits of the CPU KVCache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import gptoss
from gptoss import ops
from gptoss.config import PRESETS
from gptoss.gpu.cache import MIN_CAPACITY, StaticKVCache
from gptoss.gpu.runtime import DeviceModel
from gptoss.model import Transformer
from tests.test_model import prompt


def static_twin(model: gptoss.Model, kernels: object = ops) -> DeviceModel:
    """The same weights behind DeviceModel (StaticKVCache), graphs off: CPU-testable."""
    t = Transformer(model.config, model.transformer.w, kernels=kernels)  # type: ignore[arg-type]
    return DeviceModel(t, model.device, model.dtype, model.context_length, graphs=False)


@pytest.fixture(scope="module")
def model(tiny_dir: Path) -> gptoss.Model:
    return gptoss.load(tiny_dir, dtype=torch.float32, context_length=256)


def test_greedy_tokens_and_logits_match_the_kv_cache_across_doublings(
    model: gptoss.Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 60 prompt tokens in chunks of 25 (the ring sees chunks longer than its window of 8), then decode past 64,
    # where the full layers' buffers double (from 32).
    monkeypatch.setattr("gptoss.gpu.cache.MIN_CAPACITY", 32)
    ids = prompt(60, 1024)
    twin = static_twin(model)
    want = list(model.steps(ids, gptoss.SamplingParams(temperature=0, max_tokens=12), prefill_chunk=25))
    got = list(twin.steps(ids, gptoss.SamplingParams(temperature=0, max_tokens=12), prefill_chunk=25))
    assert [s[0] for s in got if s] == [s[0] for s in want if s]
    for a, b in zip(got, want, strict=True):
        if a is not None and b is not None:
            torch.testing.assert_close(a[1], b[1], rtol=1e-4, atol=1e-4)


def test_capacity_doubles_and_drops_stale_graphs() -> None:
    cache = StaticKVCache(PRESETS["tiny"], limit=600, dtype=torch.float32, device="cpu")
    cache.positions(3)
    assert cache.capacity == MIN_CAPACITY
    cache.graphs[MIN_CAPACITY] = object()
    cache.position = 250
    cache.positions(10)  # 260 > 256
    assert cache.capacity == 512 and cache.graphs == {}
    cache.position = 512
    cache.positions(80)
    assert cache.capacity == 600  # capped at the limit
    full = [i for i, s in enumerate(cache.sliding) if not s]
    assert all(cache.k[i].shape[0] == 600 and int(cache.pos[i][0]) == -1 for i in full)


def test_overflow_is_refused_before_any_layer_is_touched() -> None:
    cache = StaticKVCache(PRESETS["tiny"], limit=20, dtype=torch.float32, device="cpu")
    cache.position = 18
    with pytest.raises(gptoss.InputError, match="18 cached \\+ 3 new tokens exceed the context limit of 20"):
        cache.positions(3)

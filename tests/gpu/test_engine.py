"""The batched engine step on the GPU path's kernels: paged KV blocks read by the triton attention, the step's flat
batch through the triton MoE (on the CPU via triton's interpreter; on cuda with the `gpu` marker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import gptoss
from gptoss.engine import BatchConfig, BatchedModelSource
from gptoss.gpu import ops as gpu_ops
from gptoss.sampling import SamplingParams
from tests.gpu.test_cache import static_twin
from tests.test_model import prompt


def run_batch(model: gptoss.Model, prompts: list[list[int]], n: int) -> dict[object, list[int]]:
    src = BatchedModelSource(model, BatchConfig(max_running=4, block_size=4, kv_cache_bytes=1 << 20))
    for i, p in enumerate(prompts):
        src.add(i, p, SamplingParams(temperature=0.0, max_tokens=n))
    out: dict[object, list[int]] = {}
    while src.counts != (0, 0):
        for o in src.step():
            assert o.event is not None
            out.setdefault(o.key, []).append(o.event.token)
            if o.done:
                src.remove(o.key)
    return out


@pytest.fixture(scope="module")
def model(tiny_dir: Path) -> gptoss.Model:
    return gptoss.load(tiny_dir, dtype=torch.float32, context_length=64)


PROMPTS = [prompt(n, 1024, seed=n) for n in (3, 9, 13)]


def test_batched_triton_step_gives_each_request_its_tokens_alone(
    model: gptoss.Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    kernel = gpu_ops.paged_attention

    def counted(*args: Any) -> torch.Tensor:
        calls.append(args[5].ids.shape[0])  # sequences in the launch
        return kernel(*args)

    monkeypatch.setattr(gpu_ops, "paged_attention", counted)
    got = run_batch(static_twin(model, gpu_ops), PROMPTS, 3)
    assert got == {i: list(model.generate(p, max_tokens=3, temperature=0)) for i, p in enumerate(PROMPTS)}
    assert max(calls) == 3  # the block-table kernel ran each step, once per layer, over all sequences at once


@pytest.mark.gpu
def test_batched_step_on_cuda(tiny_dir: Path, model: gptoss.Model) -> None:
    gpu = gptoss.load(tiny_dir, device="cuda", dtype=torch.float32, context_length=64)
    got = run_batch(gpu, PROMPTS, 6)
    assert got == {i: list(model.generate(p, max_tokens=6, temperature=0)) for i, p in enumerate(PROMPTS)}

"""The GPU path end to end: on the CPU through triton's interpreter (DeviceModel, graphs off); on cuda (marker
`gpu`) through gptoss.load(device="cuda"), graphs on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import gptoss
from gptoss.gpu import ops as gpu_ops
from gptoss.gpu.cache import StaticKVCache
from gptoss.gpu.runtime import DeviceModel
from gptoss.model import Transformer
from gptoss.sampling import SamplingParams
from tests.gpu.test_cache import static_twin
from tests.test_model import prompt


@pytest.fixture(scope="module")
def model(tiny_dir: Path) -> gptoss.Model:
    return gptoss.load(tiny_dir, dtype=torch.float32, context_length=64)


def test_triton_kernels_give_the_cpu_tokens(model: gptoss.Model) -> None:
    ids = prompt(20, 1024)  # 20 > the decode MoE's 16 tokens: the prompt takes the grouped kernels
    twin = static_twin(model, gpu_ops)
    want = list(model.generate(ids, max_tokens=4, temperature=0))
    assert list(twin.generate(ids, max_tokens=4, temperature=0)) == want
    torch.testing.assert_close(twin.logits(ids), model.logits(ids), rtol=1e-4, atol=1e-4)


def test_decode_steps_replayed_from_captures_give_the_eager_tokens(
    model: gptoss.Model, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CUDA graphs replaced by an eager stand-in (run at capture, re-run at each replay, reading the same static
    # inputs): the bookkeeping around them (static token and position, one capture per capacity, a fresh one after
    # each doubling, the output copied out) on the CPU.
    monkeypatch.setattr("gptoss.gpu.cache.MIN_CAPACITY", 16)
    captures: list[int] = []

    def eager_capture(step: Callable[[], torch.Tensor]) -> tuple[Callable[[], None], torch.Tensor]:
        out = step()
        captures.append(1)

        def replay() -> None:
            out.copy_(step())

        return replay, out

    t = Transformer(model.config, model.transformer.w)
    replayed = DeviceModel(t, model.device, model.dtype, model.context_length, graphs=True, capture=eager_capture)
    ids = prompt(10, 1024)
    params = SamplingParams(temperature=1.0, seed=5, max_tokens=40)  # 10 + 40 positions: capacities 16, 32, 64
    assert list(replayed.generate_with(ids, params)) == list(model.generate_with(ids, params))
    assert len(captures) == 3


def test_cuda_without_a_gpu_says_why(tiny_dir: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")  # the message under test needs a machine without one
    with pytest.raises(RuntimeError, match="device 'cuda' was asked for, but this torch .* without CUDA"):
        gptoss.load(tiny_dir, device="cuda")


def test_other_devices_are_refused(tiny_dir: Path) -> None:
    with pytest.raises(gptoss.InputError, match="device 'mps': gptoss runs on 'cpu' or 'cuda'"):
        gptoss.load(tiny_dir, device="mps")


@pytest.mark.gpu
def test_cuda_greedy_tokens_match_the_cpu(tiny_dir: Path, model: gptoss.Model) -> None:
    gpu = gptoss.load(tiny_dir, device="cuda", dtype=torch.float32, context_length=64)
    ids = prompt(20, 1024)
    assert list(gpu.generate(ids, max_tokens=8, temperature=0)) == list(
        model.generate(ids, max_tokens=8, temperature=0)
    )
    torch.testing.assert_close(gpu.logits(ids).cpu(), model.logits(ids), rtol=1e-3, atol=1e-3)


@pytest.mark.gpu
def test_cuda_decode_replays_a_graph(tiny_dir: Path) -> None:
    gpu = gptoss.load(tiny_dir, device="cuda", context_length=64)
    cache = gpu.new_cache()
    assert isinstance(cache, StaticKVCache)
    logits = gpu.prefill(cache, torch.tensor(prompt(5, 1024), device="cuda"))
    eager = [int(logits.argmax())]
    for _ in range(3):
        eager.append(int(gpu.prefill(cache, torch.tensor(eager[-1:], device="cuda")).argmax()))
    assert len(cache.graphs) == 1 and cache.position == 8
    seeded = SamplingParams(temperature=1.0, seed=3, max_tokens=6)
    assert list(gpu.generate_with(prompt(5, 1024), seeded)) == list(gpu.generate_with(prompt(5, 1024), seeded))

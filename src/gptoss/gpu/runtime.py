"""The Model of the GPU path: weights on the device as they are stored (bf16 tensors, MXFP4 blocks and scales never
dequantized whole), the triton kernels, a StaticKVCache per sequence, and single-token decode steps replayed from a
CUDA graph (one capture per cache capacity: the step's shapes only change when the full layers' buffers double).

Prompts (and any step of more than one token) run eagerly. Without CUDA (the tests: triton's interpreter on CPU
tensors) the same code runs with graphs off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from gptoss.config import ModelConfig
from gptoss.gpu.cache import StaticKVCache
from gptoss.kv_cache import KVCache
from gptoss.model import Transformer, Weights
from gptoss.runtime import PREFILL_CHUNK, Model

# A capture turns a step (no arguments, reading and writing fixed tensors) into (replay, its output tensor).
Capture = Callable[[Callable[[], torch.Tensor]], tuple[Callable[[], None], torch.Tensor]]


def cuda_graph_capture(step: Callable[[], torch.Tensor]) -> tuple[Callable[[], None], torch.Tensor]:
    # Warm up on a side stream first (triton compiles, cuBLAS picks its kernels), as torch.cuda.graph requires.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    return graph.replay, out


@dataclass
class _Graph:
    replay: Callable[[], None]
    token: torch.Tensor  # (1,) long: the static input the step reads
    position: torch.Tensor  # (1,) long
    logits: torch.Tensor  # (V,) fp32: the static output it writes


class DeviceModel(Model):
    def __init__(
        self,
        transformer: Transformer,
        device: torch.device,
        dtype: torch.dtype,
        context_length: int,
        graphs: bool,
        capture: Capture | None = None,  # tests replace CUDA graphs with an eager stand-in
    ) -> None:
        super().__init__(transformer, device, dtype, context_length)
        self.graphs = graphs and (device.type == "cuda" or capture is not None)
        self.capture = capture or cuda_graph_capture

    def new_cache(self) -> KVCache:
        return StaticKVCache(self.config, self.context_length, self.dtype, self.device)

    @torch.inference_mode()
    def prefill(self, cache: KVCache, tokens: torch.Tensor, chunk: int = PREFILL_CHUNK) -> torch.Tensor:
        if self.graphs and len(tokens) == 1 and isinstance(cache, StaticKVCache):
            return self._graph_step(cache, tokens)
        return super().prefill(cache, tokens, chunk)

    def _step(self, cache: StaticKVCache, token: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        t = self.transformer
        return t.unembed(t.forward(token, position, cache))[0]

    def _graph_step(self, cache: StaticKVCache, token: torch.Tensor) -> torch.Tensor:
        cache.positions(1)  # the overflow check, and the doubling (which drops stale graphs) before any capture
        g = cache.graphs.get(cache.capacity)
        if not isinstance(g, _Graph):
            g = self._capture(cache, token)
            cache.graphs[cache.capacity] = g
        g.token.copy_(token.view(1))
        g.position.fill_(cache.position)
        g.replay()
        cache.position += 1
        return g.logits.clone()  # the next replay overwrites the static output

    def _capture(self, cache: StaticKVCache, token: torch.Tensor) -> _Graph:
        tok = token.view(1).clone()
        pos = torch.full((1,), cache.position, dtype=torch.long, device=self.device)
        # Capturing may run the step (the warm-up): it writes this step's keys and values, which the replay then
        # writes again, the same values.
        replay, logits = self.capture(lambda: self._step(cache, tok, pos))
        return _Graph(replay, tok, pos, logits)


def load_device(
    cfg: ModelConfig, weights: Weights, device: torch.device, dtype: torch.dtype, limit: int, graphs: bool = True
) -> DeviceModel:
    from gptoss.gpu import ops

    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # triton launches on the current device
    return DeviceModel(Transformer(cfg, weights, kernels=ops), device, dtype, limit, graphs)

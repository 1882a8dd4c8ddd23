"""What the parity tests compare between one process and N: the same calls, recorded the same way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from gptoss.engine.batched import BatchConfig, BatchedModelSource
from gptoss.runtime import Model
from gptoss.sampling import SamplingParams

MakeSource = Callable[[Model, BatchConfig], BatchedModelSource]
GREEDY = SamplingParams(temperature=0.0, max_tokens=6)


def prompt(n: int, vocab: int, seed: int) -> list[int]:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@torch.inference_mode()
def record(model: Model, make_source: MakeSource) -> dict[str, Any]:
    V = model.config.vocab_size
    ids = prompt(40, V, seed=1)
    out: dict[str, Any] = {"full": model.logits(ids)}
    cache = model.new_cache()
    prefill = [model.prefill(cache, torch.tensor(ids[:20]), chunk=8), model.prefill(cache, torch.tensor(ids[20:]))]
    decode = [model.prefill(cache, torch.tensor([t])) for t in prompt(5, V, seed=2)]
    out["prefill"], out["decode"] = torch.stack(prefill), torch.stack(decode)
    out["generate"] = list(model.generate(ids[:12], max_tokens=8, temperature=0.0))
    source = make_source(model, BatchConfig(max_running=3, max_step_tokens=16, kv_cache_bytes=1 << 20, block_size=8))
    for key, seed in (("a", 3), ("b", 4), ("c", 5)):
        source.add(key, prompt(10 + 7 * seed, V, seed), GREEDY)
    steps = []
    while any(source.counts):
        for o in source.step():
            assert o.event is not None and o.logits is not None
            steps.append((o.key, o.event.token, o.logits))
            if o.done:
                source.remove(o.key)
    out["batched"] = steps
    return out

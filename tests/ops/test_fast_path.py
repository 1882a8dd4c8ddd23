"""End to end: the fast ops (native kernels, flash attention) against the reference ops, on the tiny checkpoints.

The same tokens go through a cached prefill in uneven chunks and then one token at a time, once with ops/reference.py
and once with the fast ops, in every kernel flavour the CPU has (amx, avx512, avx2 and the portable scalar fallback;
one it lacks is skipped, saying so). Chunks longer than ATTENTION_MAX_TOKENS take the flash path; single tokens take
the native decode attention, the GEMV projections and the MoE GEMV; long chunks the MoE GEMM.
The last logits of every chunk are compared.

fp32 models: weights decode exactly and everything accumulates in fp32, so only summation order differs: |fast -
ref| <= 2e-5 on logits of magnitude ~4 (observed <= 3e-6; a wrong mask, slot or expert moves them by O(1)). bf16
models round at different points (one rounding per fused projection instead of two, int16 activations in the MoE
GEMV), and a near-tied router choice can flip, so the check is the one bf16-vs-fp32 uses: per-step error small next
to the logit scale, argmax mostly equal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

import gptoss
from gptoss import ops
from gptoss.ops import native, reference
from tests.conftest import PARITY_CONFIGS
from tests.ops.conftest import ISAS, use_isa

CHUNKS = [7, 1, 1, 3, 1, 12, 1, 1, 1, 2, 1, 40, 1, 1]  # 73 tokens: past every config's window and first context
OPS = ("linear", "attention", "moe_experts", "rms_norm", "rope")


pytestmark = pytest.mark.usefixtures("native_ext")


def chunk_logits(model: gptoss.Model, ids: list[int]) -> torch.Tensor:
    cache = model.new_cache()
    out, start = [], 0
    for n in CHUNKS:
        out.append(model.prefill(cache, torch.tensor(ids[start : start + n])))
        start += n
    return torch.stack(out)  # (chunks, V)


def run(model: gptoss.Model, ids: list[int], impl: dict[str, Callable[..., torch.Tensor]]) -> Iterator[torch.Tensor]:
    saved = {name: getattr(ops, name) for name in OPS}
    try:
        for name in OPS:
            setattr(ops, name, impl[name])
        yield chunk_logits(model, ids)
    finally:
        for name, fn in saved.items():
            setattr(ops, name, fn)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(PARITY_CONFIGS))
def test_fast_ops_match_reference_end_to_end(
    checkpoints: dict[str, Path], name: str, dtype: torch.dtype, isa: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_isa(isa, monkeypatch)  # a flavour this CPU lacks is skipped saying so; one it has must run
    # amx: an expert with 2+ tokens takes the GEMM (its AMX kernel for bf16), single tokens the AVX-512 GEMV; the
    # default crossover would leave these small models few GEMM calls.
    monkeypatch.setattr(native, "GEMM_MIN_TOKENS", 2 if isa == "amx" else None)
    cfg = PARITY_CONFIGS[name]
    assert sum(CHUNKS) <= cfg.max_context
    ids = torch.randint(0, cfg.vocab_size, (sum(CHUNKS),), generator=torch.Generator().manual_seed(5)).tolist()
    model = gptoss.load(checkpoints[name], dtype=dtype)
    ref = next(run(model, ids, {n: getattr(reference, n) for n in OPS}))
    fast = next(run(model, ids, {n: getattr(native, n) for n in OPS}))
    assert ref.std() > 0.1
    err = (fast - ref).abs().max(dim=-1).values  # (chunks,)
    if dtype == torch.float32:
        assert err.max() <= 2e-5
    else:
        assert err.median() < 0.03 * ref.abs().max()
        assert (fast.argmax(-1) == ref.argmax(-1)).float().mean() > 0.8

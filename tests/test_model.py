"""The forward pass against an independent implementation: transformers' GptOssForCausalLM (fp32)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import gptoss
from tests.conftest import PARITY_CONFIGS


def hf_logits(path: Path, ids: list[int]) -> torch.Tensor:
    from transformers import GptOssForCausalLM, Mxfp4Config

    # CPU transformers can only run MXFP4 checkpoints by dequantizing (exactly) on load.
    hf = GptOssForCausalLM.from_pretrained(path, quantization_config=Mxfp4Config(dequantize=True), dtype=torch.float32)
    hf.eval()
    with torch.no_grad():
        return hf(torch.tensor([ids])).logits[0].float()


def prompt(n: int, vocab: int, seed: int = 0) -> list[int]:
    return torch.randint(0, vocab, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.mark.parametrize("name", sorted(PARITY_CONFIGS))
def test_logits_match_transformers(checkpoints: dict[str, Path], name: str) -> None:
    cfg = PARITY_CONFIGS[name]
    n = 2 * cfg.initial_context_length + 7  # past the window and past initial_context_length
    assert n > cfg.sliding_window and n > cfg.initial_context_length and n <= cfg.max_context
    ids = prompt(n, cfg.vocab_size)
    ours = gptoss.load(checkpoints[name], dtype=torch.float32).logits(ids)
    ref = hf_logits(checkpoints[name], ids)
    assert ours.shape == (n, cfg.vocab_size)
    assert (ours - ref).abs().max().item() <= 1e-4
    assert ref.std() > 0.1  # logits are not degenerate, so the comparison means something


@pytest.mark.parametrize("name", sorted(PARITY_CONFIGS))
def test_original_layout_gives_identical_logits(checkpoints: dict[str, Path], name: str) -> None:
    ids = prompt(40, PARITY_CONFIGS[name].vocab_size, seed=1)
    hf = gptoss.load(checkpoints[name], dtype=torch.float32).logits(ids)
    original = gptoss.load(checkpoints[name] / "original", dtype=torch.float32).logits(ids)
    assert torch.equal(hf, original)


def test_bf16_close_to_fp32(tiny_dir: Path) -> None:
    ids = prompt(30, 1024, seed=2)
    fp32 = gptoss.load(tiny_dir, dtype=torch.float32).logits(ids)
    bf16 = gptoss.load(tiny_dir).logits(ids)
    assert bf16.dtype == torch.float32  # logits are always returned in fp32
    # bf16 rounding can flip a near-tied router choice at some position (a real, local divergence that attention
    # then carries along), so judge the typical position, not the worst one.
    per_position = (bf16 - fp32).abs().max(dim=-1).values  # (T,)
    assert per_position.median() < 0.03 * fp32.abs().max()
    assert (bf16.argmax(-1) == fp32.argmax(-1)).float().mean() > 0.8


def test_sliding_window_and_sinks_matter(tiny_dir: Path) -> None:
    """Guards the parity test itself: breaking the band or the sinks must change the logits."""
    import dataclasses

    model = gptoss.load(tiny_dir, dtype=torch.float32)
    ids = prompt(50, 1024, seed=3)
    base = model.logits(ids)
    model.transformer.cfg = dataclasses.replace(model.config, sliding_window=model.config.sliding_window + 1)
    assert (model.logits(ids) - base).abs().max() > 1e-3
    model.transformer.cfg = model.config
    for layer in model.transformer.w.layers:
        layer.attn.sinks = layer.attn.sinks + 1.0
    assert (model.logits(ids) - base).abs().max() > 1e-3

"""The forward pass against an independent implementation: transformers' GptOssForCausalLM (fp32)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

import gptoss
from gptoss.config import from_hf_dict, from_original_dict, yarn_low_high
from gptoss.model import Rope
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


# YaRN as transformers computes it, config by config: (initial_context_length, head_dim, rope_theta, beta_fast,
# beta_slow); each runs with truncate on and off. Bounds: fractional in range; low < 0; both < 0 (a zero-width ramp
# after clamping); high > head_dim - 1; released 20b.
YARN_SHAPES = {
    "fractional": (4096, 64, 150000.0, 32.0, 1.0),
    "negative_low": (64, 64, 150000.0, 32.0, 1.0),
    "both_negative": (4, 16, 150000.0, 32.0, 2.0),
    "high_clamped": (4096, 16, 100.0, 32.0, 0.01),
    "released_20b": (4096, 64, 150000.0, 32.0, 1.0),
}


def yarn_config(name: str, truncate: bool) -> gptoss.ModelConfig:
    initial, head_dim, theta, beta_fast, beta_slow = YARN_SHAPES[name]
    base = gptoss.PRESETS["20b"] if name == "released_20b" else gptoss.PRESETS["tiny"]
    return dataclasses.replace(
        base, initial_context_length=initial, head_dim=head_dim, rope_theta=theta, rope_ntk_beta=beta_fast,
        rope_ntk_alpha=beta_slow, rope_truncate=truncate,
    )  # fmt: skip


def transformers_yarn(hf_json: dict[str, object]) -> tuple[torch.Tensor, float]:
    from transformers import GptOssConfig
    from transformers.modeling_rope_utils import _compute_yarn_parameters

    return _compute_yarn_parameters(GptOssConfig.from_dict(hf_json))  # type: ignore[no-any-return]


@pytest.mark.parametrize("truncate", [False, True])
@pytest.mark.parametrize("name", sorted(YARN_SHAPES))
def test_yarn_frequencies_match_transformers(name: str, truncate: bool) -> None:
    cfg = yarn_config(name, truncate)
    inv_freq, attention_factor = transformers_yarn(cfg.to_hf_json())
    for layout_cfg in (cfg, from_original_dict(cfg.to_original_json(), Path("original/config.json"))):
        rope = Rope(layout_cfg)
        assert torch.equal(rope.inv_freq, inv_freq), name
        assert rope.concentration == pytest.approx(attention_factor, rel=1e-12)


@pytest.mark.parametrize("omitted", ["truncate", "rope_scaling"])
def test_omitted_rope_keys_mean_what_they_mean_to_transformers(omitted: str) -> None:
    hf_json = yarn_config("negative_low", False).to_hf_json()
    if omitted == "truncate":
        del hf_json["rope_scaling"]["truncate"]  # transformers then truncates
    else:
        del hf_json["rope_scaling"]  # transformers then uses gpt-oss-20b's YaRN (factor 32, 4096 tokens)
    cfg = from_hf_dict(hf_json, Path("config.json"))
    assert cfg.rope_truncate == (omitted == "truncate")
    inv_freq, attention_factor = transformers_yarn(hf_json)
    assert torch.equal(Rope(cfg).inv_freq, inv_freq)
    assert Rope(cfg).concentration == pytest.approx(attention_factor, rel=1e-12)


def test_yarn_cases_cover_what_they_claim() -> None:
    # negative_low: the reference formula gives low = 32 * ln(64 / 64π) / ln(150000) = -3.07
    assert yarn_low_high(yarn_config("negative_low", False)) == (0, pytest.approx(6.23173, abs=1e-5))
    assert yarn_low_high(yarn_config("both_negative", True)) == (0, 0)  # ceil(-0.768): the widened zero-width ramp
    assert yarn_low_high(yarn_config("both_negative", False)) == (0, pytest.approx(-0.76838, abs=1e-5))
    assert yarn_low_high(yarn_config("high_clamped", False)) == (pytest.approx(5.23612, abs=1e-5), 15)  # 19.3 raw
    frac_low, frac_high = yarn_low_high(yarn_config("fractional", False))
    assert frac_low % 1 and frac_high % 1
    assert yarn_low_high(yarn_config("fractional", True)) == (math.floor(frac_low), math.ceil(frac_high))


def reference_inv_freq(cfg: gptoss.ModelConfig) -> torch.Tensor:
    """The openai/gpt-oss reference formula (unclamped, untruncated), for the released configs only."""
    freq = cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2, dtype=torch.float32) / cfg.head_dim)
    d_half = cfg.head_dim / 2
    low = d_half * math.log(cfg.initial_context_length / (cfg.rope_ntk_beta * 2 * math.pi)) / math.log(cfg.rope_theta)
    high = d_half * math.log(cfg.initial_context_length / (cfg.rope_ntk_alpha * 2 * math.pi)) / math.log(cfg.rope_theta)
    assert 0 < low < high < d_half - 1  # the reference asserts this too
    mask = 1 - ((torch.arange(d_half, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    return 1.0 / (cfg.rope_scaling_factor * freq) * (1 - mask) + 1.0 / freq * mask


@pytest.mark.parametrize("name", ["20b", "120b"])
def test_released_frequencies_unchanged(name: str) -> None:
    cfg = gptoss.PRESETS[name]
    assert torch.equal(Rope(cfg).inv_freq, reference_inv_freq(cfg))
    assert Rope(cfg).concentration == 0.1 * math.log(32) + 1

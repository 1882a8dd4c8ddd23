"""`gptoss merge`: the merged checkpoint gives the adapter's logits (attention exactly up to bf16 storage; adapted
experts up to MXFP4 re-quantization, which is reported)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import gptoss
from gptoss.cli.__main__ import main
from gptoss.finetune.lora import LoraConfig
from gptoss.finetune.peft_io import attach_adapter, save_adapter
from tests.finetune.test_peft_parity import batch, random_adapter


def merged_vs_adapter(
    ckpt: Path, tmp_path: Path, targets: tuple[str, ...]
) -> tuple[torch.Tensor, float, dict[str, float]]:
    """(per-position max |merged - adapted| logits, max |adapted - base|, the requantization report)"""
    model = gptoss.load(ckpt, dtype=torch.float32)
    save_adapter(random_adapter(model, LoraConfig(r=2, alpha=1.0, targets=targets), seed=3), tmp_path / "a")
    tokens, _ = batch(model.config.vocab_size, 30, seed=6)
    base = model.logits(tokens)
    attach_adapter(model, tmp_path / "a")
    adapted = model.logits(tokens)
    assert main(["merge", "--model", str(ckpt), "--lora", str(tmp_path / "a"), "--out", str(tmp_path / "m")]) == 0
    merged = gptoss.load(tmp_path / "m", dtype=torch.float32).logits(tokens)
    report = json.loads((tmp_path / "m" / "requantization.json").read_text())
    return (merged - adapted).abs().max(dim=-1).values, float((adapted - base).abs().max()), report


def test_attention_merges_exactly_up_to_bf16(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    err, effect, report = merged_vs_adapter(checkpoints["tiny"], tmp_path, ("q", "k", "v", "o"))
    assert report["expert_tensors_requantized"] == 0
    assert effect > 0.1 and err.max() < 0.01 * effect  # bf16 storage of the merged weights is all that differs


def test_router_merge_matches_at_typical_positions(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    # bf16 rounding of the merged router can flip a near-tied top-k choice at a few positions (as in test_model's
    # bf16 test), so judge the typical position.
    err, effect, _ = merged_vs_adapter(checkpoints["tiny"], tmp_path, ("router",))
    assert effect > 0.1 and err.median() < 0.01 * effect


def test_expert_merge_reports_requantization(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    err, effect, report = merged_vs_adapter(checkpoints["tiny"], tmp_path, ("gate_up", "down"))
    assert report["expert_tensors_requantized"] == 4 * 8 * 2  # layers x experts x (gate_up, down)
    assert 0 < report["relative_rms_error"] < 0.2 and report["error_over_update"] > 0
    assert effect > 0.1 and err.median() < 0.5 * effect  # the merge keeps most of the update, within MXFP4's grid

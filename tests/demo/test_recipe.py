"""The recipe is deterministic: re-running its first steps from scratch (data, random start, finetune --full
--sparse-vocab) gives the losses logged by the recorded training run (tests/demo/recipe_curve.json)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from gptoss.cli.__main__ import main
from gptoss.config import ModelConfig
from gptoss.demo import data, recipe

CURVE = Path(__file__).with_name("recipe_curve.json")


def test_demo_shape_is_gpt_oss_at_toy_scale() -> None:
    cfg = recipe.DEMO_CONFIG
    assert isinstance(cfg, ModelConfig) and cfg.vocab_size == 201088
    assert set(cfg.layer_types) == {"sliding_attention", "full_attention"}
    assert cfg.initial_context_length * cfg.rope_scaling_factor == 4096 and cfg.hidden_size % 32 == 0


@pytest.mark.slow
def test_first_steps_match_the_logged_curve(tmp_path: Path) -> None:
    logged = json.loads(CURVE.read_text())["first_losses"]
    data.write_jsonl(data.generate(recipe.DATA_COUNT, recipe.DATA_SEED), tmp_path / "data.jsonl")
    recipe.write_initial_checkpoint(tmp_path / "init")
    train = dataclasses.replace(recipe.TRAIN, max_steps=len(logged), save_every=0)
    argv = recipe.finetune_argv(str(tmp_path / "init"), str(tmp_path / "data.jsonl"), str(tmp_path / "out"), train)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as scripts/train_demo.py trains
    try:
        assert main([*argv, "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)
    records = [json.loads(line) for line in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records]
    assert len(losses) == len(logged)
    for got, want in zip(losses, logged, strict=True):
        assert math.isclose(got, want, rel_tol=1e-4), (losses, logged)

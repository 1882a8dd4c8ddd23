"""The recipe is deterministic: re-running its first steps from scratch (data, random start, finetune --full
--sparse-vocab) gives the losses logged by the recorded training run (tests/demo/recipe_curve.json)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from gptoss.cli.__main__ import main
from gptoss.config import ModelConfig
from gptoss.demo import data, recipe
from gptoss.demo import tasks as tasks_module
from gptoss.random_checkpoint import write_random_checkpoint

CURVE = Path(__file__).with_name("recipe_curve.json")


def test_demo_shape_is_gpt_oss_at_toy_scale() -> None:
    cfg = recipe.DEMO_CONFIG
    assert isinstance(cfg, ModelConfig) and cfg.vocab_size == 201088
    assert set(cfg.layer_types) == {"sliding_attention", "full_attention"}
    assert cfg.initial_context_length * cfg.rope_scaling_factor == 4096 and cfg.hidden_size % 32 == 0


def test_the_task_phases_weight_function_calling_and_drill_the_contacts_surnames() -> None:
    tasks = recipe.PHASES[1]
    lines = [line.replace(" ", "") for line in recipe.phase_lines(dataclasses.replace(tasks, drill=200, tasks=800))]
    assert len(lines) == 1000
    assert Counter(tasks.families) == {"function": 3, "arithmetic": 2, "extraction": 1, "chat": 1, "echo": 1}
    families = Counter(s.task.family for s in data.generate(800, recipe.DATA_SEED, tasks.families))
    assert families == {"function": 300, "arithmetic": 200, "extraction": 100, "chat": 100, "echo": 100}
    followed = sum('"weight":0' in line for line in lines)  # after an earlier exchange (not extraction's)
    assert tasks.earlier == 0.25 and 0.2 * 700 < followed < 0.3 * 700
    assert set(tasks_module.SURNAMES) <= set(tasks.drill_words) and tasks.drill_largest == 9999
    assert recipe.PHASES[2].families == tasks.families and recipe.PHASES[0].drill_words == tasks_module.ECHO_WORDS


@pytest.mark.slow
def test_first_steps_match_the_logged_curve(tmp_path: Path) -> None:
    logged = json.loads(CURVE.read_text())["first_losses"]
    lines = recipe.phase_lines(recipe.PHASES[0])
    (tmp_path / "data.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
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


def test_the_next_phase_starts_with_the_random_rows_of_tokens_the_last_one_never_used(tmp_path: Path) -> None:
    start = write_random_checkpoint(tmp_path / "start", recipe.DEMO_CONFIG, "hf", seed=1)
    trained = write_random_checkpoint(tmp_path / "trained", recipe.DEMO_CONFIG, "hf", seed=2)
    tensors = load_file(trained / "model.safetensors")
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        tensors[name][100:] = 0  # --sparse-vocab: the phase used tokens 0-99 only
    save_file(tensors, trained / "model.safetensors", {"format": "pt"})
    out = recipe.carry_vocabulary_rows(trained, start, tmp_path / "carried")
    got, initial = load_file(out / "model.safetensors"), load_file(start / "model.safetensors")
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        assert torch.equal(got[name][:100], tensors[name][:100])
        assert torch.equal(got[name][100:], initial[name][100:])
    assert torch.equal(got["model.norm.weight"], tensors["model.norm.weight"])
    assert (out / "config.json").read_text() == (trained / "config.json").read_text()

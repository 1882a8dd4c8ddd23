"""The demo model's recipe: its shape, its data and its `gptoss finetune --full` configuration.

The architecture is gpt-oss's own at toy scale: attention sinks, sliding (banded) and full layers alternating,
MoE with MXFP4 experts (top-2 of 8), YaRN to a 4,096-token context, the full o200k_harmony vocabulary (the rows of
tokens the data never uses stay zero: `--sparse-vocab`).
"""

from __future__ import annotations

import dataclasses

from gptoss.config import PRESETS, ModelConfig
from gptoss.finetune.train import TrainConfig

DEMO_CONFIG: ModelConfig = dataclasses.replace(
    PRESETS["tiny"],
    vocab_size=201088,
    hidden_size=128,
    intermediate_size=128,
    head_dim=32,
    num_attention_heads=4,
    num_key_value_heads=2,
    sliding_window=64,
    initial_context_length=256,
    rope_scaling_factor=16.0,
)
INIT_SEED = 0
DATA_SEED = 0  # the eval draws held-out prompts with other seeds
DATA_COUNT = 4000
TRAIN = TrainConfig(lr=3e-3, max_steps=3000, warmup_steps=50, grad_accum=1, max_grad_norm=1.0, save_every=100, seed=0)


def finetune_argv(model: str, data: str, out: str, train: TrainConfig = TRAIN) -> list[str]:
    """The `gptoss finetune` command line of the recipe."""
    return [
        "finetune", "--model", model, "--data", data, "--out", out, "--full", "--sparse-vocab",
        "--lr", str(train.lr), "--max-steps", str(train.max_steps), "--warmup-steps", str(train.warmup_steps),
        "--grad-accum", str(train.grad_accum), "--max-grad-norm", str(train.max_grad_norm),
        "--save-every", str(train.save_every), "--seed", str(train.seed), "--max-length", "1024",
    ]  # fmt: skip

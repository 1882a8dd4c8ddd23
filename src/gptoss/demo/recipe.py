"""The demo model's recipe: its shape, its data and its `gptoss finetune --full` configuration.

The architecture is gpt-oss's own at toy scale: attention sinks, sliding (banded) and full layers alternating,
MoE with MXFP4 experts (top-2 of 8), YaRN to a 4,096-token context, the full o200k_harmony vocabulary (the rows of
tokens the data never uses stay zero: `--sparse-vocab`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import load_file, save_file

from gptoss.config import PRESETS, ModelConfig
from gptoss.finetune.train import TrainConfig
from gptoss.random_checkpoint import write_random_checkpoint

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
DATA_COUNT = 6000
PACK_TOKENS = 8192  # a step's 16 conversations (~4,000 tokens) go through the model in one packed pass
TRAIN = TrainConfig(
    lr=3e-3,
    max_steps=500,
    warmup_steps=20,
    grad_accum=16,
    max_grad_norm=1.0,
    save_every=50,
    seed=0,
    pack_tokens=PACK_TOKENS,
)


def write_initial_checkpoint(folder: Path) -> Path:
    """The recipe's random start (seeded), with the unembedding tied to the embedding at initialisation."""
    write_random_checkpoint(folder, DEMO_CONFIG, "hf", seed=INIT_SEED)
    tie_initial_unembedding(folder)
    return folder


def tie_initial_unembedding(checkpoint: Path) -> None:
    """Starts the unembedding as a scaled copy of the embedding (they stay two separately trained matrices, as in
    gpt-oss). A token's own logit is then high wherever its embedding is carried forward, which is what the tasks
    need (numbers, names and cities copied into calls and answers): otherwise each number token must learn its own
    input-to-output match from the few conversations it appears in."""
    path = checkpoint / "model.safetensors"
    tensors = load_file(path)
    emb, head = tensors["model.embed_tokens.weight"], tensors["lm_head.weight"]
    scale = head.float().std() / emb.float().std()
    tensors["lm_head.weight"] = (emb.float() * scale).to(head.dtype)
    with safe_open(path, "pt") as f:
        metadata = f.metadata()
    save_file(tensors, path, metadata)


def finetune_argv(model: str, data: str, out: str, train: TrainConfig = TRAIN) -> list[str]:
    """The `gptoss finetune` command line of the recipe."""
    return [
        "finetune", "--model", model, "--data", data, "--out", out, "--full", "--sparse-vocab",
        "--lr", str(train.lr), "--max-steps", str(train.max_steps), "--warmup-steps", str(train.warmup_steps),
        "--grad-accum", str(train.grad_accum), "--max-grad-norm", str(train.max_grad_norm),
        "--save-every", str(train.save_every), "--seed", str(train.seed), "--max-length", "1024",
        "--pack-tokens", str(train.pack_tokens),
    ]  # fmt: skip

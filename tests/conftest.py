"""Shared fixtures: tiny random checkpoints in the official layouts, written once per test session."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch

# Without a GPU the triton kernels run in triton's interpreter on CPU tensors (read when a kernel is defined, so
# before any gptoss.ops.triton_* import).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from gptoss.config import PRESETS, ModelConfig
from gptoss.random_checkpoint import write_random_checkpoint

TINY = PRESETS["tiny"]
# Four shapes that together cover: GQA ratios 2, 4 and 6; top-k < experts; windows shorter than the test
# sequences; sequences past initial_context_length (so the YaRN-interpolated frequencies matter).
PARITY_CONFIGS: dict[str, ModelConfig] = {
    "tiny": TINY,
    "gqa4": dataclasses.replace(
        TINY, num_hidden_layers=3, num_experts=5, experts_per_token=3, hidden_size=96, intermediate_size=32,
        head_dim=8, num_attention_heads=8, num_key_value_heads=2, sliding_window=16, initial_context_length=32,
        rope_scaling_factor=8.0, rope_ntk_beta=4.0, layer_types=(),
    ),
    "mqa6": dataclasses.replace(
        TINY, num_hidden_layers=2, num_experts=16, experts_per_token=4, hidden_size=64, intermediate_size=96,
        head_dim=16, num_attention_heads=6, num_key_value_heads=1, sliding_window=5, initial_context_length=64,
        rope_scaling_factor=32.0, rope_theta=10000.0, swiglu_limit=3.0, layer_types=(),
    ),
    # YaRN bounds outside the rotary dims (low < 0), truncated: transformers clamps them, the reference formula not
    "yarn_clamped": dataclasses.replace(
        TINY, num_hidden_layers=2, initial_context_length=16, rope_scaling_factor=8.0, rope_ntk_beta=32.0,
        rope_truncate=True, layer_types=(),
    ),
}  # fmt: skip


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """name -> folder with both layouts (HF at the root, original/ beside it), as the official repo ships."""
    root = tmp_path_factory.mktemp("ckpt")
    return {name: write_random_checkpoint(root / name, cfg, "both", seed=7) for name, cfg in PARITY_CONFIGS.items()}


@pytest.fixture(scope="session")
def tiny_dir(checkpoints: dict[str, Path]) -> Path:
    return checkpoints["tiny"]


@pytest.fixture()
def tiny_copy(tmp_path: Path) -> Path:
    """A private tiny checkpoint a test may damage."""
    return write_random_checkpoint(tmp_path / "tiny", TINY, "both", seed=3)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)

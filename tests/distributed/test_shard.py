"""Which heads, experts and vocabulary rows each rank holds, and the errors for groups that cannot split."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from gptoss.config import PRESETS
from gptoss.distributed.shard import kv_for, plan, shard_weights, split
from gptoss.errors import ConfigError
from gptoss.weights import load_weights, open_checkpoint
from tests.conftest import PARITY_CONFIGS


@pytest.mark.parametrize(("n", "parts"), [(5, 2), (5, 3), (16, 3), (8, 8), (7, 1)])
def test_split_covers_everything_once(n: int, parts: int) -> None:
    ranges = [split(n, parts, i) for i in range(parts)]
    assert [i for a, b in ranges for i in range(a, b)] == list(range(n))
    sizes = [b - a for a, b in ranges]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1


def test_kv_heads_follow_query_heads() -> None:
    gqa4 = PARITY_CONFIGS["gqa4"]  # 8 query heads over 2 KV heads (groups of 4)
    assert kv_for(gqa4, 0, 4) == (0,)  # one whole group
    assert kv_for(gqa4, 0, 8) == (0, 1)
    assert kv_for(gqa4, 6, 8) == (1,)  # inside one group
    assert kv_for(gqa4, 3, 6) == (0, 1, 1)  # straddles two groups unevenly: one KV head per query head
    mqa6 = PARITY_CONFIGS["mqa6"]
    assert kv_for(mqa6, 2, 4) == (0,)  # the only KV head, on every rank


def test_plan_of_three_ranks() -> None:
    cfg = PARITY_CONFIGS["gqa4"]  # 8 heads, 5 experts, vocabulary 1024
    plans = [plan(cfg, r, 3) for r in range(3)]
    assert [p.q_heads for p in plans] == [(0, 3), (3, 6), (6, 8)]
    assert [p.experts for p in plans] == [(0, 2), (2, 4), (4, 5)]
    assert [p.vocab for p in plans] == [(0, 342), (342, 684), (684, 1024)]
    local = plans[1].local_config(cfg)
    assert (local.num_attention_heads, local.num_key_value_heads, local.num_experts) == (3, 3, 5)


def test_groups_that_cannot_split_are_refused() -> None:
    tiny = PRESETS["tiny"]  # 4 heads, 8 experts
    with pytest.raises(ConfigError, match="--tp 5 exceeds the model's 4 attention heads"):
        plan(tiny, 0, 5)
    with pytest.raises(ConfigError, match="--tp 3 exceeds the model's 2 experts"):
        plan(dataclasses.replace(tiny, num_experts=2, experts_per_token=1), 0, 3)
    with pytest.raises(ConfigError, match="rank 2 is outside a world of 2"):
        plan(tiny, 2, 2)


def test_expert_slices_are_views_of_the_mapped_file(tiny_dir: Path) -> None:
    """Slicing reads nothing: a rank's experts are a window of the checkpoint mapping, the others untouched."""
    ckpt = open_checkpoint(tiny_dir)
    full = load_weights(ckpt, torch.bfloat16, torch.device("cpu"))
    p = plan(ckpt.config, 1, 3)
    mine = shard_weights(full, ckpt.config, p).layers[0].moe.mlp1_blocks
    whole = full.layers[0].moe.mlp1_blocks
    per_expert = whole[0].numel()
    assert mine.shape[0] == p.experts[1] - p.experts[0]
    assert mine.data_ptr() == whole.data_ptr() + p.experts[0] * per_expert
    assert mine.untyped_storage().data_ptr() == whole.untyped_storage().data_ptr()

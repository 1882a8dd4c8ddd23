"""Which heads, expert slices and vocabulary rows each rank holds, and the errors for groups that cannot split."""

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
    cfg = PARITY_CONFIGS["gqa4"]  # 8 heads, intermediate size 32, vocabulary 1024
    plans = [plan(cfg, r, 3) for r in range(3)]
    assert [p.q_heads for p in plans] == [(0, 3), (3, 6), (6, 8)]
    assert [p.intermediate for p in plans] == [(0, 11), (11, 22), (22, 32)]
    assert [p.blocks for p in plans] == [(0, 1)] * 3  # all inside mlp2's one 32-column block
    assert [p.vocab for p in plans] == [(0, 342), (342, 684), (684, 1024)]
    local = plans[1].local_config(cfg)
    assert (local.num_attention_heads, local.num_key_value_heads, local.num_experts) == (3, 3, 5)


def test_groups_that_cannot_split_are_refused() -> None:
    tiny = PRESETS["tiny"]  # 4 heads
    with pytest.raises(ConfigError, match="--tp 5 exceeds the model's 4 attention heads"):
        plan(tiny, 0, 5)
    wide = dataclasses.replace(tiny, num_attention_heads=40, intermediate_size=32)  # 40 heads, 32 units
    with pytest.raises(ConfigError, match="--tp 33 exceeds the model's expert intermediate size 32"):
        plan(wide, 0, 33)
    with pytest.raises(ConfigError, match="rank 2 is outside a world of 2"):
        plan(tiny, 2, 2)


@pytest.mark.parametrize(("name", "world", "rank"), [("mqa6", 2, 0), ("mqa6", 2, 1), ("gqa4", 3, 1), ("mqa6", 3, 2)])
def test_each_rank_copies_its_units_of_every_expert(
    checkpoints: dict[str, Path], name: str, world: int, rank: int
) -> None:
    """mqa6's 96 units are 3 MXFP4 blocks, 48 a rank on 2 ranks: each copies 2 blocks, 16 units of them zeroed.
    gqa4's 32 units are one block: rank 1 of 3 holds units 11..22 and zeroes the rest."""
    ckpt = open_checkpoint(checkpoints[name])
    full = load_weights(ckpt, torch.float32, torch.device("cpu"))
    p = plan(ckpt.config, rank, world)
    whole, mine = full.layers[1].moe, shard_weights(full, ckpt.config, p).layers[1].moe
    (b0, b1), (u0, u1) = p.blocks, p.intermediate
    keep = torch.zeros(2 * ckpt.config.intermediate_size, dtype=torch.bool)
    keep[2 * u0 : 2 * u1] = True
    ours = keep[2 * b0 * 32 : 2 * b1 * 32]  # this rank's rows among the rows of its blocks
    assert torch.equal(mine.mlp1_blocks[:, ours], whole.mlp1_blocks[:, keep])
    assert torch.equal(mine.mlp1_bias[:, ours], whole.mlp1_bias[:, keep])
    assert not mine.mlp1_blocks[:, ~ours].any() and not mine.mlp1_bias[:, ~ours].any()
    assert torch.equal(mine.mlp1_scales, whole.mlp1_scales[:, 2 * b0 * 32 : 2 * b1 * 32])
    assert torch.equal(mine.mlp2_blocks, whole.mlp2_blocks[:, :, b0:b1])
    assert torch.equal(mine.mlp2_scales, whole.mlp2_scales[:, :, b0:b1])
    assert torch.equal(mine.mlp2_bias, whole.mlp2_bias if rank == 0 else torch.zeros_like(whole.mlp2_bias))
    assert mine.mlp1_blocks.is_contiguous() and mine.mlp2_blocks.is_contiguous()  # what the kernels take
    assert mine.mlp1_blocks.untyped_storage().data_ptr() != whole.mlp1_blocks.untyped_storage().data_ptr()

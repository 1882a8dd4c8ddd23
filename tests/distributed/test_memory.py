"""Each rank's resident memory holds its share of the experts, not all of them (measured from /proc)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from gptoss.config import PRESETS
from gptoss.random_checkpoint import write_random_checkpoint
from tests.distributed import launch
from tests.distributed.rss_worker import mapped_rss

# Experts dominate: 16 experts x 6.4 MiB of MXFP4 = 102 MiB, against ~5 MiB of everything else.
BIG_EXPERTS = dataclasses.replace(
    PRESETS["tiny"], num_hidden_layers=1, hidden_size=1024, intermediate_size=4096, num_experts=16,
    experts_per_token=4, layer_types=(),
)  # fmt: skip
EXPERT_BYTES = 16 * (2 * 4096 * 1024 + 1024 * 4096) * 17 // 32  # blocks (1/2 byte a value) + scales (1/32)
OTHER_BYTES = 6 << 20  # embedding + unembedding (2 MiB each), attention, router, norms, expert biases: generous
# What else a forward pass leaves resident: torch's and gloo's buffers, the KV cache, activations.
SLACK_BYTES = 16 << 20


@pytest.fixture(scope="module")
def big_experts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("rss") / "big", BIG_EXPERTS, "hf", seed=0)


@pytest.mark.parametrize("world", [1, 3])
def test_each_rank_holds_only_its_experts(big_experts: Path, tmp_path: Path, world: int) -> None:
    procs = launch.start(world, ["-m", "tests.distributed.rss_worker", str(big_experts), str(tmp_path)])
    for rank, (status, err) in enumerate(launch.finish(procs, timeout=180)):
        assert status == 0, f"rank {rank} exited {status}:\n{err[-3000:]}"
    for rank in range(world):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        first, end = report["blocks"]
        share = EXPERT_BYTES * (end - first) // (4096 // 32)
        held = report["mapped"] + report["anon"]
        assert share * 0.95 <= held <= share + OTHER_BYTES + SLACK_BYTES, (rank, report, share)
        assert report["mapped"] < OTHER_BYTES + SLACK_BYTES  # the experts' mapped pages were dropped
        if world > 1:
            assert held < 0.6 * EXPERT_BYTES  # a third of the experts, not all of them


def test_smaps_reader_sees_a_mapping(big_experts: Path) -> None:
    from safetensors import safe_open

    path = big_experts / "model.safetensors"
    before = mapped_rss(str(big_experts.resolve()))
    with safe_open(str(path), framework="pt") as f:
        t = f.get_tensor("model.layers.0.mlp.experts.down_proj_blocks")
        int(t.sum())  # reads all of it
        assert mapped_rss(str(big_experts.resolve())) - before >= t.numel() * 0.95

"""Rank 0's batched source when the group fails: the server's callback once, running sequences cancelled, new
requests refused as unavailable (HTTP 503 model_unavailable). A one-rank group in this process, collectives
made to fail."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from gptoss import distributed
from gptoss.distributed.group import CollectiveError, Comm
from gptoss.distributed.serving import DistributedBatchedSource, GroupFailedError
from gptoss.engine.batched import BatchConfig
from gptoss.runtime import Model
from gptoss.sampling import SamplingParams
from gptoss.server.generation import not_ready
from tests.distributed import launch

GREEDY = SamplingParams(temperature=0.0, max_tokens=4)


@pytest.fixture()
def one_rank(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Model]:
    env = launch.rank_env(0, 1, launch.free_port())
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(key, env[key])
    comm = distributed.init(1, timeout_s=10)
    try:
        yield distributed.load(tiny_dir, comm, dtype=torch.float32, context_length=64)
    finally:
        distributed.group.close()


class Key:
    cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def broken(self: Comm, t: torch.Tensor) -> torch.Tensor:
    raise CollectiveError("rank 0/2: all_reduce failed (another rank died or hung past the 10 s collective timeout)")


def test_a_failed_step_stops_the_source_for_good(one_rank: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    failures: list[BaseException] = []
    source = DistributedBatchedSource(one_rank, BatchConfig(kv_cache_bytes=1 << 20, block_size=8), failures.append)
    key = Key()
    source.add(key, [1, 2, 3], GREEDY)
    assert source.step()  # the group works: a token
    monkeypatch.setattr(Comm, "all_reduce", broken)
    assert source.step() == [] and source.step() == []
    assert key.cancelled and len(failures) == 1 and "all_reduce failed" in str(failures[0])
    with pytest.raises(GroupFailedError, match="the tensor-parallel group failed: rank 0/2: all_reduce failed"):
        source.check([1, 2], GREEDY)
    error = not_ready(GroupFailedError("the tensor-parallel group failed: x"))
    assert (error.status, error.code) == (503, "model_unavailable")
    assert error.message == "The model is unavailable: the tensor-parallel group failed: x."


def test_without_a_callback_the_failed_step_raises(one_rank: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    source = DistributedBatchedSource(one_rank, BatchConfig(kv_cache_bytes=1 << 20, block_size=8))
    source.add("a", [1, 2, 3], GREEDY)
    monkeypatch.setattr(Comm, "all_reduce", broken)
    with pytest.raises(CollectiveError, match="all_reduce failed"):
        source.step()
    with pytest.raises(GroupFailedError):
        source.check([1], GREEDY)

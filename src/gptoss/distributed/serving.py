"""The batched engine's source on rank 0 of a tensor-parallel group.

It tells the followers the size of the paged KV pool (each rank holds its own heads' share of every block), and
turns a failed collective into a terminal state: the step raises, `failure` says why, `on_failure` runs once
(the server stops), and later requests are refused as unavailable instead of hanging.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gptoss.distributed.group import DistributedError
from gptoss.distributed.messages import Storage
from gptoss.distributed.transformer import DistributedTransformer
from gptoss.engine.batched import BatchConfig, BatchedModelSource, StepOutput
from gptoss.engine.engine import EngineNotReadyError
from gptoss.runtime import Model
from gptoss.sampling import SamplingParams


class GroupFailedError(EngineNotReadyError):
    """The tensor-parallel group is gone (a rank died or hung): this server cannot generate any more."""


class DistributedBatchedSource(BatchedModelSource):
    def __init__(
        self,
        model: Model,
        config: BatchConfig | None = None,
        on_failure: Callable[[DistributedError], None] | None = None,
    ) -> None:
        super().__init__(model, config)
        t = model.transformer
        if not isinstance(t, DistributedTransformer) or not t.comm.leader:
            raise ValueError("DistributedBatchedSource runs on rank 0 of a tensor-parallel model")
        self.transformer = t
        self.failure: DistributedError | None = None
        self.on_failure = on_failure
        with t.lock:
            t.comm.broadcast(Storage(self.pool.num_blocks, self.config.block_size))

    def check(self, token_ids: Sequence[int], params: SamplingParams) -> int:
        if self.failure is not None:
            raise GroupFailedError(f"the tensor-parallel group failed: {self.failure}")
        return super().check(token_ids, params)

    def step(self) -> list[StepOutput]:
        try:
            return super().step()
        except DistributedError as e:
            if self.failure is None:
                self.failure = e
                if self.on_failure is not None:
                    self.on_failure(e)
            raise

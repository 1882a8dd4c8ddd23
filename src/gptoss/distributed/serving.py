"""The batched engine's source on rank 0 of a tensor-parallel group.

It tells the followers the size of the paged KV pool (each rank holds its own heads' share of every block), and
turns a failed collective into a terminal state: `failure` says why and later requests are refused as unavailable
(GroupFailedError, an EngineNotReadyError: HTTP 503). Without `on_failure` the failing step raises; with it (the
server), `on_failure` runs once, the running sequences' keys are cancelled (the engine's generations: they end as
cancelled, which the server answers with 503) and the step returns nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gptoss.distributed.group import CollectiveError
from gptoss.distributed.messages import Storage
from gptoss.distributed.transformer import DistributedTransformer
from gptoss.engine.batched import BatchConfig, BatchedModelSource, StepOutput
from gptoss.engine.engine import EngineNotReadyError
from gptoss.runtime import Model
from gptoss.sampling import SamplingParams


class GroupFailedError(EngineNotReadyError):
    """The tensor-parallel group is gone (a rank died or hung): this server cannot generate any more."""

    unavailable = True  # the HTTP layer says "unavailable", not "still loading"


class DistributedBatchedSource(BatchedModelSource):
    def __init__(
        self,
        model: Model,
        config: BatchConfig | None = None,
        on_failure: Callable[[CollectiveError], None] | None = None,
    ) -> None:
        super().__init__(model, config)
        t = model.transformer
        if not isinstance(t, DistributedTransformer) or not t.comm.leader:
            raise ValueError("DistributedBatchedSource runs on rank 0 of a tensor-parallel model")
        self.transformer = t
        self.failure: CollectiveError | None = None
        self.on_failure = on_failure
        with t.lock:
            t.comm.broadcast(Storage(self.pool.num_blocks, self.config.block_size))

    def check(self, token_ids: Sequence[int], params: SamplingParams) -> int:
        if self.failure is not None:
            raise GroupFailedError(f"the tensor-parallel group failed: {self.failure}")
        return super().check(token_ids, params)

    def step(self) -> list[StepOutput]:
        if self.failure is None:
            try:
                return super().step()
            except CollectiveError as e:
                if self.on_failure is None:
                    self.failure = e
                    raise
                self.fail(e)
        for key in list(self._seqs):
            cancel = getattr(key, "cancel", None)
            if callable(cancel):
                cancel()
        return []

    def fail(self, error: CollectiveError) -> None:
        """Records the group's failure (from a step, or the idle heartbeat) and reports it once."""
        if self.failure is None:
            self.failure = error
            if self.on_failure is not None:
                self.on_failure(error)

"""The forward pass of one rank: model.py's Transformer on this rank's slices, plus the collectives.

Attention's output projection and the experts (a slice of every expert's intermediate dimension, see shard.py)
yield partial sums, all-reduced after each; the unembedding yields this rank's vocabulary columns, all-gathered.
Everything else (embedding, norms, router, residuals) runs whole on every rank, so all ranks hold the same hidden
states after each reduction.

On rank 0 (the leader) each forward and unembedding is first announced to the other ranks (the followers, see
follower.py), which then run the same call with the same inputs: the collectives pair up in order.
"""

from __future__ import annotations

import threading

from torch import Tensor

from gptoss.config import ModelConfig
from gptoss.distributed.group import Comm
from gptoss.distributed.messages import Forward, Unembed, describe
from gptoss.distributed.shard import ShardPlan
from gptoss.kv_cache import AttentionCache
from gptoss.model import AttentionWeights, MoEWeights, Transformer, Weights


class DistributedTransformer(Transformer):
    def __init__(self, cfg: ModelConfig, weights: Weights, plan: ShardPlan, comm: Comm, vocab_size: int) -> None:
        super().__init__(cfg, weights)
        self.plan = plan
        self.comm = comm
        self.vocab_size = vocab_size
        self.lock = threading.Lock()  # an announcement and its collectives are one unit (see follower.Heartbeat)
        self.announce = comm.leader  # followers replay rank 0's calls and announce nothing

    def forward(self, tokens: Tensor, positions: Tensor, cache: AttentionCache | None) -> Tensor:
        if not self.announce:
            return super().forward(tokens, positions, cache)
        with self.lock:
            self.comm.broadcast(Forward(tokens, positions, describe(cache)))
            return super().forward(tokens, positions, cache)

    def unembed(self, h: Tensor) -> Tensor:
        if not self.announce:
            return self._unembed(h)
        with self.lock:
            self.comm.broadcast(Unembed(h))
            return self._unembed(h)

    def _unembed(self, h: Tensor) -> Tensor:
        local = super().unembed(h)  # (T, this rank's vocabulary rows)
        return self.comm.all_gather_columns(local, self.plan.vocab_chunk, self.vocab_size)

    def attention(
        self,
        x: Tensor,
        a: AttentionWeights,
        layer: int,
        positions: Tensor,
        cos: Tensor,
        sin: Tensor,
        cache: AttentionCache | None,
    ) -> Tensor:
        return self.comm.all_reduce(super().attention(x, a, layer, positions, cos, sin, cache))

    def moe(self, x: Tensor, m: MoEWeights, layer: int) -> Tensor:
        return self.comm.all_reduce(super().moe(x, m, layer)).to(x.dtype)

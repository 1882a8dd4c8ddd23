"""Which slice of the model each rank holds, and the transform that cuts a loaded model's weights down to it.

Attention is split by query heads (contiguous, as even as possible); a rank keeps the key/value heads its query
heads read, and its slice of the sinks and of the output projection's columns (the bias stays on rank 0 only, so
the all-reduced partial sums add it once). The unembedding is split by vocabulary rows.

The MoE is split inside every expert, along its intermediate dimension: a rank keeps the same run of gate/up pairs
(rows of mlp1) and the matching input columns of mlp2 of every expert, so each token's k experts cost every rank the
same (an expert split would leave one rank with 3 of a decode token's 4 experts and the other waiting for it). mlp2's
MXFP4 blocks run 32 columns along that dimension, so a rank's run is widened to whole blocks and the gate/up pairs
outside its run are zeroed (zero weights and bias give swiglu 0, which adds nothing): any split stays exact.

The weights arrive as views of the memory-mapped checkpoint, so slicing them along their first dimension
(vocabulary rows, projection rows) reads nothing. The expert slices are copies (mlp2's columns are not contiguous);
distributed.load then drops the mapping's pages of the whole expert tensors, so a rank's resident memory holds only
its own slices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch

from gptoss.config import ModelConfig
from gptoss.errors import ConfigError
from gptoss.model import AttentionWeights, LayerWeights, MoEWeights, Weights
from gptoss.mxfp4 import BLOCK


def split(n: int, parts: int, index: int) -> tuple[int, int]:
    """The index-th of `parts` contiguous ranges covering 0..n, sizes differing by at most one (larger first)."""
    base, extra = divmod(n, parts)
    start = index * base + min(index, extra)
    return start, start + base + (index < extra)


@dataclass(frozen=True)
class ShardPlan:
    rank: int
    world: int
    q_heads: tuple[int, int]  # [start, end) of the global query heads
    kv_heads: tuple[int, ...]  # global KV head of each local KV head (a head may repeat: see kv_for)
    intermediate: tuple[int, int]  # [start, end) of every expert's intermediate units (gate/up pairs)
    vocab: tuple[int, int]  # [start, end) of the vocabulary rows
    vocab_chunk: int  # rows every rank's logits are padded to for the all-gather

    @property
    def blocks(self) -> tuple[int, int]:
        """[start, end) of the 32-unit blocks that hold this rank's intermediate units (mlp2's MXFP4 blocks)."""
        u0, u1 = self.intermediate
        return u0 // BLOCK, -(-u1 // BLOCK)

    def local_config(self, cfg: ModelConfig) -> ModelConfig:
        """The config this rank's attention and KV cache run with; experts and vocabulary stay global."""
        q0, q1 = self.q_heads
        return dataclasses.replace(cfg, num_attention_heads=q1 - q0, num_key_value_heads=len(self.kv_heads))


def kv_for(cfg: ModelConfig, q0: int, q1: int) -> tuple[int, ...]:
    """The KV heads query heads q0..q1 read, as local heads that GQA's `h // group` maps onto correctly: the
    distinct heads when the slice covers whole groups or lies inside one, else one (repeated) head per query."""
    group = cfg.q_per_kv
    per_query = [h // group for h in range(q0, q1)]
    distinct = sorted(set(per_query))
    local_group = len(per_query) // len(distinct)
    if len(per_query) % len(distinct) == 0 and all(
        per_query[j] == distinct[j // local_group] for j in range(len(per_query))
    ):
        return tuple(distinct)
    return tuple(per_query)


def plan(cfg: ModelConfig, rank: int, world: int) -> ShardPlan:
    if world < 1 or not 0 <= rank < world:
        raise ConfigError(f"rank {rank} is outside a world of {world} processes")
    if world > cfg.num_attention_heads:
        raise ConfigError(
            f"--tp {world} exceeds the model's {cfg.num_attention_heads} attention heads (each rank needs one)"
        )
    if world > cfg.intermediate_size:
        raise ConfigError(
            f"--tp {world} exceeds the model's expert intermediate size {cfg.intermediate_size} (each rank needs one)"
        )
    q0, q1 = split(cfg.num_attention_heads, world, rank)
    chunk = -(-cfg.vocab_size // world)
    v0 = min(rank * chunk, cfg.vocab_size)
    return ShardPlan(
        rank, world, (q0, q1), kv_for(cfg, q0, q1), split(cfg.intermediate_size, world, rank),
        (v0, min(v0 + chunk, cfg.vocab_size)), chunk,
    )  # fmt: skip


def _heads(t: torch.Tensor, heads: list[int], head_dim: int) -> torch.Tensor:
    """Rows of these heads of a (heads*D, ...) projection: a view when they are consecutive, else a copy."""
    if heads == list(range(heads[0], heads[0] + len(heads))):
        return t[heads[0] * head_dim : (heads[-1] + 1) * head_dim]
    return torch.cat([t[h * head_dim : (h + 1) * head_dim] for h in heads])


def _attention(a: AttentionWeights, p: ShardPlan, head_dim: int) -> AttentionWeights:
    q, kv = list(range(*p.q_heads)), list(p.kv_heads)
    cols = slice(p.q_heads[0] * head_dim, p.q_heads[1] * head_dim)
    return AttentionWeights(
        norm=a.norm,
        wq=_heads(a.wq, q, head_dim), bq=_heads(a.bq, q, head_dim),
        wk=_heads(a.wk, kv, head_dim), bk=_heads(a.bk, kv, head_dim),
        wv=_heads(a.wv, kv, head_dim), bv=_heads(a.bv, kv, head_dim),
        wo=a.wo[:, cols].contiguous(),  # columns: a copy (the kernels want rows contiguous)
        bo=a.bo if p.rank == 0 else torch.zeros_like(a.bo),  # added once, by rank 0, to the reduced sum
        sinks=a.sinks[p.q_heads[0] : p.q_heads[1]],
    )  # fmt: skip


def _moe(m: MoEWeights, p: ShardPlan) -> MoEWeights:
    """Every expert's slice of this rank: gate/up rows and mlp2 columns of its blocks, units outside its run
    zeroed; mlp2's bias on rank 0 only."""
    b0, b1 = p.blocks
    u0, u1 = (u - b0 * BLOCK for u in p.intermediate)
    rows = slice(2 * b0 * BLOCK, 2 * b1 * BLOCK)  # gate/up pairs are interleaved: unit u is rows 2u, 2u+1
    mlp1_blocks, mlp1_bias = copy(m.mlp1_blocks[:, rows]), copy(m.mlp1_bias[:, rows])
    for t in (mlp1_blocks, mlp1_bias):  # zero nibbles decode to 0.0 whatever the scale
        t[:, : 2 * u0] = 0
        t[:, 2 * u1 :] = 0
    return MoEWeights(
        norm=m.norm, router_w=m.router_w, router_b=m.router_b,
        mlp1_blocks=mlp1_blocks, mlp1_scales=copy(m.mlp1_scales[:, rows]), mlp1_bias=mlp1_bias,
        mlp2_blocks=copy(m.mlp2_blocks[:, :, b0:b1]), mlp2_scales=copy(m.mlp2_scales[:, :, b0:b1]),
        mlp2_bias=m.mlp2_bias if p.rank == 0 else torch.zeros_like(m.mlp2_bias),  # added once to the reduced sum
    )  # fmt: skip


def copy(t: torch.Tensor) -> torch.Tensor:
    """A contiguous copy in this process's own memory (never a view of the mapping, which must stay unwritten)."""
    return torch.empty(t.shape, dtype=t.dtype).copy_(t)


def expert_tensors(m: MoEWeights) -> list[torch.Tensor]:
    """The packed expert tensors a rank copies its slices from (distributed.load drops their mapped pages)."""
    return [m.mlp1_blocks, m.mlp1_scales, m.mlp2_blocks, m.mlp2_scales]


def shard_weights(
    w: Weights, cfg: ModelConfig, p: ShardPlan, copied: Callable[[MoEWeights], None] = lambda m: None
) -> Weights:
    """This rank's slices of the (memory-mapped) weights; the embedding and the norms stay whole. `copied(m)` runs
    after each layer's experts were copied out of m (distributed.load drops m's mapped pages there)."""
    layers = []
    for layer in w.layers:
        layers.append(LayerWeights(_attention(layer.attn, p, cfg.head_dim), _moe(layer.moe, p)))
        copied(layer.moe)
    return Weights(w.embedding, layers, w.norm, w.unembedding[p.vocab[0] : p.vocab[1]])

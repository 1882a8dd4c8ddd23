"""Which slice of the model each rank holds, and the transform that cuts a loaded model's weights down to it.

Attention is split by query heads (contiguous, as even as possible); a rank keeps the key/value heads its query
heads read, and its slice of the sinks and of the output projection's columns (the bias stays on rank 0 only, so
the all-reduced partial sums add it once). The MoE is split by experts: each rank keeps a contiguous run, which
need not be the same length on every rank; the router stays whole. The unembedding is split by vocabulary rows.

The weights arrive as views of the memory-mapped checkpoint, so slicing them along their first dimension (experts,
vocabulary rows, projection rows) reads nothing: a rank's resident memory only ever holds its own slices.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from gptoss.config import ModelConfig
from gptoss.errors import ConfigError
from gptoss.model import AttentionWeights, LayerWeights, MoEWeights, Weights


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
    experts: tuple[int, int]  # [start, end) of the global experts
    vocab: tuple[int, int]  # [start, end) of the vocabulary rows
    vocab_chunk: int  # rows every rank's logits are padded to for the all-gather

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
    if world > cfg.num_experts:
        raise ConfigError(f"--tp {world} exceeds the model's {cfg.num_experts} experts (each rank needs one)")
    q0, q1 = split(cfg.num_attention_heads, world, rank)
    chunk = -(-cfg.vocab_size // world)
    v0 = min(rank * chunk, cfg.vocab_size)
    return ShardPlan(
        rank, world, (q0, q1), kv_for(cfg, q0, q1), split(cfg.num_experts, world, rank),
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
    e = slice(*p.experts)
    return MoEWeights(
        norm=m.norm, router_w=m.router_w, router_b=m.router_b,
        mlp1_blocks=m.mlp1_blocks[e], mlp1_scales=m.mlp1_scales[e], mlp1_bias=m.mlp1_bias[e],
        mlp2_blocks=m.mlp2_blocks[e], mlp2_scales=m.mlp2_scales[e], mlp2_bias=m.mlp2_bias[e],
    )  # fmt: skip


def shard_weights(w: Weights, cfg: ModelConfig, p: ShardPlan) -> Weights:
    """This rank's slices of the (memory-mapped) weights; the embedding and the norms stay whole."""
    layers = [LayerWeights(_attention(layer.attn, p, cfg.head_dim), _moe(layer.moe, p)) for layer in w.layers]
    return Weights(w.embedding, layers, w.norm, w.unembedding[p.vocab[0] : p.vocab[1]])

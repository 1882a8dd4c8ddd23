"""The training objective: next-token cross-entropy on the trained (assistant) tokens of one sequence, or of
several conversations packed into one forward pass.

The forward pass is model.py's, with the reference ops (the native kernels have no backward) and, optionally,
each block under activation checkpointing (its activations are recomputed in the backward pass).

Packing (`loss_sum_packed`): the conversations are concatenated along the token axis, each with its own positions
from 0, and attention runs per conversation (`segmented_attention`: no token sees another conversation), so the
packed loss is the sum of the single-conversation losses; it amortises the per-op overhead that dominates a tiny
model's step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from gptoss import ops
from gptoss.finetune.data import Example
from gptoss.finetune.vocab import SparseVocab, cross_entropy_sum
from gptoss.model import Transformer
from gptoss.ops import reference

_OPS = ("attention", "linear", "rms_norm", "rope", "moe_experts", "swiglu")
# The backend's MoE, kept for forward-only use inside the experts' autograd function (its backward recomputes in
# plain torch, so the fast kernel is exact to use there).
inference_moe_experts = ops.moe_experts
AttentionFn = Callable[..., torch.Tensor]


@contextmanager
def differentiable_ops() -> Iterator[None]:
    """Runs the model on ops/reference.py (plain torch, differentiable) and restores the chosen backend after."""
    saved = {name: getattr(ops, name) for name in _OPS}
    try:
        for name in _OPS:
            setattr(ops, name, getattr(reference, name))
        yield
    finally:
        for name, fn in saved.items():
            setattr(ops, name, fn)


def hidden_states(
    tr: Transformer,
    tokens: torch.Tensor,
    checkpointing: bool = False,
    positions: torch.Tensor | None = None,
    attention: AttentionFn | None = None,
) -> torch.Tensor:
    """Transformer.forward over one whole sequence (no cache), blocks optionally checkpointed -> (T, H).
    `attention` replaces ops.attention (packing: per-conversation attention), also in the recomputation."""
    if positions is None:
        positions = torch.arange(len(tokens), device=tokens.device)
    x = tr.w.embedding[tokens]  # (T, H)
    cos, sin = tr.rope.cos_sin(positions)
    with _attention(attention):
        for i in range(len(tr.w.layers)):
            if checkpointing:
                x = checkpoint(_block, tr, x, i, positions, cos, sin, attention, use_reentrant=False)
            else:
                x = tr.block(x, i, positions, cos, sin, None)
    return ops.rms_norm(x, tr.w.norm, tr.cfg.rms_norm_eps)


def _block(
    tr: Transformer,
    x: torch.Tensor,
    i: int,
    positions: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    attention: AttentionFn | None,
) -> torch.Tensor:
    # The recomputation runs inside backward(), possibly outside the caller's differentiable_ops(): enter it here.
    with differentiable_ops(), _attention(attention):
        return tr.block(x, i, positions, cos, sin, None)


@contextmanager
def _attention(fn: AttentionFn | None) -> Iterator[None]:
    saved = ops.attention
    if fn is not None:
        ops.attention = fn
    try:
        yield
    finally:
        ops.attention = saved


def loss_sum(
    tr: Transformer,
    tokens: Sequence[int],
    mask: Sequence[int],
    checkpointing: bool = False,
    vocab: SparseVocab | None = None,
) -> tuple[torch.Tensor, int]:
    """(sum of cross-entropies over the trained tokens, how many) for one sequence. Token t+1 is a target when
    mask[t+1] is 1; only those positions are unembedded (the vocabulary projection dominates otherwise).
    With `vocab`, the model's embedding and unembedding hold only the used rows (see finetune/vocab.py)."""
    device = tr.w.embedding.device
    ids = torch.tensor(list(tokens), dtype=torch.long, device=device)
    if vocab is not None:
        ids = vocab.compact(ids)
    targets = torch.tensor(list(mask[1:]), dtype=torch.bool, device=device).nonzero().squeeze(1)  # (N,)
    h = hidden_states(tr, ids, checkpointing)[targets]  # (N, H)
    logits = tr.unembed(h)  # (N, V) fp32, or (N, U) with vocab
    if vocab is not None:
        return cross_entropy_sum(logits, ids[targets + 1], vocab.unused), int(targets.numel())
    return F.cross_entropy(logits, ids[targets + 1], reduction="sum"), int(targets.numel())


def loss_sum_packed(
    tr: Transformer,
    examples: Sequence[Example],
    checkpointing: bool = False,
    vocab: SparseVocab | None = None,
) -> tuple[torch.Tensor, int]:
    """loss_sum over several conversations in one forward pass: (sum of their cross-entropies, trained tokens).
    Equal to the sum of the single-conversation loss_sums up to float rounding (tests/finetune/test_pack.py)."""
    device = tr.w.embedding.device
    lengths = [len(e.tokens) for e in examples]
    ids = torch.tensor([t for e in examples for t in e.tokens], dtype=torch.long, device=device)
    if vocab is not None:
        ids = vocab.compact(ids)
    positions = torch.cat([torch.arange(n, device=device) for n in lengths])
    # Target positions: token t+1 of the same conversation (the last token of one never predicts the next one's).
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    picked = [s + t for s, e in zip(starts, examples, strict=True) for t, m in enumerate(e.mask[1:]) if m]
    targets = torch.tensor(picked, dtype=torch.long, device=device)
    h = hidden_states(tr, ids, checkpointing, positions, segmented_attention(lengths))[targets]  # (N, H)
    logits = tr.unembed(h)
    if vocab is not None:
        return cross_entropy_sum(logits, ids[targets + 1], vocab.unused), len(picked)
    return F.cross_entropy(logits, ids[targets + 1], reduction="sum"), len(picked)


def segmented_attention(lengths: Sequence[int], group: int = 4) -> AttentionFn:
    """An ops.attention for a packed sequence of conversations of `lengths`: each conversation attends only to
    itself. The conversations are sorted by length and regrouped `group` at a time into padded (b, L) batches
    (less padding than one batch at the longest length; padding gets position -1: an empty slot)."""
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    by_length = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches = []
    for g in range(0, len(by_length), group):
        members = by_length[g : g + group]
        L = max(lengths[i] for i in members)
        slot = torch.arange(L)[None, :]
        valid = slot < torch.tensor([lengths[i] for i in members])[:, None]  # (b, L)
        grid = torch.tensor([starts[i] for i in members])[:, None] + slot
        batches.append((grid.where(valid, torch.zeros_like(grid)), valid))
    rows = torch.cat([grid[valid] for grid, valid in batches])  # packed index of each output row, in batch order
    inverse = torch.empty_like(rows)
    inverse[rows] = torch.arange(len(rows))

    def core(
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        sinks: torch.Tensor,
        q_pos: torch.Tensor,
        k_pos: torch.Tensor,
        window: int,
        scale: float,
    ) -> torch.Tensor:
        outs = []
        for grid, valid in batches:
            grid, valid = grid.to(q.device), valid.to(q.device)
            pos = q_pos[grid].where(valid, -1)  # (b, L)
            out = batched_attention(q[grid], k[grid], v[grid], sinks, pos, window, scale)  # (b, L, Hq*D)
            outs.append(out[valid])
        return torch.cat(outs)[inverse.to(q.device)]  # (T, Hq*D) in packed order

    return core


def batched_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sinks: torch.Tensor, pos: torch.Tensor, window: int, scale: float
) -> torch.Tensor:
    """ops/reference.attention over a batch: q (B, L, Hq, D), k and v (B, L, Hkv, D), positions (B, L) with -1 for
    padding -> (B, L, Hq*D). Same math: causal, optional band, a sink logit per head, fp32."""
    B, L, Hq, D = q.shape
    Hkv = k.shape[2]
    qg = q.float().view(B, L, Hkv, Hq // Hkv, D)
    scores = torch.einsum("bthgd,bshd->bhgts", qg, k.float()) * scale  # (B, Hkv, G, L, L)
    qp, kp = pos[:, :, None], pos[:, None, :]
    allowed = (kp <= qp) & (kp >= 0)  # (B, L, L)
    if window > 0:
        allowed &= kp > qp - window
    scores = scores.masked_fill(~allowed[:, None, None], float("-inf"))
    sink = sinks.float().view(1, Hkv, Hq // Hkv, 1, 1).expand(B, Hkv, Hq // Hkv, L, 1)
    probs = torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]
    out = torch.einsum("bhgts,bshd->bthgd", probs, v.float())
    return out.reshape(B, L, Hq * D).to(q.dtype)

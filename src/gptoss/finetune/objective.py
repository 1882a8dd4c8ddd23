"""The training objective: next-token cross-entropy on the trained (assistant) tokens of one sequence.

The forward pass is model.py's, with the reference ops (the native kernels have no backward) and, optionally,
each block under activation checkpointing (its activations are recomputed in the backward pass).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from gptoss import ops
from gptoss.finetune.vocab import SparseVocab, cross_entropy_sum
from gptoss.model import Transformer
from gptoss.ops import reference

_OPS = ("attention", "linear", "rms_norm", "rope", "moe_experts", "swiglu")
# The backend's MoE, kept for forward-only use inside the experts' autograd function (its backward recomputes in
# plain torch, so the fast kernel is exact to use there).
inference_moe_experts = ops.moe_experts


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


def hidden_states(tr: Transformer, tokens: torch.Tensor, checkpointing: bool = False) -> torch.Tensor:
    """Transformer.forward over one whole sequence (no cache), blocks optionally checkpointed -> (T, H)."""
    positions = torch.arange(len(tokens), device=tokens.device)
    x = tr.w.embedding[tokens]  # (T, H)
    cos, sin = tr.rope.cos_sin(positions)
    for i in range(len(tr.w.layers)):
        if checkpointing:
            x = checkpoint(_block, tr, x, i, positions, cos, sin, use_reentrant=False)
        else:
            x = tr.block(x, i, positions, cos, sin, None)
    return ops.rms_norm(x, tr.w.norm, tr.cfg.rms_norm_eps)


def _block(
    tr: Transformer, x: torch.Tensor, i: int, positions: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> torch.Tensor:
    # The recomputation runs inside backward(), possibly outside the caller's differentiable_ops(): enter it here.
    with differentiable_ops():
        return tr.block(x, i, positions, cos, sin, None)


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

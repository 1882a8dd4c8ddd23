"""Tensor + expert parallel inference over torch.distributed (`torchrun ... -m gptoss ... --tp N`).

Each rank loads only its slices of the checkpoint (shard.py) and runs model.py's forward with collectives added
from outside (transformer.py). Rank 0 drives: it runs the CLI or the server's scheduler and announces each forward
pass; the other ranks follow (follower.py).
"""

from __future__ import annotations

from pathlib import Path

import torch

from gptoss.distributed.group import Comm, DistributedError, init
from gptoss.distributed.shard import ShardPlan, expert_tensors, plan, shard_weights
from gptoss.distributed.transformer import DistributedTransformer
from gptoss.errors import InputError
from gptoss.prefault import populate, release
from gptoss.runtime import Model, per_token_tensors
from gptoss.weights import load_weights, open_checkpoint

__all__ = ["Comm", "DistributedError", "DistributedTransformer", "ShardPlan", "init", "load", "plan"]


def load(
    path: str | Path,
    comm: Comm,
    dtype: torch.dtype | None = None,
    context_length: int | None = None,
) -> Model:
    """This rank's part of a checkpoint, as a Model whose forward runs with the other ranks (runtime.load's
    arguments; every rank must pass the same ones). Returns once every rank has loaded."""
    ckpt = open_checkpoint(path)
    cfg, dt = ckpt.config, dtype or torch.bfloat16
    limit = context_length or cfg.max_context
    if not 0 < limit <= cfg.max_context:
        raise InputError(f"context_length {limit} must be in 1..{cfg.max_context} for this model")
    p = plan(cfg, comm.rank, comm.world)
    full = load_weights(ckpt, dt, torch.device("cpu"))  # views of the mapping: nothing read yet
    # The experts are copied out layer by layer (reading the pages they share with other ranks' columns), and each
    # layer's mapped pages are dropped at once: the resident memory holds only this rank's slices, even at peak.
    weights = shard_weights(full, cfg, p, copied=lambda m: release(expert_tensors(m)))
    populate(per_token_tensors(weights))
    transformer = DistributedTransformer(p.local_config(cfg), weights, p, comm, cfg.vocab_size)
    comm.loaded()
    return Model(transformer, torch.device("cpu"), dt, limit)

"""A per-sequence KV cache of fixed-shape buffers, written with device index tensors: no host sync and no
reallocation inside a step, so a decode step can be captured in a CUDA graph.

Sliding layers keep a window-sized ring; full layers a buffer whose capacity doubles (from MIN_CAPACITY up to the
limit) before a step that needs more: that reallocates, and drops the graphs captured on the old buffers. Unwritten
slots hold position -1. Attention masks by position (gptoss.ops), so it runs over the whole buffer: a decode step
reads at most twice the keys it needs, and its shapes stay fixed until the next doubling.
"""

from __future__ import annotations

import torch

from gptoss.config import ModelConfig
from gptoss.errors import InputError
from gptoss.kv_cache import AttentionCore, KVCache

MIN_CAPACITY = 256


class StaticKVCache(KVCache):
    def __init__(self, cfg: ModelConfig, limit: int, dtype: torch.dtype, device: torch.device | str) -> None:
        self.limit = limit
        self.position = 0
        self.layers = []  # KVCache's per-layer objects: this cache keeps plain buffers instead
        self.device = torch.device(device)
        self.capacity = 0  # of the full layers
        self.sliding = [cfg.is_sliding(i) for i in range(cfg.num_hidden_layers)]
        shape = (cfg.num_key_value_heads, cfg.head_dim)
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.pos: list[torch.Tensor] = []
        for sliding in self.sliding:
            slots = cfg.sliding_window if sliding else 0
            self.k.append(torch.zeros(slots, *shape, dtype=dtype, device=self.device))
            self.v.append(torch.zeros(slots, *shape, dtype=dtype, device=self.device))
            self.pos.append(torch.full((slots,), -1, dtype=torch.long, device=self.device))
        self.graphs: dict[int, object] = {}  # full-layer capacity -> the decode step captured on these buffers

    def reserve(self, n: int) -> None:
        """Makes room for n positions in the full layers (a no-op when there is)."""
        if n <= self.capacity:
            return
        capacity = min(self.limit, max(MIN_CAPACITY, 1 << (n - 1).bit_length()))
        for i, sliding in enumerate(self.sliding):
            if sliding:
                continue
            for buffers, fill in ((self.k, 0), (self.v, 0), (self.pos, -1)):
                old = buffers[i]
                new = torch.full((capacity, *old.shape[1:]), fill, dtype=old.dtype, device=self.device)
                new[: old.shape[0]] = old
                buffers[i] = new
        self.capacity = capacity
        self.graphs.clear()  # they read and write the old buffers

    def positions(self, n: int) -> torch.Tensor:
        if self.position + n > self.limit:
            raise InputError(
                f"context overflow: {self.position} cached + {n} new tokens exceed the context limit of {self.limit}"
            )
        self.reserve(self.position + n)
        return torch.arange(self.position, self.position + n, device=self.device)

    def attend(
        self,
        layer: int,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        positions: torch.Tensor,
        core: AttentionCore,
    ) -> torch.Tensor:
        kb, vb, pb = self.k[layer], self.v[layer], self.pos[layer]
        if not self.sliding[layer]:
            kb.index_copy_(0, positions, k)
            vb.index_copy_(0, positions, v)
            pb.index_copy_(0, positions, positions)
            return core(q, kb, vb, positions, pb)
        window = kb.shape[0]
        if k.shape[0] == 1:  # decode: the overwritten slot holds position p - window, outside the band
            slot = positions % window
            kb.index_copy_(0, slot, k)
            vb.index_copy_(0, slot, v)
            pb.index_copy_(0, slot, positions)
            return core(q, kb, vb, positions, pb)
        # A chunk attends to the ring plus itself, then its last `window` keys overwrite the oldest slots.
        keys, values, k_pos = torch.cat([kb, k]), torch.cat([vb, v]), torch.cat([pb, positions])
        tail = slice(max(0, k.shape[0] - window), k.shape[0])
        slots = positions[tail] % window
        kb.index_copy_(0, slots, k[tail])
        vb.index_copy_(0, slots, v[tail])
        pb.index_copy_(0, slots, positions[tail])
        return core(q, keys, values, positions, k_pos)

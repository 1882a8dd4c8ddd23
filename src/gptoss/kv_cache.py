"""Per-sequence KV cache: a window-sized ring buffer for sliding-window layers, a growing buffer for full layers.

Keys are stored after RoPE, with their absolute positions, so attention masks by position and never needs the
slots in order. A sliding layer keeps only `window` slots: a chunk of new tokens attends to the ring's contents
plus the chunk itself (mask by position), then the chunk's last `window` keys overwrite the oldest slots.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol

import torch

from gptoss.config import ModelConfig
from gptoss.errors import InputError

# The attention core of one layer: (q, k, v, q_pos, k_pos) -> (T, Hq*D), masking by absolute position.
AttentionCore = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LayerAttention:
    """The AttentionCore a Transformer hands to its cache: kernels.attention with this layer's sinks, band and scale.
    A paged cache may call kernels.paged_attention with the same parameters instead, where the kernel set has one."""

    kernels: ModuleType
    sinks: torch.Tensor
    window: int
    scale: float

    def __call__(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor, k_pos: torch.Tensor
    ) -> torch.Tensor:
        return self.kernels.attention(q, k, v, self.sinks, q_pos, k_pos, self.window, self.scale)


class AttentionCache(Protocol):
    """What Transformer.forward needs of a cache: store a layer's new keys and values, and attend over them."""

    def attend(
        self,
        layer: int,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        positions: torch.Tensor,
        core: AttentionCore,
    ) -> torch.Tensor: ...


class FullLayerCache:
    def __init__(self, heads: int, head_dim: int, limit: int, dtype: torch.dtype, device: torch.device) -> None:
        self.limit = limit
        self.length = 0
        capacity = min(limit, 256)
        self.k = torch.empty(capacity, heads, head_dim, dtype=dtype, device=device)
        self.v = torch.empty_like(self.k)
        self.pos = torch.empty(capacity, dtype=torch.long, device=device)

    def _reserve(self, n: int) -> None:
        if n <= self.k.shape[0]:
            return
        capacity = min(self.limit, max(n, 2 * self.k.shape[0]))  # doubling: amortised O(1) appends
        for name in ("k", "v", "pos"):
            old = getattr(self, name)
            new = old.new_empty((capacity, *old.shape[1:]))
            new[: self.length] = old[: self.length]
            setattr(self, name, new)

    def update(
        self, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        end = self.length + k.shape[0]
        if end > self.limit:
            raise InputError(f"context overflow: {end} tokens exceed the cache limit of {self.limit}")
        self._reserve(end)
        self.k[self.length : end], self.v[self.length : end], self.pos[self.length : end] = k, v, pos
        self.length = end
        return self.k[:end], self.v[:end], self.pos[:end]  # views: no copy


class RingLayerCache:
    def __init__(self, heads: int, head_dim: int, window: int, dtype: torch.dtype, device: torch.device) -> None:
        self.window = window
        self.k = torch.zeros(window, heads, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)
        self.pos = torch.full((window,), -1, dtype=torch.long, device=device)  # -1: slot never written

    def update(
        self, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if k.shape[0] == 1:
            # Decode: the overwritten slot holds position p - window, which the band excludes anyway.
            slot = int(pos[0]) % self.window
            self.k[slot], self.v[slot], self.pos[slot] = k[0], v[0], pos[0]
            return self.k, self.v, self.pos
        keys = torch.cat([self.k, k]), torch.cat([self.v, v]), torch.cat([self.pos, pos])
        tail = slice(max(0, k.shape[0] - self.window), k.shape[0])
        slots = pos[tail] % self.window
        self.k[slots], self.v[slots], self.pos[slots] = k[tail], v[tail], pos[tail]
        return keys


LayerCache = FullLayerCache | RingLayerCache


class KVCache:
    """All layers' caches for one sequence; `position` is the number of tokens already processed."""

    def __init__(self, cfg: ModelConfig, limit: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> None:
        self.limit = limit
        self.position = 0
        dev = torch.device(device)
        heads, d = cfg.num_key_value_heads, cfg.head_dim
        self.layers: list[LayerCache] = [
            RingLayerCache(heads, d, cfg.sliding_window, dtype, dev)
            if cfg.is_sliding(i)
            else FullLayerCache(heads, d, limit, dtype, dev)
            for i in range(cfg.num_hidden_layers)
        ]

    def positions(self, n: int) -> torch.Tensor:
        """Absolute positions of the next n tokens; checks the limit before any layer is touched."""
        if self.position + n > self.limit:
            raise InputError(
                f"context overflow: {self.position} cached + {n} new tokens exceed the context limit of {self.limit}"
            )
        device = self.layers[0].k.device
        return torch.arange(self.position, self.position + n, device=device)

    def attend(
        self,
        layer: int,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        positions: torch.Tensor,
        core: AttentionCore,
    ) -> torch.Tensor:
        keys, values, k_pos = self.layers[layer].update(k, v, positions)  # (S, Hkv, D), (S,)
        return core(q, keys, values, positions, k_pos)

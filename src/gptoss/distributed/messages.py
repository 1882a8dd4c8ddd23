"""What rank 0 tells the other ranks before each collective-bearing call, so that they make the same call.

A step's inputs are small (token ids, positions, block tables), so they travel as pickled objects over the group.
The KV caches themselves never travel: each rank keeps its own heads' keys and values, and only learns which
cache (or which paged blocks) a forward pass uses.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from gptoss.engine.paged import BatchCache
from gptoss.kv_cache import AttentionCache, KVCache


@dataclass(frozen=True)
class SequenceCache:
    """A per-sequence KVCache on rank 0 (runtime.Model's path): followers keep one twin of it."""

    key: int  # id of rank 0's cache: a new key or position 0 starts a new twin
    limit: int


@dataclass(frozen=True)
class PagedSegment:
    full: list[int]
    sliding: dict[int, int]
    offset: int
    start: int
    n: int


@dataclass(frozen=True)
class PagedCache:
    """One batched step's block tables (engine/paged.py's BatchCache)."""

    segments: list[PagedSegment]


CacheSpec = SequenceCache | PagedCache | None


@dataclass(frozen=True)
class Forward:
    tokens: Tensor
    positions: Tensor
    cache: CacheSpec


@dataclass(frozen=True)
class Unembed:
    h: Tensor


@dataclass(frozen=True)
class Storage:
    """rank 0 made the batched engine's paged KV pool: make the same number of blocks."""

    num_blocks: int
    block_size: int


@dataclass(frozen=True)
class Ping:
    """Nothing to do: keeps idle followers' waits under the collective timeout."""


@dataclass(frozen=True)
class Stop:
    """Rank 0 is done: followers return."""


Message = Forward | Unembed | Storage | Ping | Stop


def describe(cache: AttentionCache | None) -> CacheSpec:
    if cache is None:
        return None
    if isinstance(cache, KVCache):
        return SequenceCache(id(cache), cache.limit)
    if isinstance(cache, BatchCache):
        segs = [
            PagedSegment(list(s.blocks.full), dict(s.blocks.sliding), s.offset, s.start, s.n) for s in cache.segments
        ]
        return PagedCache(segs)
    raise TypeError(f"a tensor-parallel forward cannot describe a {type(cache).__name__} to the other ranks")

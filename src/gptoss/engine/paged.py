"""The paged KV cache's storage, and the cache object one batched forward pass attends through.

Storage is one pair of tensors (keys, values) of shape (layers per group, blocks, block_size, Hkv, D): a block
serves the full group or the sliding group, its layer slot j being that group's j-th layer. Slot-major, so a
sequence whose blocks are consecutive (the common case: the free list hands them out in order) reads its keys as
one view, without a copy. A batch is a flat run
of tokens from several sequences; `BatchCache.attend` writes each sequence's new keys and values into its blocks
and runs the attention core over that sequence's blocks only (positions past its end are masked as the future).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from gptoss.config import ModelConfig
from gptoss.engine.blocks import FULL, SLIDING, Layout, SeqBlocks
from gptoss.kv_cache import AttentionCore


class PagedStorage:
    def __init__(self, cfg: ModelConfig, num_blocks: int, block_size: int, dtype: torch.dtype) -> None:
        self.group_of = [SLIDING if cfg.is_sliding(i) else FULL for i in range(cfg.num_hidden_layers)]
        self.slot_of = [self.group_of[:i].count(g) for i, g in enumerate(self.group_of)]
        per_block = max(self.group_of.count(FULL), self.group_of.count(SLIDING))
        shape = (per_block, num_blocks, block_size, cfg.num_key_value_heads, cfg.head_dim)
        # Uninitialised, so a large pool costs no time or resident memory until used; each block is zeroed when
        # first written (a block's unwritten slots still enter the attention products, and 0 * NaN would poison them).
        self.k = torch.empty(shape, dtype=dtype)
        self.v = torch.empty(shape, dtype=dtype)
        self.zeroed = [False] * num_blocks
        self.block_size = block_size
        self.nbytes = 2 * self.k.numel() * self.k.element_size()
        self.layout = Layout(
            block_size, cfg.sliding_window if SLIDING in self.group_of else 0, FULL in self.group_of,
            SLIDING in self.group_of,
        )  # fmt: skip

    def prepare(self, blocks: list[int]) -> None:
        """Zeroes the blocks never written before (every block is written before it is read)."""
        for b in blocks:
            if not self.zeroed[b]:
                self.k[:, b].zero_()
                self.v[:, b].zero_()
                self.zeroed[b] = True

    @staticmethod
    def block_bytes(cfg: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
        sliding = sum(cfg.is_sliding(i) for i in range(cfg.num_hidden_layers))
        per_block = max(sliding, cfg.num_hidden_layers - sliding)
        elem = torch.empty(0, dtype=dtype).element_size()
        return 2 * per_block * block_size * cfg.num_key_value_heads * cfg.head_dim * elem


@dataclass(frozen=True)
class Segment:
    """One sequence's tokens in the flat batch: rows [offset, offset + n) at positions [start, start + n)."""

    blocks: SeqBlocks
    offset: int
    start: int
    n: int


class BatchCache:
    """The AttentionCache of one batched step."""

    def __init__(self, storage: PagedStorage, segments: Sequence[Segment]) -> None:
        self.storage = storage
        self.segments = segments
        bs = storage.block_size
        self._where = [self._write_index(s, bs) for s in segments]

    def _write_index(self, s: Segment, bs: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per group: (pool block, offset in it) of each of the segment's new positions."""
        pos = range(s.start, s.start + s.n)
        offsets = torch.tensor([p % bs for p in pos])
        where = {}
        if self.storage.layout.has_full:
            where[FULL] = self._blocks([s.blocks.full[p // bs] for p in pos]), offsets
        if self.storage.layout.has_sliding:
            where[SLIDING] = self._blocks([s.blocks.sliding[p // bs] for p in pos]), offsets
        return where

    def _blocks(self, ids: list[int]) -> Tensor:
        self.storage.prepare(sorted(set(ids)))
        return torch.tensor(ids)

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor, positions: Tensor, core: AttentionCore) -> Tensor:
        st = self.storage
        group, slot = st.group_of[layer], st.slot_of[layer]
        outs = []
        for seg, where in zip(self.segments, self._where, strict=True):
            rows = slice(seg.offset, seg.offset + seg.n)
            blocks, offsets = where[group]
            k_slot, v_slot = st.k[slot], st.v[slot]  # (blocks, bs, Hkv, D)
            k_slot[blocks, offsets] = k[rows]
            v_slot[blocks, offsets] = v[rows]
            ids, logical = self._visible(seg, group)
            keys, values = _gather(k_slot, ids), _gather(v_slot, ids)  # (nb * bs, Hkv, D)
            k_pos = (logical[:, None] * st.block_size + torch.arange(st.block_size)).flatten()
            outs.append(core(q[rows], keys, values, positions[rows], k_pos))
        return torch.cat(outs)

    def _visible(self, seg: Segment, group: str) -> tuple[list[int], Tensor]:
        """(pool blocks, their logical indices) this segment's queries may need in `group`."""
        end = -(-(seg.start + seg.n) // self.storage.block_size)
        if group == FULL:
            return seg.blocks.full[:end], torch.arange(end)
        first = self.storage.layout.band_start(seg.start)
        return [seg.blocks.sliding[i] for i in range(first, end)], torch.arange(first, end)


def _gather(slot: Tensor, ids: list[int]) -> Tensor:
    """The blocks `ids` of one layer slot, flattened to positions: a view when they are consecutive."""
    if ids[-1] - ids[0] == len(ids) - 1 and ids == list(range(ids[0], ids[-1] + 1)):
        return slot[ids[0] : ids[-1] + 1].flatten(0, 1)
    # index_select, not slot[tensor]: advanced indexing of bf16 blocks was measured up to 1000x slower here.
    return torch.index_select(slot, 0, torch.tensor(ids)).flatten(0, 1)

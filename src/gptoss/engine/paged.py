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
from gptoss.ops.reference import BlockTables


class PagedStorage:
    def __init__(
        self, cfg: ModelConfig, num_blocks: int, block_size: int, dtype: torch.dtype, device: torch.device | str = "cpu"
    ) -> None:
        self.group_of = [SLIDING if cfg.is_sliding(i) else FULL for i in range(cfg.num_hidden_layers)]
        self.slot_of = [self.group_of[:i].count(g) for i, g in enumerate(self.group_of)]
        per_block = max(self.group_of.count(FULL), self.group_of.count(SLIDING))
        shape = (per_block, num_blocks, block_size, cfg.num_key_value_heads, cfg.head_dim)
        # Uninitialised, so a large pool costs no time or resident memory until used; each block is zeroed when
        # first written (a block's unwritten slots still enter the attention products, and 0 * NaN would poison them).
        self.device = torch.device(device)
        self.k = torch.empty(shape, dtype=dtype, device=self.device)
        self.v = torch.empty(shape, dtype=dtype, device=self.device)
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


@dataclass(frozen=True)
class _Plan:
    """Where one segment writes and reads in one layer group, worked out once per step (not once per layer)."""

    write_blocks: Tensor  # (n,) pool block of each new position
    write_offsets: Tensor  # (n,) its slot in that block
    read: slice | Tensor  # the visible blocks: a slice when consecutive (a view), else their ids
    k_pos: Tensor  # (nb * bs,) absolute position of every visible slot
    ids: list[int]  # the visible blocks, for a block-table kernel
    first_pos: int  # the position in their first slot


class BatchCache:
    """The AttentionCache of one batched step."""

    def __init__(self, storage: PagedStorage, segments: Sequence[Segment]) -> None:
        self.storage = storage
        self.segments = segments
        lay = storage.layout
        groups = [g for g, present in ((FULL, lay.has_full), (SLIDING, lay.has_sliding)) if present]
        self._plans = [{g: self._plan(s, g) for g in groups} for s in segments]
        # Every segment's new keys go in with one indexed write per layer (segments tile the batch's rows in order).
        self._writes = {g: self._concat_writes(g) for g in groups}
        self._tables: dict[str, BlockTables] = {}  # per group, built on first use (GPU kernels only)

    def _block_tables(self, group: str) -> BlockTables:
        plans = [p[group] for p in self._plans]
        width = max(len(p.ids) for p in plans)
        dev = self.storage.device
        ids = [p.ids + [0] * (width - len(p.ids)) for p in plans]
        return BlockTables(
            torch.tensor(ids, dtype=torch.int32, device=dev),
            torch.tensor([len(p.ids) for p in plans], dtype=torch.int32, device=dev),
            torch.tensor([p.first_pos for p in plans], dtype=torch.int64, device=dev),
            torch.tensor([s.offset for s in self.segments], dtype=torch.int32, device=dev),
            torch.tensor([s.n for s in self.segments], dtype=torch.int32, device=dev),
            max(s.n for s in self.segments),
        )

    def _concat_writes(self, group: str) -> tuple[Tensor, Tensor]:
        plans = [p[group] for p in self._plans]
        return torch.cat([p.write_blocks for p in plans]), torch.cat([p.write_offsets for p in plans])

    def _plan(self, s: Segment, group: str) -> _Plan:
        bs = self.storage.block_size
        table: list[int] | dict[int, int] = s.blocks.full if group == FULL else s.blocks.sliding
        pos = range(s.start, s.start + s.n)
        written = [table[p // bs] for p in pos]
        self.storage.prepare(sorted(set(written)))
        end = -(-(s.start + s.n) // bs)
        first = 0 if group == FULL else self.storage.layout.band_start(s.start)
        ids = [table[i] for i in range(first, end)]
        consecutive = ids == list(range(ids[0], ids[0] + len(ids)))
        # index_select, not slot[tensor]: advanced indexing of bf16 blocks was measured up to 1000x slower here.
        dev = self.storage.device  # the plan's index tensors live beside the pool (the GPU path)
        read = slice(ids[0], ids[0] + len(ids)) if consecutive else torch.tensor(ids, device=dev)
        k_pos = torch.arange(first * bs, end * bs, device=dev)
        offsets = torch.tensor([p % bs for p in pos], device=dev)
        return _Plan(torch.tensor(written, device=dev), offsets, read, k_pos, ids, first * bs)

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor, positions: Tensor, core: AttentionCore) -> Tensor:
        st = self.storage
        group, slot = st.group_of[layer], st.slot_of[layer]
        k_slot, v_slot = st.k[slot], st.v[slot]  # (blocks, bs, Hkv, D)
        blocks, offsets = self._writes[group]
        k_slot[blocks, offsets] = k
        v_slot[blocks, offsets] = v
        paged = getattr(getattr(core, "kernels", None), "paged_attention", None)
        if paged is not None:  # the GPU kernel set: one launch over every sequence's block table
            tables = self._tables.get(group) or self._tables.setdefault(group, self._block_tables(group))
            return paged(q, k_slot, v_slot, core.sinks, positions, tables, core.window, core.scale)  # type: ignore[attr-defined]
        outs = []
        for seg, plans in zip(self.segments, self._plans, strict=True):
            rows, plan = slice(seg.offset, seg.offset + seg.n), plans[group]
            keys, values = _read(k_slot, plan.read), _read(v_slot, plan.read)  # (nb * bs, Hkv, D)
            outs.append(core(q[rows], keys, values, positions[rows], plan.k_pos))
        return torch.cat(outs)


def _read(slot: Tensor, read: slice | Tensor) -> Tensor:
    blocks = slot[read] if isinstance(read, slice) else torch.index_select(slot, 0, read)
    return blocks.flatten(0, 1)

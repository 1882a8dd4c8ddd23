"""The paged KV cache's bookkeeping, in plain Python: a pool of fixed-size blocks, each sequence's block tables,
and the prefix cache that lets a request reuse blocks another one computed.

A block holds `block_size` consecutive positions of one layer *group*: "full" (the full-attention layers) or
"sliding" (the banded ones); both come from one pool, so one budget covers both. A sequence holds every full block
of its tokens, but sliding blocks only while its band (the last `window` positions) can still see them.

Prefix cache: a complete block is named by a hash chain over the tokens it ends (its key depends on every token
before it), so equal keys mean equal keys/values in the cache. To resume a prompt at a block boundary P, the full
layers need the blocks of [0, P) and the sliding layers only those of [P - window + 1, P). A finished (or
preempted) sequence leaves its blocks in the cache: all its full blocks, its last band of sliding blocks, and the
sliding band at the end of its prompt (a "checkpoint": the next harmony turn drops this turn's analysis, so its
prompt diverges exactly where this prompt ended), and the band where its prompt left another request's cached
full blocks that had none (a shared system prompt: later requests on it resume there). Other sliding blocks are
freed as soon as the band leaves them: that is what sliding layers save. Unused cached blocks are evicted least
recently used first, deepest first.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

FULL, SLIDING = "full", "sliding"


def chain_key(parent: bytes, tokens: Sequence[int]) -> bytes:
    """The key of a block: a digest of its parent's key and its own tokens."""
    return hashlib.blake2b(parent + array("q", tokens).tobytes(), digest_size=16).digest()


def prompt_keys(tokens: Sequence[int], block_size: int) -> list[bytes]:
    """The chain keys of the complete blocks a request may reuse: all but the one holding its last token."""
    keys: list[bytes] = []
    for j in range((len(tokens) - 1) // block_size):
        keys.append(chain_key(keys[-1] if keys else b"", tokens[j * block_size : (j + 1) * block_size]))
    return keys


@dataclass
class Block:
    ref: int = 0  # sequences holding it
    key: bytes | None = None  # set while it is in the prefix table
    group: str = FULL
    keep: bool = False  # some holder wanted it cached: it stays cached when the last one lets go


class BlockPool:
    """`num_blocks` blocks. Each is free, in use (ref > 0), or cached (ref 0, keyed, evictable in LRU order)."""

    def __init__(self, num_blocks: int, prefix_cache: bool = True) -> None:
        if num_blocks <= 0:
            raise ValueError(f"a KV pool needs at least one block, got {num_blocks}")
        self.num_blocks = num_blocks
        self.prefix_cache = prefix_cache
        self.blocks = [Block() for _ in range(num_blocks)]
        self.free: list[int] = list(range(num_blocks - 1, -1, -1))
        self.cached: OrderedDict[int, None] = OrderedDict()  # ref-0 keyed blocks, least recently used first
        self.table: dict[tuple[str, bytes], int] = {}

    @property
    def available(self) -> int:
        return len(self.free) + len(self.cached)

    @property
    def used(self) -> int:
        return self.num_blocks - self.available

    def allocate(self, group: str) -> int | None:
        """A fresh block (evicting the least recently used cached one if none is free), or None."""
        if not self.free and self.cached:
            victim, _ = self.cached.popitem(last=False)
            self._unkey(victim)
            self.free.append(victim)
        if not self.free:
            return None
        b = self.free.pop()
        self.blocks[b].ref, self.blocks[b].group, self.blocks[b].keep = 1, group, False
        return b

    def lookup(self, group: str, key: bytes) -> int | None:
        return self.table.get((group, key)) if self.prefix_cache else None

    def acquire(self, b: int) -> None:
        """Takes one more reference to a block found by `lookup`."""
        if self.blocks[b].ref == 0:
            del self.cached[b]
        self.blocks[b].ref += 1

    def register(self, b: int, key: bytes) -> None:
        """Names a completed block so others can find it (a no-op when that content is already named)."""
        block = self.blocks[b]
        if self.prefix_cache and block.key is None and (block.group, key) not in self.table:
            block.key = key
            self.table[(block.group, key)] = b

    def release(self, b: int, keep: bool) -> None:
        """Drops a reference. At zero, a named block that any holder released with `keep` stays cached (most
        recent); others are freed. Sticky, because a block one sequence keeps may be shared by one that does not:
        another conversation's checkpoint must survive a borrower that has moved past it."""
        block = self.blocks[b]
        if block.ref <= 0:
            raise RuntimeError(f"block {b} released more often than acquired")
        block.ref -= 1
        block.keep |= keep
        if block.ref:
            return
        if block.keep and block.key is not None:
            self.cached[b] = None
        else:
            self._unkey(b)
            self.free.append(b)

    def _unkey(self, b: int) -> None:
        block = self.blocks[b]
        if block.key is not None:
            del self.table[(block.group, block.key)]
            block.key = None


@dataclass(frozen=True)
class Layout:
    block_size: int
    window: int  # the sliding layers' band (0 when there are none)
    has_full: bool
    has_sliding: bool

    def band_start(self, q: int) -> int:
        """First block a query at position q can see in a sliding layer (keys at positions > q - window)."""
        return max(0, (q - self.window + 1) // self.block_size)

    def blocks_alone(self, tokens: int, chunk: int) -> int:
        """Blocks one sequence of `tokens` positions needs at most, fed `chunk` tokens per step."""
        n = -(-tokens // self.block_size)
        sliding = min(n, (chunk + self.window - 2) // self.block_size + 2)
        return (n if self.has_full else 0) + (sliding if self.has_sliding else 0)


@dataclass
class SeqBlocks:
    """One sequence's block tables and the hash chain of its complete blocks."""

    layout: Layout
    full: list[int] = field(default_factory=list)  # logical block i -> pool block
    sliding: dict[int, int] = field(default_factory=dict)  # logical block i -> pool block, band only
    keys: list[bytes] = field(default_factory=list)
    keep: set[int] = field(default_factory=set)  # sliding logical blocks to leave cached when the band passes

    def checkpoint(self, position: int) -> None:
        """Keep, for later requests, the sliding band of the last block boundary at or before `position`."""
        p = position // self.layout.block_size
        self.keep.update(range(self.layout.band_start(p * self.layout.block_size), p))

    def reuse(self, pool: BlockPool, tokens: Sequence[int]) -> int:
        """Takes the longest cached prefix of `tokens` that leaves at least one token to compute -> its length."""
        lay, bs = self.layout, self.layout.block_size
        self.keys = prompt_keys(tokens, bs)
        best, matched = self.match(pool, self.keys)
        if lay.has_full and matched > best:
            # A prefix shared with another request ends here, but its sliding band was not kept: keep ours, so
            # the next request sharing it (the third conversation on one system prompt) resumes there.
            self.checkpoint(matched)
        del self.keys[best // bs :]
        n = best // bs
        if lay.has_full:
            self.full = [self._take(pool, FULL, i) for i in range(n)]
        if lay.has_sliding and n:
            self.sliding = {i: self._take(pool, SLIDING, i) for i in range(lay.band_start(best), n)}
        return best

    def match(self, pool: BlockPool, keys: Sequence[bytes]) -> tuple[int, int]:
        """(reusable, matched): the longest prefix of these block keys whose full blocks and sliding band are both
        cached, and the longest whose full blocks are. Takes nothing."""
        lay, bs = self.layout, self.layout.block_size
        best, matched = 0, 0
        for j, key in enumerate(keys):
            if lay.has_full and pool.lookup(FULL, key) is None:
                break
            matched = p = (j + 1) * bs
            if not lay.has_sliding or all(
                pool.lookup(SLIDING, keys[i]) is not None for i in range(lay.band_start(p), j + 1)
            ):
                best = p
        return best, matched

    def _take(self, pool: BlockPool, group: str, i: int) -> int:
        b = pool.lookup(group, self.keys[i])
        assert b is not None
        pool.acquire(b)
        return b

    def ensure(self, pool: BlockPool, start: int, end: int) -> bool:
        """Blocks for positions [start, end) (the ones already held are kept); False when the pool ran out."""
        lay, bs = self.layout, self.layout.block_size
        last = -(-end // bs)
        if lay.has_full:
            while len(self.full) < last:
                b = pool.allocate(FULL)
                if b is None:
                    return False
                self.full.append(b)
        if lay.has_sliding:
            for i in range(start // bs, last):
                if i not in self.sliding:
                    b = pool.allocate(SLIDING)
                    if b is None:
                        return False
                    self.sliding[i] = b
        return True

    def advance(self, pool: BlockPool, tokens: Sequence[int], computed: int) -> None:
        """After `computed` positions are in the cache: name the complete blocks, drop sliding blocks out of band."""
        lay, bs = self.layout, self.layout.block_size
        for j in range(len(self.keys), computed // bs):
            self.keys.append(chain_key(self.keys[-1] if self.keys else b"", tokens[j * bs : (j + 1) * bs]))
            if lay.has_full:
                pool.register(self.full[j], self.keys[j])
            if j in self.sliding:
                pool.register(self.sliding[j], self.keys[j])
        lo = lay.band_start(computed // bs * bs)  # the band of the last boundary: a prefix that ends there reuses it
        for i in [i for i in self.sliding if i < lo]:
            pool.release(self.sliding.pop(i), keep=i in self.keep)

    def release(self, pool: BlockPool) -> None:
        """Gives everything back, deepest block first (so the least shared blocks are evicted first)."""
        for i in sorted(self.sliding, reverse=True):
            pool.release(self.sliding[i], keep=True)
        for b in reversed(self.full):
            pool.release(b, keep=True)
        self.full, self.sliding, self.keys = [], {}, []  # `keep` stays: a preempted sequence resumes

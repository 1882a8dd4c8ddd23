"""Block pool and block tables: ownership, the prefix table, LRU eviction, SWA band trimming, checkpoints."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptoss.engine.blocks import FULL, SLIDING, BlockPool, Layout, SeqBlocks, chain_key

LAYOUT = Layout(block_size=4, window=8, has_full=True, has_sliding=True)


def check_invariants(pool: BlockPool, live: list[SeqBlocks]) -> None:
    """Every block is exactly one of free / cached / held, and held exactly as often as the tables name it."""
    held = Counter(b for s in live for b in [*s.full, *s.sliding.values()])
    free, cached = set(pool.free), set(pool.cached)
    assert len(free) == len(pool.free), "a block is free twice"
    assert not free & cached, "a block is both free and cached"
    for b, block in enumerate(pool.blocks):
        assert block.ref == held[b], f"block {b}: ref {block.ref}, held {held[b]} times"
        states = (b in free) + (b in cached) + (block.ref > 0)
        assert states == 1, f"block {b} is in {states} states"
        if b in cached:
            assert block.key is not None
    for (group, key), b in pool.table.items():
        assert pool.blocks[b].key == key and pool.blocks[b].group == group


ops = st.lists(
    st.tuples(st.sampled_from(["add", "feed", "finish", "preempt"]), st.integers(0, 7), st.integers(1, 9)),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(ops=ops, num_blocks=st.integers(4, 24), prefix_cache=st.booleans())
def test_random_submit_feed_finish_preempt_never_leaks_or_double_owns(
    ops: list[tuple[str, int, int]], num_blocks: int, prefix_cache: bool
) -> None:
    pool = BlockPool(num_blocks, prefix_cache)
    live: list[SeqBlocks] = []
    progress: dict[int, tuple[list[int], int]] = {}  # id(seq) -> (tokens, computed)
    for op, i, n in ops:
        if op == "add":
            tokens = [1, 2, 3, 4, 5, 6, 7, 8, 9][: n % 9 + 1] * 3 + [i] * n  # shared prefixes, then a tail
            s = SeqBlocks(LAYOUT)
            s.checkpoint(len(tokens))
            computed = s.reuse(pool, tokens)
            assert computed < len(tokens) and computed % LAYOUT.block_size == 0
            live.append(s)
            progress[id(s)] = (tokens, computed)
        elif live:
            s = live[i % len(live)]
            tokens, computed = progress[id(s)]
            if op == "feed":
                end = min(len(tokens), computed + n)
                if s.ensure(pool, computed, end):
                    s.advance(pool, tokens, end)
                    progress[id(s)] = (tokens, end)
            else:  # finish, cancel or preempt: all give every block back
                s.release(pool)
                live.remove(s)
        check_invariants(pool, live)
    for s in live:
        s.release(pool)
    check_invariants(pool, [])
    assert pool.used == 0


def test_chain_keys_depend_on_every_earlier_token() -> None:
    a = chain_key(chain_key(b"", [1, 2]), [3, 4])
    assert a == chain_key(chain_key(b"", [1, 2]), [3, 4])
    assert a != chain_key(chain_key(b"", [9, 2]), [3, 4])


def test_allocation_evicts_the_least_recently_released_cached_block() -> None:
    pool = BlockPool(2)
    a, b = pool.allocate(FULL), pool.allocate(FULL)
    assert a is not None and b is not None
    pool.register(a, b"a")
    pool.register(b, b"b")
    pool.release(a, keep=True)
    pool.release(b, keep=True)
    assert pool.available == 2 and pool.used == 0
    assert pool.allocate(FULL) == a  # a was released first
    assert pool.lookup(FULL, b"a") is None and pool.lookup(FULL, b"b") == b


def test_without_keep_or_key_a_released_block_is_freed() -> None:
    pool = BlockPool(1)
    b = pool.allocate(SLIDING)
    assert b is not None
    pool.register(b, b"k")
    pool.release(b, keep=False)
    assert pool.lookup(SLIDING, b"k") is None and pool.free == [b]


def test_a_block_kept_by_one_holder_survives_another_that_lets_it_go() -> None:
    pool = BlockPool(2)
    b = pool.allocate(SLIDING)
    assert b is not None
    pool.register(b, b"checkpoint")
    pool.acquire(b)  # a second sequence borrows it
    pool.release(b, keep=True)  # the owner keeps it as its checkpoint
    pool.release(b, keep=False)  # the borrower's band moved on
    assert pool.lookup(SLIDING, b"checkpoint") == b and b in pool.cached


def test_releasing_twice_is_an_error() -> None:
    pool = BlockPool(1)
    b = pool.allocate(FULL)
    assert b is not None
    pool.release(b, keep=False)
    with pytest.raises(RuntimeError, match="released more often than acquired"):
        pool.release(b, keep=False)


def test_an_empty_pool_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one block, got 0"):
        BlockPool(0)


def test_sliding_blocks_leave_with_the_band_and_full_blocks_stay() -> None:
    pool = BlockPool(64)
    s = SeqBlocks(LAYOUT)
    tokens = list(range(40))
    assert s.ensure(pool, 0, 40)
    s.advance(pool, tokens, 40)
    assert len(s.full) == 10
    # the band of the last boundary (40) is positions 33..39: blocks 8 and 9
    assert sorted(s.sliding) == [8, 9]
    assert pool.used == 12


def test_the_prompt_end_checkpoint_keeps_its_band_cached() -> None:
    pool = BlockPool(64)
    prompt = list(range(20))
    s = SeqBlocks(LAYOUT)
    s.checkpoint(len(prompt))  # boundary 20: band blocks 3 and 4
    tokens = [*prompt, *range(100, 120)]
    assert s.ensure(pool, 0, len(tokens))
    s.advance(pool, tokens, len(tokens))
    s.release(pool)
    again = SeqBlocks(LAYOUT)
    assert again.reuse(pool, [*prompt, 7, 7, 7]) == 20  # diverges right after the prompt: all of it is reused
    other = SeqBlocks(LAYOUT)
    assert other.reuse(pool, [*tokens, 7]) == 40  # the whole sequence's last band was kept too (a tool loop)
    middle = SeqBlocks(LAYOUT)
    assert middle.reuse(pool, [*tokens[:26], 7]) == 20  # boundary 24's band was freed: back to the checkpoint


def test_blocks_alone_counts_full_blocks_and_at_most_a_band_and_a_chunk_of_sliding_ones() -> None:
    assert LAYOUT.blocks_alone(4, chunk=4) == 2
    assert LAYOUT.blocks_alone(400, chunk=4) == 100 + (4 + 8 - 2) // 4 + 2
    assert Layout(4, 0, True, False).blocks_alone(400, 16) == 100

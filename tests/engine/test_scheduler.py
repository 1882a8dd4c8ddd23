"""The scheduler alone (no model: a step just appends a token to every sequence that reached its end): budgets,
waiting, preemption, and that every request finishes however small the pool."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gptoss.engine.blocks import BlockPool, Layout
from gptoss.engine.scheduler import Scheduler, Seq
from tests.engine.test_blocks import check_invariants

LAYOUT = Layout(block_size=4, window=8, has_full=True, has_sliding=True)


def step(s: Scheduler) -> list[Seq]:
    """One simulated step -> the sequences that finished."""
    done = []
    for seq, n in s.plan():
        s.commit(seq, n)
        if seq.computed == len(seq.tokens):
            seq.tokens.append(7)
            if seq.generated >= seq.budget:
                done.append(seq)
    for seq in done:
        s.remove(seq)
    return done


def test_decoders_get_a_token_every_step_and_prompts_fill_the_rest() -> None:
    s = Scheduler(BlockPool(256), LAYOUT, max_running=4, max_step_tokens=10)
    short = s.add("short", [1, 2, 3], budget=50)
    step(s)  # its prompt, and its first token
    s.add("long", list(range(100)), budget=1)
    for _ in range(5):
        work = dict((seq.key, n) for seq, n in s.plan())
        assert work == {"short": 1, "long": 9}
        for seq, n in [(short, 1), (s.running[1], 9)]:
            s.commit(seq, n)
        short.tokens.append(7)


def test_new_requests_wait_for_blocks_instead_of_preempting() -> None:
    pool = LAYOUT.blocks_alone(24, 8)  # exactly what "a" (20 + 4 tokens, 8 per step) may need
    s = Scheduler(BlockPool(pool), LAYOUT, max_running=4, max_step_tokens=8)
    a = s.add("a", list(range(20)), budget=4)
    while not a.decoding:
        step(s)
    s.add("b", list(range(50, 60)), budget=2)
    step(s)
    assert [q.key for q in s.running] == ["a"] and [q.key for q in s.waiting] == ["b"]
    done = [q.key for _ in range(20) for q in step(s)]
    assert done == ["a", "b"] and s.stats.preemptions == 0


def test_a_growing_sequence_preempts_the_newest_and_it_resumes_with_its_tokens() -> None:
    s = Scheduler(BlockPool(12), LAYOUT, max_running=4, max_step_tokens=64)
    a = s.add("a", list(range(12)), budget=20)
    b = s.add("b", list(range(100, 110)), budget=20)
    finished: list[Seq] = []
    for _ in range(200):
        finished += step(s)
        if len(finished) == 2:
            break
    assert {q.key for q in finished} == {"a", "b"} and s.stats.preemptions > 0
    assert a.generated == b.generated == 20 and s.pool.used == 0


requests = st.lists(st.tuples(st.integers(1, 30), st.integers(1, 12), st.integers(0, 5)), min_size=1, max_size=12)


@settings(max_examples=100, deadline=None)
@given(reqs=requests, num_blocks=st.integers(14, 40), max_running=st.integers(1, 4), budget=st.integers(1, 16))
def test_every_request_finishes_and_no_block_leaks(
    reqs: list[tuple[int, int, int]], num_blocks: int, max_running: int, budget: int
) -> None:
    s = Scheduler(BlockPool(num_blocks), LAYOUT, max_running, max_step_tokens=budget)
    pending = list(enumerate(reqs))
    finished: set[object] = set()
    for t in range(5000):
        while pending and pending[0][1][2] <= t:  # arrivals
            i, (prompt, out, _) = pending.pop(0)
            tokens = [i % 3] * prompt  # repeated prompts: prefix-cache hits
            if LAYOUT.blocks_alone(prompt + out, budget) <= num_blocks:
                s.add(i, tokens, out)
            else:
                finished.add(i)  # the engine would refuse it with a 400
        finished |= {q.key for q in step(s)}
        live = [q.blocks for q in s.running + list(s.waiting)]
        check_invariants(s.pool, live)
        if not pending and not s.running and not s.waiting:
            break
    assert finished == set(range(len(reqs))), "a request starved"
    assert s.pool.used == 0


def run_to_end(s: Scheduler) -> dict[object, int]:
    """Steps until every request finished -> the prompt tokens each one computed itself (what it did not reuse)."""
    fed: dict[object, int] = {}
    for _ in range(10_000):
        if not (s.running or s.waiting):
            return fed
        work = s.plan()
        assert work, "nothing scheduled while requests wait: a deadlock"
        for q, n in work:
            fed[q.key] = fed.get(q.key, 0) + max(0, min(q.computed + n, q.prompt_len) - q.computed)
        for q in step_work(s, work):
            s.remove(q)
    raise AssertionError("requests never finished")


def step_work(s: Scheduler, work: list[tuple[Seq, int]]) -> list[Seq]:
    done = []
    for seq, n in work:
        s.commit(seq, n)
        if seq.computed == len(seq.tokens):
            seq.tokens.append(7)
            if seq.generated >= seq.budget:
                done.append(seq)
    return done


@pytest.mark.parametrize("budget", [3, 8, 64])
def test_requests_arriving_together_on_one_prefix_prefill_it_once(budget: int) -> None:
    s = Scheduler(BlockPool(256), LAYOUT, max_running=4, max_step_tokens=budget)
    system = list(range(100, 130))  # 30 shared tokens: 7 complete blocks of 4
    for i in range(4):
        s.add(i, [*system, 200 + i, 300 + i, 400 + i], budget=3)
    fed = run_to_end(s)
    assert fed[0] == 33  # the first computes the shared prefix ...
    assert [fed[i] for i in (1, 2, 3)] == [5, 5, 5]  # ... the others resume at its last block boundary (28)
    assert s.stats.cached_tokens == 3 * 28 and s.pool.used == 0


def test_without_the_prefix_cache_nobody_waits_for_anybody() -> None:
    s = Scheduler(BlockPool(256, prefix_cache=False), LAYOUT, max_running=4, max_step_tokens=64)
    for i in range(3):
        s.add(i, [*range(100, 130), i], budget=1)
    s.plan()
    assert len(s.running) == 3


def test_a_mostly_cached_prompt_goes_before_a_long_prefill() -> None:
    s = Scheduler(BlockPool(512), LAYOUT, max_running=4, max_step_tokens=8)
    history = list(range(500, 560))
    s.add("turn1", history, budget=1)
    run_to_end(s)
    s.add("long", list(range(1000, 1200)), budget=1)  # 200 uncached tokens
    work = dict((q.key, n) for q, n in s.plan())
    assert work == {"long": 8}
    s.add("tool", [*history, 7, 11, 12, 13], budget=1)  # its history is cached: 8 tokens to compute
    first = None
    for t in range(30):
        work = dict((q.key, n) for q, n in s.plan())
        if first is None and work.get("tool"):
            first = t
        for q in step_work(s, [(q, n) for q in list(s.running) for k, n in work.items() if q.key == k]):
            s.remove(q)
        if not any(q.key == "tool" for q in [*s.running, *s.waiting]):
            break
    assert first == 0 and t <= 2  # it joined at once, took the budget and finished within three steps
    assert any(q.key == "long" for q in s.running)  # the long prompt is still prefilling


@pytest.mark.parametrize("patience", [0, 2, 4])
def test_a_long_prompt_is_never_passed_over_more_than_patience_steps(patience: int) -> None:
    s = Scheduler(BlockPool(1024), LAYOUT, max_running=8, max_step_tokens=8, patience=patience)
    long = s.add("long", list(range(1000, 1100)), budget=1)
    gaps, gap = [], 0
    for t in range(200):
        if t < 150:  # a stream of short prompts, each wanting the whole budget
            s.add(t, list(range(2000 + 10 * t, 2008 + 10 * t)), budget=1)
        work = s.plan()
        gap = 0 if any(q is long for q, _ in work) else gap + 1
        gaps.append(gap)
        for q in step_work(s, work):
            s.remove(q)
        if long not in s.running and long not in s.waiting:
            break
    assert long.generated == 1, "the long prompt starved"
    assert max(gaps) == patience  # passed over exactly up to the patience, then fed

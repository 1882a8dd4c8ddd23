"""The scheduler alone (no model: a step just appends a token to every sequence that reached its end): budgets,
waiting, preemption, and that every request finishes however small the pool."""

from __future__ import annotations

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

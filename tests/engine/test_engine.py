"""Engine: ordering, finish reasons, the bounded queue, cancellation, errors, readiness, stats."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence

import pytest

from gptoss.engine import (
    Engine,
    EngineNotReadyError,
    Finish,
    Generation,
    GenerationStats,
    QueueFullError,
    TokenEvent,
)
from gptoss.errors import InputError
from gptoss.sampling import SamplingParams, TokenConstraint
from tests.engine.scripted import ScriptedSource

STOP = frozenset({99})


def params(max_tokens: int | None = None) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, stop_tokens=STOP)


async def collect(gen: Generation) -> list[int]:
    return [e.token async for e in gen]


async def wait_until(predicate: object, timeout: float) -> float:
    start = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.002)
    return time.monotonic() - start


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_tokens_arrive_in_order_and_stop_after_the_stop_token() -> None:
    engine = Engine(ScriptedSource(default=[5, 6, 7, 99, 8]))

    async def main() -> tuple[list[int], Finish | None]:
        gen = engine.submit([1, 2], params())
        return await collect(gen), gen.finish

    assert run(main()) == ([5, 6, 7, 99], Finish.STOP)
    engine.close()


def test_budget_ends_with_length() -> None:
    engine = Engine(ScriptedSource(default=[5, 6, 7, 8]))

    async def main() -> tuple[list[int], Finish | None, int]:
        gen = engine.submit([1], params(max_tokens=2))
        return await collect(gen), gen.finish, gen.stats.output_tokens

    assert run(main()) == ([5, 6], Finish.LENGTH, 2)
    engine.close()


def test_iterating_after_the_end_stays_ended() -> None:
    engine = Engine(ScriptedSource(default=[99]))

    async def main() -> list[int]:
        gen = engine.submit([1], params())
        first = await collect(gen)
        return first + await collect(gen)

    assert run(main()) == [99]
    engine.close()


def test_not_ready_until_a_source_is_attached() -> None:
    engine = Engine(None)
    assert not engine.ready

    async def main() -> list[int]:
        with pytest.raises(EngineNotReadyError, match="still loading"):
            engine.submit([1], params())
        engine.attach(ScriptedSource(default=[3, 99]))
        return await collect(engine.submit([1], params()))

    assert run(main()) == [3, 99]
    assert engine.ready
    engine.close()


def test_source_validation_errors_surface_at_submit_and_nothing_is_queued() -> None:
    engine = Engine(ScriptedSource(context_length=8))

    async def main() -> None:
        with pytest.raises(InputError, match="context overflow: prompt of 6 tokens \\+ max_tokens 5 exceeds"):
            engine.submit([1] * 6, params(max_tokens=5))
        assert engine.stats().waiting == 0

    run(main())
    engine.close()


def test_negative_queue_size_is_refused() -> None:
    with pytest.raises(ValueError, match="max_queue must be >= 0, got -1"):
        Engine(ScriptedSource(), max_queue=-1)


def test_queue_full_refuses_beyond_one_running_plus_max_queue() -> None:
    source = ScriptedSource(default=[1] * 1000, delay=0.01)
    engine = Engine(source, max_queue=2)

    async def main() -> None:
        gens = [engine.submit([1], params())]
        await wait_until(lambda: engine.stats().running == 1, 2)
        gens += [engine.submit([1], params()), engine.submit([1], params())]
        assert engine.stats().waiting == 2
        with pytest.raises(QueueFullError, match=r"the request queue is full \(2 waiting\); retry later"):
            engine.submit([1], params())
        for g in gens:
            g.cancel()
        await wait_until(lambda: engine.stats() == type(engine.stats())(0, 0), 2)

    run(main())
    engine.close()


def test_cancel_frees_the_running_slot_within_200ms() -> None:
    source = ScriptedSource(default=[1] * 10_000, delay=0.005)
    engine = Engine(source)

    async def main() -> tuple[float, Finish | None]:
        gen = engine.submit([1], params())
        async for _ in gen:
            if gen.stats.output_tokens >= 3:
                break
        gen.cancel()
        took = await wait_until(lambda: engine.stats().running == 0, 1)
        return took, gen.finish

    took, finish = run(main())  # type: ignore[misc]
    assert took < 0.2
    assert finish is Finish.CANCELLED
    assert source.steps < 100
    engine.close()


def test_cancelling_a_waiting_request_removes_it_and_ends_its_stream() -> None:
    engine = Engine(ScriptedSource(default=[1] * 1000, delay=0.01), max_queue=4)

    async def main() -> tuple[list[int], Finish | None, int]:
        running = engine.submit([1], params())
        await wait_until(lambda: engine.stats().running == 1, 2)
        waiting = engine.submit([2], params())
        waiting.cancel()
        waiting.cancel()  # idempotent
        tokens = await collect(waiting)
        depth = engine.stats().waiting
        running.cancel()
        return tokens, waiting.finish, depth

    assert run(main()) == ([], Finish.CANCELLED, 0)
    engine.close()


class FailingSource(ScriptedSource):
    def generate(
        self,
        token_ids: Sequence[int],
        params: SamplingParams,
        top_logprobs: int | None = None,
        constraint: TokenConstraint | None = None,
    ) -> Iterator[TokenEvent | None]:
        if token_ids[0] == 0:
            return self._boom()
        return super().generate(token_ids, params, top_logprobs, constraint)

    def _boom(self) -> Iterator[TokenEvent | None]:
        yield TokenEvent(4)
        raise RuntimeError("kernel exploded")


def test_a_failing_source_fails_its_request_and_the_engine_goes_on() -> None:
    engine = Engine(FailingSource(default=[7, 99]))

    async def main() -> tuple[list[int], Finish | None, str, list[int]]:
        bad = engine.submit([0], params())
        tokens = await collect(bad)
        good = await collect(engine.submit([1], params()))
        return tokens, bad.finish, str(bad.error), good

    assert run(main()) == ([4], Finish.ERROR, "kernel exploded", [7, 99])
    engine.close()


def test_on_finished_reports_stats_for_every_request() -> None:
    seen: list[GenerationStats] = []
    engine = Engine(ScriptedSource(default=[5, 6, 99], delay=0.002), on_finished=seen.append)

    async def main() -> None:
        await collect(engine.submit([1, 2, 3], params()))

    run(main())
    engine.close()
    (stats,) = seen
    assert (stats.prompt_tokens, stats.output_tokens, stats.finish) == (3, 3, Finish.STOP)
    assert stats.first_token_at is not None and stats.finished_at is not None
    rate = stats.decode_rate()
    assert rate is not None and rate > 0


def test_decode_rate_needs_two_tokens() -> None:
    stats = GenerationStats(prompt_tokens=1, submitted_at=0.0, first_token_at=1.0, finished_at=2.0, output_tokens=1)
    assert stats.decode_rate() is None
    stats.output_tokens = 5
    assert stats.decode_rate() == 4.0


def test_close_cancels_waiting_and_running_requests() -> None:
    engine = Engine(ScriptedSource(default=[1] * 1000, delay=0.01), max_queue=4)

    async def main() -> list[Finish | None]:
        gens = [engine.submit([1], params()) for _ in range(3)]
        await asyncio.sleep(0.03)
        await asyncio.to_thread(engine.close)
        for g in gens:
            await collect(g)
        return [g.finish for g in gens]

    assert run(main()) == [Finish.CANCELLED] * 3

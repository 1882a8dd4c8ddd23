"""The engine: a bounded queue of generation requests served by one worker thread; token ids in, token ids out.

The server calls `submit()` from its event loop and gets a `Generation`, an async iterator of `TokenEvent`s. The
worker thread runs one request at a time, advancing its source iterator step by step; between steps it checks the
request's cancel flag, so a client that goes away stops its generation after at most one step. `submit()` refuses
at once (`QueueFullError`, mapped to HTTP 429) when one request runs and `max_queue` more already wait, rather
than letting latency grow without bound.

With a `BatchedModelSource` the worker instead steps all admitted requests together (continuous batching, see
engine/scheduler.py): each step is one forward pass, after which every sequence that got a token emits it. The
queue bound then counts requests beyond the source's `max_running`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from gptoss.engine.batched import BatchedModelSource, StepOutput
from gptoss.engine.source import TokenEvent, TokenSource
from gptoss.errors import GptossError
from gptoss.sampling import SamplingParams, TokenConstraint

Source = TokenSource | BatchedModelSource  # one request at a time, or continuous batching


class QueueFullError(GptossError):
    """Too many requests are waiting: the client should retry later."""


class EngineNotReadyError(GptossError):
    """No token source yet: the model is still loading."""


class Finish(StrEnum):
    STOP = "stop"  # a stop token was generated
    LENGTH = "length"  # the token budget (max_tokens or the context) ran out
    CANCELLED = "cancelled"
    ERROR = "error"


@dataclass
class GenerationStats:
    prompt_tokens: int
    submitted_at: float
    started_at: float | None = None
    first_token_at: float | None = None
    finished_at: float | None = None
    output_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens served from the prefix cache
    finish: Finish | None = None

    def decode_rate(self) -> float | None:
        """Tokens per second after the first token; None with fewer than two tokens."""
        if self.first_token_at is None or self.finished_at is None or self.output_tokens < 2:
            return None
        elapsed = self.finished_at - self.first_token_at
        return (self.output_tokens - 1) / elapsed if elapsed > 0 else None


_DONE = object()


class Generation:
    """One request's token stream. Iterate with `async for`; `cancel()` stops it (idempotent, any thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stats: GenerationStats, stop_tokens: frozenset[int]) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._cancel = threading.Event()
        self.stop_tokens = stop_tokens
        self.stats = stats
        self.error: BaseException | None = None
        self.on_cancel: Callable[[Generation], None] | None = None

    @property
    def finish(self) -> Finish | None:
        return self.stats.finish

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        if self.stats.finish is not None or self._cancel.is_set():  # already over: nothing to stop
            return
        self._cancel.set()
        if self.on_cancel is not None:
            self.on_cancel(self)

    def __aiter__(self) -> Generation:
        return self

    async def __anext__(self) -> TokenEvent:
        item = await self._queue.get()
        if item is _DONE:
            self._queue.put_nowait(_DONE)  # later calls end too
            raise StopAsyncIteration
        assert isinstance(item, TokenEvent)
        return item

    # ---- called from the worker thread ----

    def _post(self, item: object) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)
        except RuntimeError:  # the event loop is closed (server shutting down): nobody is listening any more
            self._cancel.set()

    def _emit(self, event: TokenEvent) -> None:
        now = time.monotonic()
        if self.stats.first_token_at is None:
            self.stats.first_token_at = now
        self.stats.output_tokens += 1
        self._post(event)

    def _end(self, finish: Finish, error: BaseException | None = None) -> None:
        self.error = error
        self.stats.finish = finish
        self.stats.finished_at = time.monotonic()
        self._post(_DONE)


@dataclass(frozen=True)
class _Request:
    token_ids: Sequence[int]
    params: SamplingParams
    top_logprobs: int | None
    constraint: TokenConstraint | None


@dataclass
class _Job:
    generation: Generation
    steps: Iterator[TokenEvent | None] | None  # None: a batched source steps it
    request: _Request | None = None


@dataclass(frozen=True)
class EngineStats:
    waiting: int
    running: int


@dataclass
class _State:
    waiting: deque[_Job] = field(default_factory=deque)
    running: _Job | None = None
    active: dict[Generation, _Job] = field(default_factory=dict)  # admitted into a batched source
    closed: bool = False


class Engine:
    """Serves generations from a TokenSource one at a time (or a BatchedModelSource, many together), from a
    bounded queue.

    Created without a source while the model loads (`ready` is False and `submit` raises EngineNotReadyError);
    `attach(source)` makes it ready. `on_finished` is called from the worker thread with each request's stats.
    """

    def __init__(
        self,
        source: Source | None = None,
        max_queue: int = 16,
        on_finished: Callable[[GenerationStats], None] | None = None,
    ) -> None:
        if max_queue < 0:
            raise ValueError(f"max_queue must be >= 0, got {max_queue}")
        self.max_queue = max_queue
        self.on_finished = on_finished
        self._source = source
        self._state = _State()
        self._cond = threading.Condition()
        self._worker = threading.Thread(target=self._work, name="gptoss-engine", daemon=True)
        self._worker.start()

    # ---- control ----

    def attach(self, source: Source) -> None:
        self._source = source

    @property
    def ready(self) -> bool:
        return self._source is not None

    @property
    def context_length(self) -> int:
        return self._require_source().context_length

    def stats(self) -> EngineStats:
        with self._cond:
            if isinstance(self._source, BatchedModelSource):
                waiting, running = self._source.counts
                return EngineStats(len(self._state.waiting) + waiting, running)
            return EngineStats(len(self._state.waiting), int(self._state.running is not None))

    @property
    def batched(self) -> BatchedModelSource | None:
        return self._source if isinstance(self._source, BatchedModelSource) else None

    def close(self) -> None:
        """Cancels everything and stops the worker thread."""
        with self._cond:
            self._state.closed = True
            jobs = list(self._state.waiting) + ([self._state.running] if self._state.running else [])
            jobs += self._state.active.values()
            self._cond.notify_all()
        for job in jobs:
            job.generation.cancel()
        self._worker.join(timeout=5)

    def submit(
        self,
        token_ids: Sequence[int],
        params: SamplingParams,
        top_logprobs: int | None = None,
        constraint: TokenConstraint | None = None,
    ) -> Generation:
        """Queue a request from the running event loop. Raises EngineNotReadyError, QueueFullError, or the
        source's InputError (bad ids, context overflow) before anything is queued. `constraint` restricts this
        request's tokens (see TokenSource.generate)."""
        source = self._require_source()
        loop = asyncio.get_running_loop()
        with self._cond:
            if isinstance(source, BatchedModelSource):
                waiting, running = source.counts
                if len(self._state.waiting) + waiting + running >= self.max_queue + source.max_running:
                    raise QueueFullError(f"the request queue is full ({self.max_queue} waiting); retry later")
                source.check(token_ids, params)
                steps, request = None, _Request(list(token_ids), params, top_logprobs, constraint)
            else:
                if len(self._state.waiting) + (self._state.running is not None) > self.max_queue:
                    raise QueueFullError(f"the request queue is full ({self.max_queue} waiting); retry later")
                steps, request = source.generate(token_ids, params, top_logprobs, constraint), None
            generation = Generation(loop, GenerationStats(len(token_ids), time.monotonic()), params.stop_tokens)
            generation.on_cancel = self._dequeue
            self._state.waiting.append(_Job(generation, steps, request))
            self._cond.notify_all()
        return generation

    def _require_source(self) -> Source:
        if self._source is None:
            raise EngineNotReadyError("the model is still loading")
        return self._source

    def _dequeue(self, generation: Generation) -> None:
        """A request cancelled while still waiting leaves the queue at once."""
        with self._cond:
            for job in self._state.waiting:
                if job.generation is generation:
                    self._state.waiting.remove(job)
                    self._cond.notify_all()
                    break
            else:
                return
        self._finish(job, Finish.CANCELLED)

    # ---- worker thread ----

    def _work(self) -> None:
        while True:
            job = self._next_job()
            if job is None:
                return
            try:
                if job.steps is None:
                    self._run_batched(job)
                    continue
                self._finish(job, *self._run_one(job))
            finally:
                with self._cond:
                    self._state.running = None
                    self._cond.notify_all()

    def _next_job(self) -> _Job | None:
        with self._cond:
            while not self._state.waiting and not self._state.closed:
                self._cond.wait()
            if self._state.closed:
                return None
            job = self._state.waiting.popleft()
            self._state.running = job
            return job

    def _run_one(self, job: _Job) -> tuple[Finish, BaseException | None]:
        gen = job.generation
        gen.stats.started_at = time.monotonic()
        last: int | None = None
        assert job.steps is not None
        try:
            for event in job.steps:
                if gen.cancelled:
                    return Finish.CANCELLED, None
                if event is not None:
                    gen._emit(event)
                    last = event.token
            if gen.cancelled:
                return Finish.CANCELLED, None
            return (Finish.STOP if last in gen.stop_tokens else Finish.LENGTH), None
        except Exception as e:  # a failing source must not kill the worker: the request fails, the engine goes on
            return Finish.ERROR, e
        finally:
            close = getattr(job.steps, "close", None)
            if close is not None:
                close()

    def _run_batched(self, first: _Job) -> None:
        """Steps the batched source until no admitted request is left; takes in new requests between steps."""
        source = self._source
        assert isinstance(source, BatchedModelSource)
        with self._cond:
            self._state.running = None
            self._admit(source, first)
        while True:
            with self._cond:
                while self._state.waiting and not self._state.closed:
                    self._admit(source, self._state.waiting.popleft())
                active = self._state.active
            for gen in [g for g in active if g.cancelled or self._state.closed]:
                self._retire(source, gen, Finish.CANCELLED)
            if not active:
                return
            try:
                outputs = source.step()
            except Exception as e:  # the whole batch fails; the engine goes on with the next requests
                for gen in list(active):
                    self._retire(source, gen, Finish.ERROR, e)
                return
            for out in outputs:
                self._deliver(source, out)

    def _admit(self, source: BatchedModelSource, job: _Job) -> None:
        req = job.request
        assert req is not None
        job.generation.stats.started_at = time.monotonic()
        try:
            source.add(job.generation, req.token_ids, req.params, req.top_logprobs, req.constraint)
        except Exception as e:  # checked at submit already; the pool cannot have shrunk, but fail it cleanly
            self._finish(job, Finish.ERROR, e)
            return
        self._state.active[job.generation] = job

    def _deliver(self, source: BatchedModelSource, out: StepOutput) -> None:
        gen = out.key
        assert isinstance(gen, Generation)
        if gen.cancelled:
            return  # retired before the next step
        if out.error is not None:
            self._retire(source, gen, Finish.ERROR, out.error)
            return
        if out.event is not None:
            gen.stats.cached_tokens = source.cached_tokens(gen)
            gen._emit(out.event)
        if out.done:
            last = None if out.event is None else out.event.token
            self._retire(source, gen, Finish.STOP if last in gen.stop_tokens else Finish.LENGTH)

    def _retire(
        self, source: BatchedModelSource, gen: Generation, finish: Finish, error: BaseException | None = None
    ) -> None:
        source.remove(gen)
        with self._cond:
            job = self._state.active.pop(gen)
        self._finish(job, finish, error)

    def _finish(self, job: _Job, finish: Finish, error: BaseException | None = None) -> None:
        job.generation._end(finish, error)
        if self.on_finished is not None:
            self.on_finished(job.generation.stats)

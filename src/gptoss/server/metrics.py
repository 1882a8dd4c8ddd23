"""Prometheus metrics on a registry of the app's own (so several apps in one process do not collide)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from gptoss.engine import Engine, GenerationStats
from gptoss.engine.scheduler import BATCH_BUCKETS

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
RATE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class Metrics:
    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("gptoss_requests", "HTTP requests by route and status", ["route", "status"], registry=r)
        self.prompt_tokens = Counter("gptoss_prompt_tokens", "Prompt tokens of finished generations", registry=r)
        self.output_tokens = Counter("gptoss_output_tokens", "Tokens generated", registry=r)
        self.generations = Counter("gptoss_generations", "Generations by how they ended", ["finish"], registry=r)
        self.ttft = Histogram(
            "gptoss_time_to_first_token_seconds", "From submit to first token", buckets=LATENCY_BUCKETS, registry=r
        )
        self.decode_rate = Histogram(
            "gptoss_decode_tokens_per_second", "Tokens/s after the first token", buckets=RATE_BUCKETS, registry=r
        )
        self.problems = Counter("gptoss_output_problems", "Malformed model output repaired", ["kind"], registry=r)
        self.rejected = Counter(
            "gptoss_rejected_connections", "Connections closed at the HTTP edge, by reason", ["reason"], registry=r
        )
        waiting = Gauge("gptoss_queue_depth", "Requests waiting for the engine", registry=r)
        waiting.set_function(lambda: engine.stats().waiting)
        running = Gauge("gptoss_running", "Requests being generated", registry=r)
        running.set_function(lambda: engine.stats().running)
        ready = Gauge("gptoss_ready", "1 once the model is loaded", registry=r)
        ready.set_function(lambda: float(engine.ready))
        r.register(BatchCollector(engine))

    def observe_generation(self, stats: GenerationStats) -> None:
        """Called by the engine's worker thread when a generation ends (prometheus_client is thread-safe)."""
        self.prompt_tokens.inc(stats.prompt_tokens)
        self.output_tokens.inc(stats.output_tokens)
        self.generations.labels(str(stats.finish)).inc()
        if stats.first_token_at is not None:
            self.ttft.observe(stats.first_token_at - stats.submitted_at)
        rate = stats.decode_rate()
        if rate is not None:
            self.decode_rate.observe(rate)

    def count_rejected(self, reason: str) -> None:
        """A request refused before it reached the app (server.edge: timeouts, head size, framing)."""
        self.rejected.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class BatchCollector(Collector):
    """The batching engine's own counters, read at scrape time (nothing while the model loads or without one)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        source = self.engine.batched
        if source is None:
            return
        pool, s = source.pool, source.stats
        yield GaugeMetricFamily("gptoss_kv_blocks_used", "KV cache blocks held by sequences", pool.used)
        yield GaugeMetricFamily("gptoss_kv_blocks_free", "KV cache blocks free or only cached", pool.available)
        yield GaugeMetricFamily(
            "gptoss_kv_blocks_cached", "Free blocks that still hold a cached prefix", len(pool.cached)
        )
        yield CounterMetricFamily("gptoss_prefix_cache_queried_tokens", "Prompt tokens looked up", s.prompt_tokens)
        yield CounterMetricFamily("gptoss_prefix_cache_hit_tokens", "Prompt tokens served from cache", s.cached_tokens)
        rate = s.cached_tokens / s.prompt_tokens if s.prompt_tokens else 0.0
        yield GaugeMetricFamily("gptoss_prefix_cache_hit_rate", "Hit tokens / queried tokens so far", rate)
        yield CounterMetricFamily("gptoss_preemptions", "Sequences preempted (recomputed later)", s.preemptions)
        yield CounterMetricFamily("gptoss_engine_step_tokens", "Tokens fed through forward passes", s.step_tokens)
        counts = list(accumulate(s.batch_sizes))
        buckets = [(str(b), float(c)) for b, c in zip(BATCH_BUCKETS, counts, strict=False)] + [("+Inf", counts[-1])]
        yield HistogramMetricFamily(
            "gptoss_batch_size", "Sequences per forward pass", buckets=buckets, sum_value=s.step_sequences
        )


class RequestCounter:
    """ASGI middleware: counts every HTTP request by route template (not raw path) and status; a client that left
    before its request was read counts as 499."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(
        self, scope: Scope, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(route, str(status[0])).inc()

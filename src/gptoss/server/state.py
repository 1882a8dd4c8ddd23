"""What the route handlers share: the engine, the config, the response store, the metrics, the requests in flight."""

from __future__ import annotations

from dataclasses import dataclass, field

from gptoss.engine import Engine
from gptoss.server.config import ServerConfig
from gptoss.server.conversation import Problem
from gptoss.server.inflight import InFlight
from gptoss.server.metrics import Metrics
from gptoss.server.store import ResponseStore


@dataclass
class ServerState:
    engine: Engine
    config: ServerConfig
    store: ResponseStore
    metrics: Metrics
    inflight: InFlight = field(default_factory=InFlight)  # each request's generations, cancelled when it ends

    def count_problems(self, problems: list[Problem]) -> None:
        for problem in problems:
            self.metrics.problems.labels(problem.kind).inc()

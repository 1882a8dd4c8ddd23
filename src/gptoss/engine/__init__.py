"""The engine seam: token ids and sampling params in, an async stream of token ids out. Knows no text or HTTP."""

from gptoss.engine.batched import BatchConfig, BatchedModelSource
from gptoss.engine.engine import (
    Engine,
    EngineNotReadyError,
    EngineStats,
    Finish,
    Generation,
    GenerationStats,
    QueueFullError,
)
from gptoss.engine.source import ModelSource, TokenEvent, TokenSource, output_budget

__all__ = [
    "BatchConfig",
    "BatchedModelSource",
    "Engine",
    "EngineNotReadyError",
    "EngineStats",
    "Finish",
    "Generation",
    "GenerationStats",
    "ModelSource",
    "QueueFullError",
    "TokenEvent",
    "TokenSource",
    "output_budget",
]

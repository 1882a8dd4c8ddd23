"""Decode speed with and without a structured-output constraint, and what computing the masks costs.

    python -m benchmarks.bench_structured [--preset 20b | --model DIR] [--threads N] [--tokens 96] [--repeats 2]

One model (the cached random checkpoint of the preset's real shapes), one harmony prompt, two decode loops through
`Model.steps`: free, and constrained to a nested JSON Schema of 20 fields (reasoning budget 0, so every step is inside
the JSON). Both decode the same number of tokens (the constrained run's, capped at --tokens). Reports decode tok/s of
each, the step-time ratio, the mean time a worker thread spent computing a mask, and the mean time the decode loop
waited for one (the part on the critical path: masks are computed while the forward pass runs). Last line: JSON.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from benchmarks.common import cpu_model, emit, random_checkpoint

FIELD_TYPES: list[dict[str, Any]] = [
    {"type": "integer", "minimum": 0, "maximum": 999},
    {"type": "string", "maxLength": 12},
    {"enum": ["low", "medium", "high"]},
    {"type": "boolean"},
    {"type": "number", "minimum": 0, "maximum": 100, "multipleOf": 0.5},
]


def nested_schema() -> dict[str, Any]:
    """20 leaf fields: 12 at the top, 8 in two nested objects (one inside an array)."""

    def fields(prefix: str, n: int) -> dict[str, Any]:
        return {f"{prefix}{i}": FIELD_TYPES[i % len(FIELD_TYPES)] for i in range(n)}

    def closed(props: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}

    top = fields("f", 12)
    top["owner"] = closed(fields("o", 4))
    top["items"] = {"type": "array", "items": closed(fields("i", 4)), "minItems": 1, "maxItems": 2}
    return closed(top)


class TimedConstraint:
    """Wraps a TurnConstraint: records the worker's compute time per mask and the loop's wait for it."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.waits, self.computes = inner, [], []
        compute = inner._compute

        def timed() -> torch.Tensor:
            t = time.perf_counter()
            out = compute()
            self.computes.append(time.perf_counter() - t)
            return out

        inner._compute = timed

    def mask(self) -> torch.Tensor | None:
        t = time.perf_counter()
        out = self.inner.mask()
        self.waits.append(time.perf_counter() - t)
        return out

    def advance(self, token: int) -> None:
        self.inner.advance(token)


def decode(model: Any, prompt: list[int], limit: int, constraint: Any, stops: frozenset[int]) -> tuple[int, float]:
    """(tokens decoded after the first, seconds they took): the first token pays for the prefill."""
    from gptoss.sampling import SamplingParams

    params = SamplingParams(temperature=1.0, seed=0, max_tokens=limit, stop_tokens=stops)
    count, start = 0, 0.0
    for step in model.steps(prompt, params, constraint=constraint):
        if step is None:
            continue
        if count == 0:
            start = time.perf_counter()
        count += 1
    return count - 1, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="20b")
    ap.add_argument("--model", default=None, help="a checkpoint folder instead of the preset's random one")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import gptoss
    from gptoss.harmony.constraint import TurnConstraint, turn_grammar
    from gptoss.harmony.grammar import TurnRules
    from gptoss.server.conversation import PromptSpec, ResponseFormat, Text, render_prompt
    from gptoss.server.generation import harmony

    encoding = harmony()
    schema = nested_schema()
    spec = PromptSpec(items=(Text("user", "Fill in the record."),), response_format=ResponseFormat("record", schema))
    prompt = render_prompt(spec, encoding).tokens
    grammar = turn_grammar(encoding, TurnRules(final_schema=schema))
    stops = frozenset(encoding.stop_tokens_for_assistant_actions())
    model = gptoss.load(args.model or random_checkpoint(args.preset))
    vocab = model.config.vocab_size

    free_rates, constrained_rates, waits, computes = [], [], [], []
    for _ in range(args.repeats):
        timed = TimedConstraint(TurnConstraint(grammar, vocab, reasoning_budget=0))
        n, seconds = decode(model, prompt, args.tokens, timed, stops)
        constrained_rates.append(n / seconds)
        waits += timed.waits[1:]  # the first mask is ready before the prefill ends
        computes += timed.computes
        m, free_seconds = decode(model, prompt, n + 1, None, frozenset())
        free_rates.append(m / free_seconds)
    free, constrained = statistics.median(free_rates), statistics.median(constrained_rates)
    result = {
        "cpu": cpu_model(),
        "model": args.model or args.preset,
        "threads": torch.get_num_threads(),
        "tokens": n,
        "free_tok_s": round(free, 3),
        "constrained_tok_s": round(constrained, 3),
        "constrained_step_over_free": round(free / constrained, 4),
        "mask_compute_ms": round(1000 * statistics.mean(computes), 3),
        "mask_wait_ms": round(1000 * statistics.mean(waits), 3),
    }
    emit(
        [
            ("decode tok/s, free", f"{free:.3f}"),
            ("decode tok/s, constrained (20-field schema)", f"{constrained:.3f}"),
            ("constrained step / free step", f"{free / constrained:.4f}"),
            ("mask compute per token, worker thread (ms)", f"{result['mask_compute_ms']}"),
            ("mask wait per token, decode loop (ms)", f"{result['mask_wait_ms']}"),
        ],
        result,
    )


if __name__ == "__main__":
    main()

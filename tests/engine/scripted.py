"""A test-only TokenSource that replays given token sequences, so server tests get exact model output."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence

from gptoss.engine import TokenEvent, output_budget
from gptoss.sampling import SamplingParams, TokenConstraint


class ScriptRejected(RuntimeError):
    """A script the request's constraint forbids: the test scripted output the real decoder could not produce."""


class ScriptedSource:
    """Each request takes the next queued script (or repeats `default` when none is queued) and emits its tokens,
    stopping after a stop token or at the budget, as a model would. `delay` seconds pass before each token.
    A request's constraint is honoured as a model's decode loop does: each scripted token must be one the
    constraint allows (else the generation fails with ScriptRejected), and is then passed to `advance`.
    The prompts and params it was given are recorded; `steps` counts tokens emitted, across requests."""

    def __init__(self, context_length: int = 4096, default: Sequence[int] = (), delay: float = 0.0) -> None:
        self.context_length = context_length
        self.default = list(default)
        self.delay = delay
        self.scripts: deque[list[int]] = deque()
        self.prompts: list[list[int]] = []
        self.params: list[SamplingParams] = []
        self.constraints: list[TokenConstraint | None] = []
        self.steps = 0
        self.lock = threading.Lock()

    def queue(self, *scripts: Sequence[int]) -> None:
        with self.lock:
            self.scripts.extend(list(s) for s in scripts)

    def generate(
        self,
        token_ids: Sequence[int],
        params: SamplingParams,
        top_logprobs: int | None = None,
        constraint: TokenConstraint | None = None,
    ) -> Iterator[TokenEvent | None]:
        budget = output_budget(len(token_ids), params, self.context_length)
        with self.lock:
            script = self.scripts.popleft() if self.scripts else list(self.default)
            self.prompts.append(list(token_ids))
            self.params.append(params)
            self.constraints.append(constraint)
        return self._replay(script, params, budget, top_logprobs, constraint)

    def _replay(
        self,
        script: list[int],
        params: SamplingParams,
        budget: int,
        top_logprobs: int | None,
        constraint: TokenConstraint | None,
    ) -> Iterator[TokenEvent | None]:
        for i, token in enumerate(script[:budget]):
            if self.delay:
                time.sleep(self.delay)
            if constraint is not None:
                mask = constraint.mask()
                if mask is not None and not bool(mask[token]):
                    raise ScriptRejected(f"scripted token {token} at index {i} is not allowed by the constraint")
                constraint.advance(token)
            self.steps += 1
            logprob = None if top_logprobs is None else -0.5 * (i % 3)
            top = tuple((token + k, -1.0 - k) for k in range(top_logprobs or 0))
            yield TokenEvent(token, logprob, top)
            if token in params.stop_tokens:
                return
